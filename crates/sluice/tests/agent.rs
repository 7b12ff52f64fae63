//! `sluice agent` as a process: how it stops, the arguments it refuses, and `sluice get
//! nodestatus` on live, stopped and stale records. The agents run inside network namespaces
//! the tests create (root only; skipped otherwise) against an embedded store in a temporary
//! directory; nothing touches the root namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use sluice_agent::{NodeStatus, status_key};
use sluice_store::{Condition, Operation};

const WORKLOAD_ENDPOINT: &str = "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: node--1-k8s-web-eth0, namespace: prod}\nspec: {node: node-1, pod: web, endpoint: eth0, containerID: c1, orchestrator: k8s, interfaceName: slc000000000001, ipNetworks: [10.10.0.10/32]}\n";

/// A temporary store, and a network namespace with an agent in it; both go when dropped.
struct Lab {
    directory: PathBuf,
    netns: String,
    agent: Option<Child>,
}

impl Lab {
    fn new(name: &str) -> Lab {
        let id = format!("sluice-agent-test-{}-{name}", std::process::id());
        let directory = std::env::temp_dir().join(&id);
        let _ = std::fs::remove_dir_all(&directory);
        std::fs::create_dir_all(&directory).unwrap();
        Lab {
            directory,
            netns: id,
            agent: None,
        }
    }

    fn address(&self) -> String {
        format!("file://{}", self.directory.join("store.db").display())
    }

    fn sluice(&self, arguments: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(arguments)
            .env("SLUICE_DATASTORE", self.address())
            .output()
            .expect("the sluice binary runs")
    }

    /// The examples and node-1's web pod, applied as a user would.
    fn apply_examples(&self) {
        let endpoint = self.directory.join("endpoint.yaml");
        std::fs::write(&endpoint, WORKLOAD_ENDPOINT).unwrap();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        for path in [examples, endpoint] {
            let output = self.sluice(&["apply", "-f", &path.display().to_string()]);
            assert!(output.status.success(), "{}", text(&output.stderr));
        }
    }

    /// Starts `sluice agent --node node-1` inside a namespace of its own.
    fn start_agent(&mut self) {
        let log = self.directory.join("flows.log");
        self.start_agent_with_flow_log(&log);
    }

    /// Starts the agent with its flow log file at `log`.
    fn start_agent_with_flow_log(&mut self, log: &Path) {
        run("ip", &["netns", "add", &self.netns]);
        run("ip", &["-n", &self.netns, "link", "set", "lo", "up"]);
        // `ip netns exec` execs the agent, so the child's id is the agent's.
        let agent = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(env!("CARGO_BIN_EXE_sluice"))
            .args(["agent", "--node", "node-1", "--datastore", &self.address()])
            .args(["--metrics-address", "127.0.0.1:0"])
            // Its flow log in this test's directory, not the machine's.
            .arg("--flows-socket")
            .arg(self.directory.join("flows.sock"))
            .arg("--flow-log-file")
            .arg(log)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the agent starts");
        self.agent = Some(agent);
    }

