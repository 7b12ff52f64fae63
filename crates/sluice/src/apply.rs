//! `sluice apply` and `sluice delete`: validate everything first, then write all of it in one
//! transaction, or nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use sluice_api::{Kind, Loader, Resource};
use sluice_store::{Condition, Guard, Operation, Store, StoreError};

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

/// Attempts of a check-and-write whose checks another writer invalidated meanwhile.
const ATTEMPTS: u32 = 10;

/// What one attempt came to.
enum Attempt<T> {
    Done(T),
    /// Another writer changed what the checks read; check again.
    Raced,
}

/// Runs `attempt` until it is not raced, a bounded number of times, pausing a little longer
/// each time so that concurrent writers spread out.
fn retry_races<T>(mut attempt: impl FnMut() -> Result<Attempt<T>, String>) -> Result<T, String> {
    for round in 1..=ATTEMPTS {
        if let Attempt::Done(outcome) = attempt()? {
            return Ok(outcome);
        }
        std::thread::sleep(std::time::Duration::from_millis(5 * u64::from(round)));
    }
    Err(format!(
        "other writers kept changing the datastore while it was checked ({ATTEMPTS} attempts); \
         nothing was written, try again"
    ))
}

pub fn apply(arguments: &ApplyArguments) -> Result<ExitCode, String> {
    let store = arguments.datastore.open_or_create()?;
    let lines = retry_races(|| apply_once(arguments, store.as_ref()))?;
    let suffix = if arguments.dry_run { " (dry run)" } else { "" };
    for line in lines {
        println!("{line}{suffix}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads the store, checks the manifests against it and writes them in one transaction that
/// holds only if what the checks read is unchanged.
fn apply_once(arguments: &ApplyArguments, store: &dyn Store) -> Result<Attempt<Vec<String>>, String> {
    let (existing, revision) = read_all(store)?;
    let mut loader = Loader::default();
    loader.known_tiers(existing.values().filter_map(|resource| match resource {
        Resource::Tier(tier) => Some(tier.metadata.name.clone()),
        _ => None,
    }));
    crate::diagnostics::add_inputs(&mut loader, &arguments.paths)?;
    let resources = loader.finish().map_err(|errors| report_errors(&errors))?;
    // A raced attempt reads the same inputs again: say their warnings once.
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| crate::diagnostics::report_warnings(&resources));
    let resources = resources.into_resources();
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
    let guards = apply_guards(&resources, &existing, revision);
    if !arguments.dry_run && !operations.is_empty() {
        match store.commit_if(&guards, &operations) {
            Ok(_) => {}
            Err(error) if error.broke_a_guard(&guards, &operations) => return Ok(Attempt::Raced),
            Err(error) => return Err(conflict_message(error)),
        }
    }
    Ok(Attempt::Done(lines))
}

/// What apply's cross-object checks read, as guards: no pool written since the read (overlap,
/// immutability), and every stored tier a manifest's policy names still there.
fn apply_guards(
    resources: &[Resource],
    existing: &std::collections::BTreeMap<String, Resource>,
    revision: sluice_store::Revision,
) -> Vec<Guard> {
    let mut guards = Vec::new();
    if resources
        .iter()
        .any(|resource| matches!(resource, Resource::IpPool(_)))
    {
        guards.push(Guard::NoWriteUnder {
            prefix: sluice_api::resource::kind_prefix(Kind::IpPool),
            after: revision,
        });
    }
    let defined: std::collections::BTreeSet<&str> = resources
        .iter()
        .filter_map(|resource| match resource {
            Resource::Tier(tier) => Some(tier.metadata.name.as_str()),
            _ => None,
        })
        .collect();
    let mut referenced: Vec<String> = resources
        .iter()
        .filter_map(|resource| resource.tier_reference())
        .filter(|tier| !tier.is_empty() && !defined.contains(tier))
        .map(|tier| sluice_api::resource::key(Kind::Tier, None, tier))
        .filter(|key| existing.contains_key(key))
        .collect();
    referenced.sort();
    referenced.dedup();
    guards.extend(referenced.into_iter().map(|key| Guard::Key {
        key,
        condition: Condition::Present,
    }));
    guards
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
    retry_races(|| delete_once(arguments, &targets, store_arc.as_ref(), &ipam))?;
    for (kind, namespace, name) in &targets {
        let shown = match namespace {
            Some(namespace) => format!("{namespace}/{name}"),
            None => name.clone(),
        };
        println!("{} {shown} deleted", kind.name().to_lowercase());
    }
    Ok(ExitCode::SUCCESS)
}

/// Checks that the targets may go (no pool in use, no tier with policies) and deletes them in
/// one transaction that holds only if what the checks read is unchanged.
fn delete_once(
    arguments: &DeleteArguments,
    targets: &[(Kind, Option<String>, String)],
    store: &dyn Store,
    ipam: &sluice_ipam::Ipam,
) -> Result<Attempt<()>, String> {
    let mut operations = Vec::new();
    let mut guards = Vec::new();
    let deleted_keys: Vec<String> = targets
        .iter()
        .map(|(kind, namespace, name)| sluice_api::resource::key(*kind, namespace.as_deref(), name))
        .collect();
    // Read before the checks: any write after it to what they read breaks the guards.
    let before = store.revision().map_err(|error| error.to_string())?;
    let mut stored = None;
    for ((kind, _, name), key) in targets.iter().zip(&deleted_keys) {
        if *kind == Kind::IpPool && !arguments.force {
            let in_use = ipam.pool_in_use(name).map_err(|error| error.to_string())?;
            if in_use > 0 {
                return Err(format!(
                    "IPPool {name} has {in_use} allocated address(es); release them or delete with --force"
                ));
            }
            guards.push(Guard::NoWriteUnder {
                prefix: sluice_ipam::layout::BLOCK_PREFIX.to_string(),
                after: before,
            });
        }
        if *kind == Kind::Tier {
            if stored.is_none() {
                stored = Some(read_all(store)?);
            }
            let (resources, revision) = stored.as_ref().expect("read above");
            // As Calico: a tier that holds policies cannot go (those deleted alongside aside).
            let members: Vec<String> = resources
                .iter()
                .filter(|(key, _)| !deleted_keys.contains(key))
                // Staged policies name their tier too: the tier must outlive them.
                .filter(|(_, resource)| resource.policy_tier() == Some(name.as_str()))
                .map(|(_, resource)| describe(resource))
                .collect();
            if !members.is_empty() {
                return Err(format!(
                    "tier {name} still has {} polic{}: {}; delete them first. Nothing was deleted",
                    members.len(),
                    if members.len() == 1 { "y" } else { "ies" },
                    members.join(", ")
                ));
            }
            for policy_kind in [
                Kind::NetworkPolicy,
                Kind::GlobalNetworkPolicy,
                Kind::StagedNetworkPolicy,
                Kind::StagedGlobalNetworkPolicy,
            ] {
                guards.push(Guard::NoWriteUnder {
                    prefix: sluice_api::resource::kind_prefix(policy_kind),
                    after: *revision,
                });
            }
        }
        operations.push(Operation::Delete {
            key: key.clone(),
            condition: Condition::Present,
        });
    }
    guards.dedup();
    match store.commit_if(&guards, &operations) {
        Ok(_) => Ok(Attempt::Done(())),
        Err(error) if error.broke_a_guard(&guards, &operations) => Ok(Attempt::Raced),
        Err(StoreError::Conflict { key, .. }) => {
            Err(format!("{} not found; nothing was deleted", describe_key(&key)))
        }
        Err(other) => Err(other.to_string()),
    }
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
