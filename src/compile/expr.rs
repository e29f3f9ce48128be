//! Compiled expressions: names resolved to slots and aggregates, evaluated without lookups.

use crate::engine::path::PathNode;
use crate::event::{Event, Value};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

/// Index of a name declared in a pattern (a step, a negated step, an `until` name).
pub type NameId = u16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Func {
    Abs,
    Lower,
    Upper,
    StartsWith,
    EndsWith,
    Contains,
    Len,
}

/// What an aggregate keeps per partial match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AggKind {
    Count,
    /// Number of non-null values (the divisor of `avg`).
    CountValues,
    Sum,
    Min,
    Max,
    First,
    Last,
}

/// A running aggregate over the events bound to one name, kept in every path node so that a
/// condition reads it in constant time however many iterations a loop holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AggSpec {
    pub name: NameId,
    pub kind: AggKind,
    /// Evaluated on each bound event (refers to that event's fields only).
    pub expr: CExpr,
}

impl AggSpec {
    /// Folds one more value into the running state.
    #[inline]
    pub fn fold(&self, acc: &Option<Value>, v: &Value) -> Option<Value> {
        match self.kind {
            AggKind::Count => Some(Value::Int(count_of(acc) + 1)),
            AggKind::CountValues => {
                Some(Value::Int(count_of(acc) + if v.is_null() { 0 } else { 1 }))
            }
            AggKind::Sum => {
                if v.is_null() {
                    acc.clone()
                } else {
                    Some(match acc {
                        None => v.clone(),
                        Some(a) => arith(ArithOp::Add, a, v),
                    })
                }
            }
            AggKind::Min | AggKind::Max => {
                if v.is_null() {
                    return acc.clone();
                }
                match acc {
                    None => Some(v.clone()),
                    Some(a) => {
                        let keep_new = match v.lang_cmp(a) {
                            Some(Ordering::Less) => self.kind == AggKind::Min,
                            Some(Ordering::Greater) => self.kind == AggKind::Max,
                            _ => false,
                        };
                        Some(if keep_new { v.clone() } else { a.clone() })
                    }
                }
            }
            AggKind::First => Some(acc.clone().unwrap_or_else(|| v.clone())),
            AggKind::Last => Some(v.clone()),
        }
    }

    /// The value an expression sees for a running state.
    pub fn finish(&self, acc: &Option<Value>) -> Value {
        match (self.kind, acc) {
            (AggKind::Count | AggKind::CountValues, None) => Value::Int(0),
            (AggKind::Sum, None) => Value::Int(0),
            (_, None) => Value::Null,
            (_, Some(v)) => v.clone(),
        }
    }
}

fn count_of(acc: &Option<Value>) -> i64 {
    match acc {
        Some(Value::Int(n)) => *n,
        _ => 0,
    }
}

/// A compiled expression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CExpr {
    Const(Value),
    /// A field of the current event.
    Field(u32),
    /// The current event's time (in a match record: the time the match completed).
    Ts,
    Key,
    /// Whether the current event came from this stream.
    StreamIs(u16),
    /// A running aggregate; `with_current` folds in the current event (a step's own condition).
    Agg {
        idx: u32,
        with_current: bool,
    },
    /// `avg`: a sum over a count of values.
    Avg {
        sum: u32,
        count: u32,
        with_current: bool,
    },
    /// `collect(step.expr)`: walks the partial match, reading the value captured when each event
    /// of `name` was bound (`capture` is its index among the captures of `name`).
    Collect {
        name: NameId,
        capture: u32,
        expr: Box<CExpr>,
        with_current: bool,
    },
    Neg(Box<CExpr>),
    Not(Box<CExpr>),
    Arith(ArithOp, Box<CExpr>, Box<CExpr>),
    Cmp(CmpOp, Box<CExpr>, Box<CExpr>),
    And(Box<CExpr>, Box<CExpr>),
    Or(Box<CExpr>, Box<CExpr>),
    In(Box<CExpr>, Box<CExpr>),
    Coalesce(Box<CExpr>, Box<CExpr>),
    /// `lookup(TABLE, key).column`: table and column resolved to indexes at compile time.
    LookupField {
        table: u16,
        key: Box<CExpr>,
        col: u32,
    },
    /// `key in TABLE`.
    InTable {
        table: u16,
        key: Box<CExpr>,
    },
    List(Vec<CExpr>),
    Call(Func, Vec<CExpr>),
}

