//! Tests of the loop vectorizer: vectorized and `simd: false` code give identical bits on
//! loops with remainders (n = 0, 1, 3, 4, 5, 67, and 16, 23, 37 for the unrolled loop; non-zero
//! starts), reductions of every kind (NaN included), lane masks from affine comparisons (the
//! attention tile's masking), the inline `exp` polynomial (casts, shifts, bitcasts), lane-by-lane
//! libm calls and integer division, strided loads gathered lane by lane, temporaries read after
//! the loop; loops that must stay scalar are reported so and still compute the sequential
//! result.

use super::tests::*;
use super::*;
use crate::schedule::kir::*;

/// Runs `f` (one `f32` input `x`, one `f32` output `o` of `len` elements, dims `lo, hi`, one
/// `f32` result slot `r` of 4 elements) with and without SIMD and checks that the outputs and
/// the results in `exact` agree (bits, any NaN equal to any NaN); other results (reassociated
/// float sums) agree within `1e-6` relative.
fn same_bits_but(f: &Func, x: &[f32], len: usize, lo: i64, hi: i64, exact: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let mut results = Vec::new();
    for opts in SIMD_AND_SCALAR {
        let mut xs = x.to_vec();
        let mut o = vec![0f32; len];
        let mut r = vec![0f32; 4];
        jit_with(f, &opts, |e| assert_eq!(call(e, &[p(&mut xs), p(&mut o), p(&mut r)], &[lo, hi], &[]), 0));
        results.push((o, r));
    }
    let same = |a: &f32, b: &f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
    let ((o1, r1), (o2, r2)) = (&results[0], &results[1]);
    assert!(o1.iter().zip(o2).all(|(a, b)| same(a, b)), "outputs differ for lo={lo} hi={hi}: {o1:?} vs {o2:?}");
    for q in 0..4 {
        let ok =
            if exact.contains(&q) { same(&r1[q], &r2[q]) } else { same(&r1[q], &r2[q]) || (r1[q] - r2[q]).abs() <= 1e-6 * r2[q].abs() };
        assert!(ok, "result {q} differs for lo={lo} hi={hi}: {r1:?} vs {r2:?}");
    }
    results.swap_remove(0)
}

/// [`same_bits_but`] with every result exact.
fn same_bits(f: &Func, x: &[f32], len: usize, lo: i64, hi: i64) -> (Vec<f32>, Vec<f32>) {
    same_bits_but(f, x, len, lo, hi, &[0, 1, 2, 3])
}

fn vectorized(f: &Func) -> Vec<bool> {
    vector_report(f).iter().map(|l| l.scalar_because.is_none()).collect()
}

/// `o[j] = x[j] * 3 - 1; t = x[j]; sum +~ x[j]; mx = max(mx, x[j]); cnt +~ i32(x[j] > 0);
/// any = any || x[j] < 0` for `j in lo..hi`; then `r = [sum, mx, cnt, any]`, `o[0] = t`.
fn elementwise_and_reductions() -> Func {
    let mut k = K::new("red");
    let (x, o, r) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32), k.arg("r", Ty::F32));
    let (lo, hi) = (k.dim("lo"), k.dim("hi"));
    let j = k.var("j", Ty::I64);
    let t = k.var("t", Ty::F32);
    let (sum, mx, cnt, any) = (k.var("sum", Ty::F32), k.var("mx", Ty::F32), k.var("cnt", Ty::I32), k.var("any", Ty::Bool));
    let xj = || ld(x, v(j));
    k.body(vec![
        set(sum, f32c(0.5)),
        set(mx, f32c(f32::NEG_INFINITY)),
        set(cnt, Expr::Const(Const::I32(0))),
        set(any, Expr::Const(Const::Bool(false))),
        set(t, f32c(-7.0)),
        for_(
            j,
            v(lo),
            v(hi),
            vec![
                set(t, xj()),
                st(o, v(j), bin(BinOp::Sub, bin(BinOp::Mul, v(t), f32c(3.0)), f32c(1.0))),
                set(sum, re(BinOp::Add, v(sum), v(t))),
                set(mx, bin(BinOp::Max, xj(), v(mx))),
                set(cnt, bin(BinOp::Add, v(cnt), cast(Ty::I32, bin(BinOp::Gt, xj(), f32c(0.0))))),
                set(any, bin(BinOp::Or, v(any), bin(BinOp::Lt, xj(), f32c(0.0)))),
            ],
        ),
        st(r, i(0), v(sum)),
        st(r, i(1), v(mx)),
        st(r, i(2), cast(Ty::F32, v(cnt))),
        st(r, i(3), cast(Ty::F32, v(any))),
        st(o, i(0), v(t)),
    ])
}

