//! Calico's staged policies: read typed, checked as Calico checks them (a Set as the policy it
//! stages, a Delete with no fields), every error at its file, line, column and field, and read
//! back from the datastore.

use sluice_api::staged::StagedAction;
use sluice_api::{Kind, Resource, load_str};

const FILE: &str = "staged.yaml";

const STAGED: &str = "\
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: deny-egress, namespace: prod}
spec:
  selector: app == 'web'
  types: [Egress]
  egress:
  - action: Allow
    protocol: UDP
    destination: {ports: [53]}
---
apiVersion: projectcalico.org/v3
kind: StagedGlobalNetworkPolicy
metadata: {name: quarantine}
spec:
  stagedAction: Delete
  tier: security
---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: web, namespace: prod}
spec:
  stagedAction: Set
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8}}]
    ports: [{port: 443}]
";

#[test]
fn the_three_kinds_are_read_typed_with_calicos_default_action() {
    let set = load_str(FILE, STAGED).unwrap_or_else(|errors| panic!("{errors}"));
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    assert!(set.kept.is_empty());
    let network = &set.staged_network_policies[0];
    // No stagedAction: Set, as Calico defaults it.
    assert_eq!(network.spec.action(), StagedAction::Set);
    assert_eq!(network.to_enforced().spec.egress.len(), 1);
    let global = &set.staged_global_network_policies[0];
    assert_eq!(global.spec.action(), StagedAction::Delete);
    assert_eq!(global.spec.tier(), "security");
    let kubernetes = &set.staged_kubernetes_network_policies[0];
    assert_eq!(kubernetes.spec.action(), StagedAction::Set);
    assert_eq!(kubernetes.to_enforced().spec.egress[0].ports.len(), 1);
    // Stored and read back whole, under keys of their own kinds.
    let keys: Vec<String> = set.clone().into_resources().iter().map(Resource::key).collect();
    for key in [
        "/sluice/resources/projectcalico.org/stagednetworkpolicy/prod/deny-egress",
        "/sluice/resources/projectcalico.org/stagedglobalnetworkpolicy/quarantine",
        "/sluice/resources/projectcalico.org/stagedkubernetesnetworkpolicy/prod/web",
    ] {
        assert!(keys.iter().any(|stored| stored == key), "{key} not in {keys:?}");
    }
    for resource in set.into_resources() {
        let decoded = Resource::decode(&resource.encode(), 5).unwrap();
        assert_eq!(decoded.kind(), resource.kind());
        assert_eq!(decoded.to_manifest(), resource.to_manifest());
    }
}

/// (what the manifest says, line, column, field, a part of the message).
const BAD: &[(&str, usize, usize, &str, &str)] = &[
    // A Delete carries nothing but the tier (SNP, SGNP) or nothing at all (SKNP).
    (
        "kind: StagedNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  stagedAction: Delete\n  selector: all()\n",
        5,
        3,
        "spec.selector",
        "a staged Delete names the policy to remove",
    ),
    (
        "kind: StagedGlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  stagedAction: Delete\n  tier: default\n  egress: [{action: Deny}]\n",
        6,
        3,
        "spec.egress",
        "remove `egress`",
    ),
    (
        "kind: StagedKubernetesNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  stagedAction: Delete\n  policyTypes: [Egress]\n",
        5,
        3,
        "spec.policyTypes",
        "carries no other field",
    ),
    // Calico Enterprise's recommendation states are named and refused.
    (
        "kind: StagedNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  stagedAction: Learn\n",
        4,
        17,
        "spec.stagedAction",
        "policy recommendations",
    ),
    (
        "kind: StagedNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  stagedAction: Remove\n",
        4,
        17,
        "spec.stagedAction",
        "unknown variant `Remove`",
    ),
    // A Set is checked as the policy it stages.
    (
        "kind: StagedNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  egress:\n  - action: Allow\n    destination: {ports: [443]}\n",
        6,
        26,
        "spec.egress[0].destination.ports",
        "need `protocol`",
    ),
    (
        "kind: StagedNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  preDNAT: true\n",
        4,
        12,
        "spec.preDNAT",
        "only a GlobalNetworkPolicy",
    ),
    (
        "kind: StagedGlobalNetworkPolicy\nmetadata: {name: p}\nspec:\n  selector: global()\n",
        4,
        13,
        "spec.selector",
        "global()",
    ),
    (
        "kind: StagedKubernetesNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  egress:\n  - ports: [{port: 80, endPort: 70}]\n",
        5,
        33,
        "spec.egress[0].ports[0].endPort",
        "endPort must be greater",
    ),
    // Fields of neither kind.
    (
        "kind: StagedNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  podSelector: {}\n",
        4,
        3,
        "spec.podSelector",
        "unknown field `podSelector`",
    ),
    // The tier a staged policy names must exist, as for enforced policies.
    (
        "kind: StagedNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec:\n  tier: nowhere\n",
        4,
        9,
        "spec.tier",
        "tier `nowhere` does not exist",
    ),
    // Scope as Calico's: the global kind has no namespace.
    (
        "kind: StagedGlobalNetworkPolicy\nmetadata: {name: p, namespace: prod}\n",
        2,
        32,
        "metadata.namespace",
        "cluster-scoped",
    ),
];

#[test]
fn bad_staged_policies_are_refused_at_the_field() {
    for (body, line, column, field, hint) in BAD {
        // The apiVersion line comes first, so the body's line n is the document's line n + 1.
        let text = format!("apiVersion: projectcalico.org/v3\n{body}");
        let errors = load_str(FILE, &text).expect_err(body);
        assert_eq!(errors.0.len(), 1, "{body}\n{errors}");
        let diagnostic = &errors.0[0];
        assert_eq!(
            (
                diagnostic.file.as_str(),
                diagnostic.line,
                diagnostic.column,
                diagnostic.field.as_str()
            ),
            (FILE, line + 1, *column, *field),
            "{body}\n{diagnostic}"
        );
        assert!(diagnostic.message.contains(hint), "`{hint}` not in: {diagnostic}");
    }
}

#[test]
fn a_delete_may_name_its_tier_and_kubernetes_kinds_an_empty_selector() {
    let text = "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec: {stagedAction: Delete, tier: default, types: []}\n---\napiVersion: projectcalico.org/v3\nkind: StagedKubernetesNetworkPolicy\nmetadata: {name: p, namespace: prod}\nspec: {stagedAction: Delete, podSelector: {}}\n";
    let set = load_str(FILE, text).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(set.staged_network_policies.len(), 1);
    assert_eq!(set.staged_kubernetes_network_policies.len(), 1);
}

/// A value that bypassed `apply` is checked on the way out of the datastore like the others.
#[test]
fn a_stored_delete_with_rules_is_refused_on_decoding() {
    let stored = br#"{"apiVersion":"projectcalico.org/v3","kind":"StagedNetworkPolicy","metadata":{"name":"p","namespace":"prod"},"spec":{"stagedAction":"Delete","egress":[{"action":"Deny"}]}}"#;
    let error = Resource::decode(stored, 9).unwrap_err();
    assert!(error.contains("spec.egress: a staged Delete"), "{error}");
    let good = br#"{"apiVersion":"projectcalico.org/v3","kind":"StagedNetworkPolicy","metadata":{"name":"p","namespace":"prod"},"spec":{"stagedAction":"Delete"}}"#;
    assert_eq!(
        Resource::decode(good, 9).unwrap().kind(),
        Kind::StagedNetworkPolicy
    );
}
