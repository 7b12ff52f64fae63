//! The lab file (`LAB.yaml`): nodes, outside hosts (with their DNS names), the lab's DNS server,
//! manifests and pods. Read with the same YAML reader as manifests, so errors name file, line,
//! column and field.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_api::domain::DomainPattern;

/// Longest lab name: namespace names are `sl-<name>-<role><index>` and stay short.
pub const MAX_NAME_LENGTH: usize = 12;
/// Outside hosts get point-to-point links from 100.64.1.0/24, two addresses each.
pub const MAX_OUTSIDE_HOSTS: usize = 100;
/// Node underlay addresses are 100.64.0.10 upwards.
pub const MAX_NODES: usize = 200;
pub const MAX_PODS: usize = 500;
/// The TTL the lab's DNS server gives a host's names when the host sets none.
pub const DEFAULT_DNS_TTL: u32 = 30;
/// The largest TTL DNS allows (RFC 2181 §8).
pub const MAX_DNS_TTL: u32 = i32::MAX as u32;
/// Where the lab's DNS server listens unless `dns.address` says otherwise: in 100.64.1.0/24, the
/// range the lab takes outside hosts' links from, past the links of the most hosts a lab holds
/// (and the DNS host's own), so it never meets a pool or an outside host's address.
pub const DEFAULT_DNS_ADDRESS: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 253);
/// The highest link address in use: two per outside host, two more for the DNS server's host.
const LAST_LINK_ADDRESS: u8 = (MAX_OUTSIDE_HOSTS * 2 + 1) as u8 + 2;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabFile {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub name: String,
    pub nodes: Vec<NodeSpec>,
    #[serde(default)]
    pub outside: Vec<OutsideHostSpec>,
    /// Manifest files or directories, relative to the lab file.
    #[serde(default)]
    pub manifests: Vec<PathBuf>,
    #[serde(default)]
    pub pods: Vec<PodSpec>,
    /// The lab's DNS server (always run; this only moves it).
    #[serde(default)]
    pub dns: Option<DnsSpec>,
}

/// `dns:` of the lab file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsSpec {
    /// Default [`DEFAULT_DNS_ADDRESS`]. An outside host's address puts the server on that host.
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A host beyond the cluster. Its services are optional: a host with none only sends (the
/// lab starts no server for it and probes nothing to it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutsideHostSpec {
    pub name: String,
    pub address: Ipv4Addr,
    #[serde(default)]
    pub tcp: Vec<u16>,
    #[serde(default)]
    pub udp: Vec<u16>,
    #[serde(default)]
    pub http: Vec<u16>,
    /// TLS servers with a self-signed certificate that answer the server name asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub https: Vec<u16>,
    /// DNS names the lab's DNS server answers with this host's address (lowercased on reading).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Aliases, answered as a CNAME to the first of `names`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cname: Vec<String>,
    /// Seconds the answers for `names` and `cname` may be cached (default [`DEFAULT_DNS_TTL`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
}

impl OutsideHostSpec {
    /// The TTL its names are answered with.
    pub fn dns_ttl(&self) -> u32 {
        self.ttl.unwrap_or(DEFAULT_DNS_TTL)
    }

    /// Its names, then its aliases: every name a probe reaches it by.
    pub fn all_names(&self) -> impl Iterator<Item = &String> {
        self.names.iter().chain(&self.cname)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub node: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub service_account: Option<String>,
    /// Container ports: the pod's servers listen on them and named ports come from them.
    #[serde(default)]
    pub ports: Vec<PodPort>,
    /// Makes the pod an egress gateway: the lab runs `sluice gateway` in it.
    #[serde(default)]
    pub egress_gateway: Option<EgressGatewaySpec>,
}

/// `egressGateway:` of a pod (`{}` for the defaults): the options of the `sluice gateway` the lab
/// runs in it, named after Calico's egress gateway settings (its `ICMP_PROBE_IPS`,
/// `HTTP_PROBE_URLS`, probe interval and timeout). The pod gets the named port `health`, TCP
/// [`GATEWAY_HEALTH_PORT`], where agents probe its readiness.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressGatewaySpec {
    /// Addresses the gateway pings; it is ready only while one of them answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icmp_probes: Vec<IpAddr>,
    /// `http://` URLs the gateway GETs; it is ready only while one of them answers 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_probes: Vec<String>,
    /// No source NAT in the gateway: its pool has natOutgoing and the node NATs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_snat: bool,
    /// Seconds between two runs of each probe (the gateway's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_interval_seconds: Option<f64>,
    /// Not ready once every probe of a kind has failed for this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_timeout_seconds: Option<f64>,
}

