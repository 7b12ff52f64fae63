//! Typed resources: Kubernetes `v1` Namespace, Pod and ServiceAccount, `networking.k8s.io/v1`
//! NetworkPolicy, and Calico `projectcalico.org/v3` NetworkPolicy, GlobalNetworkPolicy, Tier,
//! NetworkSet, GlobalNetworkSet and IPPool, with Calico's defaults and validation; Calico
//! Enterprise's EgressGatewayPolicy and egress annotations (`egress`); Calico's staged policies
//! (`staged`).
//!
//! This crate owns reading manifests (YAML or JSON, multi-document, directories, `kind: List`)
//! and turning every bad input into a [`Diagnostic`] that names file, line, column and field.
//! It is pure apart from reading the files it is asked to read: it never writes, never talks to
//! a datastore or the kernel, and never interprets policy (that is `sluice-policy`'s job).
#![forbid(unsafe_code)]

pub mod calico;
pub mod dns_configuration;
pub mod document;
pub mod domain;
pub mod egress;
pub mod kept;
pub mod kubernetes;
mod load;
pub mod meta;
pub mod resource;
pub mod staged;
pub mod stored;
mod validate;
pub mod values;

pub use load::{Diagnostic, HasMetadata, Kind, LoadErrors, Loader, ResourceSet, load_paths, load_str};
pub use resource::Resource;
