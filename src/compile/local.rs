//! Conditions on the current event alone, compiled to flat, typed tests.
//!
//! Every event meets the event-local conditions of the patterns that read its stream: the start
//! step's condition always, and the guards of the steps its key's partial matches wait for. Most
//! are conjunctions of a field compared with a literal (`type == "deposit" and amount >= 20`).
//! Walking the expression tree for them costs more than the comparisons themselves, so each is
//! compiled to a list of typed tests with the language's exact semantics; any other shape stays a
//! general expression in the list.

use super::expr::{CExpr, CmpOp, EvalCtx, Num};
use crate::event::{Text, Value};
use serde::{Deserialize, Serialize};

/// An event-local condition: holds when every one of its tests does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalTest {
    tests: Vec<Atom>,
    /// The condition as written, for a context without an event.
    whole: CExpr,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Atom {
    /// `field == "text"` (`eq`) or `field != "text"`.
    Str { slot: u32, text: Text, eq: bool },
    /// `field OP integer`, as the range of integers that pass: `lo..=hi`, or outside it where
    /// `outside` (`!=`, and the empty range of `< i64::MIN`).
    Int {
        slot: u32,
        lo: i64,
        hi: i64,
        outside: bool,
        op: CmpOp,
        value: i64,
    },
    /// `field OP number`.
    Num { slot: u32, op: CmpOp, value: Num },
    /// Any other condition.
    Expr(CExpr),
}

impl LocalTest {
    /// Compiles an event-local condition.
    pub fn new(cond: &CExpr) -> LocalTest {
        let mut tests = Vec::new();
        conjuncts(cond, &mut tests);
        LocalTest {
            tests,
            whole: cond.clone(),
        }
    }

    /// The condition on the current event of `cx`.
    // HOT PATH: once per event for each event-local condition it meets.
    #[inline]
    pub fn test(&self, cx: &EvalCtx<'_>) -> bool {
        let Some(ev) = cx.ev else {
            return self.whole.test(cx);
        };
        self.tests.iter().all(|t| match t {
            Atom::Str { slot, text, eq } => str_cmp(&ev.slots[*slot as usize], text, *eq),
            Atom::Int {
                slot,
                lo,
                hi,
                outside,
                op,
                value,
            } => match ev.slots[*slot as usize] {
                // Branch-free: `x` is in `lo..=hi` exactly when `x - lo` (wrapping) is at most
                // `hi - lo`, both read as unsigned.
                Value::Int(x) => {
                    (x.wrapping_sub(*lo) as u64 <= hi.wrapping_sub(*lo) as u64) != *outside
                }
                ref v => num_cmp(v, *op, Num::Int(*value)),
            },
            Atom::Num { slot, op, value } => num_cmp(&ev.slots[*slot as usize], *op, *value),
            Atom::Expr(e) => e.test(cx),
        })
    }
}

fn conjuncts(c: &CExpr, out: &mut Vec<Atom>) {
    match c {
        CExpr::And(a, b) => {
            conjuncts(a, out);
            conjuncts(b, out);
        }
        CExpr::Cmp(op, a, b) => match (&**a, &**b, op) {
            (CExpr::Field(slot), CExpr::Const(Value::Str(text)), CmpOp::Eq | CmpOp::Ne) => out
                .push(Atom::Str {
                    slot: *slot,
                    text: text.clone(),
                    eq: *op == CmpOp::Eq,
                }),
            (CExpr::Field(slot), CExpr::Const(Value::Int(c)), _) => {
                let (lo, hi, outside) = int_range(*op, *c);
                out.push(Atom::Int {
                    slot: *slot,
                    lo,
                    hi,
                    outside,
                    op: *op,
                    value: *c,
                })
            }
            (CExpr::Field(slot), CExpr::Const(Value::Float(f)), _) => out.push(Atom::Num {
                slot: *slot,
                op: *op,
                value: Num::Float(*f),
            }),
            _ => out.push(Atom::Expr(c.clone())),
        },
        other => out.push(Atom::Expr(other.clone())),
    }
}

