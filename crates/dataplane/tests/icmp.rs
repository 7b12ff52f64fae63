//! The renderer and the evaluator read a rule's protocol, notProtocol, icmp and notICMP fields
//! the same way (root; private network namespaces). One egress Allow rule per case on a pod
//! wired as the CNI plugin wires one; the kernel, programmed from the rendered ruleset, decides
//! a ping (ICMP echo, type 8 code 0) and a TCP connection to an outside host, and each must be
//! what the evaluator says for the same flow.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_api::calico::IcmpFields;
use sluice_dataplane::{LocalEndpoint, Syncer, render};
use sluice_nft::CommandBackend;
use sluice_policy::Flow;
use support::{OUTSIDE, POD, Topology, in_namespace};

mod support;

const PORT: u16 = 8080;
const INTERFACE: &str = "slcicmptest";

fn manifests(rule: &str) -> String {
    let mut text = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n");
    text.push_str(&support::workload_endpoint(
        "shop", "client", "client", POD, INTERFACE,
    ));
    text.push_str(&format!(
        r#"
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {{name: client-egress}}
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
    - {{action: Allow, {rule}}}
"#
    ));
    text
}

/// One echo request from the pod; a missing `ping` fails the test rather than skipping a check.
fn pings(topology: &Topology) -> bool {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topology.pod,
            "ping",
            "-n",
            "-c",
            "1",
            "-W",
            "1",
            OUTSIDE,
        ])
        .output()
        .expect("ip runs");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        !error.contains("No such file") && !error.contains("not found"),
        "ping is missing: install the Debian package iputils-ping ({error})"
    );
    output.status.success()
}

fn connects(topology: &Topology) -> bool {
    let target = SocketAddr::new(OUTSIDE.parse().unwrap(), PORT);
    in_namespace(&topology.pod, || {
        TcpStream::connect_timeout(&target, Duration::from_secs(1)).is_ok()
    })
}

fn flow(protocol: u8) -> Flow {
    Flow {
        source: POD.parse().unwrap(),
        destination: OUTSIDE.parse().unwrap(),
        protocol,
        source_port: None,
        destination_port: (protocol == 6).then_some(PORT),
        icmp_type: (protocol == 1).then_some(8),
        icmp_code: (protocol == 1).then_some(0),
    }
}

#[test]
fn the_kernel_and_the_evaluator_agree_on_protocol_and_icmp_matches() {
    let topology = Topology::new("sluiceicmp", INTERFACE);
    let _listener = in_namespace(&topology.outside, || {
        TcpListener::bind(SocketAddr::new(OUTSIDE.parse::<IpAddr>().unwrap(), PORT)).expect("listen")
    });
    let local = [LocalEndpoint {
        namespace: "shop".into(),
        name: "client".into(),
        interface: INTERFACE.into(),
        egress_gateway: false,
    }];
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&topology.node).expect("nft is installed"));

    // Everything allowed first, until the path answers (neighbours resolved), so that silence
    // later is the policy's drop.
    let open = sluice_api::load_str("open.yaml", &manifests("protocol: TCP")).unwrap();
    syncer
        .sync(&render(&sluice_policy::compile(&open), &local))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !connects(&topology) {
        assert!(Instant::now() < deadline, "the outside host never answered");
    }

    // (rule fields, a stored notICMP to put in place of the loaded one, bypassing validation)
    let cases: [(&str, Option<IcmpFields>); 11] = [
        ("protocol: ICMP", None),
        ("protocol: TCP", None),
        ("notProtocol: ICMP", None),
        ("notProtocol: TCP", None),
        ("protocol: ICMP, icmp: {type: 8}", None),
        ("protocol: ICMP, icmp: {type: 8, code: 1}", None),
        ("protocol: ICMP, notICMP: {type: 8}", None),
        ("protocol: ICMP, notICMP: {type: 0}", None),
        ("protocol: ICMP, notICMP: {type: 8, code: 0}", None),
        // No protocol: the kernel's `icmp type != 0` only matches ICMP.
        ("notICMP: {type: 0}", None),
        // A code without a type, as another writer of the datastore could store it.
        (
            "notICMP: {type: 0}",
            Some(IcmpFields {
                icmp_type: None,
                code: Some(0),
            }),
        ),
    ];
    let mut disagreements = Vec::new();
    let mut outcomes = std::collections::BTreeSet::new();
    for (rule, stored_not_icmp) in cases {
        let mut resources = sluice_api::load_str("case.yaml", &manifests(rule)).unwrap();
        if let Some(fields) = stored_not_icmp {
            resources.global_network_policies[0].spec.egress[0].not_icmp = Some(fields);
        }
        let dataplane = sluice_policy::compile(&resources);
        syncer
            .sync(&render(&dataplane, &local))
            .unwrap_or_else(|error| panic!("{rule}: the kernel refused the ruleset: {error}"));
        for (name, protocol, kernel) in [("ping", 1, pings(&topology)), ("TCP", 6, connects(&topology))] {
            let evaluator = dataplane.evaluate(&flow(protocol)).allowed;
            outcomes.insert(kernel);
            if kernel != evaluator {
                disagreements.push(format!(
                    "{rule} (stored notICMP {stored_not_icmp:?}): {name} kernel {kernel}, evaluator {evaluator}"
                ));
            }
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    // Both verdicts occurred, so the probes can tell them apart.
    assert_eq!(outcomes.len(), 2);
}
