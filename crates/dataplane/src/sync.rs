//! Bringing the kernel from the last programmed ruleset to the desired one.

use std::collections::BTreeSet;

use sluice_nft::{
    Backend, Chain, CommandBackend, Element, Family, NftError, Object, Rule, Table, Transaction,
};

use crate::render::{ChainState, Ruleset, SetState, TABLE_NAME};

/// What one sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    /// The table was rebuilt from scratch (first sync, after a failure, or on request).
    pub full: bool,
    /// Operations in the transaction (0 when nothing changed).
    pub operations: usize,
}

/// Applies rulesets through a backend, remembering what the kernel holds.
#[derive(Debug)]
pub struct Syncer<B: Backend> {
    backend: B,
    table: Table,
    applied: Option<Ruleset>,
}

impl<B: Backend> Syncer<B> {
    pub fn new(backend: B) -> Self {
        Syncer {
            backend,
            table: Table::new(Family::Inet, TABLE_NAME),
            applied: None,
        }
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The next sync rebuilds the whole table (periodic resync).
    pub fn resync_next(&mut self) {
        self.applied = None;
    }

    /// Programs `desired`. On error the kernel keeps its previous ruleset (the transaction is
    /// atomic) and the next sync is a full one.
    pub fn sync(&mut self, desired: &Ruleset) -> Result<SyncReport, NftError> {
        let (transaction, full) = match &self.applied {
            Some(applied) => (self.incremental(applied, desired), false),
            None => (self.full(desired), true),
        };
        if transaction.is_empty() {
            return Ok(SyncReport { full, operations: 0 });
        }
        match self.backend.apply(&transaction) {
            Ok(()) => {
                self.applied = Some(desired.clone());
                Ok(SyncReport {
                    full,
                    operations: transaction.len(),
                })
            }
            Err(error) => {
                self.applied = None;
                Err(error)
            }
        }
    }

    /// Replaces the table in one transaction: add (so that delete cannot fail), delete, then
    /// build everything.
    pub fn full(&self, desired: &Ruleset) -> Transaction {
        let mut transaction = Transaction::new(self.table.clone());
        transaction.add(Object::Table).delete(Object::Table);
        append_creation(&mut transaction, desired);
        transaction
    }

    /// Only what changed: new sets and chains first, then elements and rewritten chains, and
    /// last the removal of what nothing refers to any more.
    fn incremental(&self, applied: &Ruleset, desired: &Ruleset) -> Transaction {
        let mut transaction = Transaction::new(self.table.clone());
        let maps_last = |maps: bool| move |set: &&SetState| set.declaration.is_map() == maps;
        for maps in [false, true] {
            if maps {
                for (name, chain) in &desired.chains {
                    if !applied.chains.contains_key(name) {
                        transaction.add(Object::Chain(chain_object(name, chain)));
                    }
                }
            }
            for set in desired.sets.values().filter(maps_last(maps)) {
                match applied.sets.get(&set.declaration.name) {
                    None => {
                        add_set(&mut transaction, set);
                        add_dynamic_elements(&mut transaction, desired, set);
                    }
                    Some(existing) if existing.declaration != set.declaration => {
                        // A changed declaration cannot be altered in place; rebuild the set.
                        // Rules using it are rewritten below because their chains reference
                        // the same name.
                        transaction.flush(Object::Set(existing.declaration.clone()));
                        add_elements(&mut transaction, set, set.elements.iter());
                        add_dynamic_elements(&mut transaction, desired, set);
                    }
                    Some(existing) => {
                        let removed: BTreeSet<_> = existing.elements.difference(&set.elements).collect();
                        // A map key whose value changed is deleted and added again.
                        for (key, value) in removed {
                            transaction.delete(Object::Element(element(&set.declaration.name, key, value)));
                        }
                        add_elements(&mut transaction, set, set.elements.difference(&existing.elements));
                    }
                }
            }
        }
        for (name, chain) in &desired.chains {
            match applied.chains.get(name) {
                Some(existing) if existing.rules == chain.rules => {}
                Some(_) => {
                    transaction.flush(Object::Chain(chain_object(name, chain)));
                    add_rules(&mut transaction, name, chain);
                }
                None => add_rules(&mut transaction, name, chain),
            }
        }
        for (name, chain) in &applied.chains {
            if !desired.chains.contains_key(name) {
                transaction.flush(Object::Chain(chain_object(name, chain)));
            }
        }
        // Sets and maps before chains: a verdict map's elements hold the chains they go to
        // (flow logs' per-hit chains), and no rule uses a set any more once the chains above
        // are flushed.
        for (name, set) in &applied.sets {
            if !desired.sets.contains_key(name) {
                transaction.delete(Object::Set(set.declaration.clone()));
            }
        }
        for (name, chain) in &applied.chains {
            if !desired.chains.contains_key(name) {
                transaction.delete(Object::Chain(chain_object(name, chain)));
            }
        }
        transaction
    }
}

/// Creates every object of `desired`, in an order in which each one's references exist.
fn append_creation(transaction: &mut Transaction, desired: &Ruleset) {
    transaction.add(Object::Table);
    for set in desired.sets.values().filter(|set| !set.declaration.is_map()) {
        add_set(transaction, set);
        add_dynamic_elements(transaction, desired, set);
    }
    for (name, chain) in &desired.chains {
        transaction.add(Object::Chain(chain_object(name, chain)));
    }
    for set in desired.sets.values().filter(|set| set.declaration.is_map()) {
        add_set(transaction, set);
    }
    for (name, chain) in &desired.chains {
        add_rules(transaction, name, chain);
    }
}

/// Makes sure a node is fail closed before its agent has ever programmed it: when there is no
/// Sluice table yet, creates the one an agent would create with no endpoints, which drops all
/// traffic of pod interfaces (`slc*`). The CNI plugin calls this before wiring a pod, so that
/// a pod started before the agent sends nothing. Returns whether it created the table.
///
/// Only `add` operations: if an agent creates the table at the same moment, nothing of its
/// program is removed (at worst a second copy of the drop rules is appended, after the
/// dispatch, where it changes nothing, until the agent's next full resync).
pub fn ensure_fail_closed(backend: &mut CommandBackend) -> Result<bool, NftError> {
    let table = Table::new(Family::Inet, TABLE_NAME);
    if backend.list(&table)?.is_some() {
        return Ok(false);
    }
    let empty = crate::render::render(&sluice_policy::Dataplane::default(), &[]);
    let mut transaction = Transaction::new(table);
    append_creation(&mut transaction, &empty);
    backend.apply(&transaction)?;
    Ok(true)
}

fn chain_object(name: &str, chain: &ChainState) -> Chain {
    Chain {
        name: name.to_string(),
        base: chain.base.clone(),
        comment: None,
    }
}

fn element(set: &str, key: &str, value: &Option<String>) -> Element {
    Element {
        set: set.to_string(),
        key: key.to_string(),
        value: value.clone(),
    }
}

fn add_set(transaction: &mut Transaction, set: &SetState) {
    transaction.add(Object::Set(set.declaration.clone()));
    add_elements(transaction, set, set.elements.iter());
}

fn add_elements<'a>(
    transaction: &mut Transaction,
    set: &SetState,
    elements: impl Iterator<Item = &'a (String, Option<String>)>,
) {
    for (key, value) in elements {
        transaction.add(Object::Element(element(&set.declaration.name, key, value)));
    }
}

/// The elements someone else added to a dynamic set, written back when the set is (re)created:
/// in the same transaction as the table that replaces the old one, so no packet sees the set
/// without them.
fn add_dynamic_elements(transaction: &mut Transaction, desired: &Ruleset, set: &SetState) {
    for element in desired
        .dynamic_sets
        .get(&set.declaration.name)
        .into_iter()
        .flatten()
    {
        transaction.add(Object::Element(Element::new(
            set.declaration.name.clone(),
            element.text(),
        )));
    }
}

fn add_rules(transaction: &mut Transaction, name: &str, chain: &ChainState) {
    for (rule, comment) in &chain.rules {
        transaction.add(Object::Rule(Rule {
            chain: name.to_string(),
            rule: rule.clone(),
            comment: comment.clone(),
        }));
    }
}
