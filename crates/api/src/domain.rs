//! Domain names in egress rules (`destination.domains`, `allowedEgressDomains`), read and matched
//! as Calico Enterprise documents them: lowercased, either exact or with one `*` standing for a
//! whole label anywhere but the last, where it matches one or more labels. `*.example.com`
//! matches `a.example.com` and `a.b.example.com` but not `example.com`; `www.*.com` does not
//! match `www.com`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// The longest name DNS carries in text form (RFC 1035 §2.3.4, without the trailing dot).
const MAXIMUM_NAME_LENGTH: usize = 253;
/// The longest label (RFC 1035 §2.3.4).
const MAXIMUM_LABEL_LENGTH: usize = 63;

/// A validated, lowercased domain name or wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainPattern {
    text: String,
    /// Index of the `*` label, if the pattern has one.
    wildcard: Option<usize>,
}

impl DomainPattern {
    /// The pattern as written, lowercased.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn is_wildcard(&self) -> bool {
        self.wildcard.is_some()
    }

    /// Whether `name` (a DNS name, any case, with or without the root's trailing dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        let Some(star) = self.wildcard else {
            return self.text.eq_ignore_ascii_case(name);
        };
        let pattern: Vec<&str> = self.text.split('.').collect();
        let labels: Vec<&str> = name.split('.').collect();
        let before = &pattern[..star];
        let after = &pattern[star + 1..];
        // The star takes at least one label.
        if labels.len() < before.len() + after.len() + 1 {
            return false;
        }
        let same = |pattern: &[&str], labels: &[&str]| {
            pattern
                .iter()
                .zip(labels)
                .all(|(pattern, label)| !label.is_empty() && pattern.eq_ignore_ascii_case(label))
        };
        let middle = &labels[before.len()..labels.len() - after.len()];
        same(before, &labels[..before.len()])
            && same(after, &labels[labels.len() - after.len()..])
            && middle.iter().all(|label| !label.is_empty())
    }
}

impl FromStr for DomainPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<DomainPattern, String> {
        let lowered = text.to_ascii_lowercase();
        if lowered.is_empty() {
            return Err("a domain name may not be empty".to_string());
        }
        if lowered.ends_with('.') {
            return Err(format!(
                "`{text}` ends with a dot; write domain names without the trailing dot"
            ));
        }
        if lowered.len() > MAXIMUM_NAME_LENGTH {
            return Err(format!(
                "`{text}` is {} characters long; a domain name has at most {MAXIMUM_NAME_LENGTH}",
                lowered.len()
            ));
        }
        let labels: Vec<&str> = lowered.split('.').collect();
        let mut wildcard = None;
        for (index, label) in labels.iter().enumerate() {
            if *label == "*" {
                if wildcard.is_some() {
                    return Err(format!(
                        "`{text}` has more than one `*`; a domain pattern may have one wildcard"
                    ));
                }
                if index + 1 == labels.len() {
                    return Err(format!(
                        "`{text}` has `*` as its last label; the wildcard may stand for any label but the last"
                    ));
                }
                wildcard = Some(index);
                continue;
            }
            check_label(text, label)?;
        }
        Ok(DomainPattern {
            text: lowered,
            wildcard,
        })
    }
}

fn check_label(text: &str, label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err(format!(
            "`{text}` has an empty label (two dots in a row or a leading dot)"
        ));
    }
    if label.contains('*') {
        return Err(format!(
            "`{text}` has `*` inside the label `{label}`; a wildcard must be a whole label, as in `*.example.com`"
        ));
    }
    if label.len() > MAXIMUM_LABEL_LENGTH {
        return Err(format!(
            "`{text}` has the label `{label}` of {} characters; a label has at most {MAXIMUM_LABEL_LENGTH}",
            label.len()
        ));
    }
    if let Some(bad) = label
        .chars()
        .find(|character| !(character.is_ascii_alphanumeric() || *character == '-'))
    {
        return Err(format!(
            "`{text}` contains `{bad}`; a domain name holds only letters, digits, `-`, dots and one whole-label `*`"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "`{text}` has the label `{label}`, which starts or ends with `-`"
        ));
    }
    Ok(())
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.text)
    }
}

impl Serialize for DomainPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for DomainPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::DomainPattern;

    fn pattern(text: &str) -> DomainPattern {
        text.parse().unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    #[test]
    fn names_match_patterns_as_calico_documents() {
        let table: &[(&str, &str, bool)] = &[
            ("microsoft.com", "microsoft.com", true),
            ("microsoft.com", "MICROSOFT.com", true),
            ("microsoft.com", "microsoft.com.", true),
            ("microsoft.com", "www.microsoft.com", false),
            ("google.com", "www.google.com", false),
            ("*.google.com", "www.google.com", true),
            ("*.google.com", "www.ipv6.google.com", true),
            ("*.google.com", "google.com", false),
            ("*.google.com", "wwwgoogle.com", false),
            ("*.google.com", "www.google.co", false),
            ("www.*.com", "www.sun.com", true),
            ("www.*.com", "www.apple.com", true),
            ("www.*.com", "www.a.b.com", true),
            ("www.*.com", "www.com", false),
            ("www.*.com", "ww.sun.com", false),
            ("update.*.mycompany.com", "update.tools.mycompany.com", true),
            ("update.*.mycompany.com", "update.mycompany.com", false),
            ("update.*.mycompany.com", "x.update.tools.mycompany.com", false),
            ("*.example", "a..example", false),
            ("*.example", ".example", false),
            ("*.s3.example", "bucket.s3.example", true),
            ("*.s3.example", "s3.example", false),
        ];
        for (text, name, expected) in table {
            assert_eq!(
                pattern(text).matches(name),
                *expected,
                "pattern {text} against name {name}"
            );
        }
    }

    #[test]
    fn patterns_are_lowercased() {
        assert_eq!(pattern("API.Partner.Example").as_str(), "api.partner.example");
        assert!(pattern("*.Example.COM").is_wildcard());
    }

    #[test]
    fn bad_patterns_say_why() {
        let table: &[(&str, &str)] = &[
            ("", "may not be empty"),
            ("example.com.", "trailing dot"),
            ("*.*.example.com", "more than one `*`"),
            ("example.*", "last label"),
            ("*", "last label"),
            ("g*.com", "whole label"),
            ("*g.com", "whole label"),
            ("a..com", "empty label"),
            (".a.com", "empty label"),
            ("under_score.com", "contains `_`"),
            ("^regex$.com", "contains `^`"),
            ("-a.com", "starts or ends with `-`"),
            ("space .com", "contains ` `"),
        ];
        for (text, expected) in table {
            let error = text.parse::<DomainPattern>().expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(
            long_label
                .parse::<DomainPattern>()
                .unwrap_err()
                .contains("at most 63")
        );
        let long_name = format!("{}com", "abcdefghi.".repeat(26));
        assert!(
            long_name
                .parse::<DomainPattern>()
                .unwrap_err()
                .contains("at most 253")
        );
    }
}
