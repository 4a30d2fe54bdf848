//! The standard library (`lib/*.tfm`) run in the interpreter against independent f64
//! references (`tfmc_conformance::reference`), on seeded random inputs of several shapes
//! (including size 1 and odd sizes), plus the equivalences between kernels (parallel ≡
//! recurrent forms) and the structural properties of masks (causal rows, windows, packed
//! sequences, fully masked rows).

#[path = "lib_kernels/files.rs"]
mod files;
#[path = "lib_kernels/model.rs"]
mod model;
#[path = "lib_kernels/paged.rs"]
mod paged;
#[path = "lib_kernels/recurrent.rs"]
mod recurrent;
#[path = "lib_kernels/softmax.rs"]
mod softmax;
#[path = "lib_kernels/variants.rs"]
mod variants;
#[path = "lib_kernels/varlen.rs"]
mod varlen;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tfmc_conformance::reference::Nd;
use tfmc_conformance::{Tol, rand_nd};

/// Tolerance against the f64 references: 1e-9 relative to the output's magnitude. The
/// kernels run through `interp::run_exact`, so outputs are the oracle's unrounded f64 values.
pub const TOL: Tol = Tol::rel(1e-9);

/// Attention shapes `[B, H, P, M, E, F]`: all-ones, odd sizes, P < M and P > M.
pub const SHAPES: [[usize; 6]; 5] =
    [[1, 1, 1, 1, 1, 1], [1, 2, 7, 7, 3, 5], [2, 3, 13, 13, 4, 2], [1, 1, 7, 13, 5, 3], [2, 1, 13, 7, 2, 4]];

/// Self-attention shapes `[B, H, T, E, F]` for the recurrent forms (P = M = T).
pub const SEQ_SHAPES: [[usize; 5]; 4] = [[1, 1, 1, 1, 1], [1, 2, 7, 3, 5], [2, 3, 13, 4, 2], [1, 1, 13, 1, 7]];

/// A seeded RNG, distinct per test and shape.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// Random Q [B,H,P,E], K [B,H,M,E], V [B,H,M,F] with entries in [-1, 1).
pub fn qkv(rng: &mut StdRng, [b, h, p, m, e, f]: [usize; 6]) -> (Nd, Nd, Nd) {
    (rand_nd(rng, &[b, h, p, e], -1.0, 1.0), rand_nd(rng, &[b, h, m, e], -1.0, 1.0), rand_nd(rng, &[b, h, m, f], -1.0, 1.0))
}
