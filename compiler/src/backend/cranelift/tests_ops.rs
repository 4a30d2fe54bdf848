//! Tests of single operations through the JIT, each in a unit-stride loop compiled with and
//! without the vectorizer (so `F32`/`I32`/`Bool` cases exercise both the vector lanes and the
//! scalar code): overflow predicates, casts at the edges (NaN, ±inf, out of range),
//! NaN-propagating Min/Max, integer division that cannot trap, libm math vs Rust, and
//! exhaustive F16/BF16 conversions, bit for bit those of the LLVM backend's integer path.

use super::tests::*;
use super::*;
use crate::schedule::kir::*;

type IntOp = fn(i32, i32) -> i32;
type FloatPred = fn(f64, f64) -> bool;

/// Equality of results: bits, except that any NaN equals any NaN (NaN payloads and signs are
/// not part of KIR's semantics: x86's vector min/max give the negative default NaN).
pub(super) trait Same: Copy + Default + std::fmt::Debug {
    fn same(&self, other: &Self) -> bool;
}

macro_rules! same_eq {
    ($($t:ty)*) => {$(impl Same for $t {
        fn same(&self, other: &Self) -> bool {
            self == other
        }
    })*};
}
same_eq!(u8 u16 i32 i64);

impl Same for f32 {
    fn same(&self, other: &Self) -> bool {
        self.to_bits() == other.to_bits() || (self.is_nan() && other.is_nan())
    }
}

impl Same for f64 {
    fn same(&self, other: &Self) -> bool {
        self.to_bits() == other.to_bits() || (self.is_nan() && other.is_nan())
    }
}

/// Runs `map2` on `a`, `b` with and without SIMD; both must give the same results.
fn run2<A: Copy, O: Same>(f: &Func, a: &[A], b: &[A]) -> Vec<O> {
    let mut outs = Vec::new();
    for opts in SIMD_AND_SCALAR {
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        let mut o = vec![O::default(); a.len()];
        jit_with(f, &opts, |e| assert_eq!(call(e, &[p(&mut a), p(&mut b), p(&mut o)], &[a.len() as i64], &[]), 0));
        outs.push(o);
    }
    let same = outs[0].iter().zip(&outs[1]).all(|(x, y)| x.same(y));
    assert!(same, "vector and scalar code differ: {:?} vs {:?}", outs[0], outs[1]);
    outs.swap_remove(0)
}

#[test]
fn overflow_predicates() {
    let vals = [0, 1, -1, 2, i32::MAX, i32::MIN, 46341, -46341, 65536];
    let (mut a, mut b) = (vec![], vec![]);
    for &x in &vals {
        for &y in &vals {
            a.push(x);
            b.push(y);
        }
    }
    for op in [BinOp::AddOverflows, BinOp::SubOverflows, BinOp::MulOverflows] {
        let o: Vec<u8> = run2(&map2(Ty::I32, Ty::Bool, |x, y| bin(op, x, y)), &a, &b);
        for q in 0..a.len() {
            let want = match op {
                BinOp::AddOverflows => a[q].checked_add(b[q]).is_none(),
                BinOp::SubOverflows => a[q].checked_sub(b[q]).is_none(),
                _ => a[q].checked_mul(b[q]).is_none(),
            };
            assert_eq!(o[q] != 0, want, "{op:?} {} {}", a[q], b[q]);
        }
    }
    let a64 = [i64::MAX, i64::MIN, 1 << 32, -1];
    let b64 = [1, -1, 1 << 31, i64::MIN];
    let o: Vec<u8> = run2(&map2(Ty::I64, Ty::Bool, |x, y| bin(BinOp::MulOverflows, x, y)), &a64, &b64);
    assert_eq!(o, [0, 1, 1, 1]);
    let o: Vec<u8> = run2(&map2(Ty::I64, Ty::Bool, |x, y| bin(BinOp::AddOverflows, x, y)), &a64, &b64);
    assert_eq!(o, [1, 1, 0, 1]);
    let o: Vec<u8> = run2(&map2(Ty::I64, Ty::Bool, |x, y| bin(BinOp::SubOverflows, x, y)), &a64, &b64);
    assert_eq!(o, [0, 0, 0, 0]);
}

