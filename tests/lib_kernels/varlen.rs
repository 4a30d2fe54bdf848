//! Packed variable-length causal attention (`varlen_causal`, cu_seqlens offsets).

use tfmc_conformance::reference::{self as r, Nd};
use tfmc_conformance::{Inputs, Tol, assert_nd_close, load_lib, rand_nd, run_out};

use crate::{TOL, rng};

/// Cumulative offsets of sequences of the given lengths: [0, l0, l0 + l1, ...].
fn offsets(lengths: &[usize]) -> Vec<usize> {
    let mut off = vec![0];
    for l in lengths {
        off.push(off.last().unwrap() + l);
    }
    off
}

/// Random packed Q [T,H,E], K [T,H,E], V [T,H,F].
fn packed(seed: u64, t: usize, h: usize, e: usize, f: usize) -> (Nd, Nd, Nd) {
    let mut rng = rng(seed);
    (rand_nd(&mut rng, &[t, h, e], -1.0, 1.0), rand_nd(&mut rng, &[t, h, e], -1.0, 1.0), rand_nd(&mut rng, &[t, h, f], -1.0, 1.0))
}

fn run_varlen(q: &Nd, k: &Nd, v: &Nd, off: &[usize]) -> Nd {
    let off: Vec<i32> = off.iter().map(|&o| o as i32).collect();
    let inputs = Inputs::new().f32("Q", q).f32("K", k).f32("V", v).i32("Off", &off);
    run_out(&load_lib("varlen.tfm"), "varlen_causal", &inputs, &[], "O")
}

/// Tokens start..end of a packed [T, H, X] array, as a [1, H, end - start, X] batch.
fn unpack(x: &Nd, start: usize, end: usize) -> Nd {
    let (nh, nx) = (x.shape[1], x.shape[2]);
    let mut out = Nd::zeros(&[1, nh, end - start, nx]);
    for t in start..end {
        for h in 0..nh {
            for i in 0..nx {
                out.set(&[0, h, t - start, i], x.at(&[t, h, i]));
            }
        }
    }
    out
}

const CASES: [&[usize]; 5] = [&[1, 4, 0, 7], &[13], &[1, 1, 1], &[0, 7, 0], &[5, 0, 0, 2, 6]];

#[test]
fn varlen_matches_reference() {
    for (i, lengths) in CASES.into_iter().enumerate() {
        let off = offsets(lengths);
        let t = *off.last().unwrap();
        for (j, [h, e, f]) in [[2, 3, 5], [1, 1, 1], [3, 4, 2]].into_iter().enumerate() {
            let (q, k, v) = packed(900 + 10 * i as u64 + j as u64, t, h, e, f);
            let got = run_varlen(&q, &k, &v, &off);
            let name = format!("varlen lengths {lengths:?} H={h} E={e} F={f}");
            assert_nd_close(&name, &got, &r::varlen_causal(&q, &k, &v, &off), TOL);
        }
    }
}

#[test]
fn varlen_equals_causal_on_each_sequence() {
    // Lengths 1, 4, 0 (a repeated offset) and 7: each non-empty sequence must give exactly what
    // the `causal` kernel gives on that sequence alone.
    let causal = load_lib("causal.tfm");
    let off = offsets(&[1, 4, 0, 7]);
    assert_eq!(off, [0, 1, 5, 5, 12]);
    let (q, k, v) = packed(950, 12, 2, 3, 5);
    let got = run_varlen(&q, &k, &v, &off);
    for w in off.windows(2).filter(|w| w[0] < w[1]) {
        let (s, e) = (w[0], w[1]);
        let inputs = Inputs::new().f32("Q", &unpack(&q, s, e)).f32("K", &unpack(&k, s, e)).f32("V", &unpack(&v, s, e));
        let alone = run_out(&causal, "causal", &inputs, &[], "O");
        assert_nd_close(&format!("varlen tokens {s}..{e} vs causal"), &unpack(&got, s, e), &alone, TOL);
    }
    // The length-1 sequence attends to itself only.
    assert_nd_close("varlen single token", &unpack(&got, 0, 1), &unpack(&v, 0, 1), Tol::EXACT);
}

#[test]
fn varlen_tokens_attend_only_inside_their_sequence() {
    // Perturbing Q, K, V of one sequence changes that sequence's outputs and no other's.
    let off = offsets(&[1, 4, 0, 7]);
    let (q, k, v) = packed(960, 12, 2, 3, 5);
    let base = run_varlen(&q, &k, &v, &off);
    for w in off.windows(2).filter(|w| w[0] < w[1]) {
        let (s, e) = (w[0], w[1]);
        let bump = |x: &Nd| {
            let mut y = x.clone();
            for t in s..e {
                for h in 0..x.shape[1] {
                    for i in 0..x.shape[2] {
                        y.set(&[t, h, i], (x.at(&[t, h, i]) * -2.0 + 0.25) as f32 as f64);
                    }
                }
            }
            y
        };
        let got = run_varlen(&bump(&q), &bump(&k), &bump(&v), &off);
        for t in 0..12 {
            let same = (0..2).all(|h| (0..5).all(|f| got.at(&[t, h, f]) == base.at(&[t, h, f])));
            assert_eq!(same, !(s..e).contains(&t), "token {t} after perturbing tokens {s}..{e}");
        }
    }
}
