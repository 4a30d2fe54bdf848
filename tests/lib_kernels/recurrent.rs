//! Linear attention, RetNet retention and Mamba's selective scan; parallel ≡ recurrent forms.

use tfmc_conformance::reference::{self as r, Nd};
use tfmc_conformance::{Inputs, assert_nd_close, load_lib, map_f32, rand_nd, run_out};

use crate::{SEQ_SHAPES, SHAPES, TOL, qkv, rng};

fn inputs(q: &Nd, k: &Nd, v: &Nd) -> Inputs {
    Inputs::new().f32("Q", q).f32("K", k).f32("V", v)
}

/// Q, K, V for self-attention of length T: shape [B, H, T, T, E, F].
fn self_shape([b, h, t, e, f]: [usize; 5]) -> [usize; 6] {
    [b, h, t, t, e, f]
}

#[test]
fn linear_matches_reference() {
    let program = load_lib("linear.tfm");
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let (q, k, v) = qkv(&mut rng(1000 + i as u64), shape);
        let got = run_out(&program, "linear", &inputs(&q, &k, &v), &[], "O");
        assert_nd_close(&format!("linear {shape:?}"), &got, &r::linear(&q, &k, &v), TOL);
        let got = run_out(&program, "linear_causal", &inputs(&q, &k, &v), &[], "O");
        assert_nd_close(&format!("linear_causal {shape:?}"), &got, &r::linear_causal(&q, &k, &v), TOL);
    }
}

/// The fused recurrent plan reads its output rows as vector–matrix products when a row has at
/// most 256 columns and the state at most 256 rows; wider heads take the per-column loops, and
/// a head without columns reads nothing.
#[test]
fn linear_causal_with_heads_past_the_row_products() {
    let program = load_lib("linear.tfm");
    for (i, shape) in [[1, 1, 5, 5, 3, 300], [1, 2, 7, 7, 260, 4], [1, 1, 9, 9, 257, 257], [1, 2, 4, 4, 3, 0]].into_iter().enumerate() {
        let (q, k, v) = qkv(&mut rng(1050 + i as u64), shape);
        let got = run_out(&program, "linear_causal", &inputs(&q, &k, &v), &[], "O");
        assert_nd_close(&format!("linear_causal {shape:?}"), &got, &r::linear_causal(&q, &k, &v), TOL);
    }
}

#[test]
fn linear_causal_scan_equals_quadratic_form() {
    let program = load_lib("linear.tfm");
    for (i, shape) in SEQ_SHAPES.into_iter().enumerate() {
        // Inputs in [-3, 3) so that both branches of elu are exercised.
        let (q, k, v) = qkv(&mut rng(1100 + i as u64), self_shape(shape));
        let (q, k) = (map_f32(&q, |a| a * 3.0), map_f32(&k, |a| a * 3.0));
        let scan = run_out(&program, "linear_causal_scan", &inputs(&q, &k, &v), &[], "O");
        let quad = run_out(&program, "linear_causal", &inputs(&q, &k, &v), &[], "O");
        assert_nd_close(&format!("linear_causal_scan {shape:?}"), &scan, &r::linear_causal(&q, &k, &v), TOL);
        assert_nd_close(&format!("linear_causal_scan vs linear_causal {shape:?}"), &scan, &quad, TOL);
    }
}

/// Per-head decays in [0.5, 1): the RetNet choice is 1 - 2^(-5 - h); any (0, 1) value works.
fn gammas(seed: u64, h: usize) -> Nd {
    rand_nd(&mut rng(seed), &[h], 0.5, 1.0)
}

