//! `sluice connectivity`: pods × (pods and the external ranges the policies name).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use ipnet::IpNet;
use serde_json::json;
use sluice_api::values::Protocol;
use sluice_policy::{Dataplane, Flow, IpFamily, family_pairs};

use crate::OutputFormat;
use crate::diagnostics::resources_from;
use crate::output::{Failure, Output, csv_record};

#[derive(Debug, Args)]
pub struct ConnectivityArguments {
    /// Files or directories of YAML/JSON manifests (`-`: standard input); without it, the
    /// datastore.
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    datastore: crate::datastore::DatastoreArguments,
    /// Ports to probe, as protocol/port: tcp/80,udp/53. ICMP needs no port: icmp.
    #[arg(long, value_delimiter = ',', default_value = "tcp/80")]
    ports: Vec<String>,
    /// text: a matrix a port; json: one document; jsonl: one object a pair and port; csv: a
    /// header, then a row a pair and port.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
}

struct Target {
    label: String,
    /// A pod's addresses (either family), or the one address an external range is probed at.
    addresses: Vec<IpAddr>,
    /// An external range, probed at one address inside it.
    external: bool,
}

/// One pair and port: the verdict of each IP family the two share.
struct Cell {
    /// Per shared family (IPv4 first): the destination address and whether it is allowed.
    families: Vec<(IpFamily, IpAddr, bool)>,
}

impl Cell {
    fn new(
        dataplane: &Dataplane,
        source: &Target,
        target: &Target,
        protocol: Protocol,
        port: Option<u16>,
    ) -> Cell {
        Cell {
            families: family_pairs(&source.addresses, &target.addresses)
                .into_iter()
                .map(|pair| {
                    let verdict = allowed(dataplane, pair.source, pair.destination, protocol, port);
                    (pair.family, pair.destination, verdict)
                })
                .collect(),
        }
    }

    /// Allowed over every family the two share (and they share one).
    fn allowed(&self) -> bool {
        !self.families.is_empty() && self.families.iter().all(|(_, _, allowed)| *allowed)
    }

    /// `allow`, `deny`, `ipv4-only` or `ipv6-only` (allowed over that family, denied over the
    /// other), or `no-common-family`.
    fn verdict(&self) -> &'static str {
        let allowed: Vec<IpFamily> = self
            .families
            .iter()
            .filter(|(_, _, allowed)| *allowed)
            .map(|(family, _, _)| *family)
            .collect();
        match (self.families.len(), allowed.as_slice()) {
            (0, _) => "no-common-family",
            (_, []) => "deny",
            (total, _) if allowed.len() == total => "allow",
            (_, [IpFamily::V4]) => "ipv4-only",
            _ => "ipv6-only",
        }
    }

    /// The matrix symbol: `.` allowed, `X` denied, `4`/`6` allowed over that family only,
    /// `-` no common family.
    fn symbol(&self) -> &'static str {
        match self.verdict() {
            "allow" => ".",
            "deny" => "X",
            "ipv4-only" => "4",
            "ipv6-only" => "6",
            _ => "-",
        }
    }
}

