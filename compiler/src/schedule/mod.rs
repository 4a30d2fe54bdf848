//! The schedule: turns an optimized IR cascade into [`kir`], a loop nest with tiles,
//! parallel loops and local buffers, kept apart from the algorithm (Halide-style). Every
//! backend translates the same KIR.
//!
//! Entry point: [`schedule`]. Per node of the cascade, in order, one plan:
//! - [`attention`]: an `osm` whose logit is a dot product over a contracted index (the
//!   softmax-attention family) runs FlashAttention-style: rows of `p` in tiles, key blocks
//!   packed into local buffers, a register-blocked `Q·Kᵀ` tile, the online softmax with the
//!   running max/sum per row, the `P·V` tile into an accumulator; masked key blocks skipped
//!   from the loop bounds; parallel over (outer indices × row tiles).
//! - otherwise the generic plan ([`nodes`]): parallel over all but the innermost index (a
//!   scan: all but the scanned and the innermost index), the innermost index as the inner
//!   loop, reductions as loops inside.
//!
//! Dims and params are run-time values (one artifact serves every size). Invariants of the
//! result: it satisfies KIR's module contract; every read is in bounds (checked or proved);
//! parallel iterations write disjoint points.

pub mod arith;
pub mod attention;
pub mod build;
mod columns;
mod common;
pub mod expand;
mod fused_scan;
mod hoist;
pub mod kir;
pub mod lower;
pub mod nodes;
pub mod print;
pub mod reduce;
pub mod uses;
pub mod validate;

use crate::hir::{DType, Program};
use crate::ir::{Cascade, Size};

/// How to schedule.
#[derive(Clone, Debug)]
pub struct ScheduleOptions {
    /// Use the tiled attention plan where it applies.
    pub attention: bool,
    /// Rows of `p` per attention tile.
    pub tile_p: u32,
    /// Keys per attention block.
    pub tile_m: u32,
    /// What the schedule is for.
    pub target: Target,
}

/// What a schedule is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The CPU backends: plain KIR.
    Cpu,
    /// The NVPTX backend: the attention plan becomes `attention::gpu`'s block-parallel plan
    /// (KIR's GPU dialect) with blocks of `threads` threads (a positive multiple of 32).
    Gpu {
        /// Threads per block (rows of `p` per block).
        threads: u32,
        /// Use tensor-core products (`Stmt::Mma`, sm_80+) for attention whose inputs are all
        /// f16 or all bf16 (`attention::tensor_core`).
        tensor_cores: bool,
    },
}

impl Default for ScheduleOptions {
    fn default() -> ScheduleOptions {
        ScheduleOptions { attention: true, tile_p: 18, tile_m: 256, target: Target::Cpu }
    }
}

/// Why a cascade cannot be scheduled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// No kernel of that name.
    #[error("unknown kernel '{name}'")]
    UnknownKernel {
        /// The name.
        name: String,
    },
    /// A param the kernel uses has no value to put in the manifest.
    #[error("param '{name}' has no default; pass --param {name}=VALUE")]
    MissingParam {
        /// The param.
        name: String,
    },
    /// A broken IR invariant.
    #[error("internal error: {what} (at {loc})")]
    Internal {
        /// What went wrong.
        what: String,
        /// Where.
        loc: String,
    },
}

/// A tensor argument of a scheduled kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct ArgInfo {
    /// Name.
    pub name: String,
    /// Dtype.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<Size>,
}

/// A scheduled kernel: its KIR and what its ABI carries.
#[derive(Clone, Debug)]
pub struct Scheduled {
    /// The loop nest.
    pub func: kir::Func,
    /// Inputs, in argument order (`bufs[0..]`).
    pub inputs: Vec<ArgInfo>,
    /// Outputs (`bufs[inputs.len()..]`).
    pub outputs: Vec<ArgInfo>,
    /// Symbolic dims in ABI order.
    pub dims: Vec<String>,
    /// Product dims (computed in the kernel from `dims`, not passed).
    pub products: Vec<crate::ir::ProductDim>,
    /// Params in ABI order: `ParamId` index, name, dtype.
    pub params: Vec<(usize, String, DType)>,
    /// One line per node saying which plan it got (for `tfmc explain`).
    pub plan: Vec<String>,
}

/// Schedules cascade `c` (optimized from kernel `c.name` of `program`).
pub fn schedule(program: &Program, c: &Cascade, opts: &ScheduleOptions) -> Result<Scheduled, ScheduleError> {
    crate::with_stack(|| nodes::schedule_cascade(program, c, opts))
}

#[cfg(test)]
mod tests;
