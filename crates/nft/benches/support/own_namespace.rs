//! The benches' way of running in a network namespace of their own: the first run creates one,
//! re-runs the bench binary inside it with `ip netns exec` (so every measured call talks to
//! that namespace directly, as the agent does in its node's), deletes it and exits with the
//! inner run's status.

use std::process::Command;

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

/// Returns only inside the namespace; `marker` is the environment variable that tells the
/// inner run from the outer, `purpose` names the namespace.
pub fn enter(marker: &str, purpose: &str) {
    if std::env::var_os(marker).is_some() {
        return;
    }
    let namespace = Namespace(format!("sluicebench-{purpose}-{}", std::process::id()));
    let created = Command::new("ip").args(["netns", "add", &namespace.0]).status();
    assert!(
        created.is_ok_and(|status| status.success()),
        "creating network namespace {} (needs root)",
        namespace.0
    );
    let status = Command::new("ip")
        .args(["netns", "exec", &namespace.0])
        .arg(std::env::current_exe().expect("the bench binary"))
        .args(std::env::args().skip(1))
        .env(marker, "1")
        .status()
        .expect("ip netns exec runs");
    drop(namespace);
    std::process::exit(status.code().unwrap_or(1));
}
