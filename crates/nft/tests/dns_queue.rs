//! The DNS queue tables against the real kernel, each test in a network namespace of its own
//! (`sluicenfq-*`): installed, listed by `nft`, installed again, checked, repaired and removed;
//! and real packets: a UDP packet marked as the dataplane's `dns-queue` chain marks it
//! (postrouting, priority 110) reaches an NFQUEUE listener, which lets it through or drops it;
//! with no listener it is dropped; an unmarked packet is never queued. Needs root (CI has it).

use std::fs::File;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use sluice_nft::{Backend, CommandBackend, DnsQueue, DnsQueueTables, Family, Object, Table, Transaction};

const MARK: u32 = 0x0002_0000;

fn queue() -> DnsQueue {
    DnsQueue {
        queue: 4000,
        mark: MARK,
        priority: 120,
    }
}

struct Namespace(String);

impl Namespace {
    fn new(purpose: &str) -> Namespace {
        let name = format!("sluicenfq-{purpose}-{}", std::process::id());
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip runs");
        assert!(status.success(), "creating network namespace {name} (needs root)");
        let namespace = Namespace(name);
        namespace.run(&["ip", "link", "set", "lo", "up"]);
        namespace
    }

    /// Runs a command inside the namespace; panics with its stderr when it fails.
    fn run(&self, command: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(command)
            .output()
            .expect("ip netns exec runs");
        assert!(
            output.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs `create` on a thread that entered the namespace: sockets it opens stay there.
    fn inside<T: Send>(&self, create: impl FnOnce() -> T + Send) -> T {
        let file = File::open(format!("/run/netns/{}", self.0)).expect("the namespace file");
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).expect("setns");
                    create()
                })
                .join()
                .expect("the thread in the namespace")
        })
    }

    fn tables(&self) -> DnsQueueTables {
        DnsQueueTables::open(Some(&self.0)).expect("a netlink socket in the namespace")
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

/// Whether libxtables finds this extension (Debian's and others' multiarch directories).
fn xtables_extension_installed(name: &str) -> bool {
    [
        "/usr/lib/x86_64-linux-gnu/xtables",
        "/usr/lib/aarch64-linux-gnu/xtables",
        "/usr/lib/xtables",
        "/usr/lib64/xtables",
    ]
    .iter()
    .any(|directory| std::path::Path::new(directory).join(name).exists())
}

#[test]
fn installed_tables_are_listed_checked_repaired_and_removed() {
    let namespace = Namespace::new("install");
    let mut tables = namespace.tables();
    assert!(!tables.is_installed(&queue()).unwrap());

    tables.install(&queue()).unwrap();
    let listed = namespace.run(&["nft", "list", "tables"]);
    assert!(listed.contains("table inet sluice-dns"), "{listed}");
    assert!(tables.is_installed(&queue()).unwrap());
    // `nft list ruleset` still reads the ruleset with the compat target in it; nft (built with
    // libxtables) prints the target translated, as the `queue` statement it stands for, through
    // the xtables extension the iptables package installs.
    assert!(
        xtables_extension_installed("libxt_NFQUEUE.so"),
        "nft lists the queue rule's target only with the xtables extensions: apt-get install iptables"
    );
    let ruleset = namespace.run(&["nft", "list", "ruleset"]);
    assert!(
        ruleset.contains("meta mark & 0x00020000 == 0x00020000 queue num 4000"),
        "{ruleset}"
    );
    assert!(
        ruleset.contains("hook postrouting priority 120; policy accept;"),
        "{ruleset}"
    );

    let json = namespace.run(&["nft", "-j", "list", "ruleset"]);
    assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "{json}");

    // The dataplane's full rebuild (delete its own table and recreate it, through `nft -f`)
    // never touches the queue table, and its listing of `inet sluice` reads as before.
    let mut backend = CommandBackend::in_namespace(&namespace.0).expect("nft is installed");
    let sluice = Table::new(Family::Inet, "sluice");
    let mut rebuild = Transaction::new(sluice.clone());
    rebuild.add(Object::Table);
    backend.apply(&rebuild).unwrap();
    let mut rebuild = Transaction::new(sluice.clone());
    rebuild
        .add(Object::Table)
        .delete(Object::Table)
        .add(Object::Table);
    backend.apply(&rebuild).unwrap();
    assert!(backend.list(&sluice).unwrap().is_some());
    assert!(tables.is_installed(&queue()).unwrap());

    // Again: still one rule per table.
    tables.install(&queue()).unwrap();
    assert!(tables.is_installed(&queue()).unwrap());
    let listed = namespace.run(&["nft", "list", "table", "inet", "sluice-dns"]);
    assert!(ruleset.contains(&listed), "{listed}\n---\n{ruleset}");
    assert_eq!(listed.matches("queue num").count(), 1, "{listed}");
    // Another queue number, mark or priority is not what is installed.
    assert!(
        !tables
            .is_installed(&DnsQueue {
                queue: 4001,
                ..queue()
            })
            .unwrap()
    );
    assert!(
        !tables
            .is_installed(&DnsQueue {
                mark: 0x10000,
                ..queue()
            })
            .unwrap()
    );
    assert!(
        !tables
            .is_installed(&DnsQueue {
                priority: 110,
                ..queue()
            })
            .unwrap()
    );

    // Removed or changed behind its back: seen, and repaired by installing again.
    namespace.run(&["nft", "delete", "table", "inet", "sluice-dns"]);
    assert!(!tables.is_installed(&queue()).unwrap());
    tables.install(&queue()).unwrap();
    assert!(tables.is_installed(&queue()).unwrap());
    namespace.run(&["nft", "add", "rule", "inet", "sluice-dns", "hold", "counter"]);
    assert!(!tables.is_installed(&queue()).unwrap());
    tables.install(&queue()).unwrap();
    assert!(tables.is_installed(&queue()).unwrap());

    tables.remove().unwrap();
    let listed = namespace.run(&["nft", "list", "tables"]);
    assert!(!listed.contains("sluice-dns"), "{listed}");
    assert!(!tables.is_installed(&queue()).unwrap());
    tables.remove().unwrap();
}

