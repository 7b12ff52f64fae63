//! The CNI protocol (spec 1.1, also 1.0 and 0.4): the environment, the network configuration
//! on stdin, version negotiation, results and errors as JSON on stdout.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{Value, json};

/// Spec versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
/// The newest supported version, used where the request names none we know.
pub const LATEST_VERSION: &str = "1.1.0";

/// The spec's well-known error codes and Sluice's own (100 and above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidNetworkConfig = 7,
    TryAgainLater = 11,
    StatusNotAvailable = 50,
    /// A netlink or sysctl operation failed.
    Netlink = 100,
    /// The datastore answered with an error other than "unavailable".
    Datastore = 101,
    /// IPAM had no address to give, or failed.
    Ipam = 102,
    /// CHECK found the attachment different from what ADD made.
    CheckFailed = 103,
    /// The node's nftables could not be made fail closed before wiring a pod.
    Dataplane = 104,
}

/// An error as the spec prints it: code, short message, details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}{}", details.as_ref().map(|details| format!(": {details}")).unwrap_or_default())]
pub struct CniError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> CniError {
        CniError {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: impl ToString) -> CniError {
        self.details = Some(details.to_string());
        self
    }

    pub fn to_json(&self, version: &str) -> Value {
        let mut error = json!({
            "cniVersion": version,
            "code": self.code as u32,
            "msg": self.message,
        });
        if let Some(details) = &self.details {
            error["details"] = Value::from(details.as_str());
        }
        error
    }
}

impl From<sluice_store::StoreError> for CniError {
    fn from(error: sluice_store::StoreError) -> CniError {
        let code = match error {
            sluice_store::StoreError::Unavailable(_) | sluice_store::StoreError::Conflict { .. } => {
                ErrorCode::TryAgainLater
            }
            sluice_store::StoreError::InvalidAddress { .. } => ErrorCode::InvalidNetworkConfig,
            _ => ErrorCode::Datastore,
        };
        CniError::new(code, "datastore error").with_details(error)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    fn parse(text: &str) -> Option<Command> {
        Some(match text {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    /// The command as the runtime spells it in `CNI_COMMAND`.
    pub fn name(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

/// The `CNI_*` variables of one invocation, checked for the command's required ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    pub command: Command,
    pub container_id: String,
    /// The pod's network namespace; may be absent for DEL.
    pub netns: Option<String>,
    pub interface_name: String,
    pub arguments: BTreeMap<String, String>,
}

impl Environment {
    /// Reads the environment through `lookup` (the process environment in the binary).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Environment, CniError> {
        let get = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let command_text = get("CNI_COMMAND").ok_or_else(|| missing("CNI_COMMAND"))?;
        let command = Command::parse(&command_text).ok_or_else(|| {
            CniError::new(ErrorCode::InvalidEnvironment, "unknown CNI_COMMAND").with_details(format!(
                "`{command_text}`; expected ADD, DEL, CHECK, STATUS, GC or VERSION"
            ))
        })?;
        let attachment = matches!(command, Command::Add | Command::Del | Command::Check);
        let required = |name: &str| -> Result<String, CniError> {
            if attachment {
                get(name).ok_or_else(|| missing(name))
            } else {
                Ok(get(name).unwrap_or_default())
            }
        };
        let container_id = required("CNI_CONTAINERID")?;
        let interface_name = required("CNI_IFNAME")?;
        if attachment {
            required("CNI_PATH")?;
        }
        let netns = get("CNI_NETNS");
        if matches!(command, Command::Add | Command::Check) && netns.is_none() {
            return Err(missing("CNI_NETNS"));
        }
        if attachment {
            validate_container_id(&container_id)?;
            validate_interface_name(&interface_name)?;
        }
        let arguments = parse_arguments(&get("CNI_ARGS").unwrap_or_default())?;
        validate_pod_arguments(&arguments)?;
        Ok(Environment {
            command,
            container_id,
            netns,
            interface_name,
            arguments,
        })
    }

    /// `<containerID>.<ifname>`: the IPAM handle of this attachment.
    pub fn handle(&self) -> String {
        handle(&self.container_id, &self.interface_name)
    }

    /// The pod's namespace and name from `K8S_POD_NAMESPACE` / `K8S_POD_NAME`, when both are given.
    pub fn pod(&self) -> Option<(&str, &str)> {
        let namespace = self.arguments.get("K8S_POD_NAMESPACE")?;
        let name = self.arguments.get("K8S_POD_NAME")?;
        Some((namespace, name))
    }
}

/// IPAM's handle format, defined once in `sluice-ipam`.
pub fn handle(container_id: &str, interface_name: &str) -> String {
    sluice_ipam::workload_handle(container_id, interface_name)
}

fn missing(name: &str) -> CniError {
    CniError::new(ErrorCode::InvalidEnvironment, format!("{name} is not set"))
}

/// Linux interface names: 1–15 bytes, no `/`, whitespace or `:`, not `.` or `..`.
fn validate_interface_name(name: &str) -> Result<(), CniError> {
    let valid = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|character| character == '/' || character == ':' || character.is_whitespace());
    if valid {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_IFNAME is not a valid interface name",
        )
        .with_details(format!("`{name}`")))
    }
}

/// The spec's container ID: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`. It names the lock file and the
/// IPAM handle, so nothing else may pass.
pub fn validate_container_id(container_id: &str) -> Result<(), CniError> {
    let mut characters = container_id.chars();
    let valid = characters
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric())
        && characters
            .all(|character| character.is_ascii_alphanumeric() || matches!(character, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            "CNI_CONTAINERID is not a valid container ID",
        )
        .with_details(format!(
            "`{container_id}`: it must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"
        )))
    }
}

