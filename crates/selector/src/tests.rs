//! Property tests over random syntax trees (they need the crate-private
//! normalising constructors, so they live inside the crate).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use proptest::prelude::*;

use crate::ast::{Expression, conjoin, disjoin, negate};
use crate::{Selector, parser};

/// Label keys: ordinary ones plus words that are keywords elsewhere.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9_./-]{1,10}",
        1 => prop::sample::select(vec![
            "in", "not", "has", "all", "global", "contains", "starts", "with", "ends",
            "startswith", "notin", "-", "/", ".", "a", "b",
        ])
        .prop_map(str::to_owned),
    ]
}

/// Values: anything (including newlines and unicode) that does not contain
/// both quote characters.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\"]{0,8}",
        "[^']{0,8}",
        prop::sample::select(vec!["", "a", "b", "'", "\"", " ", "a'b", "x\"y"]).prop_map(str::to_owned),
    ]
}

fn leaf() -> impl Strategy<Value = Expression> {
    prop_oneof![
        Just(Expression::All),
        Just(Expression::Global),
        key().prop_map(Expression::Has),
        (key(), value()).prop_map(|(k, v)| Expression::Equal(k, v)),
        (key(), value()).prop_map(|(k, v)| Expression::NotEqual(k, v)),
        (key(), prop::collection::btree_set(value(), 0..4)).prop_map(|(k, v)| Expression::In(k, v)),
        (key(), prop::collection::btree_set(value(), 0..4)).prop_map(|(k, v)| Expression::NotIn(k, v)),
        (key(), value()).prop_map(|(k, v)| Expression::Contains(k, v)),
        (key(), value()).prop_map(|(k, v)| Expression::StartsWith(k, v)),
        (key(), value()).prop_map(|(k, v)| Expression::EndsWith(k, v)),
    ]
}

/// Arbitrary trees, not necessarily normalised (no empty `And`/`Or`).
fn raw_tree() -> impl Strategy<Value = Expression> {
    leaf().prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expression::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 1..4).prop_map(Expression::And),
            prop::collection::vec(inner, 1..4).prop_map(Expression::Or),
        ]
    })
}

fn normalise(e: &Expression) -> Expression {
    e.map_leaves(&mut Expression::clone)
}

fn selector() -> impl Strategy<Value = Selector> {
    raw_tree().prop_map(|e| Selector::from_normalised(normalise(&e)))
}

/// Labels drawn from a small universe so that matches are common.
fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop::sample::select(vec!["a", "b", "in", "has", "x/y"]).prop_map(str::to_owned),
        prop::sample::select(vec!["", "a", "b", "'", "\"", "ab", "ba"]).prop_map(str::to_owned),
        0..4,
    )
}

/// Prints `e` in a deliberately non-canonical but equivalent way, driven by
/// `noise`: random blanks, redundant parentheses and double negations,
/// alternative quoting, `startswith`/`notin` spellings, shuffled and
/// duplicated set members with trailing commas.
struct Noisy<'a> {
    noise: &'a [u8],
    at: usize,
    out: String,
}

