//! The netlink fast path for set elements against the real kernel, in a network namespace made
//! for each test: elements land in the set `nft` lists, expire, are refreshed by a repeated
//! add, are deleted, a bad batch changes nothing, and packets match what was added. Needs root
//! and nftables (CI has both).

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_nft::{
    Backend, Chain, CommandBackend, Culprit, ElementChange, ElementKey, Family, Object, Operation, Rule, Set,
    SetElementError, SetElementWriter, Table, Transaction,
};

struct Namespace(String);

impl Namespace {
    fn new(purpose: &str) -> Namespace {
        let name = format!("sluicenftel-{purpose}-{}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip runs");
        assert!(status.success(), "creating network namespace {name} (needs root)");
        Namespace(name)
    }

    /// Declares the `inet sluice` table with one pair set per family, as the ruleset does.
    fn with_sets(purpose: &str) -> Namespace {
        let namespace = Namespace::new(purpose);
        let mut transaction = Transaction::new(table());
        transaction.add(Object::Table);
        for (name, key_type) in [
            ("d1_v4", "ipv4_addr . ipv4_addr"),
            ("d1_v6", "ipv6_addr . ipv6_addr"),
        ] {
            let mut set = Set::new(name, key_type);
            set.flags.push("timeout".into());
            transaction.add(Object::Set(set));
        }
        CommandBackend::in_namespace(&namespace.0)
            .expect("nft is installed")
            .apply(&transaction)
            .expect("the sets are declared");
        namespace
    }

    fn writer(&self) -> SetElementWriter {
        SetElementWriter::open(Some(&self.0)).expect("a netlink socket in the namespace")
    }