/// `K8S_POD_NAMESPACE` must be a DNS-1123 label and `K8S_POD_NAME` a DNS-1123 subdomain, as
/// Kubernetes requires of the objects they name.
fn validate_pod_arguments(arguments: &BTreeMap<String, String>) -> Result<(), CniError> {
    let invalid = |name: &str, message: String| {
        CniError::new(
            ErrorCode::InvalidEnvironment,
            format!("CNI_ARGS: {name} is not a valid Kubernetes name"),
        )
        .with_details(message)
    };
    if let Some(namespace) = arguments.get("K8S_POD_NAMESPACE") {
        sluice_api::meta::validate_label_name(namespace)
            .map_err(|message| invalid("K8S_POD_NAMESPACE", message))?;
    }
    if let Some(pod) = arguments.get("K8S_POD_NAME") {
        sluice_api::meta::validate_subdomain_name(pod).map_err(|message| invalid("K8S_POD_NAME", message))?;
    }
    Ok(())
}

/// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
fn parse_arguments(text: &str) -> Result<BTreeMap<String, String>, CniError> {
    let mut arguments = BTreeMap::new();
    for pair in text.split(';').filter(|pair| !pair.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(
                CniError::new(ErrorCode::InvalidEnvironment, "CNI_ARGS is malformed")
                    .with_details(format!("`{pair}` is not KEY=VALUE")),
            );
        };
        arguments.insert(key.to_string(), value.to_string());
    }
    Ok(arguments)
}

/// One attachment in GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(rename = "ifname")]
    pub interface_name: String,
}

/// The fields of the network configuration that Sluice reads; others are accepted and ignored,
/// as the spec allows (`args`, `runtimeConfig`, `capabilities`, `dns`, ...).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNetworkConfig {
    cni_version: Option<String>,
    cni_versions: Option<Vec<String>>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    datastore: Option<String>,
    nodename: Option<String>,
    mtu: Option<u32>,
    prev_result: Option<Value>,
    lock_directory: Option<String>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
}

/// The network configuration with Sluice's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// The negotiated spec version: results and errors are written in it.
    pub version: &'static str,
    pub name: String,
    pub datastore: String,
    pub node_name: String,
    pub mtu: u32,
    pub previous_result: Option<Value>,
    pub valid_attachments: Option<Vec<Attachment>>,
    /// Where the per-container locks live (`lockDirectory`, default
    /// [`crate::lock::DEFAULT_LOCK_DIRECTORY`]).
    pub lock_directory: std::path::PathBuf,
}

/// The version a request names: `cniVersion`, else the highest of `cniVersions` we support.
/// `Err` carries the version to report the error in.
pub fn requested_version(config: &Value) -> Result<&'static str, CniError> {
    let supported = |version: &str| SUPPORTED_VERSIONS.iter().copied().find(|known| *known == version);
    if let Some(version) = config.get("cniVersion").and_then(Value::as_str) {
        return supported(version).ok_or_else(|| incompatible(version));
    }
    if let Some(versions) = config.get("cniVersions").and_then(Value::as_array) {
        let offered: Vec<&str> = versions.iter().filter_map(Value::as_str).collect();
        return SUPPORTED_VERSIONS
            .iter()
            .rev()
            .copied()
            .find(|known| offered.contains(known))
            .ok_or_else(|| incompatible(&offered.join(", ")));
    }
    // The spec's default for a configuration without a version.
    Err(incompatible("0.1.0 (no cniVersion given)"))
}

