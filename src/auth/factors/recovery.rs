//! Recovery codes: ten one-time codes of 80 random bits each (`xxxx-xxxx-xxxx-xxxx` in an
//! alphabet without look-alikes), stored as their SHA-256 only. Typed with or without
//! dashes, in either case.

const ALPHABET: &[u8; 32] = b"abcdefghjkmnpqrstuvwxyz23456789x";
/// Codes per set.
pub const COUNT: usize = 10;
const CHARS: usize = 16;

/// Ten new codes, as shown to the user once.
pub fn generate() -> Result<Vec<String>, crate::ids::RngError> {
    (0..COUNT)
        .map(|_| {
            let bytes = crate::ids::random_bytes::<CHARS>()?;
            let chars: Vec<char> = bytes
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
                .collect();
            Ok(chars
                .chunks(4)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("-"))
        })
        .collect()
}

/// The code as typed, in its canonical form, if it has a recovery code's shape.
pub fn normalize(typed: &str) -> Option<String> {
    let t: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (t.len() == CHARS && t.bytes().all(|b| ALPHABET.contains(&b))).then_some(t)
}

/// What the store keeps of a code (of its canonical form).
pub fn hash(canonical: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The stored hash of a typed code, if it has the shape of one.
pub fn hash_typed(typed: &str) -> Option<String> {
    normalize(typed).map(|c| hash(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_distinct_codes_that_read_back_however_typed() {
        let codes = generate().unwrap_or_default();
        assert_eq!(codes.len(), COUNT);
        let mut seen = std::collections::HashSet::new();
        for c in &codes {
            assert_eq!(c.len(), 19, "{c}");
            assert!(seen.insert(c.clone()));
            let h = hash_typed(c);
            assert!(h.is_some());
            assert_eq!(hash_typed(&c.to_uppercase()), h);
            assert_eq!(hash_typed(&c.replace('-', "")), h);
            assert_eq!(hash_typed(&c.replace('-', " ")), h);
        }
        assert_eq!(hash_typed("123456"), None, "a TOTP code is not one");
        assert_eq!(hash_typed("0000-0000-0000-0000"), None);
        assert_eq!(hash("abcd").len(), 64);
    }
}
