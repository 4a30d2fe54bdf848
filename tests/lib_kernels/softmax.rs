//! Softmax-attention variants: sdpa, causal, window, gqa/mqa, alibi, softcap, l2.

use tfmc_conformance::reference::{self as r, Nd};
use tfmc_conformance::{Inputs, Tol, assert_nd_close, load_lib, map_f32, param_f32, param_i64, rand_nd, rounded, run_out};
use tfmc_runtime::DType;

use crate::{SHAPES, TOL, qkv, rng};

fn inputs(q: &Nd, k: &Nd, v: &Nd) -> Inputs {
    Inputs::new().f32("Q", q).f32("K", k).f32("V", v)
}

/// Runs a (Q, K, V) -> O kernel on every shape of SHAPES and compares with `reference`.
fn check_qkv(file: &str, kernel: &str, seed: u64, reference: impl Fn(&Nd, &Nd, &Nd) -> Nd) {
    let program = load_lib(file);
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let (q, k, v) = qkv(&mut rng(seed + i as u64), shape);
        let got = run_out(&program, kernel, &inputs(&q, &k, &v), &[], "O");
        assert_nd_close(&format!("{kernel} {shape:?}"), &got, &reference(&q, &k, &v), TOL);
    }
}

#[test]
fn sdpa_matches_reference() {
    check_qkv("sdpa.tfm", "sdpa", 100, r::sdpa);
}

#[test]
fn sdpa_with_huge_logits_stays_finite() {
    // Q scaled by 2e4: logits around ±1e4, where exp without the max subtraction overflows.
    let program = load_lib("sdpa.tfm");
    let shape = [1, 2, 7, 13, 4, 3];
    let (q, k, v) = qkv(&mut rng(110), shape);
    let q = map_f32(&q, |x| x * 2e4);
    let want = r::sdpa(&q, &k, &v);
    let got = run_out(&program, "sdpa", &inputs(&q, &k, &v), &[], "O");
    assert!(got.data.iter().all(|x| x.is_finite()), "non-finite output: {:?}", got.data);
    assert_nd_close("sdpa huge logits", &got, &want, TOL);
}

/// The half-precision kernels of `half.tfm` compute the f32 kernel's function of their
/// rounded inputs (the interpreter's unrounded output against the reference on the rounded
/// values).
#[test]
fn half_kernels_match_reference_on_their_rounded_inputs() {
    let program = load_lib("half.tfm");
    type Reference = fn(&Nd, &Nd, &Nd) -> Nd;
    let cases: [(&str, DType, Reference); 3] =
        [("sdpa_bf16", DType::BF16, r::sdpa), ("causal_bf16", DType::BF16, r::causal), ("sdpa_f16", DType::F16, r::sdpa)];
    for (kernel, dtype, reference) in cases {
        for (i, shape) in SHAPES.into_iter().enumerate() {
            let (q, k, v) = qkv(&mut rng(150 + i as u64), shape);
            let (q, k, v) = (rounded(&q, dtype), rounded(&k, dtype), rounded(&v, dtype));
            let ins = Inputs::new().float("Q", dtype, &q).float("K", dtype, &k).float("V", dtype, &v);
            let got = run_out(&program, kernel, &ins, &[], "O");
            assert_nd_close(&format!("{kernel} {shape:?}"), &got, &reference(&q, &k, &v), TOL);
        }
    }
}

#[test]
fn causal_matches_reference() {
    check_qkv("causal.tfm", "causal", 200, r::causal);
}

#[test]
fn causal_rows_see_only_the_past() {
    let program = load_lib("causal.tfm");
    let shape = [1, 2, 7, 7, 3, 4];
    let (q, k, v) = qkv(&mut rng(210), shape);
    let base = run_out(&program, "causal", &inputs(&q, &k, &v), &[], "O");
    // Row 0 attends to key 0 alone: O[.., 0, :] = V[.., 0, :].
    for h in 0..2 {
        for f in 0..4 {
            assert_eq!(base.at(&[0, h, 0, f]), v.at(&[0, h, 0, f]), "row 0 must copy V[0]");
        }
    }
    // Changing keys/values at m > 3 leaves rows p <= 3 unchanged, bit for bit.
    let perturb = |x: &Nd| map_f32(x, |a| a * 3.0 + 0.5);
    let (mut k2, mut v2) = (perturb(&k), perturb(&v));
    for h in 0..2 {
        for m in 0..=3 {
            for e in 0..3 {
                k2.set(&[0, h, m, e], k.at(&[0, h, m, e]));
            }
            for f in 0..4 {
                v2.set(&[0, h, m, f], v.at(&[0, h, m, f]));
            }
        }
    }
    let changed = run_out(&program, "causal", &inputs(&q, &k2, &v2), &[], "O");
    for h in 0..2 {
        for p in 0..7 {
            let same = (0..4).all(|f| changed.at(&[0, h, p, f]) == base.at(&[0, h, p, f]));
            assert_eq!(same, p <= 3, "row {p} of head {h}: future keys must not matter");
        }
    }
}

#[test]
fn window_matches_reference() {
    let program = load_lib("window.tfm");
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let (q, k, v) = qkv(&mut rng(300 + i as u64), shape);
        for w in [1, 2, 5] {
            let got = run_out(&program, "window", &inputs(&q, &k, &v), &[("W", param_i64(w))], "O");
            assert_nd_close(&format!("window W={w} {shape:?}"), &got, &r::window(&q, &k, &v, w), TOL);
        }
        // The default W = 256 exceeds every length here: plain causal attention.
        let got = run_out(&program, "window", &inputs(&q, &k, &v), &[], "O");
        assert_nd_close(&format!("window default W {shape:?}"), &got, &r::causal(&q, &k, &v), TOL);
    }
}

