//! For tests of Sluice's crates: etcd servers on loopback with free ports and temporary data
//! directories, started per test and killed when dropped. Built only with the `testing`
//! feature; no production code path uses it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a cluster may take to elect a leader and answer health checks.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The etcd binary from Debian's etcd-server package. Missing etcd fails the test: CI installs
/// it, so a silent skip would hide a broken CI setup.
pub fn etcd_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|directory| directory.join("etcd"))
            .find(|path| path.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/etcd")).filter(|path| path.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "the etcd binary is neither on PATH nor at /usr/bin/etcd; install it with \
             `apt-get install etcd-server` (.ci/run does)"
            )
        })
}

#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// A cluster of etcd members on 127.0.0.1 with free ports and a temporary data directory.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    directory: tempfile::TempDir,
}

/// Free loopback ports: all bound at once so that they differ, then released for etcd.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().expect("local address").port())
        .collect()
}

impl EtcdCluster {
    pub fn start(size: usize) -> EtcdCluster {
        EtcdCluster::start_in(size, &std::env::temp_dir())
    }

    /// A cluster whose data directories are under `parent` (for example a tmpfs).
    pub fn start_in(size: usize, parent: &Path) -> EtcdCluster {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let binary = etcd_binary();
        let directory = tempfile::Builder::new()
            .prefix("sluice-etcd-")
            .tempdir_in(parent)
            .expect("temporary directory");
        let token = format!(
            "sluice-test-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        let ports = free_ports(size * 2);
        let peer_url = |index: usize| format!("http://127.0.0.1:{}", ports[size + index]);
        let initial_cluster = (0..size)
            .map(|index| format!("member-{index}={}", peer_url(index)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (index, &client_port) in ports[..size].iter().enumerate() {
            let name = format!("member-{index}");
            let client_url = format!("http://127.0.0.1:{client_port}");
            let log = directory.path().join(format!("{name}.log"));
            let output = File::create(&log).expect("log file");
            let mut command = Command::new(&binary);
            command
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(directory.path().join(&name))
                .arg("--listen-client-urls")
                .arg(&client_url)
                .arg("--advertise-client-urls")
                .arg(&client_url)
                .arg("--listen-peer-urls")
                .arg(peer_url(index))
                .arg("--initial-advertise-peer-urls")
                .arg(peer_url(index))
                .arg("--initial-cluster")
                .arg(&initial_cluster)
                .arg("--initial-cluster-state")
                .arg("new")
                .arg("--initial-cluster-token")
                .arg(&token)
                // Short timers: loopback is fast, and tests should not wait for elections.
                .arg("--heartbeat-interval")
                .arg("50")
                .arg("--election-timeout")
                .arg("500")
                .arg("--logger")
                .arg("zap")
                .arg("--log-outputs")
                .arg("stderr")
                .stdin(Stdio::null())
                .stdout(output.try_clone().expect("log file"))
                .stderr(output);
            if std::env::consts::ARCH == "aarch64" {
                command.env("ETCD_UNSUPPORTED_ARCH", "arm64");
            }
            let child = command
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
            members.push(Member {
                name,
                client_port: ports[index],
                child: Some(child),
                log,
            });
        }
        let mut cluster = EtcdCluster { members, directory };
        cluster.wait_healthy();
        cluster
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| format!("http://127.0.0.1:{}", member.client_port))
            .collect()
    }

    /// Kills a member with SIGKILL, as a crash would.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for index in 0..self.members.len() {
            loop {
                let member = &mut self.members[index];
                if let Some(status) = member
                    .child
                    .as_mut()
                    .and_then(|child| child.try_wait().ok().flatten())
                {
                    panic!(
                        "etcd {} exited with {status}:\n{}",
                        member.name,
                        tail(&member.log)
                    );
                }
                if healthy(member.client_port) {
                    break;
                }
                if Instant::now() > deadline {
                    panic!(
                        "etcd {} not healthy after {START_TIMEOUT:?}:\n{}",
                        member.name,
                        tail(&member.log)
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    pub fn directory(&self) -> &Path {
        self.directory.path()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

/// etcd's `/health` on the client port says whether the member has a leader.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl EtcdCluster {
    /// The index of the member every live member names as leader, waiting (bounded) for an
    /// election to settle; found through etcd's Maintenance Status, not assumed.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + START_TIMEOUT;
        let client = crate::EtcdStore::connect(&self.endpoints()).expect("a client of the test etcd");
        loop {
            let statuses: Vec<Option<crate::MemberStatus>> = self
                .endpoints()
                .iter()
                .zip(&self.members)
                .map(|(endpoint, member)| {
                    member.child.as_ref()?;
                    client.member_status(endpoint).ok()
                })
                .collect();
            let live: Vec<&crate::MemberStatus> = statuses.iter().flatten().collect();
            let agreed = live
                .first()
                .map(|first| first.leader)
                .filter(|&leader| leader != 0 && live.iter().all(|status| status.leader == leader));
            let killed = self
                .members
                .iter()
                .filter(|member| member.child.is_none())
                .count();
            if let Some(leader) = agreed
                && live.len() + killed == self.members.len()
                && let Some(index) = statuses
                    .iter()
                    .position(|status| status.is_some_and(|status| status.member == leader))
            {
                return index;
            }
            assert!(
                Instant::now() < deadline,
                "the etcd members did not agree on a leader in {START_TIMEOUT:?}: {statuses:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A client of the cluster as a store.
    pub fn store(&self) -> std::sync::Arc<dyn crate::Store> {
        std::sync::Arc::new(crate::EtcdStore::connect(&self.endpoints()).expect("connect to the test etcd"))
    }
}
