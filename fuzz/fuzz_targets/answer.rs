//! An upstream's answer as the plain exchange reads it: arbitrary bytes as a response head,
//! then as a chunked body. Never panics; a complete head is split off whole (what follows it
//! is exactly the rest of the input), and a chunked body decodes to the same bytes whether it
//! comes at once or a byte at a time.
#![no_main]

use authgate::upstream::plain::{decode_all, parse_head, Decoder, Framing, Step};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head_request = data.first().is_some_and(|b| b & 1 == 1);
    let mut buf = BytesMut::from(data);
    match parse_head(&mut buf, head_request) {
        Ok(Some((head, rest))) => {
            assert!(buf.is_empty());
            assert!(data.ends_with(&rest));
            if head_request {
                assert_eq!(head.framing, Framing::Empty);
            }
            if head.framing == Framing::Close {
                assert!(!head.keep_alive);
            }
        }
        Ok(None) => assert_eq!(&buf[..], data, "an incomplete head is kept as it came"),
        Err(_) => {}
    }
    let whole = decode_all(data);
    let mut d = Decoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut done = false;
    'outer: for &b in data {
        buf.extend_from_slice(&[b]);
        loop {
            match d.decode(&mut buf) {
                Ok(Step::Data(piece)) => out.extend_from_slice(&piece),
                Ok(Step::More) => break,
                Ok(Step::Done) => {
                    done = true;
                    break 'outer;
                }
                Err(e) => {
                    assert!(whole.is_err(), "bytewise refused what whole took: {e}");
                    return;
                }
            }
        }
    }
    let (all, all_done) = whole.expect("whole refused what bytewise took");
    assert_eq!((all, all_done), (out, done));
});
