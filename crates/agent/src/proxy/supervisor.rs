//! The agent's side of the proxy: the child process, its input, its routing.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sluice_dataplane::L7Redirect;
use sluice_dataplane::proxy_routes::ProxyRoutes;

use super::CHILD_FLAG;
use super::stats::StatsReport;
use crate::metrics::Metrics;

/// How soon an exited proxy is started again.
const RESTART_DELAY: Duration = Duration::from_millis(200);

/// The newest snapshot for the child, written by a thread of its own so that a slow child
/// never holds up the agent; only the newest one matters.
#[derive(Debug, Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct MailboxState {
    snapshot: Option<Arc<Vec<u8>>>,
    closed: bool,
}

#[derive(Debug)]
struct Running {
    child: Child,
    mailbox: Arc<Mailbox>,
}

/// Starts, feeds and restarts the proxy child; keeps its routing in place.
#[derive(Debug)]
pub struct ProxySupervisor {
    redirect: L7Redirect,
    routes: Option<ProxyRoutes>,
    running: Option<Running>,
    latest: Option<Arc<Vec<u8>>>,
    /// The proxy is wanted (some local endpoint has an L7 egress rule).
    wanted: bool,
    restart_at: Option<Instant>,
    /// How many times the proxy was started.
    pub starts: u64,
    metrics: Arc<Metrics>,
}

impl ProxySupervisor {
    pub fn new(port: u16, metrics: Arc<Metrics>) -> ProxySupervisor {
        ProxySupervisor {
            redirect: L7Redirect { port },
            routes: None,
            running: None,
            latest: None,
            wanted: false,
            restart_at: None,
            starts: 0,
            metrics,
        }
    }

    pub fn redirect(&self) -> &L7Redirect {
        &self.redirect
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.running.as_ref().map(|running| running.child.id())
    }

    /// After each ruleset the kernel took: whether it redirects to the proxy, and the
    /// snapshot it was compiled from. Starts the proxy (and its routing) when first wanted;
    /// once started it stays, fed every snapshot.
    pub fn after_sync(&mut self, redirects: bool, snapshot: impl FnOnce() -> Vec<u8>) -> Result<(), String> {
        if !(redirects || self.wanted) {
            return Ok(());
        }
        self.wanted = true;
        let snapshot = Arc::new(snapshot());
        self.latest = Some(snapshot.clone());
        let routed = self.ensure_routes();
        match &self.running {
            Some(running) => send(&running.mailbox, snapshot),
            None => self.start(),
        }
        routed
    }

    fn ensure_routes(&mut self) -> Result<(), String> {
        if self.routes.is_none() {
            self.routes = Some(ProxyRoutes::open().map_err(|error| error.to_string())?);
        }
        let routes = self.routes.as_mut().expect("opened above");
        routes.ensure().map_err(|error| {
            // Opened again next time, in case the socket is what failed.
            self.routes = None;
            error.to_string()
        })
    }

    /// Restarts the child when it exited (called from the agent's loop, at least twice a
    /// second); puts the routing back if it went.
    pub fn check(&mut self) {
        if !self.wanted {
            return;
        }
        if let Some(running) = &mut self.running
            && let Ok(Some(status)) = running.child.try_wait()
        {
            tracing::warn!(%status, "the L7 proxy exited; starting it again");
            close(&running.mailbox);
            self.running = None;
            self.metrics.proxy.up.set(0);
            self.metrics.proxy.open_connections.set(0);
            self.restart_at = Some(Instant::now() + RESTART_DELAY);
        }
        if self.running.is_none() && self.restart_at.is_none_or(|at| Instant::now() >= at) {
            if let Err(error) = self.ensure_routes() {
                tracing::error!(%error, "the L7 proxy's routing");
            }
            self.start();
        }
    }

