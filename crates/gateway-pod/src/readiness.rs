//! When the gateway is ready, as Calico's egress gateway decides it: for each configured probe
//! kind (ICMP, HTTP), at least one probe of that kind succeeded within the last `window` (Calico's
//! `ICMP_PROBE_TIMEOUT` / `HTTP_PROBE_TIMEOUT`: not ready once *all* probes of a kind have failed
//! for that long). With no probes configured it is ready as soon as forwarding and source NAT are
//! in place. Pure: the clock is an argument.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Icmp,
    Http,
}

#[derive(Debug, Clone)]
pub struct Readiness {
    window: Duration,
    set_up: bool,
    icmp: Option<KindState>,
    http: Option<KindState>,
}

#[derive(Debug, Clone, Copy)]
struct KindState {
    last_success: Option<Instant>,
}

impl Readiness {
    /// `icmp` and `http` say whether probes of that kind are configured.
    pub fn new(window: Duration, icmp: bool, http: bool) -> Self {
        let state = |configured: bool| configured.then_some(KindState { last_success: None });
        Readiness {
            window,
            set_up: false,
            icmp: state(icmp),
            http: state(http),
        }
    }

    /// Forwarding and source NAT are in place.
    pub fn mark_set_up(&mut self) {
        self.set_up = true;
    }

    pub fn record_success(&mut self, kind: ProbeKind, at: Instant) {
        let state = match kind {
            ProbeKind::Icmp => &mut self.icmp,
            ProbeKind::Http => &mut self.http,
        };
        if let Some(state) = state {
            state.last_success = Some(state.last_success.map_or(at, |last| last.max(at)));
        }
    }

    /// Not ready before set-up, nor before the first success of each configured kind.
    pub fn is_ready(&self, now: Instant) -> bool {
        let recent = |state: &Option<KindState>| match state {
            None => true,
            Some(KindState { last_success: None }) => false,
            Some(KindState {
                last_success: Some(at),
            }) => now.saturating_duration_since(*at) <= self.window,
        };
        self.set_up && recent(&self.icmp) && recent(&self.http)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(3);

    #[test]
    fn no_probes_means_ready_once_set_up() {
        let now = Instant::now();
        let mut readiness = Readiness::new(WINDOW, false, false);
        assert!(!readiness.is_ready(now));
        readiness.mark_set_up();
        assert!(readiness.is_ready(now));
    }

    #[test]
    fn a_kind_needs_one_success_within_the_window() {
        let start = Instant::now();
        let mut readiness = Readiness::new(WINDOW, true, false);
        readiness.mark_set_up();
        assert!(!readiness.is_ready(start), "no success yet");
        readiness.record_success(ProbeKind::Icmp, start);
        assert!(readiness.is_ready(start + WINDOW));
        assert!(!readiness.is_ready(start + WINDOW + Duration::from_millis(1)));
        readiness.record_success(ProbeKind::Icmp, start + Duration::from_secs(10));
        assert!(readiness.is_ready(start + Duration::from_secs(11)));
    }

    #[test]
    fn every_configured_kind_must_succeed() {
        let now = Instant::now();
        let mut readiness = Readiness::new(WINDOW, true, true);
        readiness.mark_set_up();
        readiness.record_success(ProbeKind::Icmp, now);
        assert!(!readiness.is_ready(now), "HTTP has not succeeded");
        readiness.record_success(ProbeKind::Http, now);
        assert!(readiness.is_ready(now));
    }

    #[test]
    fn an_older_success_does_not_replace_a_newer_one() {
        let now = Instant::now();
        let mut readiness = Readiness::new(WINDOW, true, false);
        readiness.mark_set_up();
        readiness.record_success(ProbeKind::Icmp, now + Duration::from_secs(5));
        readiness.record_success(ProbeKind::Icmp, now);
        assert!(readiness.is_ready(now + Duration::from_secs(7)));
    }
}
