//! Config loading on arbitrary text: never panics, and every error names where it is (a line,
//! or the key whose referenced file is at fault).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative files resolve against a directory that has none of them: nothing is read
    // from the machine but what the text names absolutely.
    let path = std::path::Path::new("/nonexistent-authgate-fuzz/authgate.toml");
    if let Err(errors) = authgate::Config::from_str(path, text) {
        assert!(
            !errors.0.is_empty(),
            "an error without a message for {text:?}"
        );
        for e in &errors.0 {
            assert!(
                e.line > 0 || !e.key.is_empty(),
                "an error without a position: {e} for {text:?}"
            );
        }
    }
});
