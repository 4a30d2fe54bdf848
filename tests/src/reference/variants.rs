//! The variants of issue 18 that are not a plain softmax of one logit: sigmoid attention,
//! differential attention, softmax plus one and attention sinks, Flowformer's flow attention and
//! graph-masked attention, TokenFormer's Pattention, stick-breaking attention. Layout (but Pattention's): Q [B,H,P,E], K [B,H,M,E], V [B,H,M,F]; output [B,H,P,F].

use super::{Nd, dot, softmax_attention};

/// Dims [B, H, P, M, F] and E of a Q [B,H,P,E], K [B,H,M,E], V [B,H,M,F] triple.
fn dims(q: &Nd, k: &Nd, v: &Nd) -> ([usize; 5], usize) {
    let [nb, nh, np, ne] = q.shape[..] else { panic!("Q must be rank 4") };
    ([nb, nh, np, k.shape[2], v.shape[3]], ne)
}

/// q_p · k_m / sqrt(E).
fn scaled_dot(q: &Nd, k: &Nd, ne: usize, b: usize, h: usize, p: usize, m: usize) -> f64 {
    dot(ne, |e| q.at(&[b, h, p, e]), |e| k.at(&[b, h, m, e])) / (ne as f64).sqrt()
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 { 1.0 / (1.0 + (-x).exp()) } else { x.exp() / (1.0 + x.exp()) }
}

/// Ramapuram et al. 2024: O[p] = sum_m sigmoid(q_p·k_m / sqrt(E) - ln M) v_m, over m <= p when
/// `causal`.
pub fn sigmoid_attention(q: &Nd, k: &Nd, v: &Nd, causal: bool) -> Nd {
    let ([nb, nh, np, nm, nf], ne) = dims(q, k, v);
    let bias = -(nm as f64).ln();
    let mut o = Nd::zeros(&[nb, nh, np, nf]);
    for b in 0..nb {
        for h in 0..nh {
            for p in 0..np {
                for m in (0..nm).filter(|&m| !causal || m <= p) {
                    let w = sigmoid(scaled_dot(q, k, ne, b, h, p, m) + bias);
                    for f in 0..nf {
                        o.set(&[b, h, p, f], o.at(&[b, h, p, f]) + w * v.at(&[b, h, m, f]));
                    }
                }
            }
        }
    }
    o
}

/// Tan et al. 2024, stick-breaking attention, from the definition (products, not logs):
/// O[p] = sum_{m<p} beta_pm prod_{m<k<p} (1 - beta_pk) v_m, beta = sigmoid(q·k / sqrt(E)).
pub fn stick_breaking(q: &Nd, k: &Nd, v: &Nd) -> Nd {
    let ([nb, nh, np, nm, nf], ne) = dims(q, k, v);
    let mut o = Nd::zeros(&[nb, nh, np, nf]);
    for b in 0..nb {
        for h in 0..nh {
            for p in 0..np {
                // Walk the keys from the query outwards, keeping what is left of the stick.
                let mut left = 1.0;
                for m in (0..nm.min(p)).rev() {
                    let beta = sigmoid(scaled_dot(q, k, ne, b, h, p, m));
                    let w = beta * left;
                    left *= 1.0 - beta;
                    for f in 0..nf {
                        o.set(&[b, h, p, f], o.at(&[b, h, p, f]) + w * v.at(&[b, h, m, f]));
                    }
                }
            }
        }
    }
    o
}

/// Ye et al. 2024: softmax(Q1 K1ᵀ / sqrt(E)) V - lambda softmax(Q2 K2ᵀ / sqrt(E)) V.
pub fn diff_attention(q1: &Nd, q2: &Nd, k1: &Nd, k2: &Nd, v: &Nd, lambda: f64) -> Nd {
    let ([nb, nh, np, nm, nf], ne) = dims(q1, k1, v);
    let one = |q: &Nd, k: &Nd| {
        softmax_attention([nb, nh, np, nm, nf], |b, h, p, m| Some(scaled_dot(q, k, ne, b, h, p, m)), |b, h, m, f| v.at(&[b, h, m, f]))
    };
    let (a, s) = (one(q1, k1), one(q2, k2));
    Nd::new(&a.shape, a.data.iter().zip(&s.data).map(|(x, y)| x - lambda * y).collect())
}

/// Softmax with an extra sink logit per head that weighs no value: O[p] = sum_m e^{l_m} v_m /
/// (e^{sink_h} + sum_m e^{l_m}) over the keys m <= p with p - m < w (every key when not
/// `causal`), stabilised by the max over the logits and the sink. `sink = 0` for every head is
/// Miller's softmax plus one; a row with no key gives 0.
pub fn sink_attention(q: &Nd, k: &Nd, v: &Nd, sink: &[f64], causal: bool, w: i64) -> Nd {
    let ([nb, nh, np, nm, nf], ne) = dims(q, k, v);
    assert_eq!(sink.len(), nh, "one sink logit per head");
    let keep = |p: usize, m: usize| !causal || (m <= p && ((p - m) as i64) < w);
    let mut o = Nd::zeros(&[nb, nh, np, nf]);
    for b in 0..nb {
        for h in 0..nh {
            for p in 0..np {
                let logits: Vec<(usize, f64)> = (0..nm).filter(|&m| keep(p, m)).map(|m| (m, scaled_dot(q, k, ne, b, h, p, m))).collect();
                let mx = logits.iter().map(|&(_, l)| l).fold(sink[h], f64::max);
                let mut den = (sink[h] - mx).exp();
                let mut num = vec![0.0; nf];
                for &(m, l) in &logits {
                    let x = (l - mx).exp();
                    den += x;
                    for (f, n) in num.iter_mut().enumerate() {
                        *n += x * v.at(&[b, h, m, f]);
                    }
                }
                for (f, n) in num.into_iter().enumerate() {
                    o.set(&[b, h, p, f], n / den);
                }
            }
        }
    }
    o
}

