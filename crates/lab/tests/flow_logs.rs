//! Flow logs on real packets (root; skipped otherwise). The lab's agents log every decision to
//! NFLOG with the deciding rule's id, read connection tracking with accounting, and serve their
//! records on a Unix socket each second. Checked here:
//!
//! - every probe of `lab probe` from a pod is in the flow log with the verdict and the deciding
//!   rule `explain` gives on the same IR (the sender's egress; the receiver's ingress when the
//!   sender let it through), attributed from the kernel's log prefix; a probe by a name the pod
//!   resolved under a domain rule carries the name (`dest_domains`);
//! - every allowed TCP probe's connection is seen to end (closed in the next conntrack dump);
//! - packets and bytes of a connection that echoed a known number of bytes are within what
//!   was sent and its headers;
//! - a staged default deny is reported in `pending_policies` for exactly the probes it would
//!   deny, computed by the same evaluator over the staged IR;
//! - recommending from the flow log, staging the recommendation and probing again shows no
//!   probe the staged policies would deny that enforced policy allowed;
//! - an agent restart loses nothing written to the node's file.
//!
//! Like `tests/lab.rs`, this binary has no libtest harness (see `support`).

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sluice_api::values::PolicyType;
use sluice_flowlog::{EndpointType, FlowAction, FlowRecord, Naming, Reporter};
use sluice_lab::{ProbeOptions, ProbeReport};
use support::{HeldConnection, Lab, Test};

const TESTS: [(&str, Test); 1] = [(
    "probes_are_in_the_flow_log_as_explain_decided_counted_staged_and_recommended",
    flow_logs,
)];

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_tests(&TESTS)
}

const LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
  - name: node-2
outside:
  - {name: partner, address: 203.0.113.10, tcp: [443], http: [80]}
  - {name: other, address: 198.51.100.9, tcp: [443], names: [files.example.org]}
manifests: [manifests/]
pods:
  - {namespace: shop, name: web, node: node-1, labels: {app: web}}
  - {namespace: shop, name: api, node: node-2, labels: {app: api}, ports: [{name: http, containerPort: 8080}]}
  - {namespace: shop, name: cron, node: node-2, labels: {app: cron}}
  - {namespace: lab, name: tool, node: node-1, labels: {app: tool}}
"#;

const MANIFESTS: &str = r#"
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.67.0.0/16, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {role: partner}}
spec: {nets: [203.0.113.0/24]}
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
      destination: {selector: app == 'api', ports: [8080]}
    - action: Allow
      protocol: TCP
      destination: {selector: role == 'partner', namespaceSelector: global(), ports: [443, 7000]}
    - action: Deny
      protocol: TCP
      destination: {nets: [198.51.100.0/24]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: cron-egress, namespace: shop}
spec:
  selector: app == 'cron'
  types: [Egress]
  egress:
    - action: Allow
      protocol: UDP
      destination: {ports: [53]}
    - action: Allow
      protocol: TCP
      destination: {domains: [files.example.org], ports: [443]}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: api-ingress, namespace: shop}
spec:
  selector: app == 'api'
  types: [Ingress]
  ingress:
    - action: Allow
      protocol: TCP
      source: {selector: app == 'web'}
      destination: {ports: [8080]}
"#;

/// Denies the lab namespace's egress, staged only.
const STAGED_DENY: &str = r#"
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: default-deny, namespace: lab}
spec:
  stagedAction: Set
  selector: all()
  types: [Egress]
"#;

fn flow_logs() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: needs root to make network namespaces");
        return Ok(());
    }
    let lab = Lab::up("f", LAB, &[("00.yaml", MANIFESTS.to_string())])?;
    let outcome = run(&lab);
    let finished = lab.finish();
    outcome?;
    finished
}

fn probe(lab: &Lab) -> Result<(ProbeReport, u64), String> {
    // Records carry whole seconds: one flushed earlier in this second (before a change the
    // probe is about) would pass as the probe's. Start at the next second.
    let into_second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_micros());
    std::thread::sleep(Duration::from_micros(u64::from(1_000_000 - into_second) + 10_000));
    let started = unix_seconds();
    let report = sluice_lab::probe(
        &lab.environment,
        &lab.name,
        &ProbeOptions {
            against_explain: true,
            services: Vec::new(),
            ..Default::default()
        },
    )?;
    let disagreements = support::disagreements(&report);
    if !disagreements.is_empty() {
        return Err(format!(
            "probes disagreed with explain:\n{}",
            disagreements.join("\n")
        ));
    }
    Ok((report, started))
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// What a probe's record must say on one reporter's side.
struct Expected {
    row: String,
    /// The probe connected: both sides allowed it (a SYN the receiver dropped leaves the
    /// sender's entry in SYN_SENT, a live connection, until conntrack's timeout).
    connected: bool,
    /// The name the pod resolved, for a probe by name from a pod that learns names.
    domain: Option<String>,
    reporter: Reporter,
    node: String,
    source: (String, String),
    destination: (EndpointType, String, String, Option<IpAddr>),
    port: u16,
    protocol: &'static str,
    action: FlowAction,
    policy: String,
}

