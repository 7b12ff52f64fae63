//! nftables for Sluice, after Kubernetes' knftables: typed objects (tables, chains, rules, sets,
//! maps, elements) are collected into a [`Transaction`], rendered to `nft` text, and applied in
//! one atomic `nft -f -` call: the kernel takes all of it or none of it.
//!
//! Backends: [`CommandBackend`] runs the `nft` binary (optionally inside a named network
//! namespace via `ip netns exec`); [`FakeBackend`] keeps a model of the ruleset in memory and
//! applies transactions to it with nft's rules for add/create/flush/delete, for unit tests of
//! what is rendered.
//!
//! [`tool`] finds and runs netfilter's command-line tools for the crates that need them.
//!
//! Architecture invariant: only this crate runs `nft`. It renders what it is given and knows
//! nothing about policy.
#![forbid(unsafe_code)]

mod backend;
mod fake;
mod objects;
pub mod tool;

pub use backend::{Backend, CommandBackend, NftError, NftVersion};
pub use fake::FakeBackend;
pub use objects::*;
