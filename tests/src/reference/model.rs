//! The pre-norm attention block of `lib/model.tfm`, composed from the references.

use super::{Nd, causal};

/// RMSNorm (Zhang & Sennrich 2019) over the last axis of X [B, T, D]:
/// y = x / sqrt(mean_d x² + eps) * w.
pub fn rmsnorm(x: &Nd, w: &[f64], eps: f64) -> Nd {
    let [nb, nt, nd] = x.shape[..] else { panic!("X must be rank 3") };
    let mut y = Nd::zeros(&x.shape);
    for b in 0..nb {
        for t in 0..nt {
            let ms = (0..nd).map(|d| x.at(&[b, t, d]).powi(2)).sum::<f64>() / nd as f64;
            let r = 1.0 / (ms + eps).sqrt();
            for d in 0..nd {
                y.set(&[b, t, d], x.at(&[b, t, d]) * r * w[d]);
            }
        }
    }
    y
}

/// Projects Xn [B, T, D] with W [D, H, E] into heads [B, H, T, E].
fn project(xn: &Nd, w: &Nd) -> Nd {
    let [nb, nt, nd] = xn.shape[..] else { panic!("Xn must be rank 3") };
    let [_, nh, ne] = w.shape[..] else { panic!("W must be rank 3") };
    let mut out = Nd::zeros(&[nb, nh, nt, ne]);
    for b in 0..nb {
        for h in 0..nh {
            for t in 0..nt {
                for e in 0..ne {
                    let s = (0..nd).map(|d| xn.at(&[b, t, d]) * w.at(&[d, h, e])).sum();
                    out.set(&[b, h, t, e], s);
                }
            }
        }
    }
    out
}

/// Y = X + causal(Xn Wq, Xn Wk, Xn Wv) Wo with Xn = rmsnorm(X, Wn).
pub fn block(x: &Nd, wn: &[f64], wq: &Nd, wk: &Nd, wv: &Nd, wo: &Nd, eps: f64) -> Nd {
    let [nb, nt, nd] = x.shape[..] else { panic!("X must be rank 3") };
    let [nh, ne, _] = wo.shape[..] else { panic!("Wo must be rank 3") };
    let xn = rmsnorm(x, wn, eps);
    let o = causal(&project(&xn, wq), &project(&xn, wk), &project(&xn, wv));
    let mut y = x.clone();
    for b in 0..nb {
        for t in 0..nt {
            for d in 0..nd {
                let mut s = 0.0;
                for h in 0..nh {
                    for e in 0..ne {
                        s += o.at(&[b, h, t, e]) * wo.at(&[h, e, d]);
                    }
                }
                y.set(&[b, t, d], x.at(&[b, t, d]) + s);
            }
        }
    }
    y
}