#[test]
fn casts_at_the_edges() {
    let xs = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e10, -1e10, 2.7, -2.7, 1e300, -0.0];
    let o: Vec<i32> = run2(&map2(Ty::F64, Ty::I32, |x, _| cast(Ty::I32, x)), &xs, &xs);
    assert_eq!(o, xs.map(|x| x as i32));
    let o: Vec<i64> = run2(&map2(Ty::F64, Ty::I64, |x, _| cast(Ty::I64, x)), &xs, &xs);
    assert_eq!(o, xs.map(|x| x as i64));
    let xf = xs.map(|x| x as f32);
    let o: Vec<i64> = run2(&map2(Ty::F32, Ty::I64, |x, _| cast(Ty::I64, x)), &xf, &xf);
    assert_eq!(o, xf.map(|x| x as i64));
    // The f32 → i32 lanes (vectorized) saturate and give 0 for NaN too.
    let o: Vec<i32> = run2(&map2(Ty::F32, Ty::I32, |x, _| cast(Ty::I32, x)), &xf, &xf);
    assert_eq!(o, xf.map(|x| x as i32));
    let big = [i32::MAX, i32::MIN, 16_777_217, -3];
    let o: Vec<f32> = run2(&map2(Ty::I32, Ty::F32, |x, _| cast(Ty::F32, x)), &big, &big);
    assert_eq!(o, big.map(|x| x as f32));
    // number → Bool is != 0 (NaN true); Bool → number is 0/1; int → int wraps/extends.
    let o: Vec<u8> = run2(&map2(Ty::F64, Ty::Bool, |x, _| cast(Ty::Bool, x)), &xs, &xs);
    assert_eq!(o, [1, 1, 1, 1, 1, 1, 1, 1, 0]);
    let o: Vec<u8> = run2(&map2(Ty::F32, Ty::Bool, |x, _| cast(Ty::Bool, x)), &xf, &xf);
    assert_eq!(o.iter().map(|&b| b != 0).collect::<Vec<_>>(), xf.map(|x| x != 0.0));
    let o: Vec<f32> = run2(&map2(Ty::F32, Ty::F32, |x, _| cast(Ty::F32, cast(Ty::Bool, x))), &xf, &xf);
    assert_eq!(o, [1., 1., 1., 1., 1., 1., 1., 1., 0.]);
    let o: Vec<i32> = run2(&map2(Ty::I32, Ty::I32, |x, _| cast(Ty::I32, cast(Ty::Bool, x))), &big, &big);
    assert_eq!(o, [1, 1, 1, 1]);
    let wide = [1i64 << 40 | 5, -1, i64::MIN];
    let o: Vec<i32> = run2(&map2(Ty::I64, Ty::I32, |x, _| cast(Ty::I32, x)), &wide, &wide);
    assert_eq!(o, wide.map(|x| x as i32));
    let o: Vec<i64> = run2(&map2(Ty::I64, Ty::I64, |x, _| cast(Ty::I64, cast(Ty::I32, x))), &wide, &wide);
    assert_eq!(o, wide.map(|x| i64::from(x as i32)));
    let bits = |x| Expr::Bitcast { to: Ty::I64, x: Box::new(cast(Ty::F64, x)) };
    let o: Vec<i64> = run2(&map2(Ty::I64, Ty::I64, |x, _| bits(x)), &wide, &wide);
    assert_eq!(o, wide.map(|x| (x as f64).to_bits() as i64));
    let fbits = |x| Expr::Bitcast { to: Ty::I32, x: Box::new(x) };
    let o: Vec<i32> = run2(&map2(Ty::F32, Ty::I32, |x, _| fbits(x)), &xf, &xf);
    assert_eq!(o, xf.map(|x| x.to_bits() as i32));
    // f64 ↔ f32 round to nearest; inf and NaN survive.
    let o: Vec<f32> = run2(&map2(Ty::F64, Ty::F32, |x, _| cast(Ty::F32, x)), &xs, &xs);
    assert_eq!(o[1..].to_vec(), xs[1..].iter().map(|&x| x as f32).collect::<Vec<_>>());
    assert!(o[0].is_nan());
}

