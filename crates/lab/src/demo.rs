//! `sluice demo`: one command that builds a two-node lab from `crates/lab/demo/`, probes it
//! against `explain`, explains one denied flow, prints the flow log the agents wrote of its
//! probes, and tears everything down, also on error (unless `--keep`: then the lab stays up
//! for `sluice ui` and `sluice flows`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::probe::{ProbeOptions, ProbeRow};
use crate::servers::{ConnectResult, Request, ServiceProtocol};
use crate::{Environment, cluster, probe};

/// The demo's lab file and manifests, compiled in so the demo runs from any directory.
const FILES: [(&str, &str); 10] = [
    ("demo.yaml", include_str!("../demo/demo.yaml")),
    (
        "manifests/00-namespaces.yaml",
        include_str!("../demo/manifests/00-namespaces.yaml"),
    ),
    (
        "manifests/01-pools.yaml",
        include_str!("../demo/manifests/01-pools.yaml"),
    ),
    (
        "manifests/02-tiers.yaml",
        include_str!("../demo/manifests/02-tiers.yaml"),
    ),
    (
        "manifests/03-network-sets.yaml",
        include_str!("../demo/manifests/03-network-sets.yaml"),
    ),
    (
        "manifests/04-security-tier.yaml",
        include_str!("../demo/manifests/04-security-tier.yaml"),
    ),
    (
        "manifests/05-platform-tier.yaml",
        include_str!("../demo/manifests/05-platform-tier.yaml"),
    ),
    (
        "manifests/06-default-deny-egress.yaml",
        include_str!("../demo/manifests/06-default-deny-egress.yaml"),
    ),
    (
        "manifests/07-applications.yaml",
        include_str!("../demo/manifests/07-applications.yaml"),
    ),
    (
        "manifests/08-egress-gateways.yaml",
        include_str!("../demo/manifests/08-egress-gateways.yaml"),
    ),
];

/// Removes the lab and its temporary directory when dropped, however the demo ends, unless the
/// demo succeeded with `--keep`.
struct Teardown {
    environment: Environment,
    name: String,
    keep: bool,
    /// The state root is the demo's own temporary directory (removed with the lab); a kept
    /// demo's is the lab's shared one, where other labs live.
    private_root: bool,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        println!();
        if let Err(error) = cluster::down(&self.environment, &self.name) {
            eprintln!("warning: tearing down the demo: {error}");
        }
        if self.private_root {
            let _ = std::fs::remove_dir_all(&self.environment.state_root);
        } else {
            let _ = std::fs::remove_dir_all(self.environment.state_root.join(format!("files-{}", self.name)));
        }
    }
}

