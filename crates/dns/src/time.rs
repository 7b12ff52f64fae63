//! Wall-clock time as the shell passes it in: milliseconds since the Unix epoch. Wall-clock,
//! not monotonic, because expiries are written to the cache file and read by the next agent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp {
    unix_milliseconds: u64,
}

impl Timestamp {
    pub const fn from_unix_milliseconds(unix_milliseconds: u64) -> Timestamp {
        Timestamp { unix_milliseconds }
    }

    pub const fn from_unix_seconds(unix_seconds: u64) -> Timestamp {
        Timestamp {
            unix_milliseconds: unix_seconds.saturating_mul(1000),
        }
    }

    /// The clock's reading as a timestamp (the shell's one call to the clock, by convention).
    pub fn from_system_time(time: SystemTime) -> Timestamp {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Timestamp::from_unix_milliseconds(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    pub const fn unix_milliseconds(self) -> u64 {
        self.unix_milliseconds
    }

    /// Whole seconds, rounded down.
    pub const fn unix_seconds(self) -> u64 {
        self.unix_milliseconds / 1000
    }

    pub const fn plus_seconds(self, seconds: u64) -> Timestamp {
        Timestamp {
            unix_milliseconds: self
                .unix_milliseconds
                .saturating_add(seconds.saturating_mul(1000)),
        }
    }

    /// The next whole second, or this one if it is whole. Expiries are rounded up so that
    /// copies of one cached answer a fraction of a second apart (a resolver counts its TTLs
    /// down in whole seconds) give one expiry, never shorter than the TTL.
    pub const fn whole_second_up(self) -> Timestamp {
        Timestamp {
            unix_milliseconds: self.unix_milliseconds.div_ceil(1000).saturating_mul(1000),
        }
    }

    /// How long from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.unix_milliseconds.saturating_sub(earlier.unix_milliseconds))
    }
}
