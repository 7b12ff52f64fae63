//! Domain-name rules with real packets (root; skipped otherwise): the agent learns names only
//! from the lab's (trusted) DNS server, per pod, holding each answer until its addresses are
//! programmed, so the connection made right after the answer succeeds on its first packet.
//!
//! Like `tests/lab.rs`, this binary has no libtest harness (see `support`).

mod support;

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sluice_lab::servers::LookupResult;
use sluice_lab::{ConnectOutcome, ConnectResult, ServiceProtocol};
use support::{HeldConnection, Lab, Test};

const TESTS: [(&str, Test); 3] = [
    ("names_allow_exactly_what_the_pod_itself_resolved", names),
    (
        "learned_addresses_expire_but_established_connections_survive",
        expiry,
    ),
    (
        "a_killed_agent_keeps_what_was_learned_and_lets_nothing_denied_through",
        killed_agent,
    ),
];

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_tests(&TESTS)
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: routed}
spec: {cidr: 10.63.0.0/16, natOutgoing: true}
---
# DNS to anywhere (so a rogue resolver's answers reach the pod), and TCP by name only.
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: by-name, namespace: shop}
spec:
  selector: has(app)
  types: [Egress]
  egress:
    - action: Allow
      protocol: UDP
      destination: {ports: [53]}
    - action: Allow
      protocol: TCP
      destination: {ports: [53]}
    - action: Allow
      protocol: TCP
      destination:
        domains: ['*.partner.example', '*.s3.example', www.shop.example]
"#;

const LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
outside:
  - {name: partner, address: 203.0.113.10, tcp: [443], names: [api.partner.example]}
  - {name: tcpdns, address: 203.0.113.11, tcp: [443], names: [tcp.partner.example]}
  - {name: short, address: 203.0.113.12, tcp: [443], names: [short.partner.example], ttl: 2}
  - {name: spare, address: 203.0.113.13, tcp: [443], names: [spare.partner.example]}
  - {name: bucket, address: 203.0.113.20, tcp: [443], names: [a.b.s3.example]}
  - {name: bare, address: 203.0.113.21, tcp: [443], names: [s3.example]}
  - {name: evil, address: 203.0.113.30, tcp: [443], names: [evil.example]}
  - {name: cdn, address: 203.0.113.50, tcp: [443], names: [edge.cdn.example], cname: [www.shop.example]}
  - {name: rogue, address: 203.0.113.60}
manifests: [manifests/]
pods:
  - {namespace: shop, name: client, node: node-1, labels: {app: client}}
  - {namespace: shop, name: other, node: node-1, labels: {app: other}}
"#;

/// Under the TCP initial retransmission timeout (1 s): a connection that needed a second SYN
/// does not make it, so "connected" means the first packet passed.
const FIRST_PACKET: Duration = Duration::from_millis(900);

