//! What the proxy child counts, and how the agent reads it: the event loop counts into
//! [`ProxyStats`] (atomics, written by the loop's one thread), a thread of the child prints a
//! [`StatsReport`] on its standard output every second, and the supervisor turns the reports
//! into the agent's Prometheus metrics ([`crate::metrics::ProxyMetrics`]). A restarted child
//! counts from zero again; the supervisor adds what each report adds to the one before it from
//! the same child, so the agent's counters only grow.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_proxy::http::RefusalReason;

/// How often the child reports.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The child's counters since it started.
#[derive(Debug, Default)]
pub(crate) struct ProxyStats {
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    pub http_allowed: AtomicU64,
    pub http_denied: AtomicU64,
    pub tls_allowed: AtomicU64,
    pub tls_denied: AtomicU64,
    pub refused_pod_limit: AtomicU64,
    pub refused_proxy_limit: AtomicU64,
    pub refused_not_judged: AtomicU64,
    pub refused_unreadable: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub spliced_bytes: AtomicU64,
    pub open_pipes: AtomicU64,
}

impl ProxyStats {
    /// Adds one (the loop's thread is the only writer: relaxed order is enough).
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of an HTTP refusal: a request the rules denied, or one that could not be
    /// read safely.
    pub fn of_refusal(&self, reason: &RefusalReason) -> &AtomicU64 {
        match reason {
            RefusalReason::Denied { .. } => &self.http_denied,
            RefusalReason::Invalid(_) => &self.refused_unreadable,
        }
    }

    pub fn report(&self) -> StatsReport {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsReport {
            accepted: read(&self.accepted),
            open: read(&self.open),
            http_allowed: read(&self.http_allowed),
            http_denied: read(&self.http_denied),
            tls_allowed: read(&self.tls_allowed),
            tls_denied: read(&self.tls_denied),
            refused_pod_limit: read(&self.refused_pod_limit),
            refused_proxy_limit: read(&self.refused_proxy_limit),
            refused_not_judged: read(&self.refused_not_judged),
            refused_unreadable: read(&self.refused_unreadable),
            upstream_failures: read(&self.upstream_failures),
            spliced_bytes: read(&self.spliced_bytes),
            open_pipes: read(&self.open_pipes),
        }
    }
}

/// One report: every counter since the child started, and the connections and pipes open now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Connections the listeners accepted.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// HTTP requests forwarded, and refused with a 403.
    pub http_allowed: u64,
    pub http_denied: u64,
    /// TLS connections admitted, and reset, by their ClientHello.
    pub tls_allowed: u64,
    pub tls_denied: u64,
    /// Connections reset at once: their pod had as many open as it may, or the proxy did.
    pub refused_pod_limit: u64,
    pub refused_proxy_limit: u64,
    /// Connections reset at once because there was nothing to judge them by (no policy yet, or
    /// not a local endpoint's).
    pub refused_not_judged: u64,
    /// Connections reset because their bytes were neither HTTP/1.1 nor a ClientHello the proxy
    /// reads, or an HTTP body broke its framing.
    pub refused_unreadable: u64,
    /// Upstream connections that failed to open (the pod's connection was reset, as the
    /// destination would have).
    pub upstream_failures: u64,
    /// Bytes moved by splice (socket to pipe to socket, never copied into the proxy).
    #[serde(default)]
    pub spliced_bytes: u64,
    /// Kernel pipes held now for splicing.
    #[serde(default)]
    pub open_pipes: u64,
}

/// The line prefix of a report on the child's standard output.
const PREFIX: &str = "sluice-l7-proxy-stats ";

impl StatsReport {
    /// The report as one line of the child's output.
    pub fn line(&self) -> String {
        format!(
            "{PREFIX}{}\n",
            serde_json::to_string(self).expect("plain numbers serialize")
        )
    }

    /// A report read back from a line; `None` for any other line.
    pub fn parse(line: &str) -> Option<StatsReport> {
        serde_json::from_str(line.strip_prefix(PREFIX)?.trim_end()).ok()
    }

    /// What `self` counted since `earlier` (from the same child), with `self`'s open counts.
    pub fn since(&self, earlier: &StatsReport) -> StatsReport {
        StatsReport {
            accepted: self.accepted.saturating_sub(earlier.accepted),
            open: self.open,
            http_allowed: self.http_allowed.saturating_sub(earlier.http_allowed),
            http_denied: self.http_denied.saturating_sub(earlier.http_denied),
            tls_allowed: self.tls_allowed.saturating_sub(earlier.tls_allowed),
            tls_denied: self.tls_denied.saturating_sub(earlier.tls_denied),
            refused_pod_limit: self.refused_pod_limit.saturating_sub(earlier.refused_pod_limit),
            refused_proxy_limit: self
                .refused_proxy_limit
                .saturating_sub(earlier.refused_proxy_limit),
            refused_not_judged: self.refused_not_judged.saturating_sub(earlier.refused_not_judged),
            refused_unreadable: self.refused_unreadable.saturating_sub(earlier.refused_unreadable),
            upstream_failures: self.upstream_failures.saturating_sub(earlier.upstream_failures),
            spliced_bytes: self.spliced_bytes.saturating_sub(earlier.spliced_bytes),
            open_pipes: self.open_pipes,
        }
    }
}

/// Prints a report on standard output every [`REPORT_INTERVAL`] (the child's thread); returns
/// when the agent no longer reads it.
pub(crate) fn report_forever(stats: &ProxyStats) {
    let mut output = std::io::stdout().lock();
    loop {
        std::thread::sleep(REPORT_INTERVAL);
        if output
            .write_all(stats.report().line().as_bytes())
            .and_then(|()| output.flush())
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_reads_back_from_its_line_and_other_lines_are_not_reports() {
        let stats = ProxyStats::default();
        ProxyStats::count(&stats.accepted);
        ProxyStats::count(&stats.http_denied);
        ProxyStats::count(&stats.http_denied);
        let report = stats.report();
        assert_eq!(StatsReport::parse(&report.line()), Some(report));
        assert_eq!(report.http_denied, 2);
        assert_eq!(StatsReport::parse("{\"accepted\":1}"), None);
        assert_eq!(StatsReport::parse("sluice-l7-proxy-stats not json"), None);
    }

    #[test]
    fn what_a_report_adds_is_counted_from_the_one_before_and_open_is_taken_as_it_is() {
        let earlier = StatsReport {
            accepted: 10,
            open: 4,
            http_allowed: 7,
            ..StatsReport::default()
        };
        let later = StatsReport {
            accepted: 15,
            open: 2,
            http_allowed: 9,
            tls_denied: 1,
            ..StatsReport::default()
        };
        let added = later.since(&earlier);
        assert_eq!(
            (added.accepted, added.open, added.http_allowed, added.tls_denied),
            (5, 2, 2, 1)
        );
    }
}
