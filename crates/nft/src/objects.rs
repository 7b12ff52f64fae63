//! Typed nftables objects and the transaction that renders them.

use std::fmt::{self, Write as _};

/// An nftables address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Inet,
    Ip,
    Ip6,
}

impl fmt::Display for Family {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        })
    }
}

/// The table a transaction works in. Sluice owns exactly one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Table {
    pub family: Family,
    pub name: String,
}

impl Table {
    pub fn new(family: Family, name: impl Into<String>) -> Self {
        Table {
            family,
            name: name.into(),
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}", self.family, self.name)
    }
}

/// The hook of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// `filter`, `nat` or `route`.
    pub chain_type: String,
    /// `prerouting`, `input`, `forward`, `output`, `postrouting`.
    pub hook: String,
    pub priority: i32,
    /// `accept` or `drop`; `None` leaves nft's default (accept).
    pub policy: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub comment: Option<String>,
}

impl Chain {
    pub fn regular(name: impl Into<String>) -> Self {
        Chain {
            name: name.into(),
            base: None,
            comment: None,
        }
    }

    pub fn base(
        name: impl Into<String>,
        chain_type: &str,
        hook: &str,
        priority: i32,
        policy: Option<&str>,
    ) -> Self {
        Chain {
            name: name.into(),
            base: Some(BaseChain {
                chain_type: chain_type.to_string(),
                hook: hook.to_string(),
                priority,
                policy: policy.map(str::to_string),
            }),
            comment: None,
        }
    }
}

/// A rule: the chain it goes in and its statement text, e.g.
/// `ip saddr @allowed tcp dport 443 accept`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub rule: String,
    pub comment: Option<String>,
}

impl Rule {
    pub fn new(chain: impl Into<String>, rule: impl Into<String>) -> Self {
        Rule {
            chain: chain.into(),
            rule: rule.into(),
            comment: None,
        }
    }

    pub fn with_comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}

/// A named set (or, with `value_type`, a map) and its declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    /// The key type, e.g. `ipv4_addr`, `inet_service`, `ipv4_addr . inet_proto . inet_service`.
    pub key_type: String,
    /// For maps: the value type, e.g. `verdict`.
    pub value_type: Option<String>,
    /// e.g. `interval`, `constant`.
    pub flags: Vec<String>,
    pub comment: Option<String>,
}

impl Set {
    pub fn new(name: impl Into<String>, key_type: impl Into<String>) -> Self {
        Set {
            name: name.into(),
            key_type: key_type.into(),
            value_type: None,
            flags: Vec::new(),
            comment: None,
        }
    }

    pub fn interval(mut self) -> Self {
        self.flags.push("interval".to_string());
        self
    }

    pub fn map(name: impl Into<String>, key_type: impl Into<String>, value_type: impl Into<String>) -> Self {
        Set {
            value_type: Some(value_type.into()),
            ..Set::new(name, key_type)
        }
    }

    pub fn is_map(&self) -> bool {
        self.value_type.is_some()
    }

    fn keyword(&self) -> &'static str {
        if self.is_map() { "map" } else { "set" }
    }
}

/// An element of a set (`value` is `None`) or of a map.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Element {
    pub set: String,
    pub key: String,
    pub value: Option<String>,
}

impl Element {
    pub fn new(set: impl Into<String>, key: impl Into<String>) -> Self {
        Element {
            set: set.into(),
            key: key.into(),
            value: None,
        }
    }

    pub fn mapping(set: impl Into<String>, key: impl Into<String>, value: impl Into<String>) -> Self {
        Element {
            set: set.into(),
            key: key.into(),
            value: Some(value.into()),
        }
    }

    fn render(&self, verb: Verb) -> String {
        match &self.value {
            // Map elements are deleted by key alone.
            Some(value) if verb != Verb::Delete => format!("{} : {value}", self.key),
            _ => self.key.clone(),
        }
    }
}

/// Any object a transaction can add, flush or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Table,
    Chain(Chain),
    Rule(Rule),
    Set(Set),
    Element(Element),
}

/// What to do with an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Create if absent (no error if present).
    Add,
    /// Create; an error if it exists.
    Create,
    /// Empty a table, chain, set or map.
    Flush,
    /// Remove; an error if absent.
    Delete,
}

impl fmt::Display for Verb {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Verb::Add => "add",
            Verb::Create => "create",
            Verb::Flush => "flush",
            Verb::Delete => "delete",
        })
    }
}

/// Operations on one table, applied atomically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub table: Table,
    pub operations: Vec<(Verb, Object)>,
}

impl Transaction {
    pub fn new(table: Table) -> Self {
        Transaction {
            table,
            operations: Vec::new(),
        }
    }

    pub fn add(&mut self, object: Object) -> &mut Self {
        self.operations.push((Verb::Add, object));
        self
    }

    pub fn create(&mut self, object: Object) -> &mut Self {
        self.operations.push((Verb::Create, object));
        self
    }

    pub fn flush(&mut self, object: Object) -> &mut Self {
        self.operations.push((Verb::Flush, object));
        self
    }

