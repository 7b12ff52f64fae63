//! Validation beyond types: Calico's validator and CRD rules
//! (`libcalico-go/lib/validator/v3/validator.go`, `api/pkg/apis/projectcalico/v3/*.go`
//! kubebuilder markers) and the Kubernetes API server's NetworkPolicy validation.

use crate::calico::*;
use crate::kubernetes::*;
use crate::load::{Diagnostic, Kind, ResourceSet};
use crate::meta::{ObjectMeta, validate_label, validate_label_name, validate_subdomain_name};
use crate::staged::{StagedAction, StagedKubernetesNetworkPolicy, StagedPolicySpec};
use crate::values::{Action, Cidr, Port, Protocol, SelectorText};

/// Errors found in one document, by field path.
#[derive(Debug, Default)]
pub struct Report {
    pub errors: Vec<(String, String)>,
}

impl Report {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push((path.into(), message.into()));
    }
}

pub fn metadata(kind: Kind, metadata: &ObjectMeta, report: &mut Report) {
    if metadata.name.is_empty() {
        report.error("metadata.name", "missing name");
    } else {
        let result = if kind == Kind::Namespace {
            validate_label_name(&metadata.name)
        } else {
            validate_subdomain_name(&metadata.name)
        };
        if let Err(message) = result {
            report.error("metadata.name", message);
        }
    }
    match (&metadata.namespace, kind.is_namespaced()) {
        (Some(namespace), true) => {
            if let Err(message) = validate_label_name(namespace) {
                report.error("metadata.namespace", message);
            }
        }
        (Some(_), false) => report.error(
            "metadata.namespace",
            format!("{kind} is cluster-scoped and cannot have a namespace; remove metadata.namespace"),
        ),
        (None, _) => {}
    }
    for (key, value) in &metadata.labels {
        if let Err(message) = validate_label(key, value) {
            report.error(format!("metadata.labels.{key}"), message);
        }
    }
}

/// The rules of the resource's own kind (metadata is checked separately).
pub fn resource(resource: &crate::Resource, report: &mut Report) {
    use crate::Resource;
    match resource {
        Resource::Pod(pod) => self::pod(pod, report),
        Resource::KubernetesNetworkPolicy(policy) => kubernetes_network_policy(policy, report),
        Resource::NetworkPolicy(policy) => policy_spec(&policy.spec, false, report),
        Resource::GlobalNetworkPolicy(policy) => policy_spec(&policy.spec, true, report),
        Resource::StagedNetworkPolicy(policy) => staged_policy_spec(&policy.spec, false, report),
        Resource::StagedGlobalNetworkPolicy(policy) => staged_policy_spec(&policy.spec, true, report),
        Resource::StagedKubernetesNetworkPolicy(policy) => staged_kubernetes_network_policy(policy, report),
        Resource::Tier(value) => tier(value, report),
        Resource::IpPool(pool) => ip_pool(pool, report),
        Resource::WorkloadEndpoint(endpoint) => workload_endpoint(endpoint, report),
        Resource::Namespace(namespace) => egress_annotations(&namespace.metadata, report),
        Resource::EgressGatewayPolicy(policy) => report.errors.extend(crate::egress::policy_errors(policy)),
        Resource::FelixConfiguration(configuration) => {
            report.errors.extend(crate::egress::felix_errors(&configuration.spec))
        }
        Resource::ServiceAccount(_)
        | Resource::Node(_)
        | Resource::NetworkSet(_)
        | Resource::GlobalNetworkSet(_)
        // Kept whole and not acted on; their fields are Calico's to validate.
        | Resource::Kept(_) => {}
    }
}

/// The host interface becomes an nftables interface-name key, so it must be one the kernel
/// can have: Calico's `^[a-zA-Z0-9_.-]{1,15}$` (`libcalico-go/lib/validator/v3`), without the
/// `*` wildcard Calico's validator also lets through, which names no interface.
pub fn workload_endpoint(endpoint: &crate::calico::WorkloadEndpoint, report: &mut Report) {
    let name = &endpoint.spec.interface_name;
    let valid = name.len() <= 15
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'));
    if !valid {
        report.error(
            "spec.interfaceName",
            format!("`{name}` is not an interface name: at most 15 of a-z, A-Z, 0-9, `_`, `.` and `-`"),
        );
    }
}

