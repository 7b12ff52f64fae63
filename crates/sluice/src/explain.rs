//! `sluice explain`: one flow with a readable trace, or a batch of flows as JSON lines.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};
use sluice_policy::{Dataplane, DirectionExplanation, Explanation, FamilyPair, HttpRequest, explain_with_l7};

use crate::OutputFormat;
use crate::diagnostics::resources_from;
use crate::flows::{FlowRequest, ResolvedFlows};
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
    /// With a --to name and no --resolve, reading the datastore: take the addresses the
    /// sender learned for the name from this node's agent (default: the sending pod's node),
    /// as `sluice get dnscache` shows them.
    #[arg(long, conflicts_with = "flows")]
    node: Option<String>,
    /// TCP, UDP, SCTP, ICMP, ICMPv6 or a protocol number.
    #[arg(long, default_value = "TCP")]
    protocol: String,
    /// Destination port (not needed for ICMP).
    #[arg(long)]
    port: Option<u16>,
    /// The HTTP request's method, for rules with an HTTP match (default GET when another
    /// --http-* is given).
    #[arg(long, value_name = "METHOD", conflicts_with = "flows")]
    http_method: Option<String>,
    /// The HTTP request's path (default `/` when another --http-* is given).
    #[arg(long, value_name = "PATH", conflicts_with = "flows")]
    http_path: Option<String>,
    /// The HTTP request's Host header.
    #[arg(long, value_name = "HOST", conflicts_with = "flows")]
    http_host: Option<String>,
    /// The server name of the TLS ClientHello, for rules with a TLS match.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["flows", "http_method", "http_path", "http_host"])]
    server_name: Option<String>,
    /// A file of flows, one JSON object a line: {"from": "prod/web", "to": "203.0.113.7", "protocol": "TCP", "port": 443},
    /// optionally with "domain": the name "to" was resolved from, and "http": {"method": "GET",
    /// "path": "/v1/x", "host": "api.partner.example"} or "serverName": "api.partner.example".
    #[arg(long)]
    flows: Option<PathBuf>,
    /// text: the trace (with --flows, one line a flow); json: one document (with --flows, an
    /// array); jsonl: one object a line; csv: a header, then a row a flow.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
}

/// The addresses the sending pod learned for `name`, from its node's published DNS cache.
fn learned_addresses(
    dataplane: &Dataplane,
    arguments: &ExplainArguments,
    from: &str,
    name: &str,
) -> Result<Vec<std::net::IpAddr>, String> {
    let sender = match from.parse::<std::net::IpAddr>() {
        Ok(address) => dataplane.endpoint_by_address(address),
        Err(_) => from
            .split_once('/')
            .and_then(|(namespace, pod)| dataplane.endpoint_by_name(namespace, pod)),
    }
    .ok_or_else(|| {
        format!(
            "`{name}` is a name: a node's learned DNS cache gives its addresses only for a sending pod, and `{from}` is none; give --resolve {name}=ADDRESS[,ADDRESS]"
        )
    })?;
    let node = arguments
        .node
        .clone()
        .or_else(|| sender.node.clone())
        .ok_or_else(|| {
            format!(
                "{} has no node; give --node or --resolve {name}=ADDRESS",
                sender.display_name()
            )
        })?;
    let store = arguments.datastore.open()?;
    let addresses = crate::dnscache::learned_addresses(store.as_ref(), &node, &sender.display_name(), name)?;
    if addresses.is_empty() {
        return Err(format!(
            "node {node}'s agent has no address of `{name}` learned for {} (not resolved by it, or expired; see `sluice get dnscache --node {node}`); give --resolve {name}=ADDRESS[,ADDRESS]",
            sender.display_name()
        ));
    }
    Ok(addresses)
}