/// The integers `x` for which `x OP c` holds: `(lo, hi, outside)`, the range `lo..=hi` or,
/// where `outside`, everything but it.
fn int_range(op: CmpOp, c: i64) -> (i64, i64, bool) {
    const NOTHING: (i64, i64, bool) = (i64::MIN, i64::MAX, true);
    match op {
        CmpOp::Eq => (c, c, false),
        CmpOp::Ne => (c, c, true),
        CmpOp::Lt => c.checked_sub(1).map_or(NOTHING, |h| (i64::MIN, h, false)),
        CmpOp::Le => (i64::MIN, c, false),
        CmpOp::Gt => c.checked_add(1).map_or(NOTHING, |l| (l, i64::MAX, false)),
        CmpOp::Ge => (c, i64::MAX, false),
    }
}

/// `v == text` (`eq`) or `v != text` as the language has them: null equals nothing and differs
/// from nothing; a value of another type is not equal.
#[inline]
fn str_cmp(v: &Value, text: &Text, eq: bool) -> bool {
    match v {
        // Both sides short, the usual case: a compare of their inline bytes.
        Value::Str(s) => (s == text) == eq,
        Value::Null => false,
        _ => !eq,
    }
}

/// `v OP value` as the language has it: numbers by value, null and other types never compare
/// (only `!=` holds between a non-null value of another type and a number).
#[inline]
fn num_cmp(v: &Value, op: CmpOp, value: Num) -> bool {
    let x = match v {
        Value::Int(i) => Num::Int(*i),
        Value::Float(f) => Num::Float(*f),
        Value::Null => return false,
        _ => return op == CmpOp::Ne,
    };
    super::expr::cmp_num(op, x, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            // The ends of the integers, where a range of `<` and `>` is empty.
            prop_oneof![
                4 => -3i64..3,
                1 => prop_oneof![
                    Just(i64::MIN),
                    Just(i64::MIN + 1),
                    Just(i64::MAX - 1),
                    Just(i64::MAX)
                ],
            ]
            .prop_map(Value::Int),
            prop_oneof![Just(-0.0), Just(1.5), Just(f64::NAN), Just(2.0)].prop_map(Value::Float),
            prop_oneof![
                Just(""),
                Just("bet"),
                Just("bets"),
                Just("deposit"),
                Just("depositX"),
                Just("withdrawal"),
                Just("withdrawbl"),
                Just("a string longer than sixteen"),
                Just("a string longer than sixteeN"),
            ]
            .prop_map(Value::from),
            any::<bool>().prop_map(Value::Bool),
        ]
    }

    fn op() -> impl Strategy<Value = CmpOp> {
        prop_oneof![
            Just(CmpOp::Eq),
            Just(CmpOp::Ne),
            Just(CmpOp::Lt),
            Just(CmpOp::Le),
            Just(CmpOp::Gt),
            Just(CmpOp::Ge)
        ]
    }

    /// Comparisons of a field with a literal of any type, and shapes kept as expressions (a
    /// literal on the left, `or`), joined with `and`.
    fn cond() -> impl Strategy<Value = CExpr> {
        let cmp = (op(), 0u32..3, value(), any::<bool>()).prop_map(|(op, slot, v, flip)| {
            let (f, c) = (Box::new(CExpr::Field(slot)), Box::new(CExpr::Const(v)));
            if flip {
                CExpr::Cmp(op, c, f)
            } else {
                CExpr::Cmp(op, f, c)
            }
        });
        cmp.prop_recursive(3, 8, 2, |inner| {
            prop_oneof![
                3 => (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| CExpr::And(Box::new(a), Box::new(b))),
                1 => (inner.clone(), inner).prop_map(|(a, b)| CExpr::Or(Box::new(a), Box::new(b))),
            ]
        })
    }

    proptest! {
        // Cheap cases: enough of them to meet each type against each literal and operator.
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The compiled test holds exactly where the condition does.
        #[test]
        fn compiled_tests_agree_with_the_expression(
            c in cond(),
            slots in proptest::collection::vec(value(), 3),
        ) {
            let ev = Event { slots, ..Event::default() };
            let key = Value::Null;
            let cx = EvalCtx { ev: Some(&ev), ts: 0, key: &key, node: None, aggs: &[], tables: &[] };
            prop_assert_eq!(LocalTest::new(&c).test(&cx), c.test(&cx));
            let none = EvalCtx { ev: None, ..cx };
            prop_assert_eq!(LocalTest::new(&c).test(&none), c.test(&none));
        }
    }
}