impl Noisy<'_> {
    fn pick(&mut self, n: u8) -> u8 {
        let b = if self.noise.is_empty() {
            0
        } else {
            self.noise[self.at % self.noise.len()]
        };
        self.at += 1;
        b % n
    }

    fn blank(&mut self) {
        for _ in 0..self.pick(3) {
            let c = if self.pick(2) == 0 { ' ' } else { '\t' };
            self.out.push(c);
        }
    }

    /// A blank that must be at least one character (between words).
    fn gap(&mut self) {
        self.out.push(' ');
        self.blank();
    }

    fn quoted(&mut self, v: &str) {
        let q = if v.contains('"') {
            '\''
        } else if v.contains('\'') || self.pick(2) == 0 {
            '"'
        } else {
            '\''
        };
        let _ = write!(self.out, "{q}{v}{q}");
    }

    fn op(&mut self, k: &str, spellings: &[&str], v: &str) {
        self.out.push_str(k);
        self.gap();
        let i = self.pick(spellings.len() as u8) as usize;
        self.out.push_str(spellings[i]);
        self.blank();
        self.quoted(v);
    }

    fn set(&mut self, k: &str, spellings: &[&str], vs: &BTreeSet<String>) {
        self.out.push_str(k);
        self.gap();
        let i = self.pick(spellings.len() as u8) as usize;
        self.out.push_str(spellings[i]);
        self.blank();
        self.out.push('{');
        let mut items: Vec<&String> = vs.iter().rev().collect();
        if let Some(first) = items.first().copied() {
            if self.pick(2) == 0 {
                items.push(first);
            }
        }
        for (i, v) in items.iter().enumerate() {
            self.blank();
            if i > 0 {
                self.out.push(',');
                self.blank();
            }
            self.quoted(v);
        }
        if !items.is_empty() && self.pick(2) == 0 {
            self.out.push(',');
        }
        self.blank();
        self.out.push('}');
    }

    /// Always wraps composite operands in parentheses, which is valid
    /// regardless of precedence.
    fn expr(&mut self, e: &Expression) {
        self.blank();
        if self.pick(4) == 0 {
            self.out.push_str("!!");
            self.blank();
        }
        let wrap = self.pick(5) == 0;
        if wrap {
            self.out.push('(');
            self.blank();
        }
        match e {
            Expression::All => {
                self.out.push_str("all(");
                self.blank();
                self.out.push(')');
            }
            Expression::Global => {
                self.out.push_str("global(");
                self.blank();
                self.out.push(')');
            }
            Expression::Has(k) => {
                self.out.push_str("has(");
                self.blank();
                self.out.push_str(k);
                self.blank();
                self.out.push(')');
            }
            Expression::Equal(k, v) => self.op(k, &["=="], v),
            Expression::NotEqual(k, v) => self.op(k, &["!="], v),
            Expression::Contains(k, v) => self.op(k, &["contains"], v),
            Expression::StartsWith(k, v) => self.op(k, &["starts with", "startswith", "starts \t with"], v),
            Expression::EndsWith(k, v) => self.op(k, &["ends with", "endswith"], v),
            Expression::In(k, vs) => self.set(k, &["in"], vs),
            Expression::NotIn(k, vs) => self.set(k, &["not in", "notin", "not  in"], vs),
            Expression::Not(inner) => {
                self.out.push('!');
                self.out.push('(');
                self.expr(inner);
                self.out.push(')');
            }
            Expression::And(operands) | Expression::Or(operands) => {
                let sep = if matches!(e, Expression::And(_)) {
                    "&&"
                } else {
                    "||"
                };
                for (i, operand) in operands.iter().enumerate() {
                    if i > 0 {
                        self.blank();
                        self.out.push_str(sep);
                    }
                    self.out.push('(');
                    self.expr(operand);
                    self.out.push(')');
                }
            }
        }
        if wrap {
            self.blank();
            self.out.push(')');
        }
        self.blank();
    }
}

