//! The node's gateway health prober: one thread per gateway, each asking the gateway's
//! `/readiness` on its `health` port every poll interval over plain TCP from the node, and
//! sending each outcome to the shell. The probe goes to the gateway pod's address, the same
//! path the tunnel's packets take, so it checks the path as well as the process.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_gateway::PodId;

/// Where to probe one gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    pub gateway: PodId,
    pub address: IpAddr,
    /// `None`: the pod has no named port `health`, so every probe fails.
    pub port: Option<u16>,
}

/// One probe's result, sent to the shell.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub gateway: PodId,
    /// The round trip, or why it failed.
    pub result: Result<Duration, String>,
}

/// How often and how patiently to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub interval: Duration,
    /// A probe not answered within this fails; at most the interval, so probes never pile up.
    pub timeout: Duration,
}

impl ProbeTiming {
    pub fn new(interval: Duration) -> ProbeTiming {
        ProbeTiming {
            interval,
            timeout: interval.clamp(Duration::from_millis(10), Duration::from_secs(2)),
        }
    }
}

struct Running {
    target: ProbeTarget,
    timing: ProbeTiming,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The probing threads, one per target; each report reaches the shell as an `Event`.
pub struct Prober<Event: From<ProbeReport> + Send + 'static> {
    reports: Sender<Event>,
    running: BTreeMap<PodId, Running>,
}

impl<Event: From<ProbeReport> + Send + 'static> Prober<Event> {
    pub fn new(reports: Sender<Event>) -> Prober<Event> {
        Prober {
            reports,
            running: BTreeMap::new(),
        }
    }

    /// Probes exactly `targets` with `timing`: starts threads for new ones, restarts changed
    /// ones, stops the rest.
    pub fn set_targets(&mut self, targets: &[ProbeTarget], timing: ProbeTiming) {
        let wanted: BTreeMap<&PodId, &ProbeTarget> =
            targets.iter().map(|target| (&target.gateway, target)).collect();
        let stale: Vec<PodId> = self
            .running
            .iter()
            .filter(|(gateway, running)| {
                wanted
                    .get(gateway)
                    .is_none_or(|target| **target != running.target)
                    || running.timing != timing
            })
            .map(|(gateway, _)| gateway.clone())
            .collect();
        for gateway in stale {
            if let Some(running) = self.running.remove(&gateway) {
                stop(running);
            }
        }
        for target in targets {
            if !self.running.contains_key(&target.gateway) {
                let stop = Arc::new(AtomicBool::new(false));
                let thread = spawn(target.clone(), timing, stop.clone(), self.reports.clone());
                self.running.insert(
                    target.gateway.clone(),
                    Running {
                        target: target.clone(),
                        timing,
                        stop,
                        thread,
                    },
                );
            }
        }
    }

    pub fn shutdown(&mut self) {
        for (_, running) in std::mem::take(&mut self.running) {
            stop(running);
        }
    }
}

impl<Event: From<ProbeReport> + Send + 'static> std::fmt::Debug for Prober<Event> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Prober")
            .field("targets", &self.running.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<Event: From<ProbeReport> + Send + 'static> Drop for Prober<Event> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn stop(running: Running) {
    running.stop.store(true, Ordering::Relaxed);
    // The thread wakes at least every 50 ms and a probe is bounded by its timeout.
    let _ = running.thread.join();
}

fn spawn<Event: From<ProbeReport> + Send + 'static>(
    target: ProbeTarget,
    timing: ProbeTiming,
    stop: Arc<AtomicBool>,
    reports: Sender<Event>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("probe {}", target.gateway))
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = match target.port {
                    Some(port) => probe_once(SocketAddr::new(target.address, port), timing.timeout),
                    None => Err("the pod has no named port `health`".to_string()),
                };
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let report = ProbeReport {
                    gateway: target.gateway.clone(),
                    result,
                };
                if reports.send(Event::from(report)).is_err() {
                    return;
                }
                let next = started + timing.interval;
                while !stop.load(Ordering::Relaxed) {
                    let left = next.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    std::thread::sleep(left.min(Duration::from_millis(50)));
                }
            }
        })
        .expect("spawning a probe thread")
}

