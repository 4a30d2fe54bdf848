//! The variants of issue 18 (sigmoid, differential, softmax plus one and sinks, Flowformer,
//! graph-masked attention, Pattention, stick-breaking) against their f64 references, on SHAPES plus odd sizes off every tile
//! (19, 37), large logits, and fully masked rows where the kernel has a mask.

use rand::Rng;
use tfmc_conformance::reference::{self as r, Nd};
use tfmc_conformance::{Inputs, assert_nd_close, load_lib, map_f32, param_f32, param_i64, rand_nd, run_out};

use crate::{SHAPES, TOL, qkv, rng};

/// SHAPES and two larger odd ones, `[B, H, P, M, E, F]`.
fn shapes() -> Vec<[usize; 6]> {
    let mut s = SHAPES.to_vec();
    s.extend([[1, 2, 19, 19, 5, 3], [1, 1, 37, 37, 4, 4]]);
    s
}

fn inputs(q: &Nd, k: &Nd, v: &Nd) -> Inputs {
    Inputs::new().f32("Q", q).f32("K", k).f32("V", v)
}

#[test]
fn sigmoid_attention_matches_reference() {
    let program = load_lib("sigmoid.tfm");
    for (i, shape) in shapes().into_iter().enumerate() {
        let (q, k, v) = qkv(&mut rng(1000 + i as u64), shape);
        for (kernel, causal) in [("sigmoid_attention", false), ("sigmoid_causal", true)] {
            let got = run_out(&program, kernel, &inputs(&q, &k, &v), &[], "O");
            assert_nd_close(&format!("{kernel} {shape:?}"), &got, &r::sigmoid_attention(&q, &k, &v, causal), TOL);
        }
    }
}

#[test]
fn sigmoid_attention_with_huge_logits() {
    // Logits around ±1e4: the sigmoid saturates at 0 and 1, never NaN.
    let program = load_lib("sigmoid.tfm");
    let (q, k, v) = qkv(&mut rng(1010), [1, 2, 19, 37, 4, 3]);
    let q = map_f32(&q, |x| x * 2e4);
    for (kernel, causal) in [("sigmoid_attention", false), ("sigmoid_causal", true)] {
        let got = run_out(&program, kernel, &inputs(&q, &k, &v), &[], "O");
        assert!(got.data.iter().all(|x| x.is_finite()), "{kernel}: non-finite output");
        assert_nd_close(&format!("{kernel} huge logits"), &got, &r::sigmoid_attention(&q, &k, &v, causal), TOL);
    }
}

#[test]
fn stick_breaking_matches_reference() {
    // The kernel sums logs of the stick left over (a scan over the keys between m and p); the
    // reference multiplies what is left, walking outwards from the query.
    let program = load_lib("stick.tfm");
    let mut all = shapes();
    all.extend([[1, 1, 70, 37, 4, 3], [1, 2, 1, 1, 3, 2]]);
    for (i, shape) in all.into_iter().enumerate() {
        let (q, k, v) = qkv(&mut rng(1100 + i as u64), shape);
        let got = run_out(&program, "stick_breaking", &inputs(&q, &k, &v), &[], "O");
        assert_nd_close(&format!("stick_breaking {shape:?}"), &got, &r::stick_breaking(&q, &k, &v), TOL);
        // The first query has no key before it.
        assert!(got.data[..shape[5]].iter().all(|x| *x == 0.0), "stick_breaking {shape:?}: row 0 must be 0");
    }
    // Logits of ±1e3: sticks broken at once (beta = 1) or never (beta = 0), never NaN.
    let (q, k, v) = qkv(&mut rng(1120), [1, 2, 19, 37, 4, 3]);
    let q = map_f32(&q, |x| x * 1e3);
    let got = run_out(&program, "stick_breaking", &inputs(&q, &k, &v), &[], "O");
    assert!(got.data.iter().all(|x| x.is_finite()), "stick_breaking: non-finite output at large logits");
    assert_nd_close("stick_breaking large logits", &got, &r::stick_breaking(&q, &k, &v), TOL);
}

/// Q1, Q2 [B,H,P,E], K1, K2 [B,H,M,E], V [B,H,M,F], with Q1 and Q2 scaled by `scale`.
fn diff_inputs(seed: u64, [b, h, p, m, e, f]: [usize; 6], scale: f64) -> [Nd; 5] {
    let mut g = rng(seed);
    let q1 = map_f32(&rand_nd(&mut g, &[b, h, p, e], -1.0, 1.0), |x| x * scale);
    let q2 = map_f32(&rand_nd(&mut g, &[b, h, p, e], -1.0, 1.0), |x| x * scale);
    let k1 = rand_nd(&mut g, &[b, h, m, e], -1.0, 1.0);
    let k2 = rand_nd(&mut g, &[b, h, m, e], -1.0, 1.0);
    [q1, q2, k1, k2, rand_nd(&mut g, &[b, h, m, f], -1.0, 1.0)]
}