    pub fn delete(&mut self, object: Object) -> &mut Self {
        self.operations.push((Verb::Delete, object));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// The transaction as an `nft -f` script. Elements of one set that follow each other are
    /// written as one statement, which keeps large sets fast to load.
    pub fn render(&self) -> String {
        let table = &self.table;
        let mut text = String::new();
        let mut index = 0;
        while index < self.operations.len() {
            let (verb, object) = &self.operations[index];
            match object {
                Object::Table => {
                    let _ = writeln!(text, "{verb} table {table}");
                }
                Object::Chain(chain) => match (verb, &chain.base) {
                    (Verb::Add | Verb::Create, base) => {
                        let mut body = Vec::new();
                        if let Some(base) = base {
                            let mut declaration = format!(
                                "type {} hook {} priority {} ;",
                                base.chain_type, base.hook, base.priority
                            );
                            if let Some(policy) = &base.policy {
                                declaration.push_str(&format!(" policy {policy} ;"));
                            }
                            body.push(declaration);
                        }
                        if let Some(comment) = &chain.comment {
                            body.push(format!("comment {} ;", quote(comment)));
                        }
                        if body.is_empty() {
                            let _ = writeln!(text, "{verb} chain {table} {}", chain.name);
                        } else {
                            let _ = writeln!(
                                text,
                                "{verb} chain {table} {} {{ {} }}",
                                chain.name,
                                body.join(" ")
                            );
                        }
                    }
                    _ => {
                        let _ = writeln!(text, "{verb} chain {table} {}", chain.name);
                    }
                },
                Object::Rule(rule) => {
                    let comment = rule
                        .comment
                        .as_ref()
                        .map(|comment| format!(" comment {}", quote(comment)))
                        .unwrap_or_default();
                    let _ = writeln!(text, "{verb} rule {table} {} {}{comment}", rule.chain, rule.rule);
                }
                Object::Set(set) => match verb {
                    Verb::Add | Verb::Create => {
                        let mut body = format!("type {}", set.key_type);
                        if let Some(value) = &set.value_type {
                            body.push_str(&format!(" : {value}"));
                        }
                        body.push_str(" ;");
                        if !set.flags.is_empty() {
                            body.push_str(&format!(" flags {} ;", set.flags.join(",")));
                        }
                        if let Some(comment) = &set.comment {
                            body.push_str(&format!(" comment {} ;", quote(comment)));
                        }
                        let _ = writeln!(text, "{verb} {} {table} {} {{ {body} }}", set.keyword(), set.name);
                    }
                    _ => {
                        let _ = writeln!(text, "{verb} {} {table} {}", set.keyword(), set.name);
                    }
                },
                Object::Element(first) => {
                    // Gather the run of elements with the same verb and set.
                    let mut keys = vec![first.render(*verb)];
                    while let Some((next_verb, Object::Element(next))) = self.operations.get(index + 1) {
                        if next_verb != verb || next.set != first.set {
                            break;
                        }
                        keys.push(next.render(*verb));
                        index += 1;
                    }
                    let _ = writeln!(
                        text,
                        "{verb} element {table} {} {{ {} }}",
                        first.set,
                        keys.join(", ")
                    );
                }
            }
            index += 1;
        }
        text
    }
}

/// nft strings are double-quoted and cannot contain a double quote.
fn quote(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_kind_of_object() {
        let mut transaction = Transaction::new(Table::new(Family::Inet, "sluice"));
        transaction
            .add(Object::Table)
            .add(Object::Chain(Chain::base(
                "forward",
                "filter",
                "forward",
                0,
                Some("accept"),
            )))
            .add(Object::Chain(Chain::regular("endpoint-egress")))
            .flush(Object::Chain(Chain::regular("endpoint-egress")))
            .add(Object::Set(Set::new("partners", "ipv4_addr").interval()))
            .add(Object::Set(Set::map("dispatch", "ifname", "verdict")))
            .add(Object::Element(Element::new("partners", "203.0.113.0/24")))
            .add(Object::Element(Element::new("partners", "198.51.100.0/25")))
            .add(Object::Element(Element::mapping(
                "dispatch",
                "\"veth1\"",
                "goto endpoint-egress",
            )))
            .add(Object::Rule(Rule::new("forward", "iifname vmap @dispatch")))
            .add(Object::Rule(
                Rule::new("endpoint-egress", "ip daddr @partners tcp dport 443 accept")
                    .with_comment("policy \"x\" rule 0"),
            ))
            .delete(Object::Set(Set::new("old", "ipv4_addr")));
        assert_eq!(
            transaction.render(),
            "add table inet sluice\n\
             add chain inet sluice forward { type filter hook forward priority 0 ; policy accept ; }\n\
             add chain inet sluice endpoint-egress\n\
             flush chain inet sluice endpoint-egress\n\
             add set inet sluice partners { type ipv4_addr ; flags interval ; }\n\
             add map inet sluice dispatch { type ifname : verdict ; }\n\
             add element inet sluice partners { 203.0.113.0/24, 198.51.100.0/25 }\n\
             add element inet sluice dispatch { \"veth1\" : goto endpoint-egress }\n\
             add rule inet sluice forward iifname vmap @dispatch\n\
             add rule inet sluice endpoint-egress ip daddr @partners tcp dport 443 accept comment \"policy 'x' rule 0\"\n\
             delete set inet sluice old\n"
        );
    }
}
