//! `sluice flows`: the flow log, from every agent's flow endpoint (found through the nodes'
//! status records) or from a node's flow log file, as a table or JSON lines, once or following.
//! Also the pieces `sluice ui` shares: finding agents and polling them without duplicates.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use serde_json::Value;
use sluice_agent::flows::client;
use sluice_agent::{NodeStatus, STATUS_PREFIX};
use sluice_store::Store;

use crate::output::{Failure, Output, write_table};

#[derive(Debug, Args)]
pub struct FlowsArguments {
    /// Only flows from or to this namespace.
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Only this node's agent.
    #[arg(long)]
    node: Option<String>,
    /// Only allowed or only denied flows.
    #[arg(long, value_enum)]
    action: Option<ActionFilter>,
    /// Only flows to this destination: namespace/name, a namespace, a name, a domain or an
    /// address.
    #[arg(long)]
    to: Option<String>,
    /// Flows that ended this long ago or later (e.g. 15m, 1h), or since an RFC 3339 time.
    #[arg(long, default_value = "1h")]
    since: String,
    /// Keep printing new flows as agents write them.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Read a node's flow log file instead of asking the agents.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["node", "agent"])]
    file: Option<PathBuf>,
    /// An agent's flow endpoint (http://HOST:PORT or unix:PATH) instead of those the status
    /// records name; repeatable.
    #[arg(long = "agent", value_name = "ENDPOINT")]
    agent: Vec<String>,
    /// table: one row a flow record with its deciding policy; jsonl: the records as written.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: FlowsFormat,
    #[command(flatten)]
    datastore: crate::datastore::DatastoreArguments,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActionFilter {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlowsFormat {
    Table,
    Jsonl,
}

/// What to keep.
#[derive(Debug, Clone, Default)]
pub struct FlowFilter {
    pub namespace: Option<String>,
    pub action: Option<String>,
    pub to: Option<String>,
}

impl FlowFilter {
    pub fn keeps(&self, record: &Value) -> bool {
        let field = |name: &str| record.get(name).and_then(Value::as_str).unwrap_or("");
        if let Some(namespace) = &self.namespace
            && field("source_namespace") != namespace
            && field("dest_namespace") != namespace
        {
            return false;
        }
        if let Some(action) = &self.action
            && field("action") != action
        {
            return false;
        }
        if let Some(to) = &self.to {
            let name = field("dest_name");
            let namespace = field("dest_namespace");
            if side(record, "dest") != *to && name != to && namespace != to {
                return false;
            }
        }
        true
    }
}

/// One side of a record as a person reads it: `namespace/name` for pods and namespaced
/// network sets, the name of a global network set, an outside address (what `explain` takes),
/// or Calico's `pub`/`pvt` when the record kept no address.
pub fn side(record: &Value, prefix: &str) -> String {
    let field = |name: &str| {
        record
            .get(format!("{prefix}_{name}"))
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty() && *value != "-")
    };
    if field("type") == Some("net")
        && let Some(address) = field("ip")
    {
        return address.to_string();
    }
    let name = field("name").or(field("name_aggr")).unwrap_or("-");
    match field("namespace") {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    }
}

/// Each agent's flow endpoint, by node, from the nodes' status records (those of stopped
/// agents left out).
pub fn agent_endpoints(store: &dyn Store, node: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let (values, _) = store.list(STATUS_PREFIX).map_err(|error| error.to_string())?;
    let mut endpoints = Vec::new();
    for value in values {
        let Ok(status) = serde_json::from_slice::<NodeStatus>(&value.value) else {
            continue;
        };
        if status.stopped || node.is_some_and(|node| node != status.node) {
            continue;
        }
        // The first endpoint is the one to use; a Unix socket is listed first when there is one.
        if let Some(endpoint) = status.flow_endpoints.first() {
            endpoints.push((status.node.clone(), endpoint.clone()));
        }
    }
    Ok(endpoints)
}

/// The agents to read: the endpoints given (`--agent`, each named by itself), or else those the
/// nodes' status records name.
pub fn endpoints(
    given: &[String],
    datastore: &crate::datastore::DatastoreArguments,
    node: Option<&str>,
) -> Result<Vec<(String, String)>, String> {
    if !given.is_empty() {
        return Ok(given
            .iter()
            .map(|endpoint| (endpoint.clone(), endpoint.clone()))
            .collect());
    }
    let store = datastore.open()?;
    agent_endpoints(store.as_ref(), node)
}

/// Polls one agent's `/flows`, remembering where it got to so no record comes twice; an agent
/// that restarted (its sequence went back) is read from its start again.
#[derive(Debug, Clone)]
pub struct AgentCursor {
    pub node: String,
    pub endpoint: String,
    since: u64,
    after: u64,
}

impl AgentCursor {
    pub fn new(node: String, endpoint: String, since: u64) -> AgentCursor {
        AgentCursor {
            node,
            endpoint,
            since,
            after: 0,
        }
    }

