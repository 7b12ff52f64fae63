//! Reading resources back out of the datastore. Stored values are checked again on the way out
//! (see [`Resource::decode`]): one that does not decode or validate is left out and reported,
//! so it cannot reach code that assumes valid objects and cannot cost a node its ruleset.

use std::collections::BTreeMap;
use std::fmt;

use crate::Resource;

/// A stored value left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    pub key: String,
    pub error: String,
}

impl fmt::Display for LeftOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.error)
    }
}

/// The resources read from the datastore by key, and the values left out.
#[derive(Debug, Default)]
pub struct Stored {
    pub resources: BTreeMap<String, Resource>,
    pub left_out: Vec<LeftOut>,
}

/// Decodes stored values given as (key, bytes, modify revision).
pub fn decode_values<'a>(values: impl IntoIterator<Item = (&'a str, &'a [u8], i64)>) -> Stored {
    let mut stored = Stored::default();
    for (key, bytes, revision) in values {
        match Resource::decode(bytes, revision) {
            Ok(resource) => {
                stored.resources.insert(key.to_string(), resource);
            }
            Err(error) => stored.left_out.push(LeftOut {
                key: key.to_string(),
                error,
            }),
        }
    }
    stored
}
