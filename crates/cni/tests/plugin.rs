//! The real binary driven as a container runtime drives it, in namespaces made per test.
//! Needs root (CI runs as root).

mod support;

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::Value;
use sluice_api::{Kind, Resource, resource};
use support::{Attachment, Lab, NODE_ADDRESS, invoke_plugin};

const POD_MANIFEST: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: prod
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: prod
  labels:
    app: web
spec:
  serviceAccountName: web
  containers:
  - name: web
    ports:
    - name: http
      containerPort: 8080
";

fn endpoint_key(pod_namespace: &str, pod: &str) -> String {
    let name = sluice_cni::names::workload_endpoint_name("node-1", pod, "eth0");
    resource::key(Kind::WorkloadEndpoint, Some(pod_namespace), &name)
}

fn allocated(lab: &Lab, handle: &str) -> Vec<IpAddr> {
    let store: Arc<dyn sluice_store::Store> = Arc::from(lab.store());
    sluice_ipam::Ipam::new(store)
        .allocations_of(handle)
        .unwrap()
        .iter()
        .map(|allocation| allocation.address)
        .collect()
}

/// Conntrack entries in the node's namespace with `address` in any tuple.
fn tracked(lab: &Lab, address: &str) -> usize {
    lab.in_node(&["cat", "/proc/net/nf_conntrack"])
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .any(|field| field == format!("src={address}") || field == format!("dst={address}"))
        })
        .count()
}

fn pod_address(reply: &Value) -> String {
    let address = reply["ips"][0]["address"].as_str().expect("an address");
    address.split('/').next().unwrap().to_string()
}

fn links(namespace: &str) -> Vec<Value> {
    serde_json::from_str(&support::run("ip", &["-n", namespace, "-j", "link", "show"])).unwrap()
}

fn has_link(namespace: &str, name: &str) -> bool {
    links(namespace).iter().any(|link| link["ifname"] == name)
}

