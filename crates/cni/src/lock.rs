//! One lock per container: the spec forbids parallel calls for one container, but runtimes make
//! them after crashes and timeouts, so every ADD, DEL and CHECK of a container holds an `flock`
//! on `<lock directory>/<containerID>.lock` for the whole command.
//!
//! DEL removes the file while it holds the lock; a process that was waiting on the removed file
//! notices (the path no longer names the file it locked) and locks the new one, so two
//! processes never both believe they hold a container's lock.

use std::fs::{DirBuilder, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::protocol::{CniError, ErrorCode, validate_container_id};

/// Where the locks live unless the network configuration says otherwise.
pub const DEFAULT_LOCK_DIRECTORY: &str = "/run/sluice/cni/locks";
/// How long a command waits for another call on the same container before asking the runtime
/// to try again; runtimes give a CNI call minutes.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(10);

/// A held container lock; released when dropped.
#[derive(Debug)]
pub struct ContainerLock {
    path: PathBuf,
    _file: Flock<File>,
}

impl ContainerLock {
    /// Waits up to `wait` for the lock of `container_id` in `directory`, creating the directory
    /// (mode 0700) and the file (mode 0600, never through a symbolic link) as needed.
    pub fn acquire(directory: &Path, container_id: &str, wait: Duration) -> Result<ContainerLock, CniError> {
        validate_container_id(container_id)?;
        let io_error = |what: &str, path: &Path, error: &dyn std::fmt::Display| {
            CniError::new(ErrorCode::Io, format!("cannot {what} the container lock"))
                .with_details(format!("{}: {error}", path.display()))
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(directory)
            .map_err(|error| io_error("create the directory of", directory, &error))?;
        let metadata =
            std::fs::symlink_metadata(directory).map_err(|error| io_error("inspect", directory, &error))?;
        if !metadata.is_dir() {
            return Err(io_error("use", directory, &"not a directory"));
        }
        let path = directory.join(lock_file_name(container_id));
        let deadline = Instant::now() + wait;
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
                .open(&path)
                .map_err(|error| io_error("open", &path, &error))?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => {
                    // A DEL may have removed the file between our open and our lock.
                    if same_file(&locked, &path) {
                        return Ok(ContainerLock { path, _file: locked });
                    }
                }
                Err((_, Errno::EWOULDBLOCK)) => {
                    if Instant::now() >= deadline {
                        return Err(CniError::new(
                            ErrorCode::TryAgainLater,
                            "another call for this container is still running",
                        )
                        .with_details(format!(
                            "waited {} s for {}",
                            wait.as_secs(),
                            path.display()
                        )));
                    }
                    std::thread::sleep(POLL);
                }
                Err((_, errno)) => return Err(io_error("take", &path, &errno)),
            }
        }
    }

    /// Removes the lock file (the container is gone) and releases the lock.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The container ID itself (validated: no `/`, not `.` or `..`), hashed when it would exceed a
/// file name's 255 bytes.
fn lock_file_name(container_id: &str) -> String {
    if container_id.len() <= 200 {
        format!("{container_id}.lock")
    } else {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(container_id.as_bytes());
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        format!("sha256-{hex}.lock")
    }
}

fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_and_gives_up_with_try_again_later() {
        let directory = tempfile::tempdir().unwrap();
        let locks = directory.path().join("locks");
        let held = ContainerLock::acquire(&locks, "c1", LOCK_WAIT).unwrap();
        let error = ContainerLock::acquire(&locks, "c1", Duration::from_millis(50)).unwrap_err();
        assert_eq!(error.code, ErrorCode::TryAgainLater, "{error}");
        // Another container is not held up.
        ContainerLock::acquire(&locks, "c2", Duration::ZERO).unwrap();
        held.remove();
        assert!(!locks.join("c1.lock").exists());
        ContainerLock::acquire(&locks, "c1", Duration::ZERO).unwrap();
    }

    #[test]
    fn lock_files_are_named_only_by_valid_container_ids() {
        let directory = tempfile::tempdir().unwrap();
        let error = ContainerLock::acquire(directory.path(), "../escape", LOCK_WAIT).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidEnvironment);
        assert_eq!(lock_file_name("abc"), "abc.lock");
        assert!(lock_file_name(&"a".repeat(300)).len() < 255);
    }

    #[test]
    fn a_symbolic_link_is_not_followed() {
        let directory = tempfile::tempdir().unwrap();
        let target = directory.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, directory.path().join("c1.lock")).unwrap();
        let error = ContainerLock::acquire(directory.path(), "c1", LOCK_WAIT).unwrap_err();
        assert_eq!(error.code, ErrorCode::Io);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }
}
