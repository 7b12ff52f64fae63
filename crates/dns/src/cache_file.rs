//! The cache file on disk: the one module of this crate that does I/O, called by the shell.
//! A write goes to a temporary file in the same directory, is flushed to the disk and renamed
//! over the old file (then the directory is flushed), so a crash leaves the old file or the
//! new one, never a torn one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Replaces the file at `path` with `bytes` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let mut temporary_name = file_name.to_os_string();
    temporary_name.push(format!(".tmp-{}", std::process::id()));
    let temporary = directory.join(temporary_name);
    let written = (|| {
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written?;
    File::open(directory)?.sync_all()
}

/// The file's bytes, or `None` if there is no file yet.
pub fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_and_leaves_no_temporary() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("dns-cache.json");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, b"first").unwrap();
        write(&path, b"second").unwrap();
        assert_eq!(read(&path).unwrap(), Some(b"second".to_vec()));
        let names: Vec<_> = fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("dns-cache.json")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_says_why() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("dns-cache.json");
        write(&path, b"old").unwrap();
        // Renaming a file over a non-empty directory fails.
        let blocked = directory.path().join("blocked");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"x").unwrap();
        assert!(write(&blocked, b"new").is_err());
        assert_eq!(read(&path).unwrap(), Some(b"old".to_vec()));
        assert!(
            fs::read_dir(directory.path()).unwrap().all(|entry| !entry
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp-"))
        );
        assert!(write(&directory.path().join("missing/dns-cache.json"), b"x").is_err());
    }
}
