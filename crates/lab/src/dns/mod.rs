//! The lab's DNS: a server on an outside host that answers the outside hosts' `names` and
//! `cname` aliases ([`zone`], [`server`]), the stub resolver probes use inside pods
//! ([`resolver`]), and the pods' `resolv.conf` that points them at the server ([`netns_files`]).

pub mod netns_files;
pub mod resolver;
pub mod server;
pub mod zone;

#[cfg(test)]
mod tests;
