//! The lab's DNS server with real packets (root; skipped otherwise): a pod's resolver is the
//! lab's server (through `/etc/netns/<pod>/resolv.conf`), which answers A, AAAA, CNAME and
//! NXDOMAIN over UDP and TCP, also to glibc (`getent`); `lab probe` connects by every name and
//! alias and agrees with explain, including a pod whose DNS queries policy drops; `lab down`
//! removes the pods' resolv.conf files.
//!
//! Like `tests/lab.rs`, this binary has no libtest harness (see `support`).

mod support;

use std::path::Path;
use std::process::ExitCode;

use sluice_lab::servers::LookupResult;
use sluice_lab::{ConnectResult, ProbeOptions, ProbeReport};
use support::{Lab, Test};

const TESTS: [(&str, Test); 2] = [
    (
        "pods_resolve_through_the_lab_dns_server_and_probe_by_name",
        dns_in_the_lab,
    ),
    ("the_dns_server_may_share_an_outside_host_address", shared_host),
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
spec: {cidr: 10.62.0.0/16}
---
# `locked` may reach the partner's address on 443 and nothing else: not even DNS.
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: locked, namespace: shop}
spec:
  selector: app == 'locked'
  types: [Egress]
  egress:
    - action: Allow
      protocol: TCP
      destination: {nets: [203.0.113.10/32], ports: [443]}
"#;

const LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
outside:
  - name: partner
    address: 203.0.113.10
    tcp: [443]
    names: [api.partner.example, API2.partner.example]
    cname: [www.partner.example]
    ttl: 7
  - {name: other, address: 198.51.100.9, tcp: [443], names: [b.example]}
manifests: [manifests/]
pods:
  - {namespace: shop, name: client, node: node-1, labels: {app: client}}
  - {namespace: shop, name: locked, node: node-1, labels: {app: locked}}
"#;

const DNS_ADDRESS: &str = "100.64.1.253";

fn dns_in_the_lab() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: needs root to make network namespaces");
        return Ok(());
    }
    let lab = Lab::up("dns", LAB, &[("00.yaml", MANIFESTS.to_string())])?;
    let pods: Vec<String> = lab.state()?.pods.iter().map(|pod| pod.netns.clone()).collect();
    let outcome = answers(&lab).and_then(|()| probes(&lab));
    let finished = lab.finish();
    // `lab down` takes the pods' resolv.conf files with it.
    let left: Vec<&String> = pods
        .iter()
        .filter(|netns| Path::new("/etc/netns").join(netns).exists())
        .collect();
    outcome.and(finished)?;
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("`lab down` left /etc/netns entries for {left:?}"))
    }
}

const SHARED_LAB: &str = r#"kind: Lab
name: placeholder
nodes:
  - name: node-1
outside:
  - {name: resolver, address: 192.0.2.53, tcp: [443], names: [resolver.example]}
manifests: [manifests/]
dns: {address: 192.0.2.53}
pods:
  - {namespace: shop, name: client, node: node-1, labels: {app: client}}
"#;

/// `dns.address` on an outside host's address: the server runs on that host, beside its own
/// service, and no extra host is made.
fn shared_host() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: needs root to make network namespaces");
        return Ok(());
    }
    let lab = Lab::up("dnsh", SHARED_LAB, &[("00.yaml", MANIFESTS.to_string())])?;
    let outcome = (|| -> Result<(), String> {
        let state = lab.state()?;
        let dns = state.dns.clone().ok_or("no DNS server recorded")?;
        if dns.host.as_deref() != Some("resolver") || dns.netns != lab.netns("resolver")? {
            return Err(format!(
                "the DNS server runs at {dns:?}, not on the host `resolver`"
            ));
        }
        let lookup = resolve(&lab, &lab.netns("shop/client")?, &["--name", "resolver.example"])?;
        if lookup["server"] != "192.0.2.53:53" || lookup["addresses"][0] != "192.0.2.53" {
            return Err(format!("the lookup through the shared host read {lookup}"));
        }
        let report = sluice_lab::probe(
            &lab.environment,
            &lab.name,
            &ProbeOptions {
                against_explain: true,
                services: Vec::new(),
                ..Default::default()
            },
        )?;
        let results: Vec<_> = report
            .rows
            .iter()
            .map(|row| (row.domain.clone(), row.outcome.result))
            .collect();
        let wanted = vec![
            (None, ConnectResult::Connected),
            (Some("resolver.example".to_string()), ConnectResult::Connected),
        ];
        if report.disagreements() > 0 || results != wanted {
            return Err(format!("probes: {results:?}\n{}", table(&report)));
        }
        Ok(())
    })();
    outcome.and(lab.finish())
}

