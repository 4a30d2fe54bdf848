//! Linear attention, RetNet retention and Mamba's selective scan, each in its textbook form
//! (quadratic for attention/retention, the explicit recurrence for the SSM).

use super::{Nd, dot};

/// φ(x) = elu(x) + 1 (Katharopoulos et al. 2020).
fn phi(x: f64) -> f64 {
    if x > 0.0 { x + 1.0 } else { x.exp() }
}

/// Linear attention, non-causal when `causal` is false:
/// O[b,h,p,f] = sum_m (φ(q_p)·φ(k_m)) V[m,f] / sum_m φ(q_p)·φ(k_m), over m <= p when causal.
fn linear_attention(q: &Nd, k: &Nd, v: &Nd, causal: bool) -> Nd {
    let [nb, nh, np, ne] = q.shape[..] else { panic!("Q must be rank 4") };
    let (nm, nf) = (k.shape[2], v.shape[3]);
    let mut o = Nd::zeros(&[nb, nh, np, nf]);
    for b in 0..nb {
        for h in 0..nh {
            for p in 0..np {
                let (mut num, mut den) = (vec![0.0; nf], 0.0);
                for m in (0..nm).filter(|&m| !causal || m <= p) {
                    let a = dot(ne, |e| phi(q.at(&[b, h, p, e])), |e| phi(k.at(&[b, h, m, e])));
                    den += a;
                    for (f, n) in num.iter_mut().enumerate() {
                        *n += a * v.at(&[b, h, m, f]);
                    }
                }
                for (f, n) in num.into_iter().enumerate() {
                    o.set(&[b, h, p, f], if den == 0.0 { 0.0 } else { n / den });
                }
            }
        }
    }
    o
}

/// Non-causal elu+1 linear attention.
pub fn linear(q: &Nd, k: &Nd, v: &Nd) -> Nd {
    linear_attention(q, k, v, false)
}

/// Causal elu+1 linear attention (m <= p).
pub fn linear_causal(q: &Nd, k: &Nd, v: &Nd) -> Nd {
    linear_attention(q, k, v, true)
}

/// RetNet retention, parallel form (Sun et al. 2023, eq. 5):
/// O[b,h,p,f] = sum_{m <= p} (q_p·k_m) gamma[h]^(p-m) V[m,f]; no scaling or normalization.
pub fn retention(q: &Nd, k: &Nd, v: &Nd, gamma: &[f64]) -> Nd {
    let [nb, nh, np, ne] = q.shape[..] else { panic!("Q must be rank 4") };
    let nf = v.shape[3];
    let mut o = Nd::zeros(&[nb, nh, np, nf]);
    for b in 0..nb {
        for h in 0..nh {
            for p in 0..np {
                for m in 0..k.shape[2].min(p + 1) {
                    let a = dot(ne, |e| q.at(&[b, h, p, e]), |e| k.at(&[b, h, m, e]));
                    let decay = gamma[h].powi((p - m) as i32);
                    for f in 0..nf {
                        let x = o.at(&[b, h, p, f]) + a * decay * v.at(&[b, h, m, f]);
                        o.set(&[b, h, p, f], x);
                    }
                }
            }
        }
    }
    o
}

/// Mamba S6 (Gu & Dao 2023, Alg. 2 with Ā = exp(ΔA), B̄ = ΔB), as the explicit recurrence:
/// h_t[d,n] = exp(Δ[t,d] A[d,n]) h_{t-1}[d,n] + Δ[t,d] B[t,n] x[t,d], h_{-1} = 0;
/// y[t,d] = sum_n h_t[d,n] C[t,n] + Dskip[d] x[t,d].
pub fn selective_scan(x: &Nd, delta: &Nd, a: &Nd, bm: &Nd, c: &Nd, dskip: &[f64]) -> Nd {
    let [nb, nt, nd] = x.shape[..] else { panic!("X must be rank 3") };
    let nn = a.shape[1];
    let mut y = Nd::zeros(&[nb, nt, nd]);
    for b in 0..nb {
        for d in 0..nd {
            let mut state = vec![0.0; nn];
            for t in 0..nt {
                let (dt, xt) = (delta.at(&[b, t, d]), x.at(&[b, t, d]));
                let mut acc = dskip[d] * xt;
                for (n, s) in state.iter_mut().enumerate() {
                    *s = (dt * a.at(&[d, n])).exp() * *s + dt * bm.at(&[b, t, n]) * xt;
                    acc += *s * c.at(&[b, t, n]);
                }
                y.set(&[b, t, d], acc);
            }
        }
    }
    y
}
