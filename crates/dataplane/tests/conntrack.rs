//! Forgetting an address's connection-tracking entries in a real kernel (root; a private
//! network namespace; entries made with `conntrack -I`, so no traffic is needed).

use std::process::Command;

use sluice_dataplane::conntrack::Conntrack;

struct Namespace(String);

impl Namespace {
    fn new(purpose: &str) -> Namespace {
        let name = format!("sluicect-{purpose}-{}", std::process::id());
        let status = Command::new("ip").args(["netns", "add", &name]).status().unwrap();
        assert!(status.success(), "needs root");
        Namespace(name)
    }

    fn run(&self, program: &str, arguments: &[&str]) -> String {
        let output = Command::new("ip")
            .args(["netns", "exec", &self.0, program])
            .args(arguments)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{program} {arguments:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// An established TCP entry: original tuple, then the reply tuple (they differ under NAT).
    fn insert(&self, original: (&str, &str), reply: (&str, &str), port: &str) {
        self.run(
            "conntrack",
            &[
                "-I",
                "--proto",
                "tcp",
                "--orig-src",
                original.0,
                "--orig-dst",
                original.1,
                "--reply-src",
                reply.0,
                "--reply-dst",
                reply.1,
                "--orig-port-src",
                port,
                "--orig-port-dst",
                "80",
                "--reply-port-src",
                "80",
                "--reply-port-dst",
                port,
                "--state",
                "ESTABLISHED",
                "--timeout",
                "300",
            ],
        );
    }

    fn entries(&self) -> Vec<String> {
        self.run("cat", &["/proc/net/nf_conntrack"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

#[test]
fn every_entry_naming_the_address_in_any_tuple_goes_and_no_other() {
    let namespace = Namespace::new("forget");
    let pod = "10.60.0.5";
    // The pod's own connection out; a connection to it; a connection to a service address
    // that was DNATed to it (the pod only appears in the reply tuple); one masqueraded out
    // (the pod only in the original tuple, the node in the reply); and someone else's.
    namespace.insert((pod, "203.0.113.10"), ("203.0.113.10", pod), "40001");
    namespace.insert(("10.60.0.9", pod), (pod, "10.60.0.9"), "40002");
    namespace.insert(("10.60.0.9", "10.96.0.10"), (pod, "10.60.0.9"), "40003");
    namespace.insert((pod, "198.51.100.7"), ("198.51.100.7", "100.64.0.10"), "40004");
    namespace.insert(
        ("10.60.0.9", "203.0.113.10"),
        ("203.0.113.10", "10.60.0.9"),
        "40005",
    );
    // And an IPv6 pod's.
    namespace.insert(("fd00::5", "2001:db8::10"), ("2001:db8::10", "fd00::5"), "40006");
    assert_eq!(namespace.entries().len(), 6);

    let conntrack = Conntrack::in_namespace(&namespace.0).expect("conntrack is installed");
    assert_eq!(conntrack.forget(pod.parse().unwrap()).unwrap(), 4);
    let left = namespace.entries();
    assert_eq!(left.len(), 2, "{left:#?}");
    assert!(
        left.iter().any(|entry| entry.contains("sport=40005")),
        "{left:#?}"
    );
    // Nothing left to forget is not an error.
    assert_eq!(conntrack.forget(pod.parse().unwrap()).unwrap(), 0);
    assert_eq!(conntrack.forget("fd00::5".parse().unwrap()).unwrap(), 1);
    let left = namespace.entries();
    assert_eq!(left.len(), 1, "{left:#?}");
}
