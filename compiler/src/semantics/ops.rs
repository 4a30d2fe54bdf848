//! Scalar semantics of the language: operators, casts, elementwise functions, the built-in
//! reductions' identities and combiners, and the values of literals, on [`Scalar`] values.
//!
//! This is the one definition of what `+` on `i32` (or `exp` on `f16`, or the identity of
//! `max` over `i64`) means: the reference interpreter (`interp`), the IR evaluator
//! (`ir::eval`) and the schedule's constant folding agree because they all call this, and the
//! code generators are tested against the interpreter.
//!
//! Every float dtype computes in `f64` without rounding. Integers are `i64` values that must
//! stay inside their dtype's range: an operation whose exact result does not fit is an
//! [`OpError::Overflow`], never a wrap. Operands are taken to be of the dtype given (the HIR
//! typing invariants); a value of another kind is converted as [`Scalar::as_f64`] and friends
//! do, so nothing here panics.

use tfmc_runtime::Scalar;

use crate::hir::{BinOp, DType, Func, Lit, ReduceOp, UnOp};

/// Why a scalar operation failed (the caller adds the source location).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OpError {
    /// Integer `/` or `%` by zero.
    DivByZero,
    /// The exact integer result does not fit in the dtype; the text shows the operation.
    Overflow(String),
    /// An operation the checker should not have let through.
    Unsupported(String),
}

/// The integer range of `dtype` (that of `i64` for non-`i32` dtypes).
fn int_range(d: DType) -> (i64, i64) {
    if d == DType::I32 { (i64::from(i32::MIN), i64::from(i32::MAX)) } else { (i64::MIN, i64::MAX) }
}

/// `v` if it exists and fits in `dtype`, else an overflow described lazily by `what`.
fn fit(d: DType, v: Option<i64>, what: impl FnOnce() -> String) -> Result<i64, OpError> {
    let (lo, hi) = int_range(d);
    match v {
        Some(x) if (lo..=hi).contains(&x) => Ok(x),
        _ => Err(OpError::Overflow(format!("{d} overflow in {}", what()))),
    }
}

/// Floor division (toward negative infinity), `None` on overflow; `b != 0`.
fn floor_div(a: i64, b: i64) -> Option<i64> {
    let q = a.checked_div(b)?;
    if a % b != 0 && ((a < 0) != (b < 0)) { q.checked_sub(1) } else { Some(q) }
}

/// Floor modulo (result has the sign of `b`); `b != 0`.
fn floor_rem(a: i64, b: i64) -> i64 {
    // `checked_rem` only fails for MIN % -1, whose remainder is 0.
    let r = a.checked_rem(b).unwrap_or(0);
    if r != 0 && ((r < 0) != (b < 0)) { r + b } else { r }
}

/// Float division with `0 / 0 = 0`.
pub(crate) fn fdiv(a: f64, b: f64) -> f64 {
    if a == 0.0 && b == 0.0 { 0.0 } else { a / b }
}

/// Float modulo rounding the quotient toward negative infinity (Python's `%`).
fn frem(a: f64, b: f64) -> f64 {
    let r = a % b;
    if r != 0.0 && ((r < 0.0) != (b < 0.0)) { r + b } else { r }
}

/// A binary operator on operands of dtype `d` (the non-short-circuit path of `&&`/`||`).
pub(crate) fn binary(op: BinOp, d: DType, a: Scalar, b: Scalar) -> Result<Scalar, OpError> {
    use BinOp::*;
    if op.is_comparison() {
        return Ok(Scalar::B(compare(op, d, a, b)));
    }
    match op {
        And => return Ok(Scalar::B(a.as_bool() && b.as_bool())),
        Or => return Ok(Scalar::B(a.as_bool() || b.as_bool())),
        _ => {}
    }
    if d.is_float() {
        let (x, y) = (a.as_f64(), b.as_f64());
        return Ok(Scalar::F(match op {
            Add => x + y,
            Sub => x - y,
            Mul => x * y,
            Div => fdiv(x, y),
            _ => frem(x, y),
        }));
    }
    if !d.is_int() {
        return Err(OpError::Unsupported(format!("operator {} on {d}", op.symbol())));
    }
    let (x, y) = (a.as_i64(), b.as_i64());
    let what = || format!("{x} {} {y}", op.symbol());
    let v = match op {
        Add => x.checked_add(y),
        Sub => x.checked_sub(y),
        Mul => x.checked_mul(y),
        Div if y == 0 => return Err(OpError::DivByZero),
        Div => floor_div(x, y),
        _ if y == 0 => return Err(OpError::DivByZero),
        _ => Some(floor_rem(x, y)),
    };
    fit(d, v, what).map(Scalar::I)
}