#[test]
fn remainders_and_reductions_match_scalar_code() {
    let f = elementwise_and_reductions();
    assert_eq!(vectorized(&f), [true]);
    // Small integers: every sum is exact in any order, so the bits must agree.
    let x: Vec<f32> = (0..80).map(|q| ((q * 37) % 23) as f32 - 11.0).collect();
    for n in [0i64, 1, 3, 4, 5, 16, 23, 37, 67] {
        for lo in [0i64, 2, 5] {
            let hi = lo + n;
            let (o, r) = same_bits(&f, &x, 80, lo, hi);
            let range = lo as usize..hi as usize;
            let want_sum = 0.5 + x[range.clone()].iter().sum::<f32>();
            let want_mx = x[range.clone()].iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let want_cnt = x[range.clone()].iter().filter(|&&v| v > 0.0).count() as f32;
            let want_any = x[range.clone()].iter().any(|&v| v < 0.0) as u8 as f32;
            assert_eq!(r, [want_sum, want_mx, want_cnt, want_any], "lo={lo} n={n}");
            let last = if n == 0 { -7.0 } else { x[hi as usize - 1] };
            assert_eq!(o[0], last, "the temporary after the loop, lo={lo} n={n}");
            for q in range.filter(|&q| q > 0) {
                assert_eq!(o[q], x[q] * 3.0 - 1.0);
            }
        }
    }
}

#[test]
fn reductions_with_nan() {
    let f = elementwise_and_reductions();
    for at in [0usize, 2, 5, 9, 10] {
        let mut x: Vec<f32> = (0..11).map(|q| q as f32).collect();
        x[at] = f32::NAN;
        let (_, r) = same_bits(&f, &x, 11, 0, 11);
        assert!(r[0].is_nan() && r[1].is_nan(), "NaN at {at}: {r:?}");
    }
    // Min reduction with a NaN in the scalar tail only.
    let mut k = K::new("min");
    let (x, _o, r) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32), k.arg("r", Ty::F32));
    let (lo, hi) = (k.dim("lo"), k.dim("hi"));
    let (j, mn) = (k.var("j", Ty::I64), k.var("mn", Ty::F32));
    let f = k.body(vec![
        set(mn, f32c(f32::INFINITY)),
        for_(j, v(lo), v(hi), vec![set(mn, bin(BinOp::Min, v(mn), ld(x, v(j))))]),
        st(r, i(0), v(mn)),
    ]);
    assert_eq!(vectorized(&f), [true]);
    let mut x: Vec<f32> = (0..9).map(|q| 10.0 - q as f32).collect();
    let (_, r) = same_bits(&f, &x, 1, 0, 9);
    assert_eq!(r[0], 2.0);
    x[8] = f32::NAN;
    let (_, r) = same_bits(&f, &x, 1, 0, 9);
    assert!(r[0].is_nan());
}

