//! From syntax to a runnable [`Program`]: name resolution, type checks, the shapes the language
//! rejects, and the automaton of each pattern.
//!
//! Every error is collected (not just the first) and reported as `file:line:col` with a caret.

pub mod expr;
pub mod load;
pub mod local;
pub mod nfa;

use crate::event::TimeUnit;
use crate::lang::ast::{self, BinOp, Contiguity, ElementKind, ExprKind, Lit, UnOp};
use crate::lang::{self, Diagnostic, Diagnostics, Span};
use expr::{AggKind, AggSpec, ArithOp, CExpr, CmpOp, Func, NameId};
use nfa::{Elem, ElemKind, Nfa};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// The after-match skip strategy of a pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipStrategy {
    None,
    ToNext,
    PastLast,
    ToFirst(NameId),
    ToLast(NameId),
}

/// What a complete (or timed-out) match produces.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmitSpec {
    pub sink: String,
    pub fields: Vec<(String, CExpr)>,
    /// The constant parts of its records' JSON.
    pub json: crate::engine::output::RecordJson,
}

impl EmitSpec {
    /// Writes [`EmitSpec::json`] for the records of pattern `pattern`.
    fn with_json(mut self, pattern: &str) -> Self {
        self.json = crate::engine::output::RecordJson::new(
            pattern,
            &self.sink,
            self.fields.iter().map(|(n, _)| n.as_str()),
        );
        self
    }
}

/// What a name declared in a pattern is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NameRole {
    /// A step of the sequence: binds events.
    Step,
    /// A negated step (`!x`): binds nothing.
    Negation,
    /// An `until` condition: binds nothing.
    Until,
}

/// One compiled pattern.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CompiledPattern {
    pub name: String,
    /// `reads[stream]`: whether the pattern reads that stream.
    pub reads: Vec<bool>,
    pub key: Option<CExpr>,
    /// Whether time comes from the event (`time FIELD`) rather than arrival.
    pub event_time: bool,
    /// `within`, in nanoseconds.
    pub within: Option<i64>,
    pub names: Vec<String>,
    pub roles: Vec<NameRole>,
    /// The condition of each name (already including its stream), by [`NameId`].
    pub conds: Vec<CExpr>,
    /// Whether each condition reads only the current event, so it can be cached per event.
    pub event_local: Vec<bool>,
    /// For a condition that reads partial-match state: the conjuncts that read only the current
    /// event. They are computed once per event, so that a partial match the event cannot advance
    /// is rejected without touching its history.
    pub guards: Vec<Option<CExpr>>,
    /// For a condition with a guard: the conjuncts that read partial-match state, all that is
    /// left to test once the guard holds.
    pub residuals: Vec<Option<CExpr>>,
    /// What the current event alone decides of each condition, compiled for speed: the whole
    /// condition where it is event-local, its guard otherwise.
    pub local_tests: Vec<Option<local::LocalTest>>,
    pub aggs: Vec<AggSpec>,
    /// Values that `collect()` reads from bound events, computed when an event of the name is
    /// bound (so that the event itself need not be kept).
    pub captures: Vec<(NameId, CExpr)>,
    pub nfa: Nfa,
    pub emit: EmitSpec,
    pub on_timeout: Option<EmitSpec>,
    pub skip: SkipStrategy,
    /// The sequence as written, for summaries.
    pub sequence: String,
}

/// A set of compiled patterns and the event schema they share.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Program {
    pub patterns: Vec<CompiledPattern>,
    /// Stream names, indexed by stream id.
    pub streams: Vec<String>,
    /// Field paths, indexed by slot: only the fields that some pattern reads.
    pub fields: Vec<Vec<String>>,
    /// The time field of each stream (a slot), where its patterns name one.
    pub time_slots: Vec<Option<usize>>,
    pub unit: TimeUnit,
    /// The lookup tables patterns may read, by the index lookups use.
    #[serde(default)]
    pub tables: Vec<String>,
}

/// A lookup table the patterns may read: its name and the schema its file has.
#[derive(Clone, Debug)]
pub struct TableDecl {
    pub name: String,
    pub schema: crate::table::Schema,
}

/// Options of compilation.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// The unit of numeric time fields, and of `ts` values in expressions and records.
    pub unit: TimeUnit,
    /// The lookup tables that exist: a lookup into any other is a compile error, and columns
    /// are resolved against these schemas once, here.
    pub tables: Vec<TableDecl>,
}

/// A pattern source: a file name (for diagnostics) and its text.
pub struct Source<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

/// Compiles a set of pattern files into one program.
///
/// ```
/// use kairos::compile::{compile, CompileOptions, Source};
/// let text = "pattern big_bets\n  from bets\n  key user\n  match a -> b\n  define\n    a = (stake > 100)\n    b = (stake > 100)\n  emit alerts { user: key }\n";
/// let program = compile(&[Source { file: "p.cep", text }], &CompileOptions::default()).unwrap();
/// assert_eq!(program.patterns[0].name, "big_bets");
/// assert_eq!(program.streams, vec!["bets"]);
/// ```
pub fn compile(sources: &[Source<'_>], opts: &CompileOptions) -> Result<Program, Diagnostics> {
    let mut diags = Vec::new();
    let mut prog = Program {
        patterns: Vec::new(),
        streams: Vec::new(),
        fields: Vec::new(),
        time_slots: Vec::new(),
        unit: opts.unit,
        tables: opts.tables.iter().map(|t| t.name.clone()).collect(),
    };
    let mut time_owner: Vec<Option<(String, Vec<String>)>> = Vec::new();
    let mut seen_names: FxHashMap<String, ()> = FxHashMap::default();
    for src in sources {
        let (decls, mut parse_errors) = lang::parse_partial(src.file, src.text);
        diags.append(&mut parse_errors);
        for decl in &decls {
            let mut cx = PatternCx::new(src, &mut prog, opts.unit, &opts.tables);
            let compiled = cx.pattern(decl);
            let mut errs = std::mem::take(&mut cx.diags);
            if seen_names.insert(decl.name.name.clone(), ()).is_some() {
                errs.push(Diagnostic::at(
                    src.file,
                    src.text,
                    decl.name.span,
                    format!("a pattern named `{}` is already loaded", decl.name.name),
                ));
            }
            // One time field per stream: events are ordered by it before any pattern sees them.
            if let (Some(path), true) = (&decl.time, errs.is_empty()) {
                let fpath: Vec<String> = path.iter().map(|i| i.name.clone()).collect();
                let slot = intern_field(&mut prog.fields, &fpath);
                for s in &decl.from {
                    let sid = stream_id(&mut prog.streams, &s.name);
                    if prog.time_slots.len() <= sid {
                        prog.time_slots.resize(sid + 1, None);
                        time_owner.resize(sid + 1, None);
                    }
                    match &time_owner[sid] {
                        Some((other, opath)) if *opath != fpath => errs.push(
                            Diagnostic::at(
                                src.file,
                                src.text,
                                path[0].span,
                                format!(
                                "stream `{}` already takes its time from `{}` (pattern `{other}`)",
                                s.name,
                                opath.join(".")
                            ),
                            )
                            .with_hint(
                                "every pattern that reads a stream must use the same time field",
                            ),
                        ),
                        _ => {
                            time_owner[sid] = Some((decl.name.name.clone(), fpath.clone()));
                            prog.time_slots[sid] = Some(slot);
                        }
                    }
                }
            }
            if errs.is_empty() {
                if let Some(p) = compiled {
                    prog.patterns.push(p);
                }
            }
            diags.append(&mut errs);
        }
    }
    if prog.patterns.is_empty() && diags.is_empty() {
        return Err(Diagnostics(vec![Diagnostic {
            file: sources
                .first()
                .map(|s| s.file.to_string())
                .unwrap_or_default(),
            line: 1,
            col: 1,
            width: 1,
            message: "no patterns found".into(),
            hint: Some("a pattern file holds `pattern NAME ...` blocks".into()),
            line_text: String::new(),
        }]));
    }
    if !diags.is_empty() {
        return Err(Diagnostics(diags));
    }
    prog.time_slots.resize(prog.streams.len(), None);
    for p in &mut prog.patterns {
        p.reads.resize(prog.streams.len(), false);
    }
    Ok(prog)
}

fn stream_id(streams: &mut Vec<String>, name: &str) -> usize {
    match streams.iter().position(|s| s == name) {
        Some(i) => i,
        None => {
            streams.push(name.to_string());
            streams.len() - 1
        }
    }
}

fn intern_field(fields: &mut Vec<Vec<String>>, path: &[String]) -> usize {
    match fields.iter().position(|f| f == path) {
        Some(i) => i,
        None => {
            fields.push(path.to_vec());
            fields.len() - 1
        }
    }
}

/// Static types, as far as they can be known before events arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Any,
    Bool,
    Num,
    Str,
    List,
    Null,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Any => "a value",
            Ty::Bool => "a boolean",
            Ty::Num => "a number",
            Ty::Str => "a string",
            Ty::List => "a list",
            Ty::Null => "null",
        }
    }
    fn fits(self, want: Ty) -> bool {
        self == Ty::Any || self == Ty::Null || self == want
    }
}

