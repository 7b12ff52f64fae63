//! The selector syntax tree, its evaluation and its canonical printing.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

use crate::Labels;

/// A parsed selector expression.
///
/// Evaluation follows Calico's `libcalico-go/lib/selector/parser/ast.go`:
/// every comparison except `!=` and `not in` is false when the label is
/// absent; `!=` and `not in` are true when it is absent.
///
/// Trees held by a [`Selector`](crate::Selector) are normalised: `And` and
/// `Or` have at least two operands, an `And` never directly contains an
/// `And` (likewise `Or`), and `Not` never directly contains a `Not`.
/// Hand-built trees need not be, but then they print faithfully rather than
/// minimally.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expression {
    /// `all()`: matches everything.
    All,
    /// `global()`: matches everything here; the policy layer gives it its
    /// meaning (non-namespaced endpoints).
    Global,
    /// `has(key)`: the label is present (with any value).
    Has(String),
    /// `key == "value"`: present with exactly this value.
    Equal(String, String),
    /// `key != "value"`: absent, or present with another value.
    NotEqual(String, String),
    /// `key in {...}`: present with one of the values (never true for `{}`).
    In(String, BTreeSet<String>),
    /// `key not in {...}`: absent, or present with none of the values.
    NotIn(String, BTreeSet<String>),
    /// `key contains "value"`: present and the value contains the substring.
    Contains(String, String),
    /// `key starts with "value"`: present and the value has this prefix.
    StartsWith(String, String),
    /// `key ends with "value"`: present and the value has this suffix.
    EndsWith(String, String),
    /// `!expr`.
    Not(Box<Expression>),
    /// `a && b && ...`; an empty conjunction is true.
    And(Vec<Expression>),
    /// `a || b || ...`; an empty disjunction is false.
    Or(Vec<Expression>),
}

impl Expression {
    /// Evaluates the expression against a set of labels. Does not allocate.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Expression::All | Expression::Global => true,
            Expression::Has(key) => labels.label(key).is_some(),
            Expression::Equal(key, value) => labels.label(key) == Some(value.as_str()),
            Expression::NotEqual(key, value) => labels.label(key) != Some(value.as_str()),
            Expression::In(key, values) => labels.label(key).is_some_and(|v| values.contains(v)),
            Expression::NotIn(key, values) => !labels.label(key).is_some_and(|v| values.contains(v)),
            Expression::Contains(key, value) => labels.label(key).is_some_and(|v| v.contains(value.as_str())),
            Expression::StartsWith(key, value) => {
                labels.label(key).is_some_and(|v| v.starts_with(value.as_str()))
            }
            Expression::EndsWith(key, value) => {
                labels.label(key).is_some_and(|v| v.ends_with(value.as_str()))
            }
            Expression::Not(inner) => !inner.matches(labels),
            Expression::And(operands) => operands.iter().all(|e| e.matches(labels)),
            Expression::Or(operands) => operands.iter().any(|e| e.matches(labels)),
        }
    }

    /// Whether `global()` occurs anywhere in the expression.
    pub fn uses_global(&self) -> bool {
        match self {
            Expression::Global => true,
            Expression::Not(inner) => inner.uses_global(),
            Expression::And(operands) | Expression::Or(operands) => {
                operands.iter().any(Expression::uses_global)
            }
            _ => false,
        }
    }

    /// The label key this leaf tests, if it is a leaf that tests one.
    pub fn label_key(&self) -> Option<&str> {
        match self {
            Expression::Has(key)
            | Expression::Equal(key, _)
            | Expression::NotEqual(key, _)
            | Expression::In(key, _)
            | Expression::NotIn(key, _)
            | Expression::Contains(key, _)
            | Expression::StartsWith(key, _)
            | Expression::EndsWith(key, _) => Some(key),
            _ => None,
        }
    }

    /// Rebuilds the tree bottom-up, passing every leaf through `leaf` and
    /// re-normalising the result.
    pub(crate) fn map_leaves(&self, leaf: &mut impl FnMut(&Expression) -> Expression) -> Expression {
        match self {
            Expression::Not(inner) => negate(inner.map_leaves(leaf)),
            Expression::And(operands) => conjoin(operands.iter().map(|e| e.map_leaves(leaf)).collect()),
            Expression::Or(operands) => disjoin(operands.iter().map(|e| e.map_leaves(leaf)).collect()),
            other => leaf(other),
        }
    }

    /// Binding strength of the printed form: 0 for `||`, 1 for `&&`, 2 for
    /// `!`, 3 for an atom.
    fn precedence(&self) -> u8 {
        match self {
            Expression::Or(operands) if operands.len() >= 2 => 0,
            Expression::And(operands) if operands.len() >= 2 => 1,
            // Degenerate forms print as their only operand, `all()` or `!all()`.
            Expression::And(operands) | Expression::Or(operands) if operands.len() == 1 => {
                operands[0].precedence()
            }
            Expression::Or(_) => 2,
            Expression::And(_) => 3,
            Expression::Not(_) => 2,
            _ => 3,
        }
    }

    fn fmt_operand(&self, f: &mut fmt::Formatter<'_>, min_precedence: u8) -> fmt::Result {
        if self.precedence() < min_precedence {
            f.write_char('(')?;
            fmt::Display::fmt(self, f)?;
            f.write_char(')')
        } else {
            fmt::Display::fmt(self, f)
        }
    }
}