#[test]
fn window_of_one_copies_the_diagonal() {
    // W = 1: query p sees key p alone, so O[p] = V[p].
    let program = load_lib("window.tfm");
    let (q, k, v) = qkv(&mut rng(310), [2, 2, 7, 7, 3, 5]);
    let got = run_out(&program, "window", &inputs(&q, &k, &v), &[("W", param_i64(1))], "O");
    assert_nd_close("window W=1", &got, &v, Tol::EXACT);
}

#[test]
fn fully_masked_rows_give_zero() {
    // W = 0 masks every (p, m): the language defines softmax over an empty row as 0
    // (max = -inf, sum = 0, 0 / 0 = 0), never NaN.
    let program = load_lib("window.tfm");
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let (q, k, v) = qkv(&mut rng(320 + i as u64), shape);
        let got = run_out(&program, "window", &inputs(&q, &k, &v), &[("W", param_i64(0))], "O");
        assert_eq!(got.shape, vec![shape[0], shape[1], shape[2], shape[5]]);
        assert!(got.data.iter().all(|&x| x == 0.0), "W=0 {shape:?}: expected all zeros, got {:?}", got.data);
    }
}

#[test]
fn gqa_matches_reference() {
    let program = load_lib("gqa.tfm");
    let (sdpa, mut seed) = (load_lib("sdpa.tfm"), 400);
    for (h, g) in [(1, 1), (4, 2), (6, 3), (7, 7), (7, 1), (8, 2)] {
        for [b, _, p, m, e, f] in SHAPES {
            seed += 1;
            let mut rng = rng(seed);
            let q = rand_nd(&mut rng, &[b, h, p, e], -1.0, 1.0);
            let k = rand_nd(&mut rng, &[b, g, m, e], -1.0, 1.0);
            let v = rand_nd(&mut rng, &[b, g, m, f], -1.0, 1.0);
            let name = format!("gqa H={h} G={g} {:?}", [b, p, m, e, f]);
            let got = run_out(&program, "gqa", &inputs(&q, &k, &v), &[], "O");
            assert_nd_close(&name, &got, &r::gqa(&q, &k, &v), TOL);
            if g == h {
                // One kv head per query head: exactly sdpa.
                let plain = run_out(&sdpa, "sdpa", &inputs(&q, &k, &v), &[], "O");
                assert_nd_close(&format!("{name} vs sdpa"), &got, &plain, TOL);
            }
        }
    }
}

#[test]
fn mqa_matches_reference_and_gqa_with_one_group() {
    let program = load_lib("gqa.tfm");
    for (i, [b, h, p, m, e, f]) in SHAPES.into_iter().enumerate() {
        let mut rng = rng(500 + i as u64);
        let q = rand_nd(&mut rng, &[b, h, p, e], -1.0, 1.0);
        let k = rand_nd(&mut rng, &[b, m, e], -1.0, 1.0);
        let v = rand_nd(&mut rng, &[b, m, f], -1.0, 1.0);
        let got = run_out(&program, "mqa", &inputs(&q, &k, &v), &[], "O");
        assert_nd_close(&format!("mqa {:?}", [b, h, p, m, e, f]), &got, &r::mqa(&q, &k, &v), TOL);
        // MQA is GQA with G = 1 (same data, K/V given a unit head axis).
        let (k1, v1) = (Nd::new(&[b, 1, m, e], k.data.clone()), Nd::new(&[b, 1, m, f], v.data.clone()));
        let grouped = run_out(&program, "gqa", &inputs(&q, &k1, &v1), &[], "O");
        assert_nd_close("mqa vs gqa G=1", &got, &grouped, TOL);
    }
}

#[test]
fn alibi_matches_reference() {
    check_qkv("alibi.tfm", "alibi", 600, r::alibi);
    // More heads (non-power-of-two and eight), longer rows so the bias matters.
    let program = load_lib("alibi.tfm");
    for (i, h) in [3usize, 8].into_iter().enumerate() {
        let shape = [1, h, 13, 13, 4, 3];
        let (q, k, v) = qkv(&mut rng(610 + i as u64), shape);
        let got = run_out(&program, "alibi", &inputs(&q, &k, &v), &[], "O");
        assert_nd_close(&format!("alibi {shape:?}"), &got, &r::alibi(&q, &k, &v), TOL);
    }
}

#[test]
fn softcap_matches_reference() {
    check_qkv("softcap.tfm", "softcap", 700, |q, k, v| r::softcap(q, k, v, 30.0));
    // Logits of a few tens, so that caps of 30 and 0.5 really bend them.
    let program = load_lib("softcap.tfm");
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let (q, k, v) = qkv(&mut rng(710 + i as u64), shape);
        let q = map_f32(&q, |x| x * 40.0);
        let got = run_out(&program, "softcap", &inputs(&q, &k, &v), &[], "O");
        assert_nd_close(&format!("softcap 30 {shape:?}"), &got, &r::softcap(&q, &k, &v, 30.0), TOL);
        let cap = 0.5f32;
        let got = run_out(&program, "softcap", &inputs(&q, &k, &v), &[("cap", param_f32(cap))], "O");
        let want = r::softcap(&q, &k, &v, f64::from(cap));
        assert_nd_close(&format!("softcap 0.5 {shape:?}"), &got, &want, TOL);
    }
}

#[test]
fn l2_attention_matches_reference() {
    check_qkv("l2.tfm", "l2_attention", 800, r::l2_attention);
}