fn compare(op: BinOp, d: DType, a: Scalar, b: Scalar) -> bool {
    use std::cmp::Ordering;
    let ord = if d.is_float() {
        a.as_f64().partial_cmp(&b.as_f64())
    } else if d.is_int() {
        Some(a.as_i64().cmp(&b.as_i64()))
    } else {
        Some(a.as_bool().cmp(&b.as_bool()))
    };
    match (op, ord) {
        (BinOp::Ne, None) => true,
        (_, None) => false,
        (BinOp::Eq, Some(o)) => o == Ordering::Equal,
        (BinOp::Ne, Some(o)) => o != Ordering::Equal,
        (BinOp::Lt, Some(o)) => o == Ordering::Less,
        (BinOp::Le, Some(o)) => o != Ordering::Greater,
        (BinOp::Gt, Some(o)) => o == Ordering::Greater,
        (_, Some(o)) => o != Ordering::Less,
    }
}

/// A unary operator on an operand of dtype `d`.
pub(crate) fn unary(op: UnOp, d: DType, a: Scalar) -> Result<Scalar, OpError> {
    match op {
        UnOp::Not => Ok(Scalar::B(!a.as_bool())),
        UnOp::Neg if d.is_float() => Ok(Scalar::F(-a.as_f64())),
        UnOp::Neg if d.is_int() => {
            let x = a.as_i64();
            fit(d, x.checked_neg(), || format!("-({x})")).map(Scalar::I)
        }
        UnOp::Neg => Err(OpError::Unsupported(format!("negation of {d}"))),
    }
}

/// Converts `a` to dtype `to`: float to int truncates toward zero and saturates at the
/// target's range (NaN gives 0); an integer that does not fit a narrower integer type is an
/// overflow; bool to number is 0/1; number to bool is `!= 0` (NaN is true). Floats are not
/// rounded to narrower float types.
pub(crate) fn cast(a: Scalar, to: DType) -> Result<Scalar, OpError> {
    if to.is_float() {
        return Ok(Scalar::F(a.as_f64()));
    }
    if !to.is_int() {
        return Ok(Scalar::B(a.as_bool()));
    }
    match a {
        Scalar::F(x) if to == DType::I32 => Ok(Scalar::I(i64::from(x as i32))),
        Scalar::F(x) => Ok(Scalar::I(x as i64)),
        Scalar::I(i) => fit(to, Some(i), || format!("{to}({i})")).map(Scalar::I),
        Scalar::B(b) => Ok(Scalar::I(i64::from(b))),
    }
}

/// Float sigmoid without overflow for large |x|.
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// min/max that propagate NaN.
fn fmin(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.min(b) }
}

/// The larger of two floats, NaN if either is.
pub(crate) fn fmax(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
}

/// An elementwise function with result dtype `d`; `y` is the second argument of the binary
/// functions and ignored otherwise.
pub(crate) fn func(f: Func, d: DType, x: Scalar, y: Scalar) -> Result<Scalar, OpError> {
    if d.is_int() {
        return int_func(f, d, x.as_i64(), y.as_i64()).map(Scalar::I);
    }
    if !d.is_float() {
        return Err(OpError::Unsupported(format!("{} on {d}", f.name())));
    }
    let (x, y) = (x.as_f64(), y.as_f64());
    Ok(Scalar::F(match f {
        Func::Exp => x.exp(),
        Func::Exp2 => x.exp2(),
        Func::Log => x.ln(),
        Func::Log2 => x.log2(),
        Func::Log1p => x.ln_1p(),
        Func::Sqrt => x.sqrt(),
        Func::Rsqrt => 1.0 / x.sqrt(),
        Func::Abs => x.abs(),
        Func::Neg => -x,
        Func::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        }
        Func::Floor => x.floor(),
        Func::Ceil => x.ceil(),
        Func::Tanh => x.tanh(),
        Func::Sigmoid => sigmoid(x),
        Func::Relu => fmax(x, 0.0),
        // 1 + erf(y) = erfc(-y): no cancellation in the negative tail.
        Func::Gelu => 0.5 * x * libm::erfc(-x / std::f64::consts::SQRT_2),
        Func::Elu => {
            if x > 0.0 {
                x
            } else {
                x.exp_m1()
            }
        }
        Func::Silu => x * sigmoid(x),
        Func::Softplus => {
            if x > 0.0 {
                x + (-x).exp().ln_1p()
            } else {
                x.exp().ln_1p()
            }
        }
        Func::Erf => libm::erf(x),
        Func::Sin => x.sin(),
        Func::Cos => x.cos(),
        Func::Pow => x.powf(y),
        Func::Min => fmin(x, y),
        Func::Max => fmax(x, y),
        Func::Atan2 => x.atan2(y),
    }))
}