#[test]
fn diff_attention_matches_reference() {
    let program = load_lib("diff.tfm");
    for (i, shape) in shapes().into_iter().enumerate() {
        for (j, scale) in [1.0, 2e4].into_iter().enumerate() {
            let [q1, q2, k1, k2, v] = diff_inputs(1100 + 10 * i as u64 + j as u64, shape, scale);
            let ins = Inputs::new().f32("Q1", &q1).f32("Q2", &q2).f32("K1", &k1).f32("K2", &k2).f32("V", &v);
            let got = run_out(&program, "diff_attention", &ins, &[], "O");
            assert!(got.data.iter().all(|x| x.is_finite()), "diff {shape:?} x{scale}: non-finite output");
            let want = r::diff_attention(&q1, &q2, &k1, &k2, &v, 0.8);
            assert_nd_close(&format!("diff_attention {shape:?} x{scale}"), &got, &want, TOL);
            // lambda = 0.25 through the param.
            let got = run_out(&program, "diff_attention", &ins, &[("lambda", param_f32(0.25))], "O");
            let want = r::diff_attention(&q1, &q2, &k1, &k2, &v, 0.25);
            assert_nd_close(&format!("diff_attention lambda 0.25 {shape:?}"), &got, &want, TOL);
        }
    }
}

#[test]
fn softmax_one_matches_reference() {
    let program = load_lib("quiet.tfm");
    for (i, shape) in shapes().into_iter().enumerate() {
        for (j, scale) in [1.0, 2e4].into_iter().enumerate() {
            let (q, k, v) = qkv(&mut rng(1200 + 10 * i as u64 + j as u64), shape);
            let q = map_f32(&q, |x| x * scale);
            let got = run_out(&program, "softmax_one", &inputs(&q, &k, &v), &[], "O");
            let want = r::sink_attention(&q, &k, &v, &vec![0.0; shape[1]], false, i64::MAX);
            assert!(got.data.iter().all(|x| x.is_finite()), "softmax_one {shape:?} x{scale}: non-finite output");
            assert_nd_close(&format!("softmax_one {shape:?} x{scale}"), &got, &want, TOL);
        }
    }
}

#[test]
fn sink_kernels_match_reference() {
    let program = load_lib("quiet.tfm");
    for (i, shape) in shapes().into_iter().enumerate() {
        for (j, scale) in [1.0, 2e4].into_iter().enumerate() {
            let mut g = rng(1300 + 10 * i as u64 + j as u64);
            let (q, k, v) = qkv(&mut g, shape);
            let q = map_f32(&q, |x| x * scale);
            // Sink logits of either sign, some above every logit of the row.
            let sink = rand_nd(&mut g, &[shape[1]], -3.0, 3.0);
            let ins = inputs(&q, &k, &v).f32("Sink", &sink);
            let name = format!("{shape:?} x{scale}");
            let got = run_out(&program, "sink_causal", &ins, &[], "O");
            assert_nd_close(&format!("sink_causal {name}"), &got, &r::sink_attention(&q, &k, &v, &sink.data, true, i64::MAX), TOL);
            for w in [1, 3, 128] {
                let got = run_out(&program, "sink_window", &ins, &[("W", param_i64(w))], "O");
                let want = r::sink_attention(&q, &k, &v, &sink.data, true, w);
                assert_nd_close(&format!("sink_window W={w} {name}"), &got, &want, TOL);
            }
        }
    }
}

#[test]
fn sink_window_with_every_row_masked_gives_zero() {
    // W = 0 masks every key: the sink takes all the weight, O = 0 (never NaN).
    let program = load_lib("quiet.tfm");
    for (i, shape) in shapes().into_iter().enumerate() {
        let mut g = rng(1350 + i as u64);
        let (q, k, v) = qkv(&mut g, shape);
        let sink = rand_nd(&mut g, &[shape[1]], -3.0, 3.0);
        let got = run_out(&program, "sink_window", &inputs(&q, &k, &v).f32("Sink", &sink), &[("W", param_i64(0))], "O");
        assert!(got.data.iter().all(|&x| x == 0.0), "sink_window W=0 {shape:?}: {:?}", got.data);
    }
}

