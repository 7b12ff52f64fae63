//! Calico's label selector language for Sluice.
//!
//! This crate owns the language and nothing else: parsing selector strings
//! exactly as Calico does (`libcalico-go/lib/selector`), evaluating them
//! against a set of labels, printing a canonical form that is stable enough
//! to serve as a set identity, a few AST rewrites the policy layer needs
//! (label prefixes, giving `all()`/`global()` a meaning, conjunction), and
//! lowering Kubernetes `LabelSelector`s into the same AST. It is pure: no
//! I/O, no global state, no logging, no clocks. It must never know about
//! policies, namespaces, endpoints or the Kubernetes API, and evaluation
//! must stay allocation-free because it runs once per (policy, pod) pair.
//!
//! ```
//! use std::collections::BTreeMap;
//! use sluice_selector::Selector;
//!
//! let sel: Selector = "app == 'web' && tier not in {'db'}".parse().unwrap();
//! let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
//! assert!(sel.matches(&labels));
//! assert_eq!(sel.canonical(), r#"app == "web" && tier not in {"db"}"#);
//! ```
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;

mod ast;
mod error;
mod label_selector;
mod lexer;
mod parser;

#[cfg(test)]
mod tests;

pub use ast::Expression;
pub use error::{LabelSelectorError, ParseError};
pub use label_selector::{LabelSelectorOperator, LabelSelectorRequirement};

/// Read access to a set of labels (key → value).
pub trait Labels {
    /// The value of label `key`, or `None` if it is absent.
    fn label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<S: BuildHasher> Labels for HashMap<String, String, S> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<T: Labels + ?Sized> Labels for &T {
    fn label(&self, key: &str) -> Option<&str> {
        (**self).label(key)
    }
}

/// A parsed, normalised label selector.
///
/// Equality, ordering and hashing are structural on the normalised tree, so
/// two selectors are equal exactly when their [canonical](Selector::canonical)
/// forms are equal, and `Selector::parse(&s.canonical()) == Ok(s)` holds for
/// every selector built by this crate (given valid prefixes for
/// [`with_label_prefix`](Selector::with_label_prefix)).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    /// Boxed: a selector is a field of every policy rule, mostly unset, and the box keeps an
    /// `Option<Selector>` one pointer wide.
    root: Box<Expression>,
}

impl Selector {
    /// Wraps a tree that already satisfies the normalisation invariants.
    pub(crate) fn from_normalised(root: Expression) -> Selector {
        Selector { root: Box::new(root) }
    }

    /// Parses a selector. The empty (or blank: spaces and tabs only)
    /// string means `all()`.
    ///
    /// Note that, as in Calico, only space and tab are whitespace: a newline
    /// anywhere outside a string literal is an error.
    pub fn parse(text: &str) -> Result<Selector, ParseError> {
        parser::parse(text).map(Selector::from_normalised)
    }

    /// The selector that matches everything.
    pub fn all() -> Selector {
        Selector::from_normalised(Expression::All)
    }