/// The `egress.projectcalico.org/*` annotations of a Namespace or Pod.
fn egress_annotations(metadata: &ObjectMeta, report: &mut Report) {
    if let Err(errors) = crate::egress::EgressAnnotations::read(metadata) {
        report.errors.extend(errors);
    }
}

pub fn pod(pod: &Pod, report: &mut Report) {
    egress_annotations(&pod.metadata, report);
    for (index, entry) in pod.status.pod_ips.iter().enumerate() {
        if pod
            .status
            .pod_ip
            .is_some_and(|first| index == 0 && first != entry.ip)
        {
            report.error(
                "status.podIPs[0].ip",
                "podIPs[0] must equal podIP, as the API server requires",
            );
        }
    }
    let containers = pod
        .spec
        .containers
        .iter()
        .map(|container| ("spec.containers", container))
        .enumerate();
    for (index, (field, container)) in containers {
        for (port_index, port) in container.ports.iter().enumerate() {
            let path = format!("{field}[{index}].ports[{port_index}]");
            if let Some(name) = &port.name
                && let Err(message) = crate::values::validate_port_name(name)
            {
                report.error(format!("{path}.name"), message);
            }
            if let Some(protocol) = port.protocol
                && !matches!(protocol, Protocol::Tcp | Protocol::Udp | Protocol::Sctp)
            {
                report.error(
                    format!("{path}.protocol"),
                    "container port protocol must be TCP, UDP or SCTP",
                );
            }
        }
    }
}

pub fn tier(tier: &Tier, report: &mut Report) {
    if let Some(order) = tier.spec.order {
        if !order.is_finite() {
            report.error("spec.order", "order must be a finite number");
        }
        if tier.metadata.name == DEFAULT_TIER && order != DEFAULT_TIER_ORDER {
            report.error(
                "spec.order",
                format!("the default tier's order is fixed at {DEFAULT_TIER_ORDER}"),
            );
        }
    }
    if let Some(action) = tier.spec.default_action
        && !matches!(action, Action::Deny | Action::Pass)
    {
        report.error(
            "spec.defaultAction",
            "a tier's defaultAction must be Deny or Pass",
        );
    }
    // Calico's CRD rule on Tier (api/pkg/apis/projectcalico/v3/tier.go).
    if tier.metadata.name == DEFAULT_TIER && tier.spec.default_action == Some(Action::Pass) {
        report.error(
            "spec.defaultAction",
            "the default tier's defaultAction must be Deny",
        );
    }
    // Tier names appear inside other names, so Calico keeps them to one DNS label
    // (validateTier in libcalico-go/lib/validator/v3/validator.go).
    if tier.metadata.name.contains('.') || tier.metadata.name.len() > 63 {
        report.error(
            "metadata.name",
            "a tier name is at most 63 lowercase letters, digits and '-', with no dots",
        );
    }
}

/// Whether a staged action is one Sluice stages with (Set or Delete).
fn staged_action(action: StagedAction, report: &mut Report) -> bool {
    match action {
        StagedAction::Set | StagedAction::Delete => true,
        StagedAction::Learn | StagedAction::Ignore => {
            report.error(
                "spec.stagedAction",
                format!(
                    "`{action}` is a state of Calico Enterprise's policy recommendations, which Sluice does not build; stage with Set (propose this policy) or Delete (propose removing the policy of this name)"
                ),
            );
            false
        }
    }
}

/// A staged Calico policy: with `Set`, the rules of the policy it stages; with `Delete`, no
/// field but `tier` (Calico's `validateStagedNetworkPolicy` and `…GlobalNetworkPolicy`).
pub fn staged_policy_spec(spec: &StagedPolicySpec, global: bool, report: &mut Report) {
    match spec.action() {
        StagedAction::Delete => {
            for field in spec.fields_besides_tier() {
                report.error(
                    format!("spec.{field}#key"),
                    format!(
                        "a staged Delete names the policy to remove and carries no other field but `tier`, as in Calico; remove `{field}`, or stage with Set"
                    ),
                );
            }
        }
        action => {
            if staged_action(action, report) {
                policy_spec(&spec.policy_spec(), global, report);
            }
        }
    }
}

