//! Domain rules as rendered: the domain sets, the name alternative of each domain rule, the
//! learned elements a full rebuild writes back (and an incremental sync leaves alone), and the
//! DNS queue classification; nothing of it without domain rules. Review the snapshot with
//! `cargo insta review`.

use std::time::Duration;

use sluice_dataplane::{
    DnsRender, IpFamily, LearnedElement, LocalEndpoint, Ruleset, Syncer, domain_set_name, render,
    render_with_dns,
};
use sluice_nft::FakeBackend;

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {nodeName: node-1}
status: {podIP: 10.61.0.5, podIPs: [{ip: 10.61.0.5}, {ip: "fd00:61::5"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: shop, labels: {app: other}}
spec: {nodeName: node-1}
status: {podIP: 10.61.0.6}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: partners, labels: {role: partner}}
spec: {nets: [198.51.100.0/25], allowedEgressDomains: ['*.partner.example']}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: client-egress}
spec:
  selector: app == 'client'
  types: [Egress, Ingress]
  egress:
    - {action: Allow, protocol: TCP, destination: {domains: [api.example, '*.s3.example'], ports: [443]}}
    - {action: Allow, destination: {selector: role == 'partner'}}
    - {action: Deny, destination: {selector: role == 'partner'}}
  ingress:
    - {action: Allow, source: {selector: role == 'partner'}}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: other-egress}
spec:
  selector: app == 'other'
  types: [Egress]
  egress:
    - {action: Allow, protocol: UDP, destination: {ports: [53]}}
"#;

fn local() -> Vec<LocalEndpoint> {
    ["client", "other"]
        .into_iter()
        .map(|name| LocalEndpoint {
            namespace: "shop".into(),
            name: name.into(),
            interface: format!("slc{name}"),
            egress_gateway: false,
        })
        .collect()
}

fn compiled(manifests: &str) -> sluice_policy::Dataplane {
    sluice_policy::compile(&sluice_api::load_str("domains.yaml", manifests).unwrap())
}

fn set_names(ir: &sluice_policy::Dataplane) -> (String, String) {
    let only = ir
        .domain_sets
        .iter()
        .find(|set| set.patterns.len() == 2)
        .expect("the domains rule's set");
    let partners = ir
        .domain_sets
        .iter()
        .find(|set| set.patterns.len() == 1)
        .expect("the network set's domains");
    (only.name.clone(), partners.name.clone())
}

fn dns(ir: &sluice_policy::Dataplane) -> DnsRender {
    let (only, partners) = set_names(ir);
    DnsRender {
        trusted_servers: vec![
            "10.96.0.10:53".parse().unwrap(),
            "[fd00:96::a]:5353".parse().unwrap(),
        ],
        queue: 4000,
        learned: vec![
            LearnedElement {
                set: only.clone(),
                endpoint: "10.61.0.5".parse().unwrap(),
                destination: "192.0.2.7".parse().unwrap(),
                remaining: Duration::from_millis(29_500),
            },
            LearnedElement {
                set: only.clone(),
                endpoint: "fd00:61::5".parse().unwrap(),
                destination: "2001:db8::7".parse().unwrap(),
                remaining: Duration::from_secs(300),
            },
            LearnedElement {
                set: partners,
                endpoint: "10.61.0.5".parse().unwrap(),
                destination: "203.0.113.9".parse().unwrap(),
                remaining: Duration::from_secs(60),
            },
            // Left out: a pod without that interest, a mixed-family pair, nothing left.
            LearnedElement {
                set: only.clone(),
                endpoint: "10.61.0.6".parse().unwrap(),
                destination: "192.0.2.8".parse().unwrap(),
                remaining: Duration::from_secs(60),
            },
            LearnedElement {
                set: only.clone(),
                endpoint: "10.61.0.5".parse().unwrap(),
                destination: "2001:db8::9".parse().unwrap(),
                remaining: Duration::from_secs(60),
            },
            LearnedElement {
                set: only,
                endpoint: "10.61.0.5".parse().unwrap(),
                destination: "192.0.2.10".parse().unwrap(),
                remaining: Duration::from_micros(999),
            },
        ],
    }
}

fn full_text(ruleset: &Ruleset) -> String {
    Syncer::new(FakeBackend::new()).full(ruleset).render()
}

