//! Behaviour of the selector language through the public API.
//!
//! References to Calico are to projectcalico/calico
//! `libcalico-go/lib/selector/...`.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasherDefault;

use sluice_selector::{Expression, Labels, ParseError, Selector};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn sel(text: &str) -> Selector {
    Selector::parse(text).unwrap_or_else(|e| panic!("{text:?} failed: {e}\n{}", e.render(text)))
}

fn err(text: &str) -> ParseError {
    match Selector::parse(text) {
        Ok(s) => panic!("{text:?} unexpectedly parsed as {s}"),
        Err(e) => e,
    }
}

fn canon(text: &str) -> String {
    sel(text).canonical()
}

fn set(values: &[&str]) -> BTreeSet<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn s(v: &str) -> String {
    v.to_owned()
}

/// Checks matches/non-matches, and that the canonical form behaves the same
/// and round-trips.
fn check(text: &str, matching: &[&[(&str, &str)]], not_matching: &[&[(&str, &str)]]) {
    let parsed = sel(text);
    let reparsed = sel(&parsed.canonical());
    assert_eq!(reparsed, parsed, "round trip of {text:?}");
    for m in matching {
        assert!(parsed.matches(&labels(m)), "{text:?} should match {m:?}");
    }
    for m in not_matching {
        assert!(!parsed.matches(&labels(m)), "{text:?} should not match {m:?}");
    }
}