/// Where an expression is compiled.
#[derive(Clone, Copy)]
struct Scope {
    /// Inside the condition of this name: its aggregates include the current event.
    own: Option<NameId>,
    /// Inside `emit`: there is no current event.
    emit: bool,
    /// Inside an aggregate's argument over this step: `step.f` is the bound event's field.
    agg_of: Option<NameId>,
    /// In `key`: only the current event's fields.
    key: bool,
}

struct PatternCx<'a, 'p> {
    src: &'a Source<'a>,
    tables: &'a [TableDecl],
    prog: &'p mut Program,
    unit: TimeUnit,
    diags: Vec<Diagnostic>,
    names: Vec<String>,
    roles: Vec<NameRole>,
    name_spans: Vec<Span>,
    aggs: Vec<AggSpec>,
    captures: Vec<(NameId, CExpr)>,
}

impl<'a, 'p> PatternCx<'a, 'p> {
    fn new(
        src: &'a Source<'a>,
        prog: &'p mut Program,
        unit: TimeUnit,
        tables: &'a [TableDecl],
    ) -> Self {
        PatternCx {
            src,
            tables,
            prog,
            unit,
            diags: Vec::new(),
            names: Vec::new(),
            roles: Vec::new(),
            name_spans: Vec::new(),
            aggs: Vec::new(),
            captures: Vec::new(),
        }
    }

    /// The index of a configured table, or an error at `span` naming the tables there are.
    fn table(&mut self, name: &str, span: Span) -> Option<u16> {
        if let Some(i) = self.tables.iter().position(|t| t.name == name) {
            return Some(i as u16);
        }
        if self.tables.is_empty() {
            self.error_hint(span, format!("unknown table `{name}`: no lookup tables are configured"), "tables are declared in the configuration (or `kairos replay --table NAME=FILE`); to test a list-valued field use `contains(field, x)`");
        } else {
            let known: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
            self.error_hint(
                span,
                format!("unknown table `{name}`"),
                format!("the configured tables are: {}", known.join(", ")),
            );
        }
        None
    }

    /// `lookup(TABLE, KEY).COLUMN`, resolved to the column's index.
    fn lookup_field(
        &mut self,
        args: &[ast::Expr],
        rest: &[String],
        span: Span,
        sc: Scope,
    ) -> (CExpr, Ty) {
        let bad = (CExpr::Const(Default::default()), Ty::Any);
        let [t, k] = args else {
            self.error_hint(
                span,
                "`lookup` takes a table name and a key",
                "write `lookup(customers, key).tier`",
            );
            return bad;
        };
        let ExprKind::Name(tname) = &t.kind else {
            self.error_hint(
                t.span,
                "the first argument of `lookup` is a table name",
                "write `lookup(customers, key).tier`",
            );
            return bad;
        };
        let Some(ti) = self.table(tname, t.span) else {
            return bad;
        };
        if sc.key {
            self.error(
                span,
                "lookups cannot be used in `key`: the key routes events before tables are read",
            );
            return bad;
        }
        let (key, _) = self.expr(k, sc);
        let decl = &self.tables[ti as usize];
        let [col] = rest else {
            self.error_hint(
                span,
                format!("table `{tname}` has flat columns"),
                "read one column: `lookup(customers, key).tier`",
            );
            return bad;
        };
        let Some(ci) = decl.schema.index_of(col) else {
            let cols: Vec<&str> = decl
                .schema
                .columns()
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            let msg = format!("table `{tname}` has no column `{col}`");
            self.error_hint(span, msg, format!("its columns are: {}", cols.join(", ")));
            return bad;
        };
        let ty = match decl.schema.columns()[ci].ty {
            crate::table::ColumnType::Int | crate::table::ColumnType::Float => Ty::Num,
            crate::table::ColumnType::Str => Ty::Str,
            crate::table::ColumnType::Bool => Ty::Bool,
        };
        (
            CExpr::LookupField {
                table: ti,
                key: Box::new(key),
                col: ci as u32,
            },
            ty,
        )
    }

    fn error(&mut self, span: Span, msg: impl Into<String>) {
        self.diags
            .push(Diagnostic::at(self.src.file, self.src.text, span, msg));
    }

    fn error_hint(&mut self, span: Span, msg: impl Into<String>, hint: impl Into<String>) {
        self.diags
            .push(Diagnostic::at(self.src.file, self.src.text, span, msg).with_hint(hint));
    }

    fn name_id(&self, n: &str) -> Option<NameId> {
        self.names.iter().position(|x| x == n).map(|i| i as NameId)
    }

