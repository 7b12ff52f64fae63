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

#[cfg(test)]
mod tests {
    use sluice_agent::gateway::record::{ClientRecord, RouteRecord};

    use super::*;

    fn gateway(name: &str, address: &str, node: &str, health: &str) -> GatewayRecord {
        GatewayRecord {
            gateway: name.into(),
            address: address.parse().unwrap(),
            node: node.into(),
            health: health.into(),
            since: None,
            probe_milliseconds: None,
            last_error: None,
        }
    }

    fn route(destination: &str, action: &str, rule: Option<usize>, gateways: &[&str]) -> RouteRecord {
        RouteRecord {
            destination: destination.into(),
            policy: rule.map(|_| "split".to_string()),
            policy_rule: rule,
            action: action.into(),
            gateways: gateways.iter().map(|gateway| gateway.to_string()).collect(),
        }
    }

    /// node-1: `apps/web` through both gateways by namespace annotations, `team/api` by policy
    /// `split` (10.0.0.0/8 the normal way, the rest through gw-b); gw-b failing its probes.
    /// node-2: `apps/db` through gw-a. Both written at `now` minus `ages`.
    fn records(now: SystemTime, ages: [u64; 2]) -> Vec<EgressRecord> {
        let mut failing = gateway("egress/gw-b", "10.9.0.2", "node-2", "not-ready");
        failing.since = Some(now - Duration::from_secs(5));
        failing.last_error = Some("connection refused".into());
        let mut healthy = gateway("egress/gw-a", "10.9.0.1", "node-1", "ready");
        healthy.probe_milliseconds = Some(0.42);
        vec![
            EgressRecord {
                node: "node-1".into(),
                updated: now - Duration::from_secs(ages[0]),
                revision: 0,
                clients: vec![
                    ClientRecord {
                        client: "apps/web".into(),
                        addresses: vec!["10.2.0.1".parse().unwrap()],
                        table: 1_000_000,
                        chosen_by: "namespace annotations".into(),
                        routes: vec![route(
                            "0.0.0.0/0",
                            "gateways",
                            None,
                            &["egress/gw-a", "egress/gw-b"],
                        )],
                    },
                    ClientRecord {
                        client: "team/api".into(),
                        addresses: vec!["10.2.0.2".parse().unwrap()],
                        table: 1_000_001,
                        chosen_by: "policy split (namespace annotation)".into(),
                        routes: vec![
                            route("10.0.0.0/8", "normal", Some(0), &[]),
                            route("0.0.0.0/0", "unreachable", Some(1), &[]),
                        ],
                    },
                ],
                gateways: vec![healthy, failing],
                warnings: vec!["pod apps/odd: egress annotations ignored".into()],
            },
            EgressRecord {
                node: "node-2".into(),
                updated: now - Duration::from_secs(ages[1]),
                revision: 0,
                clients: vec![ClientRecord {
                    client: "apps/db".into(),
                    addresses: vec!["10.2.1.1".parse().unwrap()],
                    table: 1_000_000,
                    chosen_by: "pod annotations".into(),
                    routes: vec![route("0.0.0.0/0", "gateways", None, &["egress/gw-a"])],
                }],
                gateways: vec![gateway("egress/gw-a", "10.9.0.1", "node-1", "ready")],
                warnings: Vec::new(),
            },
        ]
    }

    /// Cells of rows, joined by `|` for compact comparison.
    fn lines(rows: &[Vec<String>]) -> Vec<String> {
        rows.iter().map(|row| row.join("|")).collect()
    }

    #[test]
    fn clients_show_each_gateway_with_address_node_health_and_what_chose_it() {
        let now = SystemTime::now();
        assert_eq!(
            lines(&client_rows(&records(now, [10, 10]), now, false)),
            [
                "NODE|CLIENT|DESTINATION|ROUTE|GATEWAY|ADDRESS|GATEWAY NODE|HEALTH|CHOSEN BY",
                "node-1|apps/web|0.0.0.0/0|gateways|egress/gw-a|10.9.0.1|node-1|ready|namespace annotations",
                "node-1|apps/web|0.0.0.0/0|gateways|egress/gw-b|10.9.0.2|node-2|not-ready|namespace annotations",
                "node-1|team/api|10.0.0.0/8|normal|-|-|-|-|policy split (namespace annotation)",
                "node-1|team/api|0.0.0.0/0|unreachable|-|-|-|-|policy split (namespace annotation)",
                "node-2|apps/db|0.0.0.0/0|gateways|egress/gw-a|10.9.0.1|node-1|ready|pod annotations",
            ]
        );
    }

