//! Lowering of Kubernetes `metav1.LabelSelector` into the selector AST.
//!
//! The shape (matchLabels in key order, then matchExpressions in order, all
//! ANDed; DoesNotExist as `!has(k)`) follows Calico's `k8sSelectorToCalico`
//! in `libcalico-go/lib/backend/k8s/conversion/conversion.go`.

use std::collections::BTreeMap;

use sluice_selector::{LabelSelectorError, LabelSelectorOperator as Op, LabelSelectorRequirement, Selector};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn req(key: &str, operator: Op, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_owned(),
        operator,
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    }
}

fn lower(labels: &[(&str, &str)], exprs: &[LabelSelectorRequirement]) -> Selector {
    let selector = Selector::from_label_selector(&map(labels), exprs).expect("valid selector");
    // Whatever is lowered must round-trip through its canonical text.
    assert_eq!(Selector::parse(&selector.canonical()), Ok(selector.clone()));
    selector
}

fn lower_err(labels: &[(&str, &str)], exprs: &[LabelSelectorRequirement]) -> LabelSelectorError {
    Selector::from_label_selector(&map(labels), exprs).expect_err("invalid selector")
}

#[test]
fn empty_selects_everything() {
    let selector = lower(&[], &[]);
    assert!(selector.is_all());
    assert!(selector.matches(&map(&[])));
}

#[test]
fn match_labels_are_equalities_in_key_order() {
    let selector = lower(&[("tier", "web"), ("app", "shop")], &[]);
    assert_eq!(selector.canonical(), r#"app == "shop" && tier == "web""#);
    assert!(selector.matches(&map(&[("app", "shop"), ("tier", "web"), ("x", "y")])));
    assert!(!selector.matches(&map(&[("app", "shop")])));
    let single = lower(&[("app.kubernetes.io/name", "")], &[]);
    assert_eq!(single.canonical(), r#"app.kubernetes.io/name == """#);
    assert!(single.matches(&map(&[("app.kubernetes.io/name", "")])));
    assert!(!single.matches(&map(&[])));
}

#[test]
fn operators() {
    let cases = [
        (
            req("env", Op::In, &["prod", "dev", "prod"]),
            r#"env in {"dev", "prod"}"#,
        ),
        (req("env", Op::NotIn, &["prod"]), r#"env not in {"prod"}"#),
        (req("env", Op::Exists, &[]), "has(env)"),
        (req("env", Op::DoesNotExist, &[]), "!has(env)"),
    ];
    for (requirement, expected) in cases {
        assert_eq!(lower(&[], &[requirement]).canonical(), expected);
    }
}

#[test]
fn semantics_match_kubernetes() {
    let none = map(&[]);
    let prod = map(&[("env", "prod")]);
    let dev = map(&[("env", "dev")]);
    let in_prod = lower(&[], &[req("env", Op::In, &["prod"])]);
    assert!(in_prod.matches(&prod) && !in_prod.matches(&dev) && !in_prod.matches(&none));
    // NotIn is true when the label is absent, as in Kubernetes.
    let not_prod = lower(&[], &[req("env", Op::NotIn, &["prod"])]);
    assert!(!not_prod.matches(&prod) && not_prod.matches(&dev) && not_prod.matches(&none));
    let exists = lower(&[], &[req("env", Op::Exists, &[])]);
    assert!(exists.matches(&prod) && !exists.matches(&none));
    let absent = lower(&[], &[req("env", Op::DoesNotExist, &[])]);
    assert!(!absent.matches(&prod) && absent.matches(&none));
}

#[test]
fn match_labels_come_first_then_expressions_in_order() {
    let selector = lower(
        &[("b", "2"), ("a", "1")],
        &[
            req("z", Op::Exists, &[]),
            req("c", Op::NotIn, &["x"]),
            req("y", Op::DoesNotExist, &[]),
        ],
    );
    assert_eq!(
        selector.canonical(),
        r#"a == "1" && b == "2" && has(z) && c not in {"x"} && !has(y)"#
    );
    assert!(selector.matches(&map(&[("a", "1"), ("b", "2"), ("z", "")])));
    assert!(!selector.matches(&map(&[("a", "1"), ("b", "2"), ("z", ""), ("y", "")])));
}

#[test]
fn quotes_in_values() {
    let selector = lower(&[("a", "it's")], &[req("b", Op::In, &["say \"hi\""])]);
    assert_eq!(selector.canonical(), r#"a == "it's" && b in {'say "hi"'}"#);
}

#[test]
fn errors() {
    let cases = [
        (
            lower_err(&[], &[req("env", Op::In, &[])]),
            "env",
            "operator In requires at least one value",
        ),
        (
            lower_err(&[], &[req("env", Op::NotIn, &[])]),
            "env",
            "operator NotIn requires at least one value",
        ),
        (
            lower_err(&[], &[req("env", Op::Exists, &["x"])]),
            "env",
            "operator Exists must not have values",
        ),
        (
            lower_err(&[], &[req("env", Op::DoesNotExist, &["x"])]),
            "env",
            "operator DoesNotExist must not have values",
        ),
    ];
    for (error, key, message) in cases {
        assert_eq!(error.key, key);
        assert_eq!(error.message, message);
        assert!(error.to_string().contains(key) && error.to_string().contains(message));
    }
    for bad_key in ["", "has space", "a:b", "é", &"k".repeat(513)] {
        assert_eq!(lower_err(&[(bad_key, "v")], &[]).key, bad_key);
        assert_eq!(lower_err(&[], &[req(bad_key, Op::Exists, &[])]).key, bad_key);
    }
    let both_quotes = lower_err(&[("a", "'\"")], &[]);
    assert_eq!(both_quotes.key, "a");
    assert!(both_quotes.message.contains("both"));
    assert_eq!(lower_err(&[], &[req("b", Op::In, &["ok", "'\""])]).key, "b");
    // The first problem is reported even when later parts are valid.
    assert_eq!(
        lower_err(&[("ok", "v")], &[req("x", Op::In, &[]), req("y", Op::In, &[])]).key,
        "x"
    );
}

#[test]
fn operator_names() {
    assert_eq!(Op::In.as_str(), "In");
    assert_eq!(Op::NotIn.as_str(), "NotIn");
    assert_eq!(Op::Exists.as_str(), "Exists");
    assert_eq!(Op::DoesNotExist.as_str(), "DoesNotExist");
}