    fn declare(&mut self, id: &ast::Ident, role: NameRole) -> NameId {
        if lang::parser::CLAUSE_WORDS.contains(&id.name.as_str())
            || [
                "until", "key", "ts", "and", "or", "not", "in", "true", "false", "null",
            ]
            .contains(&id.name.as_str())
        {
            self.error(
                id.span,
                format!("`{}` is a reserved word and cannot name a step", id.name),
            );
        }
        if let Some(i) = self.name_id(&id.name) {
            let what = match (self.roles[i as usize], role) {
                (NameRole::Step, NameRole::Step) => {
                    "appears twice in the sequence; give each place its own name"
                }
                _ => "is used for two different things in the sequence",
            };
            self.error(id.span, format!("`{}` {what}", id.name));
            return i;
        }
        self.names.push(id.name.clone());
        self.roles.push(role);
        self.name_spans.push(id.span);
        (self.names.len() - 1) as NameId
    }

    fn pattern(&mut self, d: &ast::PatternDecl) -> Option<CompiledPattern> {
        // from
        if d.from.is_empty() {
            self.error_hint(
                d.name.span,
                format!("pattern `{}` has no `from` clause", d.name.name),
                "name the streams it reads: `from bets, payments`",
            );
        }
        let mut reads = Vec::new();
        for (i, s) in d.from.iter().enumerate() {
            if d.from[..i].iter().any(|o| o.name == s.name) {
                self.error(
                    s.span,
                    format!("stream `{}` is named twice in `from`", s.name),
                );
            }
            let sid = stream_id(&mut self.prog.streams, &s.name);
            if reads.len() <= sid {
                reads.resize(sid + 1, false);
            }
            reads[sid] = true;
        }
        let Some(seq) = &d.sequence else {
            self.error_hint(
                d.name.span,
                format!("pattern `{}` has no `match` clause", d.name.name),
                "say what to look for: `match a -> b`",
            );
            return None;
        };
        let Some(emit) = &d.emit else {
            self.error_hint(
                d.name.span,
                format!("pattern `{}` has no `emit` clause", d.name.name),
                "say what a match produces: `emit alerts { user: key }`",
            );
            return None;
        };

        // The sequence: declare names, build elements, check shapes.
        let elems = self.seq(seq, false, d.within.is_some());

        // Names used only in `define`.
        for def in &d.defines {
            if self.name_id(&def.name.name).is_none() {
                self.error_hint(
                    def.name.span,
                    format!("`{}` is defined but not used in `match`", def.name.name),
                    "remove it, or use it in the sequence or after `until`",
                );
            }
        }
        let mut def_of: Vec<Option<&ast::Define>> = vec![None; self.names.len()];
        for def in &d.defines {
            if let Some(id) = self.name_id(&def.name.name) {
                if def_of[id as usize].is_some() {
                    self.error(
                        def.name.span,
                        format!("`{}` is defined twice", def.name.name),
                    );
                }
                def_of[id as usize] = Some(def);
            }
        }
        for (i, role) in self.roles.clone().iter().enumerate() {
            if *role != NameRole::Step && def_of[i].is_none() {
                let what = if *role == NameRole::Negation {
                    "negated step"
                } else {
                    "`until` name"
                };
                self.error_hint(self.name_spans[i], format!("{what} `{}` has no definition", self.names[i]), format!("define it: `{} = STREAM(CONDITION)`; without one it would match every event", self.names[i]));
            }
        }

        // Conditions.
        let mut conds = Vec::with_capacity(self.names.len());
        for (i, def) in def_of.iter().enumerate() {
            let scope = Scope {
                own: Some(i as NameId),
                emit: false,
                agg_of: None,
                key: false,
            };
            let cond = match def {
                None => CExpr::Const(crate::event::Value::Bool(true)),
                Some(def) => {
                    let mut c = match &def.cond {
                        Some(e) => {
                            let (c, ty) = self.expr(e, scope);
                            if !ty.fits(Ty::Bool) {
                                self.error(
                                    e.span,
                                    format!(
                                        "a condition must be true or false, but this is {}",
                                        ty.name()
                                    ),
                                );
                            }
                            c
                        }
                        None => CExpr::Const(crate::event::Value::Bool(true)),
                    };
                    if let Some(s) = &def.stream {
                        match d.from.iter().position(|f| f.name == s.name) {
                            None => self.error_hint(
                                s.span,
                                format!("stream `{}` is not named in `from`", s.name),
                                format!(
                                    "add it: `from {}, {}`",
                                    d.from
                                        .iter()
                                        .map(|f| f.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", "),
                                    s.name
                                ),
                            ),
                            Some(_) if d.from.len() > 1 => {
                                let sid = stream_id(&mut self.prog.streams, &s.name);
                                c = CExpr::And(Box::new(CExpr::StreamIs(sid as u16)), Box::new(c));
                            }
                            Some(_) => {}
                        }
                    }
                    c
                }
            };
            conds.push(cond);
        }

        // key
        let key = d.key.as_ref().map(|k| {
            let (c, _) = self.expr(
                k,
                Scope {
                    own: None,
                    emit: false,
                    agg_of: None,
                    key: true,
                },
            );
            c
        });

        // emit
        let emit = self.emit(emit).with_json(&d.name.name);
        let on_timeout = d.on_timeout.as_ref().map(|e| {
            if d.within.is_none() {
                self.error_hint(
                    e.span,
                    "`on timeout emit` needs `within`: without a window nothing times out",
                    "add `within 10m` (or another duration)",
                );
            }
            self.emit(e).with_json(&d.name.name)
        });

        // skip
        let skip = match &d.skip {
            None => SkipStrategy::PastLast,
            Some((s, _)) => match s {
                ast::Skip::None => SkipStrategy::None,
                ast::Skip::ToNext => SkipStrategy::ToNext,
                ast::Skip::PastLast => SkipStrategy::PastLast,
                ast::Skip::ToFirst(n) | ast::Skip::ToLast(n) => match self.name_id(&n.name) {
                    Some(id) if self.roles[id as usize] == NameRole::Step => {
                        if matches!(s, ast::Skip::ToFirst(_)) {
                            SkipStrategy::ToFirst(id)
                        } else {
                            SkipStrategy::ToLast(id)
                        }
                    }
                    Some(_) => {
                        self.error(
                            n.span,
                            format!(
                                "`{}` binds no events, so there is nothing to skip to",
                                n.name
                            ),
                        );
                        SkipStrategy::PastLast
                    }
                    None => {
                        self.error(n.span, format!("unknown step `{}`", n.name));
                        SkipStrategy::PastLast
                    }
                },
            },
        };

        if !self.diags.is_empty() {
            return None;
        }
        let elems = elems?;
        let nfa = match nfa::build(&elems, d.within.is_some(), &self.names) {
            Ok(n) => n,
            Err(nfa::TooLarge) => {
                self.error_hint(
                    d.match_span,
                    format!(
                        "this sequence needs more than {} automaton states",
                        nfa::MAX_STATES
                    ),
                    "lower the repetition counts: `{n}` repeats what it applies to n times",
                );
                return None;
            }
        };
        let event_local = conds.iter().map(CExpr::is_event_local).collect();
        let (guards, residuals): (Vec<_>, Vec<_>) = conds.iter().map(split_local).unzip();
        let local_tests = conds
            .iter()
            .zip(&guards)
            .map(|(c, g)| match (c.is_event_local(), g) {
                (true, _) => Some(local::LocalTest::new(c)),
                (false, Some(g)) => Some(local::LocalTest::new(g)),
                (false, None) => None,
            })
            .collect();
        Some(CompiledPattern {
            name: d.name.name.clone(),
            reads,
            key,
            event_time: d.time.is_some(),
            within: d.within.map(|w| w.0),
            names: self.names.clone(),
            roles: self.roles.clone(),
            conds,
            event_local,
            guards,
            residuals,
            local_tests,
            aggs: std::mem::take(&mut self.aggs),
            captures: std::mem::take(&mut self.captures),
            nfa,
            emit,
            on_timeout,
            skip,
            sequence: self.src.text[d.match_span.start as usize..d.match_span.end as usize]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        })
    }

