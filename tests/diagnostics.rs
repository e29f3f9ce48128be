//! Every kind of compile error is reported at its `file:line:col`, with a message that says what
//! is wrong, and all errors of a file are reported together.

use kairos::compile::{compile, CompileOptions, Source};

/// Compiles `text` and returns its diagnostics as `line:col: message` strings.
fn errors(text: &str) -> Vec<String> {
    match compile(
        &[Source {
            file: "t.cep",
            text,
        }],
        &CompileOptions::default(),
    ) {
        Ok(_) => panic!("expected errors in:\n{text}"),
        Err(d) => {
            d.0.iter()
                .map(|d| {
                    assert_eq!(d.file, "t.cep");
                    format!("{}:{}: {}", d.line, d.col, d.message)
                })
                .collect()
        }
    }
}

fn one_error(text: &str, at: &str, contains: &str) {
    let errs = errors(text);
    assert!(
        errs.iter()
            .any(|e| e.starts_with(at) && e.contains(contains)),
        "wanted an error at {at} containing {contains:?}, got {errs:#?}"
    );
}

fn pat(body: &str) -> String {
    format!("pattern p\n  from bets, payments\n  time ts\n{body}")
}

#[test]
fn stream_not_in_from() {
    one_error(
        &pat("  match a -> b\n  define\n    a = trades(x > 1)\n  emit out {}\n"),
        "6:9",
        "stream `trades` is not named in `from`",
    );
}

#[test]
fn unknown_table_says_tables_are_not_configured() {
    one_error(
        &pat("  match a\n  emit out { t: lookup(customers, key).tier ?? \"x\" }\n"),
        "5:24",
        "no lookup tables are configured",
    );
    one_error(
        &pat("  match a\n  define\n    a = (user in vips)\n  emit out {}\n"),
        "6:18",
        "unknown table `vips`",
    );
}

#[test]
fn type_errors_visible_at_compile_time() {
    one_error(
        &pat("  match a\n  define\n    a = (\"deposit\" > 5)\n  emit out {}\n"),
        "6:10",
        "cannot compare a string with a number",
    );
    one_error(
        &pat("  match a\n  define\n    a = (amount + \"x\" > 5)\n  emit out {}\n"),
        "6:19",
        "`+` needs numbers",
    );
}

#[test]
fn condition_must_be_boolean() {
    one_error(
        &pat("  match a\n  define\n    a = (5 + 1)\n  emit out {}\n"),
        "6:10",
        "a condition must be true or false",
    );
}

#[test]
fn absence_needs_within() {
    let text =
        "pattern p\n  from bets\n  match a -> !b\n  define\n    b = (x == 1)\n  emit out {}\n";
    one_error(text, "3:14", "needs `within`");
}

#[test]
fn duplicate_names() {
    one_error(
        &pat("  match a -> a\n  emit out {}\n"),
        "4:14",
        "appears twice",
    );
    one_error(
        &pat("  match a -> b\n  define\n    a = (x == 1)\n    a = (x == 2)\n  emit out {}\n"),
        "7:5",
        "defined twice",
    );
    one_error(
        &pat("  match a\n  emit out { n: 1, n: 2 }\n"),
        "5:20",
        "emitted twice",
    );
    let two = format!(
        "{}{}",
        pat("  match a\n  emit out {}\n"),
        pat("  match a\n  emit out {}\n")
    );
    one_error(&two, "6:9", "already loaded");
}

#[test]
fn shapes_flink_rejects() {
    one_error(
        &pat("  match a b+ c?\n  emit out {}\n"),
        "4:14",
        "greedy loop cannot be directly followed by an optional",
    );
    one_error(
        &pat("  match a b? !c -> d\n  define\n    c = (x == 1)\n  emit out {}\n"),
        "4:11",
        "optional step cannot be directly followed by a negation",
    );
    one_error(
        &pat("  match a -> !c d\n  define\n    c = (x == 1)\n  emit out {}\n"),
        "4:17",
        "joins with `->` or `~>`",
    );
    one_error(
        &pat("  match !c -> d\n  define\n    c = (x == 1)\n  emit out {}\n"),
        "4:9",
        "cannot start with a negation",
    );
    one_error(
        &pat("  match a ~> !c -> d\n  define\n    c = (x == 1)\n  emit out {}\n"),
        "4:11",
        "cannot follow `~>`",
    );
    one_error(
        &pat("  match a b until x\n  define\n    x = (y == 1)\n  emit out {}\n"),
        "4:19",
        "`until` needs a looping step",
    );
}

