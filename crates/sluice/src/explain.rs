//! `sluice explain`: one flow with a readable trace, or a batch of flows as JSON lines.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};
use sluice_policy::{Dataplane, DirectionExplanation, Explanation, explain_with_domain};

use crate::OutputFormat;
use crate::diagnostics::resources_from;
use crate::flows::FlowRequest;
use crate::output::{Failure, Output, csv_record};

#[derive(Debug, Args)]
pub struct ExplainArguments {
    /// Files or directories of YAML/JSON manifests (`-`: standard input); without it, the
    /// datastore.
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    datastore: crate::datastore::DatastoreArguments,
    /// The sender: a pod as namespace/name, or an IP address.
    #[arg(long, required_unless_present = "flows", conflicts_with = "flows")]
    from: Option<String>,
    /// The receiver: a pod as namespace/name, an IP address, or a domain name given addresses
    /// with --resolve.
    #[arg(long, required_unless_present = "flows", conflicts_with = "flows")]
    to: Option<String>,
    /// NAME=ADDRESS[,ADDRESS]: the addresses a --to name resolved to (as curl's --resolve);
    /// repeatable. Each address is explained.
    #[arg(long, value_name = "NAME=ADDRESS[,ADDRESS]", value_parser = crate::resolve::parse_resolution, conflicts_with = "flows")]
    resolve: Vec<crate::resolve::Resolution>,
    /// TCP, UDP, SCTP, ICMP, ICMPv6 or a protocol number.
    #[arg(long, default_value = "TCP")]
    protocol: String,
    /// Destination port (not needed for ICMP).
    #[arg(long)]
    port: Option<u16>,
    /// A file of flows, one JSON object a line: {"from": "prod/web", "to": "203.0.113.7", "protocol": "TCP", "port": 443},
    /// optionally with "domain": the name "to" was resolved from.
    #[arg(long)]
    flows: Option<PathBuf>,
    /// text: the trace (with --flows, one line a flow); json: one document (with --flows, an
    /// array); jsonl: one object a line; csv: a header, then a row a flow.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
}