// The `selectorTests` table of parser/parser_test.go.
#[test]
fn calico_selector_tests() {
    check(
        r#"a == "b""#,
        &[&[("a", "b")], &[("a", "b"), ("c", "d")]],
        &[&[], &[("a", "c")], &[("c", "d")]],
    );
    check(
        r#"a == "b" && c == "d""#,
        &[&[("a", "b"), ("c", "d")]],
        &[
            &[],
            &[("a", "b"), ("c", "e")],
            &[("a", "c"), ("c", "d")],
            &[("c", "d")],
            &[("a", "b")],
        ],
    );
    check(
        r#"a == "b" || c == "d""#,
        &[&[("a", "b"), ("c", "d")], &[("a", "b")], &[("c", "d")]],
        &[&[], &[("a", "e"), ("c", "e")], &[("c", "e")], &[("a", "e")]],
    );
    check(
        r#"a in {"'", '"', "c"}"#,
        &[&[("a", "c")], &[("a", "\"")], &[("a", "'")]],
        &[&[], &[("a", "e")]],
    );
    check(
        r#"a not in {"'", '"', "c"}"#,
        &[&[], &[("a", "e")]],
        &[&[("a", "c")], &[("a", "\"")], &[("a", "'")]],
    );
    check("a == 'a'", &[&[("a", "a")]], &[&[("a", "b")], &[]]);
    check(r#"a == "a""#, &[&[("a", "a")]], &[]);
    check(r#"a != "b""#, &[&[("a", "a")]], &[]);
    check(r#"a != "a""#, &[&[]], &[&[("a", "a")]]);
    check("a != 'a'", &[], &[&[("a", "a")]]);
    check(
        r#"a contains "a""#,
        &[&[("a", "a")], &[("a", "bab")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("b", "aaa")]],
    );
    check(
        r#"a starts with "a""#,
        &[&[("a", "a")], &[("a", "abb")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("a", "baa")], &[("b", "aaa")]],
    );
    check(
        r#"a ends with "a""#,
        &[&[("a", "a")], &[("a", "bba")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("a", "aab")], &[("b", "aaa")]],
    );
    check(r#"a in {"a"}"#, &[&[("a", "a")]], &[&[("a", "b")]]);
    check(r#"!a in {"a"}"#, &[&[("a", "b")]], &[]);
    check(
        r#"a in {"a", "b"}"#,
        &[&[("a", "a")], &[("a", "b")]],
        &[&[("a", "c")]],
    );
    check(r#"a not in {"d", "e"}"#, &[&[("a", "a")]], &[]);
    check(r#"a not in {"a"}"#, &[], &[&[("a", "a")]]);
    check("has(a)", &[&[("a", "b")]], &[]);
    check("has(b)", &[], &[&[("a", "b")]]);
    check("!has(a)", &[&[("b", "b")]], &[&[("a", "b")]]);
    for text in ["", " ", "all()", " all()", "global()", " global()"] {
        check(text, &[&[], &[("a", "b")]], &[]);
    }
    for text in [
        "!!has(b)",
        "! has(a)",
        "!!! has(a)",
        "!!!has(a)",
        "!! ! has(a)",
        "! !!has(a)",
    ] {
        check(text, &[], &[&[("a", "b")]]);
    }
    let ab = &[("a", "a1"), ("b", "b1")];
    check("a == 'a1' && b == 'b1'", &[ab], &[]);
    check("a == 'a1' && b != 'b1'", &[], &[ab]);
    check("a != 'a1' && b == 'b1'", &[], &[ab]);
    check("a != 'a1' && b != 'b1'", &[], &[ab]);
    check("a != 'a1' && !b == 'b1'", &[], &[ab]);
    check("!a == 'a1' && b == 'b1'", &[], &[ab]);
    check("has(a) && !has(b)", &[&[("a", "a")]], &[]);
    check("!has(b) && has(a)", &[&[("a", "a")]], &[]);
    check("!(!has(a) || has(b))", &[&[("a", "a")]], &[]);
    check("!(has(b) || !has(a))", &[&[("a", "a")]], &[]);
    check("a == 'a1' || b == 'b1'", &[ab], &[]);
    check("a == 'a1' || b != 'b1'", &[ab], &[]);
    check("a != 'a1' || b == 'b1'", &[ab], &[]);
    check("a != 'a1' || b != 'b1'", &[], &[ab]);
    check("! a == 'a1' || ! b == 'b1'", &[], &[ab]);
}

// The `badSelectors` table of parser/parser_test.go plus the error cases of
// tokenizer/tokenizer_test.go.
#[test]
fn calico_bad_selectors() {
    let long = "a".repeat(513);
    let too_long = format!("{long} == \"value\"");
    for text in [
        "b == b",
        "b contains b",
        "b starts with b",
        "b ends with b",
        "'b1' == b",
        "b",
        "a b",
        "!",
        r#"foo == "bar" &"#,
        r#"foo == "bar" |"#,
        "foo != ||",
        r#"foo in {"", ||"#,
        r#"foo in """#,
        r#""FOO"#,
        r#""FOO'"#,
        "'FOO",
        "(",
        r#"(a == "foo""#,
        ")",
        "()",
        "%",
        r#"a == "b" && %"#,
        r#"a == "b" || %"#,
        "a ",
        "has(foo) &&",
        &too_long,
        r#"label == "value"#,
        "label = \"value\"",
        "all(",
        "global(",
        "has()",
        "has(foo",
        "has( foo ",
        r#"a == "b" & has(foo)"#,
        r#"a == "b" | has(foo)"#,
        r#"label starts foo "value""#,
        r#"label inf "value""#,
        r#"label ends foo "value""#,
        r#"label ends withs "value""#,
        r#"label squiggles "value""#,
        r#"a not in "bar""#,
        "b in c",
    ] {
        assert!(Selector::parse(text).is_err(), "{text:?} should be rejected");
    }
}

// The `canonicalisationTests` table of parser/parser_test.go. Calico wraps
// every &&/|| chain in parentheses; our canonical form uses minimal ones, so
// the expected strings differ only there.
#[test]
fn calico_canonicalisation_tests() {
    for (input, expected) in [
        ("", "all()"),
        (" all() ", "all()"),
        (" (all() )", "all()"),
        ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
        (r#"! (a == "b"&&! c != "d")"#, r#"!(a == "b" && !c != "d")"#),
        (r#"a == "'""#, r#"a == "'""#),
        (r#"a == '"'"#, r#"a == '"'"#),
        (r#"a contains '"'"#, r#"a contains '"'"#),
        (r#"a contains "'""#, r#"a contains "'""#),
        (r#"a startswith '"'"#, r#"a starts with '"'"#),
        (r#"a endswith "'""#, r#"a ends with "'""#),
        (r#"a!='"'"#, r#"a != '"'"#),
        (r#"a in {"d"}"#, r#"a in {"d"}"#),
        (r#"a in {"a", "b"}"#, r#"a in {"a", "b"}"#),
        (r#"a in {"d", "a", "b"}"#, r#"a in {"a", "b", "d"}"#),
        (r#"a in {"z", "x", "y", "a"}"#, r#"a in {"a", "x", "y", "z"}"#),
        (
            r#"a in {"z", "z", "x", "y", "x", "a"}"#,
            r#"a in {"a", "x", "y", "z"}"#,
        ),
    ] {
        let canonical = canon(input);
        assert_eq!(canonical, expected, "canonical form of {input:?}");
        assert_eq!(canon(&canonical), canonical, "idempotence for {input:?}");
    }
}

// The "Visitor tests" (PrefixVisitor) table of parser/parser_test.go.
#[test]
fn calico_prefix_visitor_tests() {
    for (input, expected) in [
        ("k == 'v'", r#"visited/k == "v""#),
        ("k != 'v'", r#"visited/k != "v""#),
        ("k contains 'v'", r#"visited/k contains "v""#),
        ("k starts with 'v'", r#"visited/k starts with "v""#),
        ("k ends with 'v'", r#"visited/k ends with "v""#),
        ("k == 'v' && x == 'y'", r#"visited/k == "v" && visited/x == "y""#),
        ("k == 'v' || has(x)", r#"visited/k == "v" || has(visited/x)"#),
        ("!(k == 'v')", r#"!visited/k == "v""#),
        ("k in {'v'}", r#"visited/k in {"v"}"#),
        ("k not in {'v'}", r#"visited/k not in {"v"}"#),
        (
            "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
            r#"!(!(visited/k == "v" && has(visited/t) || all()) && visited/a in {"b", "c"})"#,
        ),
    ] {
        let prefixed = sel(input).with_label_prefix("visited/");
        assert_eq!(prefixed.canonical(), expected, "prefixing {input:?}");
        assert_eq!(sel(expected), prefixed);
    }
}

#[test]
fn operators_build_the_expected_tree() {
    use Expression::*;
    let cases = [
        ("has(a)", Has(s("a"))),
        ("all()", All),
        ("global()", Global),
        ("a == 'x'", Equal(s("a"), s("x"))),
        ("a != 'x'", NotEqual(s("a"), s("x"))),
        ("a contains 'x'", Contains(s("a"), s("x"))),
        ("a starts with 'x'", StartsWith(s("a"), s("x"))),
        ("a ends with 'x'", EndsWith(s("a"), s("x"))),
        ("a in {'y', 'x', 'y'}", In(s("a"), set(&["x", "y"]))),
        ("a not in {'x'}", NotIn(s("a"), set(&["x"]))),
        ("a in {}", In(s("a"), set(&[]))),
        ("a not in {}", NotIn(s("a"), set(&[]))),
        ("!has(a)", Not(Box::new(Has(s("a"))))),
    ];
    for (text, expected) in cases {
        assert_eq!(sel(text).expression(), &expected, "{text:?}");
    }
}

// ast.go: every comparison except != and `not in` is false for an absent
// label; != and `not in` are true for it (LabelNeValueNode/LabelNotInSetNode
// return true when the label is missing).
#[test]
fn absent_label_semantics() {
    let empty = labels(&[]);
    let other = labels(&[("b", "x")]);
    for text in [
        "a == 'x'",
        "a == ''",
        "a in {'x'}",
        "a in {}",
        "a contains ''",
        "a starts with ''",
        "a ends with ''",
        "has(a)",
    ] {
        assert!(!sel(text).matches(&empty), "{text:?} on no labels");
        assert!(!sel(text).matches(&other), "{text:?} on other labels");
    }
    for text in [
        "a != 'x'",
        "a != ''",
        "a not in {'x'}",
        "a not in {}",
        "!has(a)",
        "!a == 'x'",
        "!a contains ''",
    ] {
        assert!(sel(text).matches(&empty), "{text:?} on no labels");
        assert!(sel(text).matches(&other), "{text:?} on other labels");
    }
}

#[test]
fn present_label_semantics() {
    let l = labels(&[("a", "hello"), ("e", "")]);
    for (text, expected) in [
        ("a == 'hello'", true),
        ("a == 'Hello'", false),
        ("e == ''", true),
        ("a != 'hello'", false),
        ("a in {}", false),
        ("a not in {}", true),
        ("e in {''}", true),
        ("a contains 'ell'", true),
        ("a contains ''", true),
        ("a contains 'hello!'", false),
        ("a starts with 'he'", true),
        ("a starts with 'lo'", false),
        ("a ends with 'lo'", true),
        ("a ends with 'he'", false),
        ("has(e)", true),
    ] {
        assert_eq!(sel(text).matches(&l), expected, "{text:?}");
    }
}

// parser.go: parseOrExpression > parseAndExpression > parseOperation, and
// `!` applies to a whole operation (`!a == 'x'` is `!(a == 'x')`).
#[test]
fn precedence() {
    use Expression::*;
    let eq = |k: &str| Equal(s(k), s("x"));
    assert_eq!(
        sel("a == 'x' || b == 'x' && c == 'x'").expression(),
        &Or(vec![eq("a"), And(vec![eq("b"), eq("c")])])
    );
    assert_eq!(
        sel("a == 'x' && b == 'x' || c == 'x'").expression(),
        &Or(vec![And(vec![eq("a"), eq("b")]), eq("c")])
    );
    assert_eq!(
        sel("!a == 'x' && b == 'x'").expression(),
        &And(vec![Not(Box::new(eq("a"))), eq("b")])
    );
    assert_eq!(
        sel("!(a == 'x' && b == 'x')").expression(),
        &Not(Box::new(And(vec![eq("a"), eq("b")])))
    );
    assert_eq!(
        sel("(a == 'x' || b == 'x') && c == 'x'").expression(),
        &And(vec![Or(vec![eq("a"), eq("b")]), eq("c")])
    );
    // a || (b && c) with only a true: true; (a || b) && c: false.
    let only_a = labels(&[("a", "x")]);
    assert!(sel("a == 'x' || b == 'x' && c == 'x'").matches(&only_a));
    assert!(!sel("(a == 'x' || b == 'x') && c == 'x'").matches(&only_a));
}

#[test]
fn canonical_form_uses_minimal_parentheses_and_flattens() {
    for (input, expected) in [
        (
            "(a == 'x' || b == 'x') && c == 'x'",
            r#"(a == "x" || b == "x") && c == "x""#,
        ),
        (
            "(a == 'x' && b == 'x') || c == 'x'",
            r#"a == "x" && b == "x" || c == "x""#,
        ),
        (
            "a == 'x' && (b == 'x' && (c == 'x' && d == 'x'))",
            r#"a == "x" && b == "x" && c == "x" && d == "x""#,
        ),
        (
            "((a == 'x' || b == 'x')) || (c == 'x' || (d == 'x'))",
            r#"a == "x" || b == "x" || c == "x" || d == "x""#,
        ),
        ("(((has(a))))", "has(a)"),
        ("!(has(a))", "!has(a)"),
        ("!(!has(a))", "has(a)"),
        ("!!(has(a) || has(b))", "has(a) || has(b)"),
        ("!(has(a) || has(b))", "!(has(a) || has(b))"),
        (
            "!(!(has(a) || has(b)) && has(c))",
            "!(!(has(a) || has(b)) && has(c))",
        ),
        // Operand order is kept; sets are sorted.
        ("has(b) && has(a)", "has(b) && has(a)"),
        ("has(a) && has(a)", "has(a) && has(a)"),
        ("b in {'2','1','2',}", r#"b in {"1", "2"}"#),
        ("all() && global()", "all() && global()"),
        ("a\tnotin{}", "a not in {}"),
    ] {
        assert_eq!(canon(input), expected, "canonical form of {input:?}");
        assert_eq!(canon(expected), expected, "idempotence for {input:?}");
    }
}

#[test]
fn quoting() {
    // Both quote styles parse to the same value; no escapes exist.
    assert_eq!(sel("a == 'x y'"), sel("a == \"x y\""));
    assert_eq!(canon("a == 'x y'"), r#"a == "x y""#);
    assert_eq!(canon(r#"a == 'say "hi"'"#), r#"a == 'say "hi"'"#);
    assert_eq!(canon(r#"a == "it's""#), r#"a == "it's""#);
    assert_eq!(canon(r"a == 'back\slash'"), r#"a == "back\slash""#);
    assert_eq!(canon("a == ''"), r#"a == """#);
    // Operator characters inside a string are just characters.
    assert_eq!(
        sel("a == '&& || ! ( ) { } , ==' && b == 'é'").expression(),
        &Expression::And(vec![
            Expression::Equal(s("a"), s("&& || ! ( ) { } , ==")),
            Expression::Equal(s("b"), s("é")),
        ])
    );
    // Newlines are allowed inside strings (but not outside).
    assert!(sel("a == 'x\ny'").matches(&labels(&[("a", "x\ny")])));
    // A set may mix quote styles; members sort by bytes (`"` < `'`).
    assert_eq!(canon(r#"a in {'"', "'", 'x'}"#), r#"a in {'"', "'", "x"}"#);
}

// tokenizer.go trimWhitespace: only ' ' and '\t' are whitespace.
#[test]
fn whitespace() {
    let expected = sel(r#"a == "b" && has(c) || d not in {"e"}"#);
    for text in [
        r#"a=="b"&&has(c)||d not in{"e"}"#,
        "\ta  ==  'b'\t&&\thas( c )  ||  d  not \t in  {  'e'  }  ",
        r#"a=="b"&&has(c)||d notin{"e",}"#,
    ] {
        assert_eq!(sel(text), expected, "{text:?}");
    }
    assert!(sel("  \t ").is_all());
    assert!(sel("all(\t)").is_all());
    assert_eq!(sel("global(  )").expression(), &Expression::Global);
    // `has (a)` is not `has(a)`: the word must touch its parenthesis.
    assert!(Selector::parse("has (a)").is_err());
    assert!(Selector::parse("all ()").is_err());
    // Newlines and carriage returns are not whitespace.
    for text in ["\n", "a == 'b'\n", "a == 'b'\r\n", "a\n== 'b'"] {
        assert!(Selector::parse(text).is_err(), "{text:?}");
    }
}

// tokenizer.go identifierChar / MaxLabelLength, and the word operators being
// recognised only directly after a label.
#[test]
fn label_keys() {
    for key in [
        "a",
        "calico/k8s_ns",
        "k8s-app",
        "app.kubernetes.io/name",
        "calico/k8s_NS-.1/role",
        "123",
        "-",
        "/",
        ".",
        "_x",
        "in",
        "not",
        "contains",
        "starts",
        "with",
        "startswith",
        "has",
        "all",
        "global",
    ] {
        let text = format!("{key} == 'v' && has({key}) && {key} in {{'v'}}");
        let parsed = sel(&text);
        assert!(parsed.matches(&labels(&[(key, "v")])), "{text:?}");
        assert_eq!(sel(&parsed.canonical()), parsed, "{text:?}");
    }
    check(
        "contains contains 'contains'",
        &[&[("contains", "xcontainsx")]],
        &[&[("contains", "x")]],
    );
    let max = "k".repeat(512);
    assert_eq!(
        sel(&format!("has({max})")).expression(),
        &Expression::Has(max.clone())
    );
    assert!(Selector::parse(&format!("{max}k == 'v'")).is_err());
    assert!(Selector::parse(&format!("has({max}k)")).is_err());
    for text in ["a:b == 'v'", "a@b == 'v'", "é == 'v'", "has(a b)", "has(a:b)"] {
        assert!(Selector::parse(text).is_err(), "{text:?}");
    }
}

// parser.go parseOperation: a set literal is `{` strings separated by `,`
// with an optional trailing comma, then `}`.
#[test]
fn set_literals() {
    assert_eq!(sel("a in {}"), sel("a in { }"));
    assert_eq!(sel("a in {'x',}"), sel("a in {'x'}"));
    for text in [
        "a in {,}",
        "a in {'x',,}",
        "a in {'x' 'y'}",
        "a in {'x'",
        "a in 'x'",
    ] {
        assert!(Selector::parse(text).is_err(), "{text:?}");
    }
}

#[test]
fn error_positions_and_messages() {
    const OPERATION: &str = "expected a label name, `has(`, `all()`, `global()`, `!` or `(`";
    let op_after = |key: &str| {
        format!(
            "expected an operator after label `{key}`: `==`, `!=`, `in`, `not in`, \
             `contains`, `starts with` or `ends with`"
        )
    };
    let cases: Vec<(&str, usize, String)> = vec![
        ("a == ", 5, s("expected a quoted string after `==`")),
        ("a === 'b'", 4, s("expected a quoted string after `==`")),
        ("b == b", 5, s("expected a quoted string after `==`")),
        (
            "a starts with b",
            14,
            s("expected a quoted string after `starts with`"),
        ),
        ("a == 'b", 5, s("unterminated string: no closing `'`")),
        (r#"a == "b"#, 5, s("unterminated string: no closing `\"`")),
        ("a == 'b' c", 9, s("expected `&&`, `||` or end of selector")),
        ("a == 'b')", 8, s("expected `&&`, `||` or end of selector")),
        ("a == 'b' & c", 9, s("expected `&&`, `||` or end of selector")),
        ("a == 'b'\n", 8, s("expected `&&`, `||` or end of selector")),
        ("(a == 'b'", 9, s("expected `&&`, `||` or `)`")),
        ("(a == 'b' c)", 10, s("expected `&&`, `||` or `)`")),
        ("!", 1, s(OPERATION)),
        (")", 0, s(OPERATION)),
        ("()", 1, s(OPERATION)),
        ("%", 0, s(OPERATION)),
        ("'b1' == b", 0, s(OPERATION)),
        ("a == 'b' &&", 11, s(OPERATION)),
        ("a == 'b' && ", 12, s(OPERATION)),
        ("a", 1, op_after("a")),
        ("a b", 2, op_after("a")),
        ("a = 'b'", 2, op_after("a")),
        ("a inf {}", 2, op_after("a")),
        ("a not in x", 9, s("expected `{` after `not in`")),
        ("foo in \"\"", 7, s("expected `{` after `in`")),
        ("foo not in \"\"", 11, s("expected `{` after `not in`")),
        (r#"foo in {"", ||"#, 12, s("expected a quoted string or `}`")),
        (r#"foo in {"x" "y"}"#, 12, s("expected `,` or `}`")),
        ("has()", 4, s("expected a label name after `has(`")),
        ("has(a", 5, s("expected `)` to close `has(`")),
        ("has( a b)", 7, s("expected `)` to close `has(`")),
        ("all(x)", 4, s("expected `)` after `all(`")),
        ("global(", 7, s("expected `)` after `global(`")),
    ];
    for (text, position, message) in cases {
        let e = err(text);
        assert_eq!(
            (e.position, e.message.as_str()),
            (position, message.as_str()),
            "{text:?}"
        );
    }
}

#[test]
fn error_position_counts_characters_not_bytes() {
    // 'é' is two bytes; the failing 'ü' is character 12 (0-based).
    let e = err("a == 'é' && ü");
    assert_eq!(e.position, 12);
    assert_eq!(
        e.to_string(),
        "expected a label name, `has(`, `all()`, `global()`, `!` or `(` at character 13"
    );
}

#[test]
fn label_too_long_error() {
    let text = format!("a == 'x' || {} == 'y'", "k".repeat(513));
    let e = err(&text);
    assert_eq!(e.position, 12);
    assert_eq!(e.message, "label name is longer than 512 characters");
}

#[test]
fn error_display_and_render() {
    let e = err("a === 'b'");
    assert_eq!(
        e.to_string(),
        "expected a quoted string after `==` at character 5"
    );
    assert_eq!(
        e.render("a === 'b'"),
        "a === 'b'\n    ^ expected a quoted string after `==`"
    );
    // At the end of the input the caret sits just past the last character.
    assert_eq!(
        err("a == ").render("a == "),
        "a == \n     ^ expected a quoted string after `==`"
    );
    // Tabs are kept so the caret lines up; a newline is shown as U+FFFD.
    assert_eq!(
        err("\ta\n").render("\ta\n"),
        format!(
            "\ta\u{FFFD}\n\t ^ {}",
            "expected an operator after label `a`: `==`, `!=`, `in`, `not in`, \
             `contains`, `starts with` or `ends with`"
        )
    );
}

#[test]
fn nesting_limit() {
    let nested = |depth: usize| format!("{}has(a){}", "(".repeat(depth), ")".repeat(depth));
    assert_eq!(sel(&nested(256)), sel("has(a)"));
    let e = err(&nested(257));
    assert_eq!(e.position, 256);
    // Deep but alternating nesting builds a deep tree; it still round-trips.
    let mut text = s("has(x)");
    for i in 0..200 {
        text = if i % 2 == 0 {
            format!("!(has(a{i}) || {text})")
        } else {
            format!("has(b{i}) && ({text})")
        };
    }
    let deep = sel(&text);
    assert_eq!(sel(&deep.canonical()), deep);
}

#[test]
fn empty_and_all() {
    for text in ["", " ", "\t", "all()", " all( ) ", "((all()))", "!!all()"] {
        let parsed = sel(text);
        assert!(parsed.is_all(), "{text:?}");
        assert_eq!(parsed, Selector::all());
        assert_eq!(parsed.canonical(), "all()");
    }
    assert_eq!(Selector::default(), Selector::all());
    assert!(!sel("!all()").is_all());
    assert!(!sel("!all()").matches(&labels(&[])));
    assert!(!sel("all() && all()").is_all());
}

// ast.go GlobalNode.Evaluate: global() is true in the AST itself.
#[test]
fn global() {
    assert!(sel("global()").matches(&labels(&[])));
    assert!(!sel("!global()").matches(&labels(&[])));
    assert!(sel("global()").uses_global());
    assert!(sel("has(a) || !(has(b) && global())").uses_global());
    assert!(!sel("has(a) || all()").uses_global());
    assert!(!sel("global == 'x'").uses_global());
}

#[test]
fn and_combinator() {
    let a = sel("has(a) || has(b)");
    let c = sel("has(c) && has(d)");
    assert_eq!(Selector::all().and(&a), a);
    assert_eq!(a.and(&Selector::all()), a);
    assert_eq!(a.and(&c).canonical(), "(has(a) || has(b)) && has(c) && has(d)");
    assert_eq!(c.and(&c).canonical(), "has(c) && has(d) && has(c) && has(d)");
    let both = a.and(&c);
    assert_eq!(sel(&both.canonical()), both);
}

#[test]
fn replace_all_and_global() {
    // The namespaceSelector trick: all() means "any namespace", global()
    // means "not namespaced".
    let any_ns = sel("has(pcns.name)");
    let not_namespaced = sel("!has(pcns.name)");
    for (input, expected) in [
        ("", "has(pcns.name)"),
        ("all()", "has(pcns.name)"),
        ("global()", "!has(pcns.name)"),
        ("!global()", "has(pcns.name)"),
        ("has(x) || !all()", "has(x) || !has(pcns.name)"),
        ("has(x) && all()", "has(x) && has(pcns.name)"),
    ] {
        let replaced = sel(input).replace_all_and_global(&any_ns, &not_namespaced);
        assert_eq!(replaced.canonical(), expected, "{input:?}");
        assert!(!replaced.uses_global());
    }
    // Replacements are spliced in normalised.
    let conj = sel("has(p) && has(q)");
    let replaced = sel("has(x) && all()").replace_all_and_global(&conj, &conj);
    assert_eq!(replaced.canonical(), "has(x) && has(p) && has(q)");
    assert_eq!(sel(&replaced.canonical()), replaced);
}

#[test]
fn with_label_prefix_rewrites_every_key() {
    let prefixed = sel(
        "a == 'x' && b != 'x' && c in {'x'} && d not in {} && has(e) && f contains 'x' \
         && g starts with 'x' && h ends with 'x' && all() && !global()",
    )
    .with_label_prefix("pcns.");
    assert_eq!(
        prefixed.canonical(),
        r#"pcns.a == "x" && pcns.b != "x" && pcns.c in {"x"} && pcns.d not in {} && has(pcns.e) && pcns.f contains "x" && pcns.g starts with "x" && pcns.h ends with "x" && all() && !global()"#
    );
}

#[test]
fn display_fromstr_and_identity() {
    let parsed: Selector = "a=='x'&&b in{'2','1'}".parse().unwrap();
    assert_eq!(parsed.to_string(), parsed.canonical());
    assert_eq!(format!("{parsed}"), r#"a == "x" && b in {"1", "2"}"#);
    assert!("a ==".parse::<Selector>().is_err());
    // Equivalent spellings are one set member.
    let spellings = ["a == 'x'", "a==\"x\"", "(a == 'x')", "!!a == 'x'"];
    let hashed: HashSet<Selector> = spellings.iter().map(|t| sel(t)).collect();
    let ordered: BTreeSet<Selector> = spellings.iter().map(|t| sel(t)).collect();
    assert_eq!(hashed.len(), 1);
    assert_eq!(ordered.len(), 1);
}

struct Fixed;

impl Labels for Fixed {
    fn label(&self, key: &str) -> Option<&str> {
        (key == "app").then_some("web")
    }
}

#[test]
fn labels_implementations() {
    let selector = sel("app == 'web'");
    let btree = labels(&[("app", "web")]);
    let hash: HashMap<String, String> = btree.clone().into_iter().collect();
    let custom: HashMap<String, String, BuildHasherDefault<DefaultHasher>> =
        btree.clone().into_iter().collect();
    assert!(selector.matches(&btree));
    assert!(selector.matches(&&btree));
    assert!(selector.matches(&hash));
    assert!(selector.matches(&custom));
    assert!(selector.matches(&Fixed));
    let dynamic: &dyn Labels = &hash;
    assert!(selector.matches(dynamic));
    assert!(selector.expression().matches(&&&Fixed));
}
