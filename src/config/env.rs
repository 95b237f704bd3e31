//! `${NAME}` interpolation of environment variables inside config strings.

/// Replaces every `${NAME}` with the value of the environment variable NAME.
/// `$$` stands for a literal `$`. A missing variable is an error, never an empty string:
/// an empty secret or address would silently change what the gateway does.
pub fn expand_env(input: &str) -> Result<String, String> {
    expand_with(input, |name| std::env::var(name).ok())
}

pub(crate) fn expand_with(
    input: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated \"${{\" in {input:?}"))?;
            let name = &body[..end];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            let value = lookup(name).ok_or_else(|| {
                format!("environment variable {name} is not set; export it or remove ${{{name}}}")
            })?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        (name == "HOST").then(|| "db.local".to_owned())
    }

    #[test]
    fn expands_known_variables() {
        assert_eq!(
            expand_with("redis://${HOST}:6379", lookup).as_deref(),
            Ok("redis://db.local:6379")
        );
        assert_eq!(expand_with("a$$b", lookup).as_deref(), Ok("a$b"));
        assert_eq!(expand_with("cost $5", lookup).as_deref(), Ok("cost $5"));
    }

    #[test]
    fn missing_or_malformed_is_an_error() {
        assert!(expand_with("${NOPE}", lookup).is_err());
        assert!(expand_with("${HOST", lookup).is_err());
        assert!(expand_with("${A-B}", lookup).is_err());
    }
}