/// A staged Kubernetes policy: with `Set`, the Kubernetes NetworkPolicy it stages; with
/// `Delete`, no field at all (Calico's `validateStagedKubernetesNetworkPolicy`).
pub fn staged_kubernetes_network_policy(policy: &StagedKubernetesNetworkPolicy, report: &mut Report) {
    match policy.spec.action() {
        StagedAction::Delete => {
            for field in policy.spec.fields_besides_action() {
                report.error(
                    format!("spec.{field}#key"),
                    format!(
                        "a staged Delete names the policy to remove and carries no other field, as in Calico; remove `{field}`, or stage with Set"
                    ),
                );
            }
        }
        action => {
            if staged_action(action, report) {
                kubernetes_network_policy(&policy.to_enforced(), report);
            }
        }
    }
}

pub fn policy_spec(spec: &PolicySpec, global: bool, report: &mut Report) {
    if let Some(order) = spec.order
        && !order.is_finite()
    {
        report.error("spec.order", "order must be a finite number");
    }
    // An empty tier means the default tier, as in Calico.
    if let Some(tier) = spec.tier.as_deref().filter(|tier| !tier.is_empty())
        && let Err(message) = validate_subdomain_name(tier)
    {
        report.error("spec.tier", message);
    }
    selector_field(&spec.selector, "spec.selector", report);
    selector_field(
        &spec.service_account_selector,
        "spec.serviceAccountSelector",
        report,
    );
    if let Some(types) = &spec.types
        && types.len() > 2
    {
        report.error("spec.types", "at most two types (Ingress, Egress)");
    }
    // Calico's validator rejects a type listed twice.
    if let Some(types) = &spec.types {
        for (index, policy_type) in types.iter().enumerate() {
            if types[..index].contains(policy_type) {
                report.error(
                    format!("spec.types[{index}]"),
                    format!("`{policy_type}` is listed twice; list Ingress and Egress at most once each"),
                );
            }
        }
    }
    if global {
        selector_field(&spec.namespace_selector, "spec.namespaceSelector", report);
    } else {
        for (set, field) in [
            (spec.namespace_selector.is_set(), "spec.namespaceSelector"),
            (spec.do_not_track, "spec.doNotTrack"),
            (spec.pre_dnat, "spec.preDNAT"),
            (spec.apply_on_forward, "spec.applyOnForward"),
        ] {
            if set {
                report.error(field, "only a GlobalNetworkPolicy has this field");
            }
        }
    }
    for (set, field) in [
        (spec.do_not_track, "spec.doNotTrack"),
        (spec.pre_dnat, "spec.preDNAT"),
        (spec.apply_on_forward, "spec.applyOnForward"),
    ] {
        if set && global {
            report.error(
                field,
                "host endpoint policy (doNotTrack, preDNAT, applyOnForward) is not supported by Sluice",
            );
        }
    }
    for (index, hint) in spec.performance_hints.iter().enumerate() {
        if hint != "AssumeNeededOnEveryNode" {
            report.error(
                format!("spec.performanceHints[{index}]"),
                "the only performance hint is AssumeNeededOnEveryNode",
            );
        }
    }
    for (rules, direction) in [(&spec.ingress, "ingress"), (&spec.egress, "egress")] {
        if rules.len() > MAX_RULES {
            report.error(
                format!("spec.{direction}"),
                format!("{} rules; Calico allows at most {MAX_RULES}", rules.len()),
            );
        }
        for (index, rule) in rules.iter().enumerate() {
            let path = format!("spec.{direction}[{index}]");
            self::rule(rule, &path, report);
            domains(rule, direction == "egress", &path, report);
            l7(rule, direction == "egress", &path, report);
        }
    }
}

/// HTTP matches (Calico's, plus Sluice's `hosts`) and TLS matches (Sluice's). Calico's limits:
/// `api/pkg/apis/projectcalico/v3/policy_common.go` (Allow only, protocol TCP or unset, at
/// most 20 methods and paths) and `validateHTTPRule` in libcalico-go's validator (no duplicate
/// methods; one of `exact` or `prefix`, starting with `/`, without `?`, `#` or space).
fn l7(rule: &Rule, egress: bool, path: &str, report: &mut Report) {
    if let Some(http) = &rule.http {
        http_match(rule, http, path, report);
    }
    if let Some(tls) = &rule.tls {
        tls_match(rule, tls, egress, path, report);
    }
}