fn address(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

/// `lab connect --name`: resolves through the pod's resolv.conf (the lab's server) and
/// connects at once.
fn by_name(lab: &Lab, netns: &str, name: &str, port: u16) -> ConnectOutcome {
    let output = lab
        .command_in(
            netns,
            &[
                "lab",
                "connect",
                "--protocol",
                "tcp",
                "--name",
                name,
                "--port",
                &port.to_string(),
                "--timeout-ms",
                &FIRST_PACKET.as_millis().to_string(),
            ],
        )
        .output();
    match output {
        Ok(output) => serde_json::from_slice(&output.stdout).unwrap_or_else(|_| ConnectOutcome {
            result: ConnectResult::Error,
            seen: None,
            detail: Some(format!(
                "{} {}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )),
            lookup: None,
        }),
        Err(error) => ConnectOutcome {
            result: ConnectResult::Error,
            seen: None,
            detail: Some(error.to_string()),
            lookup: None,
        },
    }
}

fn by_address(lab: &Lab, netns: &str, to: &str, port: u16) -> ConnectResult {
    lab.connect(netns, ServiceProtocol::Tcp, address(to), port, FIRST_PACKET)
        .result
}

/// `lab resolve` in the pod; `--server` to ask another server than the pod's.
fn resolve(lab: &Lab, netns: &str, arguments: &[&str]) -> Result<serde_json::Value, String> {
    let mut all = vec!["lab", "resolve"];
    all.extend_from_slice(arguments);
    let output = lab
        .command_in(netns, &all)
        .output()
        .map_err(|error| error.to_string())?;
    serde_json::from_slice(&output.stdout).map_err(|_| {
        format!(
            "`{}` printed {:?} {}",
            all.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

/// Collects what did not go as wanted.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn expect(&mut self, what: &str, got: ConnectResult, wanted: ConnectResult) {
        if got != wanted {
            self.0.push(format!("{what}: {got:?}, wanted {wanted:?}"));
        }
    }

    fn outcome(&mut self, what: &str, got: &ConnectOutcome, wanted: ConnectResult) {
        if got.result != wanted {
            self.0.push(format!("{what}: {got:?}, wanted {wanted:?}"));
        }
    }

    fn finish(self, lab: &Lab) -> Result<(), String> {
        if self.0.is_empty() {
            return Ok(());
        }
        let log = lab.agent_log("node-1");
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        Err(format!(
            "{}\nagent log ends:\n  {}",
            self.0.join("\n"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
        ))
    }
}

fn root_or_skip() -> bool {
    if !support::is_root() {
        println!("skipped: needs root to make network namespaces");
        return false;
    }
    true
}

fn names() -> Result<(), String> {
    if !root_or_skip() {
        return Ok(());
    }
    let started = Instant::now();
    let lab = Lab::up("dn", LAB, &[("00.yaml", MANIFESTS.to_string())])?;
    println!("lab up in {:.1?}", started.elapsed());
    let outcome = names_in(&lab);
    outcome.and(lab.finish())
}

fn names_in(lab: &Lab) -> Result<(), String> {
    let client = lab.netns("shop/client")?;
    let other = lab.netns("shop/other")?;
    let mut checks = Checks::default();
    use ConnectResult::{Connected, TimedOut};

    // Nothing is known before a lookup: by address, every outside host is denied.
    checks.expect(
        "client -> partner by address, before any lookup",
        by_address(lab, &client, "203.0.113.10", 443),
        TimedOut,
    );
    // Allowed by name, on the first packet right after the answer (exact-by-wildcard name).
    checks.outcome(
        "client -> api.partner.example",
        &by_name(lab, &client, "api.partner.example", 443),
        Connected,
    );
    // The agent publishes what each pod learned (`sluice get dnscache`), within a second or so.
    let store = lab.store()?;
    let published = support::wait_until(Duration::from_secs(5), || {
        store
            .get(&sluice_agent::dns::dns_cache_key("node-1"))
            .ok()
            .flatten()
            .and_then(|value| serde_json::from_slice::<sluice_agent::dns::DnsCacheRecord>(&value.value).ok())
            .is_some_and(|record| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                record.addresses("shop/client", "api.partner.example", now) == [address("203.0.113.10")]
                    && record
                        .addresses("shop/other", "api.partner.example", now)
                        .is_empty()
            })
    });
    if !published {
        checks
            .0
            .push("the agent did not publish the client's lookup of api.partner.example".into());
    }
    // Now the pod may reach that address without asking again (until the TTL runs out)...
    checks.expect(
        "client -> partner by address, after its lookup",
        by_address(lab, &client, "203.0.113.10", 443),
        Connected,
    );
    // ...but another pod with the same policy may not: the client's lookup is the client's.
    checks.expect(
        "other -> partner by address (the client's lookup)",
        by_address(lab, &other, "203.0.113.10", 443),
        TimedOut,
    );
    checks.outcome(
        "other -> api.partner.example (its own lookup)",
        &by_name(lab, &other, "api.partner.example", 443),
        Connected,
    );
    // Denied by name: the lookup works (DNS is allowed), the connection does not.
    let evil = by_name(lab, &client, "evil.example", 443);
    checks.outcome("client -> evil.example", &evil, TimedOut);
    if evil
        .lookup
        .as_ref()
        .is_none_or(|lookup| lookup.addresses.is_empty())
    {
        checks.0.push(format!(
            "the lookup of evil.example should have answered: {evil:?}"
        ));
    }
    // Wildcard depth: `*.s3.example` covers a.b.s3.example (two labels) but not s3.example.
    checks.outcome(
        "client -> a.b.s3.example",
        &by_name(lab, &client, "a.b.s3.example", 443),
        Connected,
    );
    checks.outcome(
        "client -> s3.example",
        &by_name(lab, &client, "s3.example", 443),
        TimedOut,
    );
    // A CNAME chain: the name looked up (the alias) is what the rule allows; the address comes
    // from the end of the chain. The chain's target by its own name is not allowed.
    checks.outcome(
        "client -> www.shop.example (CNAME)",
        &by_name(lab, &client, "www.shop.example", 443),
        Connected,
    );
    checks.outcome(
        "other -> edge.cdn.example (the target's name)",
        &by_name(lab, &other, "edge.cdn.example", 443),
        TimedOut,
    );
    // DNS over TCP teaches as UDP does.
    let lookup = resolve(lab, &client, &["--name", "tcp.partner.example", "--tcp"])?;
    if lookup["addresses"][0] != "203.0.113.11" {
        checks.0.push(format!("the TCP lookup answered {lookup}"));
    }
    checks.expect(
        "client -> tcp.partner.example's address after a TCP lookup",
        by_address(lab, &client, "203.0.113.11", 443),
        Connected,
    );

    // An untrusted resolver (the same zone, served from another address) teaches nothing.
    let zone = lab.paths().directory.join("dns-zone.json");
    let mut rogue = lab.spawn_in(
        &lab.netns("rogue")?,
        &[
            "lab",
            "dns-serve",
            "--address",
            "203.0.113.60",
            "--zone",
            zone.to_str().unwrap_or_default(),
        ],
    )?;
    let _ = &mut rogue;
    let answered = support::wait_until(Duration::from_secs(5), || {
        resolve(
            lab,
            &client,
            &["--name", "spare.partner.example", "--server", "203.0.113.60"],
        )
        .is_ok_and(|lookup| lookup["addresses"][0] == "203.0.113.13")
    });
    if !answered {
        checks.0.push("the rogue resolver did not answer".into());
    }
    checks.expect(
        "client -> spare by address after the rogue's answer",
        by_address(lab, &client, "203.0.113.13", 443),
        TimedOut,
    );
    checks.outcome(
        "client -> spare.partner.example through the lab's server",
        &by_name(lab, &client, "spare.partner.example", 443),
        Connected,
    );
    checks.finish(lab)
}

fn expiry() -> Result<(), String> {
    if !root_or_skip() {
        return Ok(());
    }
    let lab = Lab::up("dx", LAB, &[("00.yaml", MANIFESTS.to_string())])?;
    let outcome = expiry_in(&lab);
    outcome.and(lab.finish())
}

fn expiry_in(lab: &Lab) -> Result<(), String> {
    let client = lab.netns("shop/client")?;
    let mut checks = Checks::default();
    let mut server = lab.spawn_in(
        &lab.netns("short")?,
        &["support", "hold-server", "--port", "7000"],
    )?;
    server.first_line()?;
    // TTL 2: learned until 2 s after the answer.
    let looked_up = Instant::now();
    checks.outcome(
        "client -> short.partner.example",
        &by_name(lab, &client, "short.partner.example", 443),
        ConnectResult::Connected,
    );
    let held = HeldConnection::follow(lab.spawn_in(
        &client,
        &["support", "hold-client", "--to", "203.0.113.12", "--port", "7000"],
    )?);
    held.wait_beyond(3, Duration::from_secs(5))?;
    // Expiry + 2 s: a new connection is denied, the established one goes on.
    let wait = Duration::from_secs(4).saturating_sub(looked_up.elapsed());
    std::thread::sleep(wait);
    checks.expect(
        "client -> short by address after expiry",
        by_address(lab, &client, "203.0.113.12", 443),
        ConnectResult::TimedOut,
    );
    let echoes = held.echoes();
    held.wait_beyond(echoes + 3, Duration::from_secs(3))?;
    if let Some(error) = held.error() {
        checks
            .0
            .push(format!("the established connection broke: {error}"));
    }
    checks.finish(lab)
}

fn killed_agent() -> Result<(), String> {
    if !root_or_skip() {
        return Ok(());
    }
    let lab = Lab::up("dk", LAB, &[("00.yaml", MANIFESTS.to_string())])?;
    let outcome = killed_agent_in(&lab);
    outcome.and(lab.finish())
}

fn killed_agent_in(lab: &Lab) -> Result<(), String> {
    use ConnectResult::{Connected, TimedOut};
    let client = lab.netns("shop/client")?;
    let mut checks = Checks::default();
    checks.outcome(
        "client -> api.partner.example",
        &by_name(lab, &client, "api.partner.example", 443),
        Connected,
    );

    let pid = sluice_lab::agent_pid(&lab.environment, &lab.name, "node-1")
        .ok_or("node-1's agent is not running")?;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .map_err(|error| error.to_string())?;
    if !killed.success()
        || !support::wait_until(Duration::from_secs(5), || {
            sluice_lab::agent_pid(&lab.environment, &lab.name, "node-1").is_none()
        })
    {
        return Err(format!("could not kill node-1's agent ({pid})"));
    }
    // Dead: what was learned stays allowed, what was not stays denied; answers wait in a
    // queue nobody reads, so lookups fail (closed) rather than pass untaught.
    checks.expect(
        "agent dead: partner by address",
        by_address(lab, &client, "203.0.113.10", 443),
        Connected,
    );
    checks.expect(
        "agent dead: evil by address",
        by_address(lab, &client, "203.0.113.30", 443),
        TimedOut,
    );
    let unheld = by_name(lab, &client, "spare.partner.example", 443);
    checks.outcome(
        "agent dead: spare.partner.example (its answer is held by nobody)",
        &unheld,
        TimedOut,
    );
    if unheld
        .lookup
        .as_ref()
        .is_none_or(|lookup| lookup.result != LookupResult::TimedOut)
    {
        checks.0.push(format!(
            "with the agent dead the lookup should go unanswered: {unheld:?}"
        ));
    }

    let status_before = lab.node_status("node-1").map(|status| status["updated"].clone());
    sluice_lab::restart_agent(&lab.environment, &lab.name, "node-1", &[])?;
    let restarted = support::wait_until(Duration::from_secs(10), || {
        lab.node_status("node-1").is_some_and(|status| {
            status["updated"].clone() != status_before.clone().unwrap_or_default()
                && status["inSync"] == true
                && status["stopped"] != true
        })
    });
    if !restarted {
        return Err(format!(
            "the restarted agent did not report in sync:\n{}",
            lab.agent_log("node-1")
        ));
    }
    // The first full rebuild of the restarted agent kept the learned pair; nothing new opened.
    checks.expect(
        "restarted: partner by address",
        by_address(lab, &client, "203.0.113.10", 443),
        Connected,
    );
    checks.expect(
        "restarted: evil by address",
        by_address(lab, &client, "203.0.113.30", 443),
        TimedOut,
    );
    checks.outcome(
        "restarted: spare.partner.example",
        &by_name(lab, &client, "spare.partner.example", 443),
        Connected,
    );
    checks.outcome(
        "restarted: evil.example",
        &by_name(lab, &client, "evil.example", 443),
        TimedOut,
    );
    checks.finish(lab)
}