#[test]
fn add_wires_the_pod_check_passes_and_del_cleans_up() {
    let mut lab = Lab::new("add");
    lab.apply(POD_MANIFEST);
    let netns = lab.pod_namespace("web");
    let attachment = Attachment::new("c0ffee01", &netns, "prod", "web-0");
    let config = lab.config("1.1.0");

    let reply = lab.invoke("ADD", &attachment, &config);
    assert_eq!(reply.code, 0, "{reply:?}");
    let result = &reply.json;
    assert_eq!(result["cniVersion"], "1.1.0");
    let host_interface = sluice_cni::names::host_interface_name("prod", "web-0", "eth0");
    assert_eq!(result["interfaces"][0]["name"], host_interface.as_str());
    assert_eq!(result["interfaces"][1]["name"], "eth0");
    assert_eq!(
        result["interfaces"][1]["sandbox"],
        format!("/var/run/netns/{netns}")
    );
    assert_eq!(result["interfaces"][1]["mtu"], 1400);
    assert_eq!(result["ips"][0]["interface"], 1);
    assert_eq!(result["ips"][0]["gateway"], "169.254.1.1");
    assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
    let address = pod_address(result);
    assert!(address.starts_with("10.100."), "{address}");
    assert_eq!(
        allocated(&lab, &attachment.handle()),
        vec![address.parse::<IpAddr>().unwrap()]
    );

    // The pod side: eth0 up with the /32 and the link-local gateway routes.
    let pod_addresses = support::run("ip", &["-n", &netns, "-o", "address", "show", "dev", "eth0"]);
    assert!(
        pod_addresses.contains(&format!("inet {address}/32")),
        "{pod_addresses}"
    );
    let pod_routes = support::run("ip", &["-n", &netns, "route", "show"]);
    let has_route = |routes: &str, parts: &[&str]| {
        routes
            .lines()
            .any(|line| parts.iter().all(|part| line.contains(part)))
    };
    assert!(
        has_route(&pod_routes, &["default via 169.254.1.1 dev eth0"]),
        "{pod_routes}"
    );
    assert!(
        has_route(&pod_routes, &["169.254.1.1 dev eth0", "scope link"]),
        "{pod_routes}"
    );
    let pod_mtu = support::run("ip", &["-n", &netns, "link", "show", "eth0"]);
    assert!(
        pod_mtu.contains("mtu 1400") && pod_mtu.contains("UP"),
        "{pod_mtu}"
    );

    // The node side: the veth, its route to the pod, proxy ARP; nothing else.
    assert!(has_link(&lab.node, &host_interface));
    let node_routes = support::run("ip", &["-n", &lab.node, "route", "show"]);
    assert!(
        has_route(
            &node_routes,
            &[&format!("{address} dev {host_interface}"), "scope link"]
        ),
        "{node_routes}"
    );
    let proxy_arp = lab.in_node(&[
        "cat",
        &format!("/proc/sys/net/ipv4/conf/{host_interface}/proxy_arp"),
    ]);
    assert_eq!(proxy_arp.trim(), "1");

    // Packets: node → pod and back (ICMP too where ping is installed). The pod itself may not
    // open connections yet: ADD made the node fail closed, and no agent has programmed this
    // pod.
    support::udp_round_trip(&lab.node, &netns, address.parse().unwrap());
    assert!(
        tracked(&lab, &address) > 0,
        "the round trip left no conntrack entry"
    );
    assert_ne!(support::ping(&lab.node, &address), Some(false));
    assert_ne!(support::ping(&netns, NODE_ADDRESS), Some(true));
    let ruleset = support::run(
        "ip",
        &[
            "netns", "exec", &lab.node, "nft", "list", "table", "inet", "sluice",
        ],
    );
    assert!(
        ruleset.contains("iifname \"slc*\" iifname != @endpoint-interfaces drop"),
        "{ruleset}"
    );

    // The WorkloadEndpoint, Calico-shaped.
    let stored = lab
        .store()
        .get(&endpoint_key("prod", "web-0"))
        .unwrap()
        .expect("endpoint recorded");
    let Resource::WorkloadEndpoint(endpoint) =
        Resource::decode(&stored.value, stored.modify_revision).unwrap()
    else {
        panic!("not an endpoint");
    };
    assert_eq!(endpoint.metadata.name, "node--1-k8s-web--0-eth0");
    assert_eq!(
        endpoint.metadata.labels.get("app").map(String::as_str),
        Some("web")
    );
    assert_eq!(endpoint.spec.container_id, "c0ffee01");
    assert_eq!(endpoint.spec.interface_name, host_interface);
    assert_eq!(
        endpoint.spec.ip_networks[0].0.to_string(),
        format!("{address}/32")
    );
    assert_eq!(
        endpoint.spec.profiles,
        vec!["kns.prod".to_string(), "ksa.prod.web".to_string()]
    );
    assert_eq!(endpoint.spec.ports[0].port, 8080);

    // CHECK with the ADD result as prevResult.
    let mut check_config: Value = serde_json::from_str(&config).unwrap();
    check_config["prevResult"] = result.clone();
    let check = lab.invoke("CHECK", &attachment, &check_config.to_string());
    assert_eq!((check.code, &check.json), (0, &Value::Null), "{check:?}");

    // DEL removes everything; a second DEL and a DEL without the namespace are fine.
    let delete = lab.invoke("DEL", &attachment, &config);
    assert_eq!((delete.code, &delete.json), (0, &Value::Null), "{delete:?}");
    assert!(!has_link(&lab.node, &host_interface));
    assert!(!has_link(&netns, "eth0"));
    assert!(allocated(&lab, &attachment.handle()).is_empty());
    assert!(lab.store().get(&endpoint_key("prod", "web-0")).unwrap().is_none());
    // The released address carries no connection state to whoever gets it next.
    assert_eq!(tracked(&lab, &address), 0);
    let again = lab.invoke("DEL", &attachment, &config);
    assert_eq!(again.code, 0, "{again:?}");
    lab.remove_pod_namespace(&netns);
    let gone = lab.invoke("DEL", &attachment, &config);
    assert_eq!(gone.code, 0, "{gone:?}");
    let mut without_netns = attachment.clone();
    without_netns.netns = None;
    assert_eq!(lab.invoke("DEL", &without_netns, &config).code, 0);
}

