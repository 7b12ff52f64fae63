//! The agent's DNS shell around the learning core (`sluice-dns`): the NFQUEUE socket that
//! holds DNS answers, the netlink writer that programs the domain sets, the configuration
//! (FelixConfiguration over the agent's flags), the cache file and the published record of
//! what was learned.

pub mod configuration;
pub mod kernel;
pub mod queue_socket;
pub mod record;
pub mod shell;

pub use configuration::{DEFAULT_QUEUE, DnsFlags, DnsSettings};
pub use record::{DNS_CACHE_PREFIX, DnsCacheRecord, EndpointLearned, LearnedAddress, dns_cache_key};
pub use shell::{DnsShell, LearnedNames};