fn http_match(rule: &Rule, http: &HttpMatch, path: &str, report: &mut Report) {
    if rule.action != Action::Allow {
        report.error(format!("{path}.http"), "HTTP match is only valid on Allow rules");
    }
    if rule.protocol.is_some_and(|protocol| protocol != Protocol::Tcp) {
        report.error(
            format!("{path}.http"),
            "rules with HTTP match must have protocol TCP or unset",
        );
    }
    for (count, field) in [
        (http.methods.len(), "methods"),
        (http.paths.len(), "paths"),
        (http.hosts.len(), "hosts"),
    ] {
        if count > MAX_HTTP_ITEMS {
            report.error(
                format!("{path}.http.{field}"),
                format!("{count} {field}; at most {MAX_HTTP_ITEMS}"),
            );
        }
    }
    for (index, method) in http.methods.iter().enumerate() {
        let field = format!("{path}.http.methods[{index}]");
        if method.is_empty() || !method.chars().all(|character| character.is_ascii_alphabetic()) {
            report.error(&field, format!("`{method}` is not an HTTP method"));
        } else if http.methods[..index].contains(method) {
            report.error(
                &field,
                format!("`{method}` is listed twice; Calico refuses duplicate methods"),
            );
        }
    }
    for (index, entry) in http.paths.iter().enumerate() {
        let field = format!("{path}.http.paths[{index}]");
        match (&entry.exact, &entry.prefix) {
            (Some(value), None) | (None, Some(value)) => {
                if !value.starts_with('/') || value.len() > 1024 {
                    report.error(
                        field,
                        "an HTTP path starts with `/` and has at most 1024 characters",
                    );
                } else if let Some(bad) = value
                    .chars()
                    .find(|character| matches!(character, '?' | '#' | ' '))
                {
                    report.error(
                        field,
                        format!("`{value}` contains `{bad}`; an HTTP path match has no `?`, `#` or space (the query and fragment are not matched)"),
                    );
                }
            }
            _ => report.error(field, "give exactly one of `exact` or `prefix`"),
        }
    }
    server_name_patterns(&http.hosts, &format!("{path}.http.hosts"), report);
}

/// Host and server name patterns: an exact name or `*.` and a name (one or more labels).
fn server_name_patterns(patterns: &[crate::domain::DomainPattern], field: &str, report: &mut Report) {
    for (index, pattern) in patterns.iter().enumerate() {
        if pattern.is_wildcard() && !pattern.as_str().starts_with("*.") {
            report.error(
                format!("{field}[{index}]"),
                format!("`{pattern}` has its `*` inside; here a wildcard is only a leading `*.`, as in `*.example.com`"),
            );
        }
    }
}

fn tls_match(rule: &Rule, tls: &TlsMatch, egress: bool, path: &str, report: &mut Report) {
    let field = format!("{path}.tls");
    if !egress {
        report.error(
            &field,
            "a TLS match is only valid in egress rules (it names the server a pod connects to)",
        );
    }
    if rule.action != Action::Allow {
        report.error(&field, "a TLS match is only valid on Allow rules");
    }
    if rule.protocol != Some(Protocol::Tcp) {
        report.error(&field, "a rule with a TLS match must have protocol TCP");
    }
    if rule.http.is_some() {
        report.error(
            &field,
            "a rule has `http` or `tls`, not both: a connection is one or the other; write two rules",
        );
    }
    if tls.server_names.is_empty() && !tls.match_domains {
        report.error(&field, "a TLS match needs `serverNames` or `matchDomains: true`");
    }
    if tls.server_names.len() > MAX_HTTP_ITEMS {
        report.error(
            format!("{field}.serverNames"),
            format!(
                "{} server names; at most {MAX_HTTP_ITEMS}",
                tls.server_names.len()
            ),
        );
    }
    server_name_patterns(&tls.server_names, &format!("{field}.serverNames"), report);
    if tls.match_domains && rule.destination.domains.is_empty() {
        report.error(
            format!("{field}.matchDomains"),
            "`matchDomains: true` checks the server name against the rule's `destination.domains`, and this rule has none",
        );
    }
}

/// What a policy relies on that Calico would refuse: `http` in egress rules (Calico's
/// validator: "not allowed in egress rule(s)"), `http.hosts` and `tls` (fields Calico does not
/// have). Sluice enforces them; the warning says the manifest is not portable.
pub fn l7_warnings(spec: &PolicySpec) -> Vec<(String, String)> {
    let mut warnings = Vec::new();
    for (rules, direction) in [(&spec.ingress, "ingress"), (&spec.egress, "egress")] {
        for (index, rule) in rules.iter().enumerate() {
            let path = format!("spec.{direction}[{index}]");
            if let Some(http) = &rule.http {
                if direction == "egress" {
                    warnings.push((
                        format!("{path}.http"),
                        "an HTTP match in an egress rule is a Sluice extension: Calico would reject it (\"not allowed in egress rules\"); Sluice enforces it".to_string(),
                    ));
                }
                if !http.hosts.is_empty() {
                    warnings.push((
                        format!("{path}.http.hosts"),
                        "`hosts` is a Sluice extension: Calico would reject the field; Sluice enforces it"
                            .to_string(),
                    ));
                }
            }
            if rule.tls.is_some() {
                warnings.push((
                    format!("{path}.tls"),
                    "`tls` is a Sluice extension: Calico would reject the field; Sluice enforces it"
                        .to_string(),
                ));
            }
        }
    }
    warnings
}

