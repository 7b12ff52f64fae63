//! How the aggregator aggregates and how much it may hold.

use serde::{Deserialize, Serialize};

/// The aggregator's settings. Every cap bounds memory whatever the traffic; what does not fit
/// is evicted or refused and counted in [`crate::Statistics`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// The node's name, written into every record's `host`; endpoints on this node are local.
    pub host: String,
    /// Length of one aggregation interval (Calico's `flowLogsFlushInterval`, 15 s).
    pub interval_milliseconds: u64,
    /// Connections tracked at once; past it the least recently active one is evicted.
    pub max_connections: usize,
    /// Flow keys of allowed traffic held in one interval; a new key past it is refused.
    pub max_allowed_keys: usize,
    /// Flow keys of denied traffic held in one interval, apart from the allowed ones so that a
    /// flood of denied packets never crowds out allowed flows.
    pub max_denied_keys: usize,
    /// Denied (tuple, reporter) pairs remembered in one interval, so that a repeated first packet
    /// (a retransmitted SYN) counts as the same flow; past it the oldest is forgotten.
    pub max_denied_tuples: usize,
    /// A confirmed connection with no conntrack event for this long is taken as ended. The shell
    /// dumps live entries more often than this.
    pub idle_timeout_milliseconds: u64,
    /// A connection whose first packet was allowed but which conntrack never confirmed (dropped
    /// further on) is taken as ended after this long.
    pub unconfirmed_timeout_milliseconds: u64,
    /// After a compile, hit ids of the previous one still resolve for this long (log packets in
    /// flight were decided by the previous ruleset).
    pub attribution_grace_milliseconds: u64,
    /// Keep the address of a `net` source in the key (`source_ip`); off by default, so that
    /// connections from anywhere outside aggregate into `pub` and `pvt`.
    pub network_source_addresses: bool,
    /// Keep the address of a `net` destination in the key (`dest_ip`): what a pod reached
    /// outside, for reading and for recommendations. On by default.
    pub network_destination_addresses: bool,
    /// Conntrack entries whose connection mark has any of these bits are not recorded: the
    /// agent sets the L7 proxy's upstream bit, since the pod's own connection to the proxy is
    /// the one a proxied connection is recorded by. 0 (the default) skips nothing.
    pub skipped_connection_mark: u32,
    /// A connection conntrack listed before its logged first packet was read (the log is read
    /// in batches, apart from the dumps) is left out of the records for this long after it was
    /// first seen, so that the packet on its way can attribute it; after it, it is recorded
    /// with empty `policies` (its first packet was logged before the agent started, or lost).
    pub unlogged_grace_milliseconds: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            host: String::new(),
            interval_milliseconds: 15_000,
            max_connections: 100_000,
            max_allowed_keys: 20_000,
            max_denied_keys: 10_000,
            max_denied_tuples: 20_000,
            idle_timeout_milliseconds: 300_000,
            unconfirmed_timeout_milliseconds: 30_000,
            attribution_grace_milliseconds: 60_000,
            network_source_addresses: false,
            network_destination_addresses: true,
            skipped_connection_mark: 0,
            unlogged_grace_milliseconds: 1_000,
        }
    }
}

/// A setting that cannot work, named as the configuration names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("flow log setting `{field}` must be greater than 0")]
    Zero { field: &'static str },
    #[error(
        "flow log setting `idleTimeoutMilliseconds` ({idle} ms) must be at least one interval \
         ({interval} ms), or live connections would end between two dumps"
    )]
    IdleShorterThanInterval { idle: u64, interval: u64 },
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let numbers = [
            ("intervalMilliseconds", self.interval_milliseconds),
            ("maxConnections", self.max_connections as u64),
            ("maxAllowedKeys", self.max_allowed_keys as u64),
            ("maxDeniedKeys", self.max_denied_keys as u64),
            ("maxDeniedTuples", self.max_denied_tuples as u64),
            ("idleTimeoutMilliseconds", self.idle_timeout_milliseconds),
            (
                "unconfirmedTimeoutMilliseconds",
                self.unconfirmed_timeout_milliseconds,
            ),
        ];
        if let Some((field, _)) = numbers.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Zero { field });
        }
        if self.idle_timeout_milliseconds < self.interval_milliseconds {
            return Err(ConfigError::IdleShorterThanInterval {
                idle: self.idle_timeout_milliseconds,
                interval: self.interval_milliseconds,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_caps_are_named() {
        assert_eq!(Config::default().validate(), Ok(()));
        let config = Config {
            max_denied_keys: 0,
            ..Config::default()
        };
        let error = config.validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            "flow log setting `maxDeniedKeys` must be greater than 0"
        );
        let config = Config {
            idle_timeout_milliseconds: 1_000,
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::IdleShorterThanInterval {
                idle: 1_000,
                interval: 15_000
            })
        ));
    }
}