    fn start(&mut self) {
        let started = current_command().and_then(|mut command| {
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|error| format!("starting the L7 proxy: {error}"))
        });
        let mut child = match started {
            Ok(child) => child,
            Err(error) => {
                tracing::error!(%error, "the L7 proxy did not start; trying again");
                self.restart_at = Some(Instant::now() + RESTART_DELAY);
                return;
            }
        };
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let metrics = self.metrics.clone();
        std::thread::spawn(move || read_reports(stdout, &metrics));
        let mailbox = Arc::new(Mailbox::default());
        let writer = mailbox.clone();
        std::thread::spawn(move || write_snapshots(stdin, &writer));
        if let Some(snapshot) = &self.latest {
            send(&mailbox, snapshot.clone());
        }
        self.starts += 1;
        self.metrics.proxy.starts.inc();
        self.metrics.proxy.up.set(1);
        self.restart_at = None;
        tracing::info!(pid = child.id(), port = self.redirect.port, "L7 proxy started");
        self.running = Some(Running { child, mailbox });
    }

    /// Stops the child (its input closes; it exits) and waits for it, briefly.
    pub fn stop(&mut self) {
        if let Some(mut running) = self.running.take() {
            close(&running.mailbox);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = running.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = running.child.kill();
            let _ = running.child.wait();
        }
    }
}

impl Drop for ProxySupervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// This executable with this process's arguments and [`CHILD_FLAG`]: the same agent command
/// line (node, datastore, flags), run as the proxy.
fn current_command() -> Result<Command, String> {
    let executable = std::env::current_exe().map_err(|error| format!("finding this executable: {error}"))?;
    let mut command = Command::new(executable);
    command.args(std::env::args_os().skip(1)).arg(CHILD_FLAG);
    Ok(command)
}

/// Turns the child's reports into the agent's metrics until the child's output closes.
fn read_reports(stdout: ChildStdout, metrics: &Metrics) {
    let mut previous = StatsReport::default();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { return };
        match StatsReport::parse(&line) {
            Some(report) => {
                metrics.proxy.add(&report.since(&previous));
                previous = report;
            }
            None => tracing::debug!(line, "the L7 proxy printed a line that is not a report"),
        }
    }
}

fn send(mailbox: &Mailbox, snapshot: Arc<Vec<u8>>) {
    mailbox.state.lock().expect("not poisoned").snapshot = Some(snapshot);
    mailbox.changed.notify_all();
}

fn close(mailbox: &Mailbox) {
    mailbox.state.lock().expect("not poisoned").closed = true;
    mailbox.changed.notify_all();
}

fn write_snapshots(mut stdin: ChildStdin, mailbox: &Mailbox) {
    loop {
        let snapshot = {
            let mut state = mailbox.state.lock().expect("not poisoned");
            loop {
                if state.closed {
                    return;
                }
                if let Some(snapshot) = state.snapshot.take() {
                    break snapshot;
                }
                state = mailbox.changed.wait(state).expect("not poisoned");
            }
        };
        if stdin.write_all(&snapshot).and_then(|()| stdin.flush()).is_err() {
            // The child is gone; the supervisor notices and starts another.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter_value(text: &str, name: &str) -> Option<String> {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .map(str::to_string)
    }

    #[test]
    fn reports_become_metrics_that_only_grow_across_a_restarted_child() {
        let metrics = Metrics::new();
        let first = StatsReport {
            accepted: 5,
            open: 3,
            http_denied: 2,
            refused_pod_limit: 1,
            ..StatsReport::default()
        };
        let second = StatsReport {
            accepted: 7,
            open: 1,
            http_denied: 4,
            refused_pod_limit: 1,
            ..StatsReport::default()
        };
        // A restarted child counts from zero again.
        let restarted = StatsReport {
            accepted: 1,
            open: 1,
            http_denied: 1,
            ..StatsReport::default()
        };
        for reports in [vec![first, second], vec![restarted]] {
            let mut lines: String = reports.iter().map(StatsReport::line).collect();
            lines.push_str("a line that is not a report\n");
            let mut child = Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' '{lines}'"))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            read_reports(child.stdout.take().unwrap(), &metrics);
            child.wait().unwrap();
        }
        let text = metrics.render();
        let value = |name: &str| counter_value(&text, name).unwrap_or_else(|| panic!("{name} in {text}"));
        assert_eq!(value("sluice_agent_l7_proxy_accepted_connections_total"), "8");
        assert_eq!(value("sluice_agent_l7_proxy_open_connections"), "1");
        assert_eq!(
            value("sluice_agent_l7_proxy_decisions_total{protocol=\"http\",verdict=\"denied\"}"),
            "5"
        );
        assert_eq!(
            value("sluice_agent_l7_proxy_refused_connections_total{reason=\"pod_limit\"}"),
            "1"
        );
    }
}
