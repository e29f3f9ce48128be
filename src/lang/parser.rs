//! The parser: tokens to [`PatternDecl`]s. It reports the first error of each pattern block and
//! resumes at the next `pattern`, so one run shows every broken block.

use super::ast::*;
use super::diag::Span;
use super::lexer::{Tok, Token};

/// Words that open a clause; a step may not be named after one.
pub const CLAUSE_WORDS: &[&str] = &[
    "pattern", "from", "key", "time", "within", "match", "define", "emit", "on", "skip",
];

#[derive(Debug, Clone)]
pub struct ParseError {
    pub span: Span,
    pub message: String,
    pub hint: Option<String>,
}

type PResult<T> = Result<T, ParseError>;

pub struct Parser<'t> {
    toks: &'t [Token],
    pos: usize,
    /// Depth of the tree being built (nesting plus operator chains): bounded, so that no input
    /// can exhaust the stack of the passes that walk the tree.
    depth: usize,
    /// Nesting of parentheses, brackets, groups and prefix operators, which the parser itself
    /// recurses on.
    nest: usize,
}

/// The deepest expression tree the parser accepts.
pub const MAX_DEPTH: usize = 256;
/// The deepest nesting of parentheses, brackets, groups and prefix operators.
pub const MAX_NEST: usize = 32;

fn err<T>(span: Span, message: impl Into<String>) -> PResult<T> {
    Err(ParseError {
        span,
        message: message.into(),
        hint: None,
    })
}

