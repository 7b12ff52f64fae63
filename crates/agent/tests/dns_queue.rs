//! The DNS shell against the real kernel (root): DNS answers queued by an nft rule in a
//! private network namespace are held until the learned pair is in the domain set, then
//! released; answers that teach nothing pass; an answer whose batch the kernel refuses is
//! dropped; and the cache file brings learned pairs back after a restart.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Name, Packet, QCLASS, QTYPE, Question, ResourceRecord, TYPE};
use sluice_agent::Metrics;
use sluice_agent::dns::{DnsSettings, DnsShell};
use sluice_dataplane::LocalEndpoint;
use sluice_nft::{ElementKey, Family, SetElementWriter, Table};
use sluice_policy::Dataplane;

const QUEUE: u16 = 4100;
const CLIENT: &str = "127.0.0.1";
const TRUSTED: &str = "127.0.0.53:53";
const UNTRUSTED: &str = "127.0.0.54:53";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

struct Namespace(String);

impl Namespace {
    fn new() -> Namespace {
        let name = format!(
            "sdq-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Namespace(name)
    }

    fn nft(&self, script: &str) {
        let path = std::env::temp_dir().join(format!("{}.nft", self.0));
        std::fs::write(&path, script).unwrap();
        run(&[
            "ip",
            "netns",
            "exec",
            &self.0,
            "nft",
            "-f",
            path.to_str().unwrap(),
        ]);
        let _ = std::fs::remove_file(path);
    }

    /// Moves the calling thread into the namespace (threads it spawns later start there too).
    fn enter(&self) {
        let file = std::fs::File::open(format!("/run/netns/{}", self.0)).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

fn run(arguments: &[&str]) {
    let status = Command::new(arguments[0]).args(&arguments[1..]).status().unwrap();
    assert!(status.success(), "{arguments:?}");
}

const RESOURCES: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client}}
spec: {nodeName: node-1, containers: [{name: main}]}
status: {podIP: 127.0.0.1}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: partner}
spec:
  selector: app == 'client'
  types: [Egress]
  egress:
    - action: Allow
      destination: {domains: [api.partner.example]}
    - action: Allow
      destination: {domains: ['*.unprogrammed.example']}
"#;

fn dataplane() -> Dataplane {
    sluice_policy::compile(&sluice_api::load_str("test.yaml", RESOURCES).unwrap())
}

fn set_name(dataplane: &Dataplane, pattern: &str) -> String {
    dataplane
        .domain_sets
        .iter()
        .find(|set| set.patterns.iter().any(|candidate| candidate.as_str() == pattern))
        .unwrap()
        .name
        .clone()
}

fn local() -> Vec<LocalEndpoint> {
    vec![LocalEndpoint {
        namespace: "default".into(),
        name: "client".into(),
        interface: "slc000000000000".into(),
        egress_gateway: false,
    }]
}

fn settings(cache_file: &std::path::Path) -> DnsSettings {
    DnsSettings {
        trusted_servers: vec![TRUSTED.parse().unwrap()],
        unresolved: vec![],
        cache_file: cache_file.to_path_buf(),
        cache_save_interval: Duration::from_secs(60),
        cache_epoch: 0,
        extra_ttl: Duration::ZERO,
    }
}

/// The table with the set of the exact name only (the wildcard's set is left out, so that
/// programming it fails), and a chain marking every DNS answer sent over loopback as the
/// dataplane's `dns-queue` chain marks answers to hold (which answers is not this test's
/// concern); the shell's queue table sends the marked ones to the queue.
fn ruleset(dataplane: &Dataplane) -> String {
    format!(
        "table inet sluice {{\n set {}_v4 {{ type ipv4_addr . ipv4_addr; flags timeout; }}\n chain dns-queue {{ type filter hook postrouting priority {}; udp sport 53 meta mark set meta mark | {:#x}; }}\n}}\n",
        set_name(dataplane, "api.partner.example"),
        sluice_dataplane::domains::DNS_QUEUE_PRIORITY,
        sluice_dataplane::domains::MARK_DNS_QUEUE,
    )
}

fn answer(name: &str, address: Ipv4Addr, ttl: u32) -> Vec<u8> {
    let mut packet = Packet::new_reply(7);
    packet.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    packet.answers.push(ResourceRecord::new(
        Name::new_unchecked(name),
        CLASS::IN,
        ttl,
        RData::A(A::from(address)),
    ));
    packet.build_bytes_vec_compressed().unwrap()
}

/// Sends an answer from `server` to the client; says whether the client got it in time.
fn deliver(server: &str, client: &UdpSocket, bytes: &[u8], wait: Duration) -> bool {
    let sender = UdpSocket::bind(server).unwrap();
    sender.send_to(bytes, client.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(wait)).unwrap();
    let mut buffer = [0u8; 2048];
    client.recv(&mut buffer).is_ok()
}

fn learned(writer: &mut SetElementWriter, set: &str) -> Vec<ElementKey> {
    writer
        .list(&Table::new(Family::Inet, "sluice"), &format!("{set}_v4"))
        .unwrap()
        .into_iter()
        .map(|element| element.key)
        .collect()
}

