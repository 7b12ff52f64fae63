//! Where a lab keeps its state: `<root>/<name>/` holds `lab.json` (what was built), the
//! embedded store, `logs/` and `pids/`. Namespace names and how a lab's namespaces are told
//! apart from another lab's.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{EgressGatewaySpec, OutsideHostSpec, PodPort};
use crate::shell;

/// What `lab up` built, written as it goes so that `lab down` can undo a half-built lab.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabState {
    pub name: String,
    pub datastore: String,
    /// The embedded store in the state directory (deleted with the lab), not an outside one.
    pub embedded: bool,
    pub fabric: Option<String>,
    pub nodes: Vec<NodeState>,
    pub hosts: Vec<HostState>,
    pub pods: Vec<PodState>,
    /// The lab's DNS server, once it runs.
    #[serde(default)]
    pub dns: Option<DnsState>,
    /// The DNS server the agents trust (`--dns-trusted-server`): the lab's, known before it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_dns: Option<Ipv4Addr>,
}

/// Where the lab's DNS server runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsState {
    pub address: Ipv4Addr,
    pub netns: String,
    /// The outside host whose address it shares, if any; else it has a host of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostState {
    pub netns: String,
    #[serde(flatten)]
    pub spec: OutsideHostSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub ports: Vec<PodPort>,
    /// Set for an egress gateway pod, whose `sluice gateway` the lab runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_gateway: Option<EgressGatewaySpec>,
}

impl PodState {
    pub fn shown(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

impl LabState {
    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.iter().find(|node| node.name == name)
    }
}

/// The default parent of lab state directories: `/run/sluice-lab` for root, else
/// `$XDG_RUNTIME_DIR/sluice-lab`, else the temporary directory.
pub fn default_root() -> PathBuf {
    if shell::is_root() {
        return PathBuf::from("/run/sluice-lab");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(directory) if directory.is_absolute() => directory.join("sluice-lab"),
        _ => std::env::temp_dir().join("sluice-lab"),
    }
}

/// One lab's directory and the names of its namespaces.
#[derive(Debug, Clone)]
pub struct LabPaths {
    pub name: String,
    pub directory: PathBuf,
}

impl LabPaths {
    pub fn new(root: &Path, name: &str) -> LabPaths {
        LabPaths {
            name: name.to_string(),
            directory: root.join(name),
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.directory.join("lab.json")
    }

    pub fn store_address(&self) -> String {
        format!("file://{}", self.directory.join("store.db").display())
    }

    pub fn log_file(&self, process: &str) -> PathBuf {
        self.directory.join("logs").join(format!("{process}.log"))
    }

    pub fn pid_file(&self, process: &str) -> PathBuf {
        self.directory.join("pids").join(format!("{process}.pid"))
    }

    /// `sl-<name>-`: the prefix of every namespace of this lab.
    pub fn prefix(&self) -> String {
        format!("sl-{}-", self.name)
    }

    pub fn fabric_netns(&self) -> String {
        format!("{}fab", self.prefix())
    }

    pub fn node_netns(&self, index: usize) -> String {
        format!("{}n{index}", self.prefix())
    }

    pub fn host_netns(&self, index: usize) -> String {
        format!("{}h{index}", self.prefix())
    }

    pub fn pod_netns(&self, index: usize) -> String {
        format!("{}p{index}", self.prefix())
    }

    /// Whether a namespace is this lab's: the prefix and then exactly a role and an index, so
    /// that lab `a` never claims lab `a-b`'s `sl-a-b-n0`.
    pub fn owns_netns(&self, netns: &str) -> bool {
        let Some(rest) = netns.strip_prefix(&self.prefix()) else {
            return false;
        };
        if rest == "fab" {
            return true;
        }
        let mut characters = rest.chars();
        matches!(characters.next(), Some('n' | 'h' | 'p'))
            && !characters.as_str().is_empty()
            && characters.all(|character| character.is_ascii_digit())
    }

    pub fn load(&self) -> Result<LabState, String> {
        let path = self.state_file();
        let text = std::fs::read_to_string(&path).map_err(|error| {
            format!(
                "no lab `{}` here ({}: {error}); start one with `sluice lab up -f LAB.yaml`",
                self.name,
                path.display()
            )
        })?;
        serde_json::from_str(&text).map_err(|error| format!("{} is unreadable: {error}", path.display()))
    }

    pub fn save(&self, state: &LabState) -> Result<(), String> {
        let text = serde_json::to_string_pretty(state).map_err(|error| error.to_string())?;
        let path = self.state_file();
        let partial = path.with_extension("json.partial");
        std::fs::write(&partial, text)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))
    }
}