/// Where Calico Enterprise lets `domains` go (its EntityRule reference: "the parent Rule's
/// `action` must be `Allow`, and `nets` and `selector` must both be left empty", egress only).
fn domains(rule: &Rule, egress: bool, path: &str, report: &mut Report) {
    const WHERE: &str = "domains may appear only in the destination of an egress Allow rule whose destination has no `nets` and no `selector`";
    if !rule.source.domains.is_empty() {
        report.error(
            format!("{path}.source.domains"),
            format!("a rule's source cannot match domain names; {WHERE}"),
        );
    }
    if rule.destination.domains.is_empty() {
        return;
    }
    let field = format!("{path}.destination.domains");
    if !egress {
        report.error(
            &field,
            format!("an ingress rule cannot match domain names; {WHERE}"),
        );
    } else if rule.action != Action::Allow {
        report.error(
            &field,
            format!("a {} rule cannot match domain names; {WHERE}", rule.action),
        );
    }
    for (set, name) in [
        (!rule.destination.nets.is_empty(), "nets"),
        (rule.destination.selector.is_set(), "selector"),
    ] {
        if set {
            report.error(
                &field,
                format!("this destination also has `{name}`; {WHERE} (to allow both, write two rules)"),
            );
        }
    }
}

fn selector_field(selector: &SelectorText, path: &str, report: &mut Report) {
    if let Some(selector) = &selector.0 {
        if selector.uses_global() {
            report.error(path, "global() can only be used in a rule's namespaceSelector");
        }
        if selector.canonical().len() > MAX_SELECTOR_LENGTH {
            report.error(
                path,
                format!("selectors are limited to {MAX_SELECTOR_LENGTH} characters"),
            );
        }
    }
}

