//! Routing table ids for clients, stable across recomputations: a client keeps the id it had
//! in the previous plan; a new client takes the lowest id in `TABLE_RANGE` that no client
//! holds. The previous plan is the memory, so after an agent restart the shell rebuilds it from
//! the kernel's rules (`from <client address> lookup <table>`) before the first plan, and no
//! client's table moves. A hash of the client would need no memory but could collide; a
//! collision would route one client through another's gateways.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;

use crate::model::PodId;
use crate::plan::PlanError;

/// Sluice's egress tables: far from the kernel's (253–255) and from the small ids other
/// software tends to take, and wide enough for any node's pods.
pub const TABLE_RANGE: RangeInclusive<u32> = 1_000_000..=1_065_535;

/// A table id for each client (given in order).
pub fn allocate(
    clients: &[PodId],
    previous: &BTreeMap<PodId, u32>,
    range: RangeInclusive<u32>,
) -> Result<BTreeMap<PodId, u32>, PlanError> {
    let mut tables = BTreeMap::new();
    let mut taken = BTreeSet::new();
    for client in clients {
        if let Some(&table) = previous.get(client)
            && range.contains(&table)
            && taken.insert(table)
        {
            tables.insert(client.clone(), table);
        }
    }
    let mut free = range.clone().filter(|table| !taken.contains(table));
    for client in clients {
        if tables.contains_key(client) {
            continue;
        }
        let table = free.next().ok_or(PlanError::TablesExhausted {
            clients: clients.len(),
            tables: range.clone().count(),
        })?;
        tables.insert(client.clone(), table);
    }
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<PodId> {
        names.iter().map(|name| PodId::new("prod", name)).collect()
    }

    #[test]
    fn clients_keep_their_tables_and_new_ones_take_the_lowest_free() {
        let first = allocate(&ids(&["a", "b", "c"]), &BTreeMap::new(), 10..=20).unwrap();
        assert_eq!(first.values().copied().collect::<Vec<_>>(), [10, 11, 12]);
        // `a` goes, `aa` comes (sorting before `b`): `b` and `c` keep theirs, `aa` takes 10.
        let second = allocate(&ids(&["aa", "b", "c"]), &first, 10..=20).unwrap();
        assert_eq!(second[&PodId::new("prod", "b")], 11);
        assert_eq!(second[&PodId::new("prod", "c")], 12);
        assert_eq!(second[&PodId::new("prod", "aa")], 10);
    }

    #[test]
    fn a_previous_id_outside_the_range_or_taken_twice_is_reallocated() {
        let previous = BTreeMap::from([
            (PodId::new("prod", "a"), 5),
            (PodId::new("prod", "b"), 12),
            (PodId::new("prod", "c"), 12),
        ]);
        let tables = allocate(&ids(&["a", "b", "c"]), &previous, 10..=20).unwrap();
        assert_eq!(tables[&PodId::new("prod", "b")], 12);
        assert_eq!(tables[&PodId::new("prod", "a")], 10);
        assert_eq!(tables[&PodId::new("prod", "c")], 11);
    }

    #[test]
    fn running_out_of_tables_is_an_error_not_a_shared_table() {
        let error = allocate(&ids(&["a", "b", "c"]), &BTreeMap::new(), 10..=11).unwrap_err();
        assert_eq!(
            error,
            PlanError::TablesExhausted {
                clients: 3,
                tables: 2
            }
        );
    }
}
