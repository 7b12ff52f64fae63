//! Anti-spoofing with real packets (root only; skipped otherwise), issue 4: a pod that sends
//! from an address other than its own is dropped at its node, while the same pod sending from
//! its own address is answered. The node is given a route back to the spoofed address, so that
//! silence can only mean Sluice dropped the packet.
//!
//! Like `tests/lab.rs`, this binary has no libtest harness (see `support`).

mod support;

use std::process::ExitCode;

use support::{Lab, Test};

const TESTS: [(&str, Test); 1] = [("a_pod_cannot_send_from_an_address_that_is_not_its_own", spoofing)];

fn main() -> ExitCode {
    if let Some(code) = support::dispatch() {
        return code;
    }
    support::run_tests(&TESTS)
}

const OUTSIDE: &str = "198.51.100.20";

const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: routed
spec:
  cidr: 10.61.0.0/16
"#;

fn lab_file() -> String {
    format!(
        "kind: Lab\nname: placeholder\nnodes:\n  - name: node-1\noutside:\n  - {{name: echo, address: {OUTSIDE}, udp: [53]}}\nmanifests: [manifests/]\npods:\n  - {{namespace: shop, name: client, node: node-1, labels: {{app: client}}}}\n"
    )
}

fn spoofing() -> Result<(), String> {
    if !support::is_root() {
        println!("skipped: needs root to make network namespaces");
        return Ok(());
    }
    let lab = Lab::up("spoof", &lab_file(), &[("00.yaml", MANIFESTS.to_string())])?;
    let pod = lab.netns("shop/client")?;
    let node = lab.netns("node-1")?;
    let own_address = lab.pod_address("shop/client")?;
    let own = own_address.to_string();
    // The next address of the pod's own block, so the outside's reply is routed back to this
    // node (the fabric routes blocks to the nodes that hold them).
    let spoofed = match own_address {
        std::net::IpAddr::V4(address) => std::net::Ipv4Addr::from(u32::from(address) + 1).to_string(),
        std::net::IpAddr::V6(_) => return Err("the test expects an IPv4 pod".into()),
    };
    let send = |from: &str| -> Result<String, String> {
        let output = lab
            .command_in(
                &pod,
                &[
                    "support", "udp-from", "--from", from, "--to", OUTSIDE, "--port", "53",
                ],
            )
            .output()
            .map_err(|error| error.to_string())?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    // No policy selects the pod: its own address is answered.
    let answer = send(&own)?;
    if answer != "answered" {
        return Err(format!("from its own address {own} the pod got `{answer}`"));
    }
    // A second address on the pod, and a route back to it on the node: only Sluice's
    // anti-spoofing can stop it now.
    let host_interface = support::run_checked("ip", &["-n", &node, "-o", "route", "get", &own])?;
    let device = host_interface
        .split_whitespace()
        .skip_while(|word| *word != "dev")
        .nth(1)
        .ok_or_else(|| format!("no device in `{host_interface}`"))?
        .to_string();
    support::run_checked(
        "ip",
        &[
            "-n",
            &pod,
            "address",
            "add",
            &format!("{spoofed}/32"),
            "dev",
            "eth0",
        ],
    )?;
    support::run_checked(
        "ip",
        &[
            "-n",
            &node,
            "route",
            "add",
            &format!("{spoofed}/32"),
            "dev",
            &device,
        ],
    )?;
    let answer = send(&spoofed)?;
    if answer != "silent" {
        return Err(format!(
            "a packet from the spoofed address {spoofed} got `{answer}`"
        ));
    }
    // The real address still works after the spoofing attempt.
    let answer = send(&own)?;
    if answer != "answered" {
        return Err(format!(
            "after the spoofing attempt, the own address got `{answer}`"
        ));
    }
    lab.finish()
}
