//! The host kernels' [`Lowering`]: [`CpuFn`], the state of the kernel function or of an
//! outlined parallel body.
//!
//! Owns: `Alloc` (free any previous allocation of the buffer, then an overflow-checked
//! `tfmc_calloc(max(len, 1), size)` (`tfmc_malloc` for a buffer that need not be zeroed; the runtime's heap: `tfmc_runtime::heap` for the JIT, `tfmc_rt.c` in artifacts; large blocks cached across calls); a negative length, a byte size above `i64::MAX` or a NULL
//! result fail with `OutOfMemory` at site 0) and the recording of a `Fail` (kernel: store the
//! code in `ret`; parallel body: `cmpxchg err, 0, code` so the first failure wins). `Parallel`
//! is outlined by [`super::outline`]. The GPU dialect (block parallels, barriers, tensor-core
//! products) is invalid here: `validate::check` rejects it first, and the hooks return an
//! internal error should one get through.

use inkwell::attributes::AttributeLoc;
use inkwell::values::{IntValue, PointerValue};
use inkwell::{AtomicOrdering, IntPredicate as IP};

use super::LlvmError;
use super::codegen::{BufLoc, Cg, FnCx, int, internal};
use super::lowering::Lowering;
use crate::schedule::kir::{Block, Buf, Expr, FailKind, Mma, Var, fail_code};

/// The function a host statement is lowered in.
pub(crate) enum CpuFn<'ctx> {
    /// The kernel function: `ret` holds the return code; `err` is the error slot shared with
    /// parallel bodies; `heap` the slots of every heap buffer (freed at exit); `n_par` the
    /// parallel loops outlined so far (names the next body).
    Kernel { ret: PointerValue<'ctx>, err: PointerValue<'ctx>, heap: Vec<PointerValue<'ctx>>, n_par: usize },
    /// An outlined parallel body: a failure is recorded in `*err` (first one wins).
    Body { err: PointerValue<'ctx> },
}

/// The error for construct `what` of the GPU dialect in a host kernel.
fn gpu_dialect(what: &str) -> LlvmError {
    internal(&format!("{what} (GPU dialect) in a CPU kernel"))
}

impl<'ctx> Lowering<'ctx> for CpuFn<'ctx> {
    fn parallel(&mut self, cg: &mut Cg<'ctx, '_>, fx: &mut FnCx<'ctx>, var: Var, n: &Expr, body: &Block) -> Result<(), LlvmError> {
        let CpuFn::Kernel { ret, err, n_par, .. } = self else {
            return Err(internal("parallel loop outside the kernel function"));
        };
        let k = *n_par;
        *n_par += 1;
        cg.parallel(fx, (*ret, *err), k, var, n, body)
    }

    fn block_parallel(&mut self, _: &mut Cg<'ctx, '_>, _: &mut FnCx<'ctx>, _: Var, _: &Expr, _: u32, _: &Block) -> Result<(), LlvmError> {
        Err(gpu_dialect("a block parallel"))
    }

    fn alloc(&mut self, cg: &mut Cg<'ctx, '_>, fx: &mut FnCx<'ctx>, buf: Buf, len: &Expr, zeroed: bool) -> Result<(), LlvmError> {
        let len = int(cg.expr(fx, len)?)?;
        cg.heap_alloc(self, fx, buf, len, zeroed)
    }

    fn record_failure(&mut self, cg: &mut Cg<'ctx, '_>, _: &mut FnCx<'ctx>, code: u32) -> Result<(), LlvmError> {
        let i32t = cg.cx.i32_type();
        let k = i32t.const_int(u64::from(code), false);
        match self {
            CpuFn::Kernel { ret, .. } => {
                cg.b.build_store(*ret, k)?;
            }
            CpuFn::Body { err } => {
                cg.b.build_cmpxchg(*err, i32t.const_zero(), k, AtomicOrdering::Monotonic, AtomicOrdering::Monotonic)?;
            }
        }
        Ok(())
    }

    fn barrier(&mut self, _: &mut Cg<'ctx, '_>, _: &mut FnCx<'ctx>) -> Result<(), LlvmError> {
        Err(gpu_dialect("a barrier"))
    }

    fn mma(&mut self, _: &mut Cg<'ctx, '_>, _: &mut FnCx<'ctx>, _: &Mma) -> Result<(), LlvmError> {
        Err(gpu_dialect("a tensor-core product"))
    }
}

impl<'ctx> Cg<'ctx, '_> {
    /// `Alloc` of heap buffer `buf` with `len` elements: see the module docs.
    fn heap_alloc(
        &mut self,
        lw: &mut CpuFn<'ctx>,
        fx: &mut FnCx<'ctx>,
        buf: Buf,
        len: IntValue<'ctx>,
        zeroed: bool,
    ) -> Result<(), LlvmError> {
        let Some(&BufLoc::Slot(slot)) = fx.bufs.get(&buf) else {
            return Err(internal("alloc of a buffer without a heap slot"));
        };
        let i64t = self.cx.i64_type();
        let ptr = self.ptr_type();
        let oom = fail_code(FailKind::OutOfMemory, 0);
        let neg = self.b.build_int_compare(IP::SLT, len, i64t.const_zero(), "")?;
        self.fail_if(lw, fx, neg, oom)?;
        let one = i64t.const_int(1, false);
        let smax = self.intrinsic("llvm.smax", &[i64t.into()])?;
        let n = int(self.call(smax, &[len.into(), one.into()])?)?;
        let size = i64t.const_int(self.func.buf(buf).elem.size(), false);
        let mul = self.intrinsic("llvm.smul.with.overflow", &[i64t.into()])?;
        let r = self.call(mul, &[n.into(), size.into()])?.into_struct_value();
        let over = int(self.b.build_extract_value(r, 1, "")?)?;
        self.fail_if(lw, fx, over, oom)?;
        let free = self.extern_fn("tfmc_free", None, &[ptr.into()]);
        let old = self.b.build_load(ptr, slot, "")?;
        self.b.build_call(free, &[old.into()], "")?;
        self.b.build_store(slot, ptr.const_null())?;
        let name = if zeroed { "tfmc_calloc" } else { "tfmc_malloc" };
        let alloc = self.extern_fn(name, Some(ptr.into()), &[i64t.into(), i64t.into()]);
        self.attr(alloc, AttributeLoc::Return, "noalias");
        let p = self.call(alloc, &[n.into(), size.into()])?.into_pointer_value();
        let null = self.b.build_is_null(p, "")?;
        self.fail_if(lw, fx, null, oom)?;
        self.b.build_store(slot, p)?;
        Ok(())
    }
}