    #[test]
    fn wide_adds_table_rule_probe_error_and_age() {
        let now = SystemTime::now();
        let rows = client_rows(&records(now, [10, 130]), now, true);
        assert_eq!(
            rows[0][9..],
            ["TABLE", "RULE", "PROBE", "LAST ERROR", "AGE"].map(String::from)
        );
        assert_eq!(
            rows[1][9..],
            ["1000000", "-", "0.4ms", "-", "10s"].map(String::from)
        );
        assert_eq!(
            rows[2][9..],
            ["1000000", "-", "-", "connection refused", "10s"].map(String::from)
        );
        assert_eq!(rows[3][10], "0");
        assert_eq!(rows[4][10], "1");
        // 130 s is more than three 30 s heartbeats: the health node-2 reported is unknown.
        assert_eq!(rows[5][7], "unknown (stale)");
        assert_eq!(rows[5][13], "2m10s");
    }

    #[test]
    fn gateways_show_their_clients_and_health_as_each_node_sees_it() {
        let now = SystemTime::now();
        assert_eq!(
            lines(&gateway_rows(&records(now, [10, 10]), now, false)),
            [
                "GATEWAY|ADDRESS|NODE|SEEN FROM|HEALTH|SINCE|CLIENTS",
                "egress/gw-a|10.9.0.1|node-1|node-1|ready|-|apps/web",
                "egress/gw-a|10.9.0.1|node-1|node-2|ready|-|apps/db",
                "egress/gw-b|10.9.0.2|node-2|node-1|not-ready|5s|apps/web",
            ]
        );
        let wide = gateway_rows(&records(now, [10, 10]), now, true);
        assert_eq!(wide[3][7..], ["-", "connection refused", "10s"].map(String::from));
    }

    #[test]
    fn a_record_older_than_three_heartbeats_is_stale() {
        let now = SystemTime::now();
        let records = records(now, [90, 91]);
        assert!(!is_stale(&records[0], now));
        assert!(is_stale(&records[1], now));
        let rows = gateway_rows(&records, now, false);
        assert_eq!(rows[1][4], "ready");
        assert_eq!(rows[2][4], "unknown (stale)");
        // A record from the future (clock skew) is not stale.
        let mut future = records[0].clone();
        future.updated = now + Duration::from_secs(600);
        assert!(!is_stale(&future, now));
    }

    #[test]
    fn filters_pick_a_node_or_a_namespace_and_the_gateways_serving_it() {
        let now = SystemTime::now();
        let node = filter_records(
            records(now, [1, 1]),
            &Filter {
                node: Some("node-2".into()),
                namespace: None,
            },
        );
        assert_eq!(node.len(), 1);
        assert_eq!(node[0].node, "node-2");

        let team = filter_records(
            records(now, [1, 1]),
            &Filter {
                node: None,
                namespace: Some("team".into()),
            },
        );
        assert_eq!(team[0].clients.len(), 1);
        assert_eq!(team[0].clients[0].client, "team/api");
        // team/api's only gateway route is unreachable: no gateway serves it.
        assert!(team[0].gateways.is_empty());
        assert!(team[0].warnings.is_empty());
        assert!(team[1].clients.is_empty());

        let apps = filter_records(
            records(now, [1, 1]),
            &Filter {
                node: None,
                namespace: Some("apps".into()),
            },
        );
        assert_eq!(apps[0].gateways.len(), 2);
        assert_eq!(apps[0].warnings.len(), 1);
        // A namespace name that is a prefix of another does not take the other's clients.
        let app = filter_records(
            records(now, [1, 1]),
            &Filter {
                node: None,
                namespace: Some("app".into()),
            },
        );
        assert!(app.iter().all(|record| record.clients.is_empty()));
    }

    #[test]
    fn json_is_the_records_with_stale_added() {
        let now = SystemTime::now();
        let records = records(now, [1, 500]);
        let value = document(&records, now).unwrap();
        assert_eq!(value[0]["node"], "node-1");
        assert_eq!(value[0]["stale"], false);
        assert_eq!(value[1]["stale"], true);
        assert_eq!(value[0]["clients"][1]["routes"][0]["policyRule"], 0);
        let back: EgressRecord = serde_json::from_value(value[1].clone()).unwrap();
        // Times are written in whole seconds, as the node status's are.
        let written = records[1]
            .updated
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert_eq!(
            back.updated
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            written
        );
        assert_eq!(back.clients, records[1].clients);
        assert_eq!(back.gateways.len(), records[1].gateways.len());
    }
}
