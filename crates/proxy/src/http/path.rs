//! The path a rule is matched against, and why some paths are refused instead.
//!
//! A proxy that matches one path and forwards bytes the server reads as another is a bypass
//! (Envoy's `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action` exist for
//! this). This proxy forwards the request exactly as received, so it matches only what every
//! server reads the same way and refuses the rest rather than rewriting the request:
//!
//! - percent-encoded unreserved characters (`%61` for `a`, `%2E` for `.`) are decoded, as
//!   RFC 3986 §6.2.2.2 says every server must treat them as equal; other escapes are kept with
//!   uppercase hex digits;
//! - `%2F` and `%5C` (an encoded `/` or `\`) are refused: servers disagree on whether they
//!   separate segments (Envoy's `REJECT_REQUEST`);
//! - a raw `\` is refused (some servers read it as `/`), and so is `%00`;
//! - `.` and `..` segments (also spelled `%2E`) are refused rather than resolved: clients remove
//!   them before sending, so only a crafted request carries one;
//! - `//` is kept, not merged: a server that merges slashes reads `/a//b` as `/a/b`, but an
//!   `exact` rule for `/a/b` does not match `/a//b`, and a `prefix` that matches stays a prefix
//!   after merging, so the difference can only deny, never widen what is allowed.
//!
//! Envoy normalises and forwards the rewritten path (its advisory GHSA-xcx5-93pw-jw2w is the
//! `/info/../private` bypass that made it do so); Istio asks for merged slashes as well
//! (CVE-2021-31920), because its policies can deny a path. Sluice's L7 rules only allow, and it
//! forwards without rewriting, so it refuses what Envoy would have rewritten and leaves `//`
//! to fail closed.

use thiserror::Error;

/// Why a request path is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PathError {
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("`%` is not followed by two hexadecimal digits")]
    InvalidPercentEncoding,
    #[error("the path holds an encoded `/` or `\\` (`%2F`, `%5C`), which servers read differently")]
    EncodedSeparator,
    #[error("the path holds `\\`, which some servers read as `/`")]
    Backslash,
    #[error("the path holds an encoded NUL (`%00`)")]
    EncodedNul,
    #[error("the path holds a `.` or `..` segment")]
    DotSegment,
    #[error("the path holds a byte that is not printable ASCII")]
    InvalidCharacter,
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// The canonical form of a request path (the request-target without its query), or why it is
/// refused. Rule paths should be passed through it too (see [`crate::matcher::PathMatch`]).
pub fn canonical_path(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let mut canonical = String::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        match byte {
            b'%' => {
                let (Some(high), Some(low)) = (
                    bytes.get(index + 1).copied().and_then(hex_value),
                    bytes.get(index + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::InvalidPercentEncoding);
                };
                let decoded = high * 16 + low;
                match decoded {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0 => return Err(PathError::EncodedNul),
                    _ if is_unreserved(decoded) => canonical.push(char::from(decoded)),
                    _ => {
                        canonical.push('%');
                        canonical.push(char::from(b"0123456789ABCDEF"[usize::from(high)]));
                        canonical.push(char::from(b"0123456789ABCDEF"[usize::from(low)]));
                    }
                }
                index += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b'!'..=b'~' => {
                canonical.push(char::from(byte));
                index += 1;
            }
            _ => return Err(PathError::InvalidCharacter),
        }
    }
    if canonical
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(PathError::DotSegment);
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/v1/items", Ok("/v1/items")),
            ("/%61pi", Ok("/api")),
            ("/a%2e", Ok("/a.")),
            ("/a%7e%5f", Ok("/a~_")),
            ("/a%3a", Ok("/a%3A")),
            ("/a%20b", Ok("/a%20b")),
            ("/a//b", Ok("/a//b")),
            ("/a/b/", Ok("/a/b/")),
            ("/...", Ok("/...")),
            ("/.well-known/x", Ok("/.well-known/x")),
            ("", Err(PathError::NotAbsolute)),
            ("a/b", Err(PathError::NotAbsolute)),
            ("/a%2Fb", Err(PathError::EncodedSeparator)),
            ("/a%2fb", Err(PathError::EncodedSeparator)),
            ("/a%5cb", Err(PathError::EncodedSeparator)),
            ("/a\\b", Err(PathError::Backslash)),
            ("/a%00", Err(PathError::EncodedNul)),
            ("/a%", Err(PathError::InvalidPercentEncoding)),
            ("/a%4", Err(PathError::InvalidPercentEncoding)),
            ("/a%zz", Err(PathError::InvalidPercentEncoding)),
            ("/a/../b", Err(PathError::DotSegment)),
            ("/a/..", Err(PathError::DotSegment)),
            ("/./a", Err(PathError::DotSegment)),
            ("/a/%2e%2E/b", Err(PathError::DotSegment)),
            ("/a/.%2e", Err(PathError::DotSegment)),
            ("/a b", Err(PathError::InvalidCharacter)),
            ("/caf\u{e9}", Err(PathError::InvalidCharacter)),
        ];
        for (path, expected) in cases {
            assert_eq!(
                canonical_path(path).as_deref().map_err(Clone::clone),
                expected.clone(),
                "{path:?}"
            );
        }
    }

    #[test]
    fn canonical_form_is_a_fixed_point() {
        for path in ["/%61%62", "/a%3ab", "/x%7E", "/a//b"] {
            let once = canonical_path(path).unwrap();
            assert_eq!(canonical_path(&once).unwrap(), once, "{path}");
        }
    }
}
