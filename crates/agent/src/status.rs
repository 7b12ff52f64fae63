//! The agent's status record in the datastore.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Outside `/sluice/`, which every agent watches: no agent is woken by another's status.
pub const STATUS_PREFIX: &str = "/sluice-status/nodes/";

/// How often a running agent rewrites its status record even when nothing changed, so that
/// readers can tell a live agent from a dead one by the record's age.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// A record older than this many heartbeats is stale: its agent is presumed dead or cut off
/// from the datastore, and what it says about the kernel is no longer known.
pub const STALE_HEARTBEATS: u32 = 3;

pub fn status_key(node: &str) -> String {
    format!("{STATUS_PREFIX}{node}")
}

/// What the agent of one node last did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub node: String,
    /// The datastore revision whose resources are programmed.
    pub programmed_revision: i64,
    /// The newest revision the agent has seen.
    pub seen_revision: i64,
    /// Whether the newest revision's policy is programmed (routes are reported apart).
    pub in_sync: bool,
    /// Why the newest revision could not be programmed, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Something that is probably a mistake but does not stop programming, such as a node
    /// name that nothing in the datastore mentions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    pub local_endpoints: usize,
    pub rules: usize,
    pub set_elements: usize,
    /// Routes to other nodes' pod addresses (and blackholes for the node's own blocks).
    #[serde(default)]
    pub routes: usize,
    /// Why some routes could not be programmed, if they could not (they are retried; policy
    /// is unaffected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_error: Option<String>,
    /// The node's workload endpoints left out of its ruleset, each with why (a host
    /// interface, or one another endpoint has).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unprogrammed_endpoints: Vec<String>,
    /// Stored objects left out because they do not decode or validate (a value that bypassed
    /// `sluice apply`), each as `key: why`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out_objects: Vec<String>,
    /// When the record was written (wall clock), as RFC 3339 in UTC; records from before
    /// timestamps were text hold seconds since the Unix epoch, which are read too.
    #[serde(with = "timestamp")]
    pub updated: SystemTime,
    /// How often the agent rewrites the record while it runs.
    #[serde(default = "default_heartbeat_seconds")]
    pub heartbeat_seconds: u64,
    /// The agent stopped on a signal after writing this record; the ruleset it programmed
    /// stays in the kernel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// Where the agent serves its flow log (`http://HOST:PORT`, `unix:PATH`): how `sluice
    /// flows` and `sluice ui` find it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flow_endpoints: Vec<String>,
}

fn default_heartbeat_seconds() -> u64 {
    HEARTBEAT_INTERVAL.as_secs()
}

impl NodeStatus {
    /// How long ago the record was written; zero when it claims to be from the future
    /// (clock skew between the agent's node and the reader).
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.updated).unwrap_or(Duration::ZERO)
    }

    /// Whether the record is older than [`STALE_HEARTBEATS`] of its agent's heartbeats.
    pub fn is_stale(&self, now: SystemTime) -> bool {
        let heartbeat = Duration::from_secs(self.heartbeat_seconds.max(1));
        self.age(now) > heartbeat * STALE_HEARTBEATS
    }

    /// Whether the node's policy is known to be programmed: `true` or `false` from a live
    /// agent, `unknown (stopped)` after its agent stopped, `unknown (stale)` when the record
    /// is too old to say.
    pub fn sync_state(&self, now: SystemTime) -> &'static str {
        if self.stopped {
            "unknown (stopped)"
        } else if self.is_stale(now) {
            "unknown (stale)"
        } else if self.in_sync {
            "true"
        } else {
            "false"
        }
    }
}

/// An age as kubectl prints it: `45s`, `3m20s`, `17m`, `5h10m`, `20h`, `3d4h`, `40d`, `2y`.
pub fn format_age(age: Duration) -> String {
    let seconds = age.as_secs();
    let minutes = seconds / 60;
    let hours = minutes / 60;
    let days = hours / 24;
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        let rest = seconds % 60;
        if rest == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{rest}s")
        }
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        let rest = minutes % 60;
        if rest == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{rest}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let rest = hours % 24;
        if rest == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{rest}h")
        }
    } else if days < 365 * 2 {
        format!("{days}d")
    } else {
        format!("{}y", days / 365)
    }
}