#[test]
fn dependent_store_and_load_at_different_offsets_stays_scalar() {
    // o[j + 1] = o[j] + x[j]: each iteration reads what the previous one wrote.
    let mut k = K::new("scan");
    let (x, o, _r) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32), k.arg("r", Ty::F32));
    let (lo, hi) = (k.dim("lo"), k.dim("hi"));
    let j = k.var("j", Ty::I64);
    let f = k.body(vec![for_(j, v(lo), v(hi), vec![st(o, bin(BinOp::Add, v(j), i(1)), bin(BinOp::Add, ld(o, v(j)), ld(x, v(j))))])]);
    let report = vector_report(&f);
    assert_eq!(report.len(), 1);
    let why = report[0].scalar_because.as_deref().unwrap_or("vectorized");
    assert!(why.contains("loaded at another index"), "{why}");
    let x: Vec<f32> = (0..20).map(|q| q as f32).collect();
    let (o, _) = same_bits(&f, &x, 21, 0, 20);
    for q in 0..20 {
        assert_eq!(o[q + 1], (0..=q).map(|k| k as f32).sum::<f32>());
    }
    // A store at a uniform index, a store at a strided index, a nested if: all stay scalar.
    let mut k = K::new("scalar");
    let (x, o) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32));
    let n = k.dim("n");
    let j = k.var("j", Ty::I64);
    let f = k.body(vec![
        for_(j, i(0), v(n), vec![st(o, i(0), ld(x, v(j)))]),
        for_(j, i(0), v(n), vec![st(o, bin(BinOp::Mul, v(j), i(2)), ld(x, v(j)))]),
        for_(j, i(0), v(n), vec![if_(bin(BinOp::Gt, v(j), i(3)), vec![st(o, v(j), f32c(1.0))], vec![])]),
    ]);
    assert_eq!(vectorized(&f), [false, false]);
}

/// The attention tile's masking loop: `m = m0 + j; valid = m >= lo && m < hi; logit =
/// select(valid, s[base + j], -inf); any = any || valid; s[base + j] = logit; bmax = max(bmax,
/// logit)`, then its exp loop with the inline polynomial and a `reassoc` sum.
fn mask_and_exp() -> Func {
    let mut k = K::new("mask");
    let (s, o, r) = (k.arg("s", Ty::F32), k.arg("o", Ty::F32), k.arg("r", Ty::F32));
    let (lo, hi) = (k.dim("lo"), k.dim("hi"));
    let [j, m, base, m0] = ["j", "m", "base", "m0"].map(|n| k.var(n, Ty::I64));
    let (valid, any) = (k.var("valid", Ty::Bool), k.var("any", Ty::Bool));
    let [logit, bmax, l, x, xc, nn, rr, w] = ["logit", "bmax", "l", "x", "xc", "n", "r", "w"].map(|n| k.var(n, Ty::F32));
    let at = || bin(BinOp::Add, v(base), v(j));
    let poly = {
        let mut p = f32c(0.001_388_888_9);
        for c in [0.008_333_334, 0.041_666_668, 0.166_666_67, 0.5, 1.0, 1.0] {
            p = bin(BinOp::Add, bin(BinOp::Mul, p, v(rr)), f32c(c));
        }
        let pow2 = Expr::Bitcast {
            to: Ty::F32,
            x: Box::new(bin(BinOp::Shl, bin(BinOp::Add, cast(Ty::I32, v(nn)), Expr::Const(Const::I32(126))), Expr::Const(Const::I32(23)))),
        };
        bin(BinOp::Mul, bin(BinOp::Mul, p, pow2), f32c(2.0))
    };
    k.body(vec![
        set(base, i(3)),
        set(m0, i(10)),
        set(any, Expr::Const(Const::Bool(false))),
        set(bmax, f32c(f32::NEG_INFINITY)),
        for_(
            j,
            i(0),
            i(64),
            vec![
                set(m, bin(BinOp::Add, v(m0), v(j))),
                set(logit, f32c(f32::NEG_INFINITY)),
                set(valid, bin(BinOp::And, bin(BinOp::Ge, v(m), v(lo)), bin(BinOp::Lt, v(m), v(hi)))),
                set(logit, sel(v(valid), ld(s, at()), f32c(f32::NEG_INFINITY))),
                set(any, bin(BinOp::Or, v(any), v(valid))),
                st(s, at(), v(logit)),
                set(bmax, bin(BinOp::Max, v(bmax), v(logit))),
            ],
        ),
        set(l, f32c(0.0)),
        for_(
            j,
            i(0),
            i(61),
            vec![
                set(x, bin(BinOp::Sub, ld(s, at()), v(bmax))),
                set(xc, bin(BinOp::Max, bin(BinOp::Min, v(x), f32c(88.72)), f32c(-86.0))),
                set(nn, un(UnOp::RoundEven, bin(BinOp::Mul, v(xc), f32c(std::f32::consts::LOG2_E)))),
                set(
                    rr,
                    bin(
                        BinOp::Sub,
                        bin(BinOp::Sub, v(xc), bin(BinOp::Mul, v(nn), f32c(0.693_145_75))),
                        bin(BinOp::Mul, v(nn), f32c(1.428_606_8e-6)),
                    ),
                ),
                set(
                    w,
                    sel(
                        bin(BinOp::Gt, v(x), f32c(88.722_84)),
                        f32c(f32::INFINITY),
                        sel(bin(BinOp::Lt, v(x), f32c(-87.34)), f32c(0.0), poly),
                    ),
                ),
                st(o, v(j), v(w)),
                set(l, re(BinOp::Add, v(l), v(w))),
            ],
        ),
        st(r, i(0), v(bmax)),
        st(r, i(1), v(l)),
        st(r, i(2), cast(Ty::F32, v(any))),
    ])
}

