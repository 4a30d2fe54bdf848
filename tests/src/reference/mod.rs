//! Independent reference implementations of the `lib/` kernels: plain f64 loops over plain
//! row-major arrays, written straight from the papers' formulas (cited on each function), with
//! no dependence on tfmc. Softmaxes subtract the row max before `exp`; a row with no unmasked
//! key gives 0 (the language's filter semantics: empty sum 0, `0 / 0 = 0`).

// The references are deliberately written as explicit index loops, like the formulas.
#![allow(clippy::needless_range_loop)]

mod attention;
mod model;
mod recurrent;
#[cfg(test)]
mod selftest;
mod variants;

pub use attention::{alibi, causal, gqa, l2_attention, mqa, sdpa, softcap, softmax_attention, varlen_causal, window};
pub use model::{block, rmsnorm};
pub use recurrent::{linear, linear_causal, retention, selective_scan};
pub use variants::{diff_attention, flow_attention, graph_attention, pattention, sigmoid_attention, sink_attention, stick_breaking};

/// A dense row-major f64 array.
#[derive(Clone, Debug, PartialEq)]
pub struct Nd {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Nd {
    /// An all-zero array of `shape`.
    pub fn zeros(shape: &[usize]) -> Nd {
        Nd { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] }
    }

    /// An array from a shape and its row-major data (panics when the lengths disagree).
    pub fn new(shape: &[usize], data: Vec<f64>) -> Nd {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "Nd::new: shape {shape:?}");
        Nd { shape: shape.to_vec(), data }
    }

    /// The row-major offset of a multi-index (bounds-checked on every axis).
    pub fn offset(&self, ix: &[usize]) -> usize {
        assert_eq!(ix.len(), self.shape.len(), "rank mismatch: {ix:?} vs {:?}", self.shape);
        let mut off = 0;
        for (&i, &n) in ix.iter().zip(&self.shape) {
            assert!(i < n, "index {ix:?} out of bounds for shape {:?}", self.shape);
            off = off * n + i;
        }
        off
    }

    /// The element at a multi-index.
    pub fn at(&self, ix: &[usize]) -> f64 {
        self.data[self.offset(ix)]
    }

    /// Sets the element at a multi-index.
    pub fn set(&mut self, ix: &[usize], v: f64) {
        let o = self.offset(ix);
        self.data[o] = v;
    }
}

/// Softmax-weighted average of value rows: `logits[m]` is `None` for a masked key. Returns
/// `sum_m w_m value(m, f) / sum_m w_m` with `w_m = exp(l_m - max_m l_m)`, or all zeros when every
/// key is masked.
pub fn softmax_row(logits: &[Option<f64>], nf: usize, value: impl Fn(usize, usize) -> f64) -> Vec<f64> {
    let mx = logits.iter().flatten().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut out = vec![0.0; nf];
    if mx == f64::NEG_INFINITY {
        return out; // fully masked row
    }
    let mut den = 0.0;
    for (m, l) in logits.iter().enumerate() {
        let Some(l) = l else { continue };
        let w = (l - mx).exp();
        den += w;
        for (f, o) in out.iter_mut().enumerate() {
            *o += w * value(m, f);
        }
    }
    for o in &mut out {
        *o /= den;
    }
    out
}

/// `sum_e a(e) * b(e)`.
pub fn dot(n: usize, a: impl Fn(usize) -> f64, b: impl Fn(usize) -> f64) -> f64 {
    (0..n).map(|e| a(e) * b(e)).sum()
}
