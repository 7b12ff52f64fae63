//! Flow logs in the rendered ruleset: every final decision of an endpoint chain logs its hit id
//! to the NFLOG group (Allow rules inline, Deny rules and tier ends through a rate limited chain
//! per hit, merged runs through a verdict map to each rule's chain, the profile at the end of
//! the endpoint chain); tier chains stay shared; the ids are the evaluator's hits; without the
//! option nothing changes. Checked as text, in the fake and by the real nft (root, a private
//! network namespace).

use std::collections::BTreeSet;

use sluice_api::values::{Action, PolicyType};
use sluice_dataplane::flow_logs::{ALLOW_CHAIN_PREFIX, DENY_CHAIN_PREFIX};
use sluice_dataplane::{DnsRender, FlowLogs, LocalEndpoint, Ruleset, Syncer, render, render_with_flow_logs};
use sluice_nft::{CommandBackend, FakeBackend};
use sluice_policy::{Dataplane, Flow, HitId, PolicyHit};
use support::Namespace;

mod support;

const FLOW_LOGS: FlowLogs = FlowLogs {
    group: 7100,
    deny_rate_per_second: 25,
};

fn manifests() -> String {
    let mut text = String::from(
        r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: client-egress}
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
    - {action: Allow, protocol: TCP, destination: {nets: [192.0.2.0/24], ports: [80]}}
    - {action: Allow, protocol: TCP, destination: {nets: [198.51.100.0/24], ports: [443]}}
    - {action: Deny, protocol: UDP, destination: {nets: [203.0.113.0/24], ports: [53]}}
    - {action: Allow, protocol: ICMP}
"#,
    );
    text.push_str(&support::workload_endpoint(
        "shop",
        "client-a",
        "client",
        "10.61.0.5",
        "slcflowa",
    ));
    text.push_str(&support::workload_endpoint(
        "shop",
        "client-b",
        "client",
        "10.61.0.6",
        "slcflowb",
    ));
    text.push_str(&support::workload_endpoint(
        "other",
        "lonely",
        "lonely",
        "10.61.0.7",
        "slcflowc",
    ));
    text
}

fn local() -> Vec<LocalEndpoint> {
    [
        ("shop", "client-a", "slcflowa"),
        ("shop", "client-b", "slcflowb"),
        ("other", "lonely", "slcflowc"),
    ]
    .into_iter()
    .map(|(namespace, name, interface)| LocalEndpoint {
        namespace: namespace.into(),
        name: name.into(),
        interface: interface.into(),
        egress_gateway: false,
    })
    .collect()
}

fn compiled() -> Dataplane {
    sluice_policy::compile(&sluice_api::load_str("flow-logs.yaml", &manifests()).unwrap())
}

fn with_flow_logs(ir: &Dataplane) -> Ruleset {
    render_with_flow_logs(ir, &local(), &DnsRender::default(), Some(FLOW_LOGS))
}

/// The hit the evaluator gives a flow's egress from `source`.
fn egress_hit(ir: &Dataplane, source: &str, destination: &str, protocol: u8, port: Option<u16>) -> PolicyHit {
    let flow = Flow {
        source: source.parse().unwrap(),
        destination: destination.parse().unwrap(),
        protocol,
        source_port: None,
        destination_port: port,
        icmp_type: (protocol == 1).then_some(8),
        icmp_code: (protocol == 1).then_some(0),
    };
    let (endpoint, decision) = ir.evaluate(&flow).egress.expect("a local source");
    ir.hit_of(&ir.endpoints[endpoint], PolicyType::Egress, decision)
        .expect("a hit")
}

fn rules_of<'a>(ruleset: &'a Ruleset, chain: &str) -> Vec<&'a str> {
    ruleset.chains[chain]
        .rules
        .iter()
        .map(|(rule, _)| rule.as_str())
        .collect()
}

fn chains_starting(ruleset: &Ruleset, prefix: &str) -> Vec<String> {
    ruleset
        .chains
        .keys()
        .filter(|name| name.starts_with(prefix))
        .cloned()
        .collect()
}

