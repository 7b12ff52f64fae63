//! The lab file (`LAB.yaml`): nodes, outside hosts, manifests and pods. Read with the same YAML
//! reader as manifests, so errors name file, line, column and field.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest lab name: namespace names are `sl-<name>-<role><index>` and stay short.
pub const MAX_NAME_LENGTH: usize = 12;
/// Outside hosts get point-to-point links from 100.64.1.0/24, two addresses each.
pub const MAX_OUTSIDE_HOSTS: usize = 100;
/// Node underlay addresses are 100.64.0.10 upwards.
pub const MAX_NODES: usize = 200;
pub const MAX_PODS: usize = 500;

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
}

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
        let lab: LabFile = serde_path_to_error::deserialize(document.value.clone()).map_err(|error| {
            let field = error.path().to_string();
            let position = document.position_of(&field);
            format!(
                "{file}:{}:{}: {field}: {}",
                position.line,
                position.column,
                error.inner()
            )
        })?;
        lab.check().map_err(|message| format!("{file}: {message}"))?;
        Ok(lab)
    }

    fn check(&self) -> Result<(), String> {
        if let Some(kind) = &self.kind
            && kind != "Lab"
        {
            return Err(format!("kind is `{kind}`; a lab file has `kind: Lab`"));
        }
        check_name(&self.name)?;
        if self.nodes.is_empty() || self.nodes.len() > MAX_NODES {
            return Err(format!("a lab needs 1 to {MAX_NODES} nodes"));
        }
        if self.outside.len() > MAX_OUTSIDE_HOSTS || self.pods.len() > MAX_PODS {
            return Err(format!(
                "a lab holds at most {MAX_OUTSIDE_HOSTS} outside hosts and {MAX_PODS} pods"
            ));
        }
        let mut node_names = BTreeSet::new();
        for node in &self.nodes {
            sluice_api::meta::validate_subdomain_name(&node.name)
                .map_err(|message| format!("node `{}`: {message}", node.name))?;
            if !node_names.insert(node.name.as_str()) {
                return Err(format!("node `{}` is listed twice", node.name));
            }
        }
        let mut hosts = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for host in &self.outside {
            if !hosts.insert(host.name.as_str()) || !addresses.insert(host.address) {
                return Err(format!(
                    "outside host `{}` repeats a name or an address",
                    host.name
                ));
            }
            if host.address.is_loopback() || host.address.is_unspecified() || in_lab_underlay(host.address) {
                return Err(format!(
                    "outside host `{}`: {} is loopback, unspecified or inside the lab's underlay 100.64.0.0/23",
                    host.name, host.address
                ));
            }
            if host
                .tcp
                .iter()
                .chain(&host.udp)
                .chain(&host.http)
                .any(|port| *port == 0)
            {
                return Err(format!("outside host `{}`: port 0", host.name));
            }
        }
        let mut pods = BTreeSet::new();
        for pod in &self.pods {
            let shown = format!("{}/{}", pod.namespace, pod.name);
            if !node_names.contains(pod.node.as_str()) {
                return Err(format!(
                    "pod {shown} names node `{}`, which is not in `nodes`",
                    pod.node
                ));
            }
            if !pods.insert((pod.namespace.as_str(), pod.name.as_str())) {
                return Err(format!("pod {shown} is listed twice"));
            }
            if pod.ports.iter().any(|port| port.container_port == 0) {
                return Err(format!("pod {shown}: port 0"));
            }
        }
        Ok(())
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
}