fn int_func(f: Func, d: DType, x: i64, y: i64) -> Result<i64, OpError> {
    match f {
        Func::Abs => fit(d, x.checked_abs(), || format!("abs({x})")),
        Func::Neg => fit(d, x.checked_neg(), || format!("neg({x})")),
        Func::Sign => Ok(x.signum()),
        Func::Relu => Ok(x.max(0)),
        Func::Min => Ok(x.min(y)),
        Func::Max => Ok(x.max(y)),
        _ => Err(OpError::Unsupported(format!("{} on {d}", f.name()))),
    }
}

/// The identity of a built-in reduction over dtype `d` (`User` is not built in).
pub(crate) fn identity(op: ReduceOp, d: DType) -> Scalar {
    let (lo, hi) = int_range(d);
    match (op, d.is_float(), d.is_int()) {
        (ReduceOp::Sum, true, _) => Scalar::F(0.0),
        (ReduceOp::Prod, true, _) => Scalar::F(1.0),
        (ReduceOp::Max, true, _) => Scalar::F(f64::NEG_INFINITY),
        (ReduceOp::Min, true, _) => Scalar::F(f64::INFINITY),
        (ReduceOp::Sum, _, true) => Scalar::I(0),
        (ReduceOp::Prod, _, true) => Scalar::I(1),
        (ReduceOp::Max, _, true) => Scalar::I(lo),
        (ReduceOp::Min, _, true) => Scalar::I(hi),
        (ReduceOp::Min, _, _) => Scalar::B(true),
        _ => Scalar::B(false),
    }
}

/// `acc ⊕ x` for a built-in reduction over dtype `d` (max/min propagate NaN; on `bool`, max
/// is `||` and min is `&&`).
pub(crate) fn combine(op: ReduceOp, d: DType, acc: Scalar, x: Scalar) -> Result<Scalar, OpError> {
    match op {
        ReduceOp::Sum => binary(BinOp::Add, d, acc, x),
        ReduceOp::Prod => binary(BinOp::Mul, d, acc, x),
        ReduceOp::Max | ReduceOp::Min if d.is_float() => {
            let f = if op == ReduceOp::Max { fmax } else { fmin };
            Ok(Scalar::F(f(acc.as_f64(), x.as_f64())))
        }
        ReduceOp::Max if d.is_int() => Ok(Scalar::I(acc.as_i64().max(x.as_i64()))),
        ReduceOp::Min if d.is_int() => Ok(Scalar::I(acc.as_i64().min(x.as_i64()))),
        ReduceOp::Max => Ok(Scalar::B(acc.as_bool() || x.as_bool())),
        ReduceOp::Min => Ok(Scalar::B(acc.as_bool() && x.as_bool())),
        ReduceOp::User(_) => Err(OpError::Unsupported("user reduction as a built-in".to_string())),
    }
}

/// A literal as a scalar of its own kind.
pub fn lit_scalar(lit: Lit) -> Scalar {
    match lit {
        Lit::Int(i) => Scalar::I(i),
        Lit::Float(x) => Scalar::F(x),
        Lit::Bool(b) => Scalar::B(b),
    }
}

/// A literal as a value of dtype `d` (how every evaluator reads a typed literal).
pub(crate) fn lit_value(l: Lit, d: DType) -> Scalar {
    let v = lit_scalar(l);
    if d.is_float() {
        Scalar::F(v.as_f64())
    } else if d.is_int() {
        Scalar::I(v.as_i64())
    } else {
        Scalar::B(v.as_bool())
    }
}

/// The zero (`false`) of a dtype's kind (also the value an absent point reads as where a
/// dense tensor is needed).
pub fn zero(d: DType) -> Scalar {
    if d.is_float() {
        Scalar::F(0.0)
    } else if d.is_int() {
        Scalar::I(0)
    } else {
        Scalar::B(false)
    }
}
