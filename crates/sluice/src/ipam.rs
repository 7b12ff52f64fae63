//! `sluice ipam show | check | release`: which addresses belong to which pool, namespace and
//! node — the table a perimeter firewall's administrator needs — and repairs.

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Subcommand, ValueEnum};
use sluice_ipam::{Grouping, Ipam};

use crate::datastore::{DatastoreArguments, read_set};
use crate::output::{Failure, Output, write_table};
use crate::perimeter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum By {
    Pool,
    Namespace,
    Node,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IpamFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    /// Address ranges and allocations grouped by pool or node; by namespace, the source
    /// addresses each namespace's traffic can have outside the cluster (its pools' addresses,
    /// NAT addresses, egress gateways' addresses), per destination.
    Show {
        #[arg(long, value_enum, default_value = "pool")]
        by: By,
        /// List every allocated address (by namespace: every pod address), not only the ranges.
        #[arg(long)]
        addresses: bool,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: IpamFormat,
        #[command(flatten)]
        datastore: DatastoreArguments,
    },
    /// Find leaked addresses (no workload endpoint holds them) and addresses owned twice.
    Check {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: IpamFormat,
        #[command(flatten)]
        datastore: DatastoreArguments,
    },
    /// Release an address, or every address of a handle (`<containerID>.<interface>`).
    Release {
        /// An IP address or a handle.
        target: String,
        #[command(flatten)]
        datastore: DatastoreArguments,
    },
}

fn open(datastore: &DatastoreArguments) -> Result<Ipam, String> {
    Ok(Ipam::new(Arc::from(datastore.open()?)))
}

/// For the commands that write: creates the store if missing.
fn open_or_create(datastore: &DatastoreArguments) -> Result<Ipam, String> {
    Ok(Ipam::new(Arc::from(datastore.open_or_create()?)))
}

pub fn run(command: &IpamCommand, out: &mut Output) -> Result<ExitCode, Failure> {
    match command {
        IpamCommand::Show {
            by,
            addresses,
            output,
            datastore,
        } if *by == By::Namespace => perimeter_view(datastore, *addresses, *output, out),
        IpamCommand::Show {
            by,
            addresses,
            output,
            datastore,
        } => {
            let report = open(datastore)?.report().map_err(|error| error.to_string())?;
            let grouping = match by {
                By::Pool => Grouping::Pool,
                By::Namespace => Grouping::Namespace,
                By::Node => Grouping::Node,
            };
            let groups = report.group_by(grouping);
            if *output == IpamFormat::Json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&groups).map_err(|error| error.to_string())?
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let title = match by {
                By::Pool => "POOL",
                By::Namespace => "NAMESPACE",
                By::Node => "NODE",
            };
            let rows: Vec<[String; 4]> = groups
                .iter()
                .map(|group| {
                    [
                        group.name.clone(),
                        group.allocated.to_string(),
                        join(&group.ranges),
                        join(&group.blocks),
                    ]
                })
                .collect();
            print_rows(out, &[title, "ALLOCATED", "ADDRESS RANGES", "BLOCKS"], &rows)?;
            if *addresses {
                writeln!(out)?;
                let rows: Vec<[String; 4]> = report
                    .allocations
                    .iter()
                    .map(|allocation| {
                        [
                            allocation.address.to_string(),
                            format!("{}/{}", allocation.namespace, allocation.pod),
                            allocation.node.clone(),
                            allocation.pool.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                print_rows(out, &["ADDRESS", "POD", "NODE", "POOL"], &rows)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        IpamCommand::Check { output, datastore } => {
            let report = open(datastore)?.check().map_err(|error| error.to_string())?;
            if *output == IpamFormat::Json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|error| error.to_string())?
                )?;
            } else {
                writeln!(out, "{} allocated address(es) checked", report.allocations)?;
                for leaked in &report.leaked {
                    writeln!(
                        out,
                        "leaked: {} (handle {}, pod {}/{} on {}): no workload endpoint holds it; `sluice ipam release {}`",
                        leaked.address,
                        leaked.handle,
                        leaked.namespace,
                        leaked.pod,
                        leaked.node,
                        leaked.address
                    )?;
                }
                for problem in &report.doubly_owned {
                    writeln!(
                        out,
                        "owned twice: {}",
                        serde_json::to_string(problem).map_err(|error| error.to_string())?
                    )?;
                }
                for problem in &report.endpoint_problems {
                    println!("endpoint: {problem}");
                }
                if report.is_clean() {
                    writeln!(out, "no leaked or doubly-owned addresses")?;
                }
            }
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        IpamCommand::Release { target, datastore } => {
            let ipam = open_or_create(datastore)?;
            match target.parse::<IpAddr>() {
                Ok(address) => match ipam.release_address(address).map_err(|error| error.to_string())? {
                    Some(released) => writeln!(out, "released {address} (handle {})", released.handle)?,
                    None => return Err(format!("{address} is not allocated").into()),
                },
                Err(_) => {
                    let released = ipam.release(target).map_err(|error| error.to_string())?;
                    if released.is_empty() {
                        writeln!(out, "handle {target} holds no addresses")?;
                    }
                    for address in released {
                        writeln!(out, "released {address}")?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `ipam show --by namespace`: per namespace, the source addresses its traffic can have
/// outside the cluster (`perimeter`).
fn perimeter_view(
    datastore: &DatastoreArguments,
    addresses: bool,
    output: IpamFormat,
    out: &mut Output,
) -> Result<ExitCode, Failure> {
    let store: Arc<dyn sluice_store::Store> = Arc::from(datastore.open()?);
    let resources = read_set(store.as_ref())?;
    let report = Ipam::new(store).report().map_err(|error| error.to_string())?;
    let view = perimeter::by_namespace(&resources, &report.allocations).map_err(|error| error.to_string())?;
    if output == IpamFormat::Json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&view).map_err(|error| error.to_string())?
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if view.is_empty() {
        eprintln!("No pods with addresses");
        return Ok(ExitCode::SUCCESS);
    }
    write_table(out, &perimeter::table(&view))?;
    if addresses {
        writeln!(out)?;
        write_table(out, &perimeter::address_table(&view))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn join(networks: &[ipnet::IpNet]) -> String {
    if networks.is_empty() {
        return "-".to_string();
    }
    networks
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_rows<const N: usize>(
    out: &mut Output,
    header: &[&str; N],
    rows: &[[String; N]],
) -> Result<(), Failure> {
    let mut table = vec![header.iter().map(|title| title.to_string()).collect()];
    table.extend(rows.iter().map(|row| row.to_vec()));
    write_table(out, &table)
}
