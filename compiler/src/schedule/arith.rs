//! Operators, casts and elementwise functions in KIR, with the language's scalar semantics
//! (`semantics::ops`): integer results outside their dtype fail with `Overflow`, integer `/`
//! and `%` floor and fail on a zero divisor, float `/` has `0/0 = 0`, float `%` is floored,
//! min/max propagate NaN, float → int casts truncate and saturate.
//!
//! Float math computes in the dtype's own precision (`f32` for `f32`/`f16`/`bf16`), not in
//! `f64` like the interpreter; tests compare with magnitude-scaled tolerances. `f32` `exp`
//! is expanded inline ([`exp_f32`]) so loops over it vectorize, and so are the functions built
//! on it (`expm1`, `tanh`, `sigmoid`, `elu`, `erf`, `gelu`), the logarithms (`log`, `log2`,
//! `log1p`: [`log_f32_parts`]) and `softplus`.

use egg::Id;

use super::ScheduleError;
use super::build::{Builder, e};
use super::kir::{BinOp as K, Const, Expr, FailKind, Ty, UnOp as KU};
use super::lower::{Cx, Def, vty};
use crate::hir::{BinOp, DType, Func, UnOp};

impl Cx<'_> {
    /// Fails with `Overflow` when `cond` may hold (not when the analysis proves it false).
    fn overflow_if(&mut self, cond: Expr, what: &str) {
        let site = format!("{what} overflows (in {})", self.loc);
        self.b.fail_if(cond, FailKind::Overflow, site);
    }

    /// `a op b` on integers of type `ty`, failing where the exact result does not fit.
    fn checked(&mut self, op: K, ovf: K, ty: Ty, a: Expr, b: Expr, what: &str) -> Expr {
        let bound = if ty == Ty::I32 { (i32::MIN as i128, i32::MAX as i128) } else { (i64::MIN as i128, i64::MAX as i128) };
        let x = e::bin(op, a.clone(), b.clone());
        if !self.within(&x, bound.0, bound.1) {
            self.overflow_if(e::bin(ovf, a, b), what);
        }
        x
    }

    /// A unary operator.
    pub(super) fn unary(&mut self, d: Def<'_>, op: UnOp, dt: DType, a: Id) -> Result<Expr, ScheduleError> {
        let ty = vty(dt);
        let x = self.lower_as(d, a, if op == UnOp::Not { Ty::Bool } else { ty })?;
        Ok(match op {
            UnOp::Not => e::un(KU::Not, x),
            UnOp::Neg => self.neg(ty, x),
        })
    }

    /// `-x` of type `ty` (integers: failing on overflow).
    pub(super) fn neg(&mut self, ty: Ty, x: Expr) -> Expr {
        if ty.is_int() {
            let zero = e::num(ty, 0.0);
            self.checked(K::Sub, K::SubOverflows, ty, zero, x, "negation")
        } else {
            e::un(KU::Neg, x)
        }
    }

    /// A binary operator (never `&&`/`||`, which are short-circuit ops).
    pub(super) fn binary(&mut self, d: Def<'_>, op: BinOp, dt: DType, a: Id, b: Id) -> Result<Expr, ScheduleError> {
        let ty = vty(dt);
        let x = self.lower_as(d, a, ty)?;
        let y = self.lower_as(d, b, ty)?;
        Ok(self.bin_values(op, ty, x, y))
    }

    /// `x op y` on values of type `ty`.
    pub(super) fn bin_values(&mut self, op: BinOp, ty: Ty, x: Expr, y: Expr) -> Expr {
        let cmp = |k: K| e::bin(k, x.clone(), y.clone());
        match op {
            BinOp::Lt => return cmp(K::Lt),
            BinOp::Le => return cmp(K::Le),
            BinOp::Gt => return cmp(K::Gt),
            BinOp::Ge => return cmp(K::Ge),
            BinOp::Eq => return cmp(K::Eq),
            BinOp::Ne => return cmp(K::Ne),
            BinOp::And => return cmp(K::And),
            BinOp::Or => return cmp(K::Or),
            _ => {}
        }
        if ty.is_float() {
            return match op {
                BinOp::Add => e::add(x, y),
                BinOp::Sub => e::sub(x, y),
                BinOp::Mul => e::mul(x, y),
                BinOp::Div => fdiv(ty, x, y),
                _ => {
                    // Floored: the remainder takes the divisor's sign.
                    let r = e::bin(K::Rem, x, y.clone());
                    let zero = e::num(ty, 0.0);
                    let fix = e::bin(
                        K::And,
                        e::bin(K::Ne, r.clone(), zero.clone()),
                        e::bin(K::Ne, e::bin(K::Lt, r.clone(), zero.clone()), e::bin(K::Lt, y.clone(), zero)),
                    );
                    e::select(fix, e::add(r.clone(), y), r)
                }
            };
        }
        match op {
            BinOp::Add => self.checked(K::Add, K::AddOverflows, ty, x, y, "integer +"),
            BinOp::Sub => self.checked(K::Sub, K::SubOverflows, ty, x, y, "integer -"),
            BinOp::Mul => self.checked(K::Mul, K::MulOverflows, ty, x, y, "integer *"),
            _ => self.int_div(op == BinOp::Div, ty, x, y),
        }
    }

    /// Floor division or floor modulo of integers.
    fn int_div(&mut self, div: bool, ty: Ty, x: Expr, y: Expr) -> Expr {
        let zero = e::num(ty, 0.0);
        let site = format!("integer {} (in {})", if div { "/" } else { "%" }, self.loc);
        let nonzero = self.within(&y, 1, i64::MAX as i128) || self.within(&y, i64::MIN as i128, -1);
        if !nonzero {
            self.b.fail_if(e::bin(K::Eq, y.clone(), zero.clone()), FailKind::DivByZero, site);
        }
        let min = if ty == Ty::I32 { Expr::Const(Const::I32(i32::MIN)) } else { Expr::Const(Const::I64(i64::MIN)) };
        let minus1 = e::num(ty, -1.0);
        // MIN / -1 overflows; MIN % -1 is 0 (the truncating remainder would trap).
        let special = e::bin(K::And, e::bin(K::Eq, x.clone(), min), e::bin(K::Eq, y.clone(), minus1.clone()));
        let may_special = !(self.within(&y, 0, i64::MAX as i128) || self.within(&x, i64::MIN as i128 + 1, i64::MAX as i128));
        if div && may_special {
            self.overflow_if(special.clone(), "integer /");
        }
        // Safe operands for the truncating ops: y is never 0 or (-1 with x = MIN) here.
        let ys = if may_special { e::select(special, e::num(ty, 1.0), y.clone()) } else { y.clone() };
        let q = e::bin(K::Div, x.clone(), ys.clone());
        let r = e::bin(K::Rem, x.clone(), ys);
        let adjust = e::bin(
            K::And,
            e::bin(K::Ne, r.clone(), zero.clone()),
            e::bin(K::Ne, e::bin(K::Lt, r.clone(), zero.clone()), e::bin(K::Lt, y.clone(), zero)),
        );
        if div { e::select(adjust, e::sub(q.clone(), e::num(ty, 1.0)), q) } else { e::select(adjust, e::add(r.clone(), y), r) }
    }

    /// A conversion to dtype `to`.
    pub(super) fn cast(&mut self, d: Def<'_>, to: DType, x: Id) -> Result<Expr, ScheduleError> {
        let from = vty(d.tys[usize::from(x)]);
        let v = self.lower_as(d, x, from)?;
        Ok(self.cast_value(from, vty(to), v))
    }

    /// Converts value `v` of type `from` to `to`, failing where an `i64` does not fit `i32`.
    pub(super) fn cast_value(&mut self, from: Ty, to: Ty, v: Expr) -> Expr {
        if from == Ty::I64 && to == Ty::I32 && !self.within(&v, i32::MIN as i128, i32::MAX as i128) {
            let lo = e::bin(K::Lt, v.clone(), e::i64(i32::MIN as i64));
            let hi = e::bin(K::Gt, v.clone(), e::i64(i32::MAX as i64));
            self.overflow_if(e::bin(K::Or, lo, hi), "conversion to i32");
        }
        if from == to { v } else { e::cast(to, v) }
    }

    /// An elementwise function of result dtype `dt`.
    pub(super) fn call(&mut self, d: Def<'_>, f: Func, dt: DType, x: Id, y: Option<Id>) -> Result<Expr, ScheduleError> {
        let ty = vty(dt);
        let a = self.lower_as(d, x, ty)?;
        let b = match y {
            Some(y) => Some(self.lower_as(d, y, ty)?),
            None => None,
        };
        if ty.is_int() {
            return Ok(self.int_func(f, ty, a, b));
        }
        let b = b.unwrap_or_else(|| a.clone());
        Ok(float_func(&mut self.b, f, ty, a, b))
    }

    /// An integer elementwise function (`abs neg sign relu min max`).
    pub(super) fn int_func(&mut self, f: Func, ty: Ty, a: Expr, b: Option<Expr>) -> Expr {
        let zero = e::num(ty, 0.0);
        let b = b.unwrap_or_else(|| a.clone());
        match f {
            Func::Neg => self.neg(ty, a),
            // `0 - x` overflows exactly when `abs(x)` does (x = MIN).
            Func::Abs => {
                let n = self.neg(ty, a.clone());
                e::select(e::bin(K::Lt, a.clone(), zero), n, a)
            }
            Func::Sign => e::select(
                e::bin(K::Gt, a.clone(), zero.clone()),
                e::num(ty, 1.0),
                e::select(e::bin(K::Lt, a, zero.clone()), e::num(ty, -1.0), zero),
            ),
            Func::Relu => e::bin(K::Max, a, zero),
            Func::Min => e::bin(K::Min, a, b),
            Func::Max => e::bin(K::Max, a, b),
            // The checker only lets integer-accepting functions through.
            _ => a,
        }
    }
}

