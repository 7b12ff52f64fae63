//! Forgetting the connection-tracking state of a pod address that is gone.
//!
//! Conntrack entries outlive the pod whose traffic made them: they name addresses, not
//! interfaces. When the address goes to a new pod, an old entry would let the old peer's
//! packets through as "established" and deliver them to the new pod, whatever its policy says.
//! So, as Calico's Felix does (`felix/conntrack`), every entry with the address on either side
//! of either direction is deleted when a pod's address is released, through the `conntrack`
//! tool (conntrack-tools), as kube-proxy does too.

use std::net::IpAddr;
use std::path::PathBuf;

/// The four places an address can appear in an entry: the original and the reply tuple's
/// source and destination (a NATed entry's reply differs from its original).
const DIRECTIONS: [&str; 4] = ["--orig-src", "--orig-dst", "--reply-src", "--reply-dst"];

/// The `conntrack` tool, in this network namespace or, for tests, in a named one.
#[derive(Debug, Clone)]
pub struct Conntrack {
    binary: PathBuf,
    namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConntrackError {
    #[error(
        "the conntrack tool was not found (looked in PATH, /usr/sbin and /sbin); install conntrack-tools (Debian: apt-get install conntrack)"
    )]
    Missing,
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
}

impl Conntrack {
    pub fn new() -> Result<Conntrack, ConntrackError> {
        Self::find(None)
    }

    /// `conntrack` run through `ip netns exec NAMESPACE`.
    pub fn in_namespace(namespace: &str) -> Result<Conntrack, ConntrackError> {
        Self::find(Some(namespace.to_string()))
    }

    fn find(namespace: Option<String>) -> Result<Conntrack, ConntrackError> {
        let binary = sluice_nft::tool::find("conntrack").ok_or(ConntrackError::Missing)?;
        Ok(Conntrack { binary, namespace })
    }

    /// Deletes every entry that has `address` anywhere; returns how many there were.
    pub fn forget(&self, address: IpAddr) -> Result<usize, ConntrackError> {
        let family = if address.is_ipv4() { "ipv4" } else { "ipv6" };
        let address = address.to_string();
        let mut deleted = 0;
        for direction in DIRECTIONS {
            let arguments = ["--family", family, "--delete", direction, address.as_str()];
            let output = sluice_nft::tool::command(&self.binary, self.namespace.as_deref())
                .args(arguments)
                .output()
                .map_err(|error| ConntrackError::Failed {
                    command: format!("conntrack {}", arguments.join(" ")),
                    status: "not started".into(),
                    stderr: error.to_string(),
                })?;
            // "N flow entries have been deleted." on stderr; with none, the exit status is 1.
            let stderr = String::from_utf8_lossy(&output.stderr);
            match deleted_count(&stderr) {
                Some(count) => deleted += count,
                None => {
                    return Err(ConntrackError::Failed {
                        command: format!("conntrack {}", arguments.join(" ")),
                        status: output.status.to_string(),
                        stderr: stderr.trim().to_string(),
                    });
                }
            }
        }
        Ok(deleted)
    }
}

/// Reads conntrack's summary line, `conntrack v1.4.7 (conntrack-tools): 3 flow entries have
/// been deleted.`
fn deleted_count(stderr: &str) -> Option<usize> {
    let line = stderr
        .lines()
        .find(|line| line.contains("flow entries have been deleted"))?;
    let (_, after) = line.split_once("): ")?;
    after.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::deleted_count;

    #[test]
    fn reads_the_summary_and_nothing_else() {
        assert_eq!(
            deleted_count("conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.\n"),
            Some(0)
        );
        assert_eq!(
            deleted_count("conntrack v1.4.7 (conntrack-tools): 12 flow entries have been deleted.\n"),
            Some(12)
        );
        assert_eq!(
            deleted_count("conntrack v1.4.7 (conntrack-tools): Operation not permitted\n"),
            None
        );
    }
}