    fn emit(&mut self, e: &ast::Emit) -> EmitSpec {
        let mut fields: Vec<(String, CExpr)> = Vec::new();
        for (name, ex) in &e.fields {
            if fields.iter().any(|(n, _)| *n == name.name) {
                self.error(name.span, format!("field `{}` is emitted twice", name.name));
            }
            let (c, _) = self.expr(
                ex,
                Scope {
                    own: None,
                    emit: true,
                    agg_of: None,
                    key: false,
                },
            );
            fields.push((name.name.clone(), c));
        }
        EmitSpec {
            sink: e.sink.name.clone(),
            fields,
            json: Default::default(),
        }
    }

    /// Builds the elements of a sequence and checks the shapes the language rejects.
    fn seq(&mut self, seq: &ast::Seq, in_group: bool, has_window: bool) -> Option<Vec<Elem>> {
        let mut out = Vec::new();
        let mut ok = true;
        let n = seq.items.len();
        for (i, item) in seq.items.iter().enumerate() {
            let e = &item.elem;
            let op = if i == 0 { Contiguity::Relaxed } else { item.op };
            let kind = match &e.kind {
                ElementKind::Step(id) => ElemKind::Single(vec![self.declare(id, NameRole::Step)]),
                ElementKind::Not(id) => {
                    let x = self.declare(id, NameRole::Negation);
                    if i == 0 {
                        self.error_hint(
                            e.span,
                            if in_group {
                                "a group cannot start with a negation"
                            } else {
                                "a pattern cannot start with a negation"
                            },
                            "a negation says what must not happen after a step: `a -> !x -> b`",
                        );
                        ok = false;
                    }
                    if let Some(q) = e.quant {
                        self.error(q.span, "a negated step cannot have a quantifier");
                        ok = false;
                    }
                    if let Some(u) = &e.until {
                        self.error(u.span, "`until` applies to a looping step, not a negation");
                        ok = false;
                    }
                    match op {
                        Contiguity::Strict => ElemKind::NotNext(x),
                        Contiguity::Relaxed => ElemKind::NotFollow(x),
                        Contiguity::Any => {
                            self.error_hint(item.op_span, "a negation cannot follow `~>`", "write `a !x` (the next event is not an x) or `a -> !x -> b` (no x in between)");
                            ok = false;
                            ElemKind::NotFollow(x)
                        }
                    }
                }
                ElementKind::Group(alts) => {
                    if alts.len() > 1 {
                        let mut names = Vec::new();
                        for alt in alts {
                            match alt.items.as_slice() {
                                [only]
                                    if only.elem.quant.is_none() && only.elem.until.is_none() =>
                                {
                                    match &only.elem.kind {
                                        ElementKind::Step(id) => {
                                            names.push(self.declare(id, NameRole::Step))
                                        }
                                        _ => {
                                            self.error(
                                                only.elem.span,
                                                "each branch of an alternation is a single step",
                                            );
                                            ok = false;
                                        }
                                    }
                                }
                                _ => {
                                    let sp = alt.items[0]
                                        .elem
                                        .span
                                        .to(alt.items[alt.items.len() - 1].elem.span);
                                    self.error_hint(sp, "each branch of an alternation is a single step", "write `(a | b)` and give each step its condition under `define`");
                                    ok = false;
                                }
                            }
                        }
                        ElemKind::Single(names)
                    } else {
                        let inner = &alts[0];
                        match inner.items.as_slice() {
                            [only] if only.elem.quant.is_none() && only.elem.until.is_none() => {
                                match &only.elem.kind {
                                    ElementKind::Step(id) => {
                                        ElemKind::Single(vec![self.declare(id, NameRole::Step)])
                                    }
                                    _ => match self.seq(inner, true, has_window) {
                                        Some(v) => ElemKind::Group(v),
                                        None => {
                                            ok = false;
                                            ElemKind::Group(Vec::new())
                                        }
                                    },
                                }
                            }
                            _ => match self.seq(inner, true, has_window) {
                                Some(v) => ElemKind::Group(v),
                                None => {
                                    ok = false;
                                    ElemKind::Group(Vec::new())
                                }
                            },
                        }
                    }
                }
            };
            let (looping, times, optional) = match e.quant {
                None => (false, (1, 1), false),
                Some(q) => {
                    let lo = q.min.max(1);
                    match q.max {
                        None => (true, (lo, lo), q.min == 0),
                        Some(m) => (false, (lo, m), q.min == 0),
                    }
                }
            };
            let repeats = looping || times.0 != times.1;
            if let ElemKind::Group(inner) = &kind {
                let all_optional = inner.iter().all(|x| {
                    x.optional || matches!(x.kind, ElemKind::NotNext(_) | ElemKind::NotFollow(_))
                });
                if (looping || times.1 > 1) && all_optional {
                    self.error_hint(
                        e.span,
                        "a repeated group needs at least one required step",
                        "every step of this group is optional, so it could repeat without an event",
                    );
                    ok = false;
                }
            }
            // Flink has no greedy groups (`greedy()` on a group pattern is rejected): a repeated
            // group is reluctant, and so is any loop after `~>`.
            let is_group = matches!(kind, ElemKind::Group(_));
            let greedy = e.quant.map(|q| q.greedy).unwrap_or(false)
                && op != Contiguity::Any
                && repeats
                && !is_group;
            let until = match &e.until {
                None => None,
                Some(u) => {
                    if !looping {
                        self.error_hint(
                            u.span,
                            "`until` needs a looping step",
                            "use it after `+`, `*` or `{n,}`: `b+ until x`",
                        );
                        ok = false;
                    }
                    Some(self.declare(u, NameRole::Until))
                }
            };
            // Shapes that Flink CEP rejects too.
            if i + 1 < n {
                let next = &seq.items[i + 1];
                let next_not = matches!(next.elem.kind, ElementKind::Not(_));
                if next_not && optional {
                    self.error_hint(e.span, "an optional step cannot be directly followed by a negation", "make the step required, or write two patterns, one with it and one without");
                    ok = false;
                }
                let next_optional = next.elem.quant.map(|q| q.min == 0).unwrap_or(false);
                if !next_not && next_optional && greedy && repeats {
                    self.error_hint(
                        next.elem.span,
                        "a greedy loop cannot be directly followed by an optional step",
                        "make the loop reluctant: `b+? c?`",
                    );
                    ok = false;
                }
                if let ElemKind::NotFollow(_) = kind {
                    if next.op == Contiguity::Strict && !next_not {
                        self.error_hint(
                            next.elem.span,
                            "after `-> !x` the next step joins with `->` or `~>`",
                            "write `a -> !x -> b`",
                        );
                        ok = false;
                    }
                }
            } else if let ElemKind::NotFollow(_) = kind {
                if in_group {
                    self.error(e.span, "a group cannot end with `-> !x`");
                    ok = false;
                } else if !has_window {
                    self.error_hint(
                        e.span,
                        "a pattern that ends with `-> !x` (absence) needs `within`",
                        "add `within 10m`: the match is produced when the window closes with no x",
                    );
                    ok = false;
                }
            }
            out.push(Elem {
                kind,
                consuming: op,
                inner: op,
                looping,
                times,
                optional,
                greedy,
                until,
            });
        }
        if ok {
            Some(out)
        } else {
            None
        }
    }

