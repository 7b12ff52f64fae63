//! Running work inside a named network namespace, for every netlink user: a socket opened by
//! a thread that entered the namespace stays in it whichever thread uses it later.

/// Runs `work` on a short-lived thread that entered the named network namespace
/// (`/run/netns/<name>`), or here when `namespace` is `None`. A socket made by `work` stays in
/// that namespace whichever thread uses it later; the caller's thread never changes namespace.
pub fn in_network_namespace<T: Send>(
    namespace: Option<&str>,
    work: impl FnOnce() -> T + Send,
) -> Result<T, NamespaceError> {
    let Some(name) = namespace else {
        return Ok(work());
    };
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).map_err(|error| NamespaceError {
        namespace: name.to_string(),
        reason: format!("opening {path}: {error}"),
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|errno| {
                    NamespaceError {
                        namespace: name.to_string(),
                        reason: format!("setns: {errno}"),
                    }
                })?;
                Ok(work())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(NamespaceError {
                    namespace: name.to_string(),
                    reason: "the thread that entered it panicked".into(),
                })
            })
    })
}

/// A network namespace that could not be entered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network namespace {namespace}: {reason}")]
pub struct NamespaceError {
    pub namespace: String,
    pub reason: String,
}
