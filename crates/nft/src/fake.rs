//! An in-memory nftables that applies transactions with the kernel's rules, for unit tests.
//!
//! It models what the dataplane relies on: tables, chains (base or regular), rules appended to
//! chains, sets and maps with elements; `add` is idempotent, `create` fails on existing
//! objects, `delete` fails on missing ones and on chains or sets still in use, and a failed
//! transaction leaves the state as it was. It does not parse rule expressions beyond finding
//! the sets (`@name`) and chains (`jump`/`goto name`) they refer to.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::backend::{Backend, NftError};
use crate::objects::{BaseChain, Object, Set, Transaction, Verb};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FakeChain {
    base: Option<BaseChain>,
    rules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FakeSet {
    declaration: Set,
    elements: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FakeTable {
    chains: BTreeMap<String, FakeChain>,
    sets: BTreeMap<String, FakeSet>,
}

/// The in-memory ruleset: tables by `family name`.
#[derive(Debug, Clone, Default)]
pub struct FakeBackend {
    tables: BTreeMap<String, FakeTable>,
}

impl FakeBackend {
    pub fn new() -> Self {
        FakeBackend::default()
    }

    /// A stable listing of one table, like `nft list table` but sorted, for golden tests.
    pub fn dump(&self, table: &crate::objects::Table) -> String {
        let Some(state) = self.tables.get(&table.to_string()) else {
            return String::new();
        };
        let mut text = format!("table {table} {{\n");
        for (name, set) in &state.sets {
            let keyword = if set.declaration.is_map() { "map" } else { "set" };
            let elements: Vec<String> = set
                .elements
                .iter()
                .map(|(key, value)| match value {
                    Some(value) => format!("{key} : {value}"),
                    None => key.clone(),
                })
                .collect();
            let _ = writeln!(text, "  {keyword} {name} {{ {} }}", elements.join(", "));
        }
        for (name, chain) in &state.chains {
            let _ = writeln!(text, "  chain {name} {{");
            if let Some(base) = &chain.base {
                let _ = writeln!(
                    text,
                    "    type {} hook {} priority {}",
                    base.chain_type, base.hook, base.priority
                );
            }
            for rule in &chain.rules {
                let _ = writeln!(text, "    {rule}");
            }
            let _ = writeln!(text, "  }}");
        }
        text.push_str("}\n");
        text
    }

    /// The number of rules and set or map elements in a table.
    pub fn counts(&self, table: &crate::objects::Table) -> (usize, usize) {
        self.tables.get(&table.to_string()).map_or((0, 0), |state| {
            (
                state.chains.values().map(|chain| chain.rules.len()).sum(),
                state.sets.values().map(|set| set.elements.len()).sum(),
            )
        })
    }

    fn apply_to(tables: &mut BTreeMap<String, FakeTable>, transaction: &Transaction) -> Result<(), String> {
        let table_key = transaction.table.to_string();
        for (verb, object) in &transaction.operations {
            if !matches!(object, Object::Table) && !tables.contains_key(&table_key) {
                return Err(format!("table {table_key} does not exist"));
            }
            match object {
                Object::Table => match verb {
                    Verb::Add => {
                        tables.entry(table_key.clone()).or_default();
                    }
                    Verb::Create if tables.contains_key(&table_key) => {
                        return Err(format!("table {table_key} exists"));
                    }
                    Verb::Create => {
                        tables.insert(table_key.clone(), FakeTable::default());
                    }
                    Verb::Flush => {
                        let table = tables
                            .get_mut(&table_key)
                            .ok_or(format!("table {table_key} does not exist"))?;
                        table.chains.values_mut().for_each(|chain| chain.rules.clear());
                    }
                    Verb::Delete => {
                        tables
                            .remove(&table_key)
                            .ok_or(format!("table {table_key} does not exist"))?;
                    }
                },
                Object::Chain(chain) => {
                    let table = tables.get_mut(&table_key).expect("checked above");
                    let exists = table.chains.contains_key(&chain.name);
                    match verb {
                        Verb::Add | Verb::Create if exists => {
                            if *verb == Verb::Create {
                                return Err(format!("chain {} exists", chain.name));
                            }
                            if table.chains[&chain.name].base != chain.base {
                                return Err(format!("chain {} exists with another hook", chain.name));
                            }
                        }
                        Verb::Add | Verb::Create => {
                            table.chains.insert(
                                chain.name.clone(),
                                FakeChain {
                                    base: chain.base.clone(),
                                    rules: Vec::new(),
                                },
                            );
                        }
                        Verb::Flush => {
                            table
                                .chains
                                .get_mut(&chain.name)
                                .ok_or(format!("chain {} does not exist", chain.name))?
                                .rules
                                .clear();
                        }
                        Verb::Delete => {
                            let existing = table
                                .chains
                                .get(&chain.name)
                                .ok_or(format!("chain {} does not exist", chain.name))?;
                            if !existing.rules.is_empty() {
                                return Err(format!("chain {} is not empty", chain.name));
                            }
                            if chain_is_referenced(table, &chain.name) {
                                return Err(format!("chain {} is still referenced", chain.name));
                            }
                            table.chains.remove(&chain.name);
                        }
                    }
                }
                Object::Rule(rule) => {
                    let table = tables.get_mut(&table_key).expect("checked above");
                    if *verb != Verb::Add {
                        return Err(format!("only `add rule` is supported, not `{verb} rule`"));
                    }
                    for set in referenced_sets(&rule.rule) {
                        if !table.sets.contains_key(set) {
                            return Err(format!("rule refers to set {set}, which does not exist"));
                        }
                    }
                    for target in referenced_chains(&rule.rule) {
                        if !table.chains.contains_key(target) {
                            return Err(format!("rule jumps to chain {target}, which does not exist"));
                        }
                    }
                    let chain = table
                        .chains
                        .get_mut(&rule.chain)
                        .ok_or(format!("chain {} does not exist", rule.chain))?;
                    let text = match &rule.comment {
                        Some(comment) => format!("{} comment \"{comment}\"", rule.rule),
                        None => rule.rule.clone(),
                    };
                    chain.rules.push(text);
                }
                Object::Set(set) => {
                    let table = tables.get_mut(&table_key).expect("checked above");
                    match (verb, table.sets.get(&set.name)) {
                        (Verb::Create, Some(_)) => return Err(format!("set {} exists", set.name)),
                        (Verb::Add, Some(existing))
                            if existing.declaration.key_type != set.key_type
                                || existing.declaration.value_type != set.value_type =>
                        {
                            return Err(format!("set {} exists with another type", set.name));
                        }
                        (Verb::Add, Some(_)) => {}
                        (Verb::Add | Verb::Create, None) => {
                            table.sets.insert(
                                set.name.clone(),
                                FakeSet {
                                    declaration: set.clone(),
                                    elements: BTreeMap::new(),
                                },
                            );
                        }
                        (Verb::Flush, Some(_)) => {
                            table.sets.get_mut(&set.name).expect("present").elements.clear();
                        }
                        (Verb::Delete, Some(_)) => {
                            if table
                                .chains
                                .values()
                                .flat_map(|chain| &chain.rules)
                                .any(|rule| referenced_sets(rule).contains(&set.name.as_str()))
                            {
                                return Err(format!("set {} is still used by a rule", set.name));
                            }
                            table.sets.remove(&set.name);
                        }
                        (Verb::Flush | Verb::Delete, None) => {
                            return Err(format!("set {} does not exist", set.name));
                        }
                    }
                }
                Object::Element(element) => {
                    let table = tables.get_mut(&table_key).expect("checked above");
                    let chains: Vec<String> = table.chains.keys().cloned().collect();
                    let set = table
                        .sets
                        .get_mut(&element.set)
                        .ok_or(format!("set {} does not exist", element.set))?;
                    if set.declaration.is_map() != element.value.is_some() {
                        return Err(format!("element {} does not fit {}", element.key, element.set));
                    }
                    if let Some(value) = &element.value {
                        for target in referenced_chains(value) {
                            if !chains.iter().any(|chain| chain == target) {
                                return Err(format!(
                                    "map element jumps to chain {target}, which does not exist"
                                ));
                            }
                        }
                    }
                    let exists = set.elements.contains_key(&element.key);
                    match verb {
                        Verb::Create if exists => {
                            return Err(format!("element {} exists in {}", element.key, element.set));
                        }
                        Verb::Add | Verb::Create => {
                            set.elements.insert(element.key.clone(), element.value.clone());
                        }
                        Verb::Delete if !exists => {
                            return Err(format!("element {} is not in {}", element.key, element.set));
                        }
                        Verb::Delete => {
                            set.elements.remove(&element.key);
                        }
                        Verb::Flush => return Err("elements cannot be flushed".to_string()),
                    }
                }
            }
        }
        Ok(())
    }
}

fn referenced_sets(rule: &str) -> Vec<&str> {
    rule.split(|character: char| character.is_whitespace() || character == ',')
        .filter_map(|word| word.strip_prefix('@'))
        .collect()
}

fn referenced_chains(rule: &str) -> Vec<&str> {
    let words: Vec<&str> = rule.split_whitespace().collect();
    words
        .windows(2)
        .filter(|pair| pair[0] == "jump" || pair[0] == "goto")
        .map(|pair| pair[1].trim_end_matches([',', '}']))
        .collect()
}

fn chain_is_referenced(table: &FakeTable, name: &str) -> bool {
    table
        .chains
        .values()
        .flat_map(|chain| &chain.rules)
        .any(|rule| referenced_chains(rule).contains(&name))
        || table
            .sets
            .values()
            .flat_map(|set| set.elements.values().flatten())
            .any(|value| referenced_chains(value).contains(&name))
}

impl Backend for FakeBackend {
    fn apply(&mut self, transaction: &Transaction) -> Result<(), NftError> {
        // Work on a copy so that a failed transaction changes nothing, as in the kernel.
        let mut tables = self.tables.clone();
        FakeBackend::apply_to(&mut tables, transaction).map_err(NftError::Rejected)?;
        self.tables = tables;
        Ok(())
    }

    fn check(&mut self, transaction: &Transaction) -> Result<(), NftError> {
        let mut tables = self.tables.clone();
        FakeBackend::apply_to(&mut tables, transaction).map_err(NftError::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{Chain, Element, Family, Rule, Table};

    fn table() -> Table {
        Table::new(Family::Inet, "sluice")
    }

    #[test]
    fn a_failed_transaction_changes_nothing() {
        let mut backend = FakeBackend::new();
        let mut first = Transaction::new(table());
        first
            .add(Object::Table)
            .add(Object::Chain(Chain::regular("a")))
            .add(Object::Rule(Rule::new("a", "accept")));
        backend.apply(&first).unwrap();
        let before = backend.dump(&table());
        let mut bad = Transaction::new(table());
        bad.add(Object::Rule(Rule::new("a", "drop")))
            .add(Object::Rule(Rule::new("a", "ip daddr @missing drop")));
        assert!(backend.apply(&bad).is_err());
        assert_eq!(backend.dump(&table()), before);
    }

    #[test]
    fn chains_and_sets_in_use_cannot_be_deleted() {
        let mut backend = FakeBackend::new();
        let mut setup = Transaction::new(table());
        setup
            .add(Object::Table)
            .add(Object::Chain(Chain::regular("target")))
            .add(Object::Chain(Chain::regular("dispatch")))
            .add(Object::Set(Set::new("addresses", "ipv4_addr")))
            .add(Object::Set(Set::map("by-interface", "ifname", "verdict")))
            .add(Object::Element(Element::mapping(
                "by-interface",
                "\"eth0\"",
                "goto target",
            )))
            .add(Object::Rule(Rule::new(
                "dispatch",
                "ip daddr @addresses jump target",
            )));
        backend.apply(&setup).unwrap();
        let mut delete_set = Transaction::new(table());
        delete_set.delete(Object::Set(Set::new("addresses", "ipv4_addr")));
        assert!(backend.apply(&delete_set).is_err());
        let mut delete_chain = Transaction::new(table());
        delete_chain
            .flush(Object::Chain(Chain::regular("dispatch")))
            .delete(Object::Chain(Chain::regular("target")));
        // Still referenced by the map element.
        assert!(backend.apply(&delete_chain).is_err());
        let mut clean = Transaction::new(table());
        clean
            .flush(Object::Chain(Chain::regular("dispatch")))
            .delete(Object::Element(Element::mapping(
                "by-interface",
                "\"eth0\"",
                "goto target",
            )))
            .delete(Object::Chain(Chain::regular("target")))
            .delete(Object::Set(Set::new("addresses", "ipv4_addr")));
        backend.apply(&clean).unwrap();
        assert_eq!(backend.counts(&table()), (0, 0));
    }

    #[test]
    fn add_is_idempotent_and_create_is_not() {
        let mut backend = FakeBackend::new();
        let mut transaction = Transaction::new(table());
        transaction
            .add(Object::Table)
            .add(Object::Set(Set::new("s", "ipv4_addr")))
            .add(Object::Set(Set::new("s", "ipv4_addr")));
        backend.apply(&transaction).unwrap();
        let mut create = Transaction::new(table());
        create.create(Object::Set(Set::new("s", "ipv4_addr")));
        assert!(backend.apply(&create).is_err());
        let mut retype = Transaction::new(table());
        retype.add(Object::Set(Set::new("s", "ipv6_addr")));
        assert!(backend.apply(&retype).is_err());
    }
}