    /// Registers a value to capture from events bound to `name`; returns its index among the
    /// captures of that name.
    fn add_capture(&mut self, name: NameId, expr: CExpr) -> u32 {
        let same_name = self.captures.iter().filter(|c| c.0 == name);
        if let Some(i) = same_name.clone().position(|c| c.1 == expr) {
            return i as u32;
        }
        let i = same_name.count() as u32;
        self.captures.push((name, expr));
        i
    }

    fn add_agg(&mut self, spec: AggSpec) -> u32 {
        if let Some(i) = self.aggs.iter().position(|a| *a == spec) {
            return i as u32;
        }
        self.aggs.push(spec);
        (self.aggs.len() - 1) as u32
    }

    /// A step named where an expression needs it: checks that it binds events.
    fn step_ref(&mut self, name: &str, span: Span) -> Option<NameId> {
        match self.name_id(name) {
            Some(id) if self.roles[id as usize] == NameRole::Step => Some(id),
            Some(_) => {
                self.error(
                    span,
                    format!("`{name}` binds no events (it is a negation or an `until` condition)"),
                );
                None
            }
            None => {
                let hint = self.steps_hint();
                self.error_hint(span, format!("unknown step `{name}`"), hint);
                None
            }
        }
    }

    /// "the steps of this pattern are: a, b", for an error that names no step.
    fn steps_hint(&self) -> String {
        let steps: Vec<&str> = self
            .names
            .iter()
            .zip(&self.roles)
            .filter(|(_, r)| **r == NameRole::Step)
            .map(|(n, _)| n.as_str())
            .collect();
        format!("the steps of this pattern are: {}", steps.join(", "))
    }

    /// `a.b.c` as a list of names, if the expression is a plain dotted path.
    fn path_of(e: &ast::Expr) -> Option<Vec<(String, Span)>> {
        match &e.kind {
            ExprKind::Name(n) => Some(vec![(n.clone(), e.span)]),
            ExprKind::Member(base, f) => {
                let mut p = Self::path_of(base)?;
                p.push((f.name.clone(), f.span));
                Some(p)
            }
            _ => None,
        }
    }

    fn field(&mut self, path: &[String]) -> CExpr {
        CExpr::Field(intern_field(&mut self.prog.fields, path) as u32)
    }

    /// The value of `rest` (a field path, or `ts`) on an event bound to `step`.
    fn bound_value(&mut self, rest: &[String]) -> CExpr {
        if rest.len() == 1 && rest[0] == "ts" {
            CExpr::Ts
        } else {
            self.field(rest)
        }
    }

    fn expr(&mut self, e: &ast::Expr, sc: Scope) -> (CExpr, Ty) {
        match &e.kind {
            ExprKind::Lit(l) => match l {
                Lit::Int(i) => (CExpr::Const((*i).into()), Ty::Num),
                Lit::Float(f) => (CExpr::Const((*f).into()), Ty::Num),
                Lit::Str(s) => (CExpr::Const(s.as_str().into()), Ty::Str),
                Lit::Bool(b) => (CExpr::Const((*b).into()), Ty::Bool),
                Lit::Null => (CExpr::Const(crate::event::Value::Null), Ty::Null),
                Lit::Duration(ns) => (
                    CExpr::Const(crate::event::Value::Int(ns / self.unit.nanos())),
                    Ty::Num,
                ),
            },
            ExprKind::Name(_) | ExprKind::Member(..) => self.path_expr(e, sc),
            ExprKind::List(items) => {
                let cs = items.iter().map(|i| self.expr(i, sc).0).collect();
                (CExpr::List(cs), Ty::List)
            }
            ExprKind::Unary(UnOp::Neg, a) => {
                let (c, t) = self.expr(a, sc);
                if !t.fits(Ty::Num) {
                    self.error(a.span, format!("cannot negate {}", t.name()));
                }
                (CExpr::Neg(Box::new(c)), Ty::Num)
            }
            ExprKind::Unary(UnOp::Not, a) => {
                let (c, t) = self.expr(a, sc);
                if !t.fits(Ty::Bool) {
                    self.error(
                        a.span,
                        format!("`not` needs a condition, but this is {}", t.name()),
                    );
                }
                (CExpr::Not(Box::new(c)), Ty::Bool)
            }
            ExprKind::Binary(op, a, b) => self.binary(*op, a, b, e.span, sc),
            ExprKind::Call(f, args) => self.call(f, args, e.span, sc),
        }
    }

