//! A gateway's health from its probes, as the node's prober sees it: one answer from
//! `/readiness` makes it `Ready`; `failure_count` failed probes in a row make it `NotReady`
//! (Calico's `egressGatewayPollFailureCount`); a gateway being deleted that is still ready is
//! `Draining` (its clients keep it, no new client takes it). A gateway never probed is
//! `NotReady`: fail closed until it has answered once.

use std::collections::BTreeMap;

use crate::model::{GatewayHealth, PodId};

/// What one probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    Ready,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tracked {
    ready: bool,
    failures: u32,
    deleting: bool,
}

/// The health of every gateway the node probes.
#[derive(Debug, Clone, Default)]
pub struct HealthTracker {
    gateways: BTreeMap<PodId, Tracked>,
}

impl HealthTracker {
    pub fn new() -> HealthTracker {
        HealthTracker::default()
    }

    /// Keeps exactly `targets` (gateway, being deleted); a new one starts `NotReady`. Returns
    /// whether some gateway's health changed (one went away, or started or stopped draining).
    pub fn set_targets(&mut self, targets: impl IntoIterator<Item = (PodId, bool)>) -> bool {
        let before = self.health();
        let targets: BTreeMap<PodId, bool> = targets.into_iter().collect();
        self.gateways.retain(|gateway, _| targets.contains_key(gateway));
        for (gateway, deleting) in targets {
            self.gateways
                .entry(gateway)
                .or_insert(Tracked {
                    ready: false,
                    failures: 0,
                    deleting,
                })
                .deleting = deleting;
        }
        // A gateway missing from either side counts as `NotReady`, as `Inputs::health_of` reads it.
        let after = self.health();
        let differs = |left: &BTreeMap<PodId, GatewayHealth>, right: &BTreeMap<PodId, GatewayHealth>| {
            left.iter().any(|(gateway, health)| {
                right.get(gateway).copied().unwrap_or(GatewayHealth::NotReady) != *health
            })
        };
        differs(&before, &after) || differs(&after, &before)
    }

    /// Takes one probe's outcome; returns the gateway's new health if it changed.
    /// `failure_count` is the failed probes in a row that make a ready gateway not ready.
    pub fn observe(
        &mut self,
        gateway: &PodId,
        outcome: ProbeOutcome,
        failure_count: u32,
    ) -> Option<GatewayHealth> {
        let tracked = self.gateways.get_mut(gateway)?;
        let before = health_of(tracked);
        match outcome {
            ProbeOutcome::Ready => {
                tracked.ready = true;
                tracked.failures = 0;
            }
            ProbeOutcome::Failed => {
                tracked.failures = tracked.failures.saturating_add(1);
                if tracked.failures >= failure_count.max(1) {
                    tracked.ready = false;
                }
            }
        }
        let after = health_of(tracked);
        (after != before).then_some(after)
    }

    pub fn health_of(&self, gateway: &PodId) -> GatewayHealth {
        self.gateways
            .get(gateway)
            .map_or(GatewayHealth::NotReady, health_of)
    }

    /// Every tracked gateway's health, for `Inputs::health`.
    pub fn health(&self) -> BTreeMap<PodId, GatewayHealth> {
        self.gateways
            .iter()
            .map(|(gateway, tracked)| (gateway.clone(), health_of(tracked)))
            .collect()
    }
}

fn health_of(tracked: &Tracked) -> GatewayHealth {
    match (tracked.ready, tracked.deleting) {
        (false, _) => GatewayHealth::NotReady,
        (true, false) => GatewayHealth::Ready,
        (true, true) => GatewayHealth::Draining,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway() -> PodId {
        PodId::new("egress", "gateway-a")
    }

    #[test]
    fn unprobed_is_not_ready_and_one_answer_makes_it_ready() {
        let mut tracker = HealthTracker::new();
        assert!(!tracker.set_targets([(gateway(), false)]));
        assert_eq!(tracker.health_of(&gateway()), GatewayHealth::NotReady);
        assert_eq!(
            tracker.observe(&gateway(), ProbeOutcome::Ready, 3),
            Some(GatewayHealth::Ready)
        );
        assert_eq!(tracker.observe(&gateway(), ProbeOutcome::Ready, 3), None);
    }

    #[test]
    fn failures_in_a_row_reach_the_count_before_it_is_dropped() {
        let mut tracker = HealthTracker::new();
        tracker.set_targets([(gateway(), false)]);
        tracker.observe(&gateway(), ProbeOutcome::Ready, 3);
        assert_eq!(tracker.observe(&gateway(), ProbeOutcome::Failed, 3), None);
        assert_eq!(tracker.observe(&gateway(), ProbeOutcome::Failed, 3), None);
        // An answer in between starts the count again.
        assert_eq!(tracker.observe(&gateway(), ProbeOutcome::Ready, 3), None);
        assert_eq!(tracker.observe(&gateway(), ProbeOutcome::Failed, 3), None);
        assert_eq!(tracker.observe(&gateway(), ProbeOutcome::Failed, 3), None);
        assert_eq!(
            tracker.observe(&gateway(), ProbeOutcome::Failed, 3),
            Some(GatewayHealth::NotReady)
        );
    }

    #[test]
    fn a_ready_gateway_being_deleted_drains_and_a_failed_one_stays_failed() {
        let mut tracker = HealthTracker::new();
        tracker.set_targets([(gateway(), false)]);
        tracker.observe(&gateway(), ProbeOutcome::Ready, 1);
        assert!(tracker.set_targets([(gateway(), true)]));
        assert_eq!(tracker.health_of(&gateway()), GatewayHealth::Draining);
        assert_eq!(
            tracker.observe(&gateway(), ProbeOutcome::Failed, 1),
            Some(GatewayHealth::NotReady)
        );
    }

    #[test]
    fn gateways_no_longer_targeted_are_forgotten() {
        let mut tracker = HealthTracker::new();
        tracker.set_targets([(gateway(), false)]);
        tracker.observe(&gateway(), ProbeOutcome::Ready, 1);
        assert!(tracker.set_targets([]));
        assert_eq!(tracker.observe(&gateway(), ProbeOutcome::Ready, 1), None);
        assert!(tracker.health().is_empty());
    }
}