/// `a / b` with `0 / 0 = 0`.
pub(crate) fn fdiv(ty: Ty, a: Expr, b: Expr) -> Expr {
    let zero = e::num(ty, 0.0);
    let both = e::bin(K::And, e::bin(K::Eq, a.clone(), zero.clone()), e::bin(K::Eq, b.clone(), zero.clone()));
    e::select(both, zero, e::bin(K::Div, a, b))
}

/// `e^x`: inline for `f32` (vectorizable), libm for `f64`.
pub(crate) fn exp(bld: &mut Builder, ty: Ty, x: Expr) -> Expr {
    if ty == Ty::F32 { exp_f32(bld, x) } else { e::un(KU::Exp, x) }
}

/// `x` as an expression that may be used several times: itself when it is a variable or a
/// constant, else a new variable `name` set to it here (so it is evaluated once).
fn once(bld: &mut Builder, name: &str, x: Expr) -> Expr {
    match x {
        v @ (Expr::Var(_) | Expr::Const(_)) => v,
        x => e::var(bld.let_(name, x)),
    }
}

/// `e^x - 1`: inline for `f32` (a Taylor polynomial for `|x| < 1/4`, where `e^x - 1` would
/// cancel, else `exp(x) - 1`; about 2e-7 relative), libm for `f64`.
pub(crate) fn expm1(bld: &mut Builder, ty: Ty, x: Expr) -> Expr {
    if ty != Ty::F32 {
        return e::un(KU::Expm1, x);
    }
    let c = |v: f32| Expr::Const(Const::F32(v));
    let x = once(bld, "expm1.x", x);
    let big = exp_f32(bld, x.clone());
    let big = e::sub(big, c(1.0));
    // x + x²/2 + x³/6 + x⁴/24 + x⁵/120 + x⁶/720 (Horner).
    let mut p = c(1.0 / 720.0);
    for k in [1.0f32 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0] {
        p = e::add(e::mul(p, x.clone()), c(k));
    }
    let small = e::mul(p, x.clone());
    e::select(e::bin(K::Lt, e::un(KU::Abs, x), c(0.25)), small, big)
}