    /// `nft list set` as text, from inside the namespace.
    fn nft_list(&self, set: &str) -> String {
        let output = Command::new("ip")
            .args([
                "netns", "exec", &self.0, "nft", "list", "set", "inet", "sluice", set,
            ])
            .output()
            .expect("nft runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
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

fn pair(first: &str, second: &str) -> ElementKey {
    ElementKey::Pair(
        first.parse::<IpAddr>().unwrap(),
        second.parse::<IpAddr>().unwrap(),
    )
}

fn add(set: &str, key: ElementKey, timeout: Option<Duration>) -> ElementChange {
    ElementChange::Add {
        table: table(),
        set: set.into(),
        key,
        timeout,
    }
}

fn delete(set: &str, key: ElementKey) -> ElementChange {
    ElementChange::Delete {
        table: table(),
        set: set.into(),
        key,
    }
}

/// Polls (bounded) until `done` holds; returns whether it did.
fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn added_pairs_of_both_families_are_in_the_sets_nft_lists() {
    let namespace = Namespace::with_sets("add");
    let mut writer = namespace.writer();
    let v4 = pair("10.0.0.1", "192.0.2.7");
    let v6 = pair("fd00::1", "2001:db8::7");
    writer
        .apply(&[
            add("d1_v4", v4, Some(Duration::from_secs(300))),
            add("d1_v4", pair("10.0.0.2", "192.0.2.8"), None),
            add("d1_v6", v6, Some(Duration::from_secs(300))),
        ])
        .unwrap();

    let listed_v4 = namespace.nft_list("d1_v4");
    assert!(
        listed_v4.contains("10.0.0.1 . 192.0.2.7 timeout 5m"),
        "{listed_v4}"
    );
    assert!(listed_v4.contains("10.0.0.2 . 192.0.2.8"), "{listed_v4}");
    let listed_v6 = namespace.nft_list("d1_v6");
    assert!(
        listed_v6.contains("fd00::1 . 2001:db8::7 timeout 5m"),
        "{listed_v6}"
    );

    // The writer's own listing reads the same elements back, with the time they have left.
    let mut elements = writer.list(&table(), "d1_v4").unwrap();
    elements.sort_by_key(|element| element.key);
    assert_eq!(elements.len(), 2);
    assert_eq!(elements[0].key, v4);
    assert_eq!(elements[0].timeout, Some(Duration::from_secs(300)));
    let left = elements[0].expires.expect("an element with a timeout expires");
    assert!(
        left > Duration::from_secs(290) && left <= Duration::from_secs(300),
        "{left:?}"
    );
    assert_eq!((elements[1].timeout, elements[1].expires), (None, None));
    assert_eq!(writer.list(&table(), "d1_v6").unwrap()[0].key, v6);
}

#[test]
fn an_element_is_gone_after_its_timeout() {
    let namespace = Namespace::with_sets("expire");
    let mut writer = namespace.writer();
    let key = pair("10.0.0.1", "192.0.2.7");
    writer
        .apply(&[add("d1_v4", key, Some(Duration::from_millis(400)))])
        .unwrap();
    let listed = writer.list(&table(), "d1_v4").unwrap();
    assert_eq!(listed.len(), 1, "present right after the add");
    assert!(
        eventually(Duration::from_secs(5), || writer
            .list(&table(), "d1_v4")
            .unwrap()
            .is_empty()),
        "the element outlived its timeout"
    );
    assert!(!namespace.nft_list("d1_v4").contains("10.0.0.1"));
}

/// Kernel 6.18 finding: an element added again (no NLM_F_EXCL) gets its expiry restarted only
/// when the add carries a different timeout or an explicit expiration; with the same timeout
/// alone the expiry ran on (800 ms left here). The writer sends both, so a repeated DNS answer
/// needs no delete + add. It sets what it is given: keeping "a repeated answer only extends"
/// is the caller's (it knows the current expiry).
#[test]
fn adding_an_element_again_restarts_its_timeout() {
    let namespace = Namespace::with_sets("extend");
    let mut writer = namespace.writer();
    let key = pair("10.0.0.1", "192.0.2.7");
    writer
        .apply(&[add("d1_v4", key, Some(Duration::from_secs(2)))])
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let before = writer.list(&table(), "d1_v4").unwrap()[0].expires.unwrap();
    assert!(
        before < Duration::from_millis(900),
        "{before:?} left after 1.2 s of 2 s"
    );

    writer
        .apply(&[add("d1_v4", key, Some(Duration::from_secs(2)))])
        .unwrap();
    let after = writer.list(&table(), "d1_v4").unwrap();
    assert_eq!(after.len(), 1);
    let left = after[0].expires.unwrap();
    assert!(
        left > Duration::from_millis(1500),
        "re-adding left {left:?}: the expiry was not restarted"
    );

    // A longer timeout on a repeated answer extends it too.
    writer
        .apply(&[add("d1_v4", key, Some(Duration::from_secs(60)))])
        .unwrap();
    let extended = writer.list(&table(), "d1_v4").unwrap()[0].clone();
    assert_eq!(extended.timeout, Some(Duration::from_secs(60)));
    assert!(
        extended.expires.unwrap() > Duration::from_secs(55),
        "{extended:?}"
    );
    // And the element outlives the first timeout: still there 2.5 s after it was first added.
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(writer.list(&table(), "d1_v4").unwrap().len(), 1);

    // A shorter timeout shortens it: the writer does not keep the longer one by itself.
    writer
        .apply(&[add("d1_v4", key, Some(Duration::from_secs(1)))])
        .unwrap();
    assert!(writer.list(&table(), "d1_v4").unwrap()[0].expires.unwrap() <= Duration::from_secs(1));
}

#[test]
fn deleted_elements_leave_the_set_and_a_missing_one_is_named() {
    let namespace = Namespace::with_sets("delete");
    let mut writer = namespace.writer();
    let keys = [
        pair("10.0.0.1", "192.0.2.7"),
        pair("10.0.0.1", "192.0.2.8"),
        pair("10.0.0.2", "192.0.2.7"),
    ];
    let adds: Vec<ElementChange> = keys
        .iter()
        .map(|key| add("d1_v4", *key, Some(Duration::from_secs(60))))
        .collect();
    writer.apply(&adds).unwrap();
    // An endpoint removed: both of 10.0.0.1's elements go in one batch.
    writer
        .apply(&[delete("d1_v4", keys[0]), delete("d1_v4", keys[1])])
        .unwrap();
    let left: Vec<ElementKey> = writer
        .list(&table(), "d1_v4")
        .unwrap()
        .into_iter()
        .map(|element| element.key)
        .collect();
    assert_eq!(left, [keys[2]]);

    let error = writer
        .apply(&[delete("d1_v4", keys[2]), delete("d1_v4", keys[0])])
        .unwrap_err();
    let SetElementError::Refused(refusal) = &error else {
        panic!("{error}")
    };
    assert_eq!(refusal.errno, 2);
    assert_eq!(refusal.operation, Operation::Deleting);
    assert_eq!(refusal.culprit, Culprit::Change(1));
    assert_eq!(refusal.key.as_deref(), Some("10.0.0.1 . 192.0.2.7"));
    assert!(error.to_string().contains("no such element"), "{error}");
    // All or nothing: the first delete of that batch did not happen either.
    assert_eq!(writer.list(&table(), "d1_v4").unwrap().len(), 1);
}

#[test]
fn a_missing_set_or_table_is_a_clear_error_and_the_batch_applies_nothing() {
    let namespace = Namespace::with_sets("missing");
    let mut writer = namespace.writer();
    let error = writer
        .apply(&[
            add(
                "d1_v4",
                pair("10.0.0.1", "192.0.2.7"),
                Some(Duration::from_secs(60)),
            ),
            add("d1_v6", pair("fd00::1", "2001:db8::7"), None),
            add("no_such_set", pair("10.0.0.1", "192.0.2.9"), None),
        ])
        .unwrap_err();
    let SetElementError::Refused(refusal) = &error else {
        panic!("{error}")
    };
    assert!(refusal.is_missing_set(), "{refusal:?}");
    assert_eq!(refusal.culprit, Culprit::Set);
    assert_eq!(
        error.to_string(),
        "the kernel refused adding to set no_such_set of table inet sluice: no such set \
         [No such file or directory (os error 2)]; nothing in the batch was applied"
    );
    assert!(writer.list(&table(), "d1_v4").unwrap().is_empty());
    assert!(writer.list(&table(), "d1_v6").unwrap().is_empty());

    let error = writer
        .apply(&[ElementChange::Add {
            table: Table::new(Family::Inet, "not_sluice"),
            set: "d1_v4".into(),
            key: pair("10.0.0.1", "192.0.2.7"),
            timeout: None,
        }])
        .unwrap_err();
    assert!(error.to_string().contains("no such table"), "{error}");

    // A v6 pair does not fit a v4 pair set.
    let error = writer
        .apply(&[add("d1_v4", pair("fd00::1", "2001:db8::7"), None)])
        .unwrap_err();
    let SetElementError::Refused(refusal) = &error else {
        panic!("{error}")
    };
    assert_eq!(refusal.errno, 22, "{error}");
    assert!(error.to_string().contains("fd00::1 . 2001:db8::7"), "{error}");

    // A set that holds its declared size refuses the element that would not fit, by key.
    let declared = Command::new("ip")
        .args(["netns", "exec", &namespace.0, "nft"])
        .arg("add set inet sluice small { type ipv4_addr . ipv4_addr ; size 2 ; }")
        .status()
        .unwrap();
    assert!(declared.success());
    let three: Vec<ElementChange> = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
        .into_iter()
        .map(|learned| add("small", pair("10.0.0.1", learned), None))
        .collect();
    let error = writer.apply(&three).unwrap_err();
    let SetElementError::Refused(refusal) = &error else {
        panic!("{error}")
    };
    assert_eq!(
        (refusal.errno, refusal.culprit),
        (23, Culprit::Change(2)),
        "{error}"
    );
    assert!(error.to_string().contains("the set is full"), "{error}");
    assert!(writer.list(&table(), "small").unwrap().is_empty());

    let error = writer.list(&table(), "no_such_set").unwrap_err();
    assert!(error.to_string().contains("listing set no_such_set"), "{error}");
}

#[test]
fn a_namespace_that_does_not_exist_is_named() {
    let error = SetElementWriter::open(Some("sluicenftel-absent-namespace")).unwrap_err();
    assert!(
        error.to_string().contains("sluicenftel-absent-namespace"),
        "{error}"
    );
}

/// Real packets: `ip saddr . ip daddr @d1_v4 accept` lets a ping through only while its pair is
/// in the set (loopback inside the test's namespace: 127.0.0.1 → 127.0.0.2).
#[test]
fn packets_pass_only_while_their_pair_is_in_the_set() {
    let namespace = Namespace::with_sets("packets");
    let up = Command::new("ip")
        .args(["-n", &namespace.0, "link", "set", "lo", "up"])
        .status()
        .unwrap();
    assert!(up.success());
    let mut transaction = Transaction::new(table());
    transaction
        .add(Object::Chain(Chain::base(
            "output",
            "filter",
            "output",
            0,
            Some("accept"),
        )))
        .add(Object::Rule(Rule::new(
            "output",
            "ip daddr 127.0.0.2 ip saddr . ip daddr @d1_v4 accept",
        )))
        .add(Object::Rule(Rule::new("output", "ip daddr 127.0.0.2 drop")));
    CommandBackend::in_namespace(&namespace.0)
        .unwrap()
        .apply(&transaction)
        .unwrap();
    let ping = || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &namespace.0,
                "ping",
                "-c1",
                "-W1",
                "-I",
                "127.0.0.1",
                "127.0.0.2",
            ])
            .output()
            .expect("ping runs")
            .status
            .success()
    };
    assert!(!ping(), "dropped before the pair is added");
    let mut writer = namespace.writer();
    writer
        .apply(&[add(
            "d1_v4",
            pair("127.0.0.1", "127.0.0.2"),
            Some(Duration::from_millis(1500)),
        )])
        .unwrap();
    assert!(ping(), "allowed once the pair is in the set");
    assert!(
        eventually(Duration::from_secs(5), || !ping()),
        "dropped again after the element expired"
    );
}
