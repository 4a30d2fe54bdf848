//! Softmax-attention variants: O[b,h,p,:] = softmax_m(logit(b,h,p,m)) · V, with masked keys
//! removed from the softmax. Layout: Q [B,H,P,E], K [B,H|G,M,E], V [B,H|G,M,F].

use super::{Nd, dot, softmax_row};

/// The shared driver: `logit(b, h, p, m)` is `None` for a masked key, `value(b, h, m, f)` reads V.
/// Output shape [B, H, P, F].
pub fn softmax_attention(
    [nb, nh, np, nm, nf]: [usize; 5],
    logit: impl Fn(usize, usize, usize, usize) -> Option<f64>,
    value: impl Fn(usize, usize, usize, usize) -> f64,
) -> Nd {
    let mut o = Nd::zeros(&[nb, nh, np, nf]);
    for b in 0..nb {
        for h in 0..nh {
            for p in 0..np {
                let logits: Vec<Option<f64>> = (0..nm).map(|m| logit(b, h, p, m)).collect();
                let row = softmax_row(&logits, nf, |m, f| value(b, h, m, f));
                for (f, v) in row.into_iter().enumerate() {
                    o.set(&[b, h, p, f], v);
                }
            }
        }
    }
    o
}

/// Dims [B, H, P, M, F] and E of a Q [B,H,P,E], K [.., M, E], V [.., M, F] triple.
fn dims(q: &Nd, k: &Nd, v: &Nd) -> ([usize; 5], usize) {
    let (kr, vr) = (k.shape.len(), v.shape.len());
    let [nb, nh, np, ne] = q.shape[..] else { panic!("Q must be rank 4") };
    ([nb, nh, np, k.shape[kr - 2], v.shape[vr - 1]], ne)
}

/// q_p · k_m / sqrt(E) for same-head K.
fn scaled_dot(q: &Nd, k: &Nd, ne: usize, b: usize, h: usize, p: usize, m: usize) -> f64 {
    dot(ne, |e| q.at(&[b, h, p, e]), |e| k.at(&[b, h, m, e])) / (ne as f64).sqrt()
}

/// Vaswani et al. 2017: softmax(Q Kᵀ / sqrt(E)) V.
pub fn sdpa(q: &Nd, k: &Nd, v: &Nd) -> Nd {
    let (d, ne) = dims(q, k, v);
    softmax_attention(d, |b, h, p, m| Some(scaled_dot(q, k, ne, b, h, p, m)), |b, h, m, f| v.at(&[b, h, m, f]))
}

/// sdpa restricted to keys m <= p.
pub fn causal(q: &Nd, k: &Nd, v: &Nd) -> Nd {
    window(q, k, v, i64::MAX)
}

/// sdpa restricted to keys with m <= p and p - m < w (causal sliding window).
pub fn window(q: &Nd, k: &Nd, v: &Nd, w: i64) -> Nd {
    let (d, ne) = dims(q, k, v);
    let keep = |p: usize, m: usize| m <= p && ((p - m) as i64) < w;
    softmax_attention(d, |b, h, p, m| keep(p, m).then(|| scaled_dot(q, k, ne, b, h, p, m)), |b, h, m, f| v.at(&[b, h, m, f]))
}

/// Ainslie et al. 2023: K, V have G heads; query head h uses kv head h / (H / G).
pub fn gqa(q: &Nd, k: &Nd, v: &Nd) -> Nd {
    let (d, ne) = dims(q, k, v);
    let (nh, ng) = (q.shape[1], k.shape[1]);
    assert_eq!(nh % ng, 0, "H must be a multiple of G");
    let kv = |h: usize| h / (nh / ng);
    softmax_attention(
        d,
        |b, h, p, m| Some(dot(ne, |e| q.at(&[b, h, p, e]), |e| k.at(&[b, kv(h), m, e])) / (ne as f64).sqrt()),
        |b, h, m, f| v.at(&[b, kv(h), m, f]),
    )
}

/// Shazeer 2019: one shared kv head, K [B, M, E], V [B, M, F].
pub fn mqa(q: &Nd, k: &Nd, v: &Nd) -> Nd {
    let (d, ne) = dims(q, k, v);
    softmax_attention(
        d,
        |b, h, p, m| Some(dot(ne, |e| q.at(&[b, h, p, e]), |e| k.at(&[b, m, e])) / (ne as f64).sqrt()),
        |b, _h, m, f| v.at(&[b, m, f]),
    )
}

/// Press et al. 2022: causal, logit += slope_h * -(p - m), slope_h = 2^(-8 (h + 1) / H).
pub fn alibi(q: &Nd, k: &Nd, v: &Nd) -> Nd {
    let (d, ne) = dims(q, k, v);
    let nh = d[1] as f64;
    let slope = |h: usize| 2f64.powf(-8.0 * (h as f64 + 1.0) / nh);
    softmax_attention(
        d,
        |b, h, p, m| (m <= p).then(|| scaled_dot(q, k, ne, b, h, p, m) + slope(h) * -((p - m) as f64)),
        |b, h, m, f| v.at(&[b, h, m, f]),
    )
}

/// Gemma 2: logits cap * tanh((q·k / sqrt(E)) / cap), non-causal.
pub fn softcap(q: &Nd, k: &Nd, v: &Nd, cap: f64) -> Nd {
    let (d, ne) = dims(q, k, v);
    softmax_attention(d, |b, h, p, m| Some(cap * (scaled_dot(q, k, ne, b, h, p, m) / cap).tanh()), |b, h, m, f| v.at(&[b, h, m, f]))
}

/// Kim et al. 2021: logits -|q_p - k_m|² / sqrt(E), non-causal.
pub fn l2_attention(q: &Nd, k: &Nd, v: &Nd) -> Nd {
    let (d, ne) = dims(q, k, v);
    let dist2 = |b, h, p, m| -> f64 { (0..ne).map(|e| (q.at(&[b, h, p, e]) - k.at(&[b, h, m, e])).powi(2)).sum() };
    softmax_attention(d, |b, h, p, m| Some(-dist2(b, h, p, m) / (ne as f64).sqrt()), |b, h, m, f| v.at(&[b, h, m, f]))
}

/// Packed causal attention: Q, K [T, H, E], V [T, H, F], `off` the cumulative sequence offsets.
/// Each sequence [off[i], off[i+1]) is handled on its own with a causal mask inside it.
pub fn varlen_causal(q: &Nd, k: &Nd, v: &Nd, off: &[usize]) -> Nd {
    let [nt, nh, ne] = q.shape[..] else { panic!("Q must be rank 3") };
    let nf = v.shape[2];
    assert_eq!((off[0], *off.last().unwrap()), (0, nt), "offsets must span 0..T");
    let mut o = Nd::zeros(&[nt, nh, nf]);
    for seq in off.windows(2) {
        let (start, end) = (seq[0], seq[1]);
        for h in 0..nh {
            for p in start..end {
                // keys start..=p of this sequence only
                let logits: Vec<Option<f64>> =
                    (start..=p).map(|m| Some(dot(ne, |e| q.at(&[p, h, e]), |e| k.at(&[m, h, e])) / (ne as f64).sqrt())).collect();
                let row = softmax_row(&logits, nf, |i, f| v.at(&[start + i, h, f]));
                for (f, x) in row.into_iter().enumerate() {
                    o.set(&[p, h, f], x);
                }
            }
        }
    }
    o
}