/// `e^x` in `f32` without a library call: `2^n · p(r)` with `n = round(x·log2 e)`,
/// `r = x - n·ln 2` in two parts (Cody–Waite), `p` a degree-6 polynomial (about 1 ulp on
/// the reduced range). `x` is clamped to `[-86, 88.72]` first so `2^(n-1)` is a normal
/// float; below -87.34 gives 0 (also `-inf`), above 88.72 gives `inf`, NaN stays NaN. In
/// `[-87.34, -86]` the result is off by at most 1e-37 absolute.
///
/// No float → integer conversion: `n` is rounded by adding `1.5·2^23` (the sum's low
/// mantissa bits then hold `n`, round-to-nearest-even as `roundeven`), and `2^(n-1)`'s bits
/// are that sum's bits plus 126, shifted into the exponent field (the shift drops the
/// shifter's own bits). A saturating `Cast` would do the same but lowers to scalar code on
/// x86 (`fptosi.sat` has no vector instruction), which cost as much as the two products of an
/// attention tile.
pub(crate) fn exp_f32(bld: &mut Builder, x: Expr) -> Expr {
    let c = |v: f32| Expr::Const(Const::F32(v));
    let x = once(bld, "exp.x", x);
    let xc = e::var(bld.let_("exp.xc", e::bin(K::Max, e::bin(K::Min, x.clone(), c(88.72)), c(-86.0))));
    // 1.5·2^23: adding it rounds |v| < 2^22 to an integer held in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    let t = e::var(bld.let_("exp.t", e::add(e::mul(xc.clone(), c(std::f32::consts::LOG2_E)), c(SHIFTER))));
    let n = e::var(bld.let_("exp.n", e::sub(t.clone(), c(SHIFTER))));
    let r = e::var(bld.let_("exp.r", e::sub(e::sub(xc, e::mul(n.clone(), c(0.693_145_75))), e::mul(n.clone(), c(1.428_606_8e-6)))));
    exp_f32_tail(r, t, x)
}

/// The end of [`exp_f32`] (and [`exp_f32_sum`]): `e^r · 2^n` from the reduced argument `r`
/// (`|r| <= ln2/2`), the shifted `t` (`n` in its low mantissa bits) and the unclamped
/// argument `x` (0 below -87.34, inf above 88.72, NaN through `r`).
fn exp_f32_tail(r: Expr, t: Expr, x: Expr) -> Expr {
    let c = |v: f32| Expr::Const(Const::F32(v));
    // Horner for e^r on |r| <= ln2/2.
    let coeffs = [1.0f32 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0];
    let mut p = c(coeffs[0]);
    for &k in &coeffs[1..] {
        p = e::add(e::mul(p, r.clone()), c(k));
    }
    // 2^(n-1) from its exponent bits (n - 1 in -125..=127), times 2: bits(t) = bits(SHIFTER) + n,
    // and bits(SHIFTER) << 23 is 0 in 32 bits.
    let tbits = Expr::Bitcast { to: Ty::I32, x: Box::new(t) };
    let bits = e::bin(K::Shl, e::add(tbits, Expr::Const(Const::I32(126))), Expr::Const(Const::I32(23)));
    let scale = Expr::Bitcast { to: Ty::F32, x: Box::new(bits) };
    let y = e::mul(e::mul(p, scale), c(2.0));
    let y = e::select(e::bin(K::Lt, x.clone(), c(-87.34)), c(0.0), y);
    e::select(e::bin(K::Gt, x, c(88.722_84)), c(f32::INFINITY), y)
}