    /// Whether the selector matches `labels`. Does not allocate.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.root.matches(labels)
    }

    /// The canonical text: sorted, de-duplicated sets; `"` quotes unless the
    /// value contains `"`; minimal parentheses; flattened `&&`/`||` chains.
    /// Operand order is kept. [`Display`](fmt::Display) prints the same.
    pub fn canonical(&self) -> String {
        self.root.to_string()
    }

    /// The (normalised) syntax tree.
    pub fn expression(&self) -> &Expression {
        &self.root
    }

    /// `self && other`, flattened; `all()` is the identity on either side.
    pub fn and(&self, other: &Selector) -> Selector {
        if self.is_all() {
            return other.clone();
        }
        if other.is_all() {
            return self.clone();
        }
        Selector::from_normalised(ast::conjoin(vec![(*self.root).clone(), (*other.root).clone()]))
    }

    /// `key == "value"`, built as a tree so that any value works, also one holding both `'`
    /// and `"`, which the selector language cannot quote (its canonical text then does not
    /// parse back, but it evaluates correctly).
    pub fn equal(key: &str, value: &str) -> Selector {
        Selector::from_normalised(Expression::Equal(key.to_string(), value.to_string()))
    }

    /// `has(key)`.
    pub fn has(key: &str) -> Selector {
        Selector::from_normalised(Expression::Has(key.to_string()))
    }

    /// `key in {values}`, built as a tree (any values, as for [`Selector::equal`]).
    pub fn in_set<'a>(key: &str, values: impl IntoIterator<Item = &'a str>) -> Selector {
        let values = values.into_iter().map(str::to_string).collect();
        Selector::from_normalised(Expression::In(key.to_string(), values))
    }

    /// `!self`, cancelling a double negation as parsing `!(self)` would.
    pub fn negated(&self) -> Selector {
        Selector::from_normalised(ast::negate((*self.root).clone()))
    }

    /// Whether this is exactly `all()` (also the result of parsing "").
    pub fn is_all(&self) -> bool {
        *self.root == Expression::All
    }

    /// Whether `global()` occurs anywhere in the selector.
    pub fn uses_global(&self) -> bool {
        self.root.uses_global()
    }

    /// Rewrites every label key `k` to `prefix + k` (Calico's trick for
    /// evaluating namespace selectors against `pcns.`-prefixed labels).
    ///
    /// `prefix` should consist of label-name characters
    /// (`A-Z a-z 0-9 _ . / -`), and prefixed keys should stay within 512
    /// characters; otherwise the result still evaluates correctly but its
    /// canonical form will not parse back. Debug builds assert that the
    /// prefix has only label-name characters.
    pub fn with_label_prefix(&self, prefix: &str) -> Selector {
        debug_assert!(
            prefix.bytes().all(lexer::is_label_byte),
            "label prefix {prefix:?} contains characters not allowed in a label name"
        );
        let prefixed = |key: &String| format!("{prefix}{key}");
        let root = self.root.map_leaves(&mut |leaf| match leaf {
            Expression::Has(k) => Expression::Has(prefixed(k)),
            Expression::Equal(k, v) => Expression::Equal(prefixed(k), v.clone()),
            Expression::NotEqual(k, v) => Expression::NotEqual(prefixed(k), v.clone()),
            Expression::In(k, vs) => Expression::In(prefixed(k), vs.clone()),
            Expression::NotIn(k, vs) => Expression::NotIn(prefixed(k), vs.clone()),
            Expression::Contains(k, v) => Expression::Contains(prefixed(k), v.clone()),
            Expression::StartsWith(k, v) => Expression::StartsWith(prefixed(k), v.clone()),
            Expression::EndsWith(k, v) => Expression::EndsWith(prefixed(k), v.clone()),
            other => other.clone(),
        });
        Selector::from_normalised(root)
    }

    /// Replaces every `all()` with `replacement_for_all` and every
    /// `global()` with `replacement_for_global`, re-normalising the result
    /// (nested chains are flattened, double negations cancel).
    pub fn replace_all_and_global(
        &self,
        replacement_for_all: &Selector,
        replacement_for_global: &Selector,
    ) -> Selector {
        let root = self.root.map_leaves(&mut |leaf| match leaf {
            Expression::All => (*replacement_for_all.root).clone(),
            Expression::Global => (*replacement_for_global.root).clone(),
            other => other.clone(),
        });
        Selector::from_normalised(root)
    }

    /// Lowers a Kubernetes `metav1.LabelSelector`: `matchLabels` `k: v`
    /// becomes `k == "v"` (in key order), then each requirement in order:
    /// `In` → `k in {..}`, `NotIn` → `k not in {..}` (true when the label
    /// is absent, as in Kubernetes), `Exists` → `has(k)`, `DoesNotExist` →
    /// `!has(k)`; all ANDed. An empty selector gives `all()`.
    ///
    /// Errors: `In`/`NotIn` without values, `Exists`/`DoesNotExist` with
    /// values, keys that are not valid label names, and values containing
    /// both `'` and `"` (which the selector language cannot quote).
    pub fn from_label_selector(
        match_labels: &BTreeMap<String, String>,
        match_expressions: &[LabelSelectorRequirement],
    ) -> Result<Selector, LabelSelectorError> {
        label_selector::lower(match_labels, match_expressions)
    }
}

impl Default for Selector {
    /// `all()`, like the empty selector string.
    fn default() -> Selector {
        Selector::all()
    }
}

impl FromStr for Selector {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Selector, ParseError> {
        Selector::parse(text)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.root, f)
    }
}