fn incompatible(version: &str) -> CniError {
    CniError::new(ErrorCode::IncompatibleVersion, "incompatible CNI version").with_details(format!(
        "{version}; this plugin supports {}",
        SUPPORTED_VERSIONS.join(", ")
    ))
}

/// Parses stdin. `default_node_name` and `default_datastore` are asked only when needed.
pub fn parse_network_config(
    stdin: &[u8],
    default_datastore: impl FnOnce() -> String,
    default_node_name: impl FnOnce() -> Option<String>,
) -> Result<NetworkConfig, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|error| {
        CniError::new(ErrorCode::Decode, "the network configuration is not JSON").with_details(error)
    })?;
    if !value.is_object() {
        return Err(CniError::new(
            ErrorCode::Decode,
            "the network configuration is not a JSON object",
        ));
    }
    let version = requested_version(&value)?;
    let raw: RawNetworkConfig = serde_json::from_value(value).map_err(|error| {
        CniError::new(ErrorCode::InvalidNetworkConfig, "invalid network configuration").with_details(error)
    })?;
    let invalid = |message: &str| CniError::new(ErrorCode::InvalidNetworkConfig, message.to_string());
    let name = raw
        .name
        .filter(|name| !name.is_empty())
        .ok_or_else(|| invalid("`name` is required"))?;
    if raw.plugin_type.is_none_or(|plugin_type| plugin_type.is_empty()) {
        return Err(invalid("`type` is required"));
    }
    let _ = (raw.cni_version, raw.cni_versions);
    let mtu = raw.mtu.unwrap_or(1500);
    if !(68..=65535).contains(&mtu) {
        return Err(invalid("`mtu` must be between 68 and 65535").with_details(mtu));
    }
    let lock_directory: std::path::PathBuf = raw
        .lock_directory
        .filter(|directory| !directory.is_empty())
        .unwrap_or_else(|| crate::lock::DEFAULT_LOCK_DIRECTORY.to_string())
        .into();
    if !lock_directory.is_absolute() {
        return Err(
            invalid("`lockDirectory` must be an absolute path").with_details(lock_directory.display())
        );
    }
    let datastore = raw
        .datastore
        .filter(|address| !address.is_empty())
        .unwrap_or_else(default_datastore);
    let node_name = match raw.nodename.filter(|node| !node.is_empty()) {
        Some(node) => node,
        None => default_node_name()
            .ok_or_else(|| invalid("`nodename` is not set and the hostname could not be read"))?,
    };
    Ok(NetworkConfig {
        version,
        name,
        datastore,
        node_name,
        mtu,
        previous_result: raw.prev_result,
        valid_attachments: raw.valid_attachments,
        lock_directory,
    })
}

/// Whether `version` is at least `minimum` (both from [`SUPPORTED_VERSIONS`]).
pub fn at_least(version: &str, minimum: &str) -> bool {
    let position = |wanted: &str| SUPPORTED_VERSIONS.iter().position(|known| *known == wanted);
    position(version) >= position(minimum)
}

/// VERSION's answer.
pub fn version_result() -> Value {
    json!({ "cniVersion": LATEST_VERSION, "supportedVersions": SUPPORTED_VERSIONS })
}

/// An interface in a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultInterface {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    /// The netns path for interfaces inside the pod.
    pub sandbox: Option<String>,
}

/// An address in a result, with its prefix and the index of its interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultAddress {
    pub address: ipnet::IpNet,
    pub gateway: Option<IpAddr>,
    pub interface: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRoute {
    pub destination: ipnet::IpNet,
    pub gateway: Option<IpAddr>,
}

/// ADD's result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddResult {
    pub interfaces: Vec<ResultInterface>,
    pub addresses: Vec<ResultAddress>,
    pub routes: Vec<ResultRoute>,
}