#[test]
fn attention_masking_and_exp_loops_vectorize_and_match() {
    let f = mask_and_exp();
    assert_eq!(vectorized(&f), [true, true], "{:?}", vector_report(&f));
    let s: Vec<f32> = (0..70).map(|q| ((q * 13) % 17) as f32 * 0.37 - 3.0).collect();
    for (lo, hi) in [(0, 0), (10, 74), (11, 12), (37, 41), (0, i64::MAX), (50, 20), (73, 100)] {
        let (o, r) = same_bits_but(&f, &s, 64, lo, hi, &[0, 2, 3]);
        let valid = |j: i64| (10 + j >= lo) && (10 + j < hi);
        let any = (0..64).any(valid);
        assert_eq!(r[2], f32::from(u8::from(any)), "lo={lo} hi={hi}");
        let bmax = (0..64).filter(|&j| valid(j)).map(|j| s[3 + j as usize]).fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(r[0], bmax);
        if any {
            for (j, got) in o.iter().take(61).enumerate() {
                let logit = if valid(j as i64) { s[3 + j] } else { f32::NEG_INFINITY };
                let want = (logit - bmax).exp();
                assert!((got - want).abs() <= 2e-6 * want.max(1e-30), "j={j}: {got} vs {want}");
            }
        }
    }
}

#[test]
fn libm_calls_and_integer_division_run_lane_by_lane() {
    let mut k = K::new("lanes");
    let (x, o, r) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32), k.arg("r", Ty::F32));
    let (lo, hi) = (k.dim("lo"), k.dim("hi"));
    let j = k.var("j", Ty::I64);
    let q = k.var("q", Ty::I32);
    let acc = k.var("acc", Ty::I32);
    let xi = || cast(Ty::I32, ld(x, v(j)));
    let f = k.body(vec![
        set(acc, Expr::Const(Const::I32(1))),
        for_(
            j,
            v(lo),
            v(hi),
            vec![
                set(q, bin(BinOp::Div, xi(), bin(BinOp::Sub, xi(), Expr::Const(Const::I32(3))))),
                st(o, v(j), bin(BinOp::Add, un(UnOp::Exp, un(UnOp::Tanh, ld(x, v(j)))), bin(BinOp::Pow, cast(Ty::F32, v(q)), f32c(0.5)))),
                set(acc, bin(BinOp::Mul, v(acc), bin(BinOp::Rem, xi(), Expr::Const(Const::I32(5))))),
            ],
        ),
        st(r, i(0), cast(Ty::F32, v(acc))),
        st(r, i(1), cast(Ty::F32, v(q))),
    ]);
    assert_eq!(vectorized(&f), [true]);
    let x: Vec<f32> = (0..40).map(|q| q as f32 * 0.75 - 6.0).collect();
    for (lo, hi) in [(0, 40), (1, 38), (3, 4), (0, 0)] {
        let (o, r) = same_bits(&f, &x, 40, lo, hi);
        for jj in lo as usize..hi as usize {
            let xi = x[jj] as i32;
            let d = xi - 3;
            let qq = if d == 0 {
                xi
            } else if d == -1 {
                xi.wrapping_neg()
            } else {
                xi / d
            };
            let want = x[jj].tanh().exp() + (qq as f32).powf(0.5);
            assert!(o[jj].to_bits() == want.to_bits() || (o[jj].is_nan() && want.is_nan()), "{jj}");
        }
        let prod: i32 = (lo as usize..hi as usize).map(|jj| (x[jj] as i32) % 5).product();
        assert_eq!(r[0], prod as f32);
    }
}

