//! `sluice apply` and `sluice delete`: validate everything first, then write all of it in one
//! transaction, or nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use sluice_api::{Kind, Loader, Resource};
use sluice_store::{Condition, Operation, StoreError};

use crate::datastore::{DatastoreArguments, read_all};
use crate::diagnostics::report_errors;

#[derive(Debug, Args)]
pub struct ApplyArguments {
    /// Files or directories of YAML/JSON manifests; `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    paths: Vec<PathBuf>,
    /// Validate and show what would change, but write nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    datastore: DatastoreArguments,
}

pub fn apply(arguments: &ApplyArguments) -> Result<ExitCode, String> {
    let store = arguments.datastore.open()?;
    let (existing, _) = read_all(store.as_ref())?;
    let mut loader = Loader::default();
    loader.known_tiers(existing.values().filter_map(|resource| match resource {
        Resource::Tier(tier) => Some(tier.metadata.name.clone()),
        _ => None,
    }));
    crate::diagnostics::add_inputs(&mut loader, &arguments.paths)?;
    let resources = loader
        .finish()
        .map_err(|errors| report_errors(&errors))?
        .into_resources();
    let stored_pools: Vec<_> = existing
        .values()
        .filter_map(|resource| match resource {
            Resource::IpPool(pool) => Some(pool.clone()),
            _ => None,
        })
        .collect();

    let mut operations = Vec::new();
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    for resource in &resources {
        let key = resource.key();
        let previous = existing.get(&key);
        if let Resource::IpPool(pool) = resource {
            let previous_pool = match previous {
                Some(Resource::IpPool(previous)) => Some(previous),
                _ => None,
            };
            let others: Vec<_> = stored_pools
                .iter()
                .filter(|other| other.metadata.name != pool.metadata.name)
                .cloned()
                .collect();
            if let Err(message) = sluice_ipam::check_pool_change(previous_pool, pool, &others) {
                problems.push(format!(
                    "{}: IPPool {}: {message}",
                    pool.metadata.origin, pool.metadata.name
                ));
            }
        }
        let value = resource.encode();
        let unchanged = previous.is_some_and(|stored| stored.encode() == value);
        // A manifest that carries a resource version updates only that version
        // (compare-and-swap), as kubectl and calicoctl do.
        let condition = match resource.metadata().resource_version.as_deref() {
            Some(version) => Condition::Revision(version.parse().map_err(|_| {
                format!(
                    "{}: metadata.resourceVersion `{version}` is not a number",
                    resource.metadata().origin
                )
            })?),
            None => Condition::Any,
        };
        let verb = match (previous, unchanged) {
            (None, _) => "created",
            (Some(_), true) => "unchanged",
            (Some(_), false) => "configured",
        };
        lines.push(format!("{} {verb}", describe(resource)));
        if !unchanged || matches!(condition, Condition::Revision(_)) {
            operations.push(Operation::Put {
                key,
                value,
                condition,
            });
        }
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("error: {problem}");
        }
        return Err(format!("{} error(s); nothing was written", problems.len()));
    }
    if !arguments.dry_run && !operations.is_empty() {
        store.commit(&operations).map_err(conflict_message)?;
    }
    let suffix = if arguments.dry_run { " (dry run)" } else { "" };
    for line in lines {
        println!("{line}{suffix}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub struct DeleteArguments {
    /// KIND NAME, e.g. `globalnetworkpolicy allow-dns` (or use -f).
    #[arg(num_args = 0..=2)]
    target: Vec<String>,
    /// Delete the resources these manifests describe; `-` reads standard input.
    #[arg(short = 'f', long = "filename", num_args = 1..)]
    paths: Vec<PathBuf>,
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// Delete an IPPool even when addresses in it are allocated.
    #[arg(long)]
    force: bool,
    /// Treat a resource that does not exist as deleted (kubectl's flag): exit 0, print nothing
    /// for it.
    #[arg(long)]
    ignore_not_found: bool,
    #[command(flatten)]
    datastore: DatastoreArguments,
}

pub fn delete(arguments: &DeleteArguments) -> Result<ExitCode, String> {
    let mut targets: Vec<(Kind, Option<String>, String)> = Vec::new();
    match (arguments.target.as_slice(), arguments.paths.is_empty()) {
        ([kind, name], true) => {
            let kind = crate::get::parse_kind(kind)?;
            let namespace = kind
                .is_namespaced()
                .then(|| arguments.namespace.clone().unwrap_or_else(|| "default".into()));
            targets.push((kind, namespace, name.clone()));
        }
        ([], false) => {
            let set = crate::diagnostics::load_or_report(&arguments.paths)?;
            for resource in set.into_resources() {
                targets.push((
                    resource.kind(),
                    resource.namespace().map(str::to_string),
                    resource.metadata().name.clone(),
                ));
            }
        }
        _ => return Err("give either KIND NAME or -f FILE".to_string()),
    }
    let store = arguments.datastore.open()?;
    let store_arc: std::sync::Arc<dyn sluice_store::Store> = std::sync::Arc::from(store);
    let ipam = sluice_ipam::Ipam::new(store_arc.clone());
    if arguments.ignore_not_found {
        let mut present = Vec::new();
        for target in targets {
            let key = sluice_api::resource::key(target.0, target.1.as_deref(), &target.2);
            if store_arc.get(&key).map_err(|error| error.to_string())?.is_some() {
                present.push(target);
            }
        }
        targets = present;
    }
    let mut operations = Vec::new();
    for (kind, namespace, name) in &targets {
        if *kind == Kind::IpPool && !arguments.force {
            let in_use = ipam.pool_in_use(name).map_err(|error| error.to_string())?;
            if in_use > 0 {
                return Err(format!(
                    "IPPool {name} has {in_use} allocated address(es); release them or delete with --force"
                ));
            }
        }
        operations.push(Operation::Delete {
            key: sluice_api::resource::key(*kind, namespace.as_deref(), name),
            condition: Condition::Present,
        });
    }
    store_arc.commit(&operations).map_err(|error| match error {
        StoreError::Conflict { key, .. } => format!("{} not found; nothing was deleted", describe_key(&key)),
        other => other.to_string(),
    })?;
    for (kind, namespace, name) in &targets {
        let shown = match namespace {
            Some(namespace) => format!("{namespace}/{name}"),
            None => name.clone(),
        };
        println!("{} {shown} deleted", kind.name().to_lowercase());
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(resource: &Resource) -> String {
    let kind = resource.kind().name().to_lowercase();
    match resource.namespace() {
        Some(namespace) => format!("{kind} {namespace}/{}", resource.metadata().name),
        None => format!("{kind} {}", resource.metadata().name),
    }
}

fn describe_key(key: &str) -> String {
    key.trim_start_matches(sluice_api::resource::RESOURCE_PREFIX)
        .to_string()
}

fn conflict_message(error: StoreError) -> String {
    match error {
        StoreError::Conflict { key, expected, found } => format!(
            "conflict on {}: the manifest's resourceVersion is {expected} but the stored one is {found}; get the current version and apply again. Nothing was written",
            describe_key(&key)
        ),
        other => format!("{other}; nothing was written"),
    }
}
