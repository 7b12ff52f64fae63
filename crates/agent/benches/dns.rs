//! The agent's DNS shell end to end (root): a pod, a node and a server in three network
//! namespaces it creates; the node forwards, allows TCP only to (pod . address) pairs in a
//! domain set, marks DNS answers to the pod as the dataplane's `dns-queue` chain does, and runs
//! the shell (its queue table, NFQUEUE thread and netlink writer) in this process.
//!
//! - 1,000 fresh names resolved and connected to at once (100 threads), each connection right
//!   after its answer: how many connect, and how many SYNs the server saw (more than one per
//!   connection means a retransmission: the first packet was dropped).
//! - DNS lookup latency from the pod through the node: without the queue (no answer marked),
//!   with it for answers that teach nothing new (queued, passed), and for fresh names (queued,
//!   held until the pair is in the set).
//! - 100,000 learned mappings (100 pods × 1,000 names): the shell's resident memory and the
//!   time from reading the cache file to all 100,000 pairs in the kernel.
//!
//! `cargo bench -p sluice-agent --bench dns` as root; without `--bench` a short run.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Name, Packet, QCLASS, QTYPE, Question, ResourceRecord, TYPE};
use sluice_agent::Metrics;
use sluice_agent::dns::{DnsSettings, DnsShell};
use sluice_dataplane::LocalEndpoint;

const POD: &str = "10.70.0.2";
const SERVER: &str = "10.71.0.2";
const QUEUE: u16 = 4200;

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = Command::new("ip").args(["netns", "delete", name]).status();
        }
    }
}

fn run(arguments: &[&str]) {
    let status = Command::new(arguments[0])
        .args(&arguments[1..])
        .status()
        .expect("runs");
    assert!(status.success(), "{arguments:?}");
}

fn ip(namespace: &str, arguments: &str) {
    let mut all = vec!["ip", "-n", namespace];
    all.extend(arguments.split_whitespace());
    run(&all);
}

fn nft(namespace: &str, script: &str) {
    let path = std::env::temp_dir().join(format!("{namespace}.nft"));
    std::fs::write(&path, script).expect("writes");
    run(&[
        "ip",
        "netns",
        "exec",
        namespace,
        "nft",
        "-f",
        path.to_str().expect("utf-8"),
    ]);
    let _ = std::fs::remove_file(path);
}

fn enter(namespace: &str) {
    let file = std::fs::File::open(format!("/run/netns/{namespace}")).expect("namespace");
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// Runs `work` on a thread in `namespace` (threads it starts are there too).
fn inside<T: Send + 'static>(namespace: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let namespace = namespace.to_string();
    std::thread::spawn(move || {
        enter(&namespace);
        work()
    })
    .join()
    .expect("the thread")
}

/// `n<i>.bench.example` → 198.18.<i / 256>.<i % 256>.
fn address_of(name: &str) -> Option<Ipv4Addr> {
    let number: u32 = name.strip_prefix('n')?.split('.').next()?.parse().ok()?;
    Some(Ipv4Addr::new(198, 18, (number >> 8) as u8, number as u8))
}

fn dataplane(pods: &[(String, Ipv4Addr)]) -> sluice_policy::Dataplane {
    let mut text = String::from(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: bench}\nspec:\n  selector: all()\n  types: [Egress]\n  egress:\n    - action: Allow\n      protocol: TCP\n      destination: {domains: ['*.bench.example']}\n",
    );
    for (name, address) in pods {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: bench}}\nspec: {{nodeName: node-1, containers: [{{name: main}}]}}\nstatus: {{podIP: {address}}}\n"
        ));
    }
    sluice_policy::compile(&sluice_api::load_str("bench.yaml", &text).expect("loads"))
}

fn local(pods: &[(String, Ipv4Addr)]) -> Vec<LocalEndpoint> {
    pods.iter()
        .enumerate()
        .map(|(index, (name, _))| LocalEndpoint {
            namespace: "bench".into(),
            name: name.clone(),
            interface: format!("slc{index:012}"),
            egress_gateway: false,
        })
        .collect()
}

fn settings(cache_file: std::path::PathBuf) -> DnsSettings {
    DnsSettings {
        trusted_servers: vec![SocketAddr::new(SERVER.parse().expect("address"), 53)],
        unresolved: vec![],
        cache_file,
        cache_save_interval: Duration::from_secs(3600),
        cache_epoch: 0,
        extra_ttl: Duration::ZERO,
    }
}