fn expectations(lab: &Lab, report: &ProbeReport) -> Result<Vec<Expected>, String> {
    let state = lab.state()?;
    let resources = sluice_lab::datastore_resources(&lab.environment, &lab.name)?;
    let (entities, _) = sluice_policy::build_entities(&resources);
    let network_sets = sluice_flowlog::network_sets_from_entities(&entities);
    let dataplane = &report.dataplane;
    let mut expected = Vec::new();
    // The pods whose rules allow names: their connections by address to an address they
    // learned are allowed by the learned pair, which only the probe's own bookkeeping follows.
    let learners: Vec<&str> = dataplane
        .endpoints
        .iter()
        .filter(|endpoint| !dataplane.domain_sets_for(endpoint.id).is_empty())
        .map(|endpoint| endpoint.name.as_str())
        .collect();
    for row in report
        .rows
        .iter()
        .filter(|row| row.from.contains('/') && !row.no_common_family)
    {
        let by_name = row.domain.is_some();
        let looked_up = row
            .outcome
            .lookup
            .as_ref()
            .is_none_or(|lookup| lookup.result == sluice_lab::servers::LookupResult::Answered);
        let learner = learners
            .iter()
            .any(|name| row.from.ends_with(&format!("/{name}")));
        if !looked_up || (learner && !by_name && !row.to.contains('/')) {
            continue;
        }
        let flow = row.flow();
        let verdict = dataplane.evaluate_with_domain(&flow, row.domain.as_deref());
        let (namespace, name) = row.from.split_once('/').expect("a pod");
        let source_node = state
            .pods
            .iter()
            .find(|pod| pod.shown() == row.from)
            .map(|pod| pod.node.clone())
            .ok_or_else(|| format!("no pod {}", row.from))?;
        let naming = Naming::new(dataplane, &network_sets, &source_node);
        let peer = naming.name(row.to_address);
        let destination = (
            peer.kind,
            peer.namespace.to_string(),
            peer.name.to_string(),
            (peer.kind == EndpointType::Network).then_some(row.to_address),
        );
        let protocol = if row.protocol.ip_protocol() == 17 {
            "udp"
        } else {
            "tcp"
        };
        let mut push =
            |reporter: Reporter, node: String, side: Option<(usize, sluice_policy::Decision)>, direction| {
                let Some((endpoint, decision)) = side else { return };
                let Some(hit) = dataplane.hit_of(&dataplane.endpoints[endpoint], direction, decision) else {
                    return;
                };
                expected.push(Expected {
                    row: format!("{} -> {} {}/{}", row.from, row.to, protocol, row.port),
                    connected: row.allowed(),
                    domain: row
                        .domain
                        .clone()
                        .filter(|_| learner && reporter == Reporter::Src),
                    reporter,
                    node,
                    source: (namespace.to_string(), name.to_string()),
                    destination: destination.clone(),
                    port: row.port,
                    protocol,
                    action: if decision.allows() {
                        FlowAction::Allow
                    } else {
                        FlowAction::Deny
                    },
                    policy: hit.text(),
                });
            };
        push(
            Reporter::Src,
            source_node.clone(),
            verdict.egress,
            PolicyType::Egress,
        );
        // The receiver decides only what the sender let through.
        if verdict.egress.is_none_or(|(_, decision)| decision.allows())
            && let Some(pod) = state
                .pods
                .iter()
                .find(|pod| pod.addresses.contains(&row.to_address))
        {
            push(
                Reporter::Dst,
                pod.node.clone(),
                verdict.ingress,
                PolicyType::Ingress,
            );
        }
    }
    Ok(expected)
}