#[test]
fn min_max_propagate_nan() {
    let a = [f32::NAN, 1.0, -0.0, 3.0, f32::NEG_INFINITY, 0.0, 5.0];
    let b = [1.0, f32::NAN, 0.0, -3.0, 2.0, -0.0, 5.0];
    let mn: Vec<f32> = run2(&map2(Ty::F32, Ty::F32, |x, y| bin(BinOp::Min, x, y)), &a, &b);
    let mx: Vec<f32> = run2(&map2(Ty::F32, Ty::F32, |x, y| bin(BinOp::Max, x, y)), &a, &b);
    assert!(mn[0].is_nan() && mn[1].is_nan() && mx[0].is_nan() && mx[1].is_nan());
    for q in [2, 5] {
        assert_eq!(mn[q].to_bits(), (-0.0f32).to_bits());
        assert_eq!(mx[q].to_bits(), 0.0f32.to_bits());
    }
    assert_eq!((mn[3], mx[3], mn[4], mx[4]), (-3.0, 3.0, f32::NEG_INFINITY, 2.0));
    let ai = [i64::MIN, 5, -5];
    let bi = [0, -7, -5];
    let mn: Vec<i64> = run2(&map2(Ty::I64, Ty::I64, |x, y| bin(BinOp::Min, x, y)), &ai, &bi);
    let mx: Vec<i64> = run2(&map2(Ty::I64, Ty::I64, |x, y| bin(BinOp::Max, x, y)), &ai, &bi);
    assert_eq!((mn, mx), (vec![i64::MIN, -7, -5], vec![0, 5, -5]));
    let a32 = [i32::MIN, 5, -5, 7];
    let b32 = [0, -7, -5, i32::MAX];
    let mn: Vec<i32> = run2(&map2(Ty::I32, Ty::I32, |x, y| bin(BinOp::Min, x, y)), &a32, &b32);
    assert_eq!(mn, [i32::MIN, -7, -5, 7]);
    // Bool orders false < true.
    let ab = [0u8, 0, 1, 1];
    let bb = [0u8, 1, 0, 1];
    let mn: Vec<u8> = run2(&map2(Ty::Bool, Ty::Bool, |x, y| bin(BinOp::Min, x, y)), &ab, &bb);
    let lt: Vec<u8> = run2(&map2(Ty::Bool, Ty::Bool, |x, y| bin(BinOp::Lt, x, y)), &ab, &bb);
    assert_eq!((mn, lt), (vec![0, 0, 0, 1], vec![0, 1, 0, 0]));
}

#[test]
fn integer_arithmetic_and_division_never_traps() {
    let a = [7i32, -7, 7, -7, 1, i32::MIN, 9];
    let b = [2i32, 2, 3, 1, 31, 1, 4];
    let cases: [(BinOp, IntOp); 5] = [
        (BinOp::Div, |x, y| x / y),
        (BinOp::Rem, |x, y| x % y),
        (BinOp::Shl, |x, y| x.wrapping_shl(y as u32)),
        (BinOp::Sub, i32::wrapping_sub),
        (BinOp::Mul, i32::wrapping_mul),
    ];
    for (op, want) in cases {
        let o: Vec<i32> = run2(&map2(Ty::I32, Ty::I32, |x, y| bin(op, x, y)), &a, &b);
        assert_eq!(o, (0..a.len()).map(|q| want(a[q], b[q])).collect::<Vec<_>>(), "{op:?}");
    }
    let o: Vec<i32> = run2(&map2(Ty::I32, Ty::I32, |x, _| un(UnOp::Neg, x)), &a, &b);
    assert_eq!(o, a.map(i32::wrapping_neg));
    let o: Vec<i32> = run2(&map2(Ty::I32, Ty::I32, |x, _| un(UnOp::Abs, x)), &a, &b);
    assert_eq!(o, a.map(i32::wrapping_abs));
    let o: Vec<i32> = run2(&map2(Ty::I32, Ty::I32, |x, _| un(UnOp::Not, x)), &a, &b);
    assert_eq!(o, a.map(|x| !x));
    // Both sides of a select are evaluated: dividing by 0 or MIN by -1 must not trap.
    let guarded = |x: Expr, y: Expr| {
        let bad = bin(BinOp::Eq, y.clone(), Expr::Const(Const::I32(0)));
        let q = bin(BinOp::Div, x.clone(), y.clone());
        let r = bin(BinOp::Rem, x, y);
        sel(bad, Expr::Const(Const::I32(-99)), bin(BinOp::Add, q, r))
    };
    let a = [5, i32::MIN, 7, i32::MIN, 3];
    let b = [0, -1, -1, 0, 2];
    let o: Vec<i32> = run2(&map2(Ty::I32, Ty::I32, guarded), &a, &b);
    assert_eq!(o, [-99, i32::MIN, -7, -99, 2]);
    let a64 = [i64::MIN, 9, -9];
    let b64 = [-1, 0, 4];
    let o: Vec<i64> = run2(&map2(Ty::I64, Ty::I64, |x, y| bin(BinOp::Div, x, y)), &a64, &b64);
    assert_eq!((o[0], o[2]), (i64::MIN, -2));
}