/// Wu et al. 2022 (Flowformer), non-causal, φ = sigmoid, with the authors' code's factors M on
/// the competition softmax and P / M in the allocation gate:
/// I_p = φ(q_p)·Σ_m φ(k_m), O_m = φ(k_m)·Σ_p φ(q_p), Î_p = φ(q_p)·Σ_m φ(k_m) / O_m,
/// Ô_m = φ(k_m)·Σ_p φ(q_p) / I_p, c = M softmax(Ô), out_p = sigmoid(Î_p P / M) Σ_m (φ(q_p)·φ(k_m)) c_m v_m / I_p.
pub fn flow_attention(q: &Nd, k: &Nd, v: &Nd) -> Nd {
    let ([nb, nh, np, nm, nf], ne) = dims(q, k, v);
    let mut o = Nd::zeros(&[nb, nh, np, nf]);
    for b in 0..nb {
        for h in 0..nh {
            let qf: Vec<Vec<f64>> = (0..np).map(|p| (0..ne).map(|e| sigmoid(q.at(&[b, h, p, e]))).collect()).collect();
            let kf: Vec<Vec<f64>> = (0..nm).map(|m| (0..ne).map(|e| sigmoid(k.at(&[b, h, m, e]))).collect()).collect();
            let col_sum = |rows: &[Vec<f64>], scale: &dyn Fn(usize) -> f64| -> Vec<f64> {
                (0..ne).map(|e| rows.iter().enumerate().map(|(i, r)| r[e] * scale(i)).sum()).collect()
            };
            let dot_e = |a: &[f64], b: &[f64]| -> f64 { a.iter().zip(b).map(|(x, y)| x * y).sum() };
            let (ks, qs) = (col_sum(&kf, &|_| 1.0), col_sum(&qf, &|_| 1.0));
            let inflow: Vec<f64> = qf.iter().map(|r| dot_e(r, &ks)).collect();
            let outflow: Vec<f64> = kf.iter().map(|r| dot_e(r, &qs)).collect();
            let kc = col_sum(&kf, &|m| 1.0 / outflow[m]);
            let qc = col_sum(&qf, &|p| 1.0 / inflow[p]);
            let in_c: Vec<f64> = qf.iter().map(|r| dot_e(r, &kc)).collect();
            let out_c: Vec<f64> = kf.iter().map(|r| dot_e(r, &qc)).collect();
            let mx = out_c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = out_c.iter().map(|x| (x - mx).exp()).sum();
            let comp: Vec<f64> = out_c.iter().map(|x| (x - mx).exp() / z * nm as f64).collect();
            for p in 0..np {
                let gate = sigmoid(in_c[p] * np as f64 / nm as f64);
                for f in 0..nf {
                    let s: f64 = (0..nm).map(|m| dot_e(&qf[p], &kf[m]) * comp[m] * v.at(&[b, h, m, f])).sum();
                    o.set(&[b, h, p, f], gate * s / inflow[p]);
                }
            }
        }
    }
    o
}

/// Softmax attention over a graph's edges: key m is seen by query p iff `adj[b, p, m]`
/// (adj [B, P, M]); a node with no neighbour gets 0.
pub fn graph_attention(q: &Nd, k: &Nd, v: &Nd, adj: &Nd) -> Nd {
    let (d, ne) = dims(q, k, v);
    softmax_attention(
        d,
        |b, h, p, m| (adj.at(&[b, p, m]) != 0.0).then(|| scaled_dot(q, k, ne, b, h, p, m)),
        |b, h, m, f| v.at(&[b, h, m, f]),
    )
}

/// Wang et al. 2024 (TokenFormer): X [B,T,D], Kp [N,D], Vp [N,F]; a = x_t Kpᵀ, weights
/// gelu(a_n sqrt(N) / |a|₂) (erf GeLU; a zero row gives 0), O[t] = Σ_n w_n Vp[n].
pub fn pattention(x: &Nd, kp: &Nd, vp: &Nd) -> Nd {
    let [nb, nt, nd] = x.shape[..] else { panic!("X must be rank 3") };
    let (nn, nf) = (kp.shape[0], vp.shape[1]);
    let gelu = |z: f64| 0.5 * z * (1.0 + libm::erf(z / std::f64::consts::SQRT_2));
    let mut o = Nd::zeros(&[nb, nt, nf]);
    for b in 0..nb {
        for t in 0..nt {
            let a: Vec<f64> = (0..nn).map(|n| dot(nd, |d| x.at(&[b, t, d]), |d| kp.at(&[n, d]))).collect();
            let norm = a.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm == 0.0 {
                continue;
            }
            for f in 0..nf {
                let s: f64 = (0..nn).map(|n| gelu(a[n] / norm * (nn as f64).sqrt()) * vp.at(&[n, f])).sum();
                o.set(&[b, t, f], s);
            }
        }
    }
    o
}
