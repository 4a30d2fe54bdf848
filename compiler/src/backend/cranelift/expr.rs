//! Scalar expressions → Cranelift values, per the `kir` module docs and the lenient typing of
//! `schedule::validate`. Owns the operation semantics every lowering (scalar, and the lanes of
//! vector code that have no vector form) shares:
//! - floats: `fmin`/`fmax` (NaN-propagating, `-0 < +0`, as `llvm.minimum/maximum`); `Rem` is a
//!   `fmod` call; `RoundEven` is `nearest`; `Exp Exp2 Log Log2 Log1p Expm1 Tanh Erf Sin Cos Pow
//!   Atan2` call the host math functions (`f` suffix for `F32`); comparisons are ordered except
//!   `Ne` (unordered, true on NaN);
//! - contraction: `x * y + z`, `z + x * y`, `z - x * y` and `x * y - z` written as one KIR
//!   expression become one `fma` when the host has FMA (KIR allows contraction; the same rule
//!   runs in vector code, so vectorized and scalar loops agree bit for bit);
//! - integers: wrapping `Add Sub Mul Neg Abs Shl`; `Div`/`Rem` truncate, with the divisor
//!   replaced by 1 when it is 0 or -1 (and `x / -1 = -x`, `x % -1 = 0` selected instead) so the
//!   instruction can never trap, whatever the schedule's guards; overflow predicates use
//!   `sadd/ssub/smul_overflow`; `Bool` orders `false < true` (unsigned), `Min`/`Max` on `Bool`
//!   are `and`/`or`, `Not` on `Bool` is `xor 1`;
//! - casts: float → int `fcvt_to_sint_sat` (truncating, saturating, NaN → 0); number → `Bool`
//!   `!= 0` (NaN → true); `Bool` → number 0/1; int → int sign-extends or truncates.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};

use super::CraneliftError;
use super::func::{Fx, clif_ty};
use crate::schedule::kir::{BinOp, Const, Expr, Func, Ty, UnOp};

/// `fma(±x, y, ±z)` found in one KIR expression (see the module docs).
pub(super) struct MulAdd<'e> {
    pub(super) x: &'e Expr,
    pub(super) y: &'e Expr,
    pub(super) z: &'e Expr,
    /// The product is subtracted (`z - x * y`).
    pub(super) neg_xy: bool,
    /// The addend is subtracted (`x * y - z`).
    pub(super) neg_z: bool,
}

/// The multiply-add `e` contracts to, if any (floats only; a product on the right wins).
pub(super) fn contraction<'e>(f: &Func, e: &'e Expr) -> Option<MulAdd<'e>> {
    let Expr::Binary { op, a, b, .. } = e else { return None };
    if !matches!(op, BinOp::Add | BinOp::Sub) || !f.ty(a).is_float() {
        return None;
    }
    let mul = |e: &'e Expr| match e {
        Expr::Binary { op: BinOp::Mul, a, b, .. } => Some((&**a, &**b)),
        _ => None,
    };
    let sub = *op == BinOp::Sub;
    if let Some((x, y)) = mul(b) {
        return Some(MulAdd { x, y, z: a, neg_xy: sub, neg_z: false });
    }
    mul(a).map(|(x, y)| MulAdd { x, y, z: b, neg_xy: false, neg_z: sub })
}

/// The libm names (`f64`, `f32`) of a unary math function.
fn libm_unary(op: UnOp) -> Option<(&'static str, &'static str)> {
    use UnOp::*;
    Some(match op {
        Exp => ("exp", "expf"),
        Exp2 => ("exp2", "exp2f"),
        Log => ("log", "logf"),
        Log2 => ("log2", "log2f"),
        Log1p => ("log1p", "log1pf"),
        Expm1 => ("expm1", "expm1f"),
        Tanh => ("tanh", "tanhf"),
        Erf => ("erf", "erff"),
        Sin => ("sin", "sinf"),
        Cos => ("cos", "cosf"),
        _ => return None,
    })
}

/// The float condition of a comparison.
pub(super) fn float_cc(op: BinOp) -> Option<FloatCC> {
    Some(match op {
        BinOp::Lt => FloatCC::LessThan,
        BinOp::Le => FloatCC::LessThanOrEqual,
        BinOp::Gt => FloatCC::GreaterThan,
        BinOp::Ge => FloatCC::GreaterThanOrEqual,
        BinOp::Eq => FloatCC::Equal,
        BinOp::Ne => FloatCC::NotEqual,
        _ => return None,
    })
}