pub fn run(arguments: &ExplainArguments, out: &mut Output) -> Result<ExitCode, Failure> {
    let resources = resources_from(&arguments.paths, &arguments.datastore)?;
    let dataplane = sluice_policy::compile(&resources);
    // The "what if" beside the enforced verdict, only when something is staged.
    let staged =
        sluice_policy::has_staged_policies(&resources).then(|| sluice_policy::compile_staged(&resources));
    let plans = Plans {
        enforced: &dataplane,
        staged: staged.as_ref(),
    };
    if let Some(path) = &arguments.flows {
        return run_batch(plans, path, arguments.output, out);
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
        let addresses = if arguments.resolve.is_empty() && arguments.paths.is_empty() {
            learned_addresses(&dataplane, arguments, &from, &name)?
        } else {
            crate::resolve::addresses_of(&arguments.resolve, &name)?
        };
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
    let http =
        (arguments.http_method.is_some() || arguments.http_path.is_some() || arguments.http_host.is_some())
            .then(|| HttpRequest {
                method: arguments.http_method.clone().unwrap_or_else(|| "GET".to_string()),
                path: arguments.http_path.clone().unwrap_or_else(|| "/".to_string()),
                host: arguments.http_host.clone(),
            });
    let mut requests = Vec::new();
    for destination in destinations {
        let mut request = FlowRequest {
            from: from.clone(),
            to: destination,
            protocol: Value::String(arguments.protocol.clone()),
            port: arguments.port,
            domain: domain.clone(),
            http: http.clone(),
            server_name: arguments.server_name.clone(),
        };
        let flows = request.prepare_flows(&dataplane)?;
        requests.push((request, flows));
    }
    let answers: Vec<Answer> = requests
        .iter()
        .map(|(request, flows)| Answer::new(plans, request, flows.clone()))
        .collect();
    let several = answers.len() > 1;
    match arguments.output {
        OutputFormat::Json | OutputFormat::Jsonl => {
            let values: Vec<Value> = answers.iter().map(|answer| answer.json(true)).collect();
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
            for answer in &answers {
                for row in answer.csv_rows() {
                    writeln!(out, "{row}")?;
                }
            }
        }
        OutputFormat::Text => {
            if several {
                let verdicts: Vec<&str> = answers.iter().map(Answer::verdict).collect();
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
            for (position, answer) in answers.iter().enumerate() {
                if position > 0 {
                    writeln!(out)?;
                }
                answer.write_text(out)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The IRs a flow is explained on: the enforced one, and the one with every staged policy
/// applied when any is staged. Both come from the one compiler; their endpoints are the same.
#[derive(Clone, Copy)]
struct Plans<'a> {
    enforced: &'a Dataplane,
    staged: Option<&'a Dataplane>,
}

/// The verdict of two peers that share no IP family: no packet of either family can pass.
const NO_COMMON_FAMILY: &str = "no-common-family";
/// The verdict when the families the peers share get different verdicts.
const MIXED: &str = "mixed";

/// A request's explanations: one per IP family both sides have.
struct Answer<'a> {
    request: &'a FlowRequest,
    families: Vec<(FamilyPair, Explanation)>,
    /// The same families with every staged policy applied, when any is staged.
    staged: Option<Vec<Explanation>>,
    /// Per family, the hits that decide with every staged policy applied, as flow logs'
    /// `pending_policies` name them (egress, then ingress).
    pending_policies: Vec<Vec<String>>,
    /// Why there is no family to explain, when there is none.
    no_common_family: Option<String>,
    /// One family explained though a side has both: the only family the other side has.
    only_shared_family: bool,
}

impl<'a> Answer<'a> {
    fn new(plans: Plans<'_>, request: &'a FlowRequest, resolved: ResolvedFlows) -> Answer<'a> {
        let domain = request.domain.as_deref();
        let l7 = request.l7();
        let l7 = l7.as_ref();
        Answer {
            request,
            no_common_family: resolved.no_common_family(request),
            only_shared_family: resolved.either_dual_stack && resolved.flows.len() == 1,
            staged: plans.staged.map(|staged| {
                resolved
                    .flows
                    .iter()
                    .map(|(_, flow)| explain_with_l7(staged, flow, domain, l7))
                    .collect()
            }),
            pending_policies: plans
                .staged
                .map(|staged| {
                    resolved
                        .flows
                        .iter()
                        .map(|(_, flow)| {
                            let hits = staged.deciding_hits_with_l7(flow, domain, l7);
                            [hits.egress, hits.ingress]
                                .into_iter()
                                .flatten()
                                .map(|hit| hit.text())
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default(),
            families: resolved
                .flows
                .iter()
                .map(|(pair, flow)| (*pair, explain_with_l7(plans.enforced, flow, domain, l7)))
                .collect(),
        }
    }

    /// `allow` or `deny` when every shared family agrees, `mixed` when they differ,
    /// `no-common-family` when there is none.
    fn verdict(&self) -> &'static str {
        overall_verdict(self.families.iter().map(|(_, explanation)| explanation))
    }

    /// The same with every staged policy applied, when any is staged.
    fn staged_verdict(&self) -> Option<&'static str> {
        self.staged.as_ref().map(|staged| overall_verdict(staged.iter()))
    }

    /// Whether every family was decided for the same reasons, so one trace tells them all.
    fn one_story(&self) -> bool {
        let story = |explanation: &Explanation| {
            [&explanation.egress, &explanation.ingress].map(|side| {
                side.as_ref()
                    .map(|side| (side.reason.clone(), side.steps.clone()))
            })
        };
        let mut stories = self.families.iter().map(|(_, explanation)| story(explanation));
        let first = stories.next();
        stories.all(|other| Some(&other) == first.as_ref())
    }

    /// `DENY prod/web -> 198.51.100.70 TCP port 443`, with the families when there are two.
    fn headline(&self) -> String {
        let flow = flow_text(self.request);
        match self.families.as_slice() {
            [] => format!("NO COMMON IP FAMILY {flow}"),
            [(pair, explanation)] if self.only_shared_family => format!(
                "{} {flow} (over {}, the only IP family both have)",
                explanation.verdict.to_uppercase(),
                pair.family
            ),
            [(_, explanation)] => format!("{} {flow}", explanation.verdict.to_uppercase()),
            families if self.verdict() == MIXED => {
                let each: Vec<String> = families
                    .iter()
                    .map(|(pair, explanation)| {
                        format!("{} {}", pair.family, explanation.verdict.to_uppercase())
                    })
                    .collect();
                format!("MIXED {flow}: {}", each.join(", "))
            }
            _ => format!("{} {flow} (IPv4 and IPv6 agree)", self.verdict().to_uppercase()),
        }
    }

    fn write_text(&self, out: &mut Output) -> Result<(), Failure> {
        writeln!(out, "{}", self.headline())?;
        if let Some(verdict) = self.staged_verdict() {
            writeln!(out, "{}", staged_headline(verdict, self.verdict()))?;
        }
        if let Some(reason) = &self.no_common_family {
            writeln!(out)?;
            writeln!(out, "{reason}")?;
            return Ok(());
        }
        let several = self.families.len() > 1 && !self.one_story();
        let shown = if several { self.families.len() } else { 1 };
        for (pair, explanation) in &self.families[..shown] {
            if several {
                writeln!(out)?;
                writeln!(
                    out,
                    "over {} ({} -> {}): {}",
                    pair.family,
                    pair.source,
                    pair.destination,
                    explanation.verdict.to_uppercase()
                )?;
            }
            write_trace(out, explanation)?;
        }
        if let Some(staged) = &self.staged {
            for ((pair, _), explanation) in self.families.iter().zip(staged).take(shown) {
                writeln!(out)?;
                let family = if several {
                    format!(" over {}", pair.family)
                } else {
                    String::new()
                };
                writeln!(
                    out,
                    "{STAGED_WITH}{family}: {}",
                    explanation.verdict.to_uppercase()
                )?;
                write_trace(out, explanation)?;
            }
        }
        Ok(())
    }

    /// One line: the headline and what decided.
    fn line(&self) -> String {
        let reasons: Vec<String> = if let Some(reason) = &self.no_common_family {
            vec![reason.clone()]
        } else if self.families.len() > 1 && !self.one_story() {
            self.families
                .iter()
                .map(|(pair, explanation)| format!("{}: {}", pair.family, reason_of(explanation)))
                .collect()
        } else {
            self.families
                .first()
                .map(|(_, explanation)| reason_of(explanation).to_string())
                .into_iter()
                .collect()
        };
        let line = format!("{}: {}", self.headline(), reasons.join("; "));
        match (&self.staged, self.staged_verdict()) {
            (Some(staged), Some(verdict)) if self.no_common_family.is_none() => {
                let reasons: Vec<&str> = staged.iter().map(reason_of).collect();
                let mut distinct = reasons.clone();
                distinct.dedup();
                format!(
                    "{line} | staged {}: {}",
                    verdict.to_uppercase(),
                    distinct.join("; ")
                )
            }
            _ => line,
        }
    }

    /// The request with its verdict; `full` carries every step (one flow), otherwise the
    /// deciding reason and rule (batches). With one family the directions are also at the top,
    /// as they were before families were told apart.
    fn json(&self, full: bool) -> Value {
        let mut value = request_json(self.request);
        value["verdict"] = json!(self.verdict());
        if let Some(reason) = &self.no_common_family {
            value["reason"] = json!(reason);
        }
        let families: Vec<Value> = self
            .families
            .iter()
            .map(|(pair, explanation)| {
                let mut family = json!({
                    "family": pair.family,
                    "from_address": pair.source,
                    "to_address": pair.destination,
                    "verdict": explanation.verdict,
                });
                add_explanation(&mut family, explanation, full);
                family
            })
            .collect();
        if let [(pair, explanation)] = self.families.as_slice() {
            value["family"] = json!(pair.family);
            add_explanation(&mut value, explanation, full);
        }
        value["families"] = json!(families);
        // With every staged policy applied, in the same shape (present only when any is staged).
        if let (Some(staged), Some(verdict)) = (&self.staged, self.staged_verdict()) {
            let mut staged_value = json!({"verdict": verdict});
            if let ([explanation], [pending]) = (staged.as_slice(), self.pending_policies.as_slice()) {
                add_explanation(&mut staged_value, explanation, full);
                staged_value["pending_policies"] = json!(pending);
            }
            for ((family, explanation), pending) in value["families"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .zip(staged)
                .zip(&self.pending_policies)
            {
                let mut family_staged = json!({"verdict": explanation.verdict});
                add_explanation(&mut family_staged, explanation, full);
                family_staged["pending_policies"] = json!(pending);
                family["staged"] = family_staged;
            }
            value["staged"] = staged_value;
        }
        value
    }

    /// A row per family (a single row saying so when there is none).
    fn csv_rows(&self) -> Vec<String> {
        if let Some(reason) = &self.no_common_family {
            let mut fields = vec![
                self.request.from.clone(),
                self.request.to.clone(),
                self.request.domain.clone().unwrap_or_default(),
                protocol_text(self.request),
                port_text(self.request),
                NO_COMMON_FAMILY.to_string(),
                reason.clone(),
            ];
            fields.extend(std::iter::repeat_n(String::new(), 7));
            return vec![csv_record(&fields)];
        }
        self.families
            .iter()
            .map(|(pair, explanation)| csv_row(self.request, pair, explanation))
            .collect()
    }
}

/// `allow` or `deny` when every family agrees, `mixed` when they differ, `no-common-family`
/// when there is none.
fn overall_verdict<'e>(explanations: impl Iterator<Item = &'e Explanation>) -> &'static str {
    let mut verdicts = explanations.map(|explanation| explanation.verdict);
    match verdicts.next() {
        None => NO_COMMON_FAMILY,
        Some(first) if verdicts.all(|verdict| verdict == first) => first,
        Some(_) => MIXED,
    }
}

/// How the text output introduces the verdict with staged policies applied.
const STAGED_WITH: &str = "with every staged policy applied";

/// `STAGED DENY with every staged policy applied (enforced: ALLOW)`, or `(unchanged)`.
fn staged_headline(staged: &str, enforced: &str) -> String {
    let change = if staged == enforced {
        "unchanged".to_string()
    } else {
        format!("enforced: {}", enforced.to_uppercase())
    };
    format!("STAGED {} {STAGED_WITH} ({change})", staged.to_uppercase())
}

fn add_explanation(value: &mut Value, explanation: &Explanation, full: bool) {
    if full {
        value["egress"] = json!(explanation.egress);
        value["ingress"] = json!(explanation.ingress);
    } else {
        let side = deciding(explanation);
        value["reason"] = json!(side.map(|side| &side.reason));
        value["rule"] = json!(side.and_then(|side| side.rule.as_ref()));
    }
}

/// The columns of `-o csv`: the flow, the verdict, the rule that decided (empty when none
/// did), and the IP family (a row each when the peers share both).
const CSV_HEADER: [&str; 14] = [
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
    "family",
];

fn csv_row(request: &FlowRequest, pair: &FamilyPair, explanation: &Explanation) -> String {
    let side = deciding(explanation);
    let mut fields = vec![
        request.from.clone(),
        request.to.clone(),
        request.domain.clone().unwrap_or_default(),
        protocol_text(request),
        port_text(request),
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
    fields.push(pair.family.to_string());
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
    if let Some(http) = &request.http {
        value["http"] = json!(http);
    }
    if let Some(name) = &request.server_name {
        value["serverName"] = json!(name);
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

fn port_text(request: &FlowRequest) -> String {
    request.port.map(|port| port.to_string()).unwrap_or_default()
}

/// `prod/web -> 198.51.100.70 TCP port 443`, or with a name
/// `prod/web -> api.partner.example (203.0.113.10) TCP port 443`.
fn flow_text(request: &FlowRequest) -> String {
    let port = request
        .port
        .map(|port| format!(" port {port}"))
        .unwrap_or_default();
    let to = match &request.domain {
        Some(domain) => format!("{domain} ({})", request.to),
        None => request.to.clone(),
    };
    let l7 = request
        .l7_text()
        .map(|text| format!(", {text}"))
        .unwrap_or_default();
    format!("{} -> {to} {}{port}{l7}", request.from, protocol_text(request))
}

fn write_trace(out: &mut Output, explanation: &Explanation) -> Result<(), Failure> {
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

fn reason_of(explanation: &Explanation) -> &str {
    deciding(explanation).map_or(NO_POLICY, |side| side.reason.as_str())
}

/// The side that decided: the denying side if any, else the receiving side.
fn deciding(explanation: &Explanation) -> Option<&DirectionExplanation> {
    let sides = [&explanation.egress, &explanation.ingress];
    let denying = sides.iter().copied().flatten().find(|side| !side.allowed);
    denying
        .or(explanation.ingress.as_ref())
        .or(explanation.egress.as_ref())
}

fn run_batch(
    plans: Plans<'_>,
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
            .and_then(|mut request| {
                request
                    .prepare_flows(plans.enforced)
                    .map(|flows| (request, flows))
            });
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
    for (position, (request, flows)) in requests.iter().enumerate() {
        let answer = Answer::new(plans, request, flows.clone());
        match output {
            OutputFormat::Text => writeln!(out, "{}", answer.line())?,
            OutputFormat::Csv => {
                for row in answer.csv_rows() {
                    writeln!(out, "{row}")?;
                }
            }
            OutputFormat::Jsonl => {
                let text = serde_json::to_string(&answer.json(false)).map_err(|error| error.to_string())?;
                writeln!(out, "{text}")?;
            }
            OutputFormat::Json => {
                // One array, streamed: an element per flow, indented as serde_json would.
                let text =
                    serde_json::to_string_pretty(&answer.json(false)).map_err(|error| error.to_string())?;
                let separator = if position + 1 < requests.len() { "," } else { "" };
                writeln!(out, "  {}{separator}", text.replace('\n', "\n  "))?;
            }
        }
    }
    if output == OutputFormat::Json {
        writeln!(out, "]")?;
    }
    Ok(ExitCode::SUCCESS)
}
