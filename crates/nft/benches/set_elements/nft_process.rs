//! The two ways of writing set elements through the `nft` binary that the netlink writer is
//! measured against: one `nft -f -` process per update (what `CommandBackend` does), and one
//! long-lived `nft -i` fed through its standard input.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, Command, Stdio};

use sluice_nft::ElementChange;

/// The changes as nft commands on one line: nft applies one line (one buffer) as one
/// transaction, in `-f` and in `-i` alike.
pub fn render(changes: &[ElementChange]) -> String {
    changes
        .iter()
        .map(|change| match change {
            ElementChange::Add {
                table,
                set,
                key,
                timeout,
            } => {
                let timeout = timeout
                    .map(|timeout| format!(" timeout {}ms", timeout.as_millis()))
                    .unwrap_or_default();
                format!("add element {table} {set} {{ {key}{timeout} }}")
            }
            ElementChange::Delete { table, set, key } => format!("delete element {table} {set} {{ {key} }}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `nft -f -`, a new process per update.
pub struct ProcessPerUpdate {
    binary: PathBuf,
}

impl ProcessPerUpdate {
    pub fn new() -> ProcessPerUpdate {
        ProcessPerUpdate {
            binary: sluice_nft::tool::find("nft").expect("nft is installed"),
        }
    }

    pub fn apply(&mut self, changes: &[ElementChange]) -> Result<(), String> {
        let mut child = Command::new(&self.binary)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| error.to_string())?;
        let mut stdin = child.stdin.take().expect("piped");
        writeln!(stdin, "{}", render(changes)).map_err(|error| error.to_string())?;
        drop(stdin);
        let output = child.wait_with_output().map_err(|error| error.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}

/// One `nft -i` for the whole run. nft 1.0.6 reads commands from a non-terminal stdin line by
/// line, prints nothing on success and an error (with the offending line) on stderr, and keeps
/// going (exit status 0 at the end whatever failed). So after each update a marker line is sent
/// that nft cannot parse: its error (an `Error:` line, the marker, a caret line) ends the
/// update's answer, and any error lines before it are the update's.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: BufReader<ChildStderr>,
    updates: u64,
}

impl Session {
    pub fn start() -> Session {
        let binary = sluice_nft::tool::find("nft").expect("nft is installed");
        let mut child = Command::new(binary)
            .arg("-i")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft -i starts");
        let stdin = child.stdin.take();
        let stderr = BufReader::new(child.stderr.take().expect("piped"));
        Session {
            child,
            stdin,
            stderr,
            updates: 0,
        }
    }

    pub fn apply(&mut self, changes: &[ElementChange]) -> Result<(), String> {
        self.updates += 1;
        let marker = format!("sluice-update-{}-done", self.updates);
        let stdin = self.stdin.as_mut().expect("open until drop");
        write!(stdin, "{}\n{marker}\n", render(changes)).map_err(|error| error.to_string())?;
        stdin.flush().map_err(|error| error.to_string())?;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self
                .stderr
                .read_line(&mut line)
                .map_err(|error| error.to_string())?
                == 0
            {
                return Err(format!("nft -i ended: {}", lines.join("")));
            }
            if line.trim_end() == marker {
                // ... followed by the caret line under it.
                let mut caret = String::new();
                self.stderr
                    .read_line(&mut caret)
                    .map_err(|error| error.to_string())?;
                break;
            }
            lines.push(line);
        }
        // The marker's own "Error: syntax error" line comes just before it.
        lines.pop();
        if lines.is_empty() {
            Ok(())
        } else {
            Err(lines.join(""))
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
