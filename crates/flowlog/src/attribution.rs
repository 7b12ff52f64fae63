//! From the hit id the kernel logged to the hit it stands for.
//!
//! The lookup is built from the compiled IR ([`Dataplane::hits`]), the same list the renderer
//! took its log prefixes from. A compile replaces it; the previous generation stays for a grace
//! period, since packets logged by the previous ruleset may still be in the socket's queue.

use std::sync::Arc;

use sluice_policy::{Dataplane, HitId, PolicyHit};

use crate::FastMap;
use crate::events::Timestamp;

#[derive(Debug, Clone, Default)]
pub struct Attribution {
    current: FastMap<HitId, Arc<PolicyHit>>,
    /// The previous compile's hits and when they stop resolving.
    previous: Option<(FastMap<HitId, Arc<PolicyHit>>, Timestamp)>,
    grace_milliseconds: u64,
    unknown: u64,
}

impl Attribution {
    pub fn new(grace_milliseconds: u64) -> Attribution {
        Attribution {
            grace_milliseconds,
            ..Attribution::default()
        }
    }

    /// Takes the hits of a new compile; the ones in use until now resolve for the grace period.
    pub fn replace(&mut self, dataplane: &Dataplane, now: Timestamp) {
        let mut current = FastMap::default();
        for hit in dataplane.hits() {
            // Two hits with one id would be a 64-bit hash collision: the first keeps it.
            current.entry(hit.id()).or_insert_with(|| Arc::new(hit));
        }
        let previous = std::mem::replace(&mut self.current, current);
        let until = Timestamp(now.0.saturating_add(self.grace_milliseconds));
        self.previous = Some((previous, until));
    }

    /// The hit an id stands for, from the current compile or, within its grace period, the
    /// previous one; an id in neither is counted.
    pub fn lookup(&mut self, id: HitId, now: Timestamp) -> Option<Arc<PolicyHit>> {
        if let Some(hit) = self.current.get(&id) {
            return Some(hit.clone());
        }
        let from_previous = self
            .previous
            .as_ref()
            .filter(|(_, until)| now < *until)
            .and_then(|(hits, _)| hits.get(&id).cloned());
        if from_previous.is_none() {
            self.unknown += 1;
        }
        from_previous
    }

    /// Drops the previous generation once its grace period is over.
    pub fn expire(&mut self, now: Timestamp) {
        if self.previous.as_ref().is_some_and(|(_, until)| now >= *until) {
            self.previous = None;
        }
    }

    /// Whether a hit may still be reported (it is in either generation).
    pub fn knows(&self, id: HitId) -> bool {
        self.current.contains_key(&id)
            || self
                .previous
                .as_ref()
                .is_some_and(|(hits, _)| hits.contains_key(&id))
    }

    /// Ids looked up that neither generation knew.
    pub fn unknown(&self) -> u64 {
        self.unknown
    }

    /// Hits in the current generation.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }
}