fn ruleset(set: &str, queue_answers: bool) -> String {
    let mark = if queue_answers {
        format!(
            " chain dns-queue {{\n type filter hook postrouting priority 110;\n ip saddr {SERVER} udp sport 53 ip daddr {POD} meta mark set meta mark | {:#x}\n }}\n",
            sluice_dataplane::domains::MARK_DNS_QUEUE
        )
    } else {
        String::new()
    };
    format!(
        "flush ruleset\ntable inet sluice {{\n set {set}_v4 {{ type ipv4_addr . ipv4_addr; flags timeout; }}\n chain forward {{\n type filter hook forward priority 0; policy drop;\n ct state established,related accept\n udp dport 53 accept\n ip saddr . ip daddr @{set}_v4 accept\n tcp flags & (syn | ack) == syn counter comment \"denied\"\n }}\n{mark}}}\n"
    )
}

/// Answers `n<i>.bench.example` A queries with one address, TTL 300, until `stop`.
fn serve_dns(stop: Arc<AtomicBool>) {
    let socket = UdpSocket::bind((SERVER, 53)).expect("binds port 53");
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut buffer = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let Ok((length, from)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let Ok(query) = Packet::parse(&buffer[..length]) else {
            continue;
        };
        let Some(question) = query.questions.first() else {
            continue;
        };
        let name = question.qname.to_string();
        let mut reply = Packet::new_reply(query.id());
        reply.questions.push(question.clone());
        if let Some(address) = address_of(&name) {
            reply.answers.push(ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                300,
                RData::A(A::from(address)),
            ));
        }
        if let Ok(bytes) = reply.build_bytes_vec_compressed() {
            let _ = socket.send_to(&bytes, from);
        }
    }
}

/// Accepts without pause (a full accept queue would drop SYNs and pass for a policy drop);
/// blocked in `accept`, it ends with the process.
fn serve_tcp(_stop: Arc<AtomicBool>) {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, listen, socket};
    // A deep accept queue: std's 128 overflows when a thousand connections arrive at once.
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None).expect("a socket");
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(0, 0, 0, 0, 443),
    )
    .expect("binds 443");
    listen(&fd, Backlog::new(4096).expect("a backlog")).expect("listens");
    let listener = TcpListener::from(fd);
    let mut open = Vec::new();
    for stream in listener.incoming().flatten() {
        open.push(stream);
    }
}

/// Asks for `name`; the answer's address and how long the lookup took.
fn lookup(name: &str) -> Option<(Ipv4Addr, Duration)> {
    let socket = UdpSocket::bind((POD, 0)).ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut query = Packet::new_query(1);
    query.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    let bytes = query.build_bytes_vec().ok()?;
    let started = Instant::now();
    socket.send_to(&bytes, (SERVER, 53)).ok()?;
    let mut buffer = [0u8; 1500];
    let length = socket.recv(&mut buffer).ok()?;
    let took = started.elapsed();
    let reply = Packet::parse(&buffer[..length]).ok()?;
    match &reply.answers.first()?.rdata {
        RData::A(a) => Some((Ipv4Addr::from(a.address), took)),
        _ => None,
    }
}

