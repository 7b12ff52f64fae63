//! Domain names in Calico resources (Calico Enterprise's fields): `destination.domains` only in
//! the destination of an egress Allow rule without `nets` or `selector`,
//! `allowedEgressDomains` on network sets, and the FelixConfiguration DNS fields. Every rule
//! is checked with its error text, file, line, column and field.

use std::time::Duration;

use sluice_api::dns_configuration::{DnsConfiguration, TrustedServer, dns_configuration};
use sluice_api::{Diagnostic, ResourceSet, load_str};

const FILE: &str = "domains.yaml";

fn load(text: &str) -> ResourceSet {
    load_str(FILE, text).unwrap_or_else(|errors| panic!("unexpected errors:\n{errors}"))
}

#[track_caller]
fn assert_error(text: &str, line: usize, column: usize, field: &str, hint: &str) -> Diagnostic {
    let errors = load_str(FILE, text).expect_err("the input should be rejected");
    assert_eq!(errors.0.len(), 1, "expected one error, got:\n{errors}");
    let diagnostic = errors.0[0].clone();
    assert_eq!(diagnostic.file, FILE, "{diagnostic}");
    assert_eq!(
        (diagnostic.line, diagnostic.column, diagnostic.field.as_str()),
        (line, column, field),
        "{diagnostic}"
    );
    assert!(diagnostic.message.contains(hint), "`{hint}` not in: {diagnostic}");
    diagnostic
}

/// A GlobalNetworkPolicy whose `direction` list holds one rule, given as its indented lines
/// after `- action: <action>` (the rule starts on line 7).
fn policy(direction: &str, action: &str, rule: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: partner\nspec:\n  {direction}:\n    - action: {action}\n{rule}"
    )
}

const WHERE: &str = "domains may appear only in the destination of an egress Allow rule whose destination has no `nets` and no `selector`";

#[test]
fn domains_in_an_egress_allow_destination_load_lowercased_beside_ports_and_not_nets() {
    let set = load(&policy(
        "egress",
        "Allow",
        "      protocol: TCP\n      destination:\n        domains: [API.Partner.example, '*.s3.example']\n        ports: [443]\n        notNets: [10.0.0.0/8]\n        namespaceSelector: global()\n",
    ));
    let destination = &set.global_network_policies[0].spec.egress[0].destination;
    let domains: Vec<&str> = destination.domains.iter().map(|domain| domain.as_str()).collect();
    assert_eq!(domains, ["api.partner.example", "*.s3.example"]);
    // Kept as Calico writes it, so `get -o yaml` shows it back.
    let namespaced = load(
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: partner, namespace: prod}\nspec:\n  egress:\n    - action: Allow\n      destination: {domains: [api.partner.example]}\n",
    );
    assert_eq!(
        namespaced.network_policies[0].spec.egress[0]
            .destination
            .domains
            .len(),
        1
    );
}

#[test]
fn domains_anywhere_else_say_where_domains_may_go() {
    // (direction, action, rule lines, line, column, field, what is wrong)
    let table: &[(&str, &str, &str, usize, usize, &str, &str)] = &[
        (
            "egress",
            "Allow",
            "      source:\n        domains: [api.partner.example]\n",
            9,
            18,
            "spec.egress[0].source.domains",
            "a rule's source cannot match domain names",
        ),
        (
            "ingress",
            "Allow",
            "      destination:\n        domains: [api.partner.example]\n",
            9,
            18,
            "spec.ingress[0].destination.domains",
            "an ingress rule cannot match domain names",
        ),
        (
            "egress",
            "Deny",
            "      destination:\n        domains: [api.partner.example]\n",
            9,
            18,
            "spec.egress[0].destination.domains",
            "a Deny rule cannot match domain names",
        ),
        (
            "egress",
            "Pass",
            "      destination:\n        domains: [api.partner.example]\n",
            9,
            18,
            "spec.egress[0].destination.domains",
            "a Pass rule cannot match domain names",
        ),
        (
            "egress",
            "Log",
            "      destination:\n        domains: [api.partner.example]\n",
            9,
            18,
            "spec.egress[0].destination.domains",
            "a Log rule cannot match domain names",
        ),
        (
            "egress",
            "Allow",
            "      destination:\n        nets: [203.0.113.0/24]\n        domains: [api.partner.example]\n",
            10,
            18,
            "spec.egress[0].destination.domains",
            "this destination also has `nets`",
        ),
        (
            "egress",
            "Allow",
            "      destination:\n        selector: role == 'partner'\n        domains: [api.partner.example]\n",
            10,
            18,
            "spec.egress[0].destination.domains",
            "this destination also has `selector`",
        ),
    ];
    for (direction, action, rule, line, column, field, hint) in table {
        let diagnostic = assert_error(&policy(direction, action, rule), *line, *column, field, hint);
        assert!(diagnostic.message.contains(WHERE), "{diagnostic}");
    }
}