#[test]
fn a_second_add_after_del_works_and_old_versions_get_old_results() {
    let mut lab = Lab::new("readd");
    let netns = lab.pod_namespace("api");
    // A pod the store does not know: allowed, with no labels or annotations.
    let first = Attachment::new("aaaa0001", &netns, "default", "api");
    let config = lab.config("0.4.0");
    let reply = lab.invoke("ADD", &first, &config);
    assert_eq!(reply.code, 0, "{reply:?}");
    assert_eq!(reply.json["cniVersion"], "0.4.0");
    assert_eq!(reply.json["ips"][0]["version"], "4");
    assert_eq!(lab.invoke("DEL", &first, &config).code, 0);

    let second = Attachment::new("aaaa0002", &netns, "default", "api");
    let reply = lab.invoke("ADD", &second, &lab.config("1.0.0"));
    assert_eq!(reply.code, 0, "{reply:?}");
    let address = pod_address(&reply.json);
    support::udp_round_trip(&lab.node, &netns, address.parse().unwrap());
    assert_eq!(allocated(&lab, &second.handle()).len(), 1);
    assert!(allocated(&lab, &first.handle()).is_empty());
}

#[test]
fn check_reports_what_is_missing() {
    let mut lab = Lab::new("check");
    let netns = lab.pod_namespace("db");
    let attachment = Attachment::new("bbbb0001", &netns, "default", "db");
    let config = lab.config("1.1.0");
    // Before ADD: an unknown container.
    assert_eq!(lab.invoke("CHECK", &attachment, &config).json["code"], 3);
    assert_eq!(lab.invoke("ADD", &attachment, &config).code, 0);
    assert_eq!(lab.invoke("CHECK", &attachment, &config).code, 0);

    // Someone removes the pod's route to its gateway: CHECK says so in words.
    support::run(
        "ip",
        &["-n", &netns, "route", "del", "169.254.1.1", "dev", "eth0"],
    );
    let broken = lab.invoke("CHECK", &attachment, &config);
    assert_eq!(broken.code, 1);
    assert_eq!(broken.json["code"], 103, "{broken:?}");
    assert_eq!(
        broken.json["details"], "the pod has no route to 169.254.1.1 dev eth0",
        "{broken:?}"
    );
    // And its default route.
    support::run("ip", &["-n", &netns, "route", "del", "default"]);
    let broken = lab.invoke("CHECK", &attachment, &config);
    assert_eq!(
        broken.json["details"], "the pod has no IPv4 default route",
        "{broken:?}"
    );

    // The interface gone: unknown container.
    support::run("ip", &["-n", &netns, "link", "del", "eth0"]);
    assert_eq!(lab.invoke("CHECK", &attachment, &config).json["code"], 3);
}

#[test]
fn gc_releases_attachments_the_runtime_no_longer_lists() {
    let mut lab = Lab::new("gc");
    let config = lab.config("1.1.0");
    let keep_netns = lab.pod_namespace("keep");
    let drop_netns = lab.pod_namespace("drop");
    let keep = Attachment::new("cccc0001", &keep_netns, "default", "keep");
    let stale = Attachment::new("cccc0002", &drop_netns, "default", "drop");
    assert_eq!(lab.invoke("ADD", &keep, &config).code, 0);
    assert_eq!(lab.invoke("ADD", &stale, &config).code, 0);

    let mut gc_config: Value = serde_json::from_str(&config).unwrap();
    gc_config["cni.dev/valid-attachments"] =
        serde_json::json!([{ "containerID": "cccc0001", "ifname": "eth0" }]);
    let reply = lab.invoke(
        "GC",
        &Attachment {
            netns: None,
            ..keep.clone()
        },
        &gc_config.to_string(),
    );
    assert_eq!((reply.code, &reply.json), (0, &Value::Null), "{reply:?}");
    assert_eq!(allocated(&lab, &keep.handle()).len(), 1);
    assert!(allocated(&lab, &stale.handle()).is_empty());
    // The host side of the stale attachment goes too; the kept one stays.
    let stale_interface = sluice_cni::names::host_interface_name("default", "drop", "eth0");
    assert!(!has_link(&lab.node, &stale_interface));
    assert!(!has_link(&drop_netns, "eth0"));
    assert!(has_link(
        &lab.node,
        &sluice_cni::names::host_interface_name("default", "keep", "eth0")
    ));
    assert!(
        lab.store()
            .get(&endpoint_key("default", "keep"))
            .unwrap()
            .is_some()
    );
    assert!(
        lab.store()
            .get(&endpoint_key("default", "drop"))
            .unwrap()
            .is_none()
    );

    // GC before 1.1.0 is not a command.
    let mut old: Value = gc_config.clone();
    old["cniVersion"] = "1.0.0".into();
    let refused = lab.invoke("GC", &keep, &old.to_string());
    assert_eq!(refused.json["code"], 1);
    assert_eq!(refused.json["msg"], "GC needs cniVersion 1.1.0");
}