/// The integer condition of a comparison (`Bool` compares unsigned).
pub(super) fn int_cc(op: BinOp, unsigned: bool) -> Option<IntCC> {
    Some(match (op, unsigned) {
        (BinOp::Lt, false) => IntCC::SignedLessThan,
        (BinOp::Le, false) => IntCC::SignedLessThanOrEqual,
        (BinOp::Gt, false) => IntCC::SignedGreaterThan,
        (BinOp::Ge, false) => IntCC::SignedGreaterThanOrEqual,
        (BinOp::Lt, true) => IntCC::UnsignedLessThan,
        (BinOp::Le, true) => IntCC::UnsignedLessThanOrEqual,
        (BinOp::Gt, true) => IntCC::UnsignedGreaterThan,
        (BinOp::Ge, true) => IntCC::UnsignedGreaterThanOrEqual,
        (BinOp::Eq, _) => IntCC::Equal,
        (BinOp::Ne, _) => IntCC::NotEqual,
        _ => return None,
    })
}

impl Fx<'_, '_> {
    /// The value of constant `c`.
    pub(super) fn constant(&mut self, c: Const) -> Value {
        match c {
            Const::Bool(v) => self.iconst(types::I8, i64::from(v)),
            Const::I32(v) => self.iconst(types::I32, i64::from(v)),
            Const::I64(v) => self.iconst(types::I64, v),
            Const::F32(v) => self.b.ins().f32const(v),
            Const::F64(v) => self.b.ins().f64const(v),
        }
    }

    /// Lowers `e`.
    pub(super) fn expr(&mut self, e: &Expr) -> Result<Value, CraneliftError> {
        Ok(match e {
            Expr::Const(c) => self.constant(*c),
            Expr::Var(v) => self.use_var(*v)?,
            Expr::Load { buf, index } => {
                let i = self.expr(index)?;
                self.load_elem(*buf, i)?
            }
            Expr::Unary { op, x } => {
                let t = self.f.ty(x);
                let v = self.expr(x)?;
                self.unary(*op, t, v)?
            }
            Expr::Binary { op, a, b, .. } => {
                if self.cx.fma
                    && let Some(m) = contraction(self.f, e)
                {
                    let (x, y, z) = (self.expr(m.x)?, self.expr(m.y)?, self.expr(m.z)?);
                    return Ok(self.mul_add(x, y, z, m.neg_xy, m.neg_z));
                }
                let t = self.f.ty(a);
                let va = self.expr(a)?;
                let vb = self.expr(b)?;
                self.binary(*op, t, va, vb)?
            }
            Expr::Select { c, a, b } => {
                let c = self.expr(c)?;
                let va = self.expr(a)?;
                let vb = self.expr(b)?;
                self.b.ins().select(c, va, vb)
            }
            Expr::Cast { to, x } => {
                let from = self.f.ty(x);
                let v = self.expr(x)?;
                self.cast(from, *to, v)?
            }
            Expr::Bitcast { to, x } => {
                let v = self.expr(x)?;
                if self.f.ty(x) == *to { v } else { self.b.ins().bitcast(clif_ty(*to), MemFlagsData::new(), v) }
            }
        })
    }

    /// `fma(±x, y, ±z)` (scalars or vectors of one float type).
    pub(super) fn mul_add(&mut self, x: Value, y: Value, z: Value, neg_xy: bool, neg_z: bool) -> Value {
        let x = if neg_xy { self.b.ins().fneg(x) } else { x };
        let z = if neg_z { self.b.ins().fneg(z) } else { z };
        self.b.ins().fma(x, y, z)
    }

    /// Calls the libm function `(f64 name, f32 name)` on float `args` of type `t`.
    fn libm(&mut self, names: (&str, &str), t: Ty, args: &[Value]) -> Result<Value, CraneliftError> {
        let ty = clif_ty(t);
        let name = if t == Ty::F32 { names.1 } else { names.0 };
        let params = vec![ty; args.len()];
        self.call_value(name, &params, ty, args)
    }

    /// `op` on scalar `v` of type `t`.
    pub(super) fn unary(&mut self, op: UnOp, t: Ty, v: Value) -> Result<Value, CraneliftError> {
        use UnOp::*;
        let fl = t.is_float();
        if let Some(names) = libm_unary(op) {
            return self.libm(names, t, &[v]);
        }
        let ins = self.b.ins();
        Ok(match op {
            Neg if fl => ins.fneg(v),
            Neg => ins.ineg(v),
            Not if t == Ty::Bool => ins.bxor_imm_s(v, 1),
            Not => ins.bnot(v),
            Abs if fl => ins.fabs(v),
            Abs => ins.iabs(v),
            Floor | Ceil | RoundEven if !fl => v,
            Floor => ins.floor(v),
            Ceil => ins.ceil(v),
            RoundEven => ins.nearest(v),
            Sqrt => ins.sqrt(v),
            IsNan if fl => ins.fcmp(FloatCC::Unordered, v, v),
            IsNan => self.iconst(types::I8, 0),
            Exp | Exp2 | Log | Log2 | Log1p | Expm1 | Tanh | Erf | Sin | Cos => {
                return Err(self.internal(format!("{op:?} is a libm call")));
            }
        })
    }

