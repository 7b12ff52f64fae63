//! Programs the learner's batches into the kernel's domain sets through the netlink fast path
//! (one batch per call, no process spawned).

use std::net::IpAddr;
use std::time::Duration;

use sluice_dns::{Batch, Element};
use sluice_nft::{ElementChange, ElementKey, Family, SetElementWriter, Table};

/// The kernel set that holds an element: the domain set's name with the family of its
/// addresses (the renderer declares `<name>_v4` and `<name>_v6`).
pub fn kernel_set_name(set: &str, address: IpAddr) -> String {
    let family = if address.is_ipv4() { "v4" } else { "v6" };
    format!("{set}_{family}")
}

fn table() -> Table {
    Table::new(Family::Inet, sluice_dataplane::TABLE_NAME)
}

/// The additions of a batch, as one transaction.
pub fn additions(batch: &Batch) -> Vec<ElementChange> {
    batch
        .additions
        .iter()
        .map(|addition| ElementChange::Add {
            table: table(),
            set: kernel_set_name(&addition.element.set, addition.element.address),
            key: key(&addition.element),
            // At least a millisecond: a zero timeout means "the set's default" (none).
            timeout: Some(Duration::from_millis(addition.timeout_milliseconds.max(1))),
        })
        .collect()
}

fn key(element: &Element) -> ElementKey {
    ElementKey::Pair(element.endpoint_address, element.address)
}

/// Additions per transaction: one netlink send carries a whole transaction, and a socket's
/// send buffer (about 200 KiB by default) holds some 3,000 elements; a held answer's batch is
/// a handful, a restored cache file's may be 100,000.
const ADDITIONS_PER_TRANSACTION: usize = 2000;

/// Programs a batch: the additions in transactions of at most [`ADDITIONS_PER_TRANSACTION`]
/// (one, all or nothing, for any answer's batch), then the removals, which may name elements
/// the kernel already timed out, so that they never fail the batch. When a later transaction
/// fails the batch fails, and what the earlier ones added stays until its timeout (learned
/// from a trusted answer all the same).
pub fn program(writer: &mut SetElementWriter, batch: &Batch) -> Result<(), String> {
    for chunk in additions(batch).chunks(ADDITIONS_PER_TRANSACTION) {
        writer.apply(chunk).map_err(|error| error.to_string())?;
    }
    remove(writer, &batch.removals);
    Ok(())
}

/// Deletes elements, first together, then (when one was already gone and so the kernel
/// refused the whole transaction) one by one, ignoring those that are gone.
pub fn remove(writer: &mut SetElementWriter, removals: &[Element]) {
    let changes: Vec<ElementChange> = removals
        .iter()
        .map(|element| ElementChange::Delete {
            table: table(),
            set: kernel_set_name(&element.set, element.address),
            key: key(element),
        })
        .collect();
    if changes.is_empty() || writer.apply(&changes).is_ok() {
        return;
    }
    for change in changes {
        if let Err(error) = writer.apply(std::slice::from_ref(&change)) {
            tracing::debug!(%error, "a domain set element to remove was already gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dns::{Addition, BatchToken, Timestamp};

    #[test]
    fn elements_go_to_the_set_of_their_family_with_their_timeout() {
        let element = |address: &str, endpoint: &str| Element {
            set: "d0123".into(),
            endpoint_address: endpoint.parse().unwrap(),
            address: address.parse().unwrap(),
        };
        let batch = Batch {
            token: BatchToken(1),
            additions: vec![
                Addition {
                    element: element("192.0.2.7", "10.0.0.1"),
                    expires: Timestamp::from_unix_seconds(100),
                    timeout_milliseconds: 30_000,
                },
                Addition {
                    element: element("2001:db8::7", "fd00::1"),
                    expires: Timestamp::from_unix_seconds(100),
                    timeout_milliseconds: 0,
                },
            ],
            removals: vec![],
        };
        let changes = additions(&batch);
        let summary: Vec<(String, String, Option<Duration>)> = changes
            .iter()
            .map(|change| match change {
                ElementChange::Add {
                    set, key, timeout, ..
                } => (set.clone(), key.to_string(), *timeout),
                ElementChange::Delete { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "d0123_v4".to_string(),
                    "10.0.0.1 . 192.0.2.7".to_string(),
                    Some(Duration::from_secs(30))
                ),
                (
                    "d0123_v6".to_string(),
                    "fd00::1 . 2001:db8::7".to_string(),
                    Some(Duration::from_millis(1))
                ),
            ]
        );
    }
}