fn syns_seen(server: &str) -> u64 {
    let output = Command::new("ip")
        .args(["netns", "exec", server, "nft", "list", "table", "inet", "count"])
        .output()
        .expect("nft runs");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split("packets ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() as f64 * fraction) as usize).min(sorted.len() - 1)]
}

fn latencies(names: impl Iterator<Item = String>) -> (Duration, Duration) {
    let mut taken: Vec<Duration> = names.map(|name| lookup(&name).expect("answered").1).collect();
    taken.sort();
    (percentile(&taken, 0.5), percentile(&taken, 0.99))
}

fn main() {
    let quick = !std::env::args().any(|argument| argument == "--bench");
    let process = std::process::id();
    let [pod, node, server] = ["pod", "node", "srv"].map(|role| format!("sbd-{role}-{process}"));
    let _namespaces = Namespaces(vec![pod.clone(), node.clone(), server.clone()]);
    for namespace in [&pod, &node, &server] {
        run(&["ip", "netns", "add", namespace]);
        ip(namespace, "link set lo up");
    }
    run(&[
        "ip", "link", "add", "sbd-c", "netns", &pod, "type", "veth", "peer", "sbd-n0", "netns", &node,
    ]);
    run(&[
        "ip", "link", "add", "sbd-s", "netns", &server, "type", "veth", "peer", "sbd-n1", "netns", &node,
    ]);
    ip(&pod, &format!("address add {POD}/24 dev sbd-c"));
    ip(&pod, "link set sbd-c up");
    ip(&pod, "route add default via 10.70.0.1");
    ip(&node, "address add 10.70.0.1/24 dev sbd-n0");
    ip(&node, "address add 10.71.0.1/24 dev sbd-n1");
    ip(&node, "link set sbd-n0 up");
    ip(&node, "link set sbd-n1 up");
    ip(&node, "route add 198.18.0.0/16 via 10.71.0.2");
    run(&[
        "ip",
        "netns",
        "exec",
        &node,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    ip(&server, &format!("address add {SERVER}/24 dev sbd-s"));
    ip(&server, "link set sbd-s up");
    ip(&server, "route add default via 10.71.0.1");
    ip(&server, "route add local 198.18.0.0/16 dev lo");
    run(&[
        "ip",
        "netns",
        "exec",
        &server,
        "sysctl",
        "-qw",
        "net.core.somaxconn=4096",
    ]);
    nft(
        &server,
        "table inet count {\n chain input {\n type filter hook input priority 0\n tcp dport 443 tcp flags & (syn | ack) == syn counter\n }\n}\n",
    );

    let pods = vec![("client".to_string(), POD.parse::<Ipv4Addr>().expect("address"))];
    let compiled = dataplane(&pods);
    let set = compiled.domain_sets[0].name.clone();
    let directory = tempfile::tempdir().expect("a directory");
    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<_> = [serve_dns as fn(Arc<AtomicBool>), serve_tcp]
        .into_iter()
        .map(|serve| {
            let (stop, server) = (stop.clone(), server.clone());
            std::thread::spawn(move || {
                enter(&server);
                serve(stop)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));

    // Latency without the queue first (no answer is marked).
    nft(&node, &ruleset(&set, false));
    let rounds = if quick { 50 } else { 2000 };
    let baseline = inside(&pod, move || {
        latencies((0..rounds).map(|_| "n1.bench.example".to_string()))
    });

    nft(&node, &ruleset(&set, true));
    let cache_file = directory.path().join("cache.json");
    let shell = {
        let (compiled, pods, cache_file) = (compiled.clone(), pods.clone(), cache_file.clone());
        inside(&node, move || {
            let mut shell =
                DnsShell::new("node-1", settings(cache_file.clone()), QUEUE, Metrics::new()).expect("shell");
            shell.before_render(&compiled, &local(&pods), settings(cache_file));
            shell.after_sync(true, true);
            shell
        })
    };
    let passed = inside(&pod, move || {
        lookup("n1.bench.example").expect("answered");
        latencies((0..rounds).map(|_| "n1.bench.example".to_string()))
    });
    let fresh = inside(&pod, move || {
        latencies((0..rounds).map(|index| format!("n{}.bench.example", 2 + index)))
    });

    // 1,000 fresh names at once, each connected to right after its answer.
    let names = if quick { 100 } else { 1000 };
    let first_name = 10_000;
    let syns_before = syns_seen(&server);
    let next = Arc::new(AtomicUsize::new(0));
    let connected = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..100)
        .map(|_| {
            let (pod, next, connected) = (pod.clone(), next.clone(), connected.clone());
            std::thread::spawn(move || {
                enter(&pod);
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= names {
                        break;
                    }
                    let name = format!("n{}.bench.example", first_name + index);
                    let Some((address, _)) = lookup(&name) else {
                        eprintln!("no answer for {name}");
                        continue;
                    };
                    let target = SocketAddr::new(IpAddr::V4(address), 443);
                    let connecting = Instant::now();
                    match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
                        Ok(_) => {
                            connected.fetch_add(1, Ordering::Relaxed);
                            if connecting.elapsed() > Duration::from_millis(500) {
                                eprintln!(
                                    "slow connect #{index} {name} after {:?} from start: {:?}",
                                    started.elapsed(),
                                    connecting.elapsed()
                                );
                            }
                        }
                        Err(error) => eprintln!("{name} ({address}): {error}"),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a worker");
    }
    let burst = started.elapsed();
    let denied = String::from_utf8_lossy(
        &Command::new("ip")
            .args([
                "netns", "exec", &node, "nft", "list", "chain", "inet", "sluice", "forward",
            ])
            .output()
            .expect("nft")
            .stdout,
    )
    .lines()
    .filter(|line| line.contains("denied"))
    .map(str::trim)
    .collect::<Vec<_>>()
    .join(" ");
    let listen = String::from_utf8_lossy(
        &Command::new("ip")
            .args([
                "netns",
                "exec",
                &server,
                "nstat",
                "-az",
                "TcpExtListenDrops",
                "TcpExtListenOverflows",
                "TcpExtTCPReqQFullDrop",
            ])
            .output()
            .expect("nstat")
            .stdout,
    )
    .into_owned();
    eprintln!("node: {denied}\nserver: {listen}");
    let syns = syns_seen(&server) - syns_before;
    let connected = connected.load(Ordering::Relaxed);

    drop(shell);
    stop.store(true, Ordering::Relaxed);
    // The DNS server stops; the TCP acceptor stays blocked until the process ends.
    drop(servers);

    println!("DNS lookup through the node, {rounds} lookups each (p50 / p99):");
    println!(
        "  no queue (no domain policy):          {:?} / {:?}",
        baseline.0, baseline.1
    );
    println!(
        "  queued, teaches nothing new (passed): {:?} / {:?}  (added {:?} / {:?})",
        passed.0,
        passed.1,
        passed.0.saturating_sub(baseline.0),
        passed.1.saturating_sub(baseline.1)
    );
    println!(
        "  queued, fresh name (held for its pair): {:?} / {:?}  (added {:?} / {:?})",
        fresh.0,
        fresh.1,
        fresh.0.saturating_sub(baseline.0),
        fresh.1.saturating_sub(baseline.1)
    );
    println!(
        "{names} fresh names at once (100 threads): {connected}/{names} connected, {syns} SYNs seen ({} retransmitted), in {burst:.2?}",
        syns.saturating_sub(connected as u64)
    );

    restore_bench(quick, &process.to_string());
}

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// 100 pods × 1,000 names in the cache file: memory, and the time until all are in the kernel.
fn restore_bench(quick: bool, process: &str) {
    let namespace = format!("sbd-mem-{process}");
    let _namespaces = Namespaces(vec![namespace.clone()]);
    run(&["ip", "netns", "add", &namespace]);
    let per_pod = if quick { 100 } else { 1000 };
    let pods: Vec<(String, Ipv4Addr)> = (0..100)
        .map(|index| (format!("pod-{index}"), Ipv4Addr::new(10, 72, 0, index as u8 + 1)))
        .collect();
    let compiled = dataplane(&pods);
    let set = compiled.domain_sets[0].name.clone();
    nft(
        &namespace,
        &format!(
            "table inet sluice {{\n set {set}_v4 {{ type ipv4_addr . ipv4_addr; flags timeout; }}\n}}\n"
        ),
    );
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3600;
    let entries: Vec<sluice_dns::CacheEntry> = pods
        .iter()
        .flat_map(|(pod, _)| {
            (0..per_pod).map(move |index| sluice_dns::CacheEntry {
                endpoint: format!("bench/{pod}"),
                name: format!("n{index}.bench.example"),
                address: IpAddr::V4(address_of(&format!("n{index}")).expect("an address")),
                expires,
            })
        })
        .collect();
    let total = entries.len();
    let directory = tempfile::tempdir().expect("a directory");
    let cache_file = directory.path().join("cache.json");
    sluice_dns::cache_file::write(&cache_file, &sluice_dns::cache::to_bytes(0, &entries)).expect("writes");
    drop(entries);
    let before = resident_kib();
    let (elapsed, shell) = inside(&namespace, move || {
        let started = Instant::now();
        let mut shell =
            DnsShell::new("node-1", settings(cache_file.clone()), QUEUE, Metrics::new()).expect("shell");
        let render = shell.before_render(&compiled, &local(&pods), settings(cache_file));
        assert_eq!(render.learned.len(), total);
        shell.after_sync(true, false);
        (started.elapsed(), shell)
    });
    let after = resident_kib();
    let listed = inside(&namespace, move || {
        let mut writer = sluice_nft::SetElementWriter::open(None).expect("writer");
        let table = sluice_nft::Table::new(sluice_nft::Family::Inet, "sluice");
        writer.list(&table, &format!("{set}_v4")).expect("lists").len()
    });
    drop(shell);
    let by_count: BTreeMap<&str, usize> = [("mappings", total), ("in the kernel", listed)].into();
    println!(
        "{total} learned mappings: cache file to all in the kernel in {elapsed:.2?}; shell resident memory +{:.1} MiB; {by_count:?}",
        after.saturating_sub(before) as f64 / 1024.0
    );
    assert_eq!(listed, total);
}
