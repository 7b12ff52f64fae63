//! `sluice ui` in a real browser: Debian's `chromium`, headless, loads the page served by the
//! binary and must show a denied flow in its own colour and open its `explain` trace. First
//! against an agent's flow endpoint (the agent's own server, fed records here) and the
//! examples in a datastore; then against a lab (root): real agents, a real probe denied by
//! policy, the page finding the agents through their status records.

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

/// The `sluice-cni` plugin beside this package's binary: `cargo nextest run --workspace` builds
/// it; run alone, this test builds it with the cargo that built the test.
fn cni_plugin() -> PathBuf {
    let cni = Path::new(env!("CARGO_BIN_EXE_sluice")).with_file_name("sluice-cni");
    if !cni.is_file() {
        let built = Command::new(env!("CARGO"))
            .args(["build", "-p", "sluice-cni"])
            .status()
            .expect("cargo runs");
        assert!(
            built.success() && cni.is_file(),
            "cannot build sluice-cni at {}",
            cni.display()
        );
    }
    cni
}

const LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
outside:
  - {name: partner, address: 203.0.113.10, tcp: [443], http: [80]}
manifests: [manifests/]
pods:
  - {namespace: shop, name: web, node: node-1, labels: {app: web}}
"#;

const MANIFESTS: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.68.0.0/16, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: web-egress, namespace: shop}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {nets: [203.0.113.10/32], ports: [80]}
"#;

#[test]
fn against_a_lab_a_denied_probe_appears_within_seconds_and_its_trace_opens() {
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(1) == Some("0"))
    {
        println!("skipped: the lab needs root");
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(directory.path().join("files/manifests")).unwrap();
    let file = directory.path().join("files/lab.yaml");
    std::fs::write(&file, LAB).unwrap();
    std::fs::write(directory.path().join("files/manifests/00.yaml"), MANIFESTS).unwrap();
    let environment = sluice_lab::Environment {
        state_root: directory.path().join("state"),
        sluice_binary: PathBuf::from(env!("CARGO_BIN_EXE_sluice")),
        cni_binary: cni_plugin(),
    };
    let name = format!("u{}", std::process::id() % 1_000_000);
    struct Down<'a>(&'a sluice_lab::Environment, &'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = sluice_lab::down(self.0, self.1);
        }
    }
    sluice_lab::up(&environment, &file, Some(&name)).unwrap();
    let _down = Down(&environment, &name);
    let datastore = sluice_lab::state::LabPaths::new(&environment.state_root, &name)
        .load()
        .unwrap()
        .datastore;

    let mut ui = Stopped(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(["ui", "--listen", "127.0.0.1:0", "--datastore", &datastore])
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

    let report = sluice_lab::probe(
        &environment,
        &name,
        &sluice_lab::ProbeOptions {
            against_explain: true,
            services: Vec::new(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(report.disagreements(), 0);
    let denied = report
        .rows
        .iter()
        .find(|row| !row.allowed() && row.port == 443)
        .expect("the probe to 443 is denied");
    let probed = Instant::now();
    let dom = loop {
        let dom = dump_dom(
            &format!("{url}?select=first-denied"),
            &directory.path().join("profile"),
            Duration::from_secs(3),
        );
        if dom.contains("explain-text") || probed.elapsed() > Duration::from_secs(20) {
            break dom;
        }
    };
    let appeared = probed.elapsed();
    println!("the denied probe was on the page, its trace open, {appeared:.1?} after the probe");
    assert!(appeared < Duration::from_secs(10), "{appeared:?}\n{dom}");
    assert!(dom.contains("<tr class=\"deny selected\""), "{dom}");
    assert!(dom.contains(&denied.to_address.to_string()), "{dom}");
    assert!(
        dom.contains("default|NetworkPolicy|shop/web-egress|-1|deny"),
        "{dom}"
    );
    assert!(dom.contains("verdict verdict-deny"), "{dom}");
    assert!(dom.contains("denied by the end of tier default"), "{dom}");
}