pub fn run(arguments: &ExplainArguments, out: &mut Output) -> Result<ExitCode, Failure> {
    let resources = resources_from(&arguments.paths, &arguments.datastore)?;
    let dataplane = sluice_policy::compile(&resources);
    if let Some(path) = &arguments.flows {
        return run_batch(&dataplane, path, arguments.output, out);
    }
    let to = arguments.to.clone().unwrap_or_default();
    let from = arguments.from.clone().unwrap_or_default();
    if crate::resolve::looks_like_name(&from) {
        return Err(
            format!("`{from}` is a name; the sender is a pod as namespace/name or an IP address").into(),
        );
    }
    // A name is explained once per address it resolved to.
    let (domain, destinations) = if crate::resolve::looks_like_name(&to) {
        let name = crate::resolve::domain_name(&to)?;
        let addresses = crate::resolve::addresses_of(&arguments.resolve, &name)?;
        (Some(name), addresses.iter().map(ToString::to_string).collect())
    } else {
        if let Some(resolution) = arguments.resolve.first() {
            return Err(format!(
                "--resolve {} gives addresses for a name, but --to `{to}` is not that name",
                resolution.name
            )
            .into());
        }
        (None, vec![to])
    };
    let mut explained = Vec::new();
    for destination in destinations {
        let mut request = FlowRequest {
            from: from.clone(),
            to: destination,
            protocol: Value::String(arguments.protocol.clone()),
            port: arguments.port,
            domain: domain.clone(),
        };
        let flow = request.prepare(&dataplane)?;
        let explanation = explain_with_domain(&dataplane, &flow, request.domain.as_deref());
        explained.push((request, explanation));
    }
    let several = explained.len() > 1;
    match arguments.output {
        OutputFormat::Json | OutputFormat::Jsonl => {
            let values: Vec<Value> = explained
                .iter()
                .map(|(request, explanation)| {
                    let mut value = request_json(request);
                    value["verdict"] = json!(explanation.verdict);
                    value["egress"] = json!(explanation.egress);
                    value["ingress"] = json!(explanation.ingress);
                    value
                })
                .collect();
            let texts = if arguments.output == OutputFormat::Json {
                // One address: one object, as without a name; several: an array.
                let document = if several { json!(values) } else { values[0].clone() };
                vec![serde_json::to_string_pretty(&document)]
            } else {
                values.iter().map(serde_json::to_string).collect()
            };
            for text in texts {
                writeln!(out, "{}", text.map_err(|error| error.to_string())?)?;
            }
        }
        OutputFormat::Csv => {
            writeln!(out, "{}", csv_record(&CSV_HEADER))?;
            for (request, explanation) in &explained {
                writeln!(out, "{}", csv_row(request, explanation))?;
            }
        }
        OutputFormat::Text => {
            if several {
                let verdicts: Vec<&str> = explained
                    .iter()
                    .map(|(_, explanation)| explanation.verdict)
                    .collect();
                let name = domain.as_deref().unwrap_or_default();
                if verdicts.iter().all(|verdict| *verdict == verdicts[0]) {
                    writeln!(
                        out,
                        "{} for all {} addresses of {name}; each is explained below",
                        verdicts[0].to_uppercase(),
                        verdicts.len()
                    )?;
                } else {
                    writeln!(
                        out,
                        "the {} addresses of {name} differ: some are allowed and some denied; each is explained below",
                        verdicts.len()
                    )?;
                }
                writeln!(out)?;
            }
            for (position, (request, explanation)) in explained.iter().enumerate() {
                if position > 0 {
                    writeln!(out)?;
                }
                write_text(out, request, explanation)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The columns of `-o csv`: the flow, the verdict, and the rule that decided (empty when none
/// did).
const CSV_HEADER: [&str; 13] = [
    "from",
    "to",
    "domain",
    "protocol",
    "port",
    "verdict",
    "reason",
    "rule_kind",
    "rule_namespace",
    "rule_name",
    "rule_tier",
    "rule_direction",
    "rule_index",
];

fn csv_row(request: &FlowRequest, explanation: &Explanation) -> String {
    let side = deciding(explanation);
    let port = request.port.map(|port| port.to_string()).unwrap_or_default();
    let mut fields = vec![
        request.from.clone(),
        request.to.clone(),
        request.domain.clone().unwrap_or_default(),
        protocol_text(request),
        port,
        explanation.verdict.to_string(),
        side.map(|side| side.reason.clone()).unwrap_or_default(),
    ];
    match side.and_then(|side| side.rule.as_ref()) {
        Some(rule) => fields.extend([
            rule.kind.to_string(),
            rule.namespace.clone().unwrap_or_default(),
            rule.name.clone(),
            rule.tier.clone(),
            rule.direction.to_string(),
            rule.rule_index.to_string(),
        ]),
        None => fields.extend(std::iter::repeat_n(String::new(), 6)),
    }
    csv_record(&fields)
}

fn request_json(request: &FlowRequest) -> Value {
    let mut value = json!({"from": request.from, "to": request.to, "protocol": request.protocol});
    if let Some(port) = request.port {
        value["port"] = json!(port);
    }
    if let Some(domain) = &request.domain {
        value["domain"] = json!(domain);
    }
    value
}

fn protocol_text(request: &FlowRequest) -> String {
    request
        .protocol
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| request.protocol.to_string())
}

/// `DENY prod/web -> 198.51.100.70 TCP port 443`, or with a name
/// `ALLOW prod/web -> api.partner.example (203.0.113.10) TCP port 443`.
fn headline(request: &FlowRequest, explanation: &Explanation) -> String {
    let port = request
        .port
        .map(|port| format!(" port {port}"))
        .unwrap_or_default();
    let to = match &request.domain {
        Some(domain) => format!("{domain} ({})", request.to),
        None => request.to.clone(),
    };
    format!(
        "{} {} -> {to} {}{port}",
        explanation.verdict.to_uppercase(),
        request.from,
        protocol_text(request)
    )
}

fn write_text(out: &mut Output, request: &FlowRequest, explanation: &Explanation) -> Result<(), Failure> {
    writeln!(out, "{}", headline(request, explanation))?;
    for side in [&explanation.egress, &explanation.ingress].into_iter().flatten() {
        writeln!(out)?;
        writeln!(out, "{} of {}: {}", side.direction, side.endpoint, side.reason)?;
        for step in &side.steps {
            writeln!(out, "  {step}")?;
        }
    }
    if explanation.egress.is_none() && explanation.ingress.is_none() {
        writeln!(out, "{NO_POLICY}")?;
    }
    Ok(())
}

const NO_POLICY: &str = "neither side is a pod in the inputs, so no policy applies";

/// The side that decided: the denying side if any, else the receiving side.
fn deciding(explanation: &Explanation) -> Option<&DirectionExplanation> {
    let sides = [&explanation.egress, &explanation.ingress];
    let denying = sides.iter().copied().flatten().find(|side| !side.allowed);
    denying
        .or(explanation.ingress.as_ref())
        .or(explanation.egress.as_ref())
}

fn run_batch(
    dataplane: &Dataplane,
    path: &PathBuf,
    output: OutputFormat,
    out: &mut Output,
) -> Result<ExitCode, Failure> {
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
            .and_then(|mut request| request.prepare(dataplane).map(|flow| (request, flow)));
        match parsed {
            Ok(entry) => requests.push(entry),
            Err(message) => errors.push(format!("{}:{}: {message}", path.display(), index + 1)),
        }
    }
    if !errors.is_empty() {
        for error in &errors {
            eprintln!("error: {error}");
        }
        return Err(format!("{} bad flow line(s); nothing was evaluated", errors.len()).into());
    }
    match output {
        OutputFormat::Csv => writeln!(out, "{}", csv_record(&CSV_HEADER))?,
        OutputFormat::Json => writeln!(out, "[")?,
        OutputFormat::Text | OutputFormat::Jsonl => {}
    }
    for (position, (request, flow)) in requests.iter().enumerate() {
        let explanation = explain_with_domain(dataplane, flow, request.domain.as_deref());
        let side = deciding(&explanation);
        match output {
            OutputFormat::Text => {
                let reason = side.map_or(NO_POLICY, |side| side.reason.as_str());
                writeln!(out, "{}: {reason}", headline(request, &explanation))?;
            }
            OutputFormat::Csv => writeln!(out, "{}", csv_row(request, &explanation))?,
            OutputFormat::Json | OutputFormat::Jsonl => {
                let mut value = request_json(request);
                value["verdict"] = json!(explanation.verdict);
                value["reason"] = json!(side.map(|side| &side.reason));
                value["rule"] = json!(side.and_then(|side| side.rule.as_ref()));
                if output == OutputFormat::Jsonl {
                    let text = serde_json::to_string(&value).map_err(|error| error.to_string())?;
                    writeln!(out, "{text}")?;
                } else {
                    // One array, streamed: an element per flow, indented as serde_json would.
                    let text = serde_json::to_string_pretty(&value).map_err(|error| error.to_string())?;
                    let separator = if position + 1 < requests.len() { "," } else { "" };
                    writeln!(out, "  {}{separator}", text.replace('\n', "\n  "))?;
                }
            }
        }
    }
    if output == OutputFormat::Json {
        writeln!(out, "]")?;
    }
    Ok(ExitCode::SUCCESS)
}
