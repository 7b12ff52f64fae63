//! The DNS configuration the agent runs with: FelixConfiguration's fields for this node
//! (`node.<name>` over `default`), then the agent's flags for what they leave unset, then
//! Sluice's defaults. A field set in FelixConfiguration wins over the flag: the cluster's
//! declared configuration is what `get` and `explain` show, so the node follows it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sluice_api::dns_configuration::{self, TrustedServer};
use sluice_api::kept::FelixConfiguration;

/// The queue number the DNS answers wait in unless told otherwise.
pub const DEFAULT_QUEUE: u16 = 4000;

/// What the agent's command line says about DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsFlags {
    /// `--dns-trusted-server`: used when no FelixConfiguration sets `dnsTrustedServers`.
    pub trusted_servers: Vec<SocketAddr>,
    /// `--dns-cache-file`: used when no FelixConfiguration sets `dnsCacheFile`.
    pub cache_file: Option<PathBuf>,
    /// `--dns-queue`: the NFQUEUE number.
    pub queue: u16,
}

impl Default for DnsFlags {
    fn default() -> DnsFlags {
        DnsFlags {
            trusted_servers: Vec::new(),
            cache_file: None,
            queue: DEFAULT_QUEUE,
        }
    }
}

/// The DNS configuration in force on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The servers answers are learned from (addresses only: `k8s-service:` entries are in
    /// `unresolved`).
    pub trusted_servers: Vec<SocketAddr>,
    /// Entries that name a Kubernetes Service, which Sluice cannot resolve yet: they trust
    /// no server.
    pub unresolved: Vec<String>,
    pub cache_file: PathBuf,
    pub cache_save_interval: Duration,
    pub cache_epoch: i64,
    pub extra_ttl: Duration,
}

impl DnsSettings {
    /// The learner's configuration (its memory bounds at their defaults).
    pub fn learner_config(&self) -> sluice_dns::Config {
        sluice_dns::Config {
            trusted_servers: self
                .trusted_servers
                .iter()
                .map(|address| sluice_dns::TrustedServer(*address))
                .collect(),
            extra_ttl_seconds: self.extra_ttl.as_secs().min(u64::from(u32::MAX)) as u32,
            ..sluice_dns::Config::default()
        }
    }
}

/// The settings for `node` from the datastore's FelixConfigurations and the agent's flags.
pub fn settings(configurations: &[FelixConfiguration], node: &str, flags: &DnsFlags) -> DnsSettings {
    let layered = dns_configuration::dns_configuration(configurations, node);
    let relevant: Vec<&FelixConfiguration> = configurations
        .iter()
        .filter(|configuration| {
            configuration.node() == Some(node) || configuration.metadata.name == "default"
        })
        .collect();
    let declares = |field: &dyn Fn(&FelixConfiguration) -> bool| relevant.iter().any(|c| field(c));

    let servers: Vec<TrustedServer> =
        if declares(&|c| c.spec.dns_trusted_servers.is_some()) || flags.trusted_servers.is_empty() {
            layered.trusted_servers
        } else {
            flags
                .trusted_servers
                .iter()
                .map(|address| TrustedServer::Address(*address))
                .collect()
        };
    let mut trusted_servers = Vec::new();
    let mut unresolved = Vec::new();
    for server in servers {
        match server.address() {
            Some(address) => trusted_servers.push(address),
            None => unresolved.push(server.to_string()),
        }
    }
    let cache_file = match &flags.cache_file {
        Some(path) if !declares(&|c| c.spec.dns_cache_file.is_some()) => path.clone(),
        _ => PathBuf::from(layered.cache_file),
    };
    DnsSettings {
        trusted_servers,
        unresolved,
        cache_file,
        cache_save_interval: layered.cache_save_interval,
        cache_epoch: layered.cache_epoch,
        extra_ttl: layered.extra_ttl,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn felix(name: &str, spec: serde_json::Value) -> FelixConfiguration {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn flags_fill_what_felix_configuration_leaves_unset() {
        let flags = DnsFlags {
            trusted_servers: vec!["198.51.100.53:53".parse().unwrap()],
            cache_file: Some("/tmp/lab/node-1.json".into()),
            queue: 4000,
        };
        let settings = settings(&[], "node-1", &flags);
        assert_eq!(settings.trusted_servers, flags.trusted_servers);
        assert!(settings.unresolved.is_empty());
        assert_eq!(settings.cache_file, PathBuf::from("/tmp/lab/node-1.json"));
        assert_eq!(settings.cache_save_interval, Duration::from_secs(60));
    }

    #[test]
    fn felix_configuration_wins_over_flags() {
        let flags = DnsFlags {
            trusted_servers: vec!["198.51.100.53:53".parse().unwrap()],
            cache_file: Some("/tmp/flag.json".into()),
            queue: 4000,
        };
        let configurations = [
            felix(
                "default",
                serde_json::json!({"dnsTrustedServers": ["10.96.0.10"], "dnsExtraTTL": "5s"}),
            ),
            felix(
                "node.node-1",
                serde_json::json!({"dnsCacheFile": "/var/run/own.json"}),
            ),
            felix(
                "node.node-2",
                serde_json::json!({"dnsCacheFile": "/var/run/other.json"}),
            ),
        ];
        let settings = settings(&configurations, "node-1", &flags);
        assert_eq!(settings.trusted_servers, ["10.96.0.10:53".parse().unwrap()]);
        assert_eq!(settings.cache_file, PathBuf::from("/var/run/own.json"));
        assert_eq!(settings.extra_ttl, Duration::from_secs(5));
        assert_eq!(settings.learner_config().extra_ttl_seconds, 5);
    }

    #[test]
    fn without_flags_the_default_service_trusts_no_server_and_says_so() {
        let settings = settings(&[], "node-1", &DnsFlags::default());
        assert!(settings.trusted_servers.is_empty());
        assert_eq!(settings.unresolved, ["k8s-service:kube-system/kube-dns"]);
        assert_eq!(settings.cache_file, PathBuf::from("/run/sluice/dns-cache.json"));
    }
}
