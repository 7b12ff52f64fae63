//! Reading flows from the command line and from JSON lines.

use std::net::IpAddr;

use serde::Deserialize;
use sluice_api::values::Protocol;
use sluice_policy::{Dataplane, Flow};

/// A flow as a person writes it: `ns/pod` or an address on each side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowRequest {
    pub from: String,
    pub to: String,
    #[serde(default = "default_protocol")]
    pub protocol: serde_json::Value,
    #[serde(default)]
    pub port: Option<u16>,
    /// The name `to` was resolved from, for rules that allow domain names.
    #[serde(default)]
    pub domain: Option<String>,
}

fn default_protocol() -> serde_json::Value {
    serde_json::Value::String("TCP".to_string())
}

/// Resolves `ns/pod` or an address. A pod with addresses of both families gives the one that
/// matches `family` when asked.
fn resolve(dataplane: &Dataplane, text: &str, family: Option<bool>) -> Result<IpAddr, String> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(address);
    }
    if crate::resolve::looks_like_name(text) {
        return Err(format!(
            "`{text}` is a name: give the address it resolved to (\"to\" in a flow line, with the name in \"domain\"; on the command line, --resolve {text}=ADDRESS)"
        ));
    }
    let Some((namespace, name)) = text.split_once('/') else {
        return Err(format!(
            "`{text}` is neither an IP address nor a pod as namespace/name"
        ));
    };
    let endpoint = dataplane.endpoint_by_name(namespace, name).ok_or_else(|| {
        if dataplane.unaddressed_pods.iter().any(|pod| pod == text) {
            format!("pod {text} has no address (status.podIP) yet, so no traffic can reach it")
        } else {
            format!("no pod {text} in the inputs")
        }
    })?;
    endpoint
        .addresses
        .iter()
        .find(|address| family.is_none_or(|is_v4| address.is_ipv4() == is_v4))
        .or(endpoint.addresses.first())
        .copied()
        .ok_or_else(|| format!("pod {text} has no address"))
}

pub fn parse_protocol(value: &serde_json::Value) -> Result<Protocol, String> {
    match value {
        serde_json::Value::Number(number) => number
            .as_u64()
            .and_then(|number| u8::try_from(number).ok())
            .filter(|number| *number > 0)
            .map(Protocol::from_number)
            .ok_or_else(|| format!("protocol {number} is not 1 to 255")),
        serde_json::Value::String(text) => Protocol::parse_lenient(text),
        other => Err(format!("protocol must be a name or a number, not {other}")),
    }
}

impl FlowRequest {
    /// Checks the request (lowercasing `domain` in place) and gives its flow.
    pub fn prepare(&mut self, dataplane: &Dataplane) -> Result<Flow, String> {
        if let Some(domain) = &self.domain {
            self.domain = Some(crate::resolve::domain_name(domain)?);
        }
        let protocol = parse_protocol(&self.protocol)?;
        let hint = self
            .from
            .parse::<IpAddr>()
            .ok()
            .or_else(|| self.to.parse::<IpAddr>().ok());
        let family = hint.map(|address| address.is_ipv4());
        let source = resolve(dataplane, &self.from, family)?;
        let destination = resolve(dataplane, &self.to, Some(source.is_ipv4()))?;
        if source.is_ipv4() != destination.is_ipv4() {
            return Err(format!(
                "{} and {} are of different IP families",
                self.from, self.to
            ));
        }
        if protocol.supports_ports() && self.port.is_none() {
            return Err(format!("a {protocol} flow needs a port"));
        }
        // An ICMP flow without more detail is a ping: echo request.
        let icmp_type = match protocol.number() {
            1 => Some(8),
            58 => Some(128),
            _ => None,
        };
        Ok(Flow {
            source,
            destination,
            protocol: protocol.number(),
            source_port: None,
            destination_port: if protocol.supports_ports() {
                self.port
            } else {
                None
            },
            icmp_type,
            icmp_code: icmp_type.map(|_| 0),
        })
    }
}