/// What an expression can see while it runs.
pub struct EvalCtx<'a> {
    pub ev: Option<&'a Event>,
    /// The current time in the program's unit.
    pub ts: i64,
    pub key: &'a Value,
    /// The last node of the partial match under test (or of the match being emitted).
    pub node: Option<&'a PathNode>,
    pub aggs: &'a [AggSpec],
    /// The lookup tables, by the index lookups use: the versions this event reads.
    pub tables: &'a [Option<std::sync::Arc<crate::table::Table>>],
}

static NULL: Value = Value::Null;

impl CExpr {
    /// True where the value depends only on the current event (and the key), so that it can be
    /// computed once per event for all partial matches.
    pub fn is_event_local(&self) -> bool {
        match self {
            CExpr::Const(_) | CExpr::Field(_) | CExpr::Ts | CExpr::Key | CExpr::StreamIs(_) => true,
            CExpr::Agg { .. } | CExpr::Avg { .. } | CExpr::Collect { .. } => false,
            CExpr::Neg(a) | CExpr::Not(a) => a.is_event_local(),
            CExpr::Arith(_, a, b)
            | CExpr::Cmp(_, a, b)
            | CExpr::And(a, b)
            | CExpr::Or(a, b)
            | CExpr::In(a, b)
            | CExpr::Coalesce(a, b) => a.is_event_local() && b.is_event_local(),
            // A table changes only between events.
            CExpr::LookupField { key, .. } | CExpr::InTable { key, .. } => key.is_event_local(),
            CExpr::List(xs) | CExpr::Call(_, xs) => xs.iter().all(CExpr::is_event_local),
        }
    }

    /// Evaluates a condition: only `true` holds.
    #[inline]
    pub fn test(&self, cx: &EvalCtx<'_>) -> bool {
        match self {
            CExpr::And(a, b) => a.test(cx) && b.test(cx),
            CExpr::Or(a, b) => a.test(cx) || b.test(cx),
            CExpr::Cmp(op, a, b) => match (&**a, &**b) {
                // The usual shape, `field OP literal`, without building intermediate values.
                (CExpr::Field(s), CExpr::Const(c)) => match cx.ev {
                    Some(ev) => cmp(*op, &ev.slots[*s as usize], c),
                    None => cmp(*op, &NULL, c),
                },
                // Arithmetic on numbers, such as `amount >= d.amount * 0.5`, without building
                // a value per operation; anything else (a string, a list) the general way.
                _ => match (a.num(cx), b.num(cx)) {
                    (Some(x), Some(y)) => cmp_num(*op, x, y),
                    _ => cmp(*op, &a.eval(cx), &b.eval(cx)),
                },
            },
            CExpr::StreamIs(s) => cx.ev.map(|e| e.stream) == Some(*s),
            other => other.eval(cx).is_true(),
        }
    }

