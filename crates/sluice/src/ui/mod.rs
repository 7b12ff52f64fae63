//! `sluice ui`: a web page served by the binary, its assets compiled in (nothing is fetched from
//! elsewhere at runtime). It follows every agent's flow log (as `sluice flows` finds them) into
//! a bounded ring, and serves:
//!
//! - `/`, `/app.js`, `/style.css`: the page (live flows with filters, denied in red, a picture
//!   of who talks to whom, a flow's `explain` trace on click);
//! - `/api/flows?after=N`: `{"last": N, "agents": K, "flows": [records]}`, what came after N;
//! - `/api/explain?from=&to=&protocol=&port=`: `sluice explain` for that flow against the same
//!   datastore, `{"verdict", "text", "json"}`, so the page shows exactly what the command says.
//!
//! A page opened with `?select=first-denied` opens the first denied flow's trace by itself, as
//! a click would (what the browser test uses).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use clap::Args;
use serde_json::{Value, json};
use sluice_agent::flows::RecentFlows;

use crate::flow_log::{AgentCursor, agent_endpoints};
use crate::output::{Failure, Output};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

#[derive(Debug, Args)]
pub struct UiArguments {
    /// Serve the page here (loopback by default: the page has no login).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    /// An agent's flow endpoint (http://HOST:PORT or unix:PATH) besides those the nodes' status
    /// records name; repeatable.
    #[arg(long = "agent", value_name = "ENDPOINT")]
    agent: Vec<String>,
    /// Show flows that ended this long ago or later when the page starts.
    #[arg(long, default_value = "1h")]
    since: String,
    #[command(flatten)]
    datastore: crate::datastore::DatastoreArguments,
}

pub fn run(arguments: &UiArguments, out: &mut Output) -> Result<ExitCode, Failure> {
    let since = sluice_agent::flows::parse_since(&arguments.since, SystemTime::now())
        .map_err(|message| Failure::from(message.trim_end().to_string()))?;
    let server = tiny_http::Server::http(&arguments.listen)
        .map_err(|error| Failure::from(format!("cannot listen on {}: {error}", arguments.listen)))?;
    let bound = server
        .server_addr()
        .to_ip()
        .map_or_else(|| arguments.listen.clone(), |address| address.to_string());
    writeln!(out, "serving the flows page on http://{bound}/ (Ctrl-C stops it)")?;
    out.flush()?;

    let flows = Arc::new(RecentFlows::new(20_000, 32 << 20));
    let agents = Arc::new(AtomicUsize::new(0));
    let datastore = arguments.datastore.clone();
    let explicit = arguments.agent.clone();
    {
        let flows = Arc::clone(&flows);
        let agents = Arc::clone(&agents);
        std::thread::Builder::new()
            .name("ui-follow".into())
            .spawn(move || follow_agents(&datastore, &explicit, since, &flows, &agents))
            .map_err(|error| Failure::from(error.to_string()))?;
    }
    for request in server.incoming_requests() {
        let flows = Arc::clone(&flows);
        let agents = agents.load(Ordering::Relaxed);
        let datastore = arguments.datastore.clone();
        // Explaining runs a process: each request on its own thread keeps the page polling.
        let _ = std::thread::Builder::new()
            .name("ui-request".into())
            .spawn(move || handle(request, &flows, agents, &datastore));
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls every agent each second for as long as the page is served (the process ends with
/// Ctrl-C); the list of agents is read again every ten seconds, so agents that start later are
/// found.
fn follow_agents(
    datastore: &crate::datastore::DatastoreArguments,
    explicit: &[String],
    since: u64,
    flows: &RecentFlows,
    agents: &AtomicUsize,
) {
    let mut cursors: Vec<AgentCursor> = Vec::new();
    let mut round = 0u64;
    loop {
        if round % 10 == 0 {
            let mut found: Vec<(String, String)> = explicit
                .iter()
                .map(|endpoint| (endpoint.clone(), endpoint.clone()))
                .collect();
            if let Ok(store) = datastore.open()
                && let Ok(endpoints) = agent_endpoints(store.as_ref(), None)
            {
                found.extend(endpoints);
            }
            for (node, endpoint) in found {
                if !cursors.iter().any(|cursor| cursor.endpoint == endpoint) {
                    cursors.push(AgentCursor::new(node, endpoint, since));
                }
            }
            agents.store(cursors.len(), Ordering::Relaxed);
        }
        for cursor in &mut cursors {
            if let Ok(records) = cursor.poll() {
                flows.push(records.into_iter().map(|record| {
                    let end = record.get("end_time").and_then(Value::as_u64).unwrap_or(0);
                    (end, record.to_string())
                }));
            }
        }
        round += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn handle(
    request: tiny_http::Request,
    flows: &RecentFlows,
    agents: usize,
    datastore: &crate::datastore::DatastoreArguments,
) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let parameters: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let parameter = |name: &str| {
        parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let (status, content_type, body) = match path {
        "/" | "/index.html" => (200, "text/html; charset=utf-8", INDEX.to_string()),
        "/app.js" => (200, "text/javascript; charset=utf-8", SCRIPT.to_string()),
        "/style.css" => (200, "text/css; charset=utf-8", STYLE.to_string()),
        "/api/flows" => {
            let after = parameter("after")
                .and_then(|value| value.parse().ok())
                .unwrap_or(0);
            let records = flows.select(0, after);
            let last = records
                .last()
                .map_or(after.max(flows.last_sequence()), |record| record.sequence);
            let lines: Vec<Value> = records
                .iter()
                .filter_map(|record| serde_json::from_str(&record.line).ok())
                .collect();
            let body = json!({"last": last, "agents": agents, "flows": lines});
            (200, "application/json", body.to_string())
        }
        "/api/explain" => match explain(
            datastore,
            parameter("from"),
            parameter("to"),
            parameter("protocol"),
            parameter("port"),
        ) {
            Ok(answer) => (200, "application/json", answer.to_string()),
            Err(message) => (200, "application/json", json!({"error": message}).to_string()),
        },
        _ => (404, "text/plain", "not found\n".to_string()),
    };
    let header =
        tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()).expect("a valid header");
    let _ = request.respond(
        tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(header),
    );
}

/// `sluice explain` for the flow, as text and as JSON, from this same binary.
fn explain(
    datastore: &crate::datastore::DatastoreArguments,
    from: Option<&str>,
    to: Option<&str>,
    protocol: Option<&str>,
    port: Option<&str>,
) -> Result<Value, String> {
    let (Some(from), Some(to)) = (from, to) else {
        return Err("from and to are needed".to_string());
    };
    let binary = std::env::current_exe().map_err(|error| error.to_string())?;
    let run = |format: &str| -> Result<(bool, String), String> {
        let mut command = std::process::Command::new(&binary);
        command.args(["explain", "--from", from, "--to", to, "-o", format]);
        command.args(["--protocol", protocol.unwrap_or("TCP")]);
        if let Some(port) = port.filter(|port| !port.is_empty()) {
            command.args(["--port", port]);
        }
        command.args(datastore.arguments());
        let output = command.output().map_err(|error| error.to_string())?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if text.trim().is_empty() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok((output.status.success(), text))
    };
    let (_, text) = run("text")?;
    let (_, json_text) = run("json")?;
    let document: Value = serde_json::from_str(&json_text).map_err(|error| error.to_string())?;
    Ok(json!({
        "verdict": document.get("verdict").cloned().unwrap_or(Value::Null),
        "text": text,
        "json": document,
    }))
}