fn rule(rule: &Rule, path: &str, report: &mut Report) {
    let endpoints = [("source", &rule.source), ("destination", &rule.destination)];
    for (side, entity) in endpoints {
        for (ports, field) in [(&entity.ports, "ports"), (&entity.not_ports, "notPorts")] {
            let field_path = format!("{path}.{side}.{field}");
            if ports.len() > MAX_PORTS {
                report.error(
                    &field_path,
                    format!("{} ports; Calico allows at most {MAX_PORTS}", ports.len()),
                );
            }
            match rule.protocol {
                None if ports.iter().any(|port| !port.is_named()) => report.error(
                    &field_path,
                    "port numbers and ranges need `protocol` set to TCP, UDP, SCTP or UDPLite",
                ),
                Some(protocol) if !protocol.supports_ports() && !ports.is_empty() => report.error(
                    &field_path,
                    format!("protocol {protocol} has no ports; ports need TCP, UDP, SCTP or UDPLite"),
                ),
                _ => {}
            }
        }
        for (nets, field) in [(&entity.nets, "nets"), (&entity.not_nets, "notNets")] {
            if nets.len() > MAX_NETS {
                report.error(
                    format!("{path}.{side}.{field}"),
                    format!("{} nets; Calico allows at most {MAX_NETS}", nets.len()),
                );
            }
            if field == "notNets" {
                for (index, net) in nets.iter().enumerate() {
                    if net.0.prefix_len() == 0 {
                        report.error(
                            format!("{path}.{side}.notNets[{index}]"),
                            "a catch-all CIDR in notNets matches no traffic; remove the rule or the CIDR",
                        );
                    }
                }
            }
        }
        selector_field(&entity.selector, &format!("{path}.{side}.selector"), report);
        selector_field(
            &entity.not_selector,
            &format!("{path}.{side}.notSelector"),
            report,
        );
        if let Some(accounts) = &entity.service_accounts {
            selector_field(
                &accounts.selector,
                &format!("{path}.{side}.serviceAccounts.selector"),
                report,
            );
            for (index, name) in accounts.names.iter().enumerate() {
                if let Err(message) = validate_subdomain_name(name) {
                    report.error(format!("{path}.{side}.serviceAccounts.names[{index}]"), message);
                }
            }
        }
        if entity.services.is_some() {
            report.error(
                format!("{path}.{side}.services"),
                "matching Kubernetes Services is not supported by Sluice yet",
            );
        }
    }
    // Calico rejects a rule whose nets mix IPv4 and IPv6, or disagree with ipVersion.
    let all_nets: Vec<(&str, &str, usize, &Cidr)> = endpoints
        .iter()
        .flat_map(|(side, entity)| {
            let nets = entity
                .nets
                .iter()
                .enumerate()
                .map(move |(index, net)| (*side, "nets", index, net));
            let not_nets = entity
                .not_nets
                .iter()
                .enumerate()
                .map(move |(index, net)| (*side, "notNets", index, net));
            nets.chain(not_nets)
        })
        .collect();
    let has_v4 = all_nets.iter().any(|(_, _, _, net)| net.0.addr().is_ipv4());
    let has_v6 = all_nets.iter().any(|(_, _, _, net)| net.0.addr().is_ipv6());
    if has_v4 && has_v6 {
        // Point at the first CIDR whose family differs from the rule's first CIDR.
        let first_is_v4 = all_nets[0].3.0.addr().is_ipv4();
        if let Some((side, field, index, net)) = all_nets
            .iter()
            .find(|(_, _, _, net)| net.0.addr().is_ipv4() != first_is_v4)
        {
            let (first_side, first_field, first_index, first_net) = all_nets[0];
            report.error(
                format!("{path}.{side}.{field}[{index}]"),
                format!(
                    "rule contains both IPv4 and IPv6 CIDRs ({net} here, {first_net} at {first_side}.{first_field}[{first_index}]); split it into one rule per IP version"
                ),
            );
        }
    }
    match rule.ip_version {
        Some(4) if has_v6 => report.error(
            format!("{path}.ipVersion"),
            "rule IP version doesn't match CIDR version",
        ),
        Some(6) if has_v4 => report.error(
            format!("{path}.ipVersion"),
            "rule IP version doesn't match CIDR version",
        ),
        Some(4 | 6) | None => {}
        Some(_) => report.error(format!("{path}.ipVersion"), "ipVersion must be 4 or 6"),
    }
    for (protocol, icmp, protocol_field, icmp_field) in [
        (rule.protocol, rule.icmp, "protocol", "icmp"),
        (rule.not_protocol, rule.not_icmp, "notProtocol", "notICMP"),
    ] {
        if let Some(protocol) = protocol {
            if protocol == Protocol::Icmp && rule.ip_version == Some(6) {
                report.error(
                    format!("{path}.{protocol_field}"),
                    "protocol ICMP requires ipVersion 4",
                );
            }
            if protocol == Protocol::IcmpV6 && rule.ip_version == Some(4) {
                report.error(
                    format!("{path}.{protocol_field}"),
                    "protocol ICMPv6 requires ipVersion 6",
                );
            }
        }
        if let Some(fields) = icmp {
            if !protocol.is_some_and(Protocol::is_icmp) && icmp_field == "icmp" {
                report.error(
                    format!("{path}.{icmp_field}"),
                    "ICMP fields require protocol ICMP or ICMPv6",
                );
            }
            if fields.code.is_some() && fields.icmp_type.is_none() {
                report.error(
                    format!("{path}.{icmp_field}.code"),
                    "ICMP code specified without an ICMP type",
                );
            }
            if fields.icmp_type == Some(255) {
                report.error(format!("{path}.{icmp_field}.type"), "ICMP type must be 0 to 254");
            }
        }
    }
}

pub fn kubernetes_network_policy(policy: &KubernetesNetworkPolicy, report: &mut Report) {
    let spec = &policy.spec;
    label_selector(&spec.pod_selector, "spec.podSelector", report);
    if let Some(types) = &spec.policy_types
        && types.len() > 2
    {
        report.error("spec.policyTypes", "at most two policy types (Ingress, Egress)");
    }
    for (index, rule) in spec.ingress.iter().enumerate() {
        let path = format!("spec.ingress[{index}]");
        peers(&rule.from, &format!("{path}.from"), report);
        ports(&rule.ports, &format!("{path}.ports"), report);
    }
    for (index, rule) in spec.egress.iter().enumerate() {
        let path = format!("spec.egress[{index}]");
        peers(&rule.to, &format!("{path}.to"), report);
        ports(&rule.ports, &format!("{path}.ports"), report);
    }
}

