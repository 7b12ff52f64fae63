//! The rendered ruleset of the examples: accepted by the fake (references resolve, deletes
//! are legal), accepted by the real nft in a namespace made for the test, and updated
//! incrementally with small transactions.

use std::path::Path;

use sluice_dataplane::{LocalEndpoint, Ruleset, Syncer, render};
use sluice_nft::{CommandBackend, FakeBackend};
use support::Namespace;

mod support;

fn examples() -> sluice_api::ResourceSet {
    sluice_api::load_paths(&[Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")]).unwrap()
}

fn local_endpoints(resources: &sluice_api::ResourceSet) -> Vec<LocalEndpoint> {
    resources
        .pods
        .iter()
        .enumerate()
        .map(|(index, pod)| LocalEndpoint {
            namespace: pod.metadata.namespace().to_string(),
            name: pod.metadata.name.clone(),
            interface: format!("slc{index:04}"),
            egress_gateway: false,
        })
        .collect()
}

fn rendered(resources: &sluice_api::ResourceSet) -> Ruleset {
    render(&sluice_policy::compile(resources), &local_endpoints(resources))
}

#[test]
fn the_examples_render_to_a_ruleset_the_fake_accepts() {
    let resources = examples();
    let ruleset = rendered(&resources);
    let mut syncer = Syncer::new(FakeBackend::new());
    let report = syncer.sync(&ruleset).unwrap();
    assert!(report.full);
    assert!(ruleset.rule_count() > 30, "{}", ruleset.rule_count());
    // A second sync of the same ruleset does nothing.
    assert_eq!(syncer.sync(&ruleset).unwrap().operations, 0);
}

#[test]
fn the_real_nft_accepts_the_examples_and_small_changes_stay_small() {
    let namespace = Namespace::new("examples");
    let backend = CommandBackend::in_namespace(&namespace.0).expect("nft is installed");
    let mut syncer = Syncer::new(backend);
    let resources = examples();
    let first = syncer
        .sync(&rendered(&resources))
        .expect("the kernel accepts the examples");
    assert!(first.full && first.operations > 50);

    // Change one network set: only its elements change.
    let mut changed = resources.clone();
    changed.global_network_sets[0]
        .spec
        .nets
        .push("192.0.2.200/32".parse().unwrap());
    let report = syncer
        .sync(&rendered(&changed))
        .expect("incremental update applies");
    assert!(!report.full);
    assert!(
        report.operations <= 4,
        "one network set changed, yet {} operations",
        report.operations
    );

    // Remove a policy: its chains go, the endpoints that used it are rewritten.
    let mut fewer = changed.clone();
    fewer
        .network_policies
        .retain(|policy| policy.metadata.name != "payments-to-card-processor");
    let report = syncer.sync(&rendered(&fewer)).expect("removing a policy applies");
    assert!(
        !report.full && report.operations > 0 && report.operations < first.operations / 2,
        "{report:?}"
    );

    // And back to the start, incrementally.
    syncer.sync(&rendered(&resources)).expect("restoring applies");
    let listed = syncer
        .backend()
        .list(&sluice_nft::Table::new(sluice_nft::Family::Inet, "sluice"))
        .unwrap()
        .unwrap();
    let rules = listed["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry.get("rule").is_some())
        .count();
    assert_eq!(rules, rendered(&resources).rule_count());
}

#[test]
#[ignore = "prints the kernel's view of the examples for a person to read"]
fn show_the_examples_in_the_kernel() {
    let namespace = Namespace::new("show");
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&namespace.0).unwrap());
    syncer.sync(&rendered(&examples())).unwrap();
    let listing = namespace.nft_list(&["table", "inet", "sluice"]);
    println!("{listing}");
}

#[test]
#[ignore = "writes the synthetic 10,000-policy ruleset to /tmp/sluice-synthetic.nft for timing nft by hand"]
fn write_the_synthetic_ruleset() {
    #[path = "../../policy/benches/policy/synthetic.rs"]
    mod synthetic;
    let local_pods: usize = std::env::var("SLUICE_LOCAL_PODS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1000);
    let shape = synthetic::Shape {
        namespaces: 100,
        pods_per_namespace: 10,
        policies: 10_000,
        global_network_sets: 50,
        nets_per_set: 20,
    };
    let resources = sluice_api::load_str("synthetic.yaml", &synthetic::manifests(&shape)).unwrap();
    let local: Vec<LocalEndpoint> = local_endpoints(&resources)
        .into_iter()
        .step_by(1000 / local_pods)
        .collect();
    let ruleset = render(&sluice_policy::compile(&resources), &local);
    let syncer = Syncer::new(FakeBackend::new());
    std::fs::write("/tmp/sluice-synthetic.nft", syncer.full(&ruleset).render()).unwrap();
    println!(
        "{} local pods, {} rules, {} elements",
        local.len(),
        ruleset.rule_count(),
        ruleset.element_count()
    );
}

#[test]
fn a_pool_with_its_own_nat_address_is_source_natted_to_it() {
    let namespace = Namespace::new("snat");
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&namespace.0).expect("nft is installed"));
    let mut resources = examples();
    let pool = resources
        .ip_pools
        .iter_mut()
        .find(|pool| pool.metadata.name == "staging-pool")
        .unwrap();
    pool.metadata.annotations.insert(
        sluice_api::calico::NAT_OUTGOING_ADDRESS_ANNOTATION.to_string(),
        "198.18.0.20".to_string(),
    );
    syncer
        .sync(&rendered(&resources))
        .expect("the kernel accepts snat");
    let listing = namespace.nft_list(&["chain", "inet", "sluice", "nat-postrouting"]);
    let snat = listing
        .find("ip saddr 10.20.0.0/16 ip daddr != @all-pools-v4 snat ip to 198.18.0.20")
        .expect(&listing);
    let masquerade = listing.find("masquerade").unwrap();
    assert!(snat < masquerade, "{listing}");
    // Before any NAT: what leaves through the egress gateway device keeps the pod's source.
    let gateway = listing.find("oifname \"egress.sluice\" return").expect(&listing);
    assert!(gateway < snat, "{listing}");
}

