//! `lib/model.tfm`: RMSNorm and the pre-norm attention block composed by kernel calls.

use tfmc_conformance::reference::{self as r, Nd};
use tfmc_conformance::{Inputs, assert_nd_close, load_lib, param_f32, rand_nd, run_out};

use crate::{TOL, rng};

/// The default of `param rms_eps` in model.tfm.
const RMS_EPS: f64 = 1e-6f32 as f64;

#[test]
fn rmsnorm_matches_reference() {
    let program = load_lib("model.tfm");
    for (i, shape) in [[1, 1, 1], [1, 7, 5], [2, 13, 7]].into_iter().enumerate() {
        let mut rng = rng(1500 + i as u64);
        let x = rand_nd(&mut rng, &shape, -2.0, 2.0);
        let wn = rand_nd(&mut rng, &[shape[2]], 0.5, 1.5);
        let inputs = Inputs::new().f32("X", &x).f32("Wn", &wn);
        let got = run_out(&program, "rmsnorm", &inputs, &[], "Y");
        assert_nd_close(&format!("rmsnorm {shape:?}"), &got, &r::rmsnorm(&x, &wn.data, RMS_EPS), TOL);
        // The parameter reaches the kernel: a large epsilon visibly shrinks the output.
        let got = run_out(&program, "rmsnorm", &inputs, &[("rms_eps", param_f32(0.5))], "Y");
        assert_nd_close(&format!("rmsnorm eps=0.5 {shape:?}"), &got, &r::rmsnorm(&x, &wn.data, 0.5), TOL);
    }
}

#[test]
fn block_matches_reference() {
    let program = load_lib("model.tfm");
    // [B, T, D, H, E]
    for (i, [b, t, d, h, e]) in [[1, 1, 1, 1, 1], [1, 7, 5, 2, 3], [2, 13, 6, 3, 2]].into_iter().enumerate() {
        let mut rng = rng(1600 + i as u64);
        let x = rand_nd(&mut rng, &[b, t, d], -1.0, 1.0);
        let wn = rand_nd(&mut rng, &[d], 0.5, 1.5);
        let wq = rand_nd(&mut rng, &[d, h, e], -1.0, 1.0);
        let wk = rand_nd(&mut rng, &[d, h, e], -1.0, 1.0);
        let wv = rand_nd(&mut rng, &[d, h, e], -1.0, 1.0);
        let wo = rand_nd(&mut rng, &[h, e, d], -1.0, 1.0);
        let inputs = Inputs::new().f32("X", &x).f32("Wn", &wn).f32("Wq", &wq).f32("Wk", &wk).f32("Wv", &wv).f32("Wo", &wo);
        let got = run_out(&program, "block", &inputs, &[], "Y");
        let want = r::block(&x, &wn.data, &wq, &wk, &wv, &wo, RMS_EPS);
        assert_nd_close(&format!("block {:?}", [b, t, d, h, e]), &got, &want, TOL);
    }
}

#[test]
fn block_first_token_is_its_own_value() {
    // Token 0 attends only to itself, so Y[0] = X[0] + (Xn[0] Wv) Wo, independently of Wq, Wk.
    let program = load_lib("model.tfm");
    let (b, t, d, h, e) = (1, 4, 3, 2, 2);
    let mut rng = rng(1700);
    let x = rand_nd(&mut rng, &[b, t, d], -1.0, 1.0);
    let wn = rand_nd(&mut rng, &[d], 0.5, 1.5);
    let ws: Vec<Nd> = (0..3).map(|_| rand_nd(&mut rng, &[d, h, e], -1.0, 1.0)).collect();
    let wo = rand_nd(&mut rng, &[h, e, d], -1.0, 1.0);
    let run = |wq: &Nd, wk: &Nd| {
        let inputs = Inputs::new().f32("X", &x).f32("Wn", &wn).f32("Wq", wq).f32("Wk", wk).f32("Wv", &ws[2]).f32("Wo", &wo);
        run_out(&program, "block", &inputs, &[], "Y")
    };
    let (y1, y2) = (run(&ws[0], &ws[1]), run(&ws[1], &ws[0]));
    let first = |y: &Nd| Nd::new(&[d], y.data[..d].to_vec());
    assert_nd_close("block token 0 independent of Wq/Wk", &first(&y1), &first(&y2), TOL);
}