/// The container port a gateway pod's `sluice gateway` serves `/readiness` on, named `health`.
pub const GATEWAY_HEALTH_PORT: u16 = 8080;
/// The name agents look the health port up by.
pub const GATEWAY_HEALTH_PORT_NAME: &str = "health";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: PortProtocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PortProtocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
}

impl LabFile {
    /// Reads and checks a lab file; manifest paths come back absolute.
    pub fn load(path: &Path) -> Result<LabFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let mut lab = LabFile::parse(&path.display().to_string(), &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for manifest in &mut lab.manifests {
            if manifest.is_relative() {
                *manifest = base.join(&*manifest);
            }
        }
        Ok(lab)
    }

    pub fn parse(file: &str, text: &str) -> Result<LabFile, String> {
        let documents = sluice_api::document::parse_documents(text).map_err(|error| {
            format!(
                "{file}:{}:{}: {}",
                error.position.line, error.position.column, error.message
            )
        })?;
        let [document] = documents.as_slice() else {
            return Err(format!(
                "{file}: expected one YAML document, found {}",
                documents.len()
            ));
        };
        let mut lab: LabFile = serde_path_to_error::deserialize(document.value.clone()).map_err(|error| {
            let field = error.path().to_string();
            let position = document.position_of(&field);
            format!(
                "{file}:{}:{}: {field}: {}",
                position.line,
                position.column,
                error.inner()
            )
        })?;
        lab.check().map_err(|problem| match &problem.field {
            Some(field) => {
                let position = document.position_of(field);
                format!(
                    "{file}:{}:{}: {field}: {}",
                    position.line, position.column, problem.message
                )
            }
            None => format!("{file}: {}", problem.message),
        })?;
        lab.lowercase_names();
        Ok(lab)
    }

    /// The address of the lab's DNS server.
    pub fn dns_address(&self) -> Ipv4Addr {
        self.dns
            .as_ref()
            .and_then(|dns| dns.address)
            .unwrap_or(DEFAULT_DNS_ADDRESS)
    }

    /// DNS names are case-insensitive; the lab keeps them lowercased, as policy does.
    fn lowercase_names(&mut self) {
        for host in &mut self.outside {
            for name in host.names.iter_mut().chain(&mut host.cname) {
                *name = name.to_ascii_lowercase();
            }
        }
    }

