//! The flow record: one aggregated flow key over one interval, written as one JSON object a
//! line with Calico's flow-log field names where Calico has them (docs/flow-logs.md).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sluice_api::values::PolicyType;

use crate::naming::EndpointType;

/// Which end of the flow the record is seen from: `src` when the deciding endpoint is the
/// source (its egress policy decided), `dst` when it is the destination (ingress).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reporter {
    Src,
    Dst,
}

impl Reporter {
    pub fn of_direction(direction: PolicyType) -> Reporter {
        match direction {
            PolicyType::Egress => Reporter::Src,
            PolicyType::Ingress => Reporter::Dst,
        }
    }

    pub fn direction(self) -> PolicyType {
        match self {
            Reporter::Src => PolicyType::Egress,
            Reporter::Dst => PolicyType::Ingress,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Reporter::Src => 0,
            Reporter::Dst => 1,
        }
    }
}

/// What the deciding rule did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowAction {
    Allow,
    Deny,
}

/// One flow key's traffic over one interval.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FlowRecord {
    /// The interval's start and end, Unix seconds.
    pub start_time: u64,
    pub end_time: u64,
    /// The node that reported it.
    pub host: String,
    pub source_type: EndpointType,
    pub source_namespace: String,
    pub source_name: String,
    pub source_name_aggr: String,
    /// A `net` source's address when the configuration keeps it, else null.
    pub source_ip: Option<IpAddr>,
    pub dest_type: EndpointType,
    pub dest_namespace: String,
    pub dest_name: String,
    pub dest_name_aggr: String,
    /// A `net` destination's address when the configuration keeps it (by default), else null.
    pub dest_ip: Option<IpAddr>,
    /// Null for protocols without ports (ICMP).
    pub dest_port: Option<u16>,
    /// The name the source resolved to reach the destination (at most one: records are split
    /// by name).
    pub dest_domains: Vec<String>,
    /// `tcp`, `udp`, `icmp`, `icmp6`, `sctp`, or the protocol number.
    pub proto: String,
    pub reporter: Reporter,
    pub action: FlowAction,
    /// The enforced hit that decided, `tier|kind|namespace/name|rule index|action`; empty for a
    /// connection whose first packet was never logged.
    pub policies: Vec<String>,
    /// The hits the staged policies would decide, same form.
    pub pending_policies: Vec<String>,
    /// Reporter-relative: `in` is what the reporting endpoint received.
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Connections active at any time in the interval.
    pub num_flows: u64,
    pub num_flows_started: u64,
    pub num_flows_completed: u64,
    /// Connections still open at the interval's end.
    pub num_flows_live: u64,
}

impl FlowRecord {
    /// One JSON object without the newline.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("a flow record always serialises")
    }

    /// Reads a line back; the error names the field and column.
    pub fn from_json_line(line: &str) -> Result<FlowRecord, serde_json::Error> {
        serde_json::from_str(line)
    }
}

/// Calico's protocol names in flow logs.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".to_string(),
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        58 => "icmp6".to_string(),
        132 => "sctp".to_string(),
        other => other.to_string(),
    }
}

/// Protocols whose tuples carry ports.
pub(crate) fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 132)
}
