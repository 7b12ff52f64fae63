//! `sluice recommend`: reads the flow log (from the agents or files) and the datastore, and
//! prints `sluice_flowlog::recommend`'s staged policies as YAML or JSON.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, ValueEnum};
use serde_json::json;
use sluice_flowlog::FlowRecord;

use crate::flow_log::{AgentCursor, endpoints};
use crate::output::{Failure, Output};

#[derive(Debug, Args)]
pub struct RecommendArguments {
    /// The namespace whose pods' egress to recommend policies for.
    #[arg(short = 'n', long, required = true)]
    namespace: String,
    /// Flows that ended this long ago or later (e.g. 1h), or since an RFC 3339 time.
    #[arg(long, default_value = "1h")]
    since: String,
    /// Read a node's flow log file instead of asking the agents (repeatable).
    #[arg(long, value_name = "PATH")]
    file: Vec<std::path::PathBuf>,
    /// An agent's flow endpoint instead of those the status records name; repeatable.
    #[arg(long = "agent", value_name = "ENDPOINT")]
    agent: Vec<String>,
    /// yaml (to `sluice apply -f`) or json.
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    output: RecommendFormat,
    #[command(flatten)]
    datastore: crate::datastore::DatastoreArguments,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecommendFormat {
    Yaml,
    Json,
}

pub fn run(arguments: &RecommendArguments, out: &mut Output) -> Result<ExitCode, Failure> {
    let since = sluice_agent::flows::parse_since(&arguments.since, SystemTime::now())
        .map_err(|message| Failure::from(message.trim_end().to_string()))?;
    let mut records: Vec<FlowRecord> = Vec::new();
    if arguments.file.is_empty() {
        let endpoints = endpoints(&arguments.agent, &arguments.datastore, None)?;
        if endpoints.is_empty() {
            return Err(Failure::from(
                "no agent serves a flow log: give --file or --agent, or run agents with flow logs on"
                    .to_string(),
            ));
        }
        for (node, endpoint) in endpoints {
            let mut cursor = AgentCursor::new(node.clone(), endpoint, since);
            let polled = cursor
                .poll()
                .map_err(|error| Failure::from(format!("node {node}: {error}")))?;
            records.extend(
                polled
                    .into_iter()
                    .filter_map(|record| serde_json::from_value(record).ok()),
            );
        }
    } else {
        for path in &arguments.file {
            let text = std::fs::read_to_string(path)
                .map_err(|error| Failure::from(format!("{}: {error}", path.display())))?;
            records.extend(
                text.lines()
                    .filter_map(|line| FlowRecord::from_json_line(line).ok())
                    .filter(|record| record.end_time >= since),
            );
        }
    }
    let resources = {
        let store = arguments.datastore.open()?;
        crate::datastore::read_set(store.as_ref())?
    };
    let (entities, _) = sluice_policy::build_entities(&resources);
    let documents = sluice_flowlog::recommend(&arguments.namespace, &records, &entities);
    match arguments.output {
        RecommendFormat::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!(documents)).expect("JSON")
        )?,
        RecommendFormat::Yaml => {
            let seen = records
                .iter()
                .filter(|record| record.source_namespace == arguments.namespace)
                .count();
            writeln!(
                out,
                "# sluice recommend -n {}: from {seen} flow records since {}; stage with `sluice apply -f`,\n# watch `pending_policies` in `sluice flows`, then apply them as NetworkPolicies.",
                arguments.namespace, arguments.since
            )?;
            for document in &documents {
                writeln!(out, "---")?;
                write!(
                    out,
                    "{}",
                    sluice_api::document::to_yaml(document).trim_start_matches("---\n")
                )?;
                writeln!(out)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