/// `lab resolve` in the pod: no `--server`, so it asks the pod's resolv.conf nameserver.
fn resolve(lab: &Lab, netns: &str, arguments: &[&str]) -> Result<serde_json::Value, String> {
    let mut all = vec!["lab", "resolve"];
    all.extend_from_slice(arguments);
    let output = lab
        .command_in(netns, &all)
        .output()
        .map_err(|error| error.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).map_err(|_| {
        format!(
            "`{}` printed {stdout:?} {}",
            all.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

fn records(lookup: &serde_json::Value) -> Vec<String> {
    lookup["records"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|record| {
            format!(
                "{} {} {} {}",
                record["name"].as_str().unwrap_or_default(),
                record["type"].as_str().unwrap_or_default(),
                record["ttl"],
                record["data"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn answers(lab: &Lab) -> Result<(), String> {
    let client = lab.netns("shop/client")?;
    let mut failures = Vec::new();
    let mut expect = |what: String, got: String, wanted: &str| {
        if got != wanted {
            failures.push(format!("{what}: got {got}, wanted {wanted}"));
        }
    };
    for transport in [None, Some("--tcp")] {
        let ask = |name: &str, kind: &str| -> Result<serde_json::Value, String> {
            let mut arguments = vec!["--name", name, "--type", kind];
            arguments.extend(transport);
            resolve(lab, &client, &arguments)
        };
        let shown = transport.unwrap_or("udp");
        let lookup = ask("api.partner.example", "a")?;
        expect(
            format!("{shown} A api.partner.example"),
            format!("{} {} {:?}", lookup["server"], lookup["rcode"], records(&lookup)),
            &format!("\"{DNS_ADDRESS}:53\" \"NOERROR\" [\"api.partner.example A 7 203.0.113.10\"]"),
        );
        let lookup = ask("www.partner.example", "a")?;
        expect(
            format!("{shown} A www.partner.example"),
            format!("{:?} {}", records(&lookup), lookup["addresses"]),
            "[\"www.partner.example CNAME 7 api.partner.example\", \"api.partner.example A 7 203.0.113.10\"] [\"203.0.113.10\"]",
        );
        let lookup = ask("www.partner.example", "cname")?;
        expect(
            format!("{shown} CNAME www.partner.example"),
            format!("{:?}", records(&lookup)),
            "[\"www.partner.example CNAME 7 api.partner.example\"]",
        );
        let lookup = ask("b.example", "aaaa")?;
        expect(
            format!("{shown} AAAA b.example"),
            format!("{} {:?}", lookup["rcode"], records(&lookup)),
            "\"NOERROR\" []",
        );
        let lookup = ask("nope.example", "a")?;
        expect(
            format!("{shown} A nope.example"),
            format!(
                "{} {} {:?}",
                lookup["rcode"],
                lookup["authoritative"],
                records(&lookup)
            ),
            "\"NXDOMAIN\" true []",
        );
    }
    // glibc's resolver in the pod reads the same resolv.conf and follows the CNAME.
    let getent = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &client,
            "getent",
            "ahostsv4",
            "www.partner.example",
        ])
        .output()
        .map_err(|error| format!("getent: {error}"))?;
    let text = String::from_utf8_lossy(&getent.stdout);
    if !text.contains("203.0.113.10") {
        failures.push(format!(
            "getent ahostsv4 www.partner.example in the pod printed {text:?}"
        ));
    }
    // The server saw the pod itself (a routed pool), over both transports.
    let served = lab.paths().log_file("dns").with_extension("served");
    let log = std::fs::read_to_string(&served).map_err(|error| format!("{}: {error}", served.display()))?;
    let pod = lab.pod_address("shop/client")?;
    for transport in ["udp", "tcp"] {
        if !log.contains(&format!("{transport} from {pod}:")) {
            failures.push(format!(
                "the DNS server logged no {transport} query from {pod}:\n{log}"
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

fn probes(lab: &Lab) -> Result<(), String> {
    let report = sluice_lab::probe(
        &lab.environment,
        &lab.name,
        &ProbeOptions {
            against_explain: true,
            services: Vec::new(),
            ..Default::default()
        },
    )?;
    let shown = || table(&report);
    if report.disagreements() > 0 {
        return Err(format!("probes disagree with explain:\n{}", shown()));
    }
    let client = lab.pod_address("shop/client")?;
    let named = |from: &str| -> Vec<(&str, ConnectResult, Option<LookupResult>)> {
        report
            .rows
            .iter()
            .filter(|row| row.from == from)
            .filter_map(|row| {
                Some((
                    row.domain.as_deref()?,
                    row.outcome.result,
                    row.outcome.lookup.as_ref().map(|lookup| lookup.result),
                ))
            })
            .collect()
    };
    let names = [
        "api.partner.example",
        "api2.partner.example",
        "www.partner.example",
        "b.example",
    ];
    let mut failures = Vec::new();
    // The open pod resolves and connects by every name and alias, seen as itself.
    let expected: Vec<_> = names
        .iter()
        .map(|name| (*name, ConnectResult::Connected, Some(LookupResult::Answered)))
        .collect();
    if named("shop/client") != expected {
        failures.push(format!("shop/client by name: {:?}", named("shop/client")));
    }
    for row in report
        .rows
        .iter()
        .filter(|row| row.from == "shop/client" && row.domain.is_some())
    {
        if row.outcome.seen != Some(client) {
            failures.push(format!(
                "{:?} saw {:?}, not {client}",
                row.domain, row.outcome.seen
            ));
        }
    }
    // The locked pod's queries are dropped, so nothing by name gets anywhere; explain agrees
    // (its lookup verdict is deny) while the partner's address itself is allowed.
    let expected: Vec<_> = names
        .iter()
        .map(|name| (*name, ConnectResult::TimedOut, Some(LookupResult::TimedOut)))
        .collect();
    if named("shop/locked") != expected {
        failures.push(format!("shop/locked by name: {:?}", named("shop/locked")));
    }
    let by_address = report
        .rows
        .iter()
        .find(|row| row.from == "shop/locked" && row.to == "partner" && row.domain.is_none())
        .map(|row| (row.outcome.result, row.explain_allows, row.explain_lookup_allows));
    if by_address != Some((ConnectResult::Connected, Some(true), None)) {
        failures.push(format!("shop/locked → partner by address: {by_address:?}"));
    }
    if report
        .rows
        .iter()
        .filter(|row| row.from == "shop/locked" && row.domain.is_some())
        .any(|row| row.explain_lookup_allows != Some(false) || row.explain_allows != Some(false))
    {
        failures.push("explain allows a lookup of the locked pod".to_string());
    }
    // JSON lines carry the name.
    let line = report
        .rows
        .iter()
        .find(|row| row.domain.as_deref() == Some("www.partner.example"))
        .map(|row| serde_json::to_string(row).unwrap_or_default())
        .unwrap_or_default();
    if !line.contains("\"domain\":\"www.partner.example\"")
        || !line.contains("\"toAddress\":\"203.0.113.10\"")
    {
        failures.push(format!("a JSON line by name reads {line}"));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{}", failures.join("\n"), shown()))
    }
}

fn table(report: &ProbeReport) -> String {
    report
        .rows
        .iter()
        .map(|row| {
            format!(
                "{} -> {} {:?} {}/{}: {:?} {:?} explain {:?}/{:?} {:?}",
                row.from,
                row.to,
                row.domain,
                row.protocol.name(),
                row.port,
                row.outcome.result,
                row.outcome.detail,
                row.explain_lookup_allows,
                row.explain_allows,
                row.disagreement
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
