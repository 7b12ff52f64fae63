//! `-l` / `--selector`: Kubernetes label selectors as kubectl writes them, e.g.
//! `app=web,tier!=db,env in (prod,staging),!legacy,team`. A comma means "and"; `!=` and
//! `notin` also match objects without the label, as in Kubernetes.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Operator {
    Equals(String),
    NotEquals(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
}

/// A parsed selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_terms(text)? {
            let term = term.trim();
            if term.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(format!(
                    "label selector `{text}`: an empty requirement between commas"
                ));
            }
            requirements.push(
                parse_requirement(term).map_err(|message| format!("label selector `{text}`: {message}"))?,
            );
        }
        Ok(LabelSelector { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|requirement| {
            let value = labels.get(&requirement.key);
            match &requirement.operator {
                Operator::Equals(expected) => value == Some(expected),
                Operator::NotEquals(expected) => value != Some(expected),
                Operator::In(values) => value.is_some_and(|value| values.contains(value)),
                Operator::NotIn(values) => value.is_none_or(|value| !values.contains(value)),
                Operator::Exists => value.is_some(),
                Operator::DoesNotExist => value.is_none(),
            }
        })
    }
}

/// Splits on the commas outside parentheses.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        match character {
            '(' if depth == 0 => depth = 1,
            '(' => return Err(format!("label selector `{text}`: nested parentheses")),
            ')' if depth == 1 => depth = 0,
            ')' => return Err(format!("label selector `{text}`: `)` without `(`")),
            ',' if depth == 0 => {
                terms.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("label selector `{text}`: `(` without `)`"));
    }
    terms.push(&text[start..]);
    Ok(terms)
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement {
            key: checked_key(key.trim())?,
            operator: Operator::DoesNotExist,
        });
    }
    if let Some(open) = term.find('(') {
        let Some(inner) = term[open + 1..].strip_suffix(')') else {
            return Err(format!("`{term}`: nothing may follow the `)` of a value set"));
        };
        let mut words = term[..open].split_whitespace();
        let (Some(key), Some(operator), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!(
                "`{term}`: expected `KEY in (VALUES)` or `KEY notin (VALUES)`"
            ));
        };
        let values = inner
            .split(',')
            .map(|value| checked_value(value.trim()))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let operator = match operator {
            "in" => Operator::In(values),
            "notin" => Operator::NotIn(values),
            other => {
                return Err(format!(
                    "`{term}`: unknown set operator `{other}`; use `in` or `notin`"
                ));
            }
        };
        return Ok(Requirement {
            key: checked_key(key)?,
            operator,
        });
    }
    for (symbol, equal) in [("!=", false), ("==", true), ("=", true)] {
        if let Some((key, value)) = term.split_once(symbol) {
            let value = checked_value(value.trim())?;
            return Ok(Requirement {
                key: checked_key(key.trim())?,
                operator: if equal {
                    Operator::Equals(value)
                } else {
                    Operator::NotEquals(value)
                },
            });
        }
    }
    if term.contains(['<', '>']) {
        return Err(format!(
            "`{term}`: `<` and `>` are not supported; use =, ==, !=, in, notin, KEY or !KEY"
        ));
    }
    Ok(Requirement {
        key: checked_key(term)?,
        operator: Operator::Exists,
    })
}

/// A label name: 1 to 63 of `[A-Za-z0-9-_.]`, starting and ending with a letter or digit.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.'))
        && text.starts_with(|character: char| character.is_ascii_alphanumeric())
        && text.ends_with(|character: char| character.is_ascii_alphanumeric())
}

/// `[prefix/]name`, the prefix a DNS subdomain, as Kubernetes checks label keys.
fn checked_key(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_valid = prefix.is_none_or(|prefix| {
        !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|part| {
                !part.is_empty()
                    && part.chars().all(|character| {
                        character.is_ascii_lowercase() || character.is_ascii_digit() || character == '-'
                    })
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    if prefix_valid && is_name(name) {
        Ok(key.to_string())
    } else {
        Err(format!(
            "`{key}` is not a label key (an optional DNS prefix and `/`, then 1 to 63 letters, digits, `-`, `_` or `.`, beginning and ending with a letter or digit)"
        ))
    }
}

fn checked_value(value: &str) -> Result<String, String> {
    if value.is_empty() || is_name(value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "`{value}` is not a label value (up to 63 letters, digits, `-`, `_` or `.`, beginning and ending with a letter or digit)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_means_what_it_means_in_kubernetes() {
        let selector = LabelSelector::parse("a=b,c!=d,e in (x, y),!f,g,h notin (z),i==j").unwrap();
        let good = labels(&[("a", "b"), ("e", "y"), ("g", ""), ("i", "j")]);
        assert!(selector.matches(&good));
        for (key, value) in [
            ("a", "other"),
            ("c", "d"),
            ("e", "w"),
            ("f", "1"),
            ("h", "z"),
            ("i", "k"),
        ] {
            let mut changed = good.clone();
            changed.insert(key.to_string(), value.to_string());
            assert!(!selector.matches(&changed), "{key}={value}");
        }
        let mut without_g = good.clone();
        without_g.remove("g");
        assert!(!selector.matches(&without_g));
        let mut without_e = good;
        without_e.remove("e");
        assert!(!selector.matches(&without_e));
    }

    #[test]
    fn the_empty_selector_matches_everything() {
        assert!(LabelSelector::parse("").unwrap().matches(&labels(&[])));
    }

    #[test]
    fn bad_selectors_are_refused_with_the_reason() {
        for (text, expected) in [
            ("a=b,,c", "empty requirement"),
            ("e in (x,y", "`(` without `)`"),
            ("e within (x)", "unknown set operator"),
            ("a=b c", "not a label value"),
            ("-a", "not a label key"),
            ("a>1", "not supported"),
            ("Example.com/a=b", "not a label key"),
        ] {
            let error = LabelSelector::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
        assert!(LabelSelector::parse("example.com/app=web").is_ok());
    }
}