fn matches(record: &FlowRecord, expected: &Expected, since: u64) -> bool {
    record.end_time >= since
        && record.reporter == expected.reporter
        && record.host == expected.node
        && (record.source_namespace.as_str(), record.source_name.as_str())
            == (expected.source.0.as_str(), expected.source.1.as_str())
        && record.dest_type == expected.destination.0
        && record.dest_namespace == expected.destination.1
        && (expected.destination.0 == EndpointType::Network || record.dest_name == expected.destination.2)
        && record.dest_ip == expected.destination.3
        && record.dest_port == Some(expected.port)
        && record.proto == expected.protocol
        && (expected.domain.is_none()
            || record.dest_domains == expected.domain.iter().cloned().collect::<Vec<_>>())
}

/// For a TCP probe that connected, the connections its records started and completed when they
/// differ: a probe's connection closes at once, and the agent sees it closed (TIME_WAIT) at its
/// next dump of the conntrack table, so every one must have completed.
fn completed(records: &[FlowRecord], expected: &Expected, since: u64) -> Option<(u64, u64)> {
    if !expected.connected || expected.protocol != "tcp" {
        return None;
    }
    let (started, ended) = records
        .iter()
        .filter(|record| matches(record, expected, since))
        .fold((0, 0), |(started, ended), record| {
            (
                started + record.num_flows_started,
                ended + record.num_flows_completed,
            )
        });
    (started != ended).then_some((started, ended))
}