/// The labs under `root`, by directory name.
pub fn list_labs(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|entry| entry.path().join("lab.json").exists())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// The lab a command is about: the one named, else the only one there is.
pub fn choose_lab(root: &Path, name: Option<&str>) -> Result<String, String> {
    if let Some(name) = name {
        return Ok(name.to_string());
    }
    match list_labs(root).as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(format!("no lab is running (under {})", root.display())),
        several => Err(format!(
            "several labs are running ({}); say which with --name",
            several.join(", ")
        )),
    }
}

/// A pid file: the id on the first line, a marker its command line holds on the second and,
/// for a process whose command line is the same in every lab (a gateway's), the network
/// namespace it runs in on the third.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidRecord {
    pub pid: u32,
    pub marker: String,
    pub netns: Option<String>,
}

impl PidRecord {
    pub fn read(pid_file: &Path) -> Option<PidRecord> {
        let text = std::fs::read_to_string(pid_file).ok()?;
        let mut lines = text.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let marker = lines.next().unwrap_or_default().to_string();
        let netns = lines.next().map(str::trim).filter(|netns| !netns.is_empty());
        Some(PidRecord {
            pid,
            marker,
            netns: netns.map(str::to_string),
        })
    }

    /// Whether the process still runs and is the one we started (its command line holds the
    /// marker, and it is in the recorded namespace), so a recycled id is never taken for ours.
    pub fn is_running(&self) -> bool {
        process_matches(self.pid, &self.marker)
            && self
                .netns
                .as_deref()
                .is_none_or(|netns| process_in_netns(self.pid, netns))
    }

    /// TERM, then KILL if it is still there after a second.
    pub fn stop(&self) {
        stop_while(self.pid, || self.is_running());
    }
}

/// A process id from a pid file, if the process still runs and is the one we started.
pub fn live_pid(pid_file: &Path) -> Option<u32> {
    PidRecord::read(pid_file)
        .filter(PidRecord::is_running)
        .map(|record| record.pid)
}

pub fn process_matches(pid: u32, marker: &str) -> bool {
    let Ok(command_line) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie has an empty command line and state Z; it is not running.
    let zombie = stat
        .rsplit(')')
        .next()
        .is_some_and(|rest| rest.trim_start().starts_with('Z'));
    !zombie
        && String::from_utf8_lossy(&command_line)
            .replace('\0', " ")
            .contains(marker)
}

/// Whether a process is in the named network namespace: its `/proc/PID/ns/net` and
/// `/run/netns/NAME` are the same namespace file (device and inode).
pub fn process_in_netns(pid: u32, netns: &str) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let (Ok(process), Ok(named)) = (
        std::fs::metadata(format!("/proc/{pid}/ns/net")),
        std::fs::metadata(Path::new("/run/netns").join(netns)),
    ) else {
        return false;
    };
    (process.dev(), process.ino()) == (named.dev(), named.ino())
}

/// Stops a process we started: TERM, then KILL if it is still there after a second.
pub fn stop_process(pid: u32, marker: &str) {
    stop_while(pid, || process_matches(pid, marker));
}

fn stop_while(pid: u32, ours: impl Fn() -> bool) {
    if !ours() {
        return;
    }
    let _ = shell::quiet("kill", &["-TERM", &pid.to_string()]);
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline && ours() {
        std::thread::sleep(Duration::from_millis(20));
    }
    if ours() {
        let _ = shell::quiet("kill", &["-KILL", &pid.to_string()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_owns_only_its_own_namespaces() {
        let lab = LabPaths::new(Path::new("/tmp"), "a");
        for owned in ["sl-a-fab", "sl-a-n0", "sl-a-h12", "sl-a-p3"] {
            assert!(lab.owns_netns(owned), "{owned}");
        }
        for foreign in [
            "sl-a-b-n0",
            "sl-ab-n0",
            "sl-a-",
            "sl-a-n",
            "sl-a-x1",
            "sl-a-n1x",
            "other",
        ] {
            assert!(!lab.owns_netns(foreign), "{foreign}");
        }
        assert_eq!(lab.node_netns(1), "sl-a-n1");
    }
}