    fn path_expr(&mut self, e: &ast::Expr, sc: Scope) -> (CExpr, Ty) {
        let Some(path) = Self::path_of(e) else {
            // A member of something other than a name: first(b).x, lookup(T, k).f, ...
            let ExprKind::Member(base, field) = &e.kind else {
                unreachable!("path_of handles names")
            };
            let mut rest = vec![field.name.clone()];
            let mut b = &**base;
            while let ExprKind::Member(inner, f) = &b.kind {
                rest.insert(0, f.name.clone());
                b = inner;
            }
            if let ExprKind::Call(fname, args) = &b.kind {
                match fname.name.as_str() {
                    "first" | "last" | "prev" => {
                        let step = match args.as_slice() {
                            [ast::Expr {
                                kind: ExprKind::Name(n),
                                span,
                            }] => self.step_ref(n, *span),
                            _ => {
                                self.error(
                                    b.span,
                                    format!(
                                        "`{}` takes one step: `{}(b).field`",
                                        fname.name, fname.name
                                    ),
                                );
                                None
                            }
                        };
                        let Some(step) = step else {
                            return (CExpr::Const(Default::default()), Ty::Any);
                        };
                        if sc.key || sc.agg_of.is_some() {
                            self.error(b.span, "steps cannot be read here");
                            return (CExpr::Const(Default::default()), Ty::Any);
                        }
                        let value = self.bound_value(&rest);
                        let own = sc.own == Some(step);
                        return match fname.name.as_str() {
                            "prev" => {
                                if !own {
                                    self.error_hint(b.span, format!("`prev({})` is only meaningful inside the condition of `{}`", self.names[step as usize], self.names[step as usize]), "elsewhere use `last(b).x` or `first(b).x`");
                                }
                                let idx = self.add_agg(AggSpec {
                                    name: step,
                                    kind: AggKind::Last,
                                    expr: value,
                                });
                                (
                                    CExpr::Agg {
                                        idx,
                                        with_current: false,
                                    },
                                    Ty::Any,
                                )
                            }
                            "last" if own => (value, Ty::Any),
                            k => {
                                let kind = if k == "first" {
                                    AggKind::First
                                } else {
                                    AggKind::Last
                                };
                                let idx = self.add_agg(AggSpec {
                                    name: step,
                                    kind,
                                    expr: value,
                                });
                                (
                                    CExpr::Agg {
                                        idx,
                                        with_current: own,
                                    },
                                    Ty::Any,
                                )
                            }
                        };
                    }
                    "lookup" => return self.lookup_field(args, &rest, e.span, sc),
                    _ => {}
                }
            }
            self.error(
                field.span,
                "only events, steps, `first/last/prev(step)` and lookups have fields",
            );
            return (CExpr::Const(Default::default()), Ty::Any);
        };
        let (head, hspan) = (&path[0].0, path[0].1);
        let rest: Vec<String> = path[1..].iter().map(|p| p.0.clone()).collect();
        if let Some(id) = self.name_id(head) {
            if self.roles[id as usize] != NameRole::Step {
                self.error(
                    hspan,
                    format!("`{head}` binds no events (it is a negation or an `until` condition)"),
                );
                return (CExpr::Const(Default::default()), Ty::Any);
            }
            if rest.is_empty() {
                self.error_hint(
                    hspan,
                    format!("`{head}` is a step; name one of its fields"),
                    format!("write `{head}.amount`, or `count({head})`"),
                );
                return (CExpr::Const(Default::default()), Ty::Any);
            }
            if sc.key {
                self.error(hspan, "`key` reads the current event only, not steps");
                return (CExpr::Const(Default::default()), Ty::Any);
            }
            if let Some(agg) = sc.agg_of {
                if agg != id {
                    self.error_hint(
                        hspan,
                        format!("an aggregate reads one step, but this names `{head}` too"),
                        "aggregate each step separately",
                    );
                }
                let v = self.bound_value(&rest);
                return (v, if rest == ["ts"] { Ty::Num } else { Ty::Any });
            }
            let ty = if rest == ["ts"] { Ty::Num } else { Ty::Any };
            let value = self.bound_value(&rest);
            if sc.own == Some(id) {
                // In a step's own condition, `b.x` is the event under test.
                return (value, ty);
            }
            let idx = self.add_agg(AggSpec {
                name: id,
                kind: AggKind::Last,
                expr: value,
            });
            return (
                CExpr::Agg {
                    idx,
                    with_current: false,
                },
                ty,
            );
        }
        match head.as_str() {
            "key" if rest.is_empty() => return (CExpr::Key, Ty::Any),
            "ts" if rest.is_empty() => return (CExpr::Ts, Ty::Num),
            _ => {}
        }
        if sc.emit && !rest.is_empty() {
            let hint = self.steps_hint();
            self.error_hint(hspan, format!("unknown step `{head}`"), hint);
            return (CExpr::Const(Default::default()), Ty::Any);
        }
        if sc.emit {
            self.error_hint(
                hspan,
                format!(
                    "`emit` has no current event, so `{}` must name a step",
                    path.iter()
                        .map(|p| p.0.as_str())
                        .collect::<Vec<_>>()
                        .join(".")
                ),
                format!("write `STEP.{head}`, e.g. the step whose field you mean"),
            );
            return (CExpr::Const(Default::default()), Ty::Any);
        }
        if sc.agg_of.is_some() {
            self.error_hint(
                hspan,
                format!("name the step whose `{head}` to aggregate"),
                format!("write `sum(b.{head})`"),
            );
            return (CExpr::Const(Default::default()), Ty::Any);
        }
        let full: Vec<String> = path.iter().map(|p| p.0.clone()).collect();
        (self.field(&full), Ty::Any)
    }