#[test]
fn the_nat_chain_exists_only_while_a_pool_has_nat_outgoing() {
    let namespace = Namespace::new("natchain");
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&namespace.0).expect("nft is installed"));
    let has_nat_chain = || {
        namespace
            .nft_list(&["table", "inet", "sluice"])
            .contains("chain nat-postrouting")
    };
    let mut resources = examples();
    let set_nat = |resources: &mut sluice_api::ResourceSet, nat: bool| {
        for pool in &mut resources.ip_pools {
            pool.spec.nat_outgoing = nat;
        }
    };
    set_nat(&mut resources, false);
    let report = syncer.sync(&rendered(&resources)).unwrap();
    assert!(report.full);
    assert!(!has_nat_chain());
    // Turned on and off again by incremental syncs.
    set_nat(&mut resources, true);
    let report = syncer.sync(&rendered(&resources)).unwrap();
    assert!(!report.full);
    assert!(has_nat_chain());
    set_nat(&mut resources, false);
    let report = syncer.sync(&rendered(&resources)).unwrap();
    assert!(!report.full);
    assert!(!has_nat_chain());
}

#[test]
fn endpoints_on_a_host_interface_or_a_taken_one_are_left_out_and_the_rest_is_programmed() {
    let namespace = Namespace::new("badends");
    let resources = examples();
    let mut local = local_endpoints(&resources);
    let first = local[0].clone();
    let second = local[1].clone();
    // The second pod claims the first one's interface, the third a host interface.
    local[1].interface = first.interface.clone();
    local[2].interface = "eth0".into();
    let (kept, skipped) = sluice_dataplane::programmable_endpoints(&local);
    assert_eq!(kept.len(), local.len() - 2);
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped
            .iter()
            .any(|(endpoint, why)| endpoint.interface == "eth0" && why.contains("not a pod interface"))
    );
    let taken = if (&first.namespace, &first.name) < (&second.namespace, &second.name) {
        &second
    } else {
        &first
    };
    assert!(
        skipped
            .iter()
            .any(|(endpoint, why)| endpoint.name == taken.name && why.contains("already")),
        "{skipped:?}"
    );
    // The kernel takes the rest: one bad endpoint does not cost the node its ruleset.
    let ruleset = render(&sluice_policy::compile(&resources), &local);
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&namespace.0).expect("nft is installed"));
    syncer.sync(&ruleset).expect("the kernel takes the ruleset");
    let elements = &ruleset.sets["from-endpoint"].elements;
    assert!(
        !elements.iter().any(|(key, _)| key.contains("eth0")),
        "{elements:?}"
    );
    assert_eq!(elements.len(), kept.len());
}