fn noisy(e: &Expression, noise: &[u8]) -> String {
    let mut printer = Noisy {
        noise,
        at: 0,
        out: String::new(),
    };
    printer.expr(e);
    printer.out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn canonical_roundtrips(sel in selector()) {
        let text = sel.canonical();
        let reparsed = Selector::parse(&text);
        prop_assert_eq!(reparsed.as_ref(), Ok(&sel), "canonical text: {}", text);
        prop_assert_eq!(reparsed.unwrap().canonical(), text);
    }

    #[test]
    fn noisy_text_parses_to_same_tree(sel in selector(), noise in prop::collection::vec(any::<u8>(), 1..64)) {
        let text = noisy(sel.expression(), &noise);
        prop_assert_eq!(Selector::parse(&text), Ok(sel), "noisy text: {:?}", text);
    }

    #[test]
    fn normalisation_preserves_meaning(raw in raw_tree(), labels in labels()) {
        let normal = normalise(&raw);
        prop_assert_eq!(raw.matches(&labels), normal.matches(&labels));
        // Normalising is idempotent.
        prop_assert_eq!(normalise(&normal), normal.clone());
        // Hand-built trees print faithfully, so they re-parse to the normal form.
        prop_assert_eq!(parser::parse(&raw.to_string()), Ok(normal));
    }

    #[test]
    fn and_is_conjunction(a in selector(), b in selector(), labels in labels()) {
        let both = a.and(&b);
        prop_assert_eq!(both.matches(&labels), a.matches(&labels) && b.matches(&labels));
        prop_assert_eq!(Selector::parse(&both.canonical()), Ok(both.clone()));
        prop_assert_eq!(Selector::all().and(&a), a.clone());
        prop_assert_eq!(a.and(&Selector::all()), a);
    }

    #[test]
    fn prefixing_keys_is_renaming_labels(sel in selector(), labels in labels()) {
        let prefixed = sel.with_label_prefix("pcns.");
        let renamed: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (format!("pcns.{k}"), v.clone())).collect();
        prop_assert_eq!(prefixed.matches(&renamed), sel.matches(&labels));
        prop_assert_eq!(Selector::parse(&prefixed.canonical()), Ok(prefixed));
    }

    #[test]
    fn replacing_all_and_global(sel in selector(), r_all in selector(), r_global in selector(), labels in labels()) {
        let replaced = sel.replace_all_and_global(&r_all, &r_global);
        prop_assert_eq!(Selector::parse(&replaced.canonical()), Ok(replaced.clone()));
        if !r_all.uses_global() && !r_global.uses_global() {
            prop_assert!(!replaced.uses_global());
        }
        // Substituting constants for all()/global() commutes with evaluation.
        let t = Selector::all();
        let f = Selector::parse("!all()").unwrap();
        let all_value = if r_all.matches(&labels) { &t } else { &f };
        let global_value = if r_global.matches(&labels) { &t } else { &f };
        let expected = sel.replace_all_and_global(all_value, global_value).matches(&labels);
        prop_assert_eq!(replaced.matches(&labels), expected);
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        if let Ok(sel) = Selector::parse(&text) {
            prop_assert_eq!(Selector::parse(&sel.canonical()), Ok(sel));
        }
    }

    #[test]
    fn selector_like_strings_never_panic(
        parts in prop::collection::vec(
            prop::sample::select(vec![
                "a", "b/c", "==", "!=", "!", "=", "&&", "||", "&", "|", "(", ")", "{", "}", ",",
                "'x'", "\"y\"", "'", "\"", " ", "\t", "\n", "in", "not", "not in", "contains",
                "starts", "with", "ends with", "has(", "has(a)", "all()", "all(", "global()", "é",
            ]),
            0..16,
        )
    ) {
        let text = parts.concat();
        match Selector::parse(&text) {
            Ok(sel) => prop_assert_eq!(Selector::parse(&sel.canonical()), Ok(sel)),
            Err(err) => {
                prop_assert!(err.position <= text.chars().count());
                let _ = err.render(&text);
            }
        }
    }
}

#[test]
fn constructors_normalise() {
    let a = || Expression::Has("a".into());
    let b = || Expression::Has("b".into());
    assert_eq!(negate(negate(a())), a());
    assert_eq!(
        conjoin(vec![a(), Expression::And(vec![b(), a()])]),
        Expression::And(vec![a(), b(), a()])
    );
    assert_eq!(
        disjoin(vec![Expression::Or(vec![a(), b()]), b()]),
        Expression::Or(vec![a(), b(), b()])
    );
    assert_eq!(conjoin(vec![]), Expression::All);
    assert_eq!(disjoin(vec![a()]), a());
    assert_eq!(disjoin(vec![]), Expression::Not(Box::new(Expression::All)));
}

#[test]
fn degenerate_hand_built_trees_print_faithfully() {
    let a = Expression::Has("a".into());
    assert_eq!(Expression::And(vec![]).to_string(), "all()");
    assert_eq!(Expression::Or(vec![]).to_string(), "!all()");
    assert_eq!(Expression::And(vec![a.clone()]).to_string(), "has(a)");
    assert_eq!(
        Expression::Not(Box::new(Expression::Not(Box::new(a.clone())))).to_string(),
        "!(!has(a))"
    );
    assert_eq!(
        Expression::And(vec![Expression::And(vec![a.clone(), a.clone()]), a.clone()]).to_string(),
        "(has(a) && has(a)) && has(a)"
    );
    assert_eq!(
        Expression::Not(Box::new(Expression::Or(vec![a.clone()]))).to_string(),
        "!has(a)"
    );
    assert!(!Expression::Or(vec![]).matches(&BTreeMap::new()));
    assert!(Expression::And(vec![]).matches(&BTreeMap::new()));
}
