//! The cache file's format (`dnsCacheFile`): JSON holding the epoch (`dnsCacheEpoch`) and
//! every learned mapping with its absolute expiry in Unix seconds, so a restarted agent goes
//! on allowing what its endpoints resolved. Pure: bytes in, bytes out; `cache_file` does the
//! file I/O.
//!
//! ```json
//! {"version":1,"epoch":0,"entries":[
//!   {"endpoint":"default/pod-a","name":"api.example","address":"192.0.2.1","expires":1790000000}]}
//! ```

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The format written; a file of another version is refused.
pub const VERSION: u32 = 1;
/// Entries with this little life left (or less) are dropped on load: by the time they are
/// programmed they would be gone.
pub const MINIMUM_REMAINING_SECONDS: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheEntry {
    pub endpoint: String,
    pub name: String,
    pub address: IpAddr,
    /// Unix seconds.
    pub expires: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    version: u32,
    epoch: i64,
    entries: Vec<CacheEntry>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheError {
    #[error("the DNS cache file is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("the DNS cache file has format version {found}; this agent reads version {VERSION}")]
    Version { found: u32 },
    /// Not a fault: the operator bumped `dnsCacheEpoch` to throw the cache away.
    #[error("the DNS cache file has epoch {found} and dnsCacheEpoch is {expected}; ignoring it")]
    Epoch { found: i64, expected: i64 },
}

/// The file's bytes for `entries` under `epoch`.
pub fn to_bytes(epoch: i64, entries: &[CacheEntry]) -> Vec<u8> {
    let file = CacheFile {
        version: VERSION,
        epoch,
        entries: entries.to_vec(),
    };
    // A struct of strings, numbers and addresses always serializes.
    serde_json::to_vec(&file).unwrap_or_default()
}

/// The entries of a cache file written under `epoch` that still have more than
/// [`MINIMUM_REMAINING_SECONDS`] to live at `now`.
pub fn from_bytes(bytes: &[u8], epoch: i64, now: Timestamp) -> Result<Vec<CacheEntry>, CacheError> {
    let file: CacheFile =
        serde_json::from_slice(bytes).map_err(|error| CacheError::Malformed(error.to_string()))?;
    if file.version != VERSION {
        return Err(CacheError::Version { found: file.version });
    }
    if file.epoch != epoch {
        return Err(CacheError::Epoch {
            found: file.epoch,
            expected: epoch,
        });
    }
    let cutoff = now.plus_seconds(MINIMUM_REMAINING_SECONDS);
    Ok(file
        .entries
        .into_iter()
        .filter(|entry| Timestamp::from_unix_seconds(entry.expires) > cutoff)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, expires: u64) -> CacheEntry {
        CacheEntry {
            endpoint: "default/pod-a".to_string(),
            name: name.to_string(),
            address: "192.0.2.1".parse().unwrap(),
            expires,
        }
    }

    #[test]
    fn entries_round_trip_under_the_same_epoch() {
        let entries = vec![entry("a.example", 1_000), entry("b.example", 2_000)];
        let bytes = to_bytes(7, &entries);
        assert_eq!(
            from_bytes(&bytes, 7, Timestamp::from_unix_seconds(10)),
            Ok(entries)
        );
    }

    #[test]
    fn another_epoch_ignores_the_whole_file() {
        let bytes = to_bytes(1, &[entry("a.example", 1_000)]);
        assert_eq!(
            from_bytes(&bytes, 2, Timestamp::from_unix_seconds(10)),
            Err(CacheError::Epoch {
                found: 1,
                expected: 2
            })
        );
    }

    #[test]
    fn entries_with_a_second_or_less_left_are_dropped() {
        let entries = vec![
            entry("past.example", 99),
            entry("now.example", 100),
            entry("one-second.example", 101),
            entry("just-over.example", 102),
        ];
        let bytes = to_bytes(0, &entries);
        // 100.5 s: one-second.example has 0.5 s left, just-over.example 1.5 s.
        let now = Timestamp::from_unix_milliseconds(100_500);
        let kept = from_bytes(&bytes, 0, now).unwrap();
        assert_eq!(kept, vec![entry("just-over.example", 102)]);
        // At 101 s just-over.example has exactly one second left: dropped too.
        let exactly = Timestamp::from_unix_seconds(101);
        assert_eq!(from_bytes(&bytes, 0, exactly).unwrap(), vec![]);
    }

    #[test]
    fn garbage_other_versions_and_unknown_fields_are_refused() {
        let now = Timestamp::from_unix_seconds(0);
        assert!(matches!(from_bytes(b"{", 0, now), Err(CacheError::Malformed(_))));
        assert!(matches!(
            from_bytes(br#"{"version":1,"epoch":0,"entries":[],"extra":1}"#, 0, now),
            Err(CacheError::Malformed(_))
        ));
        assert_eq!(
            from_bytes(br#"{"version":2,"epoch":0,"entries":[]}"#, 0, now),
            Err(CacheError::Version { found: 2 })
        );
    }
}
