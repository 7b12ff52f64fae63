//! `sluice explain`: one flow with a readable trace, or a batch of flows as JSON lines.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};
use sluice_policy::{Dataplane, Explanation, explain};

use crate::OutputFormat;
use crate::diagnostics::resources_from;
use crate::flows::FlowRequest;

#[derive(Debug, Args)]
pub struct ExplainArguments {
    /// Files or directories of YAML/JSON manifests; without it, the datastore.
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    datastore: crate::datastore::DatastoreArguments,
    /// The sender: a pod as namespace/name, or an IP address.
    #[arg(long, required_unless_present = "flows", conflicts_with = "flows")]
    from: Option<String>,
    /// The receiver: a pod as namespace/name, or an IP address.
    #[arg(long, required_unless_present = "flows", conflicts_with = "flows")]
    to: Option<String>,
    /// TCP, UDP, SCTP, ICMP, ICMPv6 or a protocol number.
    #[arg(long, default_value = "TCP")]
    protocol: String,
    /// Destination port (not needed for ICMP).
    #[arg(long)]
    port: Option<u16>,
    /// A file of flows, one JSON object a line: {"from": "prod/web", "to": "203.0.113.7", "protocol": "TCP", "port": 443}.
    #[arg(long)]
    flows: Option<PathBuf>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
}

pub fn run(arguments: &ExplainArguments) -> Result<ExitCode, String> {
    let resources = resources_from(&arguments.paths, &arguments.datastore)?;
    let dataplane = sluice_policy::compile(&resources);
    if let Some(path) = &arguments.flows {
        return run_batch(&dataplane, path, arguments.output);
    }
    let request = FlowRequest {
        from: arguments.from.clone().unwrap_or_default(),
        to: arguments.to.clone().unwrap_or_default(),
        protocol: Value::String(arguments.protocol.clone()),
        port: arguments.port,
    };
    let flow = request.to_flow(&dataplane)?;
    let explanation = explain(&dataplane, &flow);
    match arguments.output {
        OutputFormat::Json | OutputFormat::Jsonl => {
            let mut value = request_json(&request);
            value["verdict"] = json!(explanation.verdict);
            value["egress"] = json!(explanation.egress);
            value["ingress"] = json!(explanation.ingress);
            println!(
                "{}",
                serde_json::to_string_pretty(&value).map_err(|error| error.to_string())?
            );
        }
        OutputFormat::Text | OutputFormat::Csv => print_text(&request, &explanation),
    }
    Ok(ExitCode::SUCCESS)
}

fn request_json(request: &FlowRequest) -> Value {
    let mut value = json!({"from": request.from, "to": request.to, "protocol": request.protocol});
    if let Some(port) = request.port {
        value["port"] = json!(port);
    }
    value
}

fn print_text(request: &FlowRequest, explanation: &Explanation) {
    let port = request
        .port
        .map(|port| format!(" port {port}"))
        .unwrap_or_default();
    let protocol = request
        .protocol
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| request.protocol.to_string());
    println!(
        "{} {} -> {} {protocol}{port}",
        explanation.verdict.to_uppercase(),
        request.from,
        request.to
    );
    for side in [&explanation.egress, &explanation.ingress].into_iter().flatten() {
        println!();
        println!("{} of {}: {}", side.direction, side.endpoint, side.reason);
        for step in &side.steps {
            println!("  {step}");
        }
    }
    if explanation.egress.is_none() && explanation.ingress.is_none() {
        println!("neither side is a pod in the inputs, so no policy applies");
    }
}

/// The sentence and rule that decided: the denying side if any, else the receiving side.
fn deciding(explanation: &Explanation) -> (Option<String>, Value) {
    let sides = [&explanation.egress, &explanation.ingress];
    let denying = sides.iter().copied().flatten().find(|side| !side.allowed);
    let chosen = denying
        .or(explanation.ingress.as_ref())
        .or(explanation.egress.as_ref());
    match chosen {
        Some(side) => (Some(side.reason.clone()), json!(side.rule)),
        None => (None, Value::Null),
    }
}

fn run_batch(dataplane: &Dataplane, path: &PathBuf, output: OutputFormat) -> Result<ExitCode, String> {
    let file =
        std::fs::File::open(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let mut requests = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<FlowRequest>(&line)
            .map_err(|error| error.to_string())
            .and_then(|request| request.to_flow(dataplane).map(|flow| (request, flow)));
        match parsed {
            Ok(entry) => requests.push(entry),
            Err(message) => errors.push(format!("{}:{}: {message}", path.display(), index + 1)),
        }
    }
    if !errors.is_empty() {
        for error in &errors {
            eprintln!("error: {error}");
        }
        return Err(format!(
            "{} bad flow line(s); nothing was evaluated",
            errors.len()
        ));
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for (request, flow) in &requests {
        let explanation = explain(dataplane, flow);
        let mut value = request_json(request);
        value["verdict"] = json!(explanation.verdict);
        let (reason, rule) = deciding(&explanation);
        value["reason"] = json!(reason);
        value["rule"] = rule;
        let text = match output {
            OutputFormat::Json => serde_json::to_string_pretty(&value),
            _ => serde_json::to_string(&value),
        }
        .map_err(|error| error.to_string())?;
        writeln!(out, "{text}").map_err(|error| error.to_string())?;
    }
    out.flush().map_err(|error| error.to_string())?;
    Ok(ExitCode::SUCCESS)
}
