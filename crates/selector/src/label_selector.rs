//! Lowering of Kubernetes `metav1.LabelSelector` to the selector AST.
//!
//! The shape follows Calico's `k8sSelectorToCalico` in
//! `libcalico-go/lib/backend/k8s/conversion/conversion.go`: `matchLabels`
//! in key order, then `matchExpressions` in the order given, all ANDed.

use std::collections::{BTreeMap, BTreeSet};

use crate::ast::{Expression, conjoin, negate};
use crate::lexer::{MAX_LABEL_LEN, is_valid_label};
use crate::{LabelSelectorError, Selector};

/// One entry of a Kubernetes `LabelSelector`'s `matchExpressions`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LabelSelectorRequirement {
    /// The label key the requirement applies to.
    pub key: String,
    /// How the label is tested.
    pub operator: LabelSelectorOperator,
    /// Values for `In`/`NotIn`; must be empty for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

/// A Kubernetes `LabelSelectorOperator`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LabelSelectorOperator {
    /// The label is present with one of the values.
    In,
    /// The label is absent, or present with none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelectorOperator {
    /// The operator as Kubernetes spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelSelectorOperator::In => "In",
            LabelSelectorOperator::NotIn => "NotIn",
            LabelSelectorOperator::Exists => "Exists",
            LabelSelectorOperator::DoesNotExist => "DoesNotExist",
        }
    }
}

fn error(key: &str, message: impl Into<String>) -> LabelSelectorError {
    LabelSelectorError {
        key: key.to_owned(),
        message: message.into(),
    }
}

fn check_key(key: &str) -> Result<(), LabelSelectorError> {
    if is_valid_label(key) {
        Ok(())
    } else {
        Err(error(
            key,
            format!(
                "not a valid label name (1 to {MAX_LABEL_LEN} characters from \
                 `A-Z a-z 0-9 _ . / -`)"
            ),
        ))
    }
}

/// Selector string literals have no escapes, so a value cannot contain both
/// quote characters.
fn check_value(key: &str, value: &str) -> Result<(), LabelSelectorError> {
    if value.contains('"') && value.contains('\'') {
        Err(error(
            key,
            format!("value {value:?} contains both `'` and `\"`, which a selector cannot express"),
        ))
    } else {
        Ok(())
    }
}

fn lower_requirement(req: &LabelSelectorRequirement) -> Result<Expression, LabelSelectorError> {
    let key = req.key.as_str();
    check_key(key)?;
    let op = req.operator.as_str();
    match req.operator {
        LabelSelectorOperator::In | LabelSelectorOperator::NotIn => {
            if req.values.is_empty() {
                return Err(error(key, format!("operator {op} requires at least one value")));
            }
            let mut values = BTreeSet::new();
            for value in &req.values {
                check_value(key, value)?;
                values.insert(value.clone());
            }
            Ok(if req.operator == LabelSelectorOperator::In {
                Expression::In(key.to_owned(), values)
            } else {
                Expression::NotIn(key.to_owned(), values)
            })
        }
        LabelSelectorOperator::Exists | LabelSelectorOperator::DoesNotExist => {
            if !req.values.is_empty() {
                return Err(error(key, format!("operator {op} must not have values")));
            }
            let has = Expression::Has(key.to_owned());
            Ok(if req.operator == LabelSelectorOperator::Exists {
                has
            } else {
                negate(has)
            })
        }
    }
}

pub(crate) fn lower(
    match_labels: &BTreeMap<String, String>,
    match_expressions: &[LabelSelectorRequirement],
) -> Result<Selector, LabelSelectorError> {
    let mut operands = Vec::with_capacity(match_labels.len() + match_expressions.len());
    for (key, value) in match_labels {
        check_key(key)?;
        check_value(key, value)?;
        operands.push(Expression::Equal(key.clone(), value.clone()));
    }
    for req in match_expressions {
        operands.push(lower_requirement(req)?);
    }
    Ok(Selector::from_normalised(conjoin(operands)))
}
