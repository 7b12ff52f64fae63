//! Calico policy semantics. Compiles a validated [`sluice_api::ResourceSet`] into the
//! Dataplane IR ([`Dataplane`]) and evaluates flows on that IR.
//!
//! Calico is the reference: tiers ordered by `order` then name, policies likewise, Kubernetes
//! NetworkPolicies converted into the default tier at order 1000, `Pass` to the next tier, a
//! tier's default action when some policy applies but none decides, and the namespace profile
//! (allow) when no policy applies. Every rule names its address matches as IP sets so that the
//! dataplane renderer programs exactly what the evaluator evaluates. Staged policies are never
//! compiled into the enforced IR; [`compile_staged`] compiles the "what if" set with them
//! applied, through the same compiler, for `explain` and flow logs' `pending_policies`.
//!
//! Architecture invariant: pure. No I/O, no clock, no threads; the same input gives the same
//! IR. It must never read YAML or talk to the kernel.
#![forbid(unsafe_code)]

mod attribution;
mod compile;
mod entities;
mod evaluate;
mod explain;
mod family;
mod ip_set;
pub mod ir;
mod kubernetes;
pub mod l7;
mod prefilter;
pub mod staged;

pub use attribution::{FlowHits, HitId, PROFILE_TIER, PolicyHit};
pub use compile::compile;
pub use entities::{
    Entity, EntityKind, LABEL_NAMESPACE, LABEL_ORCHESTRATOR, LABEL_SERVICE_ACCOUNT, build_entities,
};
pub use evaluate::{Decision, Flow, NoTrace, TraceStep, Tracer, Verdict};
pub use explain::{
    DirectionExplanation, Explanation, explain, explain_with_domain, explain_with_l7, l7_sentence,
};
pub use family::{FamilyPair, IpFamily, families_text, family_pairs};
pub use ir::Dataplane;
pub use l7::{FlowL7, HttpRequest, L7Finding};
pub use staged::{compile_staged, has_staged_policies, pending_policies, with_staged_applied};