impl<'t> Parser<'t> {
    pub fn new(toks: &'t [Token]) -> Self {
        Parser {
            toks,
            pos: 0,
            depth: 0,
            nest: 0,
        }
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }
    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.pos + n).min(self.toks.len() - 1)].tok
    }
    fn span(&self) -> Span {
        self.toks[self.pos].span
    }
    fn prev_span(&self) -> Span {
        self.toks[self.pos.saturating_sub(1)].span
    }
    fn bump(&mut self) -> &Token {
        let t = &self.toks[self.pos];
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == t {
            self.bump();
            true
        } else {
            false
        }
    }
    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == w)
    }
    fn eat_word(&mut self, w: &str) -> bool {
        if self.is_word(w) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn expect(&mut self, t: Tok, what: &str) -> PResult<Span> {
        if self.peek() == &t {
            Ok(self.bump().span)
        } else {
            err(
                self.span(),
                format!("expected {what}, found {}", self.peek().describe()),
            )
        }
    }
    fn expect_word(&mut self, w: &str) -> PResult<Span> {
        if self.is_word(w) {
            Ok(self.bump().span)
        } else {
            err(
                self.span(),
                format!("expected `{w}`, found {}", self.peek().describe()),
            )
        }
    }
    fn ident(&mut self, what: &str) -> PResult<Ident> {
        match self.peek().clone() {
            Tok::Ident(name) => {
                let span = self.bump().span;
                Ok(Ident { name, span })
            }
            other => err(
                self.span(),
                format!("expected {what}, found {}", other.describe()),
            ),
        }
    }
    /// One more level of tree depth (an operator in a chain).
    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(
                self.span(),
                format!("nested more than {MAX_DEPTH} levels deep"),
            );
        }
        Ok(())
    }

    /// Runs `f` one level of recursion deeper.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> PResult<T>) -> PResult<T> {
        let (depth, nest) = (self.depth, self.nest);
        self.nest += 1;
        let r = if self.nest > MAX_NEST {
            err(
                self.span(),
                format!("nested more than {MAX_NEST} levels deep"),
            )
        } else {
            self.enter().and_then(|_| f(self))
        };
        (self.depth, self.nest) = (depth, nest);
        r
    }

    fn at_clause(&self) -> bool {
        matches!(self.peek(), Tok::Ident(s) if CLAUSE_WORDS.contains(&s.as_str()))
            || self.peek() == &Tok::Eof
    }

    /// Parses a whole file. Returns the patterns that parsed and one error per broken block.
    pub fn parse_file(&mut self) -> (Vec<PatternDecl>, Vec<ParseError>) {
        let mut pats = Vec::new();
        let mut errs = Vec::new();
        while self.peek() != &Tok::Eof {
            if !self.is_word("pattern") {
                errs.push(ParseError {
                    span: self.span(),
                    message: format!("expected `pattern`, found {}", self.peek().describe()),
                    hint: Some("a pattern file holds `pattern NAME ...` blocks".into()),
                });
                self.recover();
                continue;
            }
            self.depth = 0;
            self.nest = 0;
            match self.pattern() {
                Ok(p) => pats.push(p),
                Err(e) => {
                    errs.push(e);
                    self.recover();
                }
            }
        }
        (pats, errs)
    }

    fn recover(&mut self) {
        self.bump();
        while self.peek() != &Tok::Eof && !self.is_word("pattern") {
            self.bump();
        }
    }

    fn pattern(&mut self) -> PResult<PatternDecl> {
        self.expect_word("pattern")?;
        let name = self.ident("a pattern name")?;
        let mut p = PatternDecl {
            name,
            from: Vec::new(),
            key: None,
            time: None,
            within: None,
            sequence: None,
            match_span: Span::default(),
            defines: Vec::new(),
            emit: None,
            on_timeout: None,
            skip: None,
        };
        let mut seen: Vec<&'static str> = Vec::new();
        loop {
            let clause_span = self.span();
            let word = match self.peek() {
                Tok::Ident(w) if w == "pattern" => break,
                Tok::Eof => break,
                Tok::Ident(w) => w.clone(),
                other => {
                    return err(
                        clause_span,
                        format!("expected a clause (from, key, time, within, match, define, emit, on timeout, skip), found {}", other.describe()),
                    )
                }
            };
            let canon: &'static str = match word.as_str() {
                "from" => "from",
                "key" => "key",
                "time" => "time",
                "within" => "within",
                "match" => "match",
                "define" => "define",
                "emit" => "emit",
                "on" => "on timeout",
                "skip" => "skip",
                _ => {
                    return Err(ParseError {
                        span: clause_span,
                        message: format!("unknown clause `{word}`"),
                        hint: Some("clauses are: from, key, time, within, match, define, emit, on timeout emit, skip".into()),
                    })
                }
            };
            if seen.contains(&canon) {
                return err(clause_span, format!("duplicate `{canon}` clause"));
            }
            seen.push(canon);
            self.bump();
            match canon {
                "from" => loop {
                    p.from.push(self.ident("a stream name")?);
                    if !self.eat(&Tok::Comma) {
                        break;
                    }
                },
                "key" => p.key = Some(self.expr()?),
                "time" => {
                    let mut path = vec![self.ident("a time field")?];
                    while self.eat(&Tok::Dot) {
                        path.push(self.ident("a field name")?);
                    }
                    p.time = Some(path);
                }
                "within" => match self.peek().clone() {
                    Tok::Duration(ns) => {
                        let s = self.bump().span;
                        if ns <= 0 {
                            return err(s, "`within` must be longer than zero");
                        }
                        p.within = Some((ns, s));
                    }
                    other => {
                        return Err(ParseError {
                            span: self.span(),
                            message: format!("expected a duration, found {}", other.describe()),
                            hint: Some(
                                "write a number with a unit: 250us, 10ms, 5s, 30m, 2h, 1d".into(),
                            ),
                        })
                    }
                },
                "match" => {
                    let start = self.span();
                    let seq = self.seq(false)?;
                    p.match_span = start.to(self.prev_span());
                    p.sequence = Some(seq);
                }
                "define" => {
                    while matches!(self.peek(), Tok::Ident(_)) && self.peek_at(1) == &Tok::Assign {
                        p.defines.push(self.define()?);
                    }
                    if p.defines.is_empty() {
                        return err(self.span(), "expected `NAME = ...` after `define`");
                    }
                }
                "emit" => p.emit = Some(self.emit(clause_span)?),
                "on timeout" => {
                    self.expect_word("timeout")?;
                    self.expect_word("emit")?;
                    p.on_timeout = Some(self.emit(clause_span)?);
                }
                "skip" => {
                    let s = self.skip()?;
                    p.skip = Some((s, clause_span.to(self.prev_span())));
                }
                _ => unreachable!("every clause word is handled above"),
            }
        }
        Ok(p)
    }

    fn define(&mut self) -> PResult<Define> {
        let name = self.ident("a step name")?;
        self.expect(Tok::Assign, "`=`")?;
        let (stream, cond) =
            match self.peek().clone() {
                Tok::LParen => {
                    self.bump();
                    let e = self.expr()?;
                    self.expect(Tok::RParen, "`)`")?;
                    (None, Some(e))
                }
                Tok::Ident(_) => {
                    let s = self.ident("a stream name")?;
                    if self.eat(&Tok::LParen) {
                        let e = self.expr()?;
                        self.expect(Tok::RParen, "`)`")?;
                        (Some(s), Some(e))
                    } else {
                        (Some(s), None)
                    }
                }
                other => return Err(ParseError {
                    span: self.span(),
                    message: format!("expected a condition, found {}", other.describe()),
                    hint: Some(
                        "write `NAME = STREAM(CONDITION)`, `NAME = STREAM` or `NAME = (CONDITION)`"
                            .into(),
                    ),
                }),
            };
        let span = name.span.to(self.prev_span());
        Ok(Define {
            name,
            stream,
            cond,
            span,
        })
    }

    fn emit(&mut self, start: Span) -> PResult<Emit> {
        let sink = self.ident("a sink name")?;
        self.expect(Tok::LBrace, "`{`")?;
        let mut fields = Vec::new();
        while self.peek() != &Tok::RBrace {
            let name = match self.peek().clone() {
                Tok::Str(s) => {
                    let span = self.bump().span;
                    Ident { name: s, span }
                }
                _ => self.ident("a field name")?,
            };
            self.expect(Tok::Colon, "`:`")?;
            let e = self.expr()?;
            fields.push((name, e));
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        self.expect(Tok::RBrace, "`}` or `,`")?;
        Ok(Emit {
            sink,
            fields,
            span: start.to(self.prev_span()),
        })
    }

    fn skip(&mut self) -> PResult<Skip> {
        if self.eat_word("none") {
            return Ok(Skip::None);
        }
        if self.eat_word("past") {
            self.expect_word("last")?;
            return Ok(Skip::PastLast);
        }
        if self.eat_word("to") {
            if self.eat_word("next") {
                return Ok(Skip::ToNext);
            }
            if self.eat_word("first") {
                return Ok(Skip::ToFirst(self.ident("a step name")?));
            }
            if self.eat_word("last") {
                return Ok(Skip::ToLast(self.ident("a step name")?));
            }
        }
        Err(ParseError {
            span: self.span(),
            message: format!("expected a skip strategy, found {}", self.peek().describe()),
            hint: Some("write `skip none`, `skip to next`, `skip past last`, `skip to first STEP` or `skip to last STEP`".into()),
        })
    }

    // ---- the sequence ----

    fn starts_element(&self) -> bool {
        match self.peek() {
            Tok::Ident(s) => !CLAUSE_WORDS.contains(&s.as_str()) && s != "until",
            Tok::LParen | Tok::Bang => true,
            _ => false,
        }
    }

    fn seq(&mut self, in_group: bool) -> PResult<Seq> {
        let mut items = Vec::new();
        let first_span = self.span();
        if !self.starts_element() {
            return err(
                first_span,
                format!("expected a step, found {}", self.peek().describe()),
            );
        }
        let elem = self.element()?;
        items.push(SeqItem {
            op: Contiguity::Relaxed,
            op_span: elem.span,
            elem,
        });
        loop {
            let op_span = self.span();
            let op = match self.peek() {
                Tok::Arrow => {
                    self.bump();
                    Contiguity::Relaxed
                }
                Tok::TildeArrow => {
                    self.bump();
                    Contiguity::Any
                }
                _ if self.starts_element() => Contiguity::Strict,
                Tok::RParen | Tok::Pipe if in_group => break,
                _ if !in_group && self.at_clause() => break,
                other => {
                    return err(
                        op_span,
                        format!(
                            "expected `->`, `~>`, a step or the next clause, found {}",
                            other.describe()
                        ),
                    )
                }
            };
            if !self.starts_element() {
                return err(
                    self.span(),
                    format!(
                        "expected a step after `{}`, found {}",
                        if op == Contiguity::Any { "~>" } else { "->" },
                        self.peek().describe()
                    ),
                );
            }
            let elem = self.element()?;
            items.push(SeqItem { op, op_span, elem });
        }
        Ok(Seq { items })
    }

    fn element(&mut self) -> PResult<Element> {
        self.nested(|p| p.element_inner())
    }

    fn element_inner(&mut self) -> PResult<Element> {
        let start = self.span();
        let kind = match self.peek().clone() {
            Tok::Bang => {
                self.bump();
                let name = self.ident("a step name after `!`")?;
                ElementKind::Not(name)
            }
            Tok::LParen => {
                self.bump();
                let mut alts = vec![self.seq(true)?];
                while self.eat(&Tok::Pipe) {
                    alts.push(self.seq(true)?);
                }
                self.expect(Tok::RParen, "`)`")?;
                ElementKind::Group(alts)
            }
            _ => ElementKind::Step(self.ident("a step name")?),
        };
        let quant = self.quant()?;
        let until = if self.eat_word("until") {
            Some(self.ident("a name after `until`")?)
        } else {
            None
        };
        Ok(Element {
            kind,
            quant,
            until,
            span: start.to(self.prev_span()),
        })
    }

    fn quant(&mut self) -> PResult<Option<Quant>> {
        let start = self.span();
        let (min, max, can_reluctant) = match self.peek() {
            Tok::Plus => {
                self.bump();
                (1, None, true)
            }
            Tok::Star => {
                self.bump();
                (0, None, true)
            }
            Tok::Question => {
                self.bump();
                (0, Some(1), false)
            }
            // `??` lexes as one token: `b??` would be an optional made reluctant, which means nothing.
            Tok::QQ => {
                return err(
                    start,
                    "`??` is not a quantifier; a lone `?` makes a step optional",
                )
            }
            Tok::LBrace => {
                self.bump();
                let n = self.count()?;
                let (lo, hi) = if self.eat(&Tok::Comma) {
                    if self.peek() == &Tok::RBrace {
                        (n, None)
                    } else {
                        (n, Some(self.count()?))
                    }
                } else {
                    (n, Some(n))
                };
                self.expect(Tok::RBrace, "`}`")?;
                let span = start.to(self.prev_span());
                if let Some(h) = hi {
                    if h < lo {
                        return err(
                            span,
                            format!("quantifier {{{lo},{h}}}: the maximum is below the minimum"),
                        );
                    }
                    if h == 0 {
                        return err(span, "a step repeated at most zero times matches nothing");
                    }
                }
                (lo, hi, true)
            }
            _ => return Ok(None),
        };
        let mut greedy = true;
        if can_reluctant && self.peek() == &Tok::Question {
            self.bump();
            greedy = false;
        }
        Ok(Some(Quant {
            min,
            max,
            greedy,
            span: start.to(self.prev_span()),
        }))
    }

    fn count(&mut self) -> PResult<u32> {
        match self.peek().clone() {
            Tok::Int(n) if (0..=10_000).contains(&n) => {
                self.bump();
                Ok(n as u32)
            }
            Tok::Int(_) => err(
                self.span(),
                "a repetition count must be between 0 and 10000",
            ),
            other => err(
                self.span(),
                format!("expected a repetition count, found {}", other.describe()),
            ),
        }
    }

    // ---- expressions: or < and < not < comparison/in < ?? < + - < * / % < unary < postfix ----

    pub fn expr(&mut self) -> PResult<Expr> {
        self.nested(|p| p.or_expr())
    }

    fn bin(op: BinOp, l: Expr, r: Expr) -> Expr {
        let span = l.span.to(r.span);
        Expr {
            kind: ExprKind::Binary(op, Box::new(l), Box::new(r)),
            span,
        }
    }

    // A chain `a or b or c ...` nests one level per operator in the tree: it counts toward the
    // depth limit like a parenthesis does.
    fn or_expr(&mut self) -> PResult<Expr> {
        let base = self.depth;
        let r = self.or_chain();
        self.depth = base;
        r
    }

    fn or_chain(&mut self) -> PResult<Expr> {
        let mut l = self.and_expr()?;
        while self.eat_word("or") {
            self.enter()?;
            let r = self.and_expr()?;
            l = Self::bin(BinOp::Or, l, r);
        }
        Ok(l)
    }

    fn and_expr(&mut self) -> PResult<Expr> {
        let base = self.depth;
        let r = self.and_chain();
        self.depth = base;
        r
    }

    fn and_chain(&mut self) -> PResult<Expr> {
        let mut l = self.not_expr()?;
        while self.eat_word("and") {
            self.enter()?;
            let r = self.not_expr()?;
            l = Self::bin(BinOp::And, l, r);
        }
        Ok(l)
    }

    fn not_expr(&mut self) -> PResult<Expr> {
        if self.is_word("not") {
            let s = self.bump().span;
            let e = self.nested(|p| p.not_expr())?;
            let span = s.to(e.span);
            return Ok(Expr {
                kind: ExprKind::Unary(UnOp::Not, Box::new(e)),
                span,
            });
        }
        self.cmp_expr()
    }

    fn cmp_expr(&mut self) -> PResult<Expr> {
        let l = self.coalesce_expr()?;
        let op = match self.peek() {
            Tok::EqEq => BinOp::Eq,
            Tok::NotEq => BinOp::Ne,
            Tok::Lt => BinOp::Lt,
            Tok::Le => BinOp::Le,
            Tok::Gt => BinOp::Gt,
            Tok::Ge => BinOp::Ge,
            Tok::Ident(s) if s == "in" => BinOp::In,
            Tok::Ident(s)
                if s == "not" && matches!(self.peek_at(1), Tok::Ident(w) if w == "in") =>
            {
                self.bump();
                self.bump();
                let r = self.coalesce_expr()?;
                let e = Self::bin(BinOp::In, l, r);
                let span = e.span;
                return Ok(Expr {
                    kind: ExprKind::Unary(UnOp::Not, Box::new(e)),
                    span,
                });
            }
            _ => return Ok(l),
        };
        self.bump();
        let r = self.coalesce_expr()?;
        let e = Self::bin(op, l, r);
        if matches!(
            self.peek(),
            Tok::EqEq | Tok::NotEq | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge
        ) {
            return Err(ParseError {
                span: self.span(),
                message: "comparisons do not chain".into(),
                hint: Some("write `a < b and b < c`".into()),
            });
        }
        Ok(e)
    }

    fn coalesce_expr(&mut self) -> PResult<Expr> {
        let base = self.depth;
        let r = self.coalesce_chain();
        self.depth = base;
        r
    }

    fn coalesce_chain(&mut self) -> PResult<Expr> {
        let mut l = self.add_expr()?;
        while self.eat(&Tok::QQ) {
            self.enter()?;
            let r = self.add_expr()?;
            l = Self::bin(BinOp::Coalesce, l, r);
        }
        Ok(l)
    }

    fn add_expr(&mut self) -> PResult<Expr> {
        let base = self.depth;
        let r = self.add_chain();
        self.depth = base;
        r
    }

    fn add_chain(&mut self) -> PResult<Expr> {
        let mut l = self.mul_expr()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => BinOp::Add,
                Tok::Minus => BinOp::Sub,
                _ => return Ok(l),
            };
            self.bump();
            self.enter()?;
            let r = self.mul_expr()?;
            l = Self::bin(op, l, r);
        }
    }

    fn mul_expr(&mut self) -> PResult<Expr> {
        let base = self.depth;
        let r = self.mul_chain();
        self.depth = base;
        r
    }

    fn mul_chain(&mut self) -> PResult<Expr> {
        let mut l = self.unary_expr()?;
        loop {
            let op = match self.peek() {
                Tok::Star => BinOp::Mul,
                Tok::Slash => BinOp::Div,
                Tok::Percent => BinOp::Rem,
                _ => return Ok(l),
            };
            self.bump();
            self.enter()?;
            let r = self.unary_expr()?;
            l = Self::bin(op, l, r);
        }
    }

    fn unary_expr(&mut self) -> PResult<Expr> {
        if self.peek() == &Tok::Minus {
            let s = self.bump().span;
            let e = self.nested(|p| p.unary_expr())?;
            let span = s.to(e.span);
            // Fold negative literals so that `-5` is a literal, as users read it.
            let kind = match e.kind {
                ExprKind::Lit(Lit::Int(i)) => ExprKind::Lit(Lit::Int(-i)),
                ExprKind::Lit(Lit::Float(f)) => ExprKind::Lit(Lit::Float(-f)),
                k => ExprKind::Unary(
                    UnOp::Neg,
                    Box::new(Expr {
                        kind: k,
                        span: e.span,
                    }),
                ),
            };
            return Ok(Expr { kind, span });
        }
        self.postfix_expr()
    }

    fn postfix_expr(&mut self) -> PResult<Expr> {
        let base = self.depth;
        let r = self.postfix_chain();
        self.depth = base;
        r
    }

    fn postfix_chain(&mut self) -> PResult<Expr> {
        let mut e = self.primary()?;
        while self.peek() == &Tok::Dot {
            self.bump();
            self.enter()?;
            let field = self.ident("a field name after `.`")?;
            let span = e.span.to(field.span);
            e = Expr {
                kind: ExprKind::Member(Box::new(e), field),
                span,
            };
        }
        Ok(e)
    }

    fn primary(&mut self) -> PResult<Expr> {
        let start = self.span();
        let lit = |k| {
            Ok(Expr {
                kind: ExprKind::Lit(k),
                span: start,
            })
        };
        match self.peek().clone() {
            Tok::Int(i) => {
                self.bump();
                lit(Lit::Int(i))
            }
            Tok::Float(f) => {
                self.bump();
                lit(Lit::Float(f))
            }
            Tok::Str(s) => {
                self.bump();
                lit(Lit::Str(s))
            }
            Tok::Duration(d) => {
                self.bump();
                lit(Lit::Duration(d))
            }
            Tok::LParen => {
                self.bump();
                let mut e = self.expr()?;
                self.expect(Tok::RParen, "`)`")?;
                e.span = start.to(self.prev_span());
                Ok(e)
            }
            Tok::LBracket => {
                self.bump();
                let mut items = Vec::new();
                while self.peek() != &Tok::RBracket {
                    items.push(self.expr()?);
                    if !self.eat(&Tok::Comma) {
                        break;
                    }
                }
                self.expect(Tok::RBracket, "`]` or `,`")?;
                Ok(Expr {
                    kind: ExprKind::List(items),
                    span: start.to(self.prev_span()),
                })
            }
            Tok::Ident(name) => {
                self.bump();
                match name.as_str() {
                    "true" => return lit(Lit::Bool(true)),
                    "false" => return lit(Lit::Bool(false)),
                    "null" => return lit(Lit::Null),
                    _ => {}
                }
                if self.peek() == &Tok::LParen {
                    self.bump();
                    let mut args = Vec::new();
                    while self.peek() != &Tok::RParen {
                        args.push(self.expr()?);
                        if !self.eat(&Tok::Comma) {
                            break;
                        }
                    }
                    self.expect(Tok::RParen, "`)` or `,`")?;
                    return Ok(Expr {
                        kind: ExprKind::Call(Ident { name, span: start }, args),
                        span: start.to(self.prev_span()),
                    });
                }
                Ok(Expr {
                    kind: ExprKind::Name(name),
                    span: start,
                })
            }
            other => err(
                start,
                format!("expected an expression, found {}", other.describe()),
            ),
        }
    }
}