#[test]
fn strided_loads_are_gathered() {
    // The generic plan's reduction shape: acc +~ x[base + j * s] * x[j * t + 1], and an
    // elementwise store of a gathered load, for strides given at run time.
    let mut k = K::new("gather");
    let (x, o, r) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32), k.arg("r", Ty::F32));
    let (lo, hi) = (k.dim("lo"), k.dim("hi"));
    let (j, at) = (k.var("j", Ty::I64), k.var("at", Ty::I64));
    let (s, t) = (k.var("s", Ty::I64), k.var("t", Ty::I64));
    let acc = k.var("acc", Ty::F32);
    let f = k.body(vec![
        set(s, bin(BinOp::Sub, v(hi), v(lo))),
        set(t, i(3)),
        set(acc, f32c(0.0)),
        for_(
            j,
            v(lo),
            v(hi),
            vec![
                set(at, bin(BinOp::Add, i(2), bin(BinOp::Mul, v(j), v(s)))),
                set(acc, re(BinOp::Add, v(acc), bin(BinOp::Mul, ld(x, v(at)), ld(x, bin(BinOp::Add, bin(BinOp::Mul, v(t), v(j)), i(1)))))),
                st(o, v(j), ld(x, bin(BinOp::Mul, v(j), v(t)))),
            ],
        ),
        st(r, i(0), v(acc)),
        st(r, i(1), cast(Ty::F32, v(at))),
    ]);
    assert_eq!(vectorized(&f), [true], "{:?}", vector_report(&f));
    let x: Vec<f32> = (0..4000).map(|q| ((q * 7) % 13) as f32 - 6.0).collect();
    for (lo, hi) in [(0, 0), (0, 5), (2, 23), (1, 38)] {
        let (o, r) = same_bits(&f, &x, 40, lo, hi);
        let s = (hi - lo) as usize;
        let want: f32 = (lo as usize..hi as usize).map(|q| x[2 + q * s] * x[3 * q + 1]).sum();
        assert_eq!(r[0], want, "lo={lo} hi={hi}");
        for q in lo as usize..hi as usize {
            assert_eq!(o[q], x[3 * q]);
        }
        if hi > lo {
            assert_eq!(r[1], (2 + (hi as usize - 1) * s) as f32, "the strided temporary after the loop");
        }
    }
}

#[test]
fn lane_comparisons_of_every_kind() {
    // For each comparison: affine vs uniform (i64x2 halves packed into a mask), bool lanes
    // (unsigned: false < true), i32 lanes (signed), each stored as 0/1 floats.
    let ops = [BinOp::Lt, BinOp::Le, BinOp::Gt, BinOp::Ge, BinOp::Eq, BinOp::Ne];
    let x: Vec<f32> = (0..64).map(|q| ((q * 5) % 9) as f32 - 4.0).collect();
    for op in ops {
        let mut k = K::new("cmp");
        let (x_, o, _r) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32), k.arg("r", Ty::F32));
        let (lo, hi) = (k.dim("lo"), k.dim("hi"));
        let j = k.var("j", Ty::I64);
        let xa = || ld(x_, v(j));
        let xb = || ld(x_, bin(BinOp::Add, v(j), i(1)));
        let flag = |c: Expr| cast(Ty::F32, c);
        let sum = bin(
            BinOp::Add,
            bin(BinOp::Mul, flag(bin(op, v(j), bin(BinOp::Add, v(lo), i(7)))), f32c(1.0)),
            bin(
                BinOp::Add,
                bin(BinOp::Mul, flag(bin(op, bin(BinOp::Gt, xa(), f32c(0.0)), bin(BinOp::Gt, xb(), f32c(0.0)))), f32c(2.0)),
                bin(BinOp::Mul, flag(bin(op, cast(Ty::I32, xa()), cast(Ty::I32, xb()))), f32c(4.0)),
            ),
        );
        let f = k.body(vec![for_(j, v(lo), v(hi), vec![st(o, v(j), sum)])]);
        assert_eq!(vectorized(&f), [true], "{op:?}");
        for (lo, hi) in [(0, 37), (3, 21)] {
            let (o, _) = same_bits(&f, &x, 64, lo, hi);
            for q in lo..hi {
                let jq = q as usize;
                let c = |a: bool| f32::from(u8::from(a));
                let cmp_i = |a: i64, b: i64| match op {
                    BinOp::Lt => a < b,
                    BinOp::Le => a <= b,
                    BinOp::Gt => a > b,
                    BinOp::Ge => a >= b,
                    BinOp::Eq => a == b,
                    _ => a != b,
                };
                let (pa, pb) = (x[jq] > 0.0, x[jq + 1] > 0.0);
                let want =
                    c(cmp_i(q, lo + 7)) + 2.0 * c(cmp_i(i64::from(pa), i64::from(pb))) + 4.0 * c(cmp_i(x[jq] as i64, x[jq + 1] as i64));
                assert_eq!(o[jq], want, "{op:?} at {q} (lo={lo})");
            }
        }
    }
}