    /// `op` on scalars `a`, `b` of type `t`.
    pub(super) fn binary(&mut self, op: BinOp, t: Ty, a: Value, b: Value) -> Result<Value, CraneliftError> {
        use BinOp::*;
        if t.is_float() {
            if let Some(cc) = float_cc(op) {
                return Ok(self.b.ins().fcmp(cc, a, b));
            }
            let ins = self.b.ins();
            return Ok(match op {
                Add => ins.fadd(a, b),
                Sub => ins.fsub(a, b),
                Mul => ins.fmul(a, b),
                Div => ins.fdiv(a, b),
                Min => ins.fmin(a, b),
                Max => ins.fmax(a, b),
                Rem => self.libm(("fmod", "fmodf"), t, &[a, b])?,
                Pow => self.libm(("pow", "powf"), t, &[a, b])?,
                Atan2 => self.libm(("atan2", "atan2f"), t, &[a, b])?,
                _ => return Err(self.internal(format!("{op:?} on a float"))),
            });
        }
        let boolean = t == Ty::Bool;
        if let Some(cc) = int_cc(op, boolean) {
            return Ok(self.b.ins().icmp(cc, a, b));
        }
        let ins = self.b.ins();
        Ok(match op {
            Add => ins.iadd(a, b),
            Sub => ins.isub(a, b),
            Mul => ins.imul(a, b),
            Div => self.div(a, b, t, false),
            Rem => self.div(a, b, t, true),
            Min if boolean => ins.band(a, b),
            Max if boolean => ins.bor(a, b),
            Min => ins.smin(a, b),
            Max => ins.smax(a, b),
            And => ins.band(a, b),
            Or => ins.bor(a, b),
            Shl => ins.ishl(a, b),
            AddOverflows => ins.sadd_overflow(a, b).1,
            SubOverflows => ins.ssub_overflow(a, b).1,
            MulOverflows => ins.smul_overflow(a, b).1,
            _ => return Err(self.internal(format!("{op:?} on {t}"))),
        })
    }

    /// Truncating `a / b` or `a % b` that cannot trap (see the module docs).
    fn div(&mut self, a: Value, b: Value, t: Ty, rem: bool) -> Value {
        let ty = clif_ty(t);
        let zero = self.ins().icmp_imm_s(IntCC::Equal, b, 0);
        let m1 = self.ins().icmp_imm_s(IntCC::Equal, b, -1);
        let bad = self.ins().bor(zero, m1);
        let one = self.iconst(ty, 1);
        let d = self.ins().select(bad, one, b);
        if rem {
            let r = self.ins().srem(a, d);
            let z = self.iconst(ty, 0);
            self.ins().select(m1, z, r)
        } else {
            let q = self.ins().sdiv(a, d);
            let n = self.ins().ineg(a);
            self.ins().select(m1, n, q)
        }
    }

    /// `v` of type `t` as a `Bool` (`!= 0`; NaN is true).
    pub(super) fn truthy(&mut self, v: Value, t: Ty) -> Value {
        match t {
            Ty::Bool => v,
            _ if t.is_float() => {
                let z = if t == Ty::F64 { self.b.ins().f64const(0.0) } else { self.b.ins().f32const(0.0) };
                self.b.ins().fcmp(FloatCC::NotEqual, v, z)
            }
            _ => self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0),
        }
    }

    /// Numeric conversion of scalar `v` from `from` to `to` (value types).
    pub(super) fn cast(&mut self, from: Ty, to: Ty, v: Value) -> Result<Value, CraneliftError> {
        if from == to {
            return Ok(v);
        }
        if to == Ty::Bool {
            return Ok(self.truthy(v, from));
        }
        let dst = clif_ty(to);
        let ins = self.b.ins();
        Ok(match (from.is_float(), to.is_float()) {
            (true, true) if to == Ty::F64 => ins.fpromote(dst, v),
            (true, true) => ins.fdemote(dst, v),
            (true, false) => ins.fcvt_to_sint_sat(dst, v),
            (false, true) if from == Ty::Bool => {
                let w = ins.uextend(types::I32, v);
                self.b.ins().fcvt_from_sint(dst, w)
            }
            (false, true) => ins.fcvt_from_sint(dst, v),
            (false, false) if from == Ty::Bool => ins.uextend(dst, v),
            (false, false) if dst.bits() > clif_ty(from).bits() => ins.sextend(dst, v),
            (false, false) => ins.ireduce(dst, v),
        })
    }
}