    // HOT PATH: conditions run for every event against every partial match they may advance.
    pub fn eval<'a>(&'a self, cx: &'a EvalCtx<'a>) -> Cow<'a, Value> {
        match self {
            CExpr::Const(v) => Cow::Borrowed(v),
            CExpr::Field(s) => match cx.ev {
                Some(ev) => Cow::Borrowed(&ev.slots[*s as usize]),
                None => Cow::Borrowed(&NULL),
            },
            CExpr::Ts => Cow::Owned(Value::Int(cx.ts)),
            CExpr::Key => Cow::Borrowed(cx.key),
            CExpr::StreamIs(s) => Cow::Owned(Value::Bool(cx.ev.map(|e| e.stream) == Some(*s))),
            CExpr::Agg { idx, with_current } => Cow::Owned(agg_value(cx, *idx, *with_current)),
            CExpr::Avg {
                sum,
                count,
                with_current,
            } => {
                let s = agg_value(cx, *sum, *with_current);
                let n = agg_value(cx, *count, *with_current);
                Cow::Owned(match (s.as_f64(), n) {
                    (Some(s), Value::Int(n)) if n > 0 => Value::Float(s / n as f64),
                    _ => Value::Null,
                })
            }
            CExpr::Collect {
                name,
                capture,
                expr,
                with_current,
            } => {
                let mut items = Vec::new();
                let mut node = cx.node;
                let at = cx.aggs.len() + *capture as usize;
                while let Some(n) = node {
                    if n.name == *name {
                        items.push(n.vals.get(at).cloned().flatten().unwrap_or_default());
                    }
                    node = n.prev.as_deref();
                }
                items.reverse();
                if *with_current {
                    items.push(expr.eval(cx).into_owned());
                }
                Cow::Owned(Value::List(Arc::from(items)))
            }
            CExpr::Neg(a) => Cow::Owned(match &*a.eval(cx) {
                Value::Int(i) => i.checked_neg().map(Value::Int).unwrap_or(Value::Null),
                Value::Float(f) => Value::Float(-f),
                _ => Value::Null,
            }),
            CExpr::Not(a) => Cow::Owned(match &*a.eval(cx) {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            }),
            CExpr::Arith(op, a, b) => Cow::Owned(arith(*op, &a.eval(cx), &b.eval(cx))),
            CExpr::Cmp(..) | CExpr::And(..) | CExpr::Or(..) => {
                Cow::Owned(Value::Bool(self.test(cx)))
            }
            CExpr::In(a, b) => {
                let x = a.eval(cx);
                if x.is_null() {
                    return Cow::Owned(Value::Bool(false));
                }
                Cow::Owned(Value::Bool(match &*b.eval(cx) {
                    Value::List(items) => items.iter().any(|i| x.lang_eq(i) == Some(true)),
                    Value::Str(s) => match &*x {
                        Value::Str(n) => s.contains(n.as_str()),
                        _ => false,
                    },
                    _ => false,
                }))
            }
            CExpr::Coalesce(a, b) => {
                let x = a.eval(cx);
                if x.is_null() {
                    b.eval(cx)
                } else {
                    x
                }
            }
            CExpr::List(items) => Cow::Owned(Value::List(
                items.iter().map(|e| e.eval(cx).into_owned()).collect(),
            )),
            CExpr::Call(f, args) => Cow::Owned(call(*f, args, cx)),
            // A missing table (none given at run time), a missing row or a null cell: null.
            CExpr::LookupField { table, key, col } => {
                let Some(t) = cx.tables.get(*table as usize).and_then(Option::as_deref) else {
                    return Cow::Borrowed(&NULL);
                };
                let k = key.eval(cx);
                let value = t
                    .column_at(*col as usize)
                    .and_then(|c| t.get(&k).map(|row| row.value(c)));
                Cow::Owned(value.unwrap_or(Value::Null))
            }
            CExpr::InTable { table, key } => {
                let Some(t) = cx.tables.get(*table as usize).and_then(Option::as_deref) else {
                    return Cow::Owned(Value::Bool(false));
                };
                Cow::Owned(Value::Bool(t.get(&key.eval(cx)).is_some()))
            }
        }
    }
}

/// A number, or null, as arithmetic and comparisons see it: what [`CExpr::num`] computes
/// without building a [`Value`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Num {
    Null,
    Int(i64),
    Float(f64),
}

impl Num {
    #[inline]
    fn of(v: &Value) -> Option<Num> {
        match v {
            Value::Null => Some(Num::Null),
            Value::Int(i) => Some(Num::Int(*i)),
            Value::Float(f) => Some(Num::Float(*f)),
            _ => None,
        }
    }

    #[inline]
    fn as_f64(self) -> Option<f64> {
        match self {
            Num::Int(i) => Some(i as f64),
            Num::Float(f) => Some(f),
            Num::Null => None,
        }
    }
}

impl CExpr {
    /// The expression's value where it is a number or null, computed the way [`CExpr::eval`]
    /// would; `None` where the value is of another type or the expression is not arithmetic
    /// over fields, constants and aggregates (then `eval` is the way).
    // HOT PATH: the comparisons of conditions that read partial matches.
    #[inline]
    pub fn num(&self, cx: &EvalCtx<'_>) -> Option<Num> {
        match self {
            CExpr::Const(v) => Num::of(v),
            CExpr::Field(s) => match cx.ev {
                Some(ev) => Num::of(&ev.slots[*s as usize]),
                None => Some(Num::Null),
            },
            CExpr::Agg {
                idx,
                with_current: false,
            } => {
                let spec = &cx.aggs[*idx as usize];
                match cx.node.and_then(|n| n.vals.get(*idx as usize)) {
                    Some(Some(v)) => Num::of(v),
                    // `finish` of an aggregate with nothing folded in yet.
                    _ => Some(match spec.kind {
                        AggKind::Count | AggKind::CountValues | AggKind::Sum => Num::Int(0),
                        _ => Num::Null,
                    }),
                }
            }
            CExpr::Arith(op, a, b) => Some(arith_num(*op, a.num(cx)?, b.num(cx)?)),
            _ => None,
        }
    }
}

