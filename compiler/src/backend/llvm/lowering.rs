//! [`Lowering`]: the one seam between this backend's shared lowering (expressions, `Set`,
//! `Store`, `For`, `If`, the `Fail` control flow; [`super::stmt`]) and what depends on the
//! kind of code being built. [`super::cpu_lowering::CpuFn`] implements it for host kernels
//! (outlined parallel loops on the thread pool, `calloc` heap buffers, the return code); a
//! device backend built on this core implements it for its entry points (launch protocol,
//! blocks of threads, barriers, tensor-core products). The core never names a device
//! implementation.
//!
//! Contract: a hook is called with the builder positioned at the end of an unterminated block
//! of `fx` and leaves it so (as every statement does, [`super::codegen`]); a hook that lowers
//! a body recurses through [`Cg::block`] with itself (or the lowering of the function it
//! outlines the body into). Buffers a kind of code provides itself (shared memory) are bound in
//! [`FnCx::bufs`] by whoever begins the function; the core allocates only stack buffers.

use super::LlvmError;
use super::codegen::{Cg, FnCx};
use crate::schedule::kir::{Block, Buf, Expr, Mma, Var};

/// How the statements whose meaning depends on where the code runs are lowered in one
/// function (see the module docs). One value per function being built; it holds that
/// function's state (return and error slots, launch-protocol arrays, counters).
pub(crate) trait Lowering<'ctx> {
    /// `Parallel { var, n, body }`.
    fn parallel(&mut self, cg: &mut Cg<'ctx, '_>, fx: &mut FnCx<'ctx>, var: Var, n: &Expr, body: &Block) -> Result<(), LlvmError>;

    /// `BlockParallel { var, n, threads, body }` (GPU dialect).
    fn block_parallel(
        &mut self,
        cg: &mut Cg<'ctx, '_>,
        fx: &mut FnCx<'ctx>,
        var: Var,
        n: &Expr,
        threads: u32,
        body: &Block,
    ) -> Result<(), LlvmError>;

    /// `Alloc { buf, len, zeroed }`.
    fn alloc(&mut self, cg: &mut Cg<'ctx, '_>, fx: &mut FnCx<'ctx>, buf: Buf, len: &Expr, zeroed: bool) -> Result<(), LlvmError>;

    /// Records failure `code` (the kernel's result); the caller then leaves through the
    /// function's exit ([`Cg::fail`]).
    fn record_failure(&mut self, cg: &mut Cg<'ctx, '_>, fx: &mut FnCx<'ctx>, code: u32) -> Result<(), LlvmError>;

    /// `Barrier` (GPU dialect).
    fn barrier(&mut self, cg: &mut Cg<'ctx, '_>, fx: &mut FnCx<'ctx>) -> Result<(), LlvmError>;

    /// `Mma` (GPU dialect).
    fn mma(&mut self, cg: &mut Cg<'ctx, '_>, fx: &mut FnCx<'ctx>, m: &Mma) -> Result<(), LlvmError>;
}
