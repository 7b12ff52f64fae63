//! `sluice get egress`: the egress gateway routing each node's agent publishes under
//! `/sluice-status/egress/<node>`: per client pod its gateways and what chose them, then per
//! gateway its clients and its health as each node's prober sees it. Reading and printing
//! here; the rows are pure functions of the records and the time, so they are unit-tested.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sluice_agent::gateway::record::{EGRESS_PREFIX, EgressRecord, GatewayRecord, egress_key};
use sluice_agent::{HEARTBEAT_INTERVAL, STALE_HEARTBEATS};
use sluice_store::Store;

use crate::get::GetFormat;
use crate::output::{Failure, Output, write_table};

/// Which clients and gateways to show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this node's record.
    pub node: Option<String>,
    /// Only clients in this namespace, and the gateways in it or serving them.
    pub namespace: Option<String>,
}

/// The published records: one node's, or every node's, by node name.
pub fn records(store: &dyn Store, node: Option<&str>) -> Result<Vec<EgressRecord>, String> {
    let values = match node {
        Some(node) => store
            .get(&egress_key(node))
            .map_err(|error| error.to_string())?
            .into_iter()
            .collect(),
        None => store.list(EGRESS_PREFIX).map_err(|error| error.to_string())?.0,
    };
    let mut records = values
        .iter()
        .map(|value| {
            serde_json::from_slice(&value.value)
                .map_err(|error| format!("{}: not an egress record: {error}", value.key))
        })
        .collect::<Result<Vec<EgressRecord>, String>>()?;
    records.sort_by(|left, right| left.node.cmp(&right.node));
    Ok(records)
}

/// A record is stale as a node status is: older than [`STALE_HEARTBEATS`] heartbeats, so its
/// agent is presumed dead or cut off and what it says about health is no longer known.
pub fn is_stale(record: &EgressRecord, now: SystemTime) -> bool {
    age(record, now) > HEARTBEAT_INTERVAL * STALE_HEARTBEATS
}

/// How long ago the record was written; zero when it claims to be from the future.
fn age(record: &EgressRecord, now: SystemTime) -> Duration {
    now.duration_since(record.updated).unwrap_or(Duration::ZERO)
}

/// The records cut down to what `filter` asks for: a namespace keeps its clients and the
/// gateways in it or serving one of them.
pub fn filter_records(records: Vec<EgressRecord>, filter: &Filter) -> Vec<EgressRecord> {
    records
        .into_iter()
        .filter(|record| filter.node.as_ref().is_none_or(|node| &record.node == node))
        .map(|mut record| {
            if let Some(namespace) = &filter.namespace {
                let prefix = format!("{namespace}/");
                record.clients.retain(|client| client.client.starts_with(&prefix));
                let serving: BTreeSet<String> = record
                    .clients
                    .iter()
                    .flat_map(|client| &client.routes)
                    .flat_map(|route| route.gateways.iter().cloned())
                    .collect();
                record.gateways.retain(|gateway| {
                    gateway.gateway.starts_with(&prefix) || serving.contains(&gateway.gateway)
                });
                record
                    .warnings
                    .retain(|warning| warning.starts_with(&format!("pod {prefix}")));
            }
            record
        })
        .collect()
}

/// The health a record gives a gateway: `unknown (stale)` from a stale record, `unknown` for
/// a gateway its prober does not list.
fn health(gateway: Option<&GatewayRecord>, stale: bool) -> String {
    match gateway {
        _ if stale => "unknown (stale)".to_string(),
        Some(gateway) => gateway.health.clone(),
        None => "unknown".to_string(),
    }
}

fn dash(text: Option<String>) -> String {
    text.filter(|text| !text.is_empty())
        .unwrap_or_else(|| "-".to_string())
}

fn probe_text(gateway: Option<&GatewayRecord>) -> String {
    dash(
        gateway
            .and_then(|gateway| gateway.probe_milliseconds)
            .map(|milliseconds| format!("{milliseconds:.1}ms")),
    )
}