#[test]
fn a_zero_mark_is_refused_before_anything_is_sent() {
    let namespace = Namespace::new("zeromark");
    let error = namespace
        .tables()
        .install(&DnsQueue { mark: 0, ..queue() })
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("a mark of 0 would select every packet"),
        "{error}"
    );
    let listed = namespace.run(&["nft", "list", "tables"]);
    assert!(!listed.contains("sluice-dns"), "{listed}");
}

/// A namespace with the queue tables, a rule that marks UDP to the `marked` receiver's port
/// the way the dataplane marks DNS responses, a second receiver that is never marked, and a
/// sender; for both address families on loopback.
struct Lab {
    namespace: Namespace,
    sender_v4: UdpSocket,
    sender_v6: UdpSocket,
    marked_v4: UdpSocket,
    marked_v6: UdpSocket,
    unmarked_v4: UdpSocket,
}

impl Lab {
    fn new(purpose: &str) -> Lab {
        let namespace = Namespace::new(purpose);
        let bind = |address: &str| {
            let socket = UdpSocket::bind(address).expect("a UDP socket");
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .expect("a read timeout");
            socket
        };
        let (sender_v4, sender_v6, marked_v4, marked_v6, unmarked_v4) = namespace.inside(|| {
            (
                bind("127.0.0.1:0"),
                bind("[::1]:0"),
                bind("127.0.0.1:0"),
                bind("[::1]:0"),
                bind("127.0.0.1:0"),
            )
        });
        let port = |socket: &UdpSocket| socket.local_addr().unwrap().port();
        let ruleset = format!(
            "table inet sluicenfq_mark {{\n\
               chain marking {{\n\
                 type filter hook postrouting priority 110; policy accept;\n\
                 udp dport {{ {}, {} }} meta mark set meta mark | {MARK:#x}\n\
               }}\n\
             }}\n",
            port(&marked_v4),
            port(&marked_v6)
        );
        let path = std::env::temp_dir().join(format!("{}.nft", namespace.0));
        std::fs::write(&path, ruleset).unwrap();
        namespace.run(&["nft", "-f", path.to_str().unwrap()]);
        std::fs::remove_file(&path).unwrap();
        namespace.tables().install(&queue()).unwrap();
        Lab {
            namespace,
            sender_v4,
            sender_v6,
            marked_v4,
            marked_v6,
            unmarked_v4,
        }
    }

    fn listener(&self) -> nfq::Queue {
        self.namespace.inside(|| {
            let mut listener = nfq::Queue::open().expect("an NFQUEUE socket");
            listener.bind(queue().queue).expect("binding the queue");
            listener.set_nonblocking(true);
            listener
        })
    }