#[test]
fn without_the_option_the_ruleset_is_unchanged_and_logs_nothing() {
    let ir = compiled();
    let plain = render(&ir, &local());
    assert_eq!(
        render_with_flow_logs(&ir, &local(), &DnsRender::default(), None),
        plain
    );
    let text = Syncer::new(FakeBackend::new()).full(&plain).render();
    assert!(!text.contains("log group"), "{text}");
    // The merged run is a plain set lookup.
    assert!(text.contains("th dport @run-"), "{text}");
}

#[test]
fn every_final_decision_logs_the_evaluators_hit() {
    let ir = compiled();
    let ruleset = with_flow_logs(&ir);
    let text = Syncer::new(FakeBackend::new()).full(&ruleset).render();

    // Allow rules 0 and 1 are one verdict map lookup whose elements go to each rule's chain.
    let http = egress_hit(&ir, "10.61.0.5", "192.0.2.9", 6, Some(80));
    let https = egress_hit(&ir, "10.61.0.5", "198.51.100.9", 6, Some(443));
    assert_eq!((http.rule_index, http.action), (0, Action::Allow));
    assert_eq!((https.rule_index, https.action), (1, Action::Allow));
    let runs: Vec<_> = ruleset
        .sets
        .values()
        .filter(|set| set.declaration.name.starts_with("run-"))
        .collect();
    assert_eq!(runs.len(), 1, "{text}");
    assert_eq!(runs[0].declaration.value_type.as_deref(), Some("verdict"));
    assert!(runs[0].declaration.flags.contains(&"interval".to_string()));
    let elements: BTreeSet<(String, Option<String>)> = [
        ("192.0.2.0/24 . 6 . 80", &http),
        ("198.51.100.0/24 . 6 . 443", &https),
    ]
    .into_iter()
    .map(|(key, hit)| {
        (
            key.to_string(),
            Some(format!("goto {ALLOW_CHAIN_PREFIX}{}", hit.id())),
        )
    })
    .collect();
    assert_eq!(runs[0].elements, elements);
    for hit in [&http, &https] {
        assert_eq!(
            rules_of(&ruleset, &format!("{ALLOW_CHAIN_PREFIX}{}", hit.id())),
            [format!(
                "log group 7100 prefix \"{}\" meta mark set meta mark | 0x00010000 return",
                hit.id()
            )]
        );
    }

    // The Deny rule goes to its hit's chain: a rate limited log, then the drop.
    let dns = egress_hit(&ir, "10.61.0.5", "203.0.113.53", 17, Some(53));
    assert_eq!((dns.rule_index, dns.action), (2, Action::Deny));
    let deny_chain = format!("{DENY_CHAIN_PREFIX}{}", dns.id());
    assert_eq!(
        rules_of(&ruleset, &deny_chain),
        [
            format!("limit rate 25/second log group 7100 prefix \"{}\"", dns.id()),
            "drop".to_string()
        ]
    );

    // The ICMP Allow rule logs inline.
    let ping = egress_hit(&ir, "10.61.0.5", "192.0.2.9", 1, None);
    assert_eq!((ping.rule_index, ping.action), (3, Action::Allow));

    // The tier's end goes to the chain of its hit (the last policy, rule -1).
    let end = egress_hit(&ir, "10.61.0.5", "192.0.2.9", 6, Some(81));
    assert_eq!((end.rule_index, end.action), (-1, Action::Deny));

    // Both clients share one egress tier chain, holding all of the above.
    let tiers = chains_starting(&ruleset, "tier-");
    let egress_tiers: Vec<&String> = tiers.iter().filter(|name| name.ends_with("-egress")).collect();
    assert_eq!(egress_tiers.len(), 1, "{tiers:?}");
    let tier = rules_of(&ruleset, egress_tiers[0]);
    let run = &runs[0].declaration.name;
    assert_eq!(
        tier,
        [
            format!("meta nfproto ipv4 ip daddr . meta l4proto . th dport vmap @{run}"),
            format!(
                "meta nfproto ipv4 meta l4proto 17 ip daddr 203.0.113.0/24 th dport 53 goto {deny_chain}"
            ),
            format!(
                "meta nfproto ipv4 meta l4proto 1 log group 7100 prefix \"{}\" meta mark set meta mark | 0x00010000 return",
                ping.id()
            ),
            format!("goto {DENY_CHAIN_PREFIX}{}", end.id()),
        ]
    );

    // The profile allows at the end of every endpoint chain, with the namespace's id; the
    // lonely pod's egress is decided by it alone.
    let lonely = egress_hit(&ir, "10.61.0.7", "192.0.2.9", 6, Some(80));
    assert_eq!(lonely, PolicyHit::profile("other", PolicyType::Egress));
    let shop_ingress = PolicyHit::profile("shop", PolicyType::Ingress);
    let endpoint_chains = chains_starting(&ruleset, "endpoint-");
    assert_eq!(endpoint_chains.len(), 6);
    let last_rules: BTreeSet<&str> = endpoint_chains
        .iter()
        .map(|chain| *rules_of(&ruleset, chain).last().unwrap())
        .collect();
    for hit in [
        &lonely,
        &shop_ingress,
        &PolicyHit::profile("shop", PolicyType::Egress),
        &PolicyHit::profile("other", PolicyType::Ingress),
    ] {
        let rule = format!("log group 7100 prefix \"{}\" return", hit.id());
        assert!(last_rules.contains(rule.as_str()), "{rule} not in {last_rules:?}");
    }

    // Every id the ruleset logs is a hit of the IR: what the flow-log core looks ids up in.
    let known: BTreeSet<HitId> = ir.hits().iter().map(PolicyHit::id).collect();
    let logged: Vec<HitId> = text
        .match_indices("prefix \"")
        .map(|(at, _)| text[at + 8..at + 24].parse().unwrap())
        .collect();
    assert!(logged.len() >= 8, "{text}");
    for id in logged {
        assert!(known.contains(&id), "{id} is not a hit of the IR");
    }
}