impl AddResult {
    /// The result in the shape of `version`: 0.4.0 tags addresses with their IP version,
    /// 1.1.0 adds interface MTUs.
    pub fn to_json(&self, version: &str) -> Value {
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|interface| {
                let mut value = json!({ "name": interface.name, "mac": interface.mac });
                if at_least(version, "1.1.0") {
                    value["mtu"] = Value::from(interface.mtu);
                }
                if let Some(sandbox) = &interface.sandbox {
                    value["sandbox"] = Value::from(sandbox.as_str());
                }
                value
            })
            .collect();
        let addresses: Vec<Value> = self
            .addresses
            .iter()
            .map(|address| {
                let mut value = json!({
                    "address": address.address.to_string(),
                    "interface": address.interface,
                });
                if let Some(gateway) = address.gateway {
                    value["gateway"] = Value::from(gateway.to_string());
                }
                if !at_least(version, "1.0.0") {
                    let family = if address.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    value["version"] = Value::from(family);
                }
                value
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|route| {
                let mut value = json!({ "dst": route.destination.to_string() });
                if let Some(gateway) = route.gateway {
                    value["gw"] = Value::from(gateway.to_string());
                }
                value
            })
            .collect();
        json!({
            "cniVersion": version,
            "interfaces": interfaces,
            "ips": addresses,
            "routes": routes,
            "dns": {},
        })
    }
}