/// `e^(hi + lo)` in `f32` for an exact `hi <= 0` and a small `lo` (`|lo| <= 2`), without
/// rounding `hi + lo` to one `f32`: `n = round((hi + lo) · log2 e)` and the reduced argument
/// `r = ((hi - n·C1) + lo) - n·C2` (`hi - n·C1` is exact: Cody–Waite's `C1` has few bits and
/// `n·C1` is within a factor two of `hi` where `|hi|` is large), then `exp_f32`'s polynomial
/// and scale. One exponential where two (`e^hi · e^lo`) were. Where `hi + lo` is clamped
/// (below -86, results under 1e-37) the reduced argument leaves the polynomial's range: off
/// by at most 1e-37 absolute, as [`exp_f32`] there.
fn exp_f32_sum(bld: &mut Builder, hi: Expr, lo: Expr) -> Expr {
    let c = |v: f32| Expr::Const(Const::F32(v));
    let hi = once(bld, "exps.hi", hi);
    let lo = once(bld, "exps.lo", lo);
    let x = e::var(bld.let_("exps.x", e::add(hi.clone(), lo.clone())));
    let xc = e::bin(K::Max, e::bin(K::Min, x.clone(), c(88.72)), c(-86.0));
    const SHIFTER: f32 = 12_582_912.0;
    let t = e::var(bld.let_("exps.t", e::add(e::mul(xc, c(std::f32::consts::LOG2_E)), c(SHIFTER))));
    let n = e::var(bld.let_("exps.n", e::sub(t.clone(), c(SHIFTER))));
    let r = e::sub(e::add(e::sub(hi, e::mul(n.clone(), c(0.693_145_75))), lo), e::mul(n, c(1.428_606_8e-6)));
    let r = e::var(bld.let_("exps.r", r));
    exp_f32_tail(r, t, x)
}

/// `erfc(z)` for `z >= 0` in `f32`, inline: Numerical Recipes' Chebyshev fit
/// `t · exp(-z² + P(t))`, `t = 1 / (1 + z/2)` (fractional error below 1.2e-7), with
/// `z² = s · y²` (`s` a power of two: `gelu` passes `y = |x|`, `s = 1/2` for `z = |x|/√2`, so
/// the rounding of `z` does not reach the exponent) and `y` split exactly (Veltkamp:
/// `y = yh + yl`, `yh` of 12 bits, so `s · yh²` is exact); the exponent is kept as that exact
/// part plus the rest through the range reduction ([`exp_f32_sum`]): rounding `-z² + P` to
/// one `f32` would cost `z² · 2^-24` relative (1.5e-6 at `z = 5`). `+inf` gives 0, NaN stays
/// NaN.
fn erfc_pos_f32(bld: &mut Builder, z: Expr, y: Expr, s: f32) -> Expr {
    let c = |v: f32| Expr::Const(Const::F32(v));
    let z = once(bld, "erfc.z", z);
    let t = e::var(bld.let_("erfc.t", e::bin(K::Div, c(1.0), e::add(c(1.0), e::mul(c(0.5), z.clone())))));
    // Numerical Recipes' coefficients as published (rounded to f32 here).
    #[allow(clippy::excessive_precision)]
    let coeffs = [
        0.170_872_77f32,
        -0.822_152_23,
        1.488_515_87,
        -1.135_203_98,
        0.278_868_07,
        -0.186_288_06,
        0.096_784_18,
        0.374_091_96,
        1.000_023_68,
        -1.265_512_23,
    ];
    let mut p = c(coeffs[0]);
    for &k in &coeffs[1..] {
        p = e::add(e::mul(p, t.clone()), c(k));
    }
    // Veltkamp split (no reassociation: the backends keep float operations as written). The
    // split would overflow near f32's top; erfc is 0 long before, so clamp first.
    let yc = e::var(bld.let_("erfc.yc", e::bin(K::Min, y, c(1e10))));
    let big = e::var(bld.let_("erfc.s", e::mul(yc.clone(), c(4097.0))));
    let yh = e::var(bld.let_("erfc.yh", e::sub(big.clone(), e::sub(big, yc.clone()))));
    let yl = e::var(bld.let_("erfc.yl", e::sub(yc, yh.clone())));
    let hi = e::un(KU::Neg, e::mul(c(s), e::mul(yh.clone(), yh.clone())));
    let lo = e::sub(p, e::mul(c(s), e::mul(yl.clone(), e::add(e::mul(c(2.0), yh), yl))));
    let r = e::mul(t, exp_f32_sum(bld, hi, lo));
    // Far out `exp(-s·yh²)` is 0 (and inf · 0 would be NaN): large `z` gives 0.
    e::select(e::bin(K::Gt, z, c(1e9)), c(0.0), r)
}

