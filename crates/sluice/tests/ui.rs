//! `sluice ui` in a real browser: Debian's `chromium`, headless, loads the page served by the
//! binary against an agent's flow endpoint (the agent's own server, fed records here) and the
//! examples in a datastore, and must show the denied flow in its own colour and open its
//! `explain` trace. The lab test (`crates/lab/tests/flow_logs.rs`) does the same against real
//! packets.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sluice_agent::flows::{FlowListen, FlowServer, RecentFlows};

struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium() -> PathBuf {
    for candidate in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!("no chromium: install Debian's `chromium` (apt-get install chromium); .ci/run does");
}

/// The page's DOM after the browser ran its scripts for `budget` of virtual time.
pub fn dump_dom(url: &str, profile: &Path, budget: Duration) -> String {
    let output = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_page_shows_a_denied_flow_in_its_colour_and_opens_its_trace() {
    let directory = tempfile::tempdir().unwrap();
    let datastore = format!("file://{}", directory.path().join("store.db").display());
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let applied = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["apply", "-f"])
        .arg(&examples)
        .args(["--datastore", &datastore])
        .output()
        .unwrap();
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    // An agent's flow endpoint with one allowed and one denied record.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let recent = Arc::new(RecentFlows::new(100, 1 << 20));
    let record = |port: u16, action: &str, policy: &str| {
        serde_json::json!({
            "source_type": "wep", "source_namespace": "prod", "source_name": "web",
            "dest_type": "net", "dest_namespace": "-", "dest_name": "-", "dest_name_aggr": "pub",
            "dest_ip": "198.51.100.70",
            "dest_port": port, "proto": "tcp", "reporter": "src", "action": action,
            "policies": [policy], "pending_policies": [], "start_time": now - 15, "end_time": now,
            "num_flows_started": 1, "bytes_out": 60, "bytes_in": 0
        })
        .to_string()
    };
    recent.push([
        (
            now,
            record(80, "allow", "default|GlobalNetworkPolicy|allow-web|0|allow"),
        ),
        (
            now,
            record(
                443,
                "deny",
                "security|GlobalNetworkPolicy|block-threat-feed|1|deny",
            ),
        ),
    ]);
    let socket = directory.path().join("flows.sock");
    let agent = FlowServer::start(&FlowListen::Unix(socket.clone()), recent.clone()).unwrap();

    let mut ui = Stopped(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["ui", "--listen", "127.0.0.1:0", "--datastore", &datastore])
            .arg("--agent")
            .arg(format!("unix:{}", socket.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    BufReader::new(ui.0.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in `{first}`"))
        .to_string();

    // The page polls each second; give it a few seconds of virtual time, and retry a few
    // times in real time while the UI's follower reaches the agent.
    let deadline = Instant::now() + Duration::from_secs(30);
    let dom = loop {
        let dom = dump_dom(
            &format!("{url}?select=first-denied"),
            &directory.path().join("profile"),
            Duration::from_secs(5),
        );
        if dom.contains("explain-text") || Instant::now() > deadline {
            break dom;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // Both flows are listed; the denied one in the deny class (its own colour) and selected.
    assert!(dom.contains("<tr class=\"allow\""), "{dom}");
    assert!(dom.contains("<tr class=\"deny selected\""), "{dom}");
    assert!(
        dom.contains("security|GlobalNetworkPolicy|block-threat-feed|1|deny"),
        "{dom}"
    );
    // Its trace opened, and it is what `sluice explain` says.
    assert!(
        dom.contains("denied by GlobalNetworkPolicy block-threat-feed, egress rule 1, in tier security"),
        "{dom}"
    );
    assert!(dom.contains("verdict verdict-deny"), "{dom}");
    // The picture: prod and the outside address, joined by a denied edge.
    assert!(dom.contains("class=\"edge deny\""), "{dom}");
    assert!(dom.contains(">prod</text>"), "{dom}");
    recent.close();
    agent.stop();
}