#[test]
fn retention_parallel_and_recurrent_match_reference_and_each_other() {
    let program = load_lib("retnet.tfm");
    for (i, shape) in SEQ_SHAPES.into_iter().enumerate() {
        let (q, k, v) = qkv(&mut rng(1200 + i as u64), self_shape(shape));
        let gamma = gammas(1250 + i as u64, shape[1]);
        let want = r::retention(&q, &k, &v, &gamma.data);
        let inputs = inputs(&q, &k, &v).f32("Gamma", &gamma);
        let par = run_out(&program, "retention_parallel", &inputs, &[], "O");
        let rec = run_out(&program, "retention_recurrent", &inputs, &[], "O");
        assert_nd_close(&format!("retention_parallel {shape:?}"), &par, &want, TOL);
        assert_nd_close(&format!("retention_recurrent {shape:?}"), &rec, &want, TOL);
        assert_nd_close(&format!("retention parallel vs recurrent {shape:?}"), &par, &rec, TOL);
    }
}

#[test]
fn retention_parallel_cross_lengths() {
    // P != M: the decay depends on p - m only, masked where m > p.
    let program = load_lib("retnet.tfm");
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let (q, k, v) = qkv(&mut rng(1300 + i as u64), shape);
        let gamma = gammas(1350 + i as u64, shape[1]);
        let got = run_out(&program, "retention_parallel", &inputs(&q, &k, &v).f32("Gamma", &gamma), &[], "O");
        assert_nd_close(&format!("retention_parallel {shape:?}"), &got, &r::retention(&q, &k, &v, &gamma.data), TOL);
    }
}

/// Random Mamba inputs for [B, T, D] and state size N.
struct Ssm {
    x: Nd,
    delta: Nd,
    a: Nd,
    bm: Nd,
    c: Nd,
    dskip: Nd,
}

impl Ssm {
    fn random(seed: u64, [b, t, d, n]: [usize; 4]) -> Ssm {
        let mut rng = rng(seed);
        Ssm {
            x: rand_nd(&mut rng, &[b, t, d], -1.0, 1.0),
            delta: rand_nd(&mut rng, &[b, t, d], 0.01, 1.0), // softplus output: positive
            a: rand_nd(&mut rng, &[d, n], -2.0, -0.05),      // stable: negative real part
            bm: rand_nd(&mut rng, &[b, t, n], -1.0, 1.0),
            c: rand_nd(&mut rng, &[b, t, n], -1.0, 1.0),
            dskip: rand_nd(&mut rng, &[d], -1.0, 1.0),
        }
    }

    fn inputs(&self) -> Inputs {
        Inputs::new()
            .f32("X", &self.x)
            .f32("Delta", &self.delta)
            .f32("A", &self.a)
            .f32("Bm", &self.bm)
            .f32("C", &self.c)
            .f32("Dskip", &self.dskip)
    }

    fn reference(&self) -> Nd {
        r::selective_scan(&self.x, &self.delta, &self.a, &self.bm, &self.c, &self.dskip.data)
    }
}

#[test]
fn selective_scan_matches_reference() {
    let program = load_lib("mamba.tfm");
    for (i, shape) in [[1, 1, 1, 1], [1, 7, 3, 4], [2, 13, 5, 7], [2, 13, 1, 16]].into_iter().enumerate() {
        let ssm = Ssm::random(1400 + i as u64, shape);
        let got = run_out(&program, "selective_scan", &ssm.inputs(), &[], "Y");
        assert_nd_close(&format!("selective_scan {shape:?}"), &got, &ssm.reference(), TOL);
    }
}

#[test]
fn selective_scan_without_input_is_the_skip() {
    // Bm = 0 keeps the state at 0, so Y = Dskip * X exactly.
    let program = load_lib("mamba.tfm");
    let mut ssm = Ssm::random(1450, [2, 7, 3, 4]);
    ssm.bm = Nd::zeros(&ssm.bm.shape);
    let got = run_out(&program, "selective_scan", &ssm.inputs(), &[], "Y");
    let mut want = ssm.x.clone();
    for (i, y) in want.data.iter_mut().enumerate() {
        *y *= ssm.dskip.data[i % 3];
    }
    assert_nd_close("selective_scan Bm=0", &got, &want, TOL);
}