#[test]
fn status_reports_whether_the_datastore_is_reachable() {
    let lab = Lab::new("status");
    let attachment = Attachment {
        netns: None,
        ..Attachment::new("", "", "default", "x")
    };
    let reply = lab.invoke("STATUS", &attachment, &lab.config("1.1.0"));
    assert_eq!((reply.code, &reply.json), (0, &Value::Null), "{reply:?}");
    let mut unreachable: Value = serde_json::from_str(&lab.config("1.1.0")).unwrap();
    unreachable["datastore"] = "file:///dev/null/store.db".into();
    let reply = lab.invoke("STATUS", &attachment, &unreachable.to_string());
    assert_eq!(reply.code, 1);
    assert_eq!(reply.json["code"], 50, "{reply:?}");
}

#[test]
fn a_failed_add_undoes_its_work() {
    let mut lab = Lab::new("undo");
    let netns = lab.pod_namespace("busy");
    // The pod already has an eth0, so the veth cannot be created with that name.
    support::run(
        "ip",
        &[
            "-n", &netns, "link", "add", "eth0", "type", "veth", "peer", "name", "other",
        ],
    );
    let attachment = Attachment::new("dddd0001", &netns, "default", "busy");
    let reply = lab.invoke("ADD", &attachment, &lab.config("1.1.0"));
    assert_eq!(reply.code, 1);
    assert_eq!(reply.json["code"], 100, "{reply:?}");
    assert!(allocated(&lab, &attachment.handle()).is_empty());
    let host_interface = sluice_cni::names::host_interface_name("default", "busy", "eth0");
    assert!(!has_link(&lab.node, &host_interface));
    assert!(
        lab.store()
            .get(&endpoint_key("default", "busy"))
            .unwrap()
            .is_none()
    );
}

// Requests that fail before touching any namespace run the binary directly.

fn plain_attachment() -> Attachment {
    Attachment {
        netns: Some("/nonexistent".into()),
        ..Attachment::new("eeee0001", "", "default", "x")
    }
}

#[test]
fn version_lists_the_supported_versions() {
    let reply = invoke_plugin(
        None,
        "VERSION",
        &plain_attachment(),
        None,
        r#"{"cniVersion":"1.1.0"}"#,
    );
    assert_eq!(reply.code, 0);
    assert_eq!(reply.json["cniVersion"], "1.1.0");
    assert_eq!(
        reply.json["supportedVersions"],
        serde_json::json!(["0.4.0", "1.0.0", "1.1.0"])
    );
}