/// `2/√π · (x - x³/3 + x⁵/10 - x⁷/42 + x⁹/216 - x¹¹/1320)`: `erf` for `|x| < 1/2` (the next
/// term is below 1.5e-8 there), without the cancellation of `1 - erfc`.
fn erf_small_f32(x: Expr) -> Expr {
    let c = |v: f32| Expr::Const(Const::F32(v));
    let x2 = e::mul(x.clone(), x.clone());
    let mut p = c(-1.0 / 1320.0);
    for k in [1.0f32 / 216.0, -1.0 / 42.0, 1.0 / 10.0, -1.0 / 3.0, 1.0] {
        p = e::add(e::mul(p, x2.clone()), c(k));
    }
    e::mul(e::mul(p, x), c(std::f32::consts::FRAC_2_SQRT_PI))
}

/// `erf x`: inline for `f32` (vectorizable: no libm call), about 3e-7 relative (1 - erfc with
/// erfc good to ~2e-6 of itself in the tail); libm for `f64`.
pub(crate) fn erf(bld: &mut Builder, ty: Ty, x: Expr) -> Expr {
    if ty != Ty::F32 {
        return e::un(KU::Erf, x);
    }
    let c = |v: f32| Expr::Const(Const::F32(v));
    let x = once(bld, "erf.x", x);
    let a = e::var(bld.let_("erf.a", e::un(KU::Abs, x.clone())));
    let ec = erfc_pos_f32(bld, a.clone(), a.clone(), 1.0);
    let big = e::var(bld.let_("erf.big", e::sub(c(1.0), ec)));
    let signed = e::select(e::bin(K::Lt, x.clone(), c(0.0)), e::un(KU::Neg, big.clone()), big);
    // NaN: `a < 0.5` is false and `big` is NaN.
    e::select(e::bin(K::Lt, a, c(0.5)), erf_small_f32(x), signed)
}

/// `gelu x = x/2 · (1 + erf(x/√2))`: inline for `f32`, with `1 + erf(z)` taken as
/// `erfc(-z)` for `z < 0` (no cancellation: `gelu(-7)`, 9e-12, is good to 2.5e-6
/// relative, the accuracy of the two `exp_f32` in the tail) and `2 - erfc(z)` otherwise;
/// libm `erf` for `f64`.
pub(crate) fn gelu(bld: &mut Builder, ty: Ty, x: Expr) -> Expr {
    let half = e::num(ty, 0.5);
    if ty != Ty::F32 {
        let erf = e::un(KU::Erf, e::mul(x.clone(), e::num(ty, std::f64::consts::FRAC_1_SQRT_2)));
        return e::mul(e::mul(half, x), e::add(e::num(ty, 1.0), erf));
    }
    let c = |v: f32| Expr::Const(Const::F32(v));
    let x = once(bld, "gelu.x", x);
    let z = e::var(bld.let_("gelu.z", e::mul(x.clone(), c(std::f32::consts::FRAC_1_SQRT_2))));
    let a = e::var(bld.let_("gelu.a", e::un(KU::Abs, z.clone())));
    let ax = e::un(KU::Abs, x.clone());
    let ec = erfc_pos_f32(bld, a, ax, 0.5);
    let ec = e::var(bld.let_("gelu.erfc", ec));
    // `1 + erf(z)` is about 1 near 0, so the fit's fractional error (1.2e-7) is already
    // relative there: no small-argument series (erf needs one; gelu does not).
    let one_plus = e::select(e::bin(K::Lt, z, c(0.0)), ec.clone(), e::sub(c(2.0), ec));
    e::mul(e::mul(half, x), one_plus)
}

/// `tanh x`: inline for `f32` as `sign(x) · m / (m + 2)` with `m = expm1(2|x|)` (no
/// cancellation near 0: [`expm1`] is a polynomial there), 1 for `|x| > 9` (where `f32`'s
/// `tanh` is 1), NaN for NaN; about 3e-7 relative. libm for `f64`.
pub(crate) fn tanh(bld: &mut Builder, ty: Ty, x: Expr) -> Expr {
    if ty != Ty::F32 {
        return e::un(KU::Tanh, x);
    }
    let c = |v: f32| Expr::Const(Const::F32(v));
    let x = once(bld, "tanh.x", x);
    let a = e::var(bld.let_("tanh.a", e::un(KU::Abs, x.clone())));
    let m = expm1(bld, ty, e::mul(c(2.0), a.clone()));
    let m = e::var(bld.let_("tanh.m", m));
    let t = e::select(e::bin(K::Gt, a, c(9.0)), c(1.0), e::bin(K::Div, m.clone(), e::add(m, c(2.0))));
    // sign(x)·t (NaN stays NaN through `m`; -0 gives +0).
    e::select(e::bin(K::Lt, x, c(0.0)), e::un(KU::Neg, t.clone()), t)
}