/// The addresses a `prevResult` lists (for CHECK); malformed entries are a decode error.
pub fn previous_addresses(previous: &Value) -> Result<Vec<ipnet::IpNet>, CniError> {
    let Some(addresses) = previous.get("ips").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    addresses
        .iter()
        .map(|entry| {
            entry
                .get("address")
                .and_then(Value::as_str)
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| {
                    CniError::new(ErrorCode::Decode, "prevResult has an address that is not a CIDR")
                        .with_details(entry)
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn environment(pairs: &[(&str, &str)]) -> Result<Environment, CniError> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        Environment::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn environment_requires_what_each_command_needs() {
        let add = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0",
            ),
        ];
        let parsed = environment(&add).unwrap();
        assert_eq!(parsed.pod(), Some(("prod", "web-0")));
        assert_eq!(parsed.handle(), "abc.eth0");
        let without_netns: Vec<_> = add
            .iter()
            .copied()
            .filter(|(key, _)| *key != "CNI_NETNS")
            .collect();
        assert_eq!(
            environment(&without_netns).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
        let mut delete = without_netns.clone();
        delete[0] = ("CNI_COMMAND", "DEL");
        assert!(environment(&delete).is_ok());
        assert!(environment(&[("CNI_COMMAND", "VERSION")]).is_ok());
        assert_eq!(
            environment(&[("CNI_COMMAND", "FROB")]).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
        assert_eq!(environment(&[]).unwrap_err().code, ErrorCode::InvalidEnvironment);
        let mut bad_arguments = add;
        bad_arguments[5] = ("CNI_ARGS", "K8S_POD_NAME");
        assert_eq!(
            environment(&bad_arguments).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
        let mut bad_name = add;
        bad_name[3] = ("CNI_IFNAME", "a-name-that-is-too-long");
        assert_eq!(
            environment(&bad_name).unwrap_err().code,
            ErrorCode::InvalidEnvironment
        );
    }

    #[test]
    fn container_ids_and_pod_names_are_checked_as_the_spec_and_kubernetes_do() {
        let with = |container_id: &str, arguments: &str| {
            environment(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", container_id),
                ("CNI_NETNS", "/var/run/netns/x"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/opt/cni/bin"),
                ("CNI_ARGS", arguments),
            ])
        };
        let pod = "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-0";
        let table: &[(&str, &str, Option<&str>)] = &[
            ("3f2a9c", pod, None),
            ("A1_b.c-d", pod, None),
            ("0", pod, None),
            ("", pod, Some("CNI_CONTAINERID is not set")),
            (
                "-leading-dash",
                pod,
                Some("CNI_CONTAINERID is not a valid container ID"),
            ),
            (
                ".hidden",
                pod,
                Some("CNI_CONTAINERID is not a valid container ID"),
            ),
            ("..", pod, Some("CNI_CONTAINERID is not a valid container ID")),
            (
                "a/../../etc",
                pod,
                Some("CNI_CONTAINERID is not a valid container ID"),
            ),
            ("a b", pod, Some("CNI_CONTAINERID is not a valid container ID")),
            (
                "caf\u{e9}",
                pod,
                Some("CNI_CONTAINERID is not a valid container ID"),
            ),
            (
                "abc",
                "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns.x-1",
                None,
            ),
            (
                "abc",
                "K8S_POD_NAMESPACE=Prod;K8S_POD_NAME=web",
                Some("CNI_ARGS: K8S_POD_NAMESPACE is not a valid Kubernetes name"),
            ),
            (
                "abc",
                "K8S_POD_NAMESPACE=a.b;K8S_POD_NAME=web",
                Some("CNI_ARGS: K8S_POD_NAMESPACE is not a valid Kubernetes name"),
            ),
            (
                "abc",
                &format!("K8S_POD_NAMESPACE={};K8S_POD_NAME=web", "n".repeat(64)),
                Some("CNI_ARGS: K8S_POD_NAMESPACE is not a valid Kubernetes name"),
            ),
            (
                "abc",
                "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=-web",
                Some("CNI_ARGS: K8S_POD_NAME is not a valid Kubernetes name"),
            ),
            (
                "abc",
                "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web/0",
                Some("CNI_ARGS: K8S_POD_NAME is not a valid Kubernetes name"),
            ),
            (
                "abc",
                "K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web..0",
                Some("CNI_ARGS: K8S_POD_NAME is not a valid Kubernetes name"),
            ),
            (
                "abc",
                &format!("K8S_POD_NAMESPACE=prod;K8S_POD_NAME={}", "p".repeat(254)),
                Some("CNI_ARGS: K8S_POD_NAME is not a valid Kubernetes name"),
            ),
        ];
        for (container_id, arguments, expected) in table {
            match (with(container_id, arguments), expected) {
                (Ok(_), None) => {}
                (Err(error), Some(message)) => {
                    assert_eq!(
                        error.code,
                        ErrorCode::InvalidEnvironment,
                        "{container_id} {arguments}"
                    );
                    assert_eq!(error.code as u32, 4);
                    assert_eq!(error.message, *message, "{container_id} {arguments}");
                }
                (outcome, _) => panic!("{container_id} {arguments}: {outcome:?}, expected {expected:?}"),
            }
        }
    }

    fn config(text: &str) -> Result<NetworkConfig, CniError> {
        parse_network_config(
            text.as_bytes(),
            || "file:/default.db".into(),
            || Some("node-a".into()),
        )
    }

    #[test]
    fn configuration_defaults_and_versions() {
        let parsed = config(r#"{"cniVersion":"1.0.0","name":"k8s","type":"sluice-cni"}"#).unwrap();
        assert_eq!((parsed.version, parsed.mtu), ("1.0.0", 1500));
        assert_eq!(
            (parsed.datastore.as_str(), parsed.node_name.as_str()),
            ("file:/default.db", "node-a")
        );
        let negotiated =
            config(r#"{"cniVersions":["0.3.1","1.0.0","1.1.0","2.0.0"],"name":"k8s","type":"sluice-cni"}"#)
                .unwrap();
        assert_eq!(negotiated.version, "1.1.0");
        let code = |text: &str| config(text).unwrap_err().code;
        assert_eq!(
            code(r#"{"cniVersion":"0.3.1","name":"k","type":"t"}"#),
            ErrorCode::IncompatibleVersion
        );
        assert_eq!(code(r#"{"name":"k","type":"t"}"#), ErrorCode::IncompatibleVersion);
        assert_eq!(code("{not json"), ErrorCode::Decode);
        assert_eq!(
            code(r#"{"cniVersion":"1.1.0","type":"t"}"#),
            ErrorCode::InvalidNetworkConfig
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.1.0","name":"k","type":"t","mtu":"x"}"#),
            ErrorCode::InvalidNetworkConfig
        );
        assert_eq!(
            code(r#"{"cniVersion":"1.1.0","name":"k","type":"t","mtu":10}"#),
            ErrorCode::InvalidNetworkConfig
        );
    }

    #[test]
    fn results_follow_the_requested_version() {
        let result = AddResult {
            interfaces: vec![ResultInterface {
                name: "eth0".into(),
                mac: "aa:bb:cc:dd:ee:ff".into(),
                mtu: 1500,
                sandbox: Some("/ns".into()),
            }],
            addresses: vec![ResultAddress {
                address: "10.0.0.5/32".parse().unwrap(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: 0,
            }],
            routes: vec![ResultRoute {
                destination: "0.0.0.0/0".parse().unwrap(),
                gateway: Some("169.254.1.1".parse().unwrap()),
            }],
        };
        let old = result.to_json("0.4.0");
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(old["interfaces"][0].get("mtu").is_none());
        let new = result.to_json("1.1.0");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["interfaces"][0]["mtu"], 1500);
        assert_eq!(new["routes"][0]["gw"], "169.254.1.1");
        assert_eq!(
            previous_addresses(&new).unwrap(),
            vec!["10.0.0.5/32".parse::<ipnet::IpNet>().unwrap()]
        );
    }
}
