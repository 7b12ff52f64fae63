//! Opening the datastore and reading resources from it.

use std::collections::BTreeMap;

use clap::Args;
use sluice_api::resource::RESOURCE_PREFIX;
use sluice_api::{Resource, ResourceSet};
use sluice_store::{Revision, Store};

/// Where the datastore is: `--datastore`, else `SLUICE_DATASTORE`, else the default file.
#[derive(Debug, Clone, Args)]
pub struct DatastoreArguments {
    /// file:///path/store.db or etcd://host:port,host:port (default: $SLUICE_DATASTORE, then
    /// /var/lib/sluice/store.db for root or ~/.local/share/sluice/store.db).
    #[arg(long, global = true)]
    datastore: Option<String>,
}

impl DatastoreArguments {
    /// The arguments that give another `sluice` process the same datastore.
    pub fn arguments(&self) -> Vec<String> {
        match &self.datastore {
            Some(address) => vec!["--datastore".to_string(), address.clone()],
            None => Vec::new(),
        }
    }

    fn address(&self) -> String {
        self.datastore
            .clone()
            .unwrap_or_else(sluice_store::default_address)
    }

    /// The existing datastore, for commands that read (a store file that is missing is an
    /// error, one that cannot be written is read).
    pub fn open(&self) -> Result<Box<dyn Store>, String> {
        sluice_store::open(&self.address()).map_err(|error| error.to_string())
    }

    /// The datastore, created if missing: only for `apply` and writing `ipam` commands.
    pub fn open_or_create(&self) -> Result<Box<dyn Store>, String> {
        sluice_store::open_or_create(&self.address()).map_err(|error| error.to_string())
    }
}

/// Every stored resource by key (each carries its resource version), and the revision read at.
/// A stored value that does not decode or validate is left out with a warning on stderr.
pub fn read_all(store: &dyn Store) -> Result<(BTreeMap<String, Resource>, Revision), String> {
    let (values, revision) = store.list(RESOURCE_PREFIX).map_err(|error| error.to_string())?;
    let stored = sluice_api::stored::decode_values(
        values
            .iter()
            .map(|value| (value.key.as_str(), value.value.as_slice(), value.modify_revision)),
    );
    for left_out in &stored.left_out {
        eprintln!("warning: left out the invalid stored value {left_out}");
    }
    Ok((stored.resources, revision))
}

/// The stored resources as a set, for explain and connectivity.
pub fn read_set(store: &dyn Store) -> Result<ResourceSet, String> {
    let (resources, _) = read_all(store)?;
    Ok(resources.into_values().collect())
}