#[test]
fn domain_rules_render_sets_name_alternatives_learned_elements_and_the_queue() {
    let ir = compiled(MANIFESTS);
    let ruleset = render_with_dns(&ir, &local(), &dns(&ir));
    let text = full_text(&ruleset);
    let (only, partners) = set_names(&ir);
    let only_v4 = domain_set_name(&only, IpFamily::V4);
    let partners_v4 = domain_set_name(&partners, IpFamily::V4);
    // The domains rule matches only by the learned pair; the network-set rule by the selector's
    // set or the pair; the Deny and ingress rules reaching the same network set by address only.
    let pair_rules: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("saddr . ip") && line.starts_with("add rule"))
        .collect();
    assert_eq!(
        pair_rules
            .iter()
            .filter(|line| line.contains(&format!("@{only_v4}")))
            .count(),
        1,
        "{text}"
    );
    assert_eq!(
        pair_rules
            .iter()
            .filter(|line| line.contains(&format!("@{partners_v4}")))
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains(&format!("{only_v4} {{ 10.61.0.5 . 192.0.2.7 timeout 29500ms }}")),
        "{text}"
    );
    assert!(!text.contains("192.0.2.8") && !text.contains("2001:db8::9") && !text.contains("192.0.2.10"));
    assert!(text.contains("dns_clients_v4 { 10.61.0.5 }"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn without_domain_rules_nothing_of_it_appears() {
    let manifests = MANIFESTS
        .replace(
            "domains: [api.example, '*.s3.example'], ",
            "nets: [192.0.2.0/24], ",
        )
        .replace(", allowedEgressDomains: ['*.partner.example']", "");
    let ir = compiled(&manifests);
    assert!(ir.domain_sets.is_empty());
    let text = full_text(&render_with_dns(&ir, &local(), &dns(&compiled(MANIFESTS))));
    for absent in ["dns_", "timeout", "dns-queue", "queue"] {
        assert!(!text.contains(absent), "{absent} in\n{text}");
    }
    assert_eq!(text, full_text(&render(&ir, &local())));
}

#[test]
fn incremental_syncs_leave_learned_elements_alone_and_full_rebuilds_write_them_back() {
    let ir = compiled(MANIFESTS);
    let mut syncer = Syncer::new(FakeBackend::new());
    let first = render_with_dns(&ir, &local(), &dns(&ir));
    assert!(syncer.sync(&first).unwrap().full);
    // What was learned changes (elements expire, new ones are added over netlink): the
    // rendered dynamic elements differ, but an incremental sync has nothing to do.
    let mut later = dns(&ir);
    later.learned.truncate(1);
    later.learned[0].remaining = Duration::from_secs(3);
    let second = render_with_dns(&ir, &local(), &later);
    assert_ne!(first.dynamic_sets, second.dynamic_sets);
    let report = syncer.sync(&second).unwrap();
    assert_eq!((report.full, report.operations), (false, 0));
    // A full rebuild replaces the table and writes the learned elements back in the same
    // transaction, after the set's declaration.
    let rebuild = syncer.full(&second).render();
    let (only, _) = set_names(&ir);
    let name = domain_set_name(&only, IpFamily::V4);
    let declaration = rebuild.find(&format!("add set inet sluice {name} ")).unwrap();
    let element = rebuild
        .find(&format!(
            "add element inet sluice {name} {{ 10.61.0.5 . 192.0.2.7 timeout 3000ms }}"
        ))
        .unwrap_or_else(|| panic!("{rebuild}"));
    assert!(rebuild.starts_with("add table inet sluice\ndelete table inet sluice\n"));
    assert!(declaration < element);
    // A policy change that removes the domain rules removes the sets; re-adding them writes
    // back what is learned then.
    let plain = compiled(&MANIFESTS.replace(
        "domains: [api.example, '*.s3.example'], ",
        "nets: [192.0.2.0/24], ",
    ));
    let removed = syncer.sync(&render_with_dns(&plain, &local(), &later)).unwrap();
    assert!(!removed.full);
    let mut readd = Syncer::new(FakeBackend::new());
    readd.sync(&render_with_dns(&plain, &local(), &later)).unwrap();
    let report = readd.sync(&render_with_dns(&ir, &local(), &later)).unwrap();
    assert!(!report.full && report.operations > 0);
    assert!(
        format!("{:?}", readd.backend()).contains("10.61.0.5 . 192.0.2.7 timeout 3000ms"),
        "{:?}",
        readd.backend()
    );
}
