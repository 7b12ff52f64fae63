//! Set element updates, three ways side by side: the netlink batch (`SetElementWriter`), one
//! long-lived `nft -i` fed through stdin, and one `nft -f -` process per update. Each update
//! adds fresh (pod address . learned address) pairs with a timeout, as a DNS answer does;
//! latency is measured per update, from the call until the kernel has answered.
//!
//! Run as root: `cargo bench -p sluice-nft --bench set_elements`. It creates a network
//! namespace of its own, re-runs itself inside it (so every method talks to that namespace
//! directly, as the agent does in its node's namespace, with no `ip netns exec` per update),
//! and deletes it at the end. Without `--bench` (e.g. `cargo test --benches`) it runs a few
//! updates only.

mod nft_process;

#[path = "../support/own_namespace.rs"]
mod own_namespace;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use sluice_nft::{
    Backend, CommandBackend, ElementChange, ElementKey, Family, Object, Set, SetElementWriter, Table,
    Transaction,
};

const INSIDE: &str = "SLUICE_BENCH_ELEMENTS_INSIDE";
const TIMEOUT: Duration = Duration::from_secs(3600);

/// One way of applying an update.
type Method<'a> = Box<dyn FnMut(&[ElementChange]) -> Result<(), String> + 'a>;

fn main() {
    own_namespace::enter(INSIDE, "elements");
    let quick = !std::env::args().any(|argument| argument == "--bench");
    let updates = if quick { 20 } else { 1000 };
    declare_sets();
    let mut keys = Keys::default();
    let mut writer = SetElementWriter::open(None).expect("a netlink socket");
    let mut session = nft_process::Session::start();
    let mut per_update = nft_process::ProcessPerUpdate::new();
    check_errors_map_to_updates(&mut session);

    let prefills: &[usize] = if quick { &[0] } else { &[0, 10_000] };
    println!("| set size at start | method | elements per update | p50 | p99 | mean | max |");
    println!("|---|---|---|---|---|---|---|");
    for &prefill in prefills {
        let before = writer.list(&table(), "d1_v4").expect("listing").len();
        let fill: Vec<ElementChange> = (before..prefill).map(|_| keys.add()).collect();
        for chunk in fill.chunks(500) {
            writer.apply(chunk).expect("prefilling");
        }
        for elements in [1, 10] {
            let mut methods: [(&str, Method); 3] = [
                (
                    "netlink batch",
                    Box::new(|changes| writer.apply(changes).map_err(|error| error.to_string())),
                ),
                ("long-lived nft -i", Box::new(|changes| session.apply(changes))),
                ("nft -f per update", Box::new(|changes| per_update.apply(changes))),
            ];
            for (name, apply) in methods.iter_mut() {
                let mut latencies = Vec::with_capacity(updates);
                for _ in 0..updates {
                    let changes: Vec<ElementChange> = (0..elements).map(|_| keys.add()).collect();
                    let start = Instant::now();
                    apply(&changes).unwrap_or_else(|error| panic!("{name}: {error}"));
                    latencies.push(start.elapsed());
                }
                let stats = Stats::of(&mut latencies);
                println!(
                    "| {prefill} | {name} | {elements} | {} | {} | {} | {} |",
                    show(stats.p50),
                    show(stats.p99),
                    show(stats.mean),
                    show(stats.max)
                );
            }
        }
        // Every update of every method is in the set: nothing measured was a failure.
        let listed = writer.list(&table(), "d1_v4").expect("listing").len();
        assert_eq!(listed, keys.added, "elements in the set");
    }
}

fn table() -> Table {
    Table::new(Family::Inet, "sluice")
}

fn declare_sets() {
    let mut transaction = Transaction::new(table());
    transaction.add(Object::Table);
    let mut set = Set::new("d1_v4", "ipv4_addr . ipv4_addr");
    set.flags.push("timeout".into());
    transaction.add(Object::Set(set));
    CommandBackend::new()
        .expect("nft is installed")
        .apply(&transaction)
        .expect("the set is declared");
}

/// The long-lived nft tells a failed update from a good one, and stays in step after it.
fn check_errors_map_to_updates(session: &mut nft_process::Session) {
    let bad = ElementChange::Add {
        table: table(),
        set: "no_such_set".into(),
        key: ElementKey::Pair(
            Ipv4Addr::new(10, 0, 0, 1).into(),
            Ipv4Addr::new(192, 0, 2, 1).into(),
        ),
        timeout: None,
    };
    let error = session.apply(&[bad]).expect_err("a missing set fails");
    assert!(error.contains("No such file or directory"), "{error}");
    let good = ElementChange::Delete {
        table: table(),
        set: "d1_v4".into(),
        key: ElementKey::Pair(
            Ipv4Addr::new(10, 0, 0, 1).into(),
            Ipv4Addr::new(192, 0, 2, 1).into(),
        ),
    };
    let error = session
        .apply(&[good])
        .expect_err("deleting an absent element fails");
    assert!(error.contains("delete element"), "{error}");
}

/// Fresh pairs: pod 10.0.0.1 . a new learned address each time.
#[derive(Default)]
struct Keys {
    added: usize,
}

impl Keys {
    fn add(&mut self) -> ElementChange {
        let learned = u32::from(Ipv4Addr::new(100, 64, 0, 0)) + self.added as u32;
        self.added += 1;
        ElementChange::Add {
            table: table(),
            set: "d1_v4".into(),
            key: ElementKey::Pair(
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                IpAddr::V4(Ipv4Addr::from(learned)),
            ),
            timeout: Some(TIMEOUT),
        }
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
    max: Duration,
}

impl Stats {
    fn of(latencies: &mut [Duration]) -> Stats {
        latencies.sort();
        let at = |fraction: f64| {
            latencies[((latencies.len() as f64 * fraction) as usize).min(latencies.len() - 1)]
        };
        Stats {
            p50: at(0.50),
            p99: at(0.99),
            mean: latencies.iter().sum::<Duration>() / latencies.len() as u32,
            max: *latencies.last().expect("at least one update"),
        }
    }
}

fn show(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else {
        format!("{:.2} ms", micros / 1000.0)
    }
}
