//! The syntax tree of a pattern file, as written, with spans for diagnostics.

use super::diag::Span;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// One `pattern` block.
#[derive(Clone, Debug)]
pub struct PatternDecl {
    pub name: Ident,
    pub from: Vec<Ident>,
    pub key: Option<Expr>,
    pub time: Option<Vec<Ident>>,
    pub within: Option<(i64, Span)>,
    pub sequence: Option<Seq>,
    pub match_span: Span,
    pub defines: Vec<Define>,
    pub emit: Option<Emit>,
    pub on_timeout: Option<Emit>,
    pub skip: Option<(Skip, Span)>,
}

/// How an element joins the one before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Contiguity {
    /// `a b`: the very next event.
    Strict,
    /// `a -> b`: the next event that satisfies `b`.
    Relaxed,
    /// `a ~> b`: every later event that satisfies `b`.
    Any,
}

#[derive(Clone, Debug)]
pub struct Seq {
    /// The first item's contiguity is `Relaxed` (a step that comes first has nothing before it).
    pub items: Vec<SeqItem>,
}

#[derive(Clone, Debug)]
pub struct SeqItem {
    pub op: Contiguity,
    pub op_span: Span,
    pub elem: Element,
}

#[derive(Clone, Debug)]
pub enum ElementKind {
    Step(Ident),
    /// `( seq )` or `( a | b | ... )`: one alternative is a plain group.
    Group(Vec<Seq>),
    /// `!x`
    Not(Ident),
}

#[derive(Clone, Debug)]
pub struct Element {
    pub kind: ElementKind,
    pub quant: Option<Quant>,
    pub until: Option<Ident>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quant {
    pub min: u32,
    /// `None`: unbounded.
    pub max: Option<u32>,
    pub greedy: bool,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Define {
    pub name: Ident,
    pub stream: Option<Ident>,
    pub cond: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub struct Emit {
    pub sink: Ident,
    pub fields: Vec<(Ident, Expr)>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    None,
    ToNext,
    PastLast,
    ToFirst(Ident),
    ToLast(Ident),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    Null,
    /// Nanoseconds.
    Duration(i64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    In,
    Coalesce,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "and",
            BinOp::Or => "or",
            BinOp::In => "in",
            BinOp::Coalesce => "??",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Lit(Lit),
    /// A bare name: a field of the current event, `key`, `ts`, or a step (resolved by the compiler).
    Name(String),
    /// `base.field`
    Member(Box<Expr>, Ident),
    Call(Ident, Vec<Expr>),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
}
