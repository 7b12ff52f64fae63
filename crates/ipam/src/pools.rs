//! Which pools a pod may take addresses from, and the rules for changing pools. Pure: no I/O.
//!
//! The rules are Calico's: the CNI plugin reads `cni.projectcalico.org/ipv4pools` /
//! `ipv6pools` from the pod, else from its namespace (`cni-plugin/pkg/k8s/k8s.go`), resolves each
//! entry as a CIDR or a pool name (`cni-plugin/internal/pkg/utils/utils.go`, `ResolvePools`),
//! and `determinePools` (`libcalico-go/lib/ipam/ipam.go`) uses requested pools unconditionally
//! as long as they are enabled, else every enabled Automatic pool whose node and namespace
//! selectors match; `filterPoolsByUse` then keeps pools that allow the Workload use.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use sluice_api::calico::{AllowedUse, AssignmentMode, IpPool};

use crate::IpamError;
use crate::block::overlaps;

/// The pod or namespace annotation naming the IPv4 pools to use (a JSON list of names or CIDRs).
pub const IPV4_POOLS_ANNOTATION: &str = "cni.projectcalico.org/ipv4pools";
/// The same for IPv6.
pub const IPV6_POOLS_ANNOTATION: &str = "cni.projectcalico.org/ipv6pools";
/// The pod annotation asking for specific addresses (a JSON list, at most one per family).
pub const IP_ADDRESSES_ANNOTATION: &str = "cni.projectcalico.org/ipAddrs";

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn of_network(network: &IpNet) -> Family {
        match network {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn of_address(address: &IpAddr) -> Family {
        match address {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn pools_annotation(self) -> &'static str {
        match self {
            Family::V4 => IPV4_POOLS_ANNOTATION,
            Family::V6 => IPV6_POOLS_ANNOTATION,
        }
    }
}

/// The pod being placed: what pool selectors are evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub node: &'a str,
    pub node_labels: &'a BTreeMap<String, String>,
    pub namespace: &'a str,
    pub namespace_labels: &'a BTreeMap<String, String>,
    pub pod: &'a str,
}

/// Empty `allowedUses` means Workload and Tunnel (Calico's default, `clientv3/ippool.go`).
pub fn allows_workloads(pool: &IpPool) -> bool {
    pool.spec.allowed_uses.is_empty() || pool.spec.allowed_uses.contains(&AllowedUse::Workload)
}

/// An absent `assignmentMode` means Automatic (Calico's default, `clientv3/ippool.go`).
pub fn is_automatic(pool: &IpPool) -> bool {
    pool.spec.assignment_mode.unwrap_or(AssignmentMode::Automatic) == AssignmentMode::Automatic
}

/// The pools requested for `family` by annotation: the pod's if it is set and non-empty, else
/// the namespace's. `None` when neither asks (an empty list `[]` asks for nothing).
pub fn requested_pools(
    pod_annotations: &BTreeMap<String, String>,
    namespace_annotations: &BTreeMap<String, String>,
    family: Family,
) -> Result<Option<Vec<String>>, IpamError> {
    let annotation = family.pools_annotation();
    let value = pod_annotations
        .get(annotation)
        .filter(|value| !value.is_empty())
        .or_else(|| namespace_annotations.get(annotation))
        .filter(|value| !value.is_empty());
    let Some(value) = value else {
        return Ok(None);
    };
    let entries: Vec<String> = serde_json::from_str(value).map_err(|error| IpamError::Annotation {
        annotation: annotation.to_string(),
        reason: format!("expected a JSON list of pool names or CIDRs such as [\"pool-a\"]: {error}"),
    })?;
    Ok(Some(entries).filter(|entries| !entries.is_empty()))
}

/// The specific addresses a pod asks for: at most one per family (`validateAndExtractIPs` in
/// Calico's `cni-plugin/pkg/k8s/k8s.go`). `None` when the annotation is absent.
pub fn requested_addresses(
    pod_annotations: &BTreeMap<String, String>,
) -> Result<Option<Vec<IpAddr>>, IpamError> {
    let Some(value) = pod_annotations
        .get(IP_ADDRESSES_ANNOTATION)
        .filter(|value| !value.is_empty())
    else {
        return Ok(None);
    };
    let error = |reason: String| IpamError::Annotation {
        annotation: IP_ADDRESSES_ANNOTATION.to_string(),
        reason,
    };
    let entries: Vec<String> = serde_json::from_str(value).map_err(|parse| {
        error(format!(
            "expected a JSON list of addresses such as [\"10.0.0.5\"]: {parse}"
        ))
    })?;
    if entries.is_empty() {
        return Err(error("specified but empty".into()));
    }
    let mut addresses: Vec<IpAddr> = Vec::new();
    for entry in entries {
        let address: IpAddr = entry
            .trim()
            .parse()
            .map_err(|_| error(format!("`{entry}` is not an IP address")))?;
        let family = Family::of_address(&address);
        if addresses.iter().any(|other| Family::of_address(other) == family) {
            return Err(error(format!(
                "cannot have more than one {} address",
                family.name()
            )));
        }
        addresses.push(address);
    }
    addresses.sort();
    Ok(Some(addresses))
}

/// Why a pool read from the store cannot be used, if it cannot: the rules `sluice apply`
/// enforces, checked again because the store may have been written around it, and a block size
/// outside the address family would otherwise panic the block arithmetic.
pub fn unusable_pool(pool: &IpPool) -> Option<String> {
    let spec = &pool.spec;
    let block_size = spec.effective_block_size();
    let (minimum, maximum, family) = match spec.cidr.0 {
        IpNet::V4(_) => (20, 32, "IPv4"),
        IpNet::V6(_) => (116, 128, "IPv6"),
    };
    let name = &pool.metadata.name;
    if !(minimum..=maximum).contains(&block_size) {
        return Some(format!(
            "IP pool {name}: blockSize {block_size} is out of range; expected {minimum} to {maximum} for {family}"
        ));
    }
    if spec.cidr.0.prefix_len() > block_size {
        return Some(format!(
            "IP pool {name}: the pool {} is smaller than one /{block_size} block",
            spec.cidr
        ));
    }
    None
}

/// The pools of `family` to allocate from, in the order to try them. Requested pools are used
/// in the order given, whatever their selectors and assignment mode, but must exist and be
/// enabled; otherwise every enabled Automatic pool whose selectors match, by name. Either way
/// only pools that allow Workload use remain. An empty result (no request) means this family
/// gets no address.
pub fn eligible_pools<'a>(
    pools: &'a [IpPool],
    family: Family,
    requested: Option<&[String]>,
    placement: &Placement<'_>,
) -> Result<Vec<&'a IpPool>, IpamError> {
    let in_family = |pool: &&IpPool| Family::of_network(&pool.spec.cidr.0) == family;
    if let Some(requested) = requested {
        let mut chosen: Vec<&IpPool> = Vec::new();
        for entry in requested {
            let pool = resolve_pool(pools, entry)?;
            if !in_family(&pool) {
                return Err(IpamError::Annotation {
                    annotation: family.pools_annotation().to_string(),
                    reason: format!(
                        "pool {} ({}) is not an {} pool",
                        pool.metadata.name,
                        pool.spec.cidr,
                        family.name()
                    ),
                });
            }
            if !chosen
                .iter()
                .any(|other| other.metadata.name == pool.metadata.name)
            {
                chosen.push(pool);
            }
        }
        let names = chosen
            .iter()
            .map(|pool| pool.metadata.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        chosen.retain(|pool| allows_workloads(pool));
        if chosen.is_empty() {
            return Err(IpamError::NoEligiblePool {
                namespace: placement.namespace.to_string(),
                pod: placement.pod.to_string(),
                node: placement.node.to_string(),
                reason: format!("none of the requested pools ({names}) allows Workload use"),
            });
        }
        return Ok(chosen);
    }
    let mut chosen: Vec<&IpPool> = pools
        .iter()
        .filter(in_family)
        .filter(|pool| !pool.spec.disabled && is_automatic(pool) && allows_workloads(pool))
        .filter(|pool| pool.spec.node_selector.selector().matches(placement.node_labels))
        .filter(|pool| {
            pool.spec
                .namespace_selector
                .selector()
                .matches(placement.namespace_labels)
        })
        .collect();
    chosen.sort_by(|left, right| left.metadata.name.cmp(&right.metadata.name));
    Ok(chosen)
}