/// One row per client, destination and gateway (one row for a destination without gateways).
pub fn client_rows(records: &[EgressRecord], now: SystemTime, wide: bool) -> Vec<Vec<String>> {
    let mut header = vec![
        "NODE",
        "CLIENT",
        "DESTINATION",
        "ROUTE",
        "GATEWAY",
        "ADDRESS",
        "GATEWAY NODE",
        "HEALTH",
        "CHOSEN BY",
    ];
    if wide {
        header.extend(["TABLE", "RULE", "PROBE", "LAST ERROR", "AGE"]);
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for record in records {
        let stale = is_stale(record, now);
        let record_age = sluice_agent::format_age(age(record, now));
        for client in &record.clients {
            for route in &client.routes {
                let gateways: Vec<Option<&str>> = if route.gateways.is_empty() {
                    vec![None]
                } else {
                    route.gateways.iter().map(|name| Some(name.as_str())).collect()
                };
                for name in gateways {
                    let gateway =
                        name.and_then(|name| record.gateways.iter().find(|gateway| gateway.gateway == name));
                    let mut row = vec![
                        record.node.clone(),
                        client.client.clone(),
                        route.destination.clone(),
                        route.action.clone(),
                        dash(name.map(str::to_string)),
                        dash(gateway.map(|gateway| gateway.address.to_string())),
                        dash(gateway.map(|gateway| gateway.node.clone())),
                        if name.is_some() {
                            health(gateway, stale)
                        } else {
                            "-".to_string()
                        },
                        client.chosen_by.clone(),
                    ];
                    if wide {
                        row.extend([
                            client.table.to_string(),
                            dash(route.policy_rule.map(|rule| rule.to_string())),
                            probe_text(gateway),
                            dash(gateway.and_then(|gateway| gateway.last_error.clone())),
                            record_age.clone(),
                        ]);
                    }
                    rows.push(row);
                }
            }
        }
    }
    rows
}

/// One row per gateway and node whose prober checks it, by gateway: its health as each node
/// sees it and the clients it carries there.
pub fn gateway_rows(records: &[EgressRecord], now: SystemTime, wide: bool) -> Vec<Vec<String>> {
    let mut header = vec![
        "GATEWAY",
        "ADDRESS",
        "NODE",
        "SEEN FROM",
        "HEALTH",
        "SINCE",
        "CLIENTS",
    ];
    if wide {
        header.extend(["PROBE", "LAST ERROR", "AGE"]);
    }
    let mut seen: Vec<(&EgressRecord, &GatewayRecord)> = records
        .iter()
        .flat_map(|record| record.gateways.iter().map(move |gateway| (record, gateway)))
        .collect();
    seen.sort_by(|left, right| (&left.1.gateway, &left.0.node).cmp(&(&right.1.gateway, &right.0.node)));
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for (record, gateway) in seen {
        let stale = is_stale(record, now);
        let clients: Vec<&str> = record
            .clients
            .iter()
            .filter(|client| {
                client
                    .routes
                    .iter()
                    .any(|route| route.gateways.contains(&gateway.gateway))
            })
            .map(|client| client.client.as_str())
            .collect();
        let mut row =
            vec![
                gateway.gateway.clone(),
                gateway.address.to_string(),
                gateway.node.clone(),
                record.node.clone(),
                health(Some(gateway), stale),
                dash(gateway.since.map(|since| {
                    sluice_agent::format_age(now.duration_since(since).unwrap_or(Duration::ZERO))
                })),
                dash(Some(clients.join(","))),
            ];
        if wide {
            row.extend([
                probe_text(Some(gateway)),
                dash(gateway.last_error.clone()),
                sluice_agent::format_age(age(record, now)),
            ]);
        }
        rows.push(row);
    }
    rows
}

/// `-o json`/`yaml`: the records as published, each with `stale` added.
pub fn document(records: &[EgressRecord], now: SystemTime) -> Result<Value, String> {
    records
        .iter()
        .map(|record| {
            let mut value = serde_json::to_value(record).map_err(|error| error.to_string())?;
            if let Value::Object(object) = &mut value {
                object.insert("stale".to_string(), Value::Bool(is_stale(record, now)));
            }
            Ok(value)
        })
        .collect::<Result<Vec<Value>, String>>()
        .map(Value::Array)
}

pub fn run(
    store: &dyn Store,
    filter: &Filter,
    format: GetFormat,
    out: &mut Output,
) -> Result<ExitCode, Failure> {
    let all = records(store, filter.node.as_deref())?;
    if let Some(node) = &filter.node
        && all.is_empty()
    {
        return Err(format!(
            "no egress state published for node {node}: its agent has not published egress state, or does not run"
        )
        .into());
    }
    let records = filter_records(all, filter);
    let now = SystemTime::now();
    match format {
        GetFormat::Json | GetFormat::Yaml => {
            crate::get::write_document(out, &document(&records, now)?, format)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ if records.is_empty() => {
            eprintln!("No egress state: no agent has published egress state");
            return Ok(ExitCode::SUCCESS);
        }
        GetFormat::Name => {
            for record in &records {
                writeln!(out, "egress/{}", record.node)?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        GetFormat::Table | GetFormat::Wide => {}
    }
    for record in records.iter().filter(|record| is_stale(record, now)) {
        eprintln!(
            "warning: the egress record of node {} is {} old, more than {STALE_HEARTBEATS} heartbeats of {}s: its agent is not publishing, so its gateways' health is unknown",
            record.node,
            sluice_agent::format_age(age(record, now)),
            HEARTBEAT_INTERVAL.as_secs()
        );
    }
    for record in &records {
        for warning in &record.warnings {
            eprintln!("warning: node {}: {warning}", record.node);
        }
    }
    let wide = format == GetFormat::Wide;
    let clients = client_rows(&records, now, wide);
    let gateways = gateway_rows(&records, now, wide);
    if clients.len() == 1 && gateways.len() == 1 {
        eprintln!("No egress gateway clients");
        return Ok(ExitCode::SUCCESS);
    }
    if clients.len() > 1 {
        write_table(out, &clients)?;
    }
    if gateways.len() > 1 {
        if clients.len() > 1 {
            writeln!(out)?;
        }
        write_table(out, &gateways)?;
    }
    Ok(ExitCode::SUCCESS)
}