fn label_selector(selector: &LabelSelector, path: &str, report: &mut Report) {
    if let Err(message) = selector.to_selector() {
        report.error(path, message);
    }
}

fn peers(peers: &[NetworkPolicyPeer], path: &str, report: &mut Report) {
    for (index, peer) in peers.iter().enumerate() {
        let path = format!("{path}[{index}]");
        let selectors = peer.pod_selector.is_some() || peer.namespace_selector.is_some();
        match (&peer.ip_block, selectors) {
            (Some(_), true) => report.error(
                &path,
                "ipBlock cannot be combined with podSelector or namespaceSelector in one peer",
            ),
            (None, false) => report.error(&path, "a peer needs podSelector, namespaceSelector or ipBlock"),
            _ => {}
        }
        if let Some(selector) = &peer.pod_selector {
            label_selector(selector, &format!("{path}.podSelector"), report);
        }
        if let Some(selector) = &peer.namespace_selector {
            label_selector(selector, &format!("{path}.namespaceSelector"), report);
        }
        if let Some(block) = &peer.ip_block {
            for (except_index, except) in block.except.iter().enumerate() {
                let inside =
                    block.cidr.0.contains(&except.0) && except.0.prefix_len() > block.cidr.0.prefix_len();
                if !inside {
                    report.error(
                        format!("{path}.ipBlock.except[{except_index}]"),
                        format!("{except} must be strictly inside cidr {}", block.cidr),
                    );
                }
            }
        }
    }
}

fn ports(ports: &[NetworkPolicyPort], path: &str, report: &mut Report) {
    for (index, port) in ports.iter().enumerate() {
        let path = format!("{path}[{index}]");
        if let Some(protocol) = port.protocol
            && !matches!(protocol, Protocol::Tcp | Protocol::Udp | Protocol::Sctp)
        {
            report.error(format!("{path}.protocol"), "protocol must be TCP, UDP or SCTP");
        }
        match (&port.port, port.end_port) {
            (Some(Port::Range { low, high }), _) if low != high => report.error(
                format!("{path}.port"),
                "a Kubernetes port is a number or a name; use endPort for ranges",
            ),
            (Some(Port::Range { low, .. }), Some(end)) if end < *low => report.error(
                format!("{path}.endPort"),
                "endPort must be greater than or equal to port",
            ),
            (Some(Port::Named(_)), Some(_)) => report.error(
                format!("{path}.endPort"),
                "endPort cannot be used with a named port",
            ),
            (None, Some(_)) => report.error(format!("{path}.endPort"), "endPort needs port"),
            _ => {}
        }
        if let Some(Port::Range { low: 0, .. }) = port.port {
            report.error(format!("{path}.port"), "port must be 1 to 65535");
        }
    }
}