fn pair(address: &str) -> ElementKey {
    ElementKey::Pair(CLIENT.parse().unwrap(), address.parse().unwrap())
}

#[test]
fn answers_are_held_until_their_pair_is_programmed_and_restored_after_a_restart() {
    let namespace = Namespace::new();
    let dataplane = dataplane();
    let exact = set_name(&dataplane, "api.partner.example");
    let wildcard = set_name(&dataplane, "*.unprogrammed.example");
    namespace.nft(&ruleset(&dataplane));
    let directory = tempfile::tempdir().unwrap();
    let cache_file = directory.path().join("dns-cache.json");

    // The thread's namespace: everything below, the shell's queue thread included, is in it.
    let name = namespace.0.clone();
    std::thread::spawn(move || {
        let namespace = Namespace(name);
        namespace.enter();
        let metrics = Metrics::new();
        let mut shell = DnsShell::new("node-1", settings(&cache_file), QUEUE, metrics.clone()).unwrap();
        shell.before_render(&dataplane, &local(), settings(&cache_file));
        shell.after_sync(true, true);
        let mut writer = SetElementWriter::open(None).unwrap();
        let client = UdpSocket::bind(SocketAddr::new(CLIENT.parse().unwrap(), 0)).unwrap();
        let long = Duration::from_secs(3);

        // The first answer is held, and when the client has it the pair is in the set.
        let partner = answer("api.partner.example", Ipv4Addr::new(192, 0, 2, 7), 60);
        assert!(
            deliver(TRUSTED, &client, &partner, long),
            "the answer was not released: passed {}, held {}, dropped {}",
            metrics.dns.answers_passed.get(),
            metrics.dns.answers_held.get(),
            metrics.dns.answers_dropped.get()
        );
        assert_eq!(learned(&mut writer, &exact), [pair("192.0.2.7")]);
        assert_eq!(metrics.dns.answers_held.get(), 1);

        // An answer the programmed pair already covers (a cache's later copy, with less TTL
        // left) changes nothing: it passes without a batch.
        let cached = answer("api.partner.example", Ipv4Addr::new(192, 0, 2, 7), 50);
        assert!(deliver(TRUSTED, &client, &cached, long));
        assert_eq!(metrics.dns.answers_held.get(), 1);
        assert_eq!(metrics.dns.answers_passed.get(), 1);

        // An untrusted server and a name no rule allows teach nothing, and pass.
        let spoofed = answer("api.partner.example", Ipv4Addr::new(198, 51, 100, 66), 60);
        assert!(deliver(UNTRUSTED, &client, &spoofed, long));
        let other = answer("www.other.example", Ipv4Addr::new(198, 51, 100, 67), 60);
        assert!(deliver(TRUSTED, &client, &other, long));
        assert_eq!(learned(&mut writer, &exact), [pair("192.0.2.7")]);
        assert_eq!(metrics.dns.answers_passed.get(), 3);

        // The wildcard's kernel set does not exist: its batch fails and the answer is
        // dropped, never released early.
        let unprogrammed = answer("a.unprogrammed.example", Ipv4Addr::new(198, 51, 100, 68), 60);
        assert!(!deliver(
            TRUSTED,
            &client,
            &unprogrammed,
            Duration::from_millis(500)
        ));
        assert_eq!(metrics.dns.answers_dropped.get(), 1);

        // Stopping saves the cache file; a new shell restores the pairs (the emptied set's,
        // and the wildcard's now that its set exists) before it handles any answer.
        shell.shutdown();
        let saved = std::fs::read_to_string(&cache_file).unwrap();
        assert!(
            saved.contains("api.partner.example") && saved.contains("192.0.2.7"),
            "{saved}"
        );
        nft_here(&["flush", "set", "inet", "sluice", &format!("{exact}_v4")]);
        assert!(learned(&mut writer, &exact).is_empty());
        nft_here(&[
            "add",
            "set",
            "inet",
            "sluice",
            &format!("{wildcard}_v4"),
            "{ type ipv4_addr . ipv4_addr; flags timeout; }",
        ]);
        let mut restarted = DnsShell::new("node-1", settings(&cache_file), QUEUE, Metrics::new()).unwrap();
        // What a full rebuild would write back holds the restored pairs.
        let render = restarted.before_render(&dataplane, &local(), settings(&cache_file));
        let destinations: Vec<String> = render
            .learned
            .iter()
            .map(|learned| format!("{} {}", learned.endpoint, learned.destination))
            .collect();
        assert_eq!(destinations, ["127.0.0.1 192.0.2.7", "127.0.0.1 198.51.100.68"]);
        restarted.after_sync(true, true);
        assert_eq!(learned(&mut writer, &exact), [pair("192.0.2.7")]);
        assert_eq!(learned(&mut writer, &wildcard), [pair("198.51.100.68")]);
        restarted.shutdown();
        std::mem::forget(namespace);
    })
    .join()
    .unwrap();
}

/// `nft` in the namespace the calling thread is in.
fn nft_here(arguments: &[&str]) {
    let status = Command::new("nft").args(arguments).status().unwrap();
    assert!(status.success(), "nft {arguments:?}");
}