#[test]
fn constant_trip_counts_match_scalar_code() {
    // Straight-line vector code for trip counts up to 64, loops beyond; every remainder.
    let x: Vec<f32> = (0..100).map(|q| ((q * 11) % 7) as f32 - 3.0).collect();
    for n in [0i64, 1, 3, 4, 5, 16, 23, 37, 61, 64, 67, 80] {
        let mut k = K::new("const");
        let (x_, o, r) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32), k.arg("r", Ty::F32));
        let (_lo, _hi) = (k.dim("lo"), k.dim("hi"));
        let (j, t, sum) = (k.var("j", Ty::I64), k.var("t", Ty::F32), k.var("sum", Ty::F32));
        let f = k.body(vec![
            set(sum, f32c(0.0)),
            set(t, f32c(-1.0)),
            for_(
                j,
                i(2),
                i(2 + n),
                vec![
                    set(t, bin(BinOp::Mul, ld(x_, v(j)), f32c(2.0))),
                    st(o, bin(BinOp::Sub, v(j), i(2)), v(t)),
                    set(sum, re(BinOp::Add, v(sum), v(t))),
                ],
            ),
            st(r, i(0), v(sum)),
            st(r, i(1), v(t)),
        ]);
        assert_eq!(vectorized(&f), [true]);
        let (o, r) = same_bits(&f, &x, 100, 0, 0);
        let range = 2..2 + n as usize;
        assert_eq!(r[0], x[range.clone()].iter().map(|v| v * 2.0).sum::<f32>(), "n={n}");
        assert_eq!(r[1], if n == 0 { -1.0 } else { x[1 + n as usize] * 2.0 }, "n={n}");
        for q in range {
            assert_eq!(o[q - 2], x[q] * 2.0);
        }
    }
}

#[test]
fn reductions_without_a_vector_form_stay_scalar_and_say_why() {
    let mut k = K::new("sums");
    let (x, o) = (k.arg("x", Ty::F32), k.arg("o", Ty::F64));
    let n = k.dim("n");
    let j = k.var("j", Ty::I64);
    let (d, s) = (k.var("d", Ty::F64), k.var("s", Ty::F32));
    let f = k.body(vec![
        set(d, Expr::Const(Const::F64(0.0))),
        set(s, f32c(0.0)),
        for_(j, i(0), v(n), vec![set(d, re(BinOp::Add, v(d), cast(Ty::F64, ld(x, v(j)))))]),
        for_(j, i(0), v(n), vec![set(s, bin(BinOp::Add, v(s), ld(x, v(j))))]),
        st(o, i(0), v(d)),
        st(o, i(1), cast(Ty::F64, v(s))),
    ]);
    let why: Vec<String> = vector_report(&f).into_iter().map(|l| l.scalar_because.unwrap_or_default()).collect();
    assert!(why[0].contains("reduction of f64 into 'd'"), "{why:?}");
    assert!(why[1].contains("without reassoc"), "{why:?}");
    let mut xs: Vec<f32> = (0..10).map(|q| q as f32 * 0.1).collect();
    let mut out = [0f64; 2];
    jit(&f, |e| assert_eq!(call(e, &[p(&mut xs), p(&mut out)], &[10], &[]), 0));
    assert_eq!(out[0], xs.iter().map(|&q| f64::from(q)).sum::<f64>());
    assert_eq!(out[1], f64::from(xs.iter().fold(0f32, |a, &q| a + q)), "sequential order");
}