    fn binary(
        &mut self,
        op: BinOp,
        a: &ast::Expr,
        b: &ast::Expr,
        span: Span,
        sc: Scope,
    ) -> (CExpr, Ty) {
        if op == BinOp::In {
            if let ExprKind::Name(t) = &b.kind {
                if self.name_id(t).is_none() && t != "key" && t != "ts" {
                    let Some(ti) = self.table(t, b.span) else {
                        return (CExpr::Const(Default::default()), Ty::Bool);
                    };
                    let (key, _) = self.expr(a, sc);
                    return (
                        CExpr::InTable {
                            table: ti,
                            key: Box::new(key),
                        },
                        Ty::Bool,
                    );
                }
            }
        }
        let (ca, ta) = self.expr(a, sc);
        let (cb, tb) = self.expr(b, sc);
        let (ca, cb) = (Box::new(ca), Box::new(cb));
        match op {
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                for (t, ex) in [(ta, a), (tb, b)] {
                    if !t.fits(Ty::Num) {
                        self.error(
                            ex.span,
                            format!("`{}` needs numbers, but this is {}", op.symbol(), t.name()),
                        );
                    }
                }
                let aop = match op {
                    BinOp::Add => ArithOp::Add,
                    BinOp::Sub => ArithOp::Sub,
                    BinOp::Mul => ArithOp::Mul,
                    BinOp::Div => ArithOp::Div,
                    _ => ArithOp::Rem,
                };
                (CExpr::Arith(aop, ca, cb), Ty::Num)
            }
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let known = |t: Ty| t != Ty::Any && t != Ty::Null;
                if known(ta) && known(tb) && ta != tb {
                    self.error(
                        span,
                        format!("cannot compare {} with {}", ta.name(), tb.name()),
                    );
                } else if !matches!(op, BinOp::Eq | BinOp::Ne) {
                    for (t, ex) in [(ta, a), (tb, b)] {
                        if matches!(t, Ty::Bool | Ty::List) {
                            self.error(
                                ex.span,
                                format!(
                                    "`{}` orders numbers or strings, but this is {}",
                                    op.symbol(),
                                    t.name()
                                ),
                            );
                        }
                    }
                }
                if ta == Ty::Null || tb == Ty::Null {
                    self.error_hint(
                        span,
                        "comparing with null is always false",
                        "to give a missing field a default, write `field ?? default`",
                    );
                }
                let cop = match op {
                    BinOp::Eq => CmpOp::Eq,
                    BinOp::Ne => CmpOp::Ne,
                    BinOp::Lt => CmpOp::Lt,
                    BinOp::Le => CmpOp::Le,
                    BinOp::Gt => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                (CExpr::Cmp(cop, ca, cb), Ty::Bool)
            }
            BinOp::And | BinOp::Or => {
                for (t, ex) in [(ta, a), (tb, b)] {
                    if !t.fits(Ty::Bool) {
                        self.error(
                            ex.span,
                            format!(
                                "`{}` joins conditions, but this is {}",
                                op.symbol(),
                                t.name()
                            ),
                        );
                    }
                }
                if op == BinOp::And {
                    (CExpr::And(ca, cb), Ty::Bool)
                } else {
                    (CExpr::Or(ca, cb), Ty::Bool)
                }
            }
            BinOp::In => {
                if !tb.fits(Ty::List) && tb != Ty::Str {
                    self.error(
                        b.span,
                        format!("`in` needs a list, but this is {}", tb.name()),
                    );
                }
                (CExpr::In(ca, cb), Ty::Bool)
            }
            BinOp::Coalesce => {
                let ty = if ta == tb {
                    ta
                } else if ta == Ty::Null {
                    tb
                } else {
                    Ty::Any
                };
                (CExpr::Coalesce(ca, cb), ty)
            }
        }
    }

    fn call(&mut self, f: &ast::Ident, args: &[ast::Expr], span: Span, sc: Scope) -> (CExpr, Ty) {
        let bad = (CExpr::Const(Default::default()), Ty::Any);
        let name = f.name.as_str();
        let arity = |n: usize, this: &mut Self| -> bool {
            if args.len() != n {
                this.error(
                    span,
                    format!(
                        "`{name}` takes {n} argument{}, not {}",
                        if n == 1 { "" } else { "s" },
                        args.len()
                    ),
                );
                false
            } else {
                true
            }
        };
        match name {
            "count" => {
                if !arity(1, self) {
                    return bad;
                }
                let ExprKind::Name(n) = &args[0].kind else {
                    self.error_hint(args[0].span, "`count` takes a step", "write `count(b)`");
                    return bad;
                };
                let Some(step) = self.step_ref(n, args[0].span) else {
                    return bad;
                };
                if sc.key || sc.agg_of.is_some() {
                    self.error(span, "aggregates cannot be used here");
                    return bad;
                }
                let idx = self.add_agg(AggSpec {
                    name: step,
                    kind: AggKind::Count,
                    expr: CExpr::Const(Default::default()),
                });
                (
                    CExpr::Agg {
                        idx,
                        with_current: sc.own == Some(step),
                    },
                    Ty::Num,
                )
            }
            "sum" | "avg" | "min" | "max" | "collect" => {
                if !arity(1, self) {
                    return bad;
                }
                if sc.key || sc.agg_of.is_some() {
                    self.error(span, "aggregates cannot be used here");
                    return bad;
                }
                let Some(step) = self.single_step_in(&args[0]) else {
                    // `collect(c.id)` where `c` is not a step: the same error as `c.id` alone.
                    if let Some(path) = Self::path_of(&args[0]).filter(|p| p.len() > 1) {
                        if self.step_ref(&path[0].0, path[0].1).is_none() {
                            return bad;
                        }
                    }
                    self.error_hint(
                        args[0].span,
                        format!("`{name}` aggregates a step's field"),
                        format!("write `{name}(b.amount)`"),
                    );
                    return bad;
                };
                let (value, ty) = self.expr(
                    &args[0],
                    Scope {
                        own: None,
                        emit: false,
                        agg_of: Some(step),
                        key: false,
                    },
                );
                let with_current = sc.own == Some(step);
                match name {
                    "collect" => {
                        let capture = self.add_capture(step, value.clone());
                        (
                            CExpr::Collect {
                                name: step,
                                capture,
                                expr: Box::new(value),
                                with_current,
                            },
                            Ty::List,
                        )
                    }
                    "avg" => {
                        let sum = self.add_agg(AggSpec {
                            name: step,
                            kind: AggKind::Sum,
                            expr: value.clone(),
                        });
                        let count = self.add_agg(AggSpec {
                            name: step,
                            kind: AggKind::CountValues,
                            expr: value,
                        });
                        (
                            CExpr::Avg {
                                sum,
                                count,
                                with_current,
                            },
                            Ty::Num,
                        )
                    }
                    k => {
                        if name == "sum" && !ty.fits(Ty::Num) {
                            self.error(
                                args[0].span,
                                format!("`sum` needs numbers, but this is {}", ty.name()),
                            );
                        }
                        let kind = match k {
                            "sum" => AggKind::Sum,
                            "min" => AggKind::Min,
                            _ => AggKind::Max,
                        };
                        let idx = self.add_agg(AggSpec {
                            name: step,
                            kind,
                            expr: value,
                        });
                        (
                            CExpr::Agg { idx, with_current },
                            if k == "sum" { Ty::Num } else { ty },
                        )
                    }
                }
            }
            "first" | "last" | "prev" => {
                self.error_hint(
                    span,
                    format!("`{name}(b)` is an event; name one of its fields"),
                    format!("write `{name}(b).amount`"),
                );
                bad
            }
            "abs" | "lower" | "upper" | "len" => {
                if !arity(1, self) {
                    return bad;
                }
                let (c, t) = self.expr(&args[0], sc);
                let (want, out, func) = match name {
                    "abs" => (Ty::Num, Ty::Num, Func::Abs),
                    "lower" => (Ty::Str, Ty::Str, Func::Lower),
                    "upper" => (Ty::Str, Ty::Str, Func::Upper),
                    _ => (Ty::Any, Ty::Num, Func::Len),
                };
                if want != Ty::Any && !t.fits(want) {
                    self.error(
                        args[0].span,
                        format!("`{name}` needs {}, but this is {}", want.name(), t.name()),
                    );
                }
                if func == Func::Len && !(t.fits(Ty::Str) || t == Ty::List) {
                    self.error(
                        args[0].span,
                        format!("`len` needs a string or a list, but this is {}", t.name()),
                    );
                }
                (CExpr::Call(func, vec![c]), out)
            }
            "starts_with" | "ends_with" | "contains" => {
                if !arity(2, self) {
                    return bad;
                }
                let (a, ta) = self.expr(&args[0], sc);
                let (b, tb) = self.expr(&args[1], sc);
                let func = match name {
                    "starts_with" => Func::StartsWith,
                    "ends_with" => Func::EndsWith,
                    _ => Func::Contains,
                };
                if func != Func::Contains || ta != Ty::List {
                    if !(ta.fits(Ty::Str) || func == Func::Contains && ta == Ty::List) {
                        self.error(
                            args[0].span,
                            format!("`{name}` needs a string, but this is {}", ta.name()),
                        );
                    }
                    if ta != Ty::List && !tb.fits(Ty::Str) {
                        self.error(
                            args[1].span,
                            format!("`{name}` needs a string, but this is {}", tb.name()),
                        );
                    }
                }
                (CExpr::Call(func, vec![a, b]), Ty::Bool)
            }
            "lookup" => {
                let table = args.first().and_then(|a| match &a.kind {
                    ExprKind::Name(n) => Some((n.clone(), a.span)),
                    _ => None,
                });
                match table {
                    Some((t, tspan)) => {
                        if self.table(&t, tspan).is_some() {
                            self.error_hint(
                                span,
                                format!("`lookup({t}, ..)` is a row, not a value"),
                                format!("read a column, `lookup({t}, key).COLUMN`, or test membership, `key in {t}`"),
                            );
                        }
                    }
                    None => self.error_hint(
                        span,
                        "`lookup` takes a table name and a key",
                        "write `lookup(customers, key).tier`",
                    ),
                }
                bad
            }
            other => {
                self.error_hint(f.span, format!("unknown function `{other}`"), "functions: count, sum, avg, min, max, collect, first, last, prev, abs, lower, upper, len, starts_with, ends_with, contains, lookup");
                bad
            }
        }
    }

    /// The single step that an aggregate's argument reads (`b` in `sum(b.x * b.y)`).
    fn single_step_in(&self, e: &ast::Expr) -> Option<NameId> {
        let mut found = None;
        fn walk(this: &PatternCx<'_, '_>, e: &ast::Expr, found: &mut Option<NameId>) {
            match &e.kind {
                ExprKind::Member(..) | ExprKind::Name(_) => {
                    if let Some(p) = PatternCx::path_of(e) {
                        if let Some(id) = this.name_id(&p[0].0) {
                            if found.is_none() {
                                *found = Some(id);
                            }
                        }
                    }
                }
                ExprKind::Unary(_, a) => walk(this, a, found),
                ExprKind::Binary(_, a, b) => {
                    walk(this, a, found);
                    walk(this, b, found)
                }
                ExprKind::Call(_, xs) | ExprKind::List(xs) => {
                    xs.iter().for_each(|x| walk(this, x, found))
                }
                ExprKind::Lit(_) => {}
            }
        }
        walk(self, e, &mut found);
        found.filter(|id| self.roles[*id as usize] == NameRole::Step)
    }
}