#[test]
fn flow_attention_matches_reference() {
    let program = load_lib("flow.tfm");
    for (i, shape) in shapes().into_iter().enumerate() {
        // Inputs of ±30 saturate the sigmoid feature map almost to 0 and 1.
        for (j, scale) in [1.0, 30.0].into_iter().enumerate() {
            let (q, k, v) = qkv(&mut rng(1400 + 10 * i as u64 + j as u64), shape);
            let (q, k) = (map_f32(&q, |x| x * scale), map_f32(&k, |x| x * scale));
            let got = run_out(&program, "flow_attention", &inputs(&q, &k, &v), &[], "O");
            assert_nd_close(&format!("flow_attention {shape:?} x{scale}"), &got, &r::flow_attention(&q, &k, &v), TOL);
        }
    }
}

/// A random adjacency [B, P, M] (1.0 = edge) with each edge present with probability `density`.
fn adjacency(g: &mut rand::rngs::StdRng, [b, p, m]: [usize; 3], density: f64) -> Nd {
    Nd::new(&[b, p, m], (0..b * p * m).map(|_| if g.random_bool(density) { 1.0 } else { 0.0 }).collect())
}

#[test]
fn graph_attention_matches_reference() {
    let program = load_lib("graph.tfm");
    for (i, shape @ [b, _, p, m, _, _]) in shapes().into_iter().enumerate() {
        for (j, (density, scale)) in [(0.5, 1.0), (0.2, 1.0), (0.5, 2e4), (1.0, 1.0)].into_iter().enumerate() {
            let mut g = rng(1500 + 10 * i as u64 + j as u64);
            let (q, k, v) = qkv(&mut g, shape);
            let q = map_f32(&q, |x| x * scale);
            let mut adj = adjacency(&mut g, [b, p, m], density);
            // Node 0 of batch 0 has no neighbour: its row is fully masked.
            for mm in 0..m {
                adj.set(&[0, 0, mm], 0.0);
            }
            let got = run_out(&program, "graph_attention", &inputs(&q, &k, &v).bool("Adj", &adj), &[], "O");
            let name = format!("graph_attention {shape:?} density {density} x{scale}");
            assert_nd_close(&name, &got, &r::graph_attention(&q, &k, &v, &adj), TOL);
            assert!((0..shape[1]).all(|h| (0..shape[5]).all(|f| got.at(&[0, h, 0, f]) == 0.0)), "{name}: a lone node must give 0");
        }
    }
}

#[test]
fn pattention_matches_reference() {
    let program = load_lib("tokenformer.tfm");
    // [B, T, D, N, F]: size 1, odd sizes, more parameter tokens than tokens and fewer.
    for (i, [b, t, d, n, f]) in
        [[1, 1, 1, 1, 1], [2, 7, 3, 5, 4], [1, 19, 5, 37, 3], [2, 37, 4, 19, 6], [1, 13, 8, 1, 2]].into_iter().enumerate()
    {
        for (j, scale) in [1.0, 2e4].into_iter().enumerate() {
            let mut g = rng(1600 + 10 * i as u64 + j as u64);
            let x = map_f32(&rand_nd(&mut g, &[b, t, d], -1.0, 1.0), |v| v * scale);
            let (kp, vp) = (rand_nd(&mut g, &[n, d], -1.0, 1.0), rand_nd(&mut g, &[n, f], -1.0, 1.0));
            let ins = Inputs::new().f32("X", &x).f32("Kp", &kp).f32("Vp", &vp);
            let got = run_out(&program, "pattention", &ins, &[], "O");
            assert_nd_close(&format!("pattention {:?} x{scale}", [b, t, d, n, f]), &got, &r::pattention(&x, &kp, &vp), TOL);
        }
    }
    // A zero token: its row of A is 0, and so is its output.
    let mut g = rng(1690);
    let mut x = rand_nd(&mut g, &[1, 3, 4], -1.0, 1.0);
    (0..4).for_each(|d| x.set(&[0, 1, d], 0.0));
    let (kp, vp) = (rand_nd(&mut g, &[5, 4], -1.0, 1.0), rand_nd(&mut g, &[5, 2], -1.0, 1.0));
    let got = run_out(&program, "pattention", &Inputs::new().f32("X", &x).f32("Kp", &kp).f32("Vp", &vp), &[], "O");
    assert_nd_close("pattention zero token", &got, &r::pattention(&x, &kp, &vp), TOL);
    assert_eq!((got.at(&[0, 1, 0]), got.at(&[0, 1, 1])), (0.0, 0.0));
}
