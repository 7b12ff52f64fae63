//! `sluice get dnscache`: what each node's agent learned from DNS (name → addresses, with
//! expiry, per endpoint), from the records the agents publish; and the lookup `explain` uses
//! for a destination name without `--resolve`.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_agent::dns::{DNS_CACHE_PREFIX, DnsCacheRecord, dns_cache_key};
use sluice_store::Store;

use crate::get::GetFormat;
use crate::output::{Failure, Output, write_table};

/// The published records: one node's, or every node's.
pub fn records(store: &dyn Store, node: Option<&str>) -> Result<Vec<DnsCacheRecord>, String> {
    let values = match node {
        Some(node) => store
            .get(&dns_cache_key(node))
            .map_err(|error| error.to_string())?
            .into_iter()
            .collect(),
        None => store.list(DNS_CACHE_PREFIX).map_err(|error| error.to_string())?.0,
    };
    values
        .iter()
        .map(|value| {
            serde_json::from_slice(&value.value)
                .map_err(|error| format!("{}: not a DNS cache record: {error}", value.key))
        })
        .collect()
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// The addresses `endpoint` (`namespace/name`) learned for `name` on `node`, still valid.
pub fn learned_addresses(
    store: &dyn Store,
    node: &str,
    endpoint: &str,
    name: &str,
) -> Result<Vec<IpAddr>, String> {
    let now = now_seconds();
    Ok(records(store, Some(node))?
        .iter()
        .flat_map(|record| record.addresses(endpoint, &name.to_lowercase(), now))
        .collect())
}

pub fn run(
    store: &dyn Store,
    node: Option<&str>,
    format: GetFormat,
    out: &mut Output,
) -> Result<ExitCode, Failure> {
    let records = records(store, node)?;
    if let Some(node) = node
        && records.is_empty()
    {
        return Err(format!(
            "no DNS cache published for node {node}: its agent has learned nothing yet, or does not run"
        )
        .into());
    }
    match format {
        GetFormat::Json | GetFormat::Yaml => {
            let value = serde_json::to_value(&records).map_err(|error| error.to_string())?;
            crate::get::write_document(out, &value, format)?;
        }
        GetFormat::Name => {
            for record in &records {
                writeln!(out, "dnscache/{}", record.node)?;
            }
        }
        GetFormat::Table | GetFormat::Wide => {
            let now = now_seconds();
            let mut rows = vec![
                ["NODE", "ENDPOINT", "NAME", "ADDRESS", "EXPIRES IN"]
                    .map(String::from)
                    .to_vec(),
            ];
            for record in &records {
                for endpoint in &record.endpoints {
                    for (name, addresses) in &endpoint.names {
                        for address in addresses {
                            rows.push(vec![
                                record.node.clone(),
                                endpoint.endpoint.clone(),
                                name.clone(),
                                address.address.to_string(),
                                sluice_agent::format_age(Duration::from_secs(
                                    address.expires.saturating_sub(now),
                                )),
                            ]);
                        }
                    }
                }
            }
            if rows.len() == 1 {
                eprintln!("No learned names");
            } else {
                write_table(out, &rows)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
