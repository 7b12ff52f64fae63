//! Reading flows from the command line and from JSON lines.

use std::net::IpAddr;

use serde::Deserialize;
use sluice_api::values::Protocol;
use sluice_policy::{Dataplane, FamilyPair, Flow, FlowL7, HttpRequest, families_text, family_pairs};

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
    /// The HTTP request on the connection, for rules with an HTTP match.
    #[serde(default)]
    pub http: Option<HttpRequest>,
    /// The TLS ClientHello's server name, for rules with a TLS match.
    #[serde(default, rename = "serverName")]
    pub server_name: Option<String>,
}

fn default_protocol() -> serde_json::Value {
    serde_json::Value::String("TCP".to_string())
}

/// The addresses of `ns/pod` (all of them, either family) or of an address (itself).
fn resolve(dataplane: &Dataplane, text: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(address) = text.parse::<IpAddr>() {
        return Ok(vec![address]);
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
    if endpoint.addresses.is_empty() {
        return Err(format!("pod {text} has no address"));
    }
    Ok(endpoint.addresses.clone())
}

/// A request turned into flows: one per IP family both sides have (IPv4 first), none when
/// they share no family.
#[derive(Debug, Clone)]
pub struct ResolvedFlows {
    pub flows: Vec<(FamilyPair, Flow)>,
    /// What the sender and the receiver have (`IPv4 only`, …), for the no-common-family verdict.
    pub from_families: &'static str,
    pub to_families: &'static str,
    /// Whether either side has both families (so a single flow is a choice worth naming).
    pub either_dual_stack: bool,
}

impl ResolvedFlows {
    /// The sentence for two peers that share no IP family, if they do not.
    pub fn no_common_family(&self, request: &FlowRequest) -> Option<String> {
        self.flows.is_empty().then(|| {
            format!(
                "{} has {} and {} has {}: they share no IP family, so no packet can pass between them",
                request.from, self.from_families, request.to, self.to_families
            )
        })
    }
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
    /// What the flow carries above TCP, when it says.
    pub fn l7(&self) -> Option<FlowL7> {
        let l7 = FlowL7 {
            http: self.http.clone(),
            server_name: self.server_name.clone(),
        };
        (!l7.is_empty()).then_some(l7)
    }

    /// `GET /v1/x to api.partner.example` or `TLS server name api.partner.example`.
    pub fn l7_text(&self) -> Option<String> {
        if let Some(http) = &self.http {
            let host = http
                .host
                .as_deref()
                .map(|host| format!(" to {host}"))
                .unwrap_or_default();
            return Some(format!("HTTP {} {}{host}", http.method, http.path));
        }
        self.server_name
            .as_ref()
            .map(|name| format!("TLS server name {name}"))
    }

    /// The HTTP request and server name make sense: a TCP flow, one or the other, a method
    /// that is a token and a path that starts with `/`.
    fn check_l7(&self, protocol: Protocol) -> Result<(), String> {
        if self.http.is_none() && self.server_name.is_none() {
            return Ok(());
        }
        if protocol != Protocol::Tcp {
            return Err(format!(
                "an HTTP request or a TLS server name travels over TCP, and this flow is {protocol}"
            ));
        }
        if self.http.is_some() && self.server_name.is_some() {
            return Err("give \"http\" or \"serverName\", not both: a connection is HTTP or TLS".to_string());
        }
        if let Some(http) = &self.http {
            if http.method.is_empty() || !http.method.bytes().all(|byte| byte.is_ascii_alphabetic()) {
                return Err(format!("`{}` is not an HTTP method", http.method));
            }
            if !http.path.starts_with('/') {
                return Err(format!("the HTTP path `{}` does not start with `/`", http.path));
            }
        }
        if let Some(name) = &self.server_name
            && (name.is_empty() || name.chars().any(|character| character.is_whitespace()))
        {
            return Err(format!("`{name}` is not a server name"));
        }
        Ok(())
    }

    /// Checks the request (lowercasing `domain` in place) and gives its flows, one per IP
    /// family both ends have.
    pub fn prepare_flows(&mut self, dataplane: &Dataplane) -> Result<ResolvedFlows, String> {
        if let Some(domain) = &self.domain {
            self.domain = Some(crate::resolve::domain_name(domain)?);
        }
        let protocol = parse_protocol(&self.protocol)?;
        self.check_l7(protocol)?;
        let sources = resolve(dataplane, &self.from)?;
        let destinations = resolve(dataplane, &self.to)?;
        if protocol.supports_ports() && self.port.is_none() {
            return Err(format!("a {protocol} flow needs a port"));
        }
        let flows = family_pairs(&sources, &destinations)
            .into_iter()
            .map(|pair| {
                // An ICMP flow without more detail is a ping: echo request.
                let icmp_type = match protocol.number() {
                    1 => Some(8),
                    58 => Some(128),
                    _ => None,
                };
                let flow = Flow {
                    source: pair.source,
                    destination: pair.destination,
                    protocol: protocol.number(),
                    source_port: None,
                    destination_port: if protocol.supports_ports() {
                        self.port
                    } else {
                        None
                    },
                    icmp_type,
                    icmp_code: icmp_type.map(|_| 0),
                };
                (pair, flow)
            })
            .collect();
        let dual_stack = |addresses: &[IpAddr]| {
            addresses.iter().any(IpAddr::is_ipv4) && addresses.iter().any(IpAddr::is_ipv6)
        };
        Ok(ResolvedFlows {
            either_dual_stack: dual_stack(&sources) || dual_stack(&destinations),
            flows,
            from_families: families_text(&sources),
            to_families: families_text(&destinations),
        })
    }
}