/// A condition that is not event-local as a whole, split into its event-local conjuncts (the
/// guard) and the others (the residual), each joined with `and`: the condition holds exactly
/// when both do, as a condition is a pure test. `(None, None)` where there is nothing to split:
/// the condition is event-local, or none of its conjuncts is.
fn split_local(cond: &CExpr) -> (Option<CExpr>, Option<CExpr>) {
    fn conjuncts<'a>(c: &'a CExpr, out: &mut Vec<&'a CExpr>) {
        match c {
            CExpr::And(a, b) => {
                conjuncts(a, out);
                conjuncts(b, out);
            }
            other => out.push(other),
        }
    }
    if cond.is_event_local() {
        return (None, None);
    }
    let mut all = Vec::new();
    conjuncts(cond, &mut all);
    let join = |parts: Vec<&CExpr>| {
        parts
            .into_iter()
            .cloned()
            .reduce(|a, b| CExpr::And(Box::new(a), Box::new(b)))
    };
    let (local, rest): (Vec<&CExpr>, Vec<&CExpr>) =
        all.into_iter().partition(|c| c.is_event_local());
    match join(local) {
        None => (None, None),
        guard => (guard, join(rest)),
    }
}

impl Program {
    /// The dotted path of the field in `slot`.
    fn field_name(&self, slot: usize) -> String {
        self.fields
            .get(slot)
            .map_or_else(String::new, |f| f.join("."))
    }

    /// A readable account of what each pattern compiled to, for `kairos check`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for p in &self.patterns {
            let streams: Vec<&str> = p
                .reads
                .iter()
                .enumerate()
                .filter(|(_, r)| **r)
                .map(|(i, _)| self.streams[i].as_str())
                .collect();
            let _ = writeln!(s, "pattern {}", p.name);
            let _ = writeln!(s, "  reads     {}", streams.join(", "));
            let key = match &p.key {
                Some(CExpr::Field(slot)) => self.field_name(*slot as usize),
                Some(_) => "an expression of each event".to_string(),
                None => "none (one partition)".to_string(),
            };
            let _ = writeln!(s, "  key       {key}");
            let time = if p.event_time {
                // One `time` clause per pattern, and a path has one slot: every stream the
                // pattern reads has the same time slot.
                let field = p
                    .reads
                    .iter()
                    .zip(&self.time_slots)
                    .find_map(|(r, t)| t.filter(|_| *r))
                    .map(|slot| self.field_name(slot))
                    .unwrap_or_default();
                format!("event time, field {field} ({})", self.unit.symbol())
            } else {
                "arrival time".to_string()
            };
            let _ = writeln!(s, "  time      {time}");
            if let Some(w) = p.within {
                let _ = writeln!(s, "  within    {}", fmt_duration(w));
            }
            let _ = writeln!(s, "  match     {}", p.sequence);
            let skip = match p.skip {
                SkipStrategy::None => "none".to_string(),
                SkipStrategy::ToNext => "to next".into(),
                SkipStrategy::PastLast => "past last".into(),
                SkipStrategy::ToFirst(n) => format!("to first {}", p.names[n as usize]),
                SkipStrategy::ToLast(n) => format!("to last {}", p.names[n as usize]),
            };
            let _ = writeln!(s, "  skip      {skip}");
            let fields: Vec<&str> = p.emit.fields.iter().map(|f| f.0.as_str()).collect();
            let _ = writeln!(s, "  emit      {} {{{}}}", p.emit.sink, fields.join(", "));
            if let Some(t) = &p.on_timeout {
                let fields: Vec<&str> = t.fields.iter().map(|f| f.0.as_str()).collect();
                let _ = writeln!(s, "  timeout   {} {{{}}}", t.sink, fields.join(", "));
            }
            let _ = writeln!(
                s,
                "  automaton {} states, {} running aggregates",
                p.nfa.states.len(),
                p.aggs.len()
            );
            s.push_str(&p.nfa.render(&p.names));
        }
        s
    }
}

fn fmt_duration(ns: i64) -> String {
    for (unit, n) in [
        ("d", 86_400_000_000_000i64),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if ns % n == 0 {
            return format!("{}{unit}", ns / n);
        }
    }
    format!("{ns}ns")
}
