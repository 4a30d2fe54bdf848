//! Statements → control flow (see [`super::codegen`] for the function layout).
//!
//! Owns what every kind of code shares: `For` (a hidden counter drives the loop, so writes to
//! the loop variable in the body cannot change the iteration count; `hi` is evaluated once, the
//! increment is `nsw` since the counter stays below `hi`), `If`, `Set`, `Store`, and the control
//! flow of `Fail` (record the code, then leave through `exit`). `Parallel`, `BlockParallel`,
//! `Alloc`, `Barrier`, `Mma` and the recording of a failure are the function's
//! [`Lowering`]'s (`super::cpu_lowering` for host kernels).

use inkwell::IntPredicate as IP;

use super::LlvmError;
use super::codegen::{Cg, FnCx, int};
use super::lowering::Lowering;
use crate::schedule::kir::{Block, Stmt};

impl<'ctx> Cg<'ctx, '_> {
    /// Lowers every statement of `block` with lowering `lw`.
    pub(crate) fn block(&mut self, lw: &mut dyn Lowering<'ctx>, fx: &mut FnCx<'ctx>, block: &Block) -> Result<(), LlvmError> {
        block.iter().try_for_each(|s| self.stmt(lw, fx, s))
    }

    fn stmt(&mut self, lw: &mut dyn Lowering<'ctx>, fx: &mut FnCx<'ctx>, s: &Stmt) -> Result<(), LlvmError> {
        match s {
            Stmt::Set { var, value } => {
                let v = self.expr(fx, value)?;
                self.store_var(fx, *var, v)
            }
            Stmt::Store { buf, index, value } => {
                let i = int(self.expr(fx, index)?)?;
                let v = self.expr(fx, value)?;
                self.store_elem(fx, *buf, i, v)
            }
            Stmt::For { var, lo, hi, body } => {
                let lo = int(self.expr(fx, lo)?)?;
                let hi = int(self.expr(fx, hi)?)?;
                self.counted_loop(fx, lo, hi, |cg, fx, i| {
                    cg.store_var(fx, *var, i.into())?;
                    cg.block(lw, fx, body)
                })
            }
            Stmt::Parallel { var, n, body } => lw.parallel(self, fx, *var, n, body),
            Stmt::BlockParallel { var, n, threads, body } => lw.block_parallel(self, fx, *var, n, *threads, body),
            Stmt::If { cond, then, els } => {
                let c = int(self.expr(fx, cond)?)?;
                let bt = self.cx.append_basic_block(fx.f, "then");
                let be = self.cx.append_basic_block(fx.f, "else");
                let merge = self.cx.append_basic_block(fx.f, "endif");
                self.b.build_conditional_branch(c, bt, be)?;
                self.b.position_at_end(bt);
                self.block(lw, fx, then)?;
                self.b.build_unconditional_branch(merge)?;
                self.b.position_at_end(be);
                self.block(lw, fx, els)?;
                self.b.build_unconditional_branch(merge)?;
                self.b.position_at_end(merge);
                Ok(())
            }
            Stmt::Alloc { buf, len, zeroed } => lw.alloc(self, fx, *buf, len, *zeroed),
            Stmt::Barrier => lw.barrier(self, fx),
            Stmt::Mma(m) => lw.mma(self, fx, m),
            Stmt::TileProduct(t) => self.tile_product(fx, t),
            Stmt::Fail { code } => self.fail(lw, fx, *code),
        }
    }

    /// `for i in lo..hi { body(i) }` with a hidden `i64` counter.
    pub(crate) fn counted_loop(
        &mut self,
        fx: &mut FnCx<'ctx>,
        lo: inkwell::values::IntValue<'ctx>,
        hi: inkwell::values::IntValue<'ctx>,
        body: impl FnOnce(&mut Self, &mut FnCx<'ctx>, inkwell::values::IntValue<'ctx>) -> Result<(), LlvmError>,
    ) -> Result<(), LlvmError> {
        let i64t = self.cx.i64_type();
        let ctr = self.alloca(fx, i64t, "i")?;
        self.b.build_store(ctr, lo)?;
        let cond = self.cx.append_basic_block(fx.f, "for.cond");
        let bb = self.cx.append_basic_block(fx.f, "for.body");
        let after = self.cx.append_basic_block(fx.f, "for.end");
        self.b.build_unconditional_branch(cond)?;
        self.b.position_at_end(cond);
        let i = int(self.b.build_load(i64t, ctr, "i")?)?;
        let c = self.b.build_int_compare(IP::SLT, i, hi, "")?;
        self.b.build_conditional_branch(c, bb, after)?;
        self.b.position_at_end(bb);
        body(self, fx, i)?;
        let i = int(self.b.build_load(i64t, ctr, "i")?)?;
        let next = self.b.build_int_nsw_add(i, i64t.const_int(1, false), "i.next")?;
        self.b.build_store(ctr, next)?;
        self.b.build_unconditional_branch(cond)?;
        self.b.position_at_end(after);
        Ok(())
    }

    /// Stops with `code`: `lw` records it, then the function is left through `exit`.
    pub(crate) fn fail(&mut self, lw: &mut dyn Lowering<'ctx>, fx: &mut FnCx<'ctx>, code: u32) -> Result<(), LlvmError> {
        lw.record_failure(self, fx, code)?;
        self.b.build_unconditional_branch(fx.exit)?;
        self.dead_block(fx);
        Ok(())
    }

    /// Branches to a failure with `code` when `bad`, else continues.
    pub(crate) fn fail_if(
        &mut self,
        lw: &mut dyn Lowering<'ctx>,
        fx: &mut FnCx<'ctx>,
        bad: inkwell::values::IntValue<'ctx>,
        code: u32,
    ) -> Result<(), LlvmError> {
        let fail = self.cx.append_basic_block(fx.f, "fail");
        let ok = self.cx.append_basic_block(fx.f, "ok");
        self.b.build_conditional_branch(bad, fail, ok)?;
        self.b.position_at_end(fail);
        self.fail(lw, fx, code)?;
        // The dead block after the failure is never entered.
        self.b.build_unreachable()?;
        self.b.position_at_end(ok);
        Ok(())
    }
}
