//! The dataplane: renders the policy IR ([`sluice_policy::Dataplane`]) into the nftables
//! objects of Sluice's own table (`inet sluice`), and brings the kernel from what it last
//! programmed to what it should be with one atomic transaction that touches only what changed;
//! and keeps the node's routes to other nodes' pod addresses ([`routes`]) in the main table;
//! and forgets the connection-tracking entries of a released pod address ([`conntrack`]);
//! and programs the egress gateway policy routing of a client's node ([`gateway_routes`]) and
//! the connection marks that pin a connection to its gateway ([`gateway_pins`]); and, for flow
//! logs, marks every final decision with its hit id ([`flow_logs`]) and reads the decisions
//! back ([`nflog`]) with the kernel's connection events and counters ([`conntrack_events`]).
//!
//! Architecture invariants: it renders the same IR the evaluator evaluates (no second reading
//! of resources); it owns the `inet sluice` and `inet sluice-egress` tables, the routes and rules marked with protocol 83
//! and the `egress.sluice` device, and touches nothing else but the conntrack entries of
//! addresses being released (and, for flow logs, the namespace's `nf_conntrack_acct`); a failed
//! transaction leaves the previous ruleset in place and makes the next sync a full one.
#![forbid(unsafe_code)]

pub mod conntrack;
pub mod conntrack_events;
pub mod domains;
pub mod flow_logs;
pub mod gateway_pins;
pub mod gateway_routes;
pub mod l7_redirect;
pub mod netfilter_socket;
pub mod netlink;
pub mod nflog;
pub mod proxy_routes;
mod render;
pub mod routes;
mod sync;

pub use domains::{DnsRender, LearnedElement, domain_set_name};
pub use flow_logs::FlowLogs;
pub use l7_redirect::L7Redirect;
pub use netfilter_socket::ReaderError;
pub use render::{
    ChainState, DynamicElement, INTERFACE_PREFIX, IpFamily, LocalEndpoint, Ruleset, SetState, TABLE_NAME,
    programmable_endpoints, render, render_with_dns, render_with_flow_logs, render_with_l7,
};
pub use sync::{SyncReport, Syncer, ensure_fail_closed};
