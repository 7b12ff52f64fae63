//! Finding and running the netfilter command-line tools (`nft`, `conntrack`) the way Sluice
//! runs all of them: from PATH or the sbin directories, in this network namespace or, through
//! `ip netns exec`, in a named one.

use std::path::PathBuf;
use std::process::Command;

/// The tool's path: the first `name` on PATH, else in /usr/sbin or /sbin (root's tools are
/// often not on a service's PATH).
pub fn find(name: &str) -> Option<PathBuf> {
    let search = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    search
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

/// A command that runs `binary` here or inside `namespace`.
pub fn command(binary: &std::path::Path, namespace: Option<&str>) -> Command {
    match namespace {
        Some(namespace) => {
            let mut command = Command::new("ip");
            command.args(["netns", "exec", namespace]).arg(binary);
            command
        }
        None => Command::new(binary),
    }
}