#[test]
fn unknown_steps_functions_and_reserved_words() {
    one_error(
        &pat("  match a\n  emit out { n: q.amount }\n"),
        "5:17",
        "unknown step `q`",
    );
    one_error(
        &pat("  match a\n  emit out { n: count(q) }\n"),
        "5:23",
        "unknown step `q`",
    );
    one_error(
        &pat("  match a\n  emit out { n: frob(a.x) }\n"),
        "5:17",
        "unknown function `frob`",
    );
    one_error(
        &pat("  match a\n  emit out {}\n  skip to last q\n"),
        "6:16",
        "unknown step `q`",
    );
    one_error(
        &pat("  match a\n  define\n    q = (x > 1)\n  emit out {}\n"),
        "6:5",
        "defined but not used",
    );
}

#[test]
fn negation_without_definition() {
    one_error(
        &pat("  within 1m\n  match a -> !x\n  emit out {}\n"),
        "5:15",
        "negated step `x` has no definition",
    );
}

#[test]
fn syntax_errors_point_at_the_token() {
    one_error(
        &pat("  match a ->\n  emit out {}\n"),
        "5:3",
        "expected a step after `->`",
    );
    one_error(
        &pat("  within 5\n  match a\n  emit out {}\n"),
        "4:10",
        "expected a duration",
    );
    one_error(
        &pat("  match a{3,1}\n  emit out {}\n"),
        "4:10",
        "maximum is below the minimum",
    );
    one_error(
        &pat("  match a\n  emit out { x: \"unterminated }\n"),
        "5:17",
        "unterminated string",
    );
    one_error(
        &pat("  match a\n  emit out { x: 1 }\n  skip sideways\n"),
        "6:8",
        "expected a skip strategy",
    );
    one_error(
        &pat("  match a\n  emit out { x: 1 }\n  frobnicate\n"),
        "6:3",
        "unknown clause",
    );
    one_error(
        &pat("  match a\n  emit out { x: 1 < 2 < 3 }\n"),
        "5:23",
        "comparisons do not chain",
    );
    one_error(
        &pat("  within 3fortnights\n  match a\n  emit out {}\n"),
        "4:10",
        "unknown duration unit",
    );
}

#[test]
fn on_timeout_needs_within() {
    one_error(
        &pat("  match a -> b\n  emit out {}\n  on timeout emit late {}\n"),
        "6:3",
        "needs `within`",
    );
}

#[test]
fn every_broken_block_is_reported() {
    let text = "pattern a\n  from s\n  match x ->\n  emit o {}\npattern b\n  from s\n  match y\n  emit o { n: count(zz) }\npattern c\n  from s\n  match z\n  emit o {}\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 2, "{errs:#?}");
}

#[test]
fn display_has_file_line_col_and_caret() {
    let text = "pattern p\n  from s\n  match a\n  emit o { n: count(q) }\n";
    let err = compile(
        &[Source {
            file: "dir/x.cep",
            text,
        }],
        &CompileOptions::default(),
    )
    .unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.starts_with("dir/x.cep:4:21: error: unknown step `q`"),
        "{shown}"
    );
    assert!(
        shown.contains("4 |   emit o { n: count(q) }\n  |                     ^"),
        "{shown}"
    );
}