/// [`arith`] on numbers.
#[inline]
fn arith_num(op: ArithOp, a: Num, b: Num) -> Num {
    if let (Num::Int(x), Num::Int(y)) = (a, b) {
        return match op {
            ArithOp::Add => x.checked_add(y).map_or(Num::Null, Num::Int),
            ArithOp::Sub => x.checked_sub(y).map_or(Num::Null, Num::Int),
            ArithOp::Mul => x.checked_mul(y).map_or(Num::Null, Num::Int),
            ArithOp::Div if y == 0 => Num::Null,
            ArithOp::Div => Num::Float(x as f64 / y as f64),
            ArithOp::Rem => x.checked_rem(y).map_or(Num::Null, Num::Int),
        };
    }
    let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
        return Num::Null;
    };
    Num::Float(match op {
        ArithOp::Add => x + y,
        ArithOp::Sub => x - y,
        ArithOp::Mul => x * y,
        ArithOp::Div | ArithOp::Rem if y == 0.0 => return Num::Null,
        ArithOp::Div => x / y,
        ArithOp::Rem => x % y,
    })
}

/// [`cmp`] on numbers.
#[inline]
pub(crate) fn cmp_num(op: CmpOp, a: Num, b: Num) -> bool {
    let o = match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            // Null equals nothing and is ordered against nothing.
            _ => return false,
        },
    };
    match op {
        CmpOp::Eq => o == Some(Ordering::Equal),
        // Numbers that are not ordered (NaN) are not equal either.
        CmpOp::Ne => o != Some(Ordering::Equal),
        CmpOp::Lt => o == Some(Ordering::Less),
        CmpOp::Le => matches!(o, Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Gt => o == Some(Ordering::Greater),
        CmpOp::Ge => matches!(o, Some(Ordering::Greater | Ordering::Equal)),
    }
}

fn agg_value(cx: &EvalCtx<'_>, idx: u32, with_current: bool) -> Value {
    let spec = &cx.aggs[idx as usize];
    let acc = cx
        .node
        .and_then(|n| n.vals.get(idx as usize))
        .cloned()
        .flatten();
    if with_current {
        if let Some(ev) = cx.ev {
            let cur = EvalCtx {
                tables: cx.tables,
                ev: Some(ev),
                ts: cx.ts,
                key: cx.key,
                node: None,
                aggs: cx.aggs,
            };
            let v = spec.expr.eval(&cur);
            return spec.finish(&spec.fold(&acc, &v));
        }
    }
    spec.finish(&acc)
}

#[inline]
pub fn cmp(op: CmpOp, a: &Value, b: &Value) -> bool {
    match op {
        CmpOp::Eq => a.lang_eq(b) == Some(true),
        CmpOp::Ne => a.lang_eq(b) == Some(false),
        _ => match a.lang_cmp(b) {
            None => false,
            Some(o) => match op {
                CmpOp::Lt => o == Ordering::Less,
                CmpOp::Le => o != Ordering::Greater,
                CmpOp::Gt => o == Ordering::Greater,
                CmpOp::Ge => o != Ordering::Less,
                CmpOp::Eq | CmpOp::Ne => unreachable!("handled above"),
            },
        },
    }
}

/// Arithmetic: integers stay integers (overflow gives null), any float makes a float, anything
/// else (null included) gives null. Division always gives a float; by zero, null.
pub fn arith(op: ArithOp, a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => match op {
            ArithOp::Add => x.checked_add(*y).map(Value::Int).unwrap_or(Value::Null),
            ArithOp::Sub => x.checked_sub(*y).map(Value::Int).unwrap_or(Value::Null),
            ArithOp::Mul => x.checked_mul(*y).map(Value::Int).unwrap_or(Value::Null),
            ArithOp::Div => {
                if *y == 0 {
                    Value::Null
                } else {
                    Value::Float(*x as f64 / *y as f64)
                }
            }
            ArithOp::Rem => x.checked_rem(*y).map(Value::Int).unwrap_or(Value::Null),
        },
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => {
                let r = match op {
                    ArithOp::Add => x + y,
                    ArithOp::Sub => x - y,
                    ArithOp::Mul => x * y,
                    ArithOp::Div => {
                        if y == 0.0 {
                            return Value::Null;
                        }
                        x / y
                    }
                    ArithOp::Rem => {
                        if y == 0.0 {
                            return Value::Null;
                        }
                        x % y
                    }
                };
                Value::Float(r)
            }
            _ => Value::Null,
        },
    }
}