/// `!e`, cancelling a double negation.
pub(crate) fn negate(e: Expression) -> Expression {
    match e {
        Expression::Not(inner) => *inner,
        other => Expression::Not(Box::new(other)),
    }
}

/// `a && b && ...`, flattening nested conjunctions. Empty gives `all()`.
pub(crate) fn conjoin(operands: Vec<Expression>) -> Expression {
    let mut flat = Vec::with_capacity(operands.len());
    for e in operands {
        match e {
            Expression::And(inner) => flat.extend(inner),
            other => flat.push(other),
        }
    }
    match flat.len() {
        0 => Expression::All,
        1 => flat.pop().unwrap_or(Expression::All),
        _ => Expression::And(flat),
    }
}

/// `a || b || ...`, flattening nested disjunctions. Empty gives `!all()`.
pub(crate) fn disjoin(operands: Vec<Expression>) -> Expression {
    let mut flat = Vec::with_capacity(operands.len());
    for e in operands {
        match e {
            Expression::Or(inner) => flat.extend(inner),
            other => flat.push(other),
        }
    }
    match flat.len() {
        0 => negate(Expression::All),
        1 => flat.pop().unwrap_or(Expression::All),
        _ => Expression::Or(flat),
    }
}

/// Writes a string literal: double quotes unless the value contains one.
/// (As in Calico's `appendLabelOpAndQuotedString`.)
fn write_quoted(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    let quote = if value.contains('"') { '\'' } else { '"' };
    f.write_char(quote)?;
    f.write_str(value)?;
    f.write_char(quote)
}

fn write_set(f: &mut fmt::Formatter<'_>, values: &BTreeSet<String>) -> fmt::Result {
    f.write_char('{')?;
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_quoted(f, value)?;
    }
    f.write_char('}')
}

/// Prints the canonical form: minimal parentheses (`!` binds tightest, then
/// `&&`, then `||`), single spaces around binary operators, sorted sets.
impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (key, op, value) = match self {
            Expression::All => return f.write_str("all()"),
            Expression::Global => return f.write_str("global()"),
            Expression::Has(key) => return write!(f, "has({key})"),
            Expression::In(key, values) => {
                write!(f, "{key} in ")?;
                return write_set(f, values);
            }
            Expression::NotIn(key, values) => {
                write!(f, "{key} not in ")?;
                return write_set(f, values);
            }
            Expression::Not(inner) => {
                f.write_char('!')?;
                return inner.fmt_operand(f, 3);
            }
            Expression::And(operands) | Expression::Or(operands) => {
                let is_and = matches!(self, Expression::And(_));
                return match operands.as_slice() {
                    [] if is_and => f.write_str("all()"),
                    [] => f.write_str("!all()"),
                    [only] => fmt::Display::fmt(only, f),
                    [first, rest @ ..] => {
                        let (sep, min) = if is_and { (" && ", 2) } else { (" || ", 1) };
                        first.fmt_operand(f, min)?;
                        for operand in rest {
                            f.write_str(sep)?;
                            operand.fmt_operand(f, min)?;
                        }
                        Ok(())
                    }
                };
            }
            Expression::Equal(key, value) => (key, "==", value),
            Expression::NotEqual(key, value) => (key, "!=", value),
            Expression::Contains(key, value) => (key, "contains", value),
            Expression::StartsWith(key, value) => (key, "starts with", value),
            Expression::EndsWith(key, value) => (key, "ends with", value),
        };
        write!(f, "{key} {op} ")?;
        write_quoted(f, value)
    }
}
