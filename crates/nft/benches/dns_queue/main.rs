//! What holding a packet in the DNS queue costs by itself: the one-way latency of a UDP datagram
//! on loopback with no queue, against the same datagram marked (postrouting 110, as the
//! dataplane marks DNS answers), held by the `inet sluice-dns` table's NFQUEUE rule and accepted
//! at once by a listener (`nfq`) that does nothing else; and the time `install` takes (one
//! netlink batch replacing the table). The agent's own work (reading the answer, writing the
//! set elements) comes on top of the held row.
//!
//! Run as root: `cargo bench -p sluice-nft --bench dns_queue`. It creates a network namespace
//! of its own, re-runs itself inside it and deletes it at the end. Without `--bench` (e.g.
//! `cargo test --benches`) it sends a few datagrams only.

#[path = "../support/own_namespace.rs"]
mod own_namespace;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_nft::{DnsQueue, DnsQueueTables};

const INSIDE: &str = "SLUICE_BENCH_DNS_QUEUE_INSIDE";
const MARK: u32 = 0x0002_0000;
const QUEUE: DnsQueue = DnsQueue {
    queue: 4000,
    mark: MARK,
    priority: 120,
};
const STOP: &[u8] = b"stop";

fn main() {
    own_namespace::enter(INSIDE, "nfq");
    let quick = !std::env::args().any(|argument| argument == "--bench");
    let datagrams = if quick { 50 } else { 20_000 };
    run(&["ip", "link", "set", "lo", "up"], None);

    let sender = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    let plain = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    let held = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
    for socket in [&plain, &held] {
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("a read timeout");
    }
    let marking = format!(
        "table inet sluicebench {{\n chain marking {{\n type filter hook postrouting priority 110; policy accept;\n \
         udp dport {} meta mark set meta mark | {MARK:#x}\n }}\n}}\n",
        held.local_addr().unwrap().port()
    );
    run(&["nft", "-f", "-"], Some(&marking));

    let mut tables = DnsQueueTables::open(None).expect("a netlink socket");
    let mut installs = Vec::new();
    for _ in 0..if quick { 5 } else { 200 } {
        let start = Instant::now();
        tables.install(&QUEUE).expect("installing the queue table");
        installs.push(start.elapsed());
    }
    assert!(tables.is_installed(&QUEUE).expect("checking the queue table"));

    let listener = std::thread::spawn(|| {
        let mut queue = nfq::Queue::open().expect("an NFQUEUE socket");
        queue.bind(QUEUE.queue).expect("binding the queue");
        let mut held = 0usize;
        loop {
            let mut message = queue.recv().expect("reading the queue");
            let stop = message.get_payload().ends_with(STOP);
            message.set_verdict(nfq::Verdict::Accept);
            queue.verdict(message).expect("the verdict");
            if stop {
                return held;
            }
            held += 1;
        }
    });
    // Let the listener bind before the first held datagram (unheld ones would be dropped).
    std::thread::sleep(Duration::from_millis(200));

    println!("| path | datagrams | p50 | p99 | mean | max |");
    println!("|---|---|---|---|---|---|");
    for (name, receiver) in [
        ("loopback, not marked", &plain),
        ("marked, held and accepted", &held),
    ] {
        let mut latencies = Vec::with_capacity(datagrams);
        let mut buffer = [0; 64];
        for _ in 0..datagrams {
            let start = Instant::now();
            sender
                .send_to(b"answer", receiver.local_addr().unwrap())
                .expect("sending");
            let length = receiver.recv(&mut buffer).expect("the datagram arrives");
            latencies.push(start.elapsed());
            assert_eq!(&buffer[..length], b"answer");
        }
        print_row(name, &mut latencies);
    }
    sender.send_to(STOP, held.local_addr().unwrap()).expect("sending");
    let held_count = listener.join().expect("the listener");
    // Every marked datagram went through the queue: the held row measures what it says.
    assert_eq!(held_count, datagrams, "datagrams the listener held");
    print_row("install (one batch)", &mut installs);
}

fn print_row(name: &str, latencies: &mut [Duration]) {
    latencies.sort();
    let at = |quantile: f64| latencies[((latencies.len() - 1) as f64 * quantile).round() as usize];
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    println!(
        "| {name} | {} | {} | {} | {} | {} |",
        latencies.len(),
        show(at(0.5)),
        show(at(0.99)),
        show(mean),
        show(latencies[latencies.len() - 1])
    );
}

fn show(duration: Duration) -> String {
    if duration < Duration::from_millis(1) {
        format!("{} µs", duration.as_micros())
    } else {
        format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
    }
}

fn run(command: &[&str], input: Option<&str>) {
    use std::io::Write as _;
    let mut child = Command::new(command[0])
        .args(&command[1..])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("the command runs");
    if let Some(input) = input {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("writing stdin");
    }
    drop(child.stdin.take());
    let status = child.wait().expect("the command ends");
    assert!(status.success(), "{command:?} failed");
}