    fn check(&self) -> Result<(), Problem> {
        if let Some(kind) = &self.kind
            && kind != "Lab"
        {
            return Err(Problem::at(
                "kind",
                format!("kind is `{kind}`; a lab file has `kind: Lab`"),
            ));
        }
        check_name(&self.name).map_err(|message| Problem::at("name", message))?;
        if self.nodes.is_empty() || self.nodes.len() > MAX_NODES {
            return Err(Problem::at(
                "nodes",
                format!("a lab needs 1 to {MAX_NODES} nodes"),
            ));
        }
        if self.outside.len() > MAX_OUTSIDE_HOSTS || self.pods.len() > MAX_PODS {
            return Err(Problem::anywhere(format!(
                "a lab holds at most {MAX_OUTSIDE_HOSTS} outside hosts and {MAX_PODS} pods"
            )));
        }
        let mut node_names = BTreeSet::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let field = format!("nodes[{index}].name");
            sluice_api::meta::validate_subdomain_name(&node.name)
                .map_err(|message| Problem::at(&field, format!("node `{}`: {message}", node.name)))?;
            if !node_names.insert(node.name.as_str()) {
                return Err(Problem::at(
                    &field,
                    format!("node `{}` is listed twice", node.name),
                ));
            }
        }
        let mut hosts = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for (index, host) in self.outside.iter().enumerate() {
            if !hosts.insert(host.name.as_str()) || !addresses.insert(host.address) {
                return Err(Problem::at(
                    &format!("outside[{index}]"),
                    format!("outside host `{}` repeats a name or an address", host.name),
                ));
            }
            if host.address.is_loopback() || host.address.is_unspecified() || in_lab_underlay(host.address) {
                return Err(Problem::at(
                    &format!("outside[{index}].address"),
                    format!(
                        "outside host `{}`: {} is loopback, unspecified or inside the lab's underlay 100.64.0.0/23",
                        host.name, host.address
                    ),
                ));
            }
            if host
                .tcp
                .iter()
                .chain(&host.udp)
                .chain(&host.http)
                .chain(&host.https)
                .any(|port| *port == 0)
            {
                return Err(Problem::at(
                    &format!("outside[{index}]"),
                    format!("outside host `{}`: port 0", host.name),
                ));
            }
        }
        self.check_dns_names()?;
        self.check_dns_address()?;
        let mut pods = BTreeSet::new();
        for (index, pod) in self.pods.iter().enumerate() {
            let shown = format!("{}/{}", pod.namespace, pod.name);
            if !node_names.contains(pod.node.as_str()) {
                return Err(Problem::at(
                    &format!("pods[{index}].node"),
                    format!("pod {shown} names node `{}`, which is not in `nodes`", pod.node),
                ));
            }
            if !pods.insert((pod.namespace.as_str(), pod.name.as_str())) {
                return Err(Problem::at(
                    &format!("pods[{index}]"),
                    format!("pod {shown} is listed twice"),
                ));
            }
            if pod.ports.iter().any(|port| port.container_port == 0) {
                return Err(Problem::at(
                    &format!("pods[{index}].ports"),
                    format!("pod {shown}: port 0"),
                ));
            }
            if let Some(gateway) = &pod.egress_gateway {
                crate::gateway::check(pod, gateway)
                    .map_err(|message| Problem::at(&format!("pods[{index}].egressGateway"), message))?;
            }
        }
        Ok(())
    }

    /// Names and aliases: DNS syntax as policy reads it (without wildcards: a host has plain
    /// names), each name answered by one host only, aliases only beside a name to point at.
    fn check_dns_names(&self) -> Result<(), Problem> {
        // Lowercased name → where it was first given.
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (index, host) in self.outside.iter().enumerate() {
            if !host.cname.is_empty() && host.names.is_empty() {
                return Err(Problem::at(
                    &format!("outside[{index}].cname"),
                    format!(
                        "outside host `{}` has aliases but no `names`; an alias is answered as a CNAME to the host's first name",
                        host.name
                    ),
                ));
            }
            let lists = [("names", &host.names), ("cname", &host.cname)];
            for (key, list) in lists {
                for (position, name) in list.iter().enumerate() {
                    let field = format!("outside[{index}].{key}[{position}]");
                    let pattern: DomainPattern =
                        name.parse().map_err(|message| Problem::at(&field, message))?;
                    if pattern.is_wildcard() {
                        return Err(Problem::at(
                            &field,
                            format!(
                                "`{name}` is a wildcard; a host's names are plain names (wildcards belong in policy rules)"
                            ),
                        ));
                    }
                    if let Some(first) = seen.get(pattern.as_str()) {
                        return Err(Problem::at(
                            &field,
                            format!(
                                "`{name}` is already given at {first}; each name belongs to one host, once"
                            ),
                        ));
                    }
                    seen.insert(pattern.as_str().to_string(), field);
                }
            }
            if host.ttl.is_some_and(|ttl| ttl > MAX_DNS_TTL) {
                return Err(Problem::at(
                    &format!("outside[{index}].ttl"),
                    format!("a DNS TTL is at most {MAX_DNS_TTL} seconds (RFC 2181)"),
                ));
            }
        }
        Ok(())
    }

    /// The DNS server's address: off the lab's underlay and links, and when it is an outside
    /// host's, that host leaves port 53 to it.
    fn check_dns_address(&self) -> Result<(), Problem> {
        let address = self.dns_address();
        let [first, second, third, fourth] = address.octets();
        let lab_range =
            first == 100 && second == 64 && (third == 0 || (third == 1 && fourth <= LAST_LINK_ADDRESS));
        if address.is_loopback()
            || address.is_unspecified()
            || address.is_multicast()
            || address.is_broadcast()
            || lab_range
        {
            return Err(Problem::at(
                "dns.address",
                format!(
                    "{address} is loopback, unspecified, multicast or taken by the lab's underlay and links (100.64.0.0/24, 100.64.1.0 to 100.64.1.{LAST_LINK_ADDRESS}); the default is {DEFAULT_DNS_ADDRESS}"
                ),
            ));
        }
        if let Some((index, host)) = self
            .outside
            .iter()
            .enumerate()
            .find(|(_, host)| host.address == address)
            && (host.tcp.contains(&53)
                || host.udp.contains(&53)
                || host.http.contains(&53)
                || host.https.contains(&53))
        {
            return Err(Problem::at(
                &format!("outside[{index}]"),
                format!(
                    "outside host `{}` serves port 53 at {address}, where the lab's DNS server (dns.address) listens",
                    host.name
                ),
            ));
        }
        Ok(())
    }
}

