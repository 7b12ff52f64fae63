//! The node's flow log file for log shippers: JSON lines appended and synced each interval,
//! rotated by size (`flows.log` → `flows.log.1` → … → `flows.log.<keep>`, the oldest removed),
//! as logrotate's `copytruncate`-free scheme does, so a shipper following by name sees each line
//! once.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// An append-only, size-rotated JSON-lines file.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
}

impl RotatingFile {
    /// Opens (creating it and its directory) the file at `path`, appending to what is there.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> std::io::Result<RotatingFile> {
        if let Some(parent) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max_bytes: max_bytes.max(1),
            keep,
            file,
            size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the lines and syncs them to disk (a written record survives an agent restart or
    /// a crash), rotating first when the file is full.
    pub fn append<'a>(&mut self, lines: impl IntoIterator<Item = &'a str>) -> std::io::Result<()> {
        let mut text = String::new();
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        if text.is_empty() {
            return Ok(());
        }
        if self.size > 0 && self.size >= self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(text.as_bytes())?;
        self.file.sync_data()?;
        self.size += text.len() as u64;
        Ok(())
    }

    fn numbered(&self, index: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{index}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(self.numbered(self.keep));
        for index in (1..self.keep).rev() {
            let from = self.numbered(index);
            if from.exists() {
                std::fs::rename(&from, self.numbered(index + 1))?;
            }
        }
        std::fs::rename(&self.path, self.numbered(1))?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_rotates_keeping_the_newest() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("logs/flows.log");
        let mut file = RotatingFile::open(&path, 20, 2).unwrap();
        for index in 0..5 {
            file.append([format!("{{\"n\":{index:09}}}").as_str()]).unwrap();
        }
        // Each line is 16 bytes: every second append rotates.
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        assert_eq!(read(&path), "{\"n\":000000004}\n");
        assert!(read(&directory.path().join("logs/flows.log.1")).contains("000000003"));
        assert!(read(&directory.path().join("logs/flows.log.2")).contains("000000001"));
        assert!(!directory.path().join("logs/flows.log.3").exists());
    }

    #[test]
    fn reopening_appends_to_what_was_written() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("flows.log");
        RotatingFile::open(&path, 1 << 20, 3)
            .unwrap()
            .append(["{\"a\":1}"])
            .unwrap();
        RotatingFile::open(&path, 1 << 20, 3)
            .unwrap()
            .append(["{\"b\":2}"])
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"b\":2}\n");
    }
}