fn check_probes_in_flow_log(lab: &Lab, report: &ProbeReport, since: u64) -> Result<Vec<FlowRecord>, String> {
    let expected = expectations(lab, report)?;
    let records = sluice_lab::flows::wait_for_records(
        &lab.environment,
        &lab.name,
        Duration::from_secs(10),
        |records| {
            expected.iter().all(|expected| {
                records.iter().any(|record| matches(record, expected, since))
                    && completed(records, expected, since).is_none()
            })
        },
    )?;
    let mut problems = Vec::new();
    for expected in &expected {
        let found: Vec<&FlowRecord> = records
            .iter()
            .filter(|record| matches(record, expected, since))
            .collect();
        if found.is_empty() {
            problems.push(format!("{} ({:?}): no record", expected.row, expected.reporter));
            continue;
        }
        if let Some((started, ended)) = completed(&records, expected, since) {
            problems.push(format!(
                "{} ({:?}): {started} connections started, {ended} completed: the closed connection was not seen to end",
                expected.row, expected.reporter
            ));
        }
        for record in found {
            if record.action != expected.action || record.policies != [expected.policy.clone()] {
                problems.push(format!(
                    "{} ({:?}): the flow log says {:?} by {:?}, explain says {:?} by {}",
                    expected.row,
                    expected.reporter,
                    record.action,
                    record.policies,
                    expected.action,
                    expected.policy
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "{} of {} expectations failed:\n{}",
            problems.len(),
            expected.len(),
            problems.join("\n")
        ));
    }
    let named = expected
        .iter()
        .filter(|expected| expected.domain.is_some())
        .count();
    if named == 0 {
        return Err(
            "no probe by a name that a pod's domain rule allows: the check of dest_domains ran on nothing"
                .into(),
        );
    }
    println!(
        "{} probe sides found in the flow log as explain decided them ({named} by a learned name)",
        expected.len()
    );
    Ok(records)
}

fn run(lab: &Lab) -> Result<(), String> {
    // 1. Every probe, attributed as explain decides it.
    let (report, since) = probe(lab)?;
    let denied = report.rows.iter().filter(|row| !row.allowed()).count();
    if denied == 0 || denied == report.rows.len() {
        return Err(format!(
            "the lab should allow some probes and deny others ({denied} of {} denied)",
            report.rows.len()
        ));
    }
    let records = check_probes_in_flow_log(lab, &report, since)?;

    // 2. Counts: a connection that echoed a known number of one-byte messages.
    counts(lab)?;

    // 3. A staged default deny for `lab`: pending_policies deny exactly the probes of lab/tool
    //    it would deny (all of its egress), and nothing of other namespaces changes.
    let revision = lab.apply(STAGED_DENY, &[])?;
    lab.wait_programmed(&["node-1", "node-2"], revision)?;
    let (report, since) = probe(lab)?;
    let staged =
        sluice_policy::compile_staged(&sluice_lab::datastore_resources(&lab.environment, &lab.name)?);
    let expected = expectations(lab, &report)?;
    let records_after = sluice_lab::flows::wait_for_records(
        &lab.environment,
        &lab.name,
        Duration::from_secs(10),
        |records| {
            expected.iter().all(|expected| {
                records.iter().any(|record| matches(record, expected, since))
                    && completed(records, expected, since).is_none()
            })
        },
    )?;
    let mut problems = Vec::new();
    let mut staged_denials = 0;
    for row in report
        .rows
        .iter()
        .filter(|row| row.from.contains('/') && !row.no_common_family)
    {
        let hits = sluice_policy::pending_policies(&staged, &row.flow(), None);
        let Some(hit) = hits.egress else { continue };
        let would_deny = hit.action == sluice_api::values::Action::Deny;
        let enforced_denies = report
            .dataplane
            .evaluate(&row.flow())
            .egress
            .is_some_and(|(_, decision)| !decision.allows());
        staged_denials += usize::from(would_deny && !enforced_denies);
        // The staged default deny adds denials for lab's pods only; the rest is as enforced.
        if would_deny != (enforced_denies || row.from.starts_with("lab/")) {
            problems.push(format!("{} -> {}: the staged IR says {hit}", row.from, row.to));
        }
        let found: Vec<&FlowRecord> = records_after
            .iter()
            .filter(|record| {
                record.end_time >= since
                    && record.reporter == Reporter::Src
                    && format!("{}/{}", record.source_namespace, record.source_name) == row.from
                    && record.dest_port == Some(row.port)
                    && (record.dest_ip.is_none() || record.dest_ip == Some(row.to_address))
            })
            .collect();
        if !found.iter().any(|record| record.pending_policies == [hit.text()]) {
            problems.push(format!(
                "{} -> {} port {}: pending {} expected, the records say {:?}",
                row.from,
                row.to,
                row.port,
                hit.text(),
                found
                    .iter()
                    .map(|record| &record.pending_policies)
                    .collect::<Vec<_>>()
            ));
        }
    }
    if staged_denials == 0 || !problems.is_empty() {
        return Err(format!(
            "staged default deny ({staged_denials} denials):\n{}",
            problems.join("\n")
        ));
    }
    println!("the staged default deny was pending for exactly lab/tool's {staged_denials} probes");

    // 4. Recommend for `shop` from the first run's records, stage it, probe again: nothing
    //    that enforced policy allowed would be denied by the staged policies.
    let (entities, _) =
        sluice_policy::build_entities(&sluice_lab::datastore_resources(&lab.environment, &lab.name)?);
    let documents = sluice_flowlog::recommend("shop", &records, &entities);
    let yaml: Vec<String> = documents.iter().map(sluice_api::document::to_yaml).collect();
    let revision = lab.apply(&yaml.join("\n---\n"), &[])?;
    lab.wait_programmed(&["node-1", "node-2"], revision)?;
    let (report, since) = probe(lab)?;
    let replayed = sluice_lab::flows::wait_for_records(
        &lab.environment,
        &lab.name,
        Duration::from_secs(10),
        |records| {
            records
                .iter()
                .any(|record| record.end_time >= since && record.source_namespace == "shop")
        },
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let replayed = sluice_lab::flows::served_records(&lab.environment, &lab.name).unwrap_or(replayed);
    let would_deny: Vec<String> = replayed
        .iter()
        .filter(|record| {
            record.end_time >= since
                && record.source_namespace == "shop"
                && record.reporter == Reporter::Src
                && record.action == FlowAction::Allow
                && record.pending_policies.iter().any(|hit| hit.ends_with("|deny"))
        })
        .map(|record| format!("{record:?}"))
        .collect();
    // Not vacuous: every such record of the probes carries the staged verdict, and it names
    // the recommended policy (the connection of step 2, on port 7000, came after the records
    // the recommendation was made from: the enforced policy still decides it there).
    let unstaged = replayed
        .iter()
        .filter(|record| {
            record.end_time >= since
                && record.dest_port != Some(7000)
                && record.source_namespace == "shop"
                && record.reporter == Reporter::Src
                && record.action == FlowAction::Allow
                && !record
                    .pending_policies
                    .iter()
                    .any(|hit| hit.contains(sluice_flowlog::ALLOW_NAME) && hit.ends_with("|allow"))
        })
        .map(|record| {
            format!(
                "{}/{} -> {:?} {}/{:?} {:?}",
                record.source_namespace,
                record.source_name,
                record.dest_ip,
                record.proto,
                record.dest_port,
                record.pending_policies
            )
        })
        .collect::<Vec<_>>();
    if !unstaged.is_empty() {
        return Err(format!(
            "allowed records of shop carry no staged allow by the recommendation:\n{}",
            unstaged.join("\n")
        ));
    }
    let shop_allowed = report
        .rows
        .iter()
        .filter(|row| row.from.starts_with("shop/") && row.allowed())
        .count();
    if !would_deny.is_empty() || shop_allowed == 0 {
        return Err(format!(
            "after staging the recommendation, {} allowed flows of shop would be denied ({shop_allowed} allowed probes):\n{}",
            would_deny.len(),
            would_deny.join("\n")
        ));
    }
    println!("recommend -> stage -> replay: 0 of shop's {shop_allowed} allowed probes would be denied");

    // 5. An agent restart loses nothing written.
    let before = sluice_lab::flows::file_records(&lab.environment, &lab.name)?;
    sluice_lab::restart_agent(&lab.environment, &lab.name, "node-1", &[])?;
    let restarted = Instant::now();
    let (_, since) = probe(lab)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = sluice_lab::flows::file_records(&lab.environment, &lab.name)?;
        if after
            .iter()
            .any(|record| record.host == "node-1" && record.end_time >= since)
            || Instant::now() > deadline
        {
            break after;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let kept: BTreeSet<String> = after.iter().map(|record| format!("{record:?}")).collect();
    let lost = before
        .iter()
        .filter(|record| !kept.contains(&format!("{record:?}")))
        .count();
    if lost > 0
        || !after
            .iter()
            .any(|record| record.host == "node-1" && record.end_time >= since)
    {
        return Err(format!(
            "after restarting node-1's agent ({:?} ago): {lost} of {} written records lost, new ones: {}",
            restarted.elapsed(),
            before.len(),
            after.len() - before.len()
        ));
    }
    println!(
        "agent restart: all {} written records kept, {} more written",
        before.len(),
        after.len() - before.len()
    );
    Ok(())
}

/// One connection from shop/web to the partner echoing one-byte messages: its record counts at
/// least each message and its headers each way, and not wildly more.
fn counts(lab: &Lab) -> Result<(), String> {
    let partner = lab.netns("partner")?;
    let _server = lab.spawn_in(&partner, &["support", "hold-server", "--port", "7000"])?;
    std::thread::sleep(Duration::from_millis(200));
    let web = lab.netns("shop/web")?;
    let since = unix_seconds();
    let client = lab.spawn_in(
        &web,
        &["support", "hold-client", "--to", "203.0.113.10", "--port", "7000"],
    )?;
    let client_pid = client.pid;
    let held = HeldConnection::follow(client);
    let echoes = held.wait_beyond(20, Duration::from_secs(10))?;
    // Stop sending; the counters then hold still.
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &client_pid.to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(300));
    let records = sluice_lab::flows::wait_for_records(
        &lab.environment,
        &lab.name,
        Duration::from_secs(10),
        |records| {
            let total: u64 = port_7000(records, since).map(|record| record.packets_out).sum();
            total > echoes
        },
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let records = sluice_lab::flows::served_records(&lab.environment, &lab.name).unwrap_or(records);
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &client_pid.to_string()])
        .status();
    let (packets_out, packets_in, bytes_out, bytes_in) =
        port_7000(&records, since).fold((0, 0, 0, 0), |totals, record| {
            (
                totals.0 + record.packets_out,
                totals.1 + record.packets_in,
                totals.2 + record.bytes_out,
                totals.3 + record.bytes_in,
            )
        });
    // Each echo is one data packet each way (IPv4 20 + TCP at least 20 + 1 byte) and at most
    // an ACK each way more; the handshake adds a few.
    let fits = |packets: u64, bytes: u64| {
        packets > echoes
            && packets <= 2 * echoes + 10
            && bytes >= echoes * 41
            && bytes <= (2 * echoes + 10) * 100
    };
    if !(fits(packets_out, bytes_out) && fits(packets_in, bytes_in)) {
        return Err(format!(
            "{echoes} echoes counted as {packets_out} packets / {bytes_out} bytes out and {packets_in} / {bytes_in} in"
        ));
    }
    println!("{echoes} echoes: {packets_out} packets / {bytes_out} bytes out, {packets_in} / {bytes_in} in");
    Ok(())
}

fn port_7000(records: &[FlowRecord], since: u64) -> impl Iterator<Item = &FlowRecord> {
    records.iter().filter(move |record| {
        record.end_time >= since
            && record.reporter == Reporter::Src
            && record.source_name == "web"
            && record.dest_port == Some(7000)
    })
}