fn compile_err(sources: &[Source<'_>]) -> kairos::lang::Diagnostics {
    compile(sources, &CompileOptions::default()).unwrap_err()
}

/// An error far into a long line shows 80 characters before its column and 40 from it, with
/// `...` where the line goes on; the caret stays under its place, and its width within the
/// window. A short line is shown whole.
#[test]
fn a_long_line_is_shown_around_the_column() {
    let pad = "é".repeat(300);
    let text = format!(
        "pattern p\n  from s\n  match a\n  emit o {{ s: \"{pad}\", n: count(q), t: \"{pad}\" }}\n"
    );
    let err = compile_err(&[Source {
        file: "x.cep",
        text: &text,
    }]);
    let d = &err.0[0];
    let line = text.lines().nth(3).unwrap();
    let col = line[..line.find("count(q)").unwrap() + 6].chars().count() + 1;
    assert_eq!((d.line, d.col), (4, col));
    assert_eq!(d.line_text.chars().count(), 121);
    let window: String = line.chars().skip(col - 81).take(120).collect();
    assert!(window.starts_with(&"é".repeat(60)), "{window}");
    assert_eq!(
        d.to_string(),
        format!(
            "x.cep:4:{col}: error: unknown step `q`\n  |\n4 | ...{window}...\n  | {}^\n  = hint: \
             the steps of this pattern are: a",
            " ".repeat(83)
        )
    );
    // Near the start of a long line, the window starts with the line.
    let text =
        format!("pattern p\n  from s\n  match a\n  emit o {{ n: count(q), s: \"{pad}\" }}\n");
    let err = compile_err(&[Source {
        file: "x.cep",
        text: &text,
    }]);
    let shown = err.0[0].to_string();
    let line = text.lines().nth(3).unwrap();
    let head: String = line.chars().take(120).collect();
    assert!(
        shown.contains(&format!("\n4 | {head}...\n  | {}^\n", " ".repeat(20))),
        "{shown}"
    );
}

/// A span that runs past the window is underlined to the window's end (120 characters from
/// the line's start here).
#[test]
fn a_wide_span_is_underlined_within_the_window() {
    let long = "x".repeat(500);
    let text = format!("pattern p\n  from s\n  match a\n  emit o {{ n: 1 }}\n  {long}\n");
    let err = compile_err(&[Source {
        file: "x.cep",
        text: &text,
    }]);
    let shown = err.0[0].to_string();
    let caret = shown.lines().nth(3).unwrap();
    assert_eq!(caret, format!("  |   {}", "^".repeat(118)), "{shown}");
}

/// A file's first 100 errors are listed and the rest counted; another file's errors follow.
#[test]
fn errors_past_the_hundredth_of_a_file_are_counted() {
    let defs = vec!["a = (x > 1)"; 151].join("\n    ");
    let many = format!("pattern p\n  from s\n  match a\n  define\n    {defs}\n  emit o {{}}\n");
    let err = compile_err(&[
        Source {
            file: "many.cep",
            text: &many,
        },
        Source {
            file: "two.cep",
            text: "pattern q\n  from s\n  match b\n  emit o { n: count(zz), m: count(yy) }\n",
        },
    ]);
    assert_eq!(err.0.len(), 152);
    let shown = err.to_string();
    assert_eq!(shown.matches("many.cep:").count(), 101, "{shown}");
    assert_eq!(shown.matches("two.cep:").count(), 2, "{shown}");
    let more = "\n\nmany.cep: and 50 more errors (the first 100 are listed)\n\ntwo.cep:4:";
    assert!(shown.contains(more), "{shown}");
    // The last one listed is the 100th, on line 105.
    let listed = &shown[..shown.find(more).unwrap()];
    assert!(
        listed[listed.rfind("many.cep:").unwrap()..].starts_with("many.cep:105:5: error: "),
        "{listed}"
    );
    assert!(shown.ends_with("\n152 errors in patterns"), "{shown}");
}

/// A byte-order mark at the start of a file is skipped, and does not count as a column.
#[test]
fn a_byte_order_mark_is_skipped() {
    let text = "\u{feff}pattern p\n  from s\n  match a\n  emit o { n: 1 }\n";
    compile(
        &[Source {
            file: "bom.cep",
            text,
        }],
        &CompileOptions::default(),
    )
    .unwrap();
    assert_eq!(
        errors("\u{feff}pattern 1\n"),
        ["1:9: expected a pattern name, found number `1`"]
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    for (open, close) in [("(", ")"), ("[", "]"), ("not ", ""), ("-", "")] {
        let deep = format!("{}1{}", open.repeat(5000), close.repeat(5000));
        let text = format!(
            "pattern p\n  from s\n  match a\n  define\n    a = ({deep} == 1)\n  emit o {{}}\n"
        );
        let errs = errors(&text);
        assert!(
            errs.iter().any(|e| e.contains("nested more than")),
            "{errs:?}"
        );
    }
    let groups = format!(
        "pattern p\n  from s\n  match {}a{}\n  emit o {{}}\n",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    assert!(errors(&groups)
        .iter()
        .any(|e| e.contains("nested more than")));
}

#[test]
fn long_operator_chains_are_bounded_too() {
    for op in [" + ", " or ", " ?? ", " * ", "."] {
        let chain = vec!["x"; 5000].join(op);
        let text = format!(
            "pattern p\n  from s\n  match a\n  define\n    a = ({chain} == 1)\n  emit o {{}}\n"
        );
        assert!(
            errors(&text).iter().any(|e| e.contains("nested more than")),
            "{op}"
        );
    }
    // A long but reasonable chain compiles.
    let chain = vec!["x"; 100].join(" + ");
    let text =
        format!("pattern p\n  from s\n  match a\n  define\n    a = ({chain} > 1)\n  emit o {{}}\n");
    compile(
        &[Source {
            file: "t.cep",
            text: &text,
        }],
        &CompileOptions::default(),
    )
    .unwrap();
}

#[test]
fn an_automaton_too_large_is_an_error() {
    let text = "pattern p\n  from s\n  match (a -> b -> c){10000} d{10000}\n  emit o {}\n";
    assert!(errors(text)
        .iter()
        .any(|e| e.starts_with("3:9") && e.contains("automaton states")));
}

#[test]
fn a_repeated_group_of_optional_steps_is_an_error() {
    let text = "pattern p\n  from s\n  match a -> (b? c*)+ -> d\n  emit o {}\n";
    assert!(
        errors(text)
            .iter()
            .any(|e| e.starts_with("3:14") && e.contains("at least one required step")),
        "{:?}",
        errors(text)
    );
}

/// The other checks of clauses, names, quantifiers and windows, each at its place.
#[test]
fn clause_name_and_window_checks() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "pattern p\n  time ts\n  match a\n  emit out {}\n",
            "1:9",
            "pattern `p` has no `from` clause",
        ),
        (
            "pattern p\n  from s\n  time ts\n  emit out {}\n",
            "1:9",
            "pattern `p` has no `match` clause",
        ),
        (
            "pattern p\n  from s\n  time ts\n  match a\n",
            "1:9",
            "pattern `p` has no `emit` clause",
        ),
        (
            "pattern p\n  from s\n  from s\n  time ts\n  match a\n  emit out {}\n",
            "3:3",
            "duplicate `from` clause",
        ),
        (
            "pattern p\n  from s, s\n  time ts\n  match a\n  emit out {}\n",
            "2:11",
            "stream `s` is named twice in `from`",
        ),
        (
            "pattern p\n  from s\n  time ts\n  match a+ until a\n  emit out {}\n",
            "4:18",
            "`a` is used for two different things in the sequence",
        ),
        (
            "pattern p\n  from s\n  time ts\n  match a+ until x -> b\n  define\n    x = (v == 1)\n  emit out { n: x.v }\n",
            "7:17",
            "`x` binds no events (it is a negation or an `until` condition)",
        ),
        (
            "pattern p\n  from s\n  time ts\n  within 1s\n  match a -> !x -> b\n  define\n    x = (v == 1)\n  emit out { n: x.v }\n",
            "8:17",
            "`x` binds no events (it is a negation or an `until` condition)",
        ),
        (
            "pattern p\n  from s\n  time ts\n  match a -> b+\n  define\n    a = (prev(b).v > 1)\n  emit out {}\n",
            "6:10",
            "`prev(b)` is only meaningful inside the condition of `b`",
        ),
        (
            "pattern p\n  from s\n  time ts\n  within 0s\n  match a -> b\n  emit out {}\n",
            "4:10",
            "`within` must be longer than zero",
        ),
        (
            "pattern p\n  from s\n  time ts\n  match a -> b{0}\n  emit out {}\n",
            "4:15",
            "a step repeated at most zero times matches nothing",
        ),
        (
            "pattern p\n  from s\n  time ts\n  within 1s\n  match a -> !x+ -> b\n  define\n    x = (v == 1)\n  emit out {}\n",
            "5:16",
            "a negated step cannot have a quantifier",
        ),
        (
            "pattern p\n  from s\n  time ts\n  within 1s\n  match a -> !x -> b\n  define\n    x = (v == 1)\n  emit out {}\n  skip to first x\n",
            "9:17",
            "`x` binds no events, so there is nothing to skip to",
        ),
        (
            "pattern p\n  from s\n  time ts\n  match a\n  emit out {}\npattern q\n  from s\n  time at\n  match a\n  emit out {}\n",
            "8:8",
            "stream `s` already takes its time from `ts` (pattern `p`)",
        ),
        (
            "pattern p\n  from s\n  time ts\n  match match -> b\n  emit out {}\n",
            "4:9",
            "expected a step, found `match`",
        ),
        // An aggregate over a name that is not a step says so, as the name alone would.
        (
            "pattern p\n  from s\n  time ts\n  match a -> b\n  define\n    c = (v == 1)\n  emit out { x: collect(c.id) }\n",
            "7:25",
            "unknown step `c`",
        ),
        (
            "pattern p\n  from s\n  time ts\n  within 1s\n  match a -> !x -> b\n  define\n    x = (v == 1)\n  emit out { n: sum(x.v) }\n",
            "8:21",
            "`x` binds no events",
        ),
    ];
    for (text, at, message) in cases {
        one_error(text, at, message);
    }
}