    /// The records written since the last poll.
    pub fn poll(&mut self) -> Result<Vec<Value>, String> {
        let path = format!("/flows?since={}&after={}", self.since, self.after);
        let response = client::get(&self.endpoint, &path, Duration::from_secs(10))?;
        if response.status != 200 {
            return Err(format!("{} answered {}", self.endpoint, response.status));
        }
        let last: u64 = response
            .header("X-Sluice-Last-Sequence")
            .and_then(|value| value.parse().ok())
            .unwrap_or(self.after);
        let text = response
            .text()
            .map_err(|error| format!("cannot read from {}: {error}", self.endpoint))?;
        let records = parse_lines(&text);
        if last < self.after {
            // The agent restarted: its sequence began again.
            self.after = 0;
            return self.poll();
        }
        self.after = last;
        Ok(records)
    }
}

fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

pub fn run(arguments: &FlowsArguments, out: &mut Output) -> Result<ExitCode, Failure> {
    let since = sluice_agent::flows::parse_since(&arguments.since, SystemTime::now())
        .map_err(|message| Failure::from(message.trim_end().to_string()))?;
    let filter = FlowFilter {
        namespace: arguments.namespace.clone(),
        action: arguments.action.map(|action| match action {
            ActionFilter::Allow => "allow".to_string(),
            ActionFilter::Deny => "deny".to_string(),
        }),
        to: arguments.to.clone(),
    };
    let mut printer = Printer::new(arguments.output);
    if let Some(path) = &arguments.file {
        return follow_file(path, since, &filter, arguments.follow, &mut printer, out);
    }
    let endpoints = endpoints(&arguments.agent, &arguments.datastore, arguments.node.as_deref())?;
    if endpoints.is_empty() {
        return Err(Failure::from(
            "no agent serves a flow log: no node status record names a flow endpoint (is the agent running with flow logs on?)".to_string(),
        ));
    }
    let mut cursors: Vec<AgentCursor> = endpoints
        .into_iter()
        .map(|(node, endpoint)| AgentCursor::new(node, endpoint, since))
        .collect();
    let mut failures = 0;
    loop {
        let mut records = Vec::new();
        for cursor in &mut cursors {
            match cursor.poll() {
                Ok(polled) => records.extend(polled),
                Err(error) => {
                    failures += 1;
                    eprintln!("warning: node {}: {error}", cursor.node);
                }
            }
        }
        records.retain(|record| filter.keeps(record));
        records.sort_by_key(|record| record.get("end_time").and_then(Value::as_u64).unwrap_or(0));
        printer.print(&records, out)?;
        out.flush()?;
        if !arguments.follow {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    if failures == cursors.len() && printer.printed == 0 {
        return Err(Failure::from("no agent answered".to_string()));
    }
    Ok(ExitCode::SUCCESS)
}

fn follow_file(
    path: &std::path::Path,
    since: u64,
    filter: &FlowFilter,
    follow: bool,
    printer: &mut Printer,
    out: &mut Output,
) -> Result<ExitCode, Failure> {
    let file =
        std::fs::File::open(path).map_err(|error| Failure::from(format!("{}: {error}", path.display())))?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        let read = reader
            .read_line(&mut line)
            .map_err(|error| Failure::from(format!("{}: {error}", path.display())))?;
        if read == 0 {
            out.flush()?;
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        if !line.ends_with('\n') {
            // A line being written: read the rest of it next time.
            continue;
        }
        let Ok(record) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let end = record.get("end_time").and_then(Value::as_u64).unwrap_or(0);
        if end >= since && filter.keeps(&record) {
            printer.print(std::slice::from_ref(&record), out)?;
        }
    }
}

/// Prints records as rows under one header (printed once), or as JSON lines.
struct Printer {
    format: FlowsFormat,
    printed: usize,
}

impl Printer {
    fn new(format: FlowsFormat) -> Printer {
        Printer { format, printed: 0 }
    }

    fn print(&mut self, records: &[Value], out: &mut Output) -> Result<(), Failure> {
        if records.is_empty() {
            return Ok(());
        }
        match self.format {
            FlowsFormat::Jsonl => {
                for record in records {
                    writeln!(out, "{record}")?;
                }
            }
            FlowsFormat::Table => {
                let mut rows = Vec::new();
                if self.printed == 0 {
                    rows.push(HEADER.iter().map(ToString::to_string).collect());
                }
                rows.extend(records.iter().map(row));
                write_table(out, &rows)?;
            }
        }
        self.printed += records.len();
        Ok(())
    }
}

const HEADER: [&str; 10] = [
    "END",
    "SOURCE",
    "DESTINATION",
    "PORT",
    "REPORTER",
    "ACTION",
    "POLICY",
    "STAGED",
    "FLOWS",
    "BYTES OUT/IN",
];

fn row(record: &Value) -> Vec<String> {
    let text = |name: &str| match record.get(name) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let list = |name: &str| {
        record
            .get(name)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|item| item.as_str().map_or_else(|| item.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|joined| !joined.is_empty())
            .unwrap_or_else(|| "-".to_string())
    };
    let end = record
        .get("end_time")
        .and_then(Value::as_u64)
        .map(|seconds| {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string()
        })
        .unwrap_or_default();
    let port = format!("{}/{}", text("proto"), text("dest_port"));
    let flows = match record.get("num_flows_started") {
        Some(started) => started.to_string(),
        None => text("num_flows"),
    };
    vec![
        end,
        side(record, "source"),
        side(record, "dest"),
        port,
        text("reporter"),
        text("action"),
        list("policies"),
        list("pending_policies"),
        flows,
        format!("{}/{}", text("bytes_out"), text("bytes_in")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> Value {
        json!({
            "source_type": "wep", "source_namespace": "billing", "source_name": "api-1",
            "dest_type": "net", "dest_namespace": "-", "dest_name": "-", "dest_name_aggr": "pub",
            "dest_ip": "203.0.113.7",
            "dest_port": 443, "proto": "tcp", "reporter": "src", "action": "deny",
            "policies": ["default|GlobalNetworkPolicy|default-deny|-1|deny"],
            "end_time": 1_700_000_000u64, "num_flows_started": 2, "bytes_out": 120, "bytes_in": 0
        })
    }

    #[test]
    fn filters_by_namespace_action_and_destination() {
        let record = record();
        let keeps = |filter: FlowFilter| filter.keeps(&record);
        assert!(keeps(FlowFilter::default()));
        assert!(keeps(FlowFilter {
            namespace: Some("billing".into()),
            ..FlowFilter::default()
        }));
        assert!(!keeps(FlowFilter {
            namespace: Some("prod".into()),
            ..FlowFilter::default()
        }));
        assert!(keeps(FlowFilter {
            action: Some("deny".into()),
            ..FlowFilter::default()
        }));
        assert!(!keeps(FlowFilter {
            action: Some("allow".into()),
            ..FlowFilter::default()
        }));
        assert!(keeps(FlowFilter {
            to: Some("203.0.113.7".into()),
            ..FlowFilter::default()
        }));
        assert!(!keeps(FlowFilter {
            to: Some("198.51.100.1".into()),
            ..FlowFilter::default()
        }));
    }

    #[test]
    fn a_row_shows_sides_port_and_the_deciding_policy() {
        let row = row(&record());
        assert_eq!(row[1], "billing/api-1");
        assert_eq!(row[2], "203.0.113.7");
        assert_eq!(row[3], "tcp/443");
        assert_eq!(row[5], "deny");
        assert_eq!(row[6], "default|GlobalNetworkPolicy|default-deny|-1|deny");
        assert_eq!(row[7], "-");
        assert_eq!(row[8], "2");
        assert_eq!(row[0], "2023-11-14T22:13:20Z");
    }
}
