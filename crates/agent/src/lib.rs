//! The node agent. It keeps an in-memory copy of the datastore's resources current through a
//! watch, and after every change (and periodically) compiles policy, renders the node's part of
//! it and brings the kernel in step through the dataplane's atomic transactions. It reports
//! health and Prometheus metrics over HTTP and writes its status to the datastore so that
//! `sluice get nodestatus` shows what it could not program, rewriting it every
//! [`HEARTBEAT_INTERVAL`] so that its age tells a live agent from a dead one. On SIGTERM or
//! SIGINT it finishes the sync in hand, records that it stopped and exits, leaving the ruleset
//! and routes in the kernel (fail closed).
//!
//! Architecture invariants: it reads the store and drives the dataplane; it never runs `nft`
//! itself and never interprets resources other than through `sluice-policy`. Fail closed: if a
//! sync fails, the kernel keeps the previous ruleset (transactions are atomic) and the agent
//! retries with a full resync.
#![forbid(unsafe_code)]

mod agent;
mod arguments;
pub mod dns;
pub mod flows;
pub mod gateway;
mod metrics;
pub mod proxy;
mod routing;
mod shutdown;
mod status;

pub use agent::{Agent, AgentConfig, run};
pub use arguments::{AgentArguments, FlowLogArguments};
pub use metrics::{Metrics, MetricsServer};
pub use status::{HEARTBEAT_INTERVAL, NodeStatus, STALE_HEARTBEATS, STATUS_PREFIX, format_age, status_key};
