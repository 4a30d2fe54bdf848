//! Tests of single operations through the JIT: overflow predicates, casts (saturation, NaN),
//! NaN-propagating Min/Max, integer and float arithmetic edge cases, libm and intrinsic math
//! vs Rust, and exhaustive F16/BF16 conversions (native and integer paths).

use super::tests::*;
use super::*;
use crate::schedule::kir::*;

type IntOp = fn(i32, i32) -> i32;
type FloatPred = fn(f64, f64) -> bool;

/// Runs `map2` on `a`, `b` and returns the outputs.
fn run2<A: Copy, O: Copy + Default>(f: &Func, a: &[A], b: &[A]) -> Vec<O> {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    let mut o = vec![O::default(); a.len()];
    jit(f, |e| assert_eq!(call(e, &[p(&mut a), p(&mut b), p(&mut o)], &[a.len() as i64], &[]), 0));
    o
}

#[test]
fn overflow_predicates() {
    let i32s = [0, 1, -1, 2, i32::MAX, i32::MIN, 46341, -46341, 65536];
    let (mut a, mut b) = (vec![], vec![]);
    for &x in &i32s {
        for &y in &i32s {
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
}

#[test]
fn float_to_int_saturates_and_nan_is_zero() {
    let xs = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e10, -1e10, 2.7, -2.7, 1e300, -0.0];
    let o: Vec<i32> = run2(&map2(Ty::F64, Ty::I32, |x, _| cast(Ty::I32, x)), &xs, &xs);
    assert_eq!(o, xs.map(|x| x as i32));
    let o: Vec<i64> = run2(&map2(Ty::F64, Ty::I64, |x, _| cast(Ty::I64, x)), &xs, &xs);
    assert_eq!(o, xs.map(|x| x as i64));
    let xf = xs.map(|x| x as f32);
    let o: Vec<i64> = run2(&map2(Ty::F32, Ty::I64, |x, _| cast(Ty::I64, x)), &xf, &xf);
    assert_eq!(o, xf.map(|x| x as i64));
    // number → Bool is != 0 (NaN true); Bool → number is 0/1; int → int wraps/extends.
    let o: Vec<u8> = run2(&map2(Ty::F64, Ty::Bool, |x, _| cast(Ty::Bool, x)), &xs, &xs);
    assert_eq!(o, [1, 1, 1, 1, 1, 1, 1, 1, 0]);
    let o: Vec<f32> = run2(&map2(Ty::F64, Ty::F32, |x, _| cast(Ty::F32, cast(Ty::Bool, x))), &xs, &xs);
    assert_eq!(o, [1., 1., 1., 1., 1., 1., 1., 1., 0.]);
    let big = [1i64 << 40 | 5, -1, i64::MIN];
    let o: Vec<i32> = run2(&map2(Ty::I64, Ty::I32, |x, _| cast(Ty::I32, x)), &big, &big);
    assert_eq!(o, big.map(|x| x as i32));
    let o: Vec<i64> = run2(&map2(Ty::I64, Ty::I64, |x, _| cast(Ty::I64, cast(Ty::I32, x))), &big, &big);
    assert_eq!(o, big.map(|x| i64::from(x as i32)));
    let o: Vec<i64> = run2(&map2(Ty::I64, Ty::I64, |x, _| Expr::Bitcast { to: Ty::I64, x: Box::new(cast(Ty::F64, x)) }), &big, &big);
    assert_eq!(o, big.map(|x| (x as f64).to_bits() as i64));
}

#[test]
fn min_max_propagate_nan() {
    let a = [f32::NAN, 1.0, -0.0, 3.0, f32::NEG_INFINITY];
    let b = [1.0, f32::NAN, 0.0, -3.0, 2.0];
    let mn: Vec<f32> = run2(&map2(Ty::F32, Ty::F32, |x, y| bin(BinOp::Min, x, y)), &a, &b);
    let mx: Vec<f32> = run2(&map2(Ty::F32, Ty::F32, |x, y| bin(BinOp::Max, x, y)), &a, &b);
    assert!(mn[0].is_nan() && mn[1].is_nan() && mx[0].is_nan() && mx[1].is_nan());
    assert_eq!(mn[2].to_bits(), (-0.0f32).to_bits());
    assert_eq!(mx[2].to_bits(), 0.0f32.to_bits());
    assert_eq!((mn[3], mx[3], mn[4], mx[4]), (-3.0, 3.0, f32::NEG_INFINITY, 2.0));
    let ai = [i64::MIN, 5, -5];
    let bi = [0, -7, -5];
    let mn: Vec<i64> = run2(&map2(Ty::I64, Ty::I64, |x, y| bin(BinOp::Min, x, y)), &ai, &bi);
    let mx: Vec<i64> = run2(&map2(Ty::I64, Ty::I64, |x, y| bin(BinOp::Max, x, y)), &ai, &bi);
    assert_eq!((mn, mx), (vec![i64::MIN, -7, -5], vec![0, 5, -5]));
}

#[test]
fn arithmetic_and_comparisons() {
    let a = [7i32, -7, 7, -7, 1, i32::MIN];
    let b = [2i32, 2, 3, 1, 31, 1];
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
    // Float fmod, comparisons with NaN (ordered except Ne), IsNan, Not, Select.
    let x = [5.5f64, -5.5, f64::NAN, 1.0, 2.0];
    let y = [2.0f64, 2.0, 1.0, f64::NAN, 2.0];
    let o: Vec<f64> = run2(&map2(Ty::F64, Ty::F64, |p, q| bin(BinOp::Rem, p, q)), &x, &y);
    assert_eq!((o[0], o[1], o[4]), (1.5, -1.5, 0.0));
    assert!(o[2].is_nan() && o[3].is_nan());
    let preds: [(BinOp, FloatPred); 6] = [
        (BinOp::Lt, |p, q| p < q),
        (BinOp::Le, |p, q| p <= q),
        (BinOp::Gt, |p, q| p > q),
        (BinOp::Ge, |p, q| p >= q),
        (BinOp::Eq, |p, q| p == q),
        (BinOp::Ne, |p, q| p != q),
    ];
    for (op, want) in preds {
        let o: Vec<u8> = run2(&map2(Ty::F64, Ty::Bool, |p, q| bin(op, p, q)), &x, &y);
        assert_eq!(o, (0..x.len()).map(|q| want(x[q], y[q]) as u8).collect::<Vec<_>>(), "{op:?}");
    }
    let o: Vec<u8> = run2(&map2(Ty::F64, Ty::Bool, |p, _| un(UnOp::Not, un(UnOp::IsNan, p))), &x, &y);
    assert_eq!(o, [1, 1, 0, 1, 1]);
    let sel = |p: Expr, q: Expr| Expr::Select { c: Box::new(bin(BinOp::Gt, p.clone(), q.clone())), a: Box::new(p), b: Box::new(q) };
    let o: Vec<f64> = run2(&map2(Ty::F64, Ty::F64, sel), &x, &y);
    assert_eq!((o[0], o[1], o[4]), (5.5, 2.0, 2.0));
    assert!(o[3].is_nan() && o[2] == 1.0);
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
    check_unary(UnOp::Tanh, &xs, f64::tanh, f32::tanh, 2.0);
    check_unary(UnOp::Log1p, &pos, f64::ln_1p, f32::ln_1p, 2.0);
    check_unary(UnOp::Expm1, &xs, f64::exp_m1, f32::exp_m1, 2.0);
    check_unary(UnOp::Erf, &xs, libm::erf, libm::erff, 2.0);
    check_unary(UnOp::Exp, &xs, f64::exp, f32::exp, 2.0);
    check_unary(UnOp::Exp2, &xs, f64::exp2, f32::exp2, 2.0);
    check_unary(UnOp::Log, &pos, f64::ln, f32::ln, 2.0);
    check_unary(UnOp::Log2, &pos, f64::log2, f32::log2, 2.0);
    check_unary(UnOp::Sin, &xs, f64::sin, f32::sin, 2.0);
    check_unary(UnOp::Cos, &xs, f64::cos, f32::cos, 2.0);
    check_unary(UnOp::Sqrt, &pos, f64::sqrt, f32::sqrt, 0.0);
    check_unary(UnOp::Abs, &xs, f64::abs, f32::abs, 0.0);
    check_unary(UnOp::Floor, &xs, f64::floor, f32::floor, 0.0);
    check_unary(UnOp::Ceil, &xs, f64::ceil, f32::ceil, 0.0);
    check_unary(UnOp::RoundEven, &[0.5, 1.5, 2.5, -0.5, -2.5, 3.7, f64::NAN], f64::round_ties_even, f32::round_ties_even, 0.0);
    check_unary(UnOp::Neg, &xs, |x| -x, |x| -x, 0.0);
    let a = [2.0f64, -1.0, 0.5, 3.0, f64::NAN, 0.0];
    let b = [10.0f64, 3.0, -2.0, -0.5, 1.0, -1.0];
    let pow: Vec<f64> = run2(&map2(Ty::F64, Ty::F64, |x, y| bin(BinOp::Pow, x, y)), &a, &b);
    let at: Vec<f64> = run2(&map2(Ty::F64, Ty::F64, |x, y| bin(BinOp::Atan2, x, y)), &a, &b);
    for q in 0..a.len() {
        let (wp, wa) = (a[q].powf(b[q]), a[q].atan2(b[q]));
        assert!(pow[q] == wp || (pow[q].is_nan() && wp.is_nan()), "pow({}, {})", a[q], b[q]);
        assert!(at[q] == wa || (at[q].is_nan() && wa.is_nan()), "atan2({}, {})", a[q], b[q]);
    }
    let af = a.map(|x| x as f32);
    let bf = b.map(|x| x as f32);
    let at: Vec<f32> = run2(&map2(Ty::F32, Ty::F32, |x, y| bin(BinOp::Atan2, x, y)), &af, &bf);
    for q in 0..a.len() {
        let w = af[q].atan2(bf[q]);
        assert!(at[q] == w || (at[q].is_nan() && w.is_nan()));
    }
}

/// Copies a 16-bit float buffer through F32 values: `o[j] = (f32) x[j]` then back.
fn half_round_trip(t: Ty, opts: &TargetOptions) {
    let all: Vec<u16> = (0..=u16::MAX).collect();
    // Widen: every 16-bit pattern to f32.
    let mut k = K::new("widen");
    let (x, o) = (k.arg("x", t), k.arg("o", Ty::F32));
    let n = k.dim("n");
    let j = k.var("j", Ty::I64);
    let widen = k.body(vec![for_(j, i(0), v(n), vec![st(o, v(j), ld(x, v(j)))])]);
    let mut xs = all.clone();
    let mut out = vec![0f32; xs.len()];
    jit_with(&widen, opts, |e| assert_eq!(call(e, &[p(&mut xs), p(&mut out)], &[xs.len() as i64], &[]), 0));
    for (&h, &got) in all.iter().zip(&out) {
        let want = if t == Ty::F16 { ::half::f16::from_bits(h).to_f32() } else { ::half::bf16::from_bits(h).to_f32() };
        assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{t} {h:#06x}: {got} vs {want}");
    }
    // Narrow: tricky f32s (halfway cases, subnormals, overflow) and a spread of bit patterns.
    let mut k = K::new("narrow");
    let (x, o) = (k.arg("x", Ty::F32), k.arg("o", t));
    let n = k.dim("n");
    let j = k.var("j", Ty::I64);
    let narrow = k.body(vec![for_(j, i(0), v(n), vec![st(o, v(j), ld(x, v(j)))])]);
    let mut fs: Vec<f32> =
        vec![65504.0, 65519.99, 65520.0, 1e9, -1e9, 5.96e-8, 2.98e-8, 2.99e-8, 1e-10, 6.1e-5, f32::NAN, -f32::NAN, f32::INFINITY];
    fs.extend((0..200_000u32).map(|q| f32::from_bits(q.wrapping_mul(2_654_435_761))));
    fs.extend(all.iter().map(|&h| ::half::f16::from_bits(h).to_f32() + f32::from_bits(0x3380_0000) * ::half::f16::from_bits(h).to_f32()));
    let mut hs = vec![0u16; fs.len()];
    jit_with(&narrow, opts, |e| assert_eq!(call(e, &[p(&mut fs), p(&mut hs)], &[fs.len() as i64], &[]), 0));
    for (&f, &got) in fs.iter().zip(&hs) {
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
    let generic = TargetOptions { cpu: Some("x86-64".into()), ..Default::default() };
    half_round_trip(Ty::F16, &generic);
    half_round_trip(Ty::BF16, &generic);
    half_round_trip(Ty::F16, &TargetOptions::default());
    half_round_trip(Ty::BF16, &TargetOptions::default());
}