#[test]
fn bad_requests_get_the_spec_error_codes() {
    let attachment = plain_attachment();
    let add = |config: &str| invoke_plugin(None, "ADD", &attachment, Some("/nonexistent"), config);
    let not_json = add("{");
    assert_eq!(
        (not_json.code, not_json.json["code"].as_u64()),
        (1, Some(6)),
        "{not_json:?}"
    );
    assert!(not_json.json["msg"].is_string());
    assert_eq!(
        add(r#"{"cniVersion":"0.3.1","name":"n","type":"sluice-cni"}"#).json["code"],
        1
    );
    assert_eq!(
        add(r#"{"cniVersion":"1.1.0","type":"sluice-cni"}"#).json["code"],
        7
    );
    assert_eq!(
        add(r#"{"cniVersion":"1.1.0","name":"n","type":"sluice-cni","mtu":"big"}"#).json["code"],
        7
    );
    let error = add(r#"{"cniVersion":"1.0.0","name":"n","type":"sluice-cni","mtu":20}"#);
    assert_eq!(
        (error.json["code"].as_u64(), error.json["cniVersion"].as_str()),
        (Some(7), Some("1.0.0"))
    );
    // A missing CNI_NETNS on ADD is an invalid environment.
    let missing = invoke_plugin(
        None,
        "ADD",
        &attachment,
        None,
        r#"{"cniVersion":"1.1.0","name":"n","type":"sluice-cni"}"#,
    );
    assert_eq!(missing.json["code"], 4, "{missing:?}");
    let unknown = invoke_plugin(
        None,
        "FROB",
        &attachment,
        None,
        r#"{"cniVersion":"1.1.0","name":"n","type":"sluice-cni"}"#,
    );
    assert_eq!(unknown.json["code"], 4);
}

#[test]
fn a_dual_stack_pod_gets_both_families_and_answers_over_ipv6() {
    let mut lab = Lab::new("dual");
    lab.apply(POD_MANIFEST);
    lab.apply(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: pods-v6\nspec:\n  cidr: fd00:100::/64\n  blockSize: 122\n",
    );
    lab.add_node_ipv6();
    let netns = lab.pod_namespace("web");
    let attachment = Attachment::new("c0ffee06", &netns, "prod", "web-0");
    let config = lab.config("1.1.0");

    let reply = lab.invoke("ADD", &attachment, &config);
    assert_eq!(reply.code, 0, "{reply:?}");
    let ips = reply.json["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 2, "{reply:?}");
    let v6 = ips
        .iter()
        .find(|ip| {
            ip["address"]
                .as_str()
                .is_some_and(|address| address.contains(':'))
        })
        .expect("an IPv6 address");
    let address = v6["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(address.starts_with("fd00:100::"), "{address}");
    assert_eq!(v6["gateway"], "fe80::ecee:eeff:feee:eeee");
    let routes = reply.json["routes"].to_string();
    assert!(routes.contains("::/0"), "{routes}");

    let pod_addresses = support::run(
        "ip",
        &["-n", &netns, "-6", "-o", "address", "show", "dev", "eth0"],
    );
    assert!(
        pod_addresses.contains(&format!("inet6 {address}/128")),
        "{pod_addresses}"
    );
    let pod_routes = support::run("ip", &["-n", &netns, "-6", "route", "show"]);
    assert!(
        pod_routes.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"),
        "{pod_routes}"
    );
    let host_interface = sluice_cni::names::host_interface_name("prod", "web-0", "eth0");
    let node_routes = support::run("ip", &["-n", &lab.node, "-6", "route", "show"]);
    assert!(
        node_routes.contains(&format!("{address} dev {host_interface}")),
        "{node_routes}"
    );

    // Both directions over IPv6, through the fail-closed node (the pod is not programmed, but
    // the node opened the flow and the pod's neighbour discovery reaches the node).
    support::udp_round_trip(&lab.node, &netns, address.parse().unwrap());

    let delete = lab.invoke("DEL", &attachment, &config);
    assert_eq!(delete.code, 0, "{delete:?}");
    assert!(allocated(&lab, &attachment.handle()).is_empty());
}

#[test]
fn a_missing_datastore_is_refused_not_created() {
    let mut lab = Lab::new("missing");
    let netns = lab.pod_namespace("web");
    let missing = lab.directory.path().join("typo").join("store.db");
    let mut config: Value = serde_json::from_str(&lab.config("1.1.0")).unwrap();
    config["datastore"] = format!("file://{}", missing.display()).into();
    let attachment = Attachment::new("eeee0001", &netns, "default", "web");
    let reply = lab.invoke("ADD", &attachment, &config.to_string());
    assert_eq!(reply.code, 1, "{reply:?}");
    let details = reply.json["details"].as_str().unwrap_or_default();
    assert!(
        reply.json["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("datastore does not exist")
            && details.contains("no datastore at"),
        "{reply:?}"
    );
    assert!(!missing.parent().unwrap().exists(), "the plugin created a store");
}

fn link_index(namespace: &str, name: &str) -> Option<u64> {
    links(namespace)
        .iter()
        .find(|link| link["ifname"] == name)
        .and_then(|link| link["ifindex"].as_u64())
}

fn node_routes_to(lab: &Lab, address: &str) -> String {
    support::run("ip", &["-n", &lab.node, "route", "show", address])
}

#[test]
fn two_adds_at_once_for_one_container_leave_one_working_attachment() {
    let mut lab = Lab::new("race");
    let config = lab.config("1.1.0");
    // Several rounds: the old plugin lost a round only when the two calls overlapped.
    for round in 0..3 {
        let netns = lab.pod_namespace(&format!("race{round}"));
        let attachment = Attachment::new(
            &format!("race000{round}"),
            &netns,
            "default",
            &format!("race{round}"),
        );
        let (first, second) = std::thread::scope(|scope| {
            let first = scope.spawn(|| lab.invoke("ADD", &attachment, &config));
            let second = scope.spawn(|| lab.invoke("ADD", &attachment, &config));
            (first.join().unwrap(), second.join().unwrap())
        });
        assert_eq!((first.code, second.code), (0, 0), "{first:?} {second:?}");
        assert_eq!(first.json, second.json, "both calls report the one attachment");
        let address = pod_address(&first.json);
        assert_eq!(
            allocated(&lab, &attachment.handle()),
            vec![address.parse::<IpAddr>().unwrap()]
        );
        let host_interface =
            sluice_cni::names::host_interface_name("default", &format!("race{round}"), "eth0");
        assert!(has_link(&lab.node, &host_interface));
        support::udp_round_trip(&lab.node, &netns, address.parse().unwrap());
        assert_eq!(lab.invoke("CHECK", &attachment, &config).code, 0);

        // The next pod gets another address.
        let other_netns = lab.pod_namespace(&format!("next{round}"));
        let other = Attachment::new(
            &format!("next000{round}"),
            &other_netns,
            "default",
            &format!("next{round}"),
        );
        let reply = lab.invoke("ADD", &other, &config);
        assert_eq!(reply.code, 0, "{reply:?}");
        assert_ne!(pod_address(&reply.json), address);
        support::udp_round_trip(&lab.node, &netns, address.parse().unwrap());
    }
}

#[test]
fn a_repeated_add_returns_the_same_result_and_keeps_the_interface() {
    let mut lab = Lab::new("repeat");
    let netns = lab.pod_namespace("web");
    let attachment = Attachment::new("f00d0001", &netns, "default", "web");
    let config = lab.config("1.1.0");
    let first = lab.invoke("ADD", &attachment, &config);
    assert_eq!(first.code, 0, "{first:?}");
    let host_interface = sluice_cni::names::host_interface_name("default", "web", "eth0");
    let host_index = link_index(&lab.node, &host_interface);
    let pod_index = link_index(&netns, "eth0");
    // A chained plugin's additions to the interface.
    support::run(
        "ip",
        &["-n", &netns, "address", "add", "192.0.2.7/32", "dev", "eth0"],
    );
    support::run(
        "ip",
        &[
            "-n", &netns, "link", "property", "add", "dev", "eth0", "altname", "chained0",
        ],
    );

    let again = lab.invoke("ADD", &attachment, &config);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.json, first.json);
    assert_eq!(link_index(&lab.node, &host_interface), host_index);
    assert_eq!(link_index(&netns, "eth0"), pod_index);
    let pod_addresses = support::run("ip", &["-n", &netns, "-o", "address", "show", "dev", "eth0"]);
    assert!(pod_addresses.contains("192.0.2.7/32"), "{pod_addresses}");
    let pod_link = support::run("ip", &["-n", &netns, "link", "show", "chained0"]);
    assert!(pod_link.contains("eth0"), "{pod_link}");
    assert_eq!(allocated(&lab, &attachment.handle()).len(), 1);

    // A broken attachment is repaired in place, still without a new interface.
    support::run("ip", &["-n", &netns, "route", "del", "default"]);
    let repaired = lab.invoke("ADD", &attachment, &config);
    assert_eq!(repaired.code, 0, "{repaired:?}");
    assert_eq!(repaired.json, first.json);
    assert_eq!(link_index(&netns, "eth0"), pod_index);
    assert!(support::run("ip", &["-n", &netns, "route", "show", "default"]).contains("169.254.1.1"));
    assert_eq!(lab.invoke("CHECK", &attachment, &config).code, 0);
}

#[test]
fn a_failing_repeat_add_leaves_the_first_attachment_working() {
    let mut lab = Lab::new("badrepeat");
    let netns = lab.pod_namespace("web");
    let elsewhere = lab.pod_namespace("elsewhere");
    let attachment = Attachment::new("f00d0002", &netns, "default", "web");
    let config = lab.config("1.1.0");
    let first = lab.invoke("ADD", &attachment, &config);
    assert_eq!(first.code, 0, "{first:?}");
    let address = pod_address(&first.json);
    let host_interface = sluice_cni::names::host_interface_name("default", "web", "eth0");
    let host_index = link_index(&lab.node, &host_interface);

    // The same container again, with a namespace that is not its own, then with a path that is
    // no namespace at all: both get past IPAM and fail while wiring.
    let not_a_namespace = lab.directory.path().join("not-a-namespace");
    std::fs::write(&not_a_namespace, "").unwrap();
    let wrong = [
        format!("/var/run/netns/{elsewhere}"),
        not_a_namespace.display().to_string(),
    ];
    for path in &wrong {
        let reply = lab.invoke_with_netns_path("ADD", &attachment, path, &config);
        assert_eq!(reply.code, 1, "{path}: {reply:?}");
        assert_eq!(
            allocated(&lab, &attachment.handle()),
            vec![address.parse::<IpAddr>().unwrap()],
            "{path}"
        );
        assert_eq!(link_index(&lab.node, &host_interface), host_index, "{path}");
        assert!(
            lab.store()
                .get(&endpoint_key_for("default", "web"))
                .unwrap()
                .is_some()
        );
        assert!(!has_link(&elsewhere, "eth0"));
        support::udp_round_trip(&lab.node, &netns, address.parse().unwrap());
        assert_eq!(lab.invoke("CHECK", &attachment, &config).code, 0, "{path}");
    }
}

fn endpoint_key_for(pod_namespace: &str, pod: &str) -> String {
    endpoint_key(pod_namespace, pod)
}

#[test]
fn del_without_a_namespace_removes_the_host_side() {
    let mut lab = Lab::new("delnons");
    let netns = lab.pod_namespace("web");
    let attachment = Attachment::new("f00d0003", &netns, "default", "web");
    let config = lab.config("1.1.0");
    let reply = lab.invoke("ADD", &attachment, &config);
    assert_eq!(reply.code, 0, "{reply:?}");
    let address = pod_address(&reply.json);
    let host_interface = sluice_cni::names::host_interface_name("default", "web", "eth0");
    assert!(node_routes_to(&lab, &address).contains(&host_interface));

    let without_netns = Attachment {
        netns: None,
        ..attachment.clone()
    };
    let delete = lab.invoke("DEL", &without_netns, &config);
    assert_eq!((delete.code, &delete.json), (0, &Value::Null), "{delete:?}");
    assert!(!has_link(&lab.node, &host_interface));
    assert!(!has_link(&netns, "eth0"));
    assert_eq!(node_routes_to(&lab, &address).trim(), "");
    assert!(allocated(&lab, &attachment.handle()).is_empty());
    assert!(
        lab.store()
            .get(&endpoint_key("default", "web"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn del_without_a_namespace_leaves_an_interface_sluice_did_not_make() {
    let mut lab = Lab::new("delforeign");
    let netns = lab.pod_namespace("web");
    let attachment = Attachment::new("f00d0004", &netns, "default", "web");
    let config = lab.config("1.1.0");
    assert_eq!(lab.invoke("ADD", &attachment, &config).code, 0);
    let host_interface = sluice_cni::names::host_interface_name("default", "web", "eth0");
    // Someone replaced the host veth with a link of their own under the same name.
    support::run("ip", &["-n", &netns, "link", "del", "eth0"]);
    support::run(
        "ip",
        &[
            "-n",
            &lab.node,
            "link",
            "add",
            &host_interface,
            "type",
            "veth",
            "peer",
            "name",
            "theirs",
        ],
    );
    let without_netns = Attachment {
        netns: None,
        ..attachment.clone()
    };
    assert_eq!(lab.invoke("DEL", &without_netns, &config).code, 0);
    assert!(has_link(&lab.node, &host_interface));
    assert!(allocated(&lab, &attachment.handle()).is_empty());
}

#[test]
fn a_second_interface_leaves_the_default_route_to_the_first() {
    let mut lab = Lab::new("net1");
    let netns = lab.pod_namespace("multi");
    let primary = Attachment::new("f00d0005", &netns, "default", "multi");
    let secondary = Attachment {
        interface_name: "net1".into(),
        ..primary.clone()
    };
    let config = lab.config("1.1.0");
    let first = lab.invoke("ADD", &primary, &config);
    assert_eq!(first.code, 0, "{first:?}");
    let second = lab.invoke("ADD", &secondary, &config);
    assert_eq!(second.code, 0, "{second:?}");
    assert_eq!(second.json["routes"], serde_json::json!([]), "{second:?}");
    assert!(second.json["ips"][0].get("gateway").is_none(), "{second:?}");
    let secondary_address = pod_address(&second.json);
    assert_ne!(secondary_address, pod_address(&first.json));
    let net1 = support::run("ip", &["-n", &netns, "-o", "address", "show", "dev", "net1"]);
    assert!(net1.contains(&format!("{secondary_address}/32")), "{net1}");
    let default_route = || support::run("ip", &["-n", &netns, "route", "show", "default"]);
    assert!(default_route().contains("dev eth0"), "{}", default_route());
    assert_eq!(lab.invoke("CHECK", &secondary, &config).code, 0);
    assert_eq!(lab.invoke("CHECK", &primary, &config).code, 0);
    // A repeated ADD of the second interface still leaves the route alone.
    assert_eq!(lab.invoke("ADD", &secondary, &config).json, second.json);

    let delete = lab.invoke("DEL", &secondary, &config);
    assert_eq!(delete.code, 0, "{delete:?}");
    assert!(
        default_route().contains("via 169.254.1.1 dev eth0"),
        "{}",
        default_route()
    );
    let check = lab.invoke("CHECK", &primary, &config);
    assert_eq!(check.code, 0, "{check:?}");
    support::udp_round_trip(&lab.node, &netns, pod_address(&first.json).parse().unwrap());
}

#[test]
fn a_stored_pool_that_cannot_be_used_is_skipped_with_its_reason() {
    let mut lab = Lab::new("badpool");
    // Written straight into the store, around `sluice apply`'s validation.
    let set = sluice_api::load_str(
        "bad.yaml",
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: a-broken\nspec:\n  cidr: 10.200.0.0/16\n",
    )
    .unwrap();
    let mut pool = set.ip_pools[0].clone();
    pool.spec.block_size = Some(33);
    let broken = Resource::IpPool(pool);
    let put = |resource: &Resource| sluice_store::Operation::Put {
        key: resource.key(),
        value: resource.encode(),
        condition: sluice_store::Condition::Any,
    };
    lab.store().commit(&[put(&broken)]).unwrap();
    let config = lab.config("1.1.0");

    let netns = lab.pod_namespace("web");
    let attachment = Attachment::new("f00d0006", &netns, "default", "web");
    let reply = lab.invoke("ADD", &attachment, &config);
    assert_eq!(reply.code, 0, "{reply:?}");
    assert!(pod_address(&reply.json).starts_with("10.100."), "{reply:?}");

    // With only the broken pool left, ADD fails and says why.
    let good_pool = resource::key(Kind::IpPool, None, "pods");
    lab.store()
        .commit(&[sluice_store::Operation::Delete {
            key: good_pool,
            condition: sluice_store::Condition::Any,
        }])
        .unwrap();
    let other_netns = lab.pod_namespace("api");
    let other = Attachment::new("f00d0007", &other_netns, "default", "api");
    let refused = lab.invoke("ADD", &other, &config);
    assert_eq!(
        (refused.code, refused.json["code"].as_u64()),
        (1, Some(102)),
        "{refused:?}"
    );
    let details = refused.json["details"].as_str().unwrap();
    assert!(
        details.contains("IP pool a-broken: ")
            && details.contains("blockSize 33 is out of range; expected 20 to 32")
            && details.contains("so it was skipped"),
        "{details}"
    );
    assert!(!refused.stderr.contains("panicked"), "{}", refused.stderr);
    assert!(allocated(&lab, &other.handle()).is_empty());
}