#[test]
fn a_node_without_a_program_is_fail_closed_for_pods() {
    let namespace = Namespace::new("failclosed");
    let mut backend = CommandBackend::in_namespace(&namespace.0).expect("nft is installed");
    assert!(
        sluice_dataplane::ensure_fail_closed(&mut backend).unwrap(),
        "creates the table the first time"
    );
    assert!(
        !sluice_dataplane::ensure_fail_closed(&mut backend).unwrap(),
        "leaves an existing table alone"
    );
    let listing = namespace.nft_list(&["chain", "inet", "sluice", "forward"]);
    assert!(
        listing.contains("iifname \"slc*\" iifname != @endpoint-interfaces drop"),
        "{listing}"
    );
    assert!(
        listing.contains("oifname \"slc*\" oifname != @endpoint-interfaces drop"),
        "{listing}"
    );
    // The agent's first sync replaces it.
    let mut syncer = Syncer::new(backend);
    assert!(syncer.sync(&rendered(&examples())).unwrap().full);
}

#[test]
fn an_egress_gateway_may_send_its_clients_replies_with_the_peers_source_and_nothing_else() {
    let namespace = Namespace::new("gwreturn");
    let mut syncer = Syncer::new(CommandBackend::in_namespace(&namespace.0).expect("nft is installed"));
    let resources = examples();
    let mut local = local_endpoints(&resources);
    local[0].egress_gateway = true;
    let ruleset = render(&sluice_policy::compile(&resources), &local);
    syncer
        .sync(&ruleset)
        .expect("the kernel accepts the gateway's rules");
    let gateway_chains: Vec<&String> = ruleset
        .chains
        .iter()
        .filter(|(_, chain)| {
            chain
                .rules
                .iter()
                .any(|(rule, _)| rule.contains("daddr {") && rule.ends_with("accept"))
        })
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        gateway_chains.len(),
        1,
        "only the gateway's egress chain: {gateway_chains:?}"
    );
    let chain = &ruleset.chains[gateway_chains[0]];
    assert!(gateway_chains[0].ends_with("-egress"));
    let commented = |text: &str| {
        chain
            .rules
            .iter()
            .position(|(_, comment)| comment.as_deref() == Some(text))
            .unwrap_or_else(|| panic!("no rule {text}: {:#?}", chain.rules))
    };
    let accepted = commented("egress gateway: replies to its clients");
    let spoofing = commented("anti-spoofing");
    assert!(
        accepted < spoofing,
        "replies pass before anti-spoofing: {:#?}",
        chain.rules
    );
    // Only toward the pools: never a forged source to the outside.
    let (rule, _) = &chain.rules[accepted];
    let pools = rule.split("daddr {").nth(1).unwrap();
    for pool in resources
        .ip_pools
        .iter()
        .filter(|pool| pool.spec.cidr.0.addr().is_ipv4())
    {
        assert!(pools.contains(&pool.spec.cidr.0.to_string()), "{rule}");
    }
    assert!(!pools.contains("0.0.0.0/0"), "{rule}");
    let listing = namespace.nft_list(&["chain", "inet", "sluice", gateway_chains[0]]);
    assert!(listing.contains("accept"), "{listing}");
    // Its replies to other nodes' clients skip conntrack, before conntrack runs; replies to
    // this node's pods stay tracked.
    let replies = namespace.nft_list(&["chain", "inet", "sluice", "gateway-replies"]);
    assert!(replies.contains("hook prerouting priority raw"), "{replies}");
    assert!(
        replies.contains(&format!("iifname \"{}\"", local[0].interface)),
        "{replies}"
    );
    assert!(replies.contains("notrack"), "{replies}");
    let plain = render(&sluice_policy::compile(&resources), &local_endpoints(&resources));
    assert!(
        !plain.chains.contains_key("gateway-replies"),
        "no gateway, no chain"
    );
}