/// Writes the demo's files under `directory` and returns the lab file's path.
pub fn write_files(directory: &Path) -> Result<PathBuf, String> {
    for (name, text) in FILES {
        let path = directory.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|error| format!("cannot create {}: {error}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    }
    Ok(directory.join("demo.yaml"))
}

/// `sluice demo`; with `keep`, the lab is left up under the lab's usual state directory (so
/// `sluice lab status|down` find it) when the demo succeeds.
pub fn demo(sluice_binary: &Path, cni_binary: &Path, keep: bool) -> Result<ExitCode, String> {
    let process = std::process::id();
    let state_root = if keep {
        crate::state::default_root()
    } else {
        std::env::temp_dir().join(format!("sluice-demo-{process}"))
    };
    let environment = Environment {
        state_root,
        sluice_binary: sluice_binary.to_path_buf(),
        cni_binary: cni_binary.to_path_buf(),
    };
    cluster::check_prerequisites(&environment)
        .map_err(|missing| missing.replacen("the lab needs", "sluice demo needs", 1))?;
    let name = format!("demo{}", process % 100_000);
    let files = write_files(&environment.state_root.join(format!("files-{name}")))?;
    println!("sluice demo: a two-node cluster of network namespaces on this machine (lab `{name}`)");
    println!("(if it is interrupted, clean up with `sluice lab down --name {name}`)");
    println!();
    let mut teardown = Teardown {
        environment: environment.clone(),
        name: name.clone(),
        keep: false,
        private_root: !keep,
    };
    cluster::up(&environment, &files, Some(&name), None)?;
    if keep {
        // The lab holds what it read; a kept lab leaves no files beside it for `lab down`.
        if let Some(directory) = files.parent() {
            let _ = std::fs::remove_dir_all(directory);
        }
    }
    println!();
    cluster::status(&environment, &name)?;
    println!();
    println!("Probing every pod to every other pod and outside host (real connections, 1 s timeout),");
    println!("each compared with `sluice explain` on the same datastore:");
    println!();
    let report = probe::probe(
        &environment,
        &name,
        &ProbeOptions {
            against_explain: true,
            services: Vec::new(),
            ..Default::default()
        },
    )?;
    probe::print_table(&report, true);
    print_sources(&report.rows);
    if let Some(row) = pick_denied(&report.rows) {
        println!();
        println!(
            "Why was {} -> {} {}/{} denied? (sluice explain --from {} --to {} --protocol {} --port {})",
            row.from,
            row.to,
            row.protocol.name(),
            row.port,
            row.from,
            row.to_address,
            if row.protocol.ip_protocol() == 17 {
                "UDP"
            } else {
                "TCP"
            },
            row.port
        );
        println!();
        print_explanation(&sluice_policy::explain(&report.dataplane, &row.flow()));
    }
    // A name a domain rule does not list, from a pod whose rules allow others by name.
    let by_name = report.rows.iter().find(|row| {
        row.domain.is_some()
            && !row.allowed()
            && row.explain_lookup_allows == Some(true)
            && report
                .rows
                .iter()
                .any(|other| other.from == row.from && other.domain.is_some() && other.allowed())
    });
    if let Some(row) = by_name {
        let name = row.domain.as_deref().unwrap_or_default();
        println!();
        println!(
            "Why was {} -> {name} denied when other names are allowed? (sluice explain --from {} --to {name} --resolve {name}={} --port {})",
            row.from, row.from, row.to_address, row.port
        );
        println!();
        print_explanation(&sluice_policy::explain_with_domain(
            &report.dataplane,
            &row.flow(),
            Some(name),
        ));
    }
    print_l7(&environment, &name, &report)?;
    let disagreements = report.disagreements();
    if disagreements > 0 {
        return Err(format!("{disagreements} probe(s) disagreed with explain"));
    }
    print_flow_log(&environment, &name, &report.rows)?;
    let datastore = crate::state::LabPaths::new(&environment.state_root, &name)
        .load()?
        .datastore;
    println!();
    if keep {
        teardown.keep = true;
        println!("The lab stays up. See its flows live in a browser, with explain on click:");
        println!("  sluice ui --datastore {datastore}      (then open http://127.0.0.1:8081/)");
        println!("  sluice flows --datastore {datastore} --follow");
        println!("and remove it with: sluice lab down --name {name}");
    } else {
        println!(
            "To see these flows live in a browser: `sluice demo --keep`, then the `sluice ui` it prints."
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The flow log the agents wrote of the probes: what was denied, by which policy, and how many
/// were allowed (as `sluice flows` shows them).
fn print_flow_log(environment: &Environment, name: &str, rows: &[ProbeRow]) -> Result<(), String> {
    let denied_sources: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|row| !row.allowed() && row.from.contains('/'))
        .map(|row| row.from.as_str())
        .collect();
    // Each node's agent ends an interval every second: wait until every pod that had a probe
    // denied has a denied record, for a few seconds at most.
    let records =
        crate::flows::wait_for_records(environment, name, std::time::Duration::from_secs(5), |records| {
            denied_sources.iter().all(|source| {
                records.iter().any(|record| {
                    record.action == sluice_flowlog::FlowAction::Deny
                        && format!("{}/{}", record.source_namespace, record.source_name) == *source
                })
            })
        })?;
    let denied: Vec<_> = records
        .iter()
        .filter(|record| record.action == sluice_flowlog::FlowAction::Deny)
        .collect();
    println!();
    println!(
        "The flow log the agents wrote ({} records, {} denied; `sluice flows --action deny`):",
        records.len(),
        denied.len()
    );
    println!();
    // One row per flow key, however many intervals it spanned.
    let side = |kind: sluice_flowlog::EndpointType,
                namespace: &str,
                name: &str,
                aggregated: &str,
                address: Option<std::net::IpAddr>| {
        match (kind, address) {
            (sluice_flowlog::EndpointType::Network, Some(address)) => address.to_string(),
            (sluice_flowlog::EndpointType::Network, None) => aggregated.to_string(),
            _ if namespace == sluice_flowlog::NOT_INCLUDED => name.to_string(),
            _ => format!("{namespace}/{name}"),
        }
    };
    let mut rows: std::collections::BTreeMap<[String; 5], u64> = std::collections::BTreeMap::new();
    for record in denied {
        let key = [
            side(
                record.source_type,
                &record.source_namespace,
                &record.source_name,
                &record.source_name_aggr,
                record.source_ip,
            ),
            side(
                record.dest_type,
                &record.dest_namespace,
                &record.dest_name,
                &record.dest_name_aggr,
                record.dest_ip,
            ),
            format!(
                "{}/{}",
                record.proto,
                record.dest_port.map(|port| port.to_string()).unwrap_or_default()
            ),
            format!("{:?}", record.reporter).to_ascii_lowercase(),
            record.policies.join(","),
        ];
        *rows.entry(key).or_default() += record.num_flows;
    }
    let mut table = vec![vec![
        "SOURCE".to_string(),
        "DESTINATION".to_string(),
        "PORT".to_string(),
        "REPORTER".to_string(),
        "POLICY".to_string(),
        "FLOWS".to_string(),
    ]];
    for (key, flows) in rows {
        let mut row = key.to_vec();
        row.push(flows.to_string());
        table.push(row);
    }
    let widths: Vec<usize> = (0..6)
        .map(|column| table.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        println!("  {}", cells.join("   ").trim_end());
    }
    Ok(())
}

/// How the outside saw each pod: as its node (natOutgoing), as itself (routed) or as one of
/// its egress gateways.
fn print_sources(rows: &[ProbeRow]) {
    let mut shown = std::collections::BTreeSet::new();
    let outside = rows.iter().filter(|row| row.allowed() && !row.to.contains('/'));
    for row in outside {
        let Some(seen) = row.outcome.seen else { continue };
        if !shown.insert(row.from.clone()) {
            continue;
        }
        if shown.len() == 1 {
            println!();
            println!("What the outside saw:");
        }
        let how = match &row.egress {
            Some(egress) if egress.sources.contains(&seen) => format!(
                "an egress gateway's address (its namespace leaves through {})",
                egress.gateways.join(" or ")
            ),
            _ if seen == row.from_address => "itself (its pool is routed, no NAT)".to_string(),
            _ => "its node's address (its pool has natOutgoing)".to_string(),
        };
        println!(
            "  {} ({}) reached {} as {seen}: {how}",
            row.from, row.from_address, row.to
        );
    }
}

/// A denied flow worth explaining: to an outside host first (egress policy is the point),
/// one that explain also denies.
fn pick_denied(rows: &[ProbeRow]) -> Option<&ProbeRow> {
    let denied = |row: &&ProbeRow| !row.allowed() && row.explain_allows == Some(false);
    rows.iter()
        .filter(denied)
        .find(|row| !row.to.contains('/'))
        .or_else(|| rows.iter().find(denied))
}

/// HTTP and TLS rules at work: a GET and a POST from prod/web to the partner's port 80, judged
/// per request by the node's L7 proxy, and the notebook's TLS connections to the CDN by its two
/// names (from the matrix); then why the POST was refused.
fn print_l7(environment: &Environment, name: &str, report: &probe::ProbeReport) -> Result<(), String> {
    let Some(web) = report
        .rows
        .iter()
        .find(|row| row.from == "prod/web" && row.to == "partner" && row.protocol == ServiceProtocol::Http)
    else {
        return Ok(());
    };
    let netns = crate::state::LabPaths::new(&environment.state_root, name)
        .load()?
        .pods
        .iter()
        .find(|pod| pod.shown() == "prod/web")
        .map(|pod| pod.netns.clone())
        .ok_or("the demo has no prod/web")?;
    println!();
    println!("HTTP and TLS rules, judged per request by each node's L7 proxy (only connections that");
    println!("reach such a rule leave the kernel's fast path):");
    println!();
    let mut denied = None;
    for method in ["GET", "POST"] {
        let request = Request {
            method: method.to_string(),
            path: "/v1/orders".to_string(),
            server_name: None,
        };
        let outcome = probe::connect_in(
            environment,
            &netns,
            ServiceProtocol::Http,
            probe::Destination::Address(web.to_address),
            web.port,
            &request,
        );
        let shown = match outcome.result {
            ConnectResult::Connected => "allowed".to_string(),
            ConnectResult::Forbidden => format!("403: {}", outcome.detail.as_deref().unwrap_or_default()),
            other => format!("{other:?}"),
        };
        println!(
            "  prod/web  {method} http://{}/v1/orders  {shown}",
            web.to_address
        );
        if outcome.result != ConnectResult::Connected {
            denied = Some(request);
        }
    }
    for row in report
        .rows
        .iter()
        // The notebook's rule checks the server name against its domains (tls.matchDomains).
        .filter(|row| {
            row.protocol == ServiceProtocol::Https && row.domain.is_some() && row.from == "research/notebook"
        })
    {
        let shown = match row.outcome.result {
            ConnectResult::Connected => "allowed".to_string(),
            ConnectResult::Refused => "reset by the proxy".to_string(),
            other => format!("{other:?}"),
        };
        println!(
            "  {}  TLS to {} ({}) naming {}  {shown}",
            row.from,
            row.domain.as_deref().unwrap_or_default(),
            row.to_address,
            row.domain.as_deref().unwrap_or_default()
        );
    }
    if let Some(request) = denied {
        println!();
        println!(
            "Why was the POST refused? (sluice explain --from prod/web --to {} --port {} --http-method POST --http-path /v1/orders)",
            web.to_address, web.port
        );
        println!();
        let view = sluice_policy::FlowL7 {
            http: Some(sluice_policy::HttpRequest {
                method: request.method,
                path: request.path,
                host: Some(web.to_address.to_string()),
            }),
            server_name: None,
        };
        print_explanation(&sluice_policy::explain_with_l7(
            &report.dataplane,
            &web.flow(),
            None,
            Some(&view),
        ));
    }
    Ok(())
}

fn print_explanation(explanation: &sluice_policy::Explanation) {
    for side in [&explanation.egress, &explanation.ingress].into_iter().flatten() {
        println!("{} of {}: {}", side.direction, side.endpoint, side.reason);
        for step in &side.steps {
            println!("  {step}");
        }
    }
}