/// RFC 3339 text in UTC, whole seconds (`2026-12-05T09:12:29Z`); integer seconds since the
/// Unix epoch are accepted on read.
pub(crate) mod timestamp {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_seconds(*time))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Written {
        Text(String),
        Seconds(u64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        match Written::deserialize(deserializer)? {
            Written::Text(text) => humantime::parse_rfc3339(&text).map_err(|error| {
                D::Error::custom(format!(
                    "`{text}` is not an RFC 3339 UTC time such as 2026-01-31T12:00:00Z: {error}"
                ))
            }),
            Written::Seconds(seconds) => Ok(UNIX_EPOCH + Duration::from_secs(seconds)),
        }
    }

    /// The same for an optional time (`null` when absent).
    pub mod optional {
        use std::time::SystemTime;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(time: &Option<SystemTime>, serializer: S) -> Result<S::Ok, S::Error> {
            match time {
                Some(time) => super::serialize(time, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] SystemTime);
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(time)| time))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn status(updated: SystemTime) -> NodeStatus {
        NodeStatus {
            node: "node-1".into(),
            programmed_revision: 7,
            seen_revision: 7,
            in_sync: true,
            error: None,
            warning: None,
            local_endpoints: 1,
            rules: 10,
            set_elements: 2,
            routes: 0,
            route_error: None,
            unprogrammed_endpoints: Vec::new(),
            left_out_objects: Vec::new(),
            updated,
            heartbeat_seconds: 30,
            stopped: false,
            flow_endpoints: Vec::new(),
        }
    }

    #[test]
    fn the_time_is_written_as_rfc3339_utc_and_read_back() {
        let written = UNIX_EPOCH + Duration::from_secs(1_796_462_349);
        let json = serde_json::to_value(status(written)).unwrap();
        assert_eq!(json["updated"], "2026-12-05T09:19:09Z");
        assert_eq!(json["heartbeatSeconds"], 30);
        assert!(json.get("stopped").is_none());
        let read: NodeStatus = serde_json::from_value(json).unwrap();
        assert_eq!(read.updated, written);
    }

    #[test]
    fn a_record_with_epoch_seconds_and_no_heartbeat_is_still_read() {
        let json = r#"{"node":"n","programmedRevision":1,"seenRevision":1,"inSync":true,"localEndpoints":0,"rules":0,"setElements":0,"updated":1796462349}"#;
        let read: NodeStatus = serde_json::from_str(json).unwrap();
        assert_eq!(read.updated, UNIX_EPOCH + Duration::from_secs(1_796_462_349));
        assert_eq!(read.heartbeat_seconds, 30);
        let bad = json.replace("1796462349", "\"yesterday\"");
        let error = serde_json::from_str::<NodeStatus>(&bad).unwrap_err().to_string();
        assert!(error.contains("`yesterday` is not an RFC 3339"), "{error}");
    }

    #[test]
    fn a_record_older_than_three_heartbeats_is_stale() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let fresh = status(now - Duration::from_secs(90));
        assert!(!fresh.is_stale(now));
        assert_eq!(fresh.sync_state(now), "true");
        let old = status(now - Duration::from_secs(91));
        assert!(old.is_stale(now));
        assert_eq!(old.sync_state(now), "unknown (stale)");
        let future = status(now + Duration::from_secs(5));
        assert_eq!(future.age(now), Duration::ZERO);
        assert!(!future.is_stale(now));
        let mut refused = status(now);
        refused.in_sync = false;
        assert_eq!(refused.sync_state(now), "false");
        refused.stopped = true;
        assert_eq!(refused.sync_state(now), "unknown (stopped)");
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (17 * 60, "17m"),
            (179 * 60, "179m"),
            (5 * 3600 + 600, "5h10m"),
            (20 * 3600, "20h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (40 * 86_400, "40d"),
            (800 * 86_400, "2y"),
        ];
        for (seconds, shown) in cases {
            assert_eq!(format_age(Duration::from_secs(seconds)), shown, "{seconds} s");
        }
    }
}
