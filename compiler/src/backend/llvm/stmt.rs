//! Statements → control flow (see [`super::codegen`] for the function layout).
//!
//! Owns: `For` (a hidden counter drives the loop, so writes to the loop variable in the body
//! cannot change the iteration count; `hi` is evaluated once, the increment is `nsw` since the
//! counter stays below `hi`), `If`, `Set`, `Store`, `Alloc` (free any previous allocation of
//! the buffer, then an overflow-checked `calloc(max(len, 1), size)`; a negative length, a byte
//! size above `i64::MAX` or a NULL result fail with `OutOfMemory` at site 0) and `Fail` (kernel:
//! store the code and leave through `exit`; parallel body: `cmpxchg err, 0, code` so the first
//! failure wins, then return). `Parallel` is in [`super::outline`]. In a GPU entry
//! ([`FnKind::Device`]) `Parallel`, `Alloc`, the recording of a `Fail` and the GPU dialect's
//! barrier follow the launch protocol instead (`crate::backend::nvptx::lower`).

use inkwell::attributes::AttributeLoc;
use inkwell::{AtomicOrdering, IntPredicate as IP};

use super::LlvmError;
use super::codegen::{BufLoc, Cg, FnCx, FnKind, int, internal};
use crate::schedule::kir::{Block, FailKind, Stmt, fail_code};

impl<'ctx> Cg<'ctx, '_> {
    /// Lowers every statement of `block`.
    pub(crate) fn block(&mut self, fx: &mut FnCx<'ctx>, block: &Block) -> Result<(), LlvmError> {
        block.iter().try_for_each(|s| self.stmt(fx, s))
    }

    fn stmt(&mut self, fx: &mut FnCx<'ctx>, s: &Stmt) -> Result<(), LlvmError> {
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
                    cg.block(fx, body)
                })
            }
            Stmt::Parallel { var, n, body } if matches!(fx.kind, FnKind::Device(_)) => self.device_parallel(fx, *var, n, None, body),
            Stmt::Parallel { var, n, body } => self.parallel(fx, *var, n, body),
            Stmt::BlockParallel { var, n, threads, body } if matches!(fx.kind, FnKind::Device(_)) => {
                self.device_parallel(fx, *var, n, Some(*threads), body)
            }
            // GPU dialect only: `validate::check` rejects it in CPU kernels.
            Stmt::BlockParallel { .. } => Err(internal("a block parallel (GPU dialect) in a CPU kernel")),
            Stmt::Barrier if matches!(fx.kind, FnKind::Device(_)) => self.device_barrier(fx),
            Stmt::Barrier => Err(internal("a barrier (GPU dialect) in a CPU kernel")),
            Stmt::If { cond, then, els } => {
                let c = int(self.expr(fx, cond)?)?;
                let bt = self.cx.append_basic_block(fx.f, "then");
                let be = self.cx.append_basic_block(fx.f, "else");
                let merge = self.cx.append_basic_block(fx.f, "endif");
                self.b.build_conditional_branch(c, bt, be)?;
                self.b.position_at_end(bt);
                self.block(fx, then)?;
                self.b.build_unconditional_branch(merge)?;
                self.b.position_at_end(be);
                self.block(fx, els)?;
                self.b.build_unconditional_branch(merge)?;
                self.b.position_at_end(merge);
                Ok(())
            }
            Stmt::Alloc { buf, len } if matches!(fx.kind, FnKind::Device(_)) => self.device_alloc(fx, *buf, len),
            Stmt::Alloc { buf, len } => {
                let len = int(self.expr(fx, len)?)?;
                self.alloc(fx, *buf, len)
            }
            Stmt::Mma(m) if matches!(fx.kind, FnKind::Device(_)) => self.device_mma(fx, m),
            // GPU dialect only: `validate::check` rejects it in CPU kernels.
            Stmt::Mma(_) => Err(internal("a tensor-core product (GPU dialect) in a CPU kernel")),
            Stmt::Fail { code } => self.fail(fx, *code),
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

    /// Stops with `code`: see the module docs.
    pub(crate) fn fail(&mut self, fx: &mut FnCx<'ctx>, code: u32) -> Result<(), LlvmError> {
        let i32t = self.cx.i32_type();
        let k = i32t.const_int(u64::from(code), false);
        match &fx.kind {
            FnKind::Kernel { ret, .. } => {
                self.b.build_store(*ret, k)?;
            }
            FnKind::Body { err } => {
                self.b.build_cmpxchg(*err, i32t.const_zero(), k, AtomicOrdering::Monotonic, AtomicOrdering::Monotonic)?;
            }
            FnKind::Device(d) => self.device_record_failure(d, code)?,
        }
        self.b.build_unconditional_branch(fx.exit)?;
        self.dead_block(fx);
        Ok(())
    }

    /// Branches to a failure with `code` when `bad`, else continues.
    pub(crate) fn fail_if(&mut self, fx: &mut FnCx<'ctx>, bad: inkwell::values::IntValue<'ctx>, code: u32) -> Result<(), LlvmError> {
        let fail = self.cx.append_basic_block(fx.f, "fail");
        let ok = self.cx.append_basic_block(fx.f, "ok");
        self.b.build_conditional_branch(bad, fail, ok)?;
        self.b.position_at_end(fail);
        self.fail(fx, code)?;
        // The dead block after the failure is never entered.
        self.b.build_unreachable()?;
        self.b.position_at_end(ok);
        Ok(())
    }

    fn alloc(
        &mut self,
        fx: &mut FnCx<'ctx>,
        buf: crate::schedule::kir::Buf,
        len: inkwell::values::IntValue<'ctx>,
    ) -> Result<(), LlvmError> {
        let Some(&BufLoc::Slot(slot)) = fx.bufs.get(&buf) else {
            return Err(internal("alloc of a buffer without a heap slot"));
        };
        let i64t = self.cx.i64_type();
        let ptr = self.ptr_type();
        let oom = fail_code(FailKind::OutOfMemory, 0);
        let neg = self.b.build_int_compare(IP::SLT, len, i64t.const_zero(), "")?;
        self.fail_if(fx, neg, oom)?;
        let one = i64t.const_int(1, false);
        let smax = self.intrinsic("llvm.smax", &[i64t.into()])?;
        let n = int(self.call(smax, &[len.into(), one.into()])?)?;
        let size = i64t.const_int(self.func.buf(buf).elem.size(), false);
        let mul = self.intrinsic("llvm.smul.with.overflow", &[i64t.into()])?;
        let r = self.call(mul, &[n.into(), size.into()])?.into_struct_value();
        let over = int(self.b.build_extract_value(r, 1, "")?)?;
        self.fail_if(fx, over, oom)?;
        let free = self.extern_fn("free", None, &[ptr.into()]);
        let old = self.b.build_load(ptr, slot, "")?;
        self.b.build_call(free, &[old.into()], "")?;
        self.b.build_store(slot, ptr.const_null())?;
        let calloc = self.extern_fn("calloc", Some(ptr.into()), &[i64t.into(), i64t.into()]);
        self.attr(calloc, AttributeLoc::Return, "noalias");
        let p = self.call(calloc, &[n.into(), size.into()])?.into_pointer_value();
        let null = self.b.build_is_null(p, "")?;
        self.fail_if(fx, null, oom)?;
        self.b.build_store(slot, p)?;
        Ok(())
    }
}
