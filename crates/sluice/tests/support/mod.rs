//! What the `sluice` binary's tests that explain from a manifest file share: the file, the
//! binary run as a user runs it, and its output as text.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Writes `manifests` to a fresh file for one test (`prefix` names the test binary) and
/// returns its path.
pub fn manifest_file(prefix: &str, test: &str, manifests: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!("sluice-{prefix}-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("policy.yaml");
    std::fs::write(&path, manifests).unwrap();
    path
}

pub fn sluice(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(arguments)
        .output()
        .expect("the sluice binary runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