/// A lab file error and the field it is about (located in the file when known).
#[derive(Debug)]
struct Problem {
    field: Option<String>,
    message: String,
}

impl Problem {
    fn at(field: &str, message: String) -> Problem {
        Problem {
            field: Some(field.to_string()),
            message,
        }
    }

    fn anywhere(message: String) -> Problem {
        Problem { field: None, message }
    }
}

/// Lowercase letters, digits and inner dashes, at most [`MAX_NAME_LENGTH`] characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LENGTH
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "lab name `{name}` must be 1 to {MAX_NAME_LENGTH} lowercase letters, digits or inner dashes"
        ))
    }
}

fn in_lab_underlay(address: Ipv4Addr) -> bool {
    let [first, second, third, _] = address.octets();
    first == 100 && second == 64 && third <= 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "kind: Lab\nname: t1\nnodes: [{name: node-1}, {name: node-2, labels: {zone: b}}]\noutside:\n  - {name: partner, address: 203.0.113.10, tcp: [443], http: [80]}\nmanifests: [manifests/]\npods:\n  - namespace: prod\n    name: web\n    node: node-1\n    labels: {app: web}\n    annotations: {cni.projectcalico.org/ipv4pools: '[\"a\"]'}\n    ports: [{name: http, containerPort: 8080}, {containerPort: 53, protocol: UDP}]\n";

    #[test]
    fn reads_a_lab_file() {
        let lab = LabFile::parse("lab.yaml", EXAMPLE).unwrap();
        assert_eq!(lab.name, "t1");
        assert_eq!(lab.nodes[1].labels["zone"], "b");
        assert_eq!(lab.outside[0].address, Ipv4Addr::new(203, 0, 113, 10));
        assert_eq!(lab.pods[0].ports[1].protocol, PortProtocol::Udp);
        assert_eq!(lab.pods[0].ports[0].name.as_deref(), Some("http"));
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let text = EXAMPLE.replace("tcp: [443]", "tcp: [nope]");
        let error = LabFile::parse("lab.yaml", &text).unwrap_err();
        assert!(error.starts_with("lab.yaml:5:50:"), "{error}");
        assert!(error.contains("outside[0].tcp[0]"), "{error}");
    }

    #[test]
    fn an_outside_host_may_offer_no_service() {
        let text = EXAMPLE.replace(
            "outside:\n",
            "outside:\n  - {name: client, address: 198.51.100.5}\n",
        );
        let lab = LabFile::parse("lab.yaml", &text).unwrap();
        let client = &lab.outside[0];
        assert_eq!(client.name, "client");
        assert!(client.tcp.is_empty() && client.udp.is_empty() && client.http.is_empty());
    }

    #[test]
    fn rejects_unknown_nodes_and_long_names() {
        let error = LabFile::parse("lab.yaml", &EXAMPLE.replace("node: node-1", "node: node-9")).unwrap_err();
        assert!(error.contains("node-9"), "{error}");
        let error =
            LabFile::parse("lab.yaml", &EXAMPLE.replace("name: t1", "name: a-very-long-name")).unwrap_err();
        assert!(error.contains("lab name"), "{error}");
        assert!(check_name("-a").is_err() && check_name("Ab").is_err() && check_name("lab-1").is_ok());
    }

    const NAMED: &str = "name: t\nnodes: [{name: n}]\noutside:\n  - name: partner\n    address: 203.0.113.10\n    tcp: [443]\n    names: [API.partner.example]\n    cname: [www.partner.example]\n    ttl: 5\n  - {name: other, address: 198.51.100.9, names: [b.example]}\n";

    #[test]
    fn reads_names_aliases_ttl_and_the_dns_address() {
        let lab = LabFile::parse("lab.yaml", NAMED).unwrap();
        assert_eq!(lab.outside[0].names, ["api.partner.example"]);
        assert_eq!(lab.outside[0].cname, ["www.partner.example"]);
        assert_eq!(
            (lab.outside[0].dns_ttl(), lab.outside[1].dns_ttl()),
            (5, DEFAULT_DNS_TTL)
        );
        assert_eq!(lab.dns_address(), DEFAULT_DNS_ADDRESS);
        let moved = LabFile::parse("lab.yaml", &format!("{NAMED}dns: {{address: 192.0.2.53}}\n")).unwrap();
        assert_eq!(moved.dns_address(), Ipv4Addr::new(192, 0, 2, 53));
        // On an outside host's address, the server shares that host.
        let shared = LabFile::parse("lab.yaml", &format!("{NAMED}dns: {{address: 198.51.100.9}}\n"));
        assert!(shared.is_ok(), "{shared:?}");
    }

    fn error_of(text: &str) -> String {
        LabFile::parse("lab.yaml", text).unwrap_err()
    }

    #[test]
    fn bad_names_are_refused_where_they_stand() {
        let error = error_of(&NAMED.replace("names: [b.example]", "names: [b_x.example]"));
        assert!(error.starts_with("lab.yaml:10:50:"), "{error}");
        assert!(
            error.contains("outside[1].names[0]: `b_x.example` contains `_`"),
            "{error}"
        );
        let error = error_of(&NAMED.replace("names: [b.example]", "names: ['*.example']"));
        assert!(
            error.contains("outside[1].names[0]: `*.example` is a wildcard"),
            "{error}"
        );
        let error = error_of(&NAMED.replace("names: [b.example]", "names: [b.example.]"));
        assert!(error.contains("trailing dot"), "{error}");
        let error = error_of(&NAMED.replace("cname: [www.partner.example]", "cname: ['www.*.example']"));
        assert!(error.starts_with("lab.yaml:8:"), "{error}");
        assert!(
            error.contains("outside[0].cname[0]: `www.*.example` is a wildcard"),
            "{error}"
        );
    }

    #[test]
    fn a_name_belongs_to_one_host_once() {
        // Across hosts, whatever the case.
        let error = error_of(&NAMED.replace("names: [b.example]", "names: [Api.Partner.Example]"));
        assert!(
            error.contains(
                "outside[1].names[0]: `Api.Partner.Example` is already given at outside[0].names[0]"
            ),
            "{error}"
        );
        // An alias that is also a name.
        let error = error_of(&NAMED.replace("cname: [www.partner.example]", "cname: [b.example]"));
        assert!(
            error.contains("outside[1].names[0]: `b.example` is already given at outside[0].cname[0]"),
            "{error}"
        );
        // Aliases need a name to point at.
        let error = error_of(&NAMED.replace("names: [b.example]", "cname: [c.example]"));
        assert!(
            error.contains("outside[1].cname: outside host `other` has aliases but no `names`"),
            "{error}"
        );
        let error = error_of(&NAMED.replace("ttl: 5", "ttl: 2147483648"));
        assert!(
            error.contains("outside[0].ttl: a DNS TTL is at most 2147483647"),
            "{error}"
        );
    }

    #[test]
    fn the_dns_address_stays_off_the_lab_and_its_hosts_ports() {
        for taken in [
            "127.0.0.53",
            "0.0.0.0",
            "224.0.0.1",
            "100.64.0.2",
            "100.64.1.0",
            "100.64.1.203",
        ] {
            let error = error_of(&format!("{NAMED}dns: {{address: {taken}}}\n"));
            assert!(error.starts_with("lab.yaml:11:16:"), "{error}");
            assert!(
                error.contains("dns.address: ") && error.contains("the default is 100.64.1.253"),
                "{error}"
            );
        }
        assert!(LabFile::parse("lab.yaml", &format!("{NAMED}dns: {{address: 100.64.1.204}}\n")).is_ok());
        let error = error_of(
            &format!("{NAMED}dns: {{address: 203.0.113.10}}\n").replace("tcp: [443]", "tcp: [443, 53]"),
        );
        assert!(
            error.contains("outside[0]: outside host `partner` serves port 53 at 203.0.113.10"),
            "{error}"
        );
        let error = error_of(&format!("{NAMED}dns: {{addr: 192.0.2.1}}\n"));
        assert!(error.contains("dns.addr: unknown field `addr`"), "{error}");
    }
}