#[test]
fn float_arithmetic_comparisons_and_selects() {
    let x = [5.5f64, -5.5, f64::NAN, 1.0, 2.0];
    let y = [2.0f64, 2.0, 1.0, f64::NAN, 2.0];
    for t in [Ty::F64, Ty::F32] {
        let to = |xs: &[f64]| -> Vec<f64> { xs.to_vec() };
        let o: Vec<f64> = if t == Ty::F64 {
            run2(&map2(t, t, |p, q| bin(BinOp::Rem, p, q)), &x, &y)
        } else {
            let (xf, yf) = (x.map(|v| v as f32), y.map(|v| v as f32));
            let o: Vec<f32> = run2(&map2(t, t, |p, q| bin(BinOp::Rem, p, q)), &xf, &yf);
            to(&o.iter().map(|&v| f64::from(v)).collect::<Vec<_>>())
        };
        assert_eq!((o[0], o[1], o[4]), (1.5, -1.5, 0.0), "{t}");
        assert!(o[2].is_nan() && o[3].is_nan());
    }
    let preds: [(BinOp, FloatPred); 6] = [
        (BinOp::Lt, |p, q| p < q),
        (BinOp::Le, |p, q| p <= q),
        (BinOp::Gt, |p, q| p > q),
        (BinOp::Ge, |p, q| p >= q),
        (BinOp::Eq, |p, q| p == q),
        (BinOp::Ne, |p, q| p != q),
    ];
    let (xf, yf) = (x.map(|v| v as f32), y.map(|v| v as f32));
    for (op, want) in preds {
        let o: Vec<u8> = run2(&map2(Ty::F64, Ty::Bool, |p, q| bin(op, p, q)), &x, &y);
        let w: Vec<u8> = (0..x.len()).map(|q| want(x[q], y[q]) as u8).collect();
        assert_eq!(o, w, "{op:?}");
        let o: Vec<u8> = run2(&map2(Ty::F32, Ty::Bool, |p, q| bin(op, p, q)), &xf, &yf);
        assert_eq!(o, w, "{op:?} on f32");
    }
    let o: Vec<u8> = run2(&map2(Ty::F32, Ty::Bool, |p, _| un(UnOp::Not, un(UnOp::IsNan, p))), &xf, &yf);
    assert_eq!(o, [1, 1, 0, 1, 1]);
    let pick = |p: Expr, q: Expr| sel(bin(BinOp::Gt, p.clone(), q.clone()), p, q);
    let o: Vec<f32> = run2(&map2(Ty::F32, Ty::F32, pick), &xf, &yf);
    assert_eq!((o[0], o[1], o[2], o[4]), (5.5, 2.0, 1.0, 2.0));
    assert!(o[3].is_nan());
    // Contraction: a * b + c (one fma on FMA hosts) agrees between vector and scalar code.
    let fma = |p: Expr, q: Expr| bin(BinOp::Add, bin(BinOp::Mul, p.clone(), q.clone()), bin(BinOp::Sub, p, q));
    let (a, b): (Vec<f32>, Vec<f32>) = (0..103).map(|k| (1.0 + k as f32 * 1e-3, 3.0 - k as f32 / 7.0)).unzip();
    let o: Vec<f32> = run2(&map2(Ty::F32, Ty::F32, fma), &a, &b);
    for q in 0..a.len() {
        let exact = f64::from(a[q]) * f64::from(b[q]) + f64::from(a[q] - b[q]);
        assert!((f64::from(o[q]) - exact).abs() <= 1e-6 * exact.abs().max(1.0));
    }
}

