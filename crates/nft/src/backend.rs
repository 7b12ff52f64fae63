//! Running the `nft` binary.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;

use crate::objects::{Table, Transaction};

/// The oldest nft Sluice supports: 1.0.1 is what Kubernetes' knftables requires too.
pub const MINIMUM_VERSION: NftVersion = NftVersion(1, 0, 1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NftVersion(pub u32, pub u32, pub u32);

impl std::fmt::Display for NftVersion {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl NftVersion {
    /// Reads `nftables v1.0.6 (Lester Gooch #5)`.
    pub fn parse(text: &str) -> Option<NftVersion> {
        let version = text.split_whitespace().find_map(|word| word.strip_prefix('v'))?;
        let mut parts = version.split('.').map(|part| part.parse::<u32>().ok());
        Some(NftVersion(
            parts.next()??,
            parts.next()??,
            parts.next().flatten().unwrap_or(0),
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error(
        "the nft binary was not found (looked in PATH, /usr/sbin and /sbin); install nftables (Debian: apt-get install nftables)"
    )]
    Missing,
    #[error("nft {found} is too old; Sluice needs nftables {MINIMUM_VERSION} or newer")]
    TooOld { found: NftVersion },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("running nft: {0}")]
    Io(#[from] std::io::Error),
    #[error("the fake nftables rejected the transaction: {0}")]
    Rejected(String),
}

/// Somewhere transactions can be applied.
pub trait Backend {
    /// Applies the whole transaction or, on error, nothing.
    fn apply(&mut self, transaction: &Transaction) -> Result<(), NftError>;
    /// Checks that the transaction would apply, changing nothing.
    fn check(&mut self, transaction: &Transaction) -> Result<(), NftError>;
}

/// The real `nft`, in this network namespace or, for tests and the lab, in a named one.
#[derive(Debug, Clone)]
pub struct CommandBackend {
    binary: PathBuf,
    namespace: Option<String>,
    pub version: NftVersion,
}

impl CommandBackend {
    /// Finds `nft` and checks its version.
    pub fn new() -> Result<Self, NftError> {
        Self::find(None)
    }

    /// `nft` run through `ip netns exec NAMESPACE`.
    pub fn in_namespace(namespace: &str) -> Result<Self, NftError> {
        Self::find(Some(namespace.to_string()))
    }

    fn find(namespace: Option<String>) -> Result<Self, NftError> {
        let binary = crate::tool::find("nft").ok_or(NftError::Missing)?;
        let mut backend = CommandBackend {
            binary,
            namespace,
            version: NftVersion(0, 0, 0),
        };
        let output = backend.run(&["--version"], None)?;
        let version = NftVersion::parse(&output).ok_or_else(|| NftError::Failed {
            command: "nft --version".into(),
            status: "unreadable".into(),
            stderr: output.clone(),
        })?;
        if version < MINIMUM_VERSION {
            return Err(NftError::TooOld { found: version });
        }
        backend.version = version;
        Ok(backend)
    }

    fn run(&self, arguments: &[&str], input: Option<&str>) -> Result<String, NftError> {
        let mut command = crate::tool::command(&self.binary, self.namespace.as_deref());
        command
            .args(arguments)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.unwrap_or_default().as_bytes())?;
        }
        let output = child.wait_with_output()?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(NftError::Failed {
                command: format!("nft {}", arguments.join(" ")),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    /// The table as `nft -j list table` prints it, or `None` when it does not exist.
    pub fn list(&self, table: &Table) -> Result<Option<serde_json::Value>, NftError> {
        let family = table.family.to_string();
        match self.run(&["-j", "list", "table", &family, &table.name], None) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|error| NftError::Rejected(format!("nft -j printed unreadable JSON: {error}"))),
            Err(NftError::Failed { stderr, .. }) if stderr.contains("No such file or directory") => Ok(None),
            Err(error) => Err(error),
        }
    }
}

impl Backend for CommandBackend {
    fn apply(&mut self, transaction: &Transaction) -> Result<(), NftError> {
        self.run(&["-f", "-"], Some(&transaction.render())).map(drop)
    }

    fn check(&mut self, transaction: &Transaction) -> Result<(), NftError> {
        self.run(&["--check", "-f", "-"], Some(&transaction.render()))
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_compare() {
        assert_eq!(
            NftVersion::parse("nftables v1.0.6 (Lester Gooch #5)"),
            Some(NftVersion(1, 0, 6))
        );
        assert_eq!(
            NftVersion::parse("nftables v0.9.8 (E.D.S.)"),
            Some(NftVersion(0, 9, 8))
        );
        assert!(NftVersion(0, 9, 8) < MINIMUM_VERSION);
        assert!(NftVersion(1, 1, 0) > MINIMUM_VERSION);
        assert_eq!(NftVersion::parse("garbage"), None);
    }
}