#[test]
fn a_bad_domain_names_its_entry_and_why() {
    let table: &[(&str, &str)] = &[
        ("g*.com", "a wildcard must be a whole label"),
        ("example.*", "the wildcard may stand for any label but the last"),
        ("example.com.", "without the trailing dot"),
        ("*.*.example.com", "one wildcard"),
        ("under_score.example", "contains `_`"),
    ];
    for (domain, hint) in table {
        let text = policy(
            "egress",
            "Allow",
            &format!(
                "      destination:\n        domains:\n          - api.partner.example\n          - '{domain}'\n"
            ),
        );
        assert_error(&text, 11, 13, "spec.egress[0].destination.domains[1]", hint);
    }
}

#[test]
fn network_sets_take_allowed_egress_domains() {
    let set = load(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkSet\nmetadata: {name: partners, labels: {role: partner}}\nspec:\n  nets: [198.51.100.0/28]\n  allowedEgressDomains: [API.partner.example, '*.partner.example']\n---\napiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {name: s3, namespace: prod}\nspec: {allowedEgressDomains: ['*.s3.example']}\n",
    );
    let global: Vec<&str> = set.global_network_sets[0]
        .spec
        .allowed_egress_domains
        .iter()
        .map(|domain| domain.as_str())
        .collect();
    assert_eq!(global, ["api.partner.example", "*.partner.example"]);
    assert_eq!(
        set.network_sets[0].spec.allowed_egress_domains[0].as_str(),
        "*.s3.example"
    );
    for kind in ["GlobalNetworkSet", "NetworkSet"] {
        let text = format!(
            "apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata: {{name: partners, namespace: prod}}\nspec:\n  allowedEgressDomains:\n    - partner.example\n    - '*partner.example'\n"
        );
        let text = if kind == "GlobalNetworkSet" {
            text.replace(", namespace: prod", "")
        } else {
            text
        };
        assert_error(
            &text,
            7,
            7,
            "spec.allowedEgressDomains[1]",
            "a wildcard must be a whole label",
        );
    }
}

const FELIX: &str =
    "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {name: default}\nspec:\n";

#[test]
fn felix_dns_fields_are_typed_and_other_fields_still_warned_about() {
    let set = load(&format!(
        "{FELIX}  dnsTrustedServers: [10.96.0.10, '[fd00::a]:5353']\n  dnsCacheFile: /var/lib/sluice/dns.json\n  dnsCacheSaveInterval: 1m30s\n  dnsCacheEpoch: 2\n  dnsExtraTTL: 30s\n  logSeverityScreen: Info\n"
    ));
    let spec = &set.felix_configurations[0].spec;
    assert_eq!(
        spec.dns_trusted_servers.as_ref().unwrap()[1].address(),
        Some("[fd00::a]:5353".parse().unwrap())
    );
    assert_eq!(
        spec.dns_cache_save_interval.as_ref().unwrap().duration(),
        Duration::from_secs(90)
    );
    // Only the field Sluice does not use is warned about.
    assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
    assert_eq!(set.warnings[0].field, "spec.logSeverityScreen");
    assert!(
        set.warnings[0]
            .message
            .contains("does not use `logSeverityScreen`")
            && !set.warnings[0].message.contains("dns"),
        "{}",
        set.warnings[0]
    );
    // Stored and read back unchanged.
    for resource in set.into_resources() {
        let decoded = sluice_api::Resource::decode(&resource.encode(), 1).unwrap();
        assert_eq!(decoded.to_manifest(), resource.to_manifest());
    }
}

