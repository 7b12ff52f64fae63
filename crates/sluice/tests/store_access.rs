//! Read commands on stores they cannot write, and on stores that do not exist: they read the
//! first (as an unprivileged user, since root ignores permissions) and refuse the second
//! without creating anything.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn sluice_as(user: Option<u32>, address: &str, arguments: &[&str]) -> Output {
    let binary = env!("CARGO_BIN_EXE_sluice");
    let mut command = match user {
        Some(id) => {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={id}"))
                .arg(format!("--regid={id}"))
                .arg("--clear-groups")
                .arg(binary);
            command
        }
        None => Command::new(binary),
    };
    command
        .args(arguments)
        .env("SLUICE_DATASTORE", address)
        .stdin(Stdio::null())
        .output()
        .expect("sluice runs")
}

const NOBODY: u32 = 65534;

const MANIFEST: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n---\n\
    apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: prod-pool}\nspec: {cidr: 10.10.0.0/16}\n";

/// A store with one pool, written by root, in `directory`.
fn store_in(directory: &Path) -> String {
    let manifest = directory.join("pool.yaml");
    std::fs::write(&manifest, MANIFEST).expect("manifest");
    let address = format!("file://{}", directory.join("store.db").display());
    let applied = sluice_as(None, &address, &["apply", "-f", &manifest.display().to_string()]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    address
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `get`, `ipam show`, `ipam check` and `connectivity` as nobody on a store nobody cannot
/// write; `apply` as nobody fails clearly.
fn reads_work(directory: &Path, address: &str) {
    for arguments in [
        &["get", "ippool"][..],
        &["ipam", "show"],
        &["ipam", "check"],
        &["connectivity", "--ports", "tcp/443"],
    ] {
        let output = sluice_as(Some(NOBODY), address, arguments);
        assert!(
            output.status.success(),
            "{arguments:?} on a read-only store: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if arguments[0] == "get" {
            assert!(String::from_utf8_lossy(&output.stdout).contains("prod-pool"));
        }
    }
    let manifest = directory.join("pool.yaml").display().to_string();
    let refused = sluice_as(Some(NOBODY), address, &["apply", "-f", &manifest]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("cannot be written"),
        "{stderr}"
    );
}

#[test]
fn read_commands_work_on_a_read_only_store_file() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let address = store_in(directory.path());
    // nobody may create files beside the store (the WAL index) but not write the store.
    chmod(directory.path(), 0o777);
    chmod(&directory.path().join("store.db"), 0o444);
    reads_work(directory.path(), &address);
}

#[test]
fn read_commands_work_on_a_store_in_a_read_only_directory() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let address = store_in(directory.path());
    chmod(directory.path(), 0o755);
    chmod(&directory.path().join("store.db"), 0o644);
    reads_work(directory.path(), &address);
    assert!(!directory.path().join("store.db-shm").exists());
}

#[test]
fn read_commands_refuse_a_missing_store_and_create_nothing() {
    let directory = tempfile::tempdir().expect("temporary directory");
    let path = directory.path().join("typo").join("store.db");
    let address = format!("file://{}", path.display());
    for arguments in [
        &["get", "ippool"][..],
        &["ipam", "show"],
        &["ipam", "check"],
        &["connectivity", "--ports", "tcp/443"],
        &[
            "explain",
            "--from",
            "prod/web",
            "--to",
            "192.0.2.1",
            "--port",
            "443",
        ],
        &["delete", "ippool", "prod-pool"],
        &["agent", "--node", "node-1"],
    ] {
        let output = sluice_as(None, &address, arguments);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success()
                && stderr.contains(&format!("no datastore at {}", path.display()))
                && stderr.contains("`sluice apply` creates one"),
            "{arguments:?}: {stderr}"
        );
    }
    assert!(
        !directory.path().join("typo").exists(),
        "a read command created the store"
    );
    // The writers create it.
    let manifest = directory.path().join("pool.yaml");
    std::fs::write(&manifest, MANIFEST).expect("manifest");
    let applied = sluice_as(None, &address, &["apply", "-f", &manifest.display().to_string()]);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    assert!(path.exists());
}
