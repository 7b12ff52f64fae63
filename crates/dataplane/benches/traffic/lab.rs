//! Three private network namespaces: a pod, the node that forwards its traffic (where the
//! rules are), and an outside host running nginx and iperf3. Everything is created inside
//! those namespaces (the veths are made in place, so the root namespace never sees them) and
//! removed on drop, panics included.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::manifests::{NODE_ADDRESS, OUTSIDE_ADDRESS, OUTSIDE_GATEWAY, POD_ADDRESS};

#[derive(Debug)]
pub struct Lab {
    pub pod: String,
    pub node: String,
    pub outside: String,
    /// The node-side veth of the pod, named as the CNI plugin names host interfaces.
    pub interface: String,
    pub work: PathBuf,
    namespaces: Vec<String>,
    servers: Vec<Child>,
}

/// Runs a command to completion; panics with its stderr if it fails.
pub fn run(program: &str, arguments: &[&str]) -> Output {
    let output = Command::new(program)
        .args(arguments)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {} failed ({}): {}",
        arguments.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    output
}

impl Lab {
    pub fn up() -> Lab {
        let id = std::process::id();
        let prefix = format!("slctraffic-{id}");
        let mut lab = Lab {
            pod: format!("{prefix}-pod"),
            node: format!("{prefix}-node"),
            outside: format!("{prefix}-outside"),
            interface: format!("slc{:012x}", u64::from(id) << 8 | 0x5b),
            work: std::env::temp_dir().join(&prefix),
            namespaces: Vec::new(),
            servers: Vec::new(),
        };
        std::fs::create_dir_all(lab.work.join("www")).unwrap();
        std::fs::write(lab.work.join("www/index.html"), "ok\n").unwrap();
        for namespace in [lab.pod.clone(), lab.node.clone(), lab.outside.clone()] {
            run("ip", &["netns", "add", &namespace]);
            lab.namespaces.push(namespace.clone());
            run("ip", &["-n", &namespace, "link", "set", "lo", "up"]);
        }
        let (pod, node, outside, interface) = (&lab.pod, &lab.node, &lab.outside, &lab.interface);
        run(
            "ip",
            &[
                "-n", node, "link", "add", interface, "type", "veth", "peer", "name", "eth0", "netns", pod,
            ],
        );
        run(
            "ip",
            &[
                "-n", node, "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", outside,
            ],
        );
        for (namespace, device, address) in [
            (pod, "eth0", format!("{POD_ADDRESS}/24")),
            (node, interface.as_str(), format!("{NODE_ADDRESS}/24")),
            (node, "uplink", format!("{OUTSIDE_GATEWAY}/24")),
            (outside, "eth0", format!("{OUTSIDE_ADDRESS}/24")),
        ] {
            run("ip", &["-n", namespace, "addr", "add", &address, "dev", device]);
            run("ip", &["-n", namespace, "link", "set", device, "up"]);
        }
        run("ip", &["-n", pod, "route", "add", "default", "via", NODE_ADDRESS]);
        run(
            "ip",
            &[
                "-n",
                outside,
                "route",
                "add",
                "10.200.0.0/24",
                "via",
                OUTSIDE_GATEWAY,
            ],
        );
        run(
            "ip",
            &["netns", "exec", node, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        );
        lab.start_servers();
        lab
    }

    fn start_servers(&mut self) {
        let work = self.work.display().to_string();
        // One process (no master) so that killing our child stops the server.
        let config = format!(
            "worker_processes 1; master_process off; daemon off; pid {work}/nginx.pid; error_log {work}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; server {{ listen {OUTSIDE_ADDRESS}:80 reuseport backlog=4096; root {work}/www; keepalive_timeout 0; }} }}\n"
        );
        let config_path = format!("{work}/nginx.conf");
        std::fs::write(&config_path, config).unwrap();
        let error_log = format!("{work}/error.log");
        self.spawn_server(&["nginx", "-c", &config_path, "-e", &error_log]);
        self.spawn_server(&["iperf3", "-s", "-B", OUTSIDE_ADDRESS]);
        // Wait until both listen.
        for port in [80, 5201] {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let probe = Command::new("ip")
                    .args(["netns", "exec", &self.outside, "ss", "-Hltn"])
                    .arg(format!("sport = :{port}"))
                    .output()
                    .unwrap();
                if !probe.stdout.is_empty() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the server on port {port} did not start"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn spawn_server(&mut self, command: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.outside])
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", command[0]));
        // `ip netns exec` execs the command, so the child is the server itself.
        self.servers.push(child);
    }

    /// `ip netns exec <namespace> <command>`, checked.
    pub fn exec(&self, namespace: &str, command: &[&str]) -> Output {
        let mut arguments = vec!["netns", "exec", namespace];
        arguments.extend_from_slice(command);
        run("ip", &arguments)
    }

    /// `nft -f -` in the node's namespace.
    pub fn nft(&self, script: &str) {
        use std::io::Write as _;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.node, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "nft refused:\n{script}");
    }

    /// Whether one ICMP echo from the pod reaches the outside host.
    pub fn ping(&self) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.pod,
                "ping",
                "-c1",
                "-W1",
                "-q",
                OUTSIDE_ADDRESS,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Connections tracked in the node's namespace (0 when conntrack is not in use there).
    pub fn conntrack_count(&self) -> u64 {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.node,
                "cat",
                "/proc/sys/net/netfilter/nf_conntrack_count",
            ])
            .stderr(Stdio::null())
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        for namespace in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "delete", namespace])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// The two measurements, shared by the traffic and flow-log benchmarks.
impl Lab {
    /// wrk with `Connection: close`: every request is a new TCP connection. Returns requests per
    /// second and wrk's socket error count.
    pub fn connections_per_second(&self, seconds: usize) -> (f64, u64) {
        let output = self.exec(
            &self.pod,
            &[
                "wrk",
                "-t1",
                "-c32",
                &format!("-d{seconds}s"),
                "-H",
                "Connection: close",
                &format!("http://{OUTSIDE_ADDRESS}/"),
            ],
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let rate: f64 = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no rate in wrk's output:\n{text}"));
        assert!(rate > 0.0, "no request succeeded:\n{text}");
        let errors = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("Socket errors:"))
            .map(|counts| {
                counts
                    .split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        (rate, errors)
    }

    /// iperf3, one TCP stream; the receiver's rate in Gb/s.
    pub fn gigabits_per_second(&self, seconds: usize) -> f64 {
        let output = self.exec(
            &self.pod,
            &["iperf3", "-c", OUTSIDE_ADDRESS, "-t", &seconds.to_string(), "-J"],
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let received = text
            .find("\"sum_received\"")
            .unwrap_or_else(|| panic!("no sum_received in iperf3's output:\n{text}"));
        let field = "\"bits_per_second\":";
        let start = received + text[received..].find(field).expect("bits_per_second") + field.len();
        let number: String = text[start..]
            .trim_start()
            .chars()
            .take_while(|character| {
                character.is_ascii_digit() || matches!(character, '.' | 'e' | 'E' | '+' | '-')
            })
            .collect();
        number.parse::<f64>().expect("a number") / 1e9
    }
}

/// The median (the mean of the middle two for an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}