/// One `GET /readiness`: the round trip if the gateway answered 200 within `timeout`.
pub fn probe_once(address: SocketAddr, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let deadline = started + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero())
            .ok_or_else(|| format!("no answer from {address} within {} ms", timeout.as_millis()))
    };
    let mut stream = TcpStream::connect_timeout(&address, left()?)
        .map_err(|error| format!("connecting to {address}: {error}"))?;
    stream.set_nodelay(true).ok();
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|error| error.to_string())?;
    let request = format!("GET /readiness HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|error| format!("asking {address}: {error}"))?;
    // The status line is all that is needed: "HTTP/1.x 200".
    let mut answer = Vec::with_capacity(64);
    let mut buffer = [0u8; 64];
    while !answer.contains(&b'\n') && answer.len() < 256 {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|error| error.to_string())?;
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => answer.extend_from_slice(&buffer[..read]),
            Err(error) => return Err(format!("reading from {address}: {error}")),
        }
    }
    let line = String::from_utf8_lossy(&answer);
    let status = line.lines().next().unwrap_or("").trim();
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(started.elapsed()),
        Some(code) => Err(format!("{address} answered {code}: not ready")),
        None => Err(format!("{address} gave no HTTP status line")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// A server on loopback answering every connection with `status`, until dropped.
    fn server(status: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(50) {
                let Ok(mut stream) = stream else { return };
                let mut request = [0u8; 512];
                let _ = stream.read(&mut request);
                let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        address
    }

    #[test]
    fn ready_answers_200_and_others_fail_with_the_code() {
        assert!(probe_once(server("200 OK"), Duration::from_secs(2)).is_ok());
        let error = probe_once(server("503 Service Unavailable"), Duration::from_secs(2)).unwrap_err();
        assert!(error.contains("503"), "{error}");
    }

    #[test]
    fn a_closed_port_fails_at_once() {
        let address = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let started = Instant::now();
        assert!(probe_once(address, Duration::from_secs(2)).is_err());
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_silent_server_fails_within_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let error = probe_once(address, Duration::from_millis(150)).unwrap_err();
        assert!(
            error.contains("within 150 ms") || error.contains("reading"),
            "{error}"
        );
        drop(listener);
    }

    #[test]
    fn the_prober_reports_each_target_and_stops_the_ones_removed() {
        let (sender, reports) = mpsc::channel::<ProbeReport>();
        let mut prober = Prober::new(sender);
        let ready = ProbeTarget {
            gateway: PodId::new("egress", "a"),
            address: "127.0.0.1".parse().unwrap(),
            port: Some(server("200 OK").port()),
        };
        let portless = ProbeTarget {
            gateway: PodId::new("egress", "b"),
            address: "127.0.0.1".parse().unwrap(),
            port: None,
        };
        let timing = ProbeTiming::new(Duration::from_millis(20));
        prober.set_targets(&[ready.clone(), portless.clone()], timing);
        let mut seen: BTreeMap<String, bool> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.len() < 2 && Instant::now() < deadline {
            if let Ok(report) = reports.recv_timeout(Duration::from_millis(100)) {
                seen.insert(report.gateway.name.clone(), report.result.is_ok());
            }
        }
        assert_eq!(
            seen,
            BTreeMap::from([("a".to_string(), true), ("b".to_string(), false)])
        );
        prober.set_targets(&[ready], timing);
        while reports.try_recv().is_ok() {}
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            if let Ok(report) = reports.recv_timeout(Duration::from_millis(50)) {
                assert_eq!(report.gateway.name, "a", "b was removed");
            }
        }
        prober.shutdown();
    }
}