pub fn run(arguments: &ConnectivityArguments, out: &mut Output) -> Result<ExitCode, Failure> {
    let probes = arguments
        .ports
        .iter()
        .map(|text| parse_probe(text))
        .collect::<Result<Vec<_>, _>>()?;
    let resources = resources_from(&arguments.paths, &arguments.datastore)?;
    let dataplane = sluice_policy::compile(&resources);
    let mut sources: Vec<Target> = dataplane
        .endpoints
        .iter()
        .filter(|endpoint| !endpoint.addresses.is_empty())
        .map(|endpoint| Target {
            label: endpoint.display_name(),
            addresses: endpoint.addresses.clone(),
            external: false,
        })
        .collect();
    sources.sort_by(|left, right| left.label.cmp(&right.label));
    let mut targets: Vec<Target> = sources
        .iter()
        .map(|source| Target {
            label: source.label.clone(),
            addresses: source.addresses.clone(),
            external: false,
        })
        .collect();
    for network in &dataplane.external_networks {
        let address = representative(network);
        if dataplane.endpoint_by_address(address).is_none()
            && !targets.iter().any(|target| target.addresses.contains(&address))
        {
            targets.push(Target {
                label: network.to_string(),
                addresses: vec![address],
                external: true,
            });
        }
    }
    let mut matrices = Vec::new();
    for (protocol, port) in &probes {
        let rows: Vec<Vec<Cell>> = sources
            .iter()
            .map(|source| {
                targets
                    .iter()
                    .map(|target| Cell::new(&dataplane, source, target, *protocol, *port))
                    .collect()
            })
            .collect();
        matrices.push((probe_label(*protocol, *port), rows));
    }
    match arguments.output {
        OutputFormat::Text => write_text(out, &sources, &targets, &matrices)?,
        OutputFormat::Json => {
            let value = json!({
                "from": sources.iter().map(|source| &source.label).collect::<Vec<_>>(),
                "to": targets.iter().map(|target| json!({"name": target.label, "address": target.addresses[0], "addresses": target.addresses})).collect::<Vec<_>>(),
                "matrices": matrices.iter().map(|(label, rows)| json!({
                    "port": label,
                    "allowed": rows.iter().map(|row| row.iter().map(Cell::allowed).collect::<Vec<_>>()).collect::<Vec<_>>(),
                    "verdicts": rows.iter().map(|row| row.iter().map(Cell::verdict).collect::<Vec<_>>()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            });
            let text = serde_json::to_string_pretty(&value).map_err(|error| error.to_string())?;
            writeln!(out, "{text}")?;
        }
        OutputFormat::Jsonl | OutputFormat::Csv => {
            if arguments.output == OutputFormat::Csv {
                writeln!(
                    out,
                    "{}",
                    csv_record(&["port", "from", "to", "to_address", "verdict"])
                )?;
            }
            for (label, rows) in &matrices {
                for (source, row) in sources.iter().zip(rows) {
                    for (target, cell) in targets.iter().zip(row) {
                        // A line per family the two share; one saying so when they share none.
                        let lines: Vec<(IpAddr, &str)> = if cell.families.is_empty() {
                            vec![(target.addresses[0], "no-common-family")]
                        } else {
                            cell.families
                                .iter()
                                .map(|(_, address, allowed)| {
                                    (*address, if *allowed { "allow" } else { "deny" })
                                })
                                .collect()
                        };
                        for (address, verdict) in lines {
                            let address = address.to_string();
                            let line = if arguments.output == OutputFormat::Csv {
                                csv_record(&[label, &source.label, &target.label, &address, verdict])
                            } else {
                                json!({"port": label, "from": source.label, "to": target.label, "to_address": address, "verdict": verdict})
                                    .to_string()
                            };
                            writeln!(out, "{line}")?;
                        }
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_probe(text: &str) -> Result<(Protocol, Option<u16>), String> {
    let (protocol, port) = match text.split_once('/') {
        Some((protocol, port)) => (protocol, Some(port)),
        None => (text, None),
    };
    let protocol = Protocol::parse_lenient(protocol)?;
    let port = port
        .map(|port| {
            port.parse::<u16>()
                .map_err(|_| format!("`{port}` is not a port in `{text}`"))
        })
        .transpose()?;
    if protocol.supports_ports() && port.is_none() {
        return Err(format!(
            "`{text}` needs a port, as {}/PORT",
            protocol.to_string().to_lowercase()
        ));
    }
    Ok((protocol, port))
}

fn probe_label(protocol: Protocol, port: Option<u16>) -> String {
    match port {
        Some(port) => format!("{}/{port}", protocol.to_string().to_lowercase()),
        None => protocol.to_string().to_lowercase(),
    }
}

/// An address to stand for a range: its first host, or a documentation address for a
/// catch-all range.
fn representative(network: &IpNet) -> IpAddr {
    match network {
        IpNet::V4(network) if network.prefix_len() == 0 => IpAddr::from([192, 0, 2, 1]),
        IpNet::V6(network) if network.prefix_len() == 0 => "2001:db8::1".parse().expect("valid address"),
        IpNet::V4(network) if network.prefix_len() >= 31 => IpAddr::V4(network.network()),
        IpNet::V6(network) if network.prefix_len() >= 127 => IpAddr::V6(network.network()),
        IpNet::V4(network) => IpAddr::V4((u32::from(network.network()) + 1).into()),
        IpNet::V6(network) => IpAddr::V6((u128::from(network.network()) + 1).into()),
    }
}

fn allowed(
    dataplane: &Dataplane,
    source: IpAddr,
    destination: IpAddr,
    protocol: Protocol,
    port: Option<u16>,
) -> bool {
    let icmp_type = match protocol.number() {
        1 => Some(8),
        58 => Some(128),
        _ => None,
    };
    dataplane
        .evaluate(&Flow {
            source,
            destination,
            protocol: protocol.number(),
            source_port: None,
            destination_port: port,
            icmp_type,
            icmp_code: icmp_type.map(|_| 0),
        })
        .allowed
}

fn write_text(
    out: &mut Output,
    sources: &[Target],
    targets: &[Target],
    matrices: &[(String, Vec<Vec<Cell>>)],
) -> Result<(), Failure> {
    let width = sources.iter().map(|source| source.label.len()).max().unwrap_or(0);
    let number_width = targets.len().to_string().len();
    for (label, rows) in matrices {
        let symbols: Vec<Vec<&str>> = rows
            .iter()
            .map(|row| row.iter().map(Cell::symbol).collect())
            .collect();
        let seen = |symbol: &str| symbols.iter().flatten().any(|cell| *cell == symbol);
        let mut legend = String::from(". allowed, X denied");
        if seen("4") || seen("6") {
            legend.push_str(", 4 or 6 allowed over IPv4 or IPv6 only (denied over the other)");
        }
        if seen("-") {
            legend.push_str(", - no common IP family");
        }
        writeln!(out, "{label}: rows send, columns receive; {legend}")?;
        let header: Vec<String> = (1..=targets.len())
            .map(|index| format!("{index:>number_width$}"))
            .collect();
        writeln!(out, "{:width$}  {}", "", header.join(" "))?;
        for (source, row) in sources.iter().zip(&symbols) {
            let cells: Vec<String> = row
                .iter()
                .map(|symbol| format!("{symbol:>number_width$}"))
                .collect();
            writeln!(out, "{:width$}  {}", source.label, cells.join(" "))?;
        }
        writeln!(out)?;
    }
    writeln!(out, "columns:")?;
    for (index, target) in targets.iter().enumerate() {
        if target.external {
            writeln!(
                out,
                "{:>number_width$}  {} (probed at {})",
                index + 1,
                target.label,
                target.addresses[0]
            )?;
        } else {
            writeln!(out, "{:>number_width$}  {}", index + 1, target.label)?;
        }
    }
    Ok(())
}
