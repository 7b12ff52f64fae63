//! The L7 proxy shell (issue 12): the transparent proxy that judges the HTTP requests and TLS
//! ClientHellos of connections the dataplane redirects to it (`sluice_dataplane::l7_redirect`),
//! with `sluice-proxy`'s core reading the bytes and the one evaluator
//! (`Dataplane::evaluate_traced` with the request as the flow's L7 view) deciding.
//!
//! It runs as a child process of the agent (the same executable, `--l7-proxy-child`), so that
//! it can die, be killed or overload without taking the agent with it, and be restarted without
//! an agent restart. The agent supervises it ([`supervisor::ProxySupervisor`]): it starts it
//! when some local endpoint has an L7 egress rule, hands it every compile's input over its
//! standard input ([`snapshot`]: the same stored resources, which the child compiles with the
//! same compiler into the same IR), restarts it within half a second when it exits, and puts the
//! policy-routing rule and `local` routes in place (`sluice_dataplane::proxy_routes`). The child
//! exits when the agent goes (its standard input closes).
//!
//! Fail closed: while no proxy listens, the kernel drops redirected connections (an explicit
//! drop after `tproxy`) and resets the packets of connections it had (they are routed to the
//! node, where no socket takes them); the proxy forwards nothing before the evaluator allowed
//! it, and resets what it cannot judge (no IR yet, a source that is not a local endpoint).

pub mod child;
mod connection;
mod event_loop;
mod judge;
pub mod snapshot;
pub mod stats;
pub mod supervisor;

/// The default port of the proxy's listeners, `127.0.0.1` and `[::1]` in the node's namespace.
pub const DEFAULT_PORT: u16 = 15_300;

pub use event_loop::{ConnectionLimits, DEFAULT_CONNECTIONS, DEFAULT_CONNECTIONS_PER_POD};

/// The command-line flag that makes the agent's executable the proxy child.
pub const CHILD_FLAG: &str = "--l7-proxy-child";