pub fn ip_pool(pool: &IpPool, report: &mut Report) {
    let spec = &pool.spec;
    if let Some(text) = pool.metadata.annotations.get(NAT_OUTGOING_ADDRESS_ANNOTATION) {
        let field = format!("metadata.annotations.{NAT_OUTGOING_ADDRESS_ANNOTATION}");
        match text.parse::<std::net::IpAddr>() {
            Err(_) => report.error(&field, format!("`{text}` is not an IP address")),
            Ok(address) if address.is_ipv4() != spec.cidr.0.addr().is_ipv4() => {
                report.error(&field, format!("{address} is not of the pool's address family"))
            }
            Ok(_) if !spec.nat_outgoing => {
                report.error(&field, "a NAT outgoing address needs `spec.natOutgoing: true`")
            }
            Ok(_) => {}
        }
    }
    let block_size = spec.effective_block_size();
    let (minimum, maximum) = match spec.cidr.0 {
        ipnet::IpNet::V4(_) => (20, 32),
        ipnet::IpNet::V6(_) => (116, 128),
    };
    if !(minimum..=maximum).contains(&block_size) {
        report.error(
            "spec.blockSize",
            format!("blockSize {block_size} is out of range; expected {minimum} to {maximum} for this address family"),
        );
    }
    // Calico's `validateIPPoolSpec`: clear of link-local (strict masking is checked on the text, in
    // `load`, since the parsed CIDR is masked), at least one block
    // (the last only while the pool is enabled).
    let link_local: ipnet::IpNet = match spec.cidr.0 {
        ipnet::IpNet::V4(_) => "169.254.0.0/16".parse().expect("a network"),
        ipnet::IpNet::V6(_) => "fe80::/10".parse().expect("a network"),
    };
    if link_local.contains(&spec.cidr.0.network()) || spec.cidr.0.contains(&link_local.network()) {
        report.error(
            "spec.cidr",
            format!(
                "IP pool range overlaps with the link-local range {link_local}, which pods' gateways use"
            ),
        );
    }
    if !spec.disabled && spec.cidr.0.prefix_len() > block_size {
        report.error(
            "spec.blockSize",
            format!("the pool {} is smaller than one /{block_size} block", spec.cidr),
        );
    }
    if spec.cidr.0.addr().is_ipv6()
        && spec
            .ipip_mode
            .is_some_and(|mode| mode != EncapsulationMode::Never)
    {
        report.error("spec.ipipMode", "IPIP is IPv4 only");
    }
    if spec
        .ipip_mode
        .is_some_and(|mode| mode != EncapsulationMode::Never)
        && spec
            .vxlan_mode
            .is_some_and(|mode| mode != EncapsulationMode::Never)
    {
        report.error(
            "spec.vxlanMode",
            "IPIP and VXLAN cannot both be enabled on one pool",
        );
    }
    if spec.allowed_uses.contains(&AllowedUse::LoadBalancer) && spec.allowed_uses.len() > 1 {
        report.error(
            "spec.allowedUses",
            "LoadBalancer cannot be combined with other uses",
        );
    }
    for (selector, field) in [
        (&spec.node_selector, "spec.nodeSelector"),
        (&spec.namespace_selector, "spec.namespaceSelector"),
    ] {
        selector_field(selector, field, report);
    }
}

/// Finds where a field of an object was read from, when the loader knows.
pub type Locate<'a> = dyn Fn(Kind, &ObjectMeta, &str) -> Option<crate::document::Position> + 'a;

/// Checks that span objects: pools that overlap and pods that share an address. Each error
/// points at the field that clashes in the later object.
pub fn cross_object(set: &ResourceSet, locate: &Locate<'_>) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    for (index, pool) in set.ip_pools.iter().enumerate() {
        for earlier in &set.ip_pools[..index] {
            if pool.spec.cidr.0.contains(&earlier.spec.cidr.0.network())
                || earlier.spec.cidr.0.contains(&pool.spec.cidr.0.network())
            {
                diagnostics.push(at(
                    locate,
                    Kind::IpPool,
                    &pool.metadata,
                    "spec.cidr",
                    format!(
                        "IPPool {} ({}) overlaps IPPool {} ({}) defined at {}; IPPool CIDRs must not overlap",
                        pool.metadata.name,
                        pool.spec.cidr,
                        earlier.metadata.name,
                        earlier.spec.cidr,
                        earlier.metadata.origin
                    ),
                ));
            }
        }
    }
    let mut owners = std::collections::BTreeMap::new();
    for pod in set.pods.iter().filter(|pod| pod.is_workload()) {
        let name = format!("{}/{}", pod.metadata.namespace(), pod.metadata.name);
        let mut own_addresses = std::collections::BTreeSet::new();
        for (index, address) in pod.addresses().into_iter().enumerate() {
            // A pod listing one address twice does not clash with itself.
            if !own_addresses.insert(address) {
                continue;
            }
            let field = if pod.status.pod_ips.is_empty() {
                "status.podIP".to_string()
            } else {
                format!("status.podIPs[{index}].ip")
            };
            if let Some((other, origin)) = owners.insert(address, (name.clone(), pod.metadata.origin.clone()))
            {
                diagnostics.push(at(
                    locate,
                    Kind::Pod,
                    &pod.metadata,
                    &field,
                    format!(
                        "pod {name} has address {address}, which pod {other} (at {origin}) has too; pod addresses must be unique"
                    ),
                ));
            }
        }
    }
    diagnostics
}

fn at(locate: &Locate<'_>, kind: Kind, metadata: &ObjectMeta, field: &str, message: String) -> Diagnostic {
    let (line, column) = match locate(kind, metadata, field) {
        Some(position) => (position.line, position.column),
        None => (metadata.origin.line, metadata.origin.column),
    };
    Diagnostic {
        file: metadata.origin.file.clone(),
        line,
        column,
        field: field.to_string(),
        message,
    }
}