/// Checks unary `op` on f32 and f64 against Rust within `ulps` units in the last place.
fn check_unary(op: UnOp, xs: &[f64], r64: fn(f64) -> f64, r32: fn(f32) -> f32, ulps: f64) {
    let o: Vec<f64> = run2(&map2(Ty::F64, Ty::F64, |x, _| un(op, x)), xs, xs);
    for (x, got) in xs.iter().zip(&o) {
        let want = r64(*x);
        let ok = (got.is_nan() && want.is_nan()) || got == &want || (got - want).abs() <= ulps * f64::EPSILON * want.abs();
        assert!(ok, "{op:?}({x}) = {got}, want {want}");
    }
    let xf: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
    let o: Vec<f32> = run2(&map2(Ty::F32, Ty::F32, |x, _| un(op, x)), &xf, &xf);
    for (x, got) in xf.iter().zip(&o) {
        let want = r32(*x);
        let ok = (got.is_nan() && want.is_nan()) || got == &want || (got - want).abs() <= ulps as f32 * f32::EPSILON * want.abs();
        assert!(ok, "{op:?}({x}) = {got}, want {want} (f32)");
    }
}

#[test]
fn math_functions_match_rust() {
    let xs = [0.0, -0.0, 0.5, -0.75, 1.0, 2.5, -3.25, 10.0, 1e-5, 100.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN];
    let pos = [0.0, 0.5, 1.0, 2.5, 10.0, 1e-5, 1e10, f64::INFINITY, -1.0, f64::NAN];
    check_unary(UnOp::Tanh, &xs, f64::tanh, f32::tanh, 0.0);
    check_unary(UnOp::Log1p, &pos, f64::ln_1p, f32::ln_1p, 0.0);
    check_unary(UnOp::Expm1, &xs, f64::exp_m1, f32::exp_m1, 0.0);
    check_unary(UnOp::Erf, &xs, libm::erf, libm::erff, 0.0);
    check_unary(UnOp::Exp, &xs, f64::exp, f32::exp, 0.0);
    check_unary(UnOp::Exp2, &xs, f64::exp2, f32::exp2, 0.0);
    check_unary(UnOp::Log, &pos, f64::ln, f32::ln, 0.0);
    check_unary(UnOp::Log2, &pos, f64::log2, f32::log2, 0.0);
    check_unary(UnOp::Sin, &xs, f64::sin, f32::sin, 0.0);
    check_unary(UnOp::Cos, &xs, f64::cos, f32::cos, 0.0);
    check_unary(UnOp::Sqrt, &pos, f64::sqrt, f32::sqrt, 0.0);
    check_unary(UnOp::Abs, &xs, f64::abs, f32::abs, 0.0);
    check_unary(UnOp::Floor, &xs, f64::floor, f32::floor, 0.0);
    check_unary(UnOp::Ceil, &xs, f64::ceil, f32::ceil, 0.0);
    let ties = [0.5, 1.5, 2.5, -0.5, -2.5, 3.7, f64::NAN, 1e30];
    check_unary(UnOp::RoundEven, &ties, f64::round_ties_even, f32::round_ties_even, 0.0);
    check_unary(UnOp::Neg, &xs, |x| -x, |x| -x, 0.0);
    let a = [2.0f64, -1.0, 0.5, 3.0, f64::NAN, 0.0];
    let b = [10.0f64, 3.0, -2.0, -0.5, 1.0, -1.0];
    let pow: Vec<f64> = run2(&map2(Ty::F64, Ty::F64, |x, y| bin(BinOp::Pow, x, y)), &a, &b);
    let at: Vec<f64> = run2(&map2(Ty::F64, Ty::F64, |x, y| bin(BinOp::Atan2, x, y)), &a, &b);
    let (af, bf) = (a.map(|x| x as f32), b.map(|x| x as f32));
    let powf: Vec<f32> = run2(&map2(Ty::F32, Ty::F32, |x, y| bin(BinOp::Pow, x, y)), &af, &bf);
    let atf: Vec<f32> = run2(&map2(Ty::F32, Ty::F32, |x, y| bin(BinOp::Atan2, x, y)), &af, &bf);
    let same = |g: f64, w: f64| g == w || (g.is_nan() && w.is_nan());
    for q in 0..a.len() {
        assert!(same(pow[q], a[q].powf(b[q])), "pow({}, {})", a[q], b[q]);
        assert!(same(at[q], a[q].atan2(b[q])), "atan2({}, {})", a[q], b[q]);
        assert!(same(f64::from(powf[q]), f64::from(af[q].powf(bf[q]))), "powf({}, {})", af[q], bf[q]);
        assert!(same(f64::from(atf[q]), f64::from(af[q].atan2(bf[q]))), "atan2f({}, {})", af[q], bf[q]);
    }
}