/// `ln x` in `f32` without a library call (so loops over it vectorize): `x = 2^k · m` with
/// `m` in `[√½, √2)` read off the bits (subnormals scaled by `2^23` first), then Cephes'
/// `logf`: `f = m - 1`, `ln(1 + f) = f - f²/2 + f³·P(f)` (degree 8), `k · ln 2` in two parts.
/// About 1 ulp. `ln 0 = -inf`, `ln x = NaN` for `x < 0` and NaN, `ln inf = inf`.
///
/// The split needs no float → integer conversion (scalar on x86, see [`exp_f32`]) and no
/// integer shift right: `t = bits + (bits(1) - bits(√½))` is non-negative for every
/// non-negative float, `t / 2^23` (a division by a power of two: a shift) is `k + 127`, and
/// `bits - (k << 23)` is `m`'s bits.
///
/// Returns `(k, f, y)`: `ln x = k·ln 2 + f + y`, `y` the polynomial's part (small next to `f`).
fn log_f32_parts(bld: &mut Builder, x: Expr) -> (Expr, Expr, Expr) {
    let c = |v: f32| Expr::Const(Const::F32(v));
    let i = |v: i32| Expr::Const(Const::I32(v));
    let tiny = e::var(bld.let_("log.tiny", e::bin(K::Lt, x.clone(), c(f32::MIN_POSITIVE))));
    let xs = e::select(tiny.clone(), e::mul(x.clone(), c(8_388_608.0)), x);
    let bits = e::var(bld.let_("log.bits", Expr::Bitcast { to: Ty::I32, x: Box::new(xs) }));
    const ONE: i32 = 0x3f80_0000;
    const SQRT_HALF: i32 = 0x3f35_04f3;
    let kb = e::bin(K::Div, e::add(bits.clone(), i(ONE - SQRT_HALF)), i(1 << 23));
    let k = e::var(bld.let_("log.k", e::sub(kb, i(127))));
    let mbits = e::sub(bits, e::bin(K::Shl, k.clone(), i(23)));
    let m = Expr::Bitcast { to: Ty::F32, x: Box::new(mbits) };
    let f = e::var(bld.let_("log.f", e::sub(m, c(1.0))));
    let kf = e::sub(e::cast(Ty::F32, k), e::select(tiny, c(23.0), c(0.0)));
    let kf = e::var(bld.let_("log.kf", kf));
    let z = e::var(bld.let_("log.z", e::mul(f.clone(), f.clone())));
    let coeffs = [
        7.037_683_6e-2f32,
        -1.151_461_1e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_5e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ];
    let mut p = c(coeffs[0]);
    for &k in &coeffs[1..] {
        p = e::add(e::mul(p, f.clone()), c(k));
    }
    // ln(1 + f) - f: f³·P(f) - f²/2.
    let y = e::sub(e::mul(e::mul(p, f.clone()), z.clone()), e::mul(c(0.5), z));
    (kf, f, y)
}

/// The special cases of a logarithm of `x` around `r`, its value for positive finite `x`.
fn log_specials(x: Expr, r: Expr) -> Expr {
    let c = |v: f32| Expr::Const(Const::F32(v));
    let finite_pos = e::bin(K::And, e::bin(K::Gt, x.clone(), c(0.0)), e::bin(K::Lt, x.clone(), c(f32::INFINITY)));
    let edge = e::select(
        e::bin(K::Eq, x.clone(), c(0.0)),
        c(f32::NEG_INFINITY),
        e::select(e::bin(K::Eq, x, c(f32::INFINITY)), c(f32::INFINITY), c(f32::NAN)),
    );
    e::select(finite_pos, r, edge)
}

/// `ln x`: inline for `f32` ([`log_f32_parts`]), libm for `f64`.
pub(crate) fn log(bld: &mut Builder, ty: Ty, x: Expr) -> Expr {
    if ty != Ty::F32 {
        return e::un(KU::Log, x);
    }
    let c = |v: f32| Expr::Const(Const::F32(v));
    let x = once(bld, "log.x", x);
    let (k, f, y) = log_f32_parts(bld, x.clone());
    // k·ln 2 as k·C1 + k·C2 (C1 = 0.693359375 has few bits: k·C1 is exact), summed in
    // Cephes' order: the small terms first.
    let small = e::add(y, e::mul(k.clone(), c(-2.121_944_4e-4)));
    let r = e::add(e::add(small, f), e::mul(k, c(0.693_359_4)));
    log_specials(x, r)
}

/// `log2 x`: inline for `f32` as `k + ln(m) · log2 e` (exact `k`), libm for `f64`.
fn log2(bld: &mut Builder, ty: Ty, x: Expr) -> Expr {
    if ty != Ty::F32 {
        return e::un(KU::Log2, x);
    }
    let x = once(bld, "log2.x", x);
    let (k, f, y) = log_f32_parts(bld, x.clone());
    let r = e::add(k, e::mul(e::add(f, y), Expr::Const(Const::F32(std::f32::consts::LOG2_E))));
    log_specials(x, r)
}