fn call(f: Func, args: &[CExpr], cx: &EvalCtx<'_>) -> Value {
    let a = args[0].eval(cx);
    let str_of = |v: &Value| match v {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    };
    match f {
        Func::Abs => match &*a {
            Value::Int(i) => i.checked_abs().map(Value::Int).unwrap_or(Value::Null),
            Value::Float(x) => Value::Float(x.abs()),
            _ => Value::Null,
        },
        Func::Lower => str_of(&a)
            .map(|s| Value::Str(s.to_lowercase().into()))
            .unwrap_or(Value::Null),
        Func::Upper => str_of(&a)
            .map(|s| Value::Str(s.to_uppercase().into()))
            .unwrap_or(Value::Null),
        Func::Len => match &*a {
            Value::Str(s) => Value::Int(s.chars().count() as i64),
            Value::List(l) => Value::Int(l.len() as i64),
            _ => Value::Null,
        },
        Func::StartsWith | Func::EndsWith | Func::Contains => {
            let b = args[1].eval(cx);
            match (&*a, &*b) {
                (Value::Str(s), Value::Str(p)) => Value::Bool(match f {
                    Func::StartsWith => s.starts_with(p.as_str()),
                    Func::EndsWith => s.ends_with(p.as_str()),
                    _ => s.contains(p.as_str()),
                }),
                (Value::List(l), x) if f == Func::Contains && !x.is_null() => {
                    Value::Bool(l.iter().any(|i| i.lang_eq(x) == Some(true)))
                }
                _ => Value::Null,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Values that arithmetic meets: small integers (zero often), extreme ones (overflow),
    /// floats with zero, NaN and infinities, null, and types that arithmetic does not take.
    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            2 => Just(Value::Null),
            6 => (-2i64..3).prop_map(Value::Int),
            1 => prop_oneof![Just(i64::MAX), Just(i64::MIN), Just(-1)].prop_map(Value::Int),
            2 => (-3.0f64..3.0).prop_map(Value::Float),
            2 => prop_oneof![
                Just(0.0),
                Just(-0.0),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(0.5)
            ]
            .prop_map(Value::Float),
            1 => Just(Value::from("a")),
            1 => Just(Value::Bool(true)),
        ]
    }

    /// Expressions of up to three operations over two fields, two aggregates and constants:
    /// the shapes `CExpr::num` takes, and some it leaves to `eval` (negation).
    fn expr() -> BoxedStrategy<CExpr> {
        // Boxed, so that the nested strategies' values do not pile up in one stack frame (a
        // debug build overflows the test thread's stack otherwise).
        let leaf = || {
            prop_oneof![
                value().prop_map(CExpr::Const),
                (0u32..2).prop_map(CExpr::Field),
                (0u32..2).prop_map(|idx| CExpr::Agg {
                    idx,
                    with_current: false
                }),
            ]
        };
        let op = || {
            prop_oneof![
                Just(ArithOp::Add),
                Just(ArithOp::Sub),
                Just(ArithOp::Mul),
                Just(ArithOp::Div),
                Just(ArithOp::Rem)
            ]
        };
        let arith = |o, a, b| CExpr::Arith(o, Box::new(a), Box::new(b));
        prop_oneof![
            leaf(),
            (op(), leaf(), leaf()).prop_map(move |(o, a, b)| arith(o, a, b)),
            (op(), op(), leaf(), leaf(), leaf()).prop_map(move |(o, p, a, b, c)| arith(
                o,
                arith(p, a, b),
                c
            )),
            (op(), leaf(), leaf()).prop_map(move |(o, a, b)| CExpr::Neg(Box::new(arith(o, a, b)))),
        ]
        .boxed()
    }

    fn cmp_op() -> impl Strategy<Value = CmpOp> {
        prop_oneof![
            Just(CmpOp::Eq),
            Just(CmpOp::Ne),
            Just(CmpOp::Lt),
            Just(CmpOp::Le),
            Just(CmpOp::Gt),
            Just(CmpOp::Ge)
        ]
    }

    proptest! {
        /// A comparison tested through `num` gives what comparing the evaluated values gives.
        #[test]
        fn numeric_comparisons_agree_with_eval(
            op in cmp_op(),
            a in expr(),
            b in expr(),
            fields in proptest::collection::vec(value(), 2),
            held in proptest::option::of(proptest::collection::vec(proptest::option::of(value()), 2)),
            sum in any::<bool>(),
        ) {
            let ev = Event { slots: fields, ..Event::default() };
            let node = held.map(|vals| PathNode { name: 0, seq: 1, prev: None, vals: vals.into() });
            let aggs = [
                AggSpec { name: 0, kind: if sum { AggKind::Sum } else { AggKind::Max }, expr: CExpr::Field(0) },
                AggSpec { name: 0, kind: AggKind::Last, expr: CExpr::Field(1) },
            ];
            let cx = EvalCtx { ev: Some(&ev), ts: 0, key: &NULL, node: node.as_ref(), aggs: &aggs, tables: &[] };
            let expected = cmp(op, &a.eval(&cx), &b.eval(&cx));
            let c = CExpr::Cmp(op, Box::new(a), Box::new(b));
            prop_assert_eq!(c.test(&cx), expected);
        }
    }
}