/// A requested entry: a CIDR equal to an enabled pool's, or an enabled pool's name.
fn resolve_pool<'a>(pools: &'a [IpPool], entry: &str) -> Result<&'a IpPool, IpamError> {
    let entry = entry.trim();
    let found = match entry.parse::<IpNet>() {
        Ok(network) => pools
            .iter()
            .find(|pool| pool.spec.cidr.0.trunc() == network.trunc()),
        Err(_) => pools.iter().find(|pool| pool.metadata.name == entry),
    };
    found
        .filter(|pool| !pool.spec.disabled)
        .ok_or_else(|| IpamError::UnknownPool(entry.to_string()))
}

/// The enabled pool holding `address` (Calico's `getPoolForIP` over enabled pools).
pub fn pool_for_address(pools: &[IpPool], address: IpAddr) -> Option<&IpPool> {
    pools
        .iter()
        .find(|pool| !pool.spec.disabled && pool.spec.cidr.0.contains(&address))
}

/// The pool whose CIDR holds `block`, enabled or not: for reporting.
pub fn pool_of_block(pools: &[IpPool], block: IpNet) -> Option<&IpPool> {
    pools.iter().find(|pool| pool.spec.cidr.0.contains(&block))
}

/// Checks a pool about to be created or replaced: its CIDR and block size cannot change (blocks
/// already carved from it would no longer line up), and it may not overlap another pool.
/// `all_pools` may include `existing` / `new` itself; pools of the same name are skipped.
pub fn check_pool_change(
    existing: Option<&IpPool>,
    new: &IpPool,
    all_pools: &[IpPool],
) -> Result<(), String> {
    let name = &new.metadata.name;
    if let Some(existing) = existing {
        if existing.spec.cidr.0.trunc() != new.spec.cidr.0.trunc() {
            return Err(format!(
                "IPPool {name}: spec.cidr cannot change (from {} to {}); create a new pool, move \
                 workloads to it, then disable and delete this one",
                existing.spec.cidr, new.spec.cidr
            ));
        }
        let (before, after) = (
            existing.spec.effective_block_size(),
            new.spec.effective_block_size(),
        );
        if before != after {
            return Err(format!(
                "IPPool {name}: spec.blockSize cannot change (from {before} to {after})"
            ));
        }
    }
    let block_size = new.spec.effective_block_size();
    if new.spec.cidr.0.prefix_len() > block_size {
        return Err(format!(
            "IPPool {name}: the pool {} is smaller than one /{block_size} block",
            new.spec.cidr
        ));
    }
    for other in all_pools.iter().filter(|other| &other.metadata.name != name) {
        if overlaps(other.spec.cidr.0, new.spec.cidr.0) {
            return Err(format!(
                "IPPool {name} ({}) overlaps IPPool {} ({}); IPPool CIDRs must not overlap",
                new.spec.cidr, other.metadata.name, other.spec.cidr
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn pools_that_cannot_be_carved_into_blocks_are_unusable() {
        let with_block_size = |cidr: &str, block_size: u8| {
            let family_cidr = if cidr.contains(':') {
                "fd00::/64"
            } else {
                "10.0.0.0/16"
            };
            let mut pool = pool("p", &format!("cidr: {family_cidr}"));
            pool.spec.cidr = sluice_api::values::Cidr(cidr.parse().unwrap());
            pool.spec.block_size = Some(block_size);
            pool
        };
        let table: &[(&str, u8, Option<&str>)] = &[
            ("10.0.0.0/16", 26, None),
            ("10.0.0.0/16", 32, None),
            ("10.0.0.0/16", 20, None),
            ("fd00::/64", 122, None),
            ("fd00::/64", 128, None),
            (
                "10.0.0.0/16",
                33,
                Some("IP pool p: blockSize 33 is out of range; expected 20 to 32 for IPv4"),
            ),
            (
                "10.0.0.0/16",
                19,
                Some("IP pool p: blockSize 19 is out of range; expected 20 to 32 for IPv4"),
            ),
            (
                "fd00::/64",
                129,
                Some("IP pool p: blockSize 129 is out of range; expected 116 to 128 for IPv6"),
            ),
            (
                "fd00::/64",
                64,
                Some("IP pool p: blockSize 64 is out of range; expected 116 to 128 for IPv6"),
            ),
            (
                "10.0.0.0/28",
                26,
                Some("IP pool p: the pool 10.0.0.0/28 is smaller than one /26 block"),
            ),
        ];
        for (cidr, block_size, expected) in table {
            assert_eq!(
                unusable_pool(&with_block_size(cidr, *block_size)).as_deref(),
                *expected,
                "{cidr} /{block_size}"
            );
        }
    }

    /// A pool from a manifest fragment, e.g. `cidr: 10.0.0.0/24`.
    pub fn pool(name: &str, spec: &str) -> IpPool {
        let text = format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  {}\n",
            spec.trim().replace('\n', "\n  ")
        );
        let set = sluice_api::load_str("test", &text).unwrap_or_else(|error| panic!("{error}\n{text}"));
        set.ip_pools[0].clone()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    fn names(pools: &[&IpPool]) -> Vec<String> {
        pools.iter().map(|pool| pool.metadata.name.clone()).collect()
    }

    struct Fixture {
        node_labels: BTreeMap<String, String>,
        namespace_labels: BTreeMap<String, String>,
    }

    impl Fixture {
        fn new(node: &[(&str, &str)], namespace: &[(&str, &str)]) -> Fixture {
            Fixture {
                node_labels: labels(node),
                namespace_labels: labels(namespace),
            }
        }

        fn placement(&self) -> Placement<'_> {
            Placement {
                node: "node-a",
                node_labels: &self.node_labels,
                namespace: "prod",
                namespace_labels: &self.namespace_labels,
                pod: "web",
            }
        }
    }

    fn sample_pools() -> Vec<IpPool> {
        vec![
            pool("zeta", "cidr: 10.9.0.0/16"),
            pool("alpha", "cidr: 10.1.0.0/16"),
            pool("edge-only", "cidr: 10.2.0.0/16\nnodeSelector: zone == 'edge'"),
            pool("prod-only", "cidr: 10.3.0.0/16\nnamespaceSelector: env == 'prod'"),
            pool("disabled", "cidr: 10.4.0.0/16\ndisabled: true"),
            pool("manual", "cidr: 10.5.0.0/16\nassignmentMode: Manual"),
            pool("tunnel", "cidr: 10.6.0.0/16\nallowedUses: [Tunnel]"),
            pool("v6", "cidr: fd00::/48"),
        ]
    }

    /// `determinePools` (ipam.go): enabled, Automatic, both selectors match; absent selectors
    /// match everything (`SelectsNode` / `SelectsNamespace` in pools.go); sorted by name.
    #[test]
    fn automatic_choice_follows_selectors_mode_and_use() {
        let pools = sample_pools();
        let fixture = Fixture::new(&[], &[]);
        let chosen = eligible_pools(&pools, Family::V4, None, &fixture.placement()).unwrap();
        assert_eq!(names(&chosen), ["alpha", "zeta"]);
        let fixture = Fixture::new(&[("zone", "edge")], &[("env", "prod")]);
        let chosen = eligible_pools(&pools, Family::V4, None, &fixture.placement()).unwrap();
        assert_eq!(names(&chosen), ["alpha", "edge-only", "prod-only", "zeta"]);
        let chosen = eligible_pools(&pools, Family::V6, None, &fixture.placement()).unwrap();
        assert_eq!(names(&chosen), ["v6"]);
    }

    /// Requested pools are used "unconditionally" (ipam.go, determinePools): Manual pools and
    /// pools whose selectors do not match are fine, disabled ones are not.
    #[test]
    fn requested_pools_ignore_selectors_and_mode_but_not_disabled() {
        let pools = sample_pools();
        let fixture = Fixture::new(&[], &[]);
        let requested = ["manual".to_string(), "10.2.0.0/16".to_string()];
        let chosen = eligible_pools(&pools, Family::V4, Some(&requested), &fixture.placement()).unwrap();
        assert_eq!(names(&chosen), ["manual", "edge-only"]);
        let error = eligible_pools(
            &pools,
            Family::V4,
            Some(&["disabled".into()]),
            &fixture.placement(),
        );
        assert_eq!(error, Err(IpamError::UnknownPool("disabled".into())));
        let error = eligible_pools(
            &pools,
            Family::V4,
            Some(&["10.7.0.0/16".into()]),
            &fixture.placement(),
        );
        assert_eq!(error, Err(IpamError::UnknownPool("10.7.0.0/16".into())));
        let error =
            eligible_pools(&pools, Family::V4, Some(&["v6".into()]), &fixture.placement()).unwrap_err();
        assert!(error.to_string().contains("not an IPv4 pool"), "{error}");
    }

    /// `filterPoolsByUse` (ipam.go) applies to requested pools too.
    #[test]
    fn requested_pools_must_allow_workloads() {
        let pools = sample_pools();
        let fixture = Fixture::new(&[], &[]);
        let error =
            eligible_pools(&pools, Family::V4, Some(&["tunnel".into()]), &fixture.placement()).unwrap_err();
        assert!(error.to_string().contains("allows Workload use"), "{error}");
        let chosen = eligible_pools(
            &pools,
            Family::V4,
            Some(&["tunnel".into(), "alpha".into()]),
            &fixture.placement(),
        )
        .unwrap();
        assert_eq!(names(&chosen), ["alpha"]);
    }

    /// The pod's annotation wins over the namespace's (cni-plugin/pkg/k8s/k8s.go).
    #[test]
    fn pod_annotation_overrides_namespace_annotation() {
        let pod = labels(&[(IPV4_POOLS_ANNOTATION, "[\"a\"]")]);
        let namespace = labels(&[
            (IPV4_POOLS_ANNOTATION, "[\"b\"]"),
            (IPV6_POOLS_ANNOTATION, "[\"c\"]"),
        ]);
        assert_eq!(
            requested_pools(&pod, &namespace, Family::V4).unwrap(),
            Some(vec!["a".to_string()])
        );
        assert_eq!(
            requested_pools(&BTreeMap::new(), &namespace, Family::V4).unwrap(),
            Some(vec!["b".to_string()])
        );
        assert_eq!(
            requested_pools(&pod, &namespace, Family::V6).unwrap(),
            Some(vec!["c".to_string()])
        );
        assert_eq!(requested_pools(&pod, &BTreeMap::new(), Family::V6).unwrap(), None);
        let empty = labels(&[(IPV4_POOLS_ANNOTATION, "[]")]);
        assert_eq!(
            requested_pools(&empty, &BTreeMap::new(), Family::V4).unwrap(),
            None
        );
        let bad = labels(&[(IPV4_POOLS_ANNOTATION, "pool-a")]);
        let error = requested_pools(&bad, &BTreeMap::new(), Family::V4).unwrap_err();
        assert!(error.to_string().contains("JSON list"), "{error}");
    }

    /// `validateAndExtractIPs` (cni-plugin/pkg/k8s/k8s.go): one address per family.
    #[test]
    fn requested_addresses_one_per_family() {
        let annotations = |value: &str| labels(&[(IP_ADDRESSES_ANNOTATION, value)]);
        assert_eq!(
            requested_addresses(&annotations("[\"fd00::5\", \"10.0.0.5\"]")).unwrap(),
            Some(vec!["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()])
        );
        assert_eq!(requested_addresses(&BTreeMap::new()).unwrap(), None);
        for (value, message) in [
            ("[\"10.0.0.5\", \"10.0.0.6\"]", "more than one IPv4"),
            ("[]", "empty"),
            ("[\"ten\"]", "not an IP address"),
            ("10.0.0.5", "JSON list"),
        ] {
            let error = requested_addresses(&annotations(value)).unwrap_err().to_string();
            assert!(error.contains(message), "{value}: {error}");
        }
    }

    #[test]
    fn address_belongs_to_enabled_pools_only() {
        let pools = sample_pools();
        assert_eq!(
            pool_for_address(&pools, "10.5.0.9".parse().unwrap()).map(|pool| pool.metadata.name.as_str()),
            Some("manual")
        );
        assert!(pool_for_address(&pools, "10.4.0.9".parse().unwrap()).is_none());
        assert!(pool_for_address(&pools, "192.0.2.1".parse().unwrap()).is_none());
    }

    #[test]
    fn pool_changes() {
        let existing = pool("a", "cidr: 10.0.0.0/16");
        let others = vec![existing.clone(), pool("b", "cidr: 10.1.0.0/16")];
        let same = pool("a", "cidr: 10.0.0.0/16\nnatOutgoing: true");
        assert_eq!(check_pool_change(Some(&existing), &same, &others), Ok(()));
        let moved = pool("a", "cidr: 10.2.0.0/16");
        assert!(
            check_pool_change(Some(&existing), &moved, &others)
                .unwrap_err()
                .contains("spec.cidr cannot change")
        );
        let resized = pool("a", "cidr: 10.0.0.0/16\nblockSize: 28");
        assert!(
            check_pool_change(Some(&existing), &resized, &others)
                .unwrap_err()
                .contains("blockSize cannot change")
        );
        // An explicit blockSize equal to the default is no change.
        let explicit = pool("a", "cidr: 10.0.0.0/16\nblockSize: 26");
        assert_eq!(check_pool_change(Some(&existing), &explicit, &others), Ok(()));
        let overlapping = pool("c", "cidr: 10.1.128.0/17");
        let error = check_pool_change(None, &overlapping, &others).unwrap_err();
        assert!(error.contains("overlaps IPPool b"), "{error}");
        let fresh = pool("c", "cidr: 10.3.0.0/16");
        assert_eq!(check_pool_change(None, &fresh, &others), Ok(()));
    }
}