/// Widens every 16-bit pattern of `t` and narrows tricky and spread `f32`s to `t`, comparing
/// with the `half` crate and with the LLVM backend's integer conversions (generic x86-64 CPU,
/// no F16C), bit for bit.
fn half_round_trip(t: Ty) {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    let llvm_generic = crate::backend::llvm::TargetOptions { cpu: Some("x86-64".into()), ..Default::default() };
    let copy = |from: Ty, to: Ty| {
        let mut k = K::new("copy");
        let (x, o) = (k.arg("x", from), k.arg("o", to));
        let n = k.dim("n");
        let j = k.var("j", Ty::I64);
        k.body(vec![for_(j, i(0), v(n), vec![st(o, v(j), ld(x, v(j)))])])
    };
    let widen = copy(t, Ty::F32);
    let mut xs = all.clone();
    let mut out = vec![0f32; xs.len()];
    jit(&widen, |e| assert_eq!(call(e, &[p(&mut xs), p(&mut out)], &[xs.len() as i64], &[]), 0));
    for (&h, &got) in all.iter().zip(&out) {
        let want = if t == Ty::F16 { ::half::f16::from_bits(h).to_f32() } else { ::half::bf16::from_bits(h).to_f32() };
        assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{t} {h:#06x}: {got} vs {want}");
    }
    let narrow = copy(Ty::F32, t);
    let mut fs: Vec<f32> =
        vec![65504.0, 65519.99, 65520.0, 1e9, -1e9, 5.96e-8, 2.98e-8, 2.99e-8, 1e-10, 6.1e-5, f32::NAN, -f32::NAN, f32::INFINITY];
    fs.extend((0..200_000u32).map(|q| f32::from_bits(q.wrapping_mul(2_654_435_761))));
    fs.extend(all.iter().map(|&h| {
        let x = ::half::f16::from_bits(h).to_f32();
        x + f32::from_bits(0x3380_0000) * x
    }));
    let mut hs = vec![0u16; fs.len()];
    jit(&narrow, |e| assert_eq!(call(e, &[p(&mut fs), p(&mut hs)], &[fs.len() as i64], &[]), 0));
    let mut llvm = vec![0u16; fs.len()];
    crate::backend::llvm::with_jit(&[Export::new(&narrow, "k")], &llvm_generic, |j| {
        assert_eq!(call(j.entry("k").unwrap(), &[p(&mut fs), p(&mut llvm)], &[fs.len() as i64], &[]), 0)
    })
    .unwrap();
    for q in 0..fs.len() {
        let (f, got) = (fs[q], hs[q]);
        assert_eq!(got, llvm[q], "{t} {f:e}: Cranelift {got:#06x}, LLVM {:#06x}", llvm[q]);
        let (want, nan) = if t == Ty::F16 {
            let w = ::half::f16::from_f32(f);
            (w.to_bits(), w.is_nan())
        } else {
            let w = ::half::bf16::from_f32(f);
            (w.to_bits(), w.is_nan())
        };
        let got_nan = if t == Ty::F16 { ::half::f16::from_bits(got).is_nan() } else { ::half::bf16::from_bits(got).is_nan() };
        assert!(got == want || (nan && got_nan && (got ^ want) & 0x8000 == 0), "{t} {f:e}: {got:#06x} vs {want:#06x}");
    }
}

#[test]
fn half_and_bfloat_conversions_are_exact() {
    half_round_trip(Ty::F16);
    half_round_trip(Ty::BF16);
}
