//! The flow-log shell's outside things that do not depend on the kernel: the node's rotated
//! flow log file, the bounded ring of records the agent serves, and the HTTP endpoints that
//! serve it.

pub mod client;
pub mod file;
pub mod recent;
pub mod server;

pub use file::RotatingFile;
pub use recent::{RecentFlows, RecentRecord};
pub use server::{FlowListen, FlowServer, parse_since};