#[test]
fn the_fake_takes_flow_logs_on_and_off_incrementally_and_removes_every_hit_chain() {
    let ir = compiled();
    let plain = render(&ir, &local());
    let logged = with_flow_logs(&ir);
    let mut syncer = Syncer::new(FakeBackend::new());
    assert!(syncer.sync(&plain).unwrap().full);
    let on = syncer.sync(&logged).unwrap();
    assert!(!on.full && on.operations > 0);
    // Off again: the verdict map goes before the chains its elements go to.
    let off = syncer.sync(&plain).unwrap();
    assert!(!off.full && off.operations > 0);
    let table = sluice_nft::Table::new(sluice_nft::Family::Inet, "sluice");
    let dump = syncer.backend().dump(&table);
    assert!(
        !dump.contains("log group") && !dump.contains("chain deny-"),
        "{dump}"
    );
    assert_eq!(syncer.sync(&plain).unwrap().operations, 0);
    // A changed rate rewrites only the deny chains.
    syncer.sync(&logged).unwrap();
    let slower = render_with_flow_logs(
        &ir,
        &local(),
        &DnsRender::default(),
        Some(FlowLogs {
            deny_rate_per_second: 5,
            ..FLOW_LOGS
        }),
    );
    let report = syncer.sync(&slower).unwrap();
    assert!(report.operations <= 2 * 3, "{report:?}");
}

#[test]
fn the_real_nft_accepts_flow_logs_and_takes_them_off_again() {
    let namespace = Namespace::new("nft");
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&namespace.0).expect("nft is installed"));
    let ir = compiled();
    let logged = with_flow_logs(&ir);
    syncer
        .sync(&logged)
        .expect("the kernel takes the flow-log ruleset");
    let listed = namespace.nft_list(&["table", "inet", "sluice"]);
    assert!(
        listed.contains("log prefix") && listed.contains("group 7100"),
        "{listed}"
    );
    assert!(listed.contains("limit rate 25/second"), "{listed}");
    assert!(listed.contains(": goto allow-"), "{listed}");
    // Incrementally off and on again, as an agent whose configuration changed.
    let plain = render(&ir, &local());
    assert!(!syncer.sync(&plain).expect("flow logs off").full);
    assert!(!syncer.sync(&logged).expect("flow logs on").full);
}
