//! Names derived from an attachment: the host side of the veth and the WorkloadEndpoint.

use sha2::{Digest, Sha256};

/// Prefix of every host-side veth Sluice creates (Calico uses `cali`).
pub const HOST_INTERFACE_PREFIX: &str = "slc";

/// `slc` + 12 hex digits of SHA-256(`<namespace>.<pod>.<ifname>`): 15 bytes, the kernel's limit,
/// stable across retries so a stale interface from a failed ADD can be found and replaced.
pub fn host_interface_name(namespace: &str, pod: &str, interface_name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}.{pod}.{interface_name}").as_bytes());
    let hex: String = digest.iter().take(6).map(|byte| format!("{byte:02x}")).collect();
    format!("{HOST_INTERFACE_PREFIX}{hex}")
}

/// Calico's WorkloadEndpoint name for Kubernetes: `<node>-k8s-<pod>-<endpoint>`, each part with
/// its dashes doubled so the parts can be split again (libcalico-go `names/workloadendpoint.go`).
pub fn workload_endpoint_name(node: &str, pod: &str, endpoint: &str) -> String {
    [node, "k8s", pod, endpoint]
        .iter()
        .map(|part| part.replace('-', "--"))
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_interface_names_fit_the_kernel_limit_and_are_stable() {
        let name = host_interface_name("prod", "web-0", "eth0");
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("slc"));
        assert_eq!(name, host_interface_name("prod", "web-0", "eth0"));
        assert_ne!(name, host_interface_name("prod", "web-0", "net1"));
    }

    #[test]
    fn workload_endpoint_names_escape_dashes_like_calico() {
        assert_eq!(
            workload_endpoint_name("node-1", "web-0", "eth0"),
            "node--1-k8s-web--0-eth0"
        );
        assert_eq!(workload_endpoint_name("node", "pod", "eth0"), "node-k8s-pod-eth0");
    }
}