/// `ln(1 + x)`: inline for `f32` as `ln u + (x - (u - 1)) / u` with `u = 1 + x` rounded (the
/// quotient restores what the rounding of `u` lost: accurate for tiny `x`), libm for `f64`.
/// `log1p(-1) = -inf`, NaN below -1, `inf` for `inf`.
pub(crate) fn log1p(bld: &mut Builder, ty: Ty, x: Expr) -> Expr {
    if ty != Ty::F32 {
        return e::un(KU::Log1p, x);
    }
    let c = |v: f32| Expr::Const(Const::F32(v));
    let x = once(bld, "log1p.x", x);
    let u = e::var(bld.let_("log1p.u", e::add(c(1.0), x.clone())));
    let lu = log(bld, ty, u.clone());
    let lu = e::var(bld.let_("log1p.lu", lu));
    let fix = e::bin(K::Div, e::sub(x.clone(), e::sub(u.clone(), c(1.0))), u.clone());
    // Where `u` is 0, inf or NaN, `ln u` is the answer (the quotient would be NaN); where it is
    // 1, `x` is (`x` is below f32's half-ulp of 1).
    let finite = e::bin(K::And, e::bin(K::Gt, u.clone(), c(0.0)), e::bin(K::Lt, u.clone(), c(f32::INFINITY)));
    let r = e::select(finite, e::add(lu.clone(), fix), lu);
    e::select(e::bin(K::Eq, u, c(1.0)), x, r)
}

/// `2^k` in `f32` for an integer-valued `k` (an `f32`) in `-126..=127`, from its exponent bits:
/// adding `1.5·2^23` puts `k` in the low mantissa bits (no float → integer conversion, which
/// does not vectorize on x86), and shifting `bits + 127` into the exponent field drops the
/// shifter's own bits (see [`exp_f32`]).
fn pow2_f32(k: Expr) -> Expr {
    const SHIFTER: f32 = 12_582_912.0;
    let bits = Expr::Bitcast { to: Ty::I32, x: Box::new(e::add(k, Expr::Const(Const::F32(SHIFTER)))) };
    let bits = e::bin(K::Shl, e::add(bits, Expr::Const(Const::I32(127))), Expr::Const(Const::I32(23)));
    Expr::Bitcast { to: Ty::F32, x: Box::new(bits) }
}

/// `a^b` in `f32` without `powf`: `2^(b · log2|a|)` with the logarithm and the product in
/// `f64` (`log2` of an `f32` is exact to `f64`'s precision, so the exponent is: no error grows
/// with `|b|`), the exponent split as `n + r` (`n` an integer, `|r| <= 1/2`, exact in `f64`),
/// `2^r` a degree-7 polynomial of `r · ln 2` (below 1e-8 relative) and `2^n` built from
/// exponent bits in two halves (each a normal float: results from `2^-151` (0) to `2^129`
/// (inf)). About 1 ulp. The `f64` `log2` of an operand that does not change in a loop (a
/// decay base `Gamma[h]` read per logit) is hoisted out of it by the backend, and the rest
/// vectorizes: RetNet's decay `Gamma[h]^(p - m)` no longer costs a library call per logit.
///
/// IEEE `pow` at the edges (as `powf`): `x^0 = 1` and `1^y = 1` (even NaN), `(-1)^±inf = 1`,
/// a negative base to an odd integer is negative (`-0` too: `(-0)^3 = -0`), a finite negative
/// base to a non-integer is NaN; zeros and infinities follow from `log2`.
fn pow_f32(bld: &mut Builder, a: Expr, b: Expr) -> Expr {
    let c = |v: f32| Expr::Const(Const::F32(v));
    let d = |v: f64| Expr::Const(Const::F64(v));
    let b = once(bld, "pow.b", b);
    let ax = e::var(bld.let_("pow.abs", e::un(KU::Abs, a.clone())));
    let l = e::un(KU::Log2, e::cast(Ty::F64, ax.clone()));
    let t = e::var(bld.let_("pow.t", e::mul(e::cast(Ty::F64, b.clone()), l)));
    // Clamped so both halves of 2^n are normal floats; NaN stays NaN (min/max propagate it).
    let tc = e::var(bld.let_("pow.tc", e::bin(K::Max, e::bin(K::Min, t, d(129.0)), d(-151.0))));
    let n = e::var(bld.let_("pow.n", e::un(KU::RoundEven, tc.clone())));
    let x = e::var(bld.let_("pow.x", e::mul(e::cast(Ty::F32, e::sub(tc, n.clone())), c(std::f32::consts::LN_2))));
    // e^x on |x| <= ln2/2: Taylor to degree 7 (Horner).
    let mut p = c(1.0 / 5040.0);
    for k in [1.0f32 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = e::add(e::mul(p, x.clone()), c(k));
    }
    let nf = e::var(bld.let_("pow.nf", e::cast(Ty::F32, n)));
    let n1 = e::var(bld.let_("pow.n1", e::un(KU::Floor, e::mul(nf.clone(), c(0.5)))));
    let y = e::mul(e::mul(p, pow2_f32(n1.clone())), pow2_f32(e::sub(nf, n1)));
    let y = e::var(bld.let_("pow.y", y));
    // The sign and the special cases.
    let is_int = e::var(bld.let_("pow.int", e::bin(K::Eq, e::un(KU::Floor, b.clone()), b.clone())));
    let half = e::mul(b.clone(), c(0.5));
    let odd = e::bin(K::And, is_int.clone(), e::bin(K::Ne, e::un(KU::Floor, half.clone()), half));
    let neg_sign = e::bin(K::Lt, Expr::Bitcast { to: Ty::I32, x: Box::new(a.clone()) }, Expr::Const(Const::I32(0)));
    let signed = e::select(e::bin(K::And, neg_sign, odd), e::un(KU::Neg, y.clone()), y);
    let finite_neg = e::bin(K::And, e::bin(K::Lt, a.clone(), c(0.0)), e::bin(K::Gt, a.clone(), c(f32::NEG_INFINITY)));
    let nan = e::bin(K::And, finite_neg, e::un(KU::Not, is_int));
    let r = e::select(nan, c(f32::NAN), signed);
    let one = e::bin(
        K::Or,
        e::bin(K::Or, e::bin(K::Eq, b.clone(), c(0.0)), e::bin(K::Eq, a, c(1.0))),
        e::bin(K::And, e::bin(K::Eq, ax, c(1.0)), e::bin(K::Eq, e::un(KU::Abs, b), c(f32::INFINITY))),
    );
    e::select(one, c(1.0), r)
}