    fn node_status(&self) -> Option<NodeStatus> {
        // Every record, so that none yet (the agent's first sync) is no error.
        let output = self.sluice(&["get", "nodestatus", "-o", "json"]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        if output.stdout.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        let statuses: Vec<NodeStatus> = serde_json::from_slice(&output.stdout).unwrap();
        statuses.into_iter().find(|status| status.node == "node-1")
    }

    /// Sends `signal` to the agent and waits (at most 10 s) for it to exit.
    fn stop_agent(&mut self, signal: &str) -> Output {
        let agent = self.agent.take().expect("an agent runs");
        run("kill", &["-s", signal, &agent.id().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut agent = agent;
        while agent.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = agent.kill();
                let output = agent.wait_with_output().unwrap();
                panic!(
                    "the agent did not exit within 10 s of SIG{signal}:\n{}",
                    text(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        agent.wait_with_output().unwrap()
    }

    fn sluice_table(&self) -> Output {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "nft",
                "list",
                "table",
                "inet",
                "sluice",
            ])
            .output()
            .unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn run(program: &str, arguments: &[&str]) {
    let output = Command::new(program).args(arguments).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {arguments:?}: {}",
        text(&output.stderr)
    );
}

fn text(output: &[u8]) -> String {
    String::from_utf8_lossy(output).into_owned()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
    })
}

fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent programs, is stopped by `signal`, and leaves the ruleset and a last status.
fn stops_cleanly_on(signal: &str) {
    if !is_root() {
        println!("skipped: network namespaces need root");
        return;
    }
    let mut lab = Lab::new(&signal.to_lowercase());
    lab.apply_examples();
    lab.start_agent();
    wait_for("the agent to program node-1", || {
        lab.node_status()
            .is_some_and(|status| status.in_sync && status.local_endpoints == 1)
    });
    // A live agent's record is fresh.
    let listing = lab.sluice(&["get", "nodestatus"]);
    let listing = text(&listing.stdout);
    let row = words(listing.lines().nth(1).unwrap_or_default());
    assert!(words(&listing).starts_with("NODE IN SYNC AGE "), "{listing}");
    assert!(
        row.starts_with("node-1 true ") && !row.contains("stale"),
        "{listing}"
    );
    let programmed = lab.sluice_table();
    assert!(programmed.status.success(), "{}", text(&programmed.stderr));
    // Its record names where it serves its flow log, and `sluice flows` reads it from there.
    let status = lab.node_status().expect("a status");
    let socket = format!("unix:{}", lab.directory.join("flows.sock").display());
    assert_eq!(status.flow_endpoints, vec![socket], "{status:?}");
    let flows = lab.sluice(&["flows", "-o", "jsonl"]);
    assert!(flows.status.success(), "{}", text(&flows.stderr));

    let output = lab.stop_agent(signal);
    let log = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "exit status {:?}, log:\n{log}",
        output.status
    );
    assert!(log.contains(&format!("signal=\"SIG{signal}\"")), "{log}");
    assert!(
        log.contains(
            "stopping: the nftables table inet sluice and the agent's routes stay in place: this fails closed"
        ),
        "{log}"
    );
    assert!(log.contains("stopped;"), "{log}");
    // Fail closed: the programmed table is still in the kernel, unchanged.
    let left = lab.sluice_table();
    assert!(left.status.success(), "the table is gone: {}", text(&left.stderr));
    assert_eq!(text(&left.stdout), text(&programmed.stdout));
    // The last record says the agent stopped, and the table says so.
    let last = lab.node_status().expect("a last status");
    assert!(last.stopped, "{last:?}");
    let listing = text(&lab.sluice(&["get", "nodestatus"]).stdout);
    assert!(listing.contains("node-1   unknown (stopped)   "), "{listing}");
}

#[test]
fn sigterm_stops_the_agent_with_status_0_and_leaves_the_ruleset() {
    stops_cleanly_on("TERM");
}

#[test]
fn sigint_stops_the_agent_with_status_0_and_leaves_the_ruleset() {
    stops_cleanly_on("INT");
}

#[test]
fn a_resync_period_of_zero_is_refused() {
    let lab = Lab::new("resync");
    let output = lab.sluice(&["agent", "--node", "node-1", "--resync-seconds", "0"]);
    let error = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{error}");
    assert!(
        error.contains("--resync-seconds") && error.contains("0 is not in 1..=86400"),
        "{error}"
    );
    // The store was never opened, let alone written.
    assert!(!lab.directory.join("store.db").exists());
}

#[test]
fn nodestatus_shows_each_record_s_age_and_a_stale_one_as_unknown() {
    let lab = Lab::new("stale");
    let store = sluice_store::open_or_create(&lab.address()).unwrap();
    let now = SystemTime::now();
    let record = |node: &str, age: Duration| NodeStatus {
        node: node.to_string(),
        programmed_revision: 4,
        seen_revision: 4,
        in_sync: true,
        error: None,
        warning: None,
        local_endpoints: 2,
        rules: 30,
        set_elements: 5,
        routes: 0,
        route_error: None,
        unprogrammed_endpoints: Vec::new(),
        left_out_objects: Vec::new(),
        updated: now - age,
        heartbeat_seconds: 30,
        stopped: false,
        flow_endpoints: Vec::new(),
    };
    let records = [
        record("node-1", Duration::from_secs(3 * 3600 + 60)),
        record("node-2", Duration::ZERO),
    ];
    let writes: Vec<Operation> = records
        .iter()
        .map(|status| Operation::Put {
            key: status_key(&status.node),
            value: serde_json::to_vec(status).unwrap(),
            condition: Condition::Any,
        })
        .collect();
    store.commit(&writes).unwrap();

    let output = lab.sluice(&["get", "nodestatus"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let listing = text(&output.stdout);
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3, "{listing}");
    assert!(
        words(lines[1]).starts_with("node-1 unknown (stale) 3h1m 4 4 "),
        "{listing}"
    );
    assert!(
        words(lines[2]).starts_with("node-2 true 0s ") || words(lines[2]).starts_with("node-2 true 1s "),
        "{listing}"
    );

    // JSON and YAML carry the time each record was written.
    let written = |age: Duration| rfc3339_text(now - age);
    let json = text(&lab.sluice(&["get", "nodestatus", "-o", "json"]).stdout);
    let values: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(values[0]["updated"], written(Duration::from_secs(3 * 3600 + 60)));
    assert_eq!(values[1]["heartbeatSeconds"], 30);
    let yaml = text(&lab.sluice(&["get", "nodestatus", "node-2", "-o", "yaml"]).stdout);
    assert!(yaml.contains(&written(Duration::ZERO)), "{yaml}");
}

/// RFC 3339 in UTC, whole seconds, as the agent writes it (computed here independently).
fn rfc3339_text(time: SystemTime) -> String {
    let seconds = time.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let output = Command::new("date")
        .args(["-u", "-d", &format!("@{seconds}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    text(&output.stdout).trim().to_string()
}

/// A table line with its columns' padding reduced to single spaces.
fn words(line: &str) -> String {
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Flow logs are for seeing: when they cannot start (here, a file that cannot be created), the
/// agent says so and enforces policy without them.
#[test]
fn an_agent_whose_flow_log_cannot_start_still_programs() {
    if !is_root() {
        println!("skipped: network namespaces need root");
        return;
    }
    let mut lab = Lab::new("noflows");
    lab.apply_examples();
    lab.start_agent_with_flow_log(Path::new("/dev/null/flows.log"));
    wait_for("the agent to program node-1", || {
        lab.node_status()
            .is_some_and(|status| status.in_sync && status.local_endpoints == 1)
    });
    let status = lab.node_status().expect("a status");
    assert!(status.flow_endpoints.is_empty(), "{status:?}");
    let programmed = lab.sluice_table();
    assert!(programmed.status.success(), "{}", text(&programmed.stderr));
    assert!(
        !text(&programmed.stdout).contains("log group"),
        "{}",
        text(&programmed.stdout)
    );
    let output = lab.stop_agent("TERM");
    let log = text(&output.stderr);
    assert!(log.contains("flow logs are off"), "{log}");
}
