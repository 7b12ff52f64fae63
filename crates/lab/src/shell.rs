//! Running `ip`, `sysctl` and our own helpers, with bounded waits and errors that say which
//! command failed and what it printed.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether this process runs as root (effective uid 0), read from `/proc` to stay free of
/// `unsafe`.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|effective| effective == "0")
        })
        .unwrap_or(false)
}

/// The path of a program found on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(program))
        .find(|candidate| candidate.is_file())
}

fn describe(program: &str, arguments: &[&str]) -> String {
    std::iter::once(program)
        .chain(arguments.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a command to completion; an error carries the command and its stderr.
pub fn run(program: &str, arguments: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run `{}`: {error}", describe(program, arguments)))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed: {}",
            describe(program, arguments),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Runs a command whose failure is expected or harmless (cleanup).
pub fn quiet(program: &str, arguments: &[&str]) -> bool {
    Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// `ip ARGS`.
pub fn ip(arguments: &[&str]) -> Result<String, String> {
    run("ip", arguments)
}

/// `ip -n NETNS ARGS`.
pub fn ip_in(netns: &str, arguments: &[&str]) -> Result<String, String> {
    let mut all = vec!["-n", netns];
    all.extend_from_slice(arguments);
    run("ip", &all)
}

/// Sets a sysctl inside a namespace, never in the root one.
pub fn sysctl_in(netns: &str, setting: &str) -> Result<(), String> {
    run("ip", &["netns", "exec", netns, "sysctl", "-qw", setting]).map(drop)
}

/// Every network namespace `ip netns` knows.
pub fn list_netns() -> Vec<String> {
    run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect()
}

/// A command run inside `netns` through `ip netns exec`.
pub fn in_netns(netns: &str, program: &Path) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns]).arg(program);
    command
}

/// Starts a long-running process in the background, detached from our process group (so a
/// Ctrl-C aimed at `lab up` does not stop it), logging to (the end of) `log` and recording its id in `pid_file`.
/// `ip netns exec` execs the program, so the id is the program's; `marker` is part of its
/// command line and tells it from a process that later reuses the id; `netns`, recorded too,
/// is the namespace it runs in, for a process whose command line is the same in every lab.
pub fn spawn_background(
    mut command: Command,
    log: &Path,
    pid_file: &Path,
    marker: &str,
    netns: Option<&str>,
) -> Result<Child, String> {
    for directory in [log.parent(), pid_file.parent()].into_iter().flatten() {
        std::fs::create_dir_all(directory)
            .map_err(|error| format!("cannot create {}: {error}", directory.display()))?;
    }
    // Appended to, so that a restarted process (tests restart agents) keeps its history.
    let output = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|error| format!("cannot create {}: {error}", log.display()))?;
    let errors = output.try_clone().map_err(|error| error.to_string())?;
    let child = command
        .stdin(Stdio::null())
        .stdout(output)
        .stderr(errors)
        .process_group(0)
        .spawn()
        .map_err(|error| format!("cannot start {command:?}: {error}"))?;
    let pid = child.id();
    let netns = netns.map(|netns| format!("{netns}\n")).unwrap_or_default();
    std::fs::write(pid_file, format!("{pid}\n{marker}\n{netns}"))
        .map_err(|error| format!("cannot write {}: {error}", pid_file.display()))?;
    Ok(child)
}

/// Runs a command with `stdin` as input and waits at most `limit`; a command still running then
/// is killed (it is our own child) and reported.
pub fn run_bounded(mut command: Command, stdin: &[u8], limit: Duration) -> Result<Output, String> {
    let shown = format!("{command:?}");
    let mut child: Child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {shown}: {error}"))?;
    if let Some(mut input) = child.stdin.take() {
        use std::io::Write;
        // A child that exits without reading its input is not an error here.
        let _ = input.write_all(stdin);
    }
    // Drain the pipes on threads so a chatty child never blocks on a full pipe.
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{shown} did not finish within {limit:?}"));
            }
            Err(error) => return Err(format!("waiting for {shown}: {error}")),
        }
    };
    let collect = |handle: Option<std::thread::JoinHandle<Vec<u8>>>| {
        handle.and_then(|handle| handle.join().ok()).unwrap_or_default()
    };
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

fn drain(mut reader: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = reader.read_to_end(&mut buffer);
        buffer
    })
}

/// Polls `ready` every `interval` until it says yes or `limit` passes.
pub fn wait_until(limit: Duration, interval: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(interval);
    }
}
