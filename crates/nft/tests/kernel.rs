//! The real `nft` in a network namespace made for the test: transactions apply atomically and
//! a failed one leaves the previous ruleset in place. Needs root and nftables (CI has both).

use std::process::Command;

use sluice_nft::{Backend, Chain, CommandBackend, Element, Family, Object, Rule, Set, Table, Transaction};

struct Namespace(String);

impl Namespace {
    fn new(purpose: &str) -> Namespace {
        let name = format!("sluicenft-{purpose}-{}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip runs");
        assert!(status.success(), "creating network namespace {name} (needs root)");
        Namespace(name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

fn table() -> Table {
    Table::new(Family::Inet, "sluice")
}

fn base_ruleset() -> Transaction {
    let mut transaction = Transaction::new(table());
    transaction
        .add(Object::Table)
        .add(Object::Set(Set::new("partners", "ipv4_addr").interval()))
        .add(Object::Element(Element::new("partners", "203.0.113.0/24")))
        .add(Object::Element(Element::new("partners", "198.51.100.0/25")))
        .add(Object::Chain(Chain::regular("endpoint-egress")))
        .add(Object::Set(Set::map("dispatch", "ifname", "verdict")))
        .add(Object::Element(Element::mapping(
            "dispatch",
            "\"veth-test\"",
            "goto endpoint-egress",
        )))
        .add(Object::Chain(Chain::base(
            "forward",
            "filter",
            "forward",
            0,
            Some("accept"),
        )))
        .add(Object::Rule(Rule::new(
            "forward",
            "ct state established,related accept",
        )))
        .add(Object::Rule(Rule::new("forward", "iifname vmap @dispatch")))
        .add(Object::Rule(
            Rule::new("endpoint-egress", "ip daddr @partners tcp dport 443 accept").with_comment("partners"),
        ))
        .add(Object::Rule(Rule::new("endpoint-egress", "drop")));
    transaction
}

#[test]
fn a_transaction_applies_and_reads_back() {
    let namespace = Namespace::new("apply");
    let mut backend = CommandBackend::in_namespace(&namespace.0).expect("nft is installed");
    assert_eq!(backend.list(&table()).unwrap(), None);
    backend.check(&base_ruleset()).expect("the ruleset checks");
    backend.apply(&base_ruleset()).expect("the ruleset applies");
    let listed = backend.list(&table()).unwrap().expect("the table exists");
    let entries = listed["nftables"].as_array().unwrap();
    let rules = entries.iter().filter(|entry| entry.get("rule").is_some()).count();
    let sets = entries
        .iter()
        .filter(|entry| entry.get("set").is_some() || entry.get("map").is_some())
        .count();
    assert_eq!((rules, sets), (4, 2), "{listed}");
}

#[test]
fn a_failed_transaction_leaves_the_previous_ruleset() {
    let namespace = Namespace::new("atomic");
    let mut backend = CommandBackend::in_namespace(&namespace.0).expect("nft is installed");
    backend.apply(&base_ruleset()).unwrap();
    let before = backend.list(&table()).unwrap();
    let mut bad = Transaction::new(table());
    bad.flush(Object::Chain(Chain::regular("endpoint-egress")))
        .add(Object::Rule(Rule::new("endpoint-egress", "accept")))
        .add(Object::Rule(Rule::new(
            "endpoint-egress",
            "ip daddr @no-such-set drop",
        )));
    let error = backend.apply(&bad).unwrap_err();
    assert!(
        error.to_string().contains("no-such-set") || error.to_string().contains("No such file"),
        "{error}"
    );
    assert_eq!(backend.list(&table()).unwrap(), before);
}