#[test]
fn bad_felix_dns_fields_are_located() {
    let table: &[(&str, usize, usize, &str, &str)] = &[
        (
            "  dnsTrustedServers: [10.96.0.10, dns.example]\n",
            5,
            35,
            "spec.dnsTrustedServers[1]",
            "`dns.example` is not a trusted DNS server; expected `<ip>`, `<ip>:<port>`",
        ),
        (
            "  dnsTrustedServers: ['10.96.0.10:0']\n",
            5,
            23,
            "spec.dnsTrustedServers[0]",
            "has port 0",
        ),
        (
            "  dnsCacheSaveInterval: 60\n",
            5,
            25,
            "spec.dnsCacheSaveInterval",
            "`60` is not a duration; write a string such as `60s`",
        ),
        (
            "  dnsCacheSaveInterval: 1d\n",
            5,
            25,
            "spec.dnsCacheSaveInterval",
            "unknown unit `d`",
        ),
        ("  dnsExtraTTL: -5s\n", 5, 16, "spec.dnsExtraTTL", "is negative"),
        (
            "  dnsCacheFile: dns-cache.json\n",
            5,
            17,
            "spec.dnsCacheFile",
            "is not an absolute path",
        ),
        (
            "  dnsCacheEpoch: one\n",
            5,
            18,
            "spec.dnsCacheEpoch",
            "invalid type",
        ),
    ];
    for (field_text, line, column, field, hint) in table {
        assert_error(&format!("{FELIX}{field_text}"), *line, *column, field, hint);
    }
}

#[test]
fn a_kubernetes_service_trusted_server_is_kept_with_a_warning_that_it_trusts_nothing_yet() {
    let set = load(&format!(
        "{FELIX}  dnsTrustedServers: [10.96.0.10, k8s-service:kube-dns]\n"
    ));
    assert_eq!(set.warnings.len(), 1, "{:?}", set.warnings);
    let warning = set.warnings[0].to_string();
    assert!(
        warning.starts_with("domains.yaml:5:35: spec.dnsTrustedServers[1]: `k8s-service:kube-system/kube-dns` names a Kubernetes Service"),
        "{warning}"
    );
    assert!(warning.contains("it trusts no server"), "{warning}");
}

#[test]
fn a_nodes_dns_configuration_takes_its_own_fields_then_defaults_then_sluices() {
    let set = load(&format!(
        "{FELIX}  dnsTrustedServers: [10.96.0.10]\n  dnsExtraTTL: 10s\n  dnsCacheEpoch: 1\n---\napiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {{name: node.node-1}}\nspec:\n  dnsExtraTTL: 2s\n  dnsCacheFile: /var/lib/sluice/node-1.json\n"
    ));
    let node_1 = dns_configuration(&set.felix_configurations, "node-1");
    assert_eq!(
        node_1,
        DnsConfiguration {
            trusted_servers: vec![TrustedServer::Address("10.96.0.10:53".parse().unwrap())],
            cache_file: "/var/lib/sluice/node-1.json".into(),
            cache_save_interval: Duration::from_secs(60),
            cache_epoch: 1,
            extra_ttl: Duration::from_secs(2),
        }
    );
    let node_2 = dns_configuration(&set.felix_configurations, "node-2");
    assert_eq!(node_2.extra_ttl, Duration::from_secs(10));
    assert_eq!(
        node_2.cache_file,
        sluice_api::dns_configuration::DEFAULT_CACHE_FILE
    );
    let nothing = dns_configuration(&[], "node-1");
    assert_eq!(
        nothing,
        DnsConfiguration {
            trusted_servers: vec!["k8s-service:kube-system/kube-dns".parse().unwrap()],
            cache_file: "/run/sluice/dns-cache.json".into(),
            cache_save_interval: Duration::from_secs(60),
            cache_epoch: 0,
            extra_ttl: Duration::ZERO,
        }
    );
}