/// A float elementwise function of type `ty`; `b` is the second argument of binary ones.
pub(crate) fn float_func(bld: &mut Builder, f: Func, ty: Ty, a: Expr, b: Expr) -> Expr {
    let c = |v: f64| e::num(ty, v);
    let a = once(bld, "arg", a);
    let sigmoid = |bld: &mut Builder, x: Expr| {
        // 1/(1+e^-x) for x >= 0, e^x/(1+e^x) otherwise: no overflow. One division, of the
        // numerator chosen by the sign (the two quotients share their divisor).
        let en = exp(bld, ty, e::un(KU::Neg, e::un(KU::Abs, x.clone())));
        let en = e::var(bld.let_("exp", en));
        let num = e::select(e::bin(K::Ge, x, c(0.0)), c(1.0), en.clone());
        e::bin(K::Div, num, e::add(c(1.0), en))
    };
    match f {
        Func::Exp => exp(bld, ty, a),
        Func::Exp2 => e::un(KU::Exp2, a),
        Func::Log => log(bld, ty, a),
        Func::Log2 => log2(bld, ty, a),
        Func::Log1p => log1p(bld, ty, a),
        Func::Sqrt => e::un(KU::Sqrt, a),
        Func::Rsqrt => e::bin(K::Div, c(1.0), e::un(KU::Sqrt, a)),
        Func::Abs => e::un(KU::Abs, a),
        Func::Neg => e::un(KU::Neg, a),
        Func::Sign => e::select(e::bin(K::Gt, a.clone(), c(0.0)), c(1.0), e::select(e::bin(K::Lt, a.clone(), c(0.0)), c(-1.0), a)),
        Func::Floor => e::un(KU::Floor, a),
        Func::Ceil => e::un(KU::Ceil, a),
        Func::Tanh => tanh(bld, ty, a),
        Func::Sigmoid => sigmoid(bld, a),
        Func::Relu => e::bin(K::Max, a, c(0.0)),
        Func::Gelu => gelu(bld, ty, a),
        Func::Elu => {
            let m1 = expm1(bld, ty, a.clone());
            e::select(e::bin(K::Gt, a.clone(), c(0.0)), a, m1)
        }
        Func::Silu => e::mul(a.clone(), sigmoid(bld, a)),
        Func::Softplus => {
            // max(x, 0) + ln(1 + e^-|x|): one exponential and one logarithm, no overflow
            // (NaN through max).
            let en = exp(bld, ty, e::un(KU::Neg, e::un(KU::Abs, a.clone())));
            let en = e::var(bld.let_("softplus.exp", en));
            e::add(e::bin(K::Max, a, c(0.0)), log1p(bld, ty, en))
        }
        Func::Erf => erf(bld, ty, a),
        Func::Sin => e::un(KU::Sin, a),
        Func::Cos => e::un(KU::Cos, a),
        Func::Pow if ty == Ty::F32 => pow_f32(bld, a, b),
        Func::Pow => e::bin(K::Pow, a, b),
        Func::Min => e::bin(K::Min, a, b),
        Func::Max => e::bin(K::Max, a, b),
        Func::Atan2 => e::bin(K::Atan2, a, b),
    }
}
