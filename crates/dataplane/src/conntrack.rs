//! Forgetting the connection-tracking state of a pod address that is gone.
//!
//! Conntrack entries outlive the pod whose traffic made them: they name addresses, not
//! interfaces. When the address goes to a new pod, an old entry would let the old peer's
//! packets through as "established" and deliver them to the new pod, whatever its policy says.
//! So every entry of a released pod address is deleted, through the `conntrack` tool
//! (conntrack-tools), as kube-proxy also uses it. Calico's Felix deletes the same entries
//! (`felix/conntrack`) when a workload's route goes; Sluice's CNI plugin does it on DEL,
//! before IPAM can hand the address out again.

use std::net::IpAddr;
use std::path::PathBuf;

/// Where a pod's address appears in every entry of its flows: the original source when the
/// pod opened the connection, the reply source when it answered one (even one addressed to
/// another address and DNATed to it). Felix searches the same two.
const DIRECTIONS: [&str; 2] = ["--orig-src", "--reply-src"];
/// The tool fails now and then for no lasting reason; Felix retries 3 times too.
const ATTEMPTS: usize = 4;

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
            let mut attempt = 1;
            loop {
                match self.delete(&arguments) {
                    Ok(count) => {
                        deleted += count;
                        break;
                    }
                    Err(_) if attempt < ATTEMPTS => attempt += 1,
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(deleted)
    }

    /// One `conntrack --delete`; how many entries it deleted.
    fn delete(&self, arguments: &[&str]) -> Result<usize, ConntrackError> {
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
        deleted_count(&stderr).ok_or_else(|| ConntrackError::Failed {
            command: format!("conntrack {}", arguments.join(" ")),
            status: output.status.to_string(),
            stderr: stderr.trim().to_string(),
        })
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
