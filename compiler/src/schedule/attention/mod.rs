//! The tiled attention plan for `osm` nodes (FlashAttention-2 style on CPU), and for plain
//! weighted sums `Σ_m w · v` ([`Norm::Sum`]: sigmoid, linear, polynomial attention, retention,
//! any weight free of the output column) on the same tiles without the softmax state.
//!
//! Applies to a node `O[.., t, .., f] = osm m lo hi F (s) (v)` whose last index `f` appears
//! in neither the logit `s` nor the head, with at least one other index. Its *tile index* `t`
//! is the last other index that `v` does not read (the query position `p` of every attention
//! kernel); when `v` reads them all (decode written without a query axis, `O[b, h, f]` from
//! `V[b, m, h, f]`), `t` is the index before `f` and each row of a tile has its own values
//! ([`Rows::Single`]: natural logits computed keys outer, `v` streamed per row, nothing
//! packed):
//!
//! ```text
//! parallel over (other indices × tiles of TP rows of t):
//!   per row: running max, running sum, "any point" flag, accumulator acc[f] (stack)
//!   per row: its bounds lo..hi; the block range is min lo .. max hi (masked blocks skipped)
//!   for each block of TM keys m0..m0+TM:
//!     S = logits of the tile's rows × the block's keys (-inf where masked)
//!     per row: rescale by exp(max_old - max_new); w = exp(S - max_new); acc[f] += w · v(m, f)
//!   O = acc / sum per row (0/0 = 0; NaN when every point's logit is -inf, as the interpreter)
//! ```
//!
//! Two ways to compute `S`, chosen at run time:
//! - **packed** (when the logit is `g(Σ_e A(t, e) · B(m, e))` with `g` elementwise and
//!   enough rows, `T >= PACKED_MIN_ROWS`): a pre-pass stores `B` transposed per (other
//!   indices) as `Bᵀ[e, m]` with padded rows; each tile packs its rows of `A`; the `S` tile is
//!   an outer-product loop over `e` (`S[i, 0..TM] += A[i, e] · Bᵀ[e, m0..m0+TM]`, vectorized
//!   along the keys); `g` and the mask are applied branch-free where they cannot fail;
//! - **natural** otherwise (decode, `p = 1`): each logit evaluated as written, its dot
//!   product over the contracted index vectorized along that index, reading `K` in place.
//!
//! `s` is evaluated once per (row, key), not once per (row, key, f) as the generic plan
//! does. The plan needs `F <= FMAX` (the accumulator is a stack array) and, packed,
//! `E <= EMAX`; the caller emits the generic plan as the run-time fallback.
//!
//! For a GPU ([`Target::Gpu`]) the same analysis feeds [`gpu`]'s block-parallel plan instead
//! ([`dispatch`]), when the logit and the value can be evaluated anywhere without failing
//! ([`fits_target`]).

mod analysis;
mod cpu;
mod dialect;
mod gpu;
mod site;
mod split_k;
mod tensor_core;

pub(super) use analysis::{Norm, Plan, Rows, SINGLE_ROWS, analyze, analyze_at, pure, uses};
pub(super) use site::{EMAX, FMAX, Site, panel_at, panel_read};

use super::lower::{Cx, Def};
use super::{ScheduleError, ScheduleOptions, Target};

/// True if the plan can be emitted for `opts.target`: always on a CPU; on a GPU when the
/// logit is a pure, unfiltered expression and the value is pure (no failure can happen inside
/// a block parallel) — the dot product's factors included — and the logit holds no reduction
/// but its dot product.
pub(super) fn fits_target(plan: &Plan, d: Def<'_>, opts: &ScheduleOptions) -> bool {
    match opts.target {
        Target::Cpu => true,
        // The GPU plans share a block's keys and values between its rows; a single-row plan
        // is not built for them (the generic plan runs it).
        Target::Gpu { .. } => {
            plan.rows == Rows::Shared
                && plan.pure_logit
                && analysis::pure(d, plan.v, None)
                && analysis::only_dot_reduces(d, plan.s, plan.dot.as_ref().map(|x| x.id))
                // The dot product's factors are read inside the block parallel too.
                && plan.dot.as_ref().is_none_or(|x| x.a.iter().chain(&x.b).all(|&f| analysis::pure(d, f, None)))
        }
    }
}

/// Emits the plan for `opts.target` (the CPU's tiles, or the GPU's block parallels: on tensor
/// cores when asked for and the inputs' format allows).
pub(super) fn dispatch(cx: &mut Cx<'_>, site: &Site<'_, '_>, opts: &ScheduleOptions) -> Result<(), ScheduleError> {
    match opts.target {
        Target::Cpu => cpu::emit(cx, site, opts.tile_p, opts.tile_m),
        Target::Gpu { threads, tensor_cores } => {
            let tc = if tensor_cores { tensor_core::kind(site.plan, site.d, site.node) } else { None };
            gpu::emit(cx, site, threads, opts.tile_m, tc)
        }
    }
}