    fn send(&self, payload: &[u8], to: &UdpSocket) {
        let address: SocketAddr = to.local_addr().unwrap();
        let sender = if address.is_ipv4() {
            &self.sender_v4
        } else {
            &self.sender_v6
        };
        sender.send_to(payload, address).expect("sending");
    }
}

/// The payload of the next datagram the socket receives within the limit.
fn received(socket: &UdpSocket, limit: Duration) -> Option<Vec<u8>> {
    let start = Instant::now();
    let mut buffer = [0; 1500];
    while start.elapsed() < limit {
        match socket.recv(&mut buffer) {
            Ok(length) => return Some(buffer[..length].to_vec()),
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(error) => panic!("receiving: {error}"),
        }
    }
    None
}

/// The next packet held in the queue within the limit.
fn queued(listener: &mut nfq::Queue, limit: Duration) -> Option<nfq::Message> {
    let start = Instant::now();
    while start.elapsed() < limit {
        match listener.recv() {
            Ok(message) => return Some(message),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(error) => panic!("reading the queue: {error}"),
        }
    }
    None
}

const WAIT: Duration = Duration::from_secs(2);
/// How long a packet that should not arrive is waited for.
const ABSENCE: Duration = Duration::from_millis(500);

#[test]
fn a_marked_packet_is_held_until_the_listener_accepts_it() {
    let lab = Lab::new("accept");
    let mut listener = lab.listener();
    for receiver in [&lab.marked_v4, &lab.marked_v6] {
        lab.send(b"held answer", receiver);
        let mut message = queued(&mut listener, WAIT).expect("the marked packet is queued");
        assert_eq!(message.get_queue_num(), queue().queue);
        assert_eq!(message.get_nfmark() & MARK, MARK);
        assert!(message.get_payload().ends_with(b"held answer"));
        // Held: nothing arrives while the verdict is pending.
        assert_eq!(received(receiver, ABSENCE), None);
        message.set_verdict(nfq::Verdict::Accept);
        listener.verdict(message).unwrap();
        assert_eq!(received(receiver, WAIT).as_deref(), Some(&b"held answer"[..]));
    }
}

#[test]
fn a_marked_packet_the_listener_drops_never_arrives() {
    let lab = Lab::new("drop");
    let mut listener = lab.listener();
    lab.send(b"dropped answer", &lab.marked_v4);
    let mut message = queued(&mut listener, WAIT).expect("the marked packet is queued");
    message.set_verdict(nfq::Verdict::Drop);
    listener.verdict(message).unwrap();
    assert_eq!(received(&lab.marked_v4, ABSENCE), None);
}

#[test]
fn with_no_listener_a_marked_packet_is_dropped_and_an_unmarked_one_passes() {
    let lab = Lab::new("nolistener");
    lab.send(b"no one holds me", &lab.marked_v4);
    lab.send(b"no one holds me", &lab.marked_v6);
    assert_eq!(received(&lab.marked_v4, ABSENCE), None);
    assert_eq!(received(&lab.marked_v6, ABSENCE), None);
    lab.send(b"plain", &lab.unmarked_v4);
    assert_eq!(received(&lab.unmarked_v4, WAIT).as_deref(), Some(&b"plain"[..]));
    // Once the tables are removed, marked packets pass unqueued.
    lab.namespace.tables().remove().unwrap();
    lab.send(b"unqueued", &lab.marked_v4);
    assert_eq!(received(&lab.marked_v4, WAIT).as_deref(), Some(&b"unqueued"[..]));
}

#[test]
fn an_unmarked_packet_is_never_queued() {
    let lab = Lab::new("unmarked");
    let mut listener = lab.listener();
    lab.send(b"plain", &lab.unmarked_v4);
    assert_eq!(received(&lab.unmarked_v4, WAIT).as_deref(), Some(&b"plain"[..]));
    assert!(queued(&mut listener, ABSENCE).is_none());
}

#[test]
fn a_missing_namespace_is_named_in_the_error() {
    let name = format!("sluicenfq-missing-{}", std::process::id());
    let error = DnsQueueTables::open(Some(&name)).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "entering network namespace {name}: opening /run/netns/{name}: No such file or directory (os error 2)"
        )
    );
}
