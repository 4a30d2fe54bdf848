//! One export → the launch protocol's entry points (`S_prep`, `S_seg{k}`; see the module docs
//! of [`super`]), built with the LLVM backend's lowering ([`Cg`]): this file only adds what
//! differs on a device — the entries, [`DeviceFn`] (the device's implementation of the LLVM
//! core's [`Lowering`]: `Parallel`, `Alloc`, recording a `Fail`, and through
//! [`super::block`] the GPU dialect), and where thread coordinates come from.
//!
//! Layout of entry `E` of export `S` (the KIR already went through [`super::spine`]):
//! - `void S_E(ptr g bufs, ptr g dims, ptr g params, ptr g heap, ptr g status[, i32 tid, i32 ntid,
//!   i32 ctaid, i32 nctaid, ptr ctx])` (`g` = the global address space; the four ids and the
//!   emulation's per-block context `ctx` (`super::block`) only with [`ThreadIds::Params`], else
//!   read from `llvm.nvvm.read.ptx.sreg.*.x`; PTX kernel calling convention with
//!   [`ThreadIds::Sreg`]): loads the argument and heap buffer pointers (segments
//!   only), dims and params (as the CPU packed entry), and calls
//! - `internal void S_E.body(ptr g noalias a.., ptr g noalias heap.., i64 dims.., params..,
//!   ptr g status, i32 ids..)`: the kernel body, lowered with a [`DeviceFn`] (buffer
//!   pointers `noalias` as in the CPU kernel function: outputs overlap nothing, heap buffers
//!   are distinct allocations). O3 inlines it into the entry.
//!
//! In `prep`: dims are checked `>= 0` first (`BadDims`, as the CPU packed entry); `Alloc`
//! checks the length and writes it to `status[1 + h]`; the `k`-th `Parallel` writes
//! `max(n, 0)` to `status[1 + H + k]` and skips its body; `Fail` stores its code in `status[0]`.
//! In `seg{k}`: `Alloc` does nothing (heap pointers come from `heap`); `Parallel`s other than
//! the `k`-th are skipped; the `k`-th returns at once if `status[0] != 0`, else runs a
//! grid-stride loop over its iterations (each iteration starts from the variable values the
//! spine left, as an outlined CPU body does), then returns; `Fail` is a 64-bit
//! compare-and-swap of `status[0]` from 0 (first failure wins), then return. The GPU dialect's
//! block parallels, barriers and shared buffers are lowered in `super::block`.

use inkwell::attributes::AttributeLoc;
use inkwell::module::Linkage;
use inkwell::types::BasicMetadataTypeEnum;
use inkwell::values::{BasicMetadataValueEnum, BasicValue, BasicValueEnum, FunctionValue, IntValue, PointerValue};
use inkwell::{AddressSpace, AtomicOrdering, IntPredicate as IP};

use crate::backend::llvm::LlvmError;
use crate::backend::llvm::codegen::{BufLoc, Cg, FnCx, int, internal};
use crate::backend::llvm::lowering::Lowering;
use crate::backend::llvm::types;
use crate::schedule::kir::{Block, Buf, BufKind, Expr, FailKind, Mma, Var, fail_code};
use crate::schedule::uses::Uses;

/// Where a GPU thread's coordinates (`tid.x`, `ntid.x`, `ctaid.x`, `nctaid.x`) come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadIds {
    /// PTX special registers (`llvm.nvvm.read.ptx.sreg.*`): real GPU code.
    Sreg,
    /// Four extra `i32` entry parameters, in that order: the CPU emulation.
    Params,
}

/// How entries are built for one kind of code.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Flavor {
    /// Thread coordinates.
    pub(crate) ids: ThreadIds,
    /// Address space of device memory (1 = global on NVPTX, 0 on the host).
    pub(crate) global: AddressSpace,
}

/// Which entry a device function is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// `S_prep`.
    Prep,
    /// `S_seg{k}`.
    Seg(usize),
}

impl Role {
    /// The entry's name for export symbol `symbol`.
    pub(crate) fn entry(self, symbol: &str) -> String {
        match self {
            Role::Prep => format!("{symbol}_prep"),
            Role::Seg(k) => format!("{symbol}_seg{k}"),
        }
    }
}

/// The state of an entry's body function, and the device's [`Lowering`] (see the module
/// docs).
pub(crate) struct DeviceFn<'ctx> {
    /// The `status` array (`i64` slots).
    pub(super) status: PointerValue<'ctx>,
    /// Which entry this is.
    role: Role,
    /// Number of heap buffers (`H`).
    n_heap: usize,
    /// `tid.x, ntid.x, ctaid.x, nctaid.x` (`i32`).
    pub(super) ids: [IntValue<'ctx>; 4],
    /// The emulation's per-block context ([`ThreadIds::Params`] only; see `super::block`).
    pub(super) ctx: Option<PointerValue<'ctx>>,
    /// Parallel loops and block parallels lowered so far: the segment number of the next one
    /// (pre-order, as `spine::count_parallel` counts).
    n_seg: usize,
}

impl<'ctx> Lowering<'ctx> for DeviceFn<'ctx> {
    fn parallel(&mut self, cg: &mut Cg<'ctx, '_>, fx: &mut FnCx<'ctx>, var: Var, n: &Expr, body: &Block) -> Result<(), LlvmError> {
        cg.device_parallel(self, fx, var, n, None, body)
    }

    fn block_parallel(
        &mut self,
        cg: &mut Cg<'ctx, '_>,
        fx: &mut FnCx<'ctx>,
        var: Var,
        n: &Expr,
        threads: u32,
        body: &Block,
    ) -> Result<(), LlvmError> {
        cg.device_parallel(self, fx, var, n, Some(threads), body)
    }

    fn alloc(&mut self, cg: &mut Cg<'ctx, '_>, fx: &mut FnCx<'ctx>, buf: Buf, len: &Expr, _zeroed: bool) -> Result<(), LlvmError> {
        // Device buffers are always zeroed (the host's zeroing is one memset per launch).
        cg.device_alloc(self, fx, buf, len)
    }

    fn record_failure(&mut self, cg: &mut Cg<'ctx, '_>, _: &mut FnCx<'ctx>, code: u32) -> Result<(), LlvmError> {
        cg.device_record_failure(self, code)
    }

    fn barrier(&mut self, cg: &mut Cg<'ctx, '_>, _: &mut FnCx<'ctx>) -> Result<(), LlvmError> {
        cg.device_barrier(self.ctx)
    }

    fn mma(&mut self, cg: &mut Cg<'ctx, '_>, fx: &mut FnCx<'ctx>, m: &Mma) -> Result<(), LlvmError> {
        cg.device_mma(self.ctx, fx, m)
    }
}

/// Emits every entry of the export `func`/`symbol` (spine already transformed) into
/// `cg`'s module; `n_seg` is its number of `Parallel`s.
/// `block` is the export's threads per block (the entries' `.maxntid` on NVPTX).
pub(crate) fn emit_entries(cg: &mut Cg<'_, '_>, flavor: Flavor, n_seg: usize, block: u32) -> Result<Vec<String>, LlvmError> {
    let mut names = Vec::new();
    for role in std::iter::once(Role::Prep).chain((0..n_seg).map(Role::Seg)) {
        let body = cg.device_body(role, flavor)?;
        names.push(cg.device_entry(role, body, flavor, block)?);
    }
    Ok(names)
}

impl<'ctx> Cg<'ctx, '_> {
    fn global_ptr(&self, flavor: Flavor) -> inkwell::types::PointerType<'ctx> {
        self.cx.ptr_type(flavor.global)
    }

    /// The heap buffers' positions in `Func::bufs`, in order (`h` = index in this list).
    fn heap_bufs(&self) -> Vec<Buf> {
        (0..self.func.bufs.len()).filter(|&i| self.func.bufs[i].kind == BufKind::Heap).map(|i| Buf(i as u32)).collect()
    }

    /// `S_E.body`: see the module docs.
    fn device_body(&mut self, role: Role, flavor: Flavor) -> Result<FunctionValue<'ctx>, LlvmError> {
        let f = self.func;
        let gp = self.global_ptr(flavor);
        let (i32t, i64t) = (self.cx.i32_type(), self.cx.i64_type());
        let heap = self.heap_bufs();
        let n_ptrs = match role {
            Role::Prep => 0,
            Role::Seg(_) => f.n_args + heap.len(),
        };
        let mut params: Vec<BasicMetadataTypeEnum<'ctx>> = (0..n_ptrs).map(|_| gp.into()).collect();
        params.extend(f.dims.iter().map(|_| BasicMetadataTypeEnum::from(i64t)));
        params.extend(self.param_tys().into_iter().map(|t| BasicMetadataTypeEnum::from(types::value(self.cx, t))));
        params.push(gp.into());
        params.extend((0..4).map(|_| BasicMetadataTypeEnum::from(i32t)));
        if flavor.ids == ThreadIds::Params {
            params.push(self.ptr_type().into());
        }
        let ty = self.cx.void_type().fn_type(&params, false);
        let name = format!("{}.body", role.entry(self.symbol));
        let func = self.add_function(&name, ty, Some(Linkage::Internal));
        for j in 0..n_ptrs {
            self.attr(func, AttributeLoc::Param(j as u32), "noalias");
        }
        if crate::schedule::kir::gpu::uses_dialect(f) {
            // Barriers are convergent: no transform may make them control-dependent.
            self.attr(func, AttributeLoc::Function, "convergent");
        }
        let p = func.get_params();
        let status_at = n_ptrs + f.dims.len() + f.params.len();
        let status = p[status_at].into_pointer_value();
        let ids = [int(p[status_at + 1])?, int(p[status_at + 2])?, int(p[status_at + 3])?, int(p[status_at + 4])?];
        let ctx = (flavor.ids == ThreadIds::Params).then(|| p[status_at + 5].into_pointer_value());
        let n_heap = heap.len();
        let (mut fx, ()) = self.begin(func, |_| Ok(()))?;
        let mut d = DeviceFn { status, role, n_heap, ids, ctx, n_seg: 0 };
        self.bind_shared(&mut fx, role, flavor, ctx)?;
        if let Role::Seg(_) = role {
            for (i, d) in f.bufs.iter().enumerate() {
                if let BufKind::Arg(a) = d.kind {
                    // validate: a < n_args.
                    fx.bufs.insert(Buf(i as u32), BufLoc::Ptr(p[a].into_pointer_value()));
                }
            }
            for (h, &b) in heap.iter().enumerate() {
                fx.bufs.insert(b, BufLoc::Ptr(p[f.n_args + h].into_pointer_value()));
            }
        }
        for (j, &v) in f.dims.iter().chain(&f.params).enumerate() {
            self.store_var(&mut fx, v, p[n_ptrs + j])?;
        }
        if role == Role::Prep {
            for (j, &dim) in p[n_ptrs..n_ptrs + f.dims.len()].iter().enumerate() {
                let dim = int(dim)?;
                let neg = self.b.build_int_compare(IP::SLT, dim, i64t.const_zero(), "")?;
                // Site j is the check of dim j (the schedule's prologue).
                self.fail_if(&mut d, &mut fx, neg, fail_code(FailKind::BadDims, j as u32))?;
            }
        }
        self.block(&mut d, &mut fx, &f.body)?;
        self.b.build_unconditional_branch(fx.exit)?;
        self.b.position_at_end(fx.exit);
        self.b.build_return(None)?;
        Ok(func)
    }

    /// The entry `S_E` calling `body`: see the module docs. Returns its name.
    fn device_entry(&mut self, role: Role, body: FunctionValue<'ctx>, flavor: Flavor, block: u32) -> Result<String, LlvmError> {
        let f = self.func;
        let gp = self.global_ptr(flavor);
        let (i32t, i64t) = (self.cx.i32_type(), self.cx.i64_type());
        let mut params: Vec<BasicMetadataTypeEnum<'ctx>> = (0..5).map(|_| gp.into()).collect();
        if flavor.ids == ThreadIds::Params {
            params.extend((0..4).map(|_| BasicMetadataTypeEnum::from(i32t)));
            params.push(self.ptr_type().into());
        }
        let ty = self.cx.void_type().fn_type(&params, false);
        let name = role.entry(self.symbol);
        let e = self.add_function(&name, ty, Some(Linkage::External));
        if flavor.ids == ThreadIds::Sreg {
            // PTX_Kernel: a `.entry`.
            e.set_call_conventions(71);
            let threads = match role {
                Role::Prep => 1,
                Role::Seg(_) => block,
            };
            let maxntid = self.cx.create_string_attribute("nvvm.maxntid", &threads.to_string());
            e.add_attribute(AttributeLoc::Function, maxntid);
        }
        let p = e.get_params();
        let [bufs, dims, prm, heap, status] = [0, 1, 2, 3, 4].map(|i| p[i].into_pointer_value());
        let bb = self.cx.append_basic_block(e, "entry");
        self.b.position_at_end(bb);
        let ids: Vec<BasicValueEnum<'ctx>> = match flavor.ids {
            ThreadIds::Params => p[5..10].to_vec(),
            ThreadIds::Sreg => ["tid", "ntid", "ctaid", "nctaid"]
                .iter()
                .map(|r| {
                    let i = self.intrinsic(&format!("llvm.nvvm.read.ptx.sreg.{r}.x"), &[])?;
                    self.call(i, &[])
                })
                .collect::<Result<_, _>>()?,
        };
        let mut args: Vec<BasicMetadataValueEnum<'ctx>> = Vec::new();
        if let Role::Seg(_) = role {
            for i in 0..f.n_args {
                args.push(self.load_at(gp.into(), bufs, i)?.into());
            }
            for h in 0..self.heap_bufs().len() {
                args.push(self.load_at(gp.into(), heap, h)?.into());
            }
        }
        for j in 0..f.dims.len() {
            args.push(self.load_at(i64t.into(), dims, j)?.into());
        }
        args.extend(self.load_params(prm)?.into_iter().map(BasicMetadataValueEnum::from));
        args.push(status.into());
        args.extend(ids.into_iter().map(BasicMetadataValueEnum::from));
        self.b.build_call(body, &args, "")?;
        self.b.build_return(None)?;
        Ok(name)
    }

    /// `&status[j]`.
    pub(super) fn status_slot(&self, status: PointerValue<'ctx>, j: usize) -> Result<PointerValue<'ctx>, LlvmError> {
        let i64t = self.cx.i64_type();
        self.gep(i64t.into(), status, i64t.const_int(j as u64, false))
    }

    /// Branches to the exit when `status[0]` (read atomically) already holds a failure;
    /// continues in a new block named `label` otherwise.
    pub(super) fn exit_if_failed(&mut self, fx: &FnCx<'ctx>, status: PointerValue<'ctx>, label: &str) -> Result<(), LlvmError> {
        let i64t = self.cx.i64_type();
        let s0 = self.status_slot(status, 0)?;
        let code = self.b.build_load(i64t, s0, "status0")?;
        if let Some(i) = code.as_instruction_value() {
            i.set_atomic_ordering(AtomicOrdering::Monotonic).map_err(|e| internal(&e.to_string()))?;
            i.set_alignment(8).map_err(|e| internal(&e.to_string()))?;
        }
        let failed = self.b.build_int_compare(IP::NE, int(code)?, i64t.const_zero(), "")?;
        let go = self.cx.append_basic_block(fx.f, label);
        self.b.build_conditional_branch(failed, fx.exit, go)?;
        self.b.position_at_end(go);
        Ok(())
    }

    /// The current values of the variables `body` mentions, minus `skip` (loop and thread
    /// variables): what every iteration starts from (writes are private to an iteration).
    pub(super) fn start_values(
        &mut self,
        fx: &mut FnCx<'ctx>,
        body: &Block,
        skip: &[Var],
    ) -> Result<Vec<(Var, BasicValueEnum<'ctx>)>, LlvmError> {
        let mut uses = Uses::default();
        uses.block(body);
        let mut out = Vec::new();
        for &v in uses.vars.iter().filter(|v| !skip.contains(v)) {
            out.push((v, self.load_var(fx, v)?));
        }
        Ok(out)
    }

    /// Stores `v` (`i64`) in `status[j]`.
    pub(super) fn store_status(&self, status: PointerValue<'ctx>, j: usize, v: IntValue<'ctx>) -> Result<(), LlvmError> {
        let slot = self.status_slot(status, j)?;
        self.b.build_store(slot, v)?.set_alignment(8).map_err(|e| internal(&e.to_string()))?;
        Ok(())
    }

    /// `Parallel { var, n, body }` (`threads` = `None`) or `BlockParallel { var, n, threads,
    /// body }` in a device function: see the module docs.
    fn device_parallel(
        &mut self,
        d: &mut DeviceFn<'ctx>,
        fx: &mut FnCx<'ctx>,
        var: Var,
        n: &Expr,
        threads: Option<u32>,
        body: &Block,
    ) -> Result<(), LlvmError> {
        let (status, role, n_heap) = (d.status, d.role, d.n_heap);
        let k = d.n_seg;
        d.n_seg += 1;
        let i64t = self.cx.i64_type();
        match role {
            Role::Prep => {
                let n = int(self.expr(fx, n)?)?;
                let smax = self.intrinsic("llvm.smax", &[i64t.into()])?;
                let mut count = int(self.call(smax, &[n.into(), i64t.const_zero().into()])?)?;
                if let Some(t) = threads {
                    // A block parallel's iterations are blocks: the host launches
                    // ceil(count / T) = n blocks of T threads (n is far below 2^63 / T: it
                    // counts tiles of a tensor's rows).
                    count = self.b.build_int_nsw_mul(count, i64t.const_int(u64::from(t), false), "threads")?;
                }
                self.store_status(status, 1 + n_heap + k, count)
            }
            Role::Seg(s) if s == k && threads.is_some() => self.block_stride(d, fx, var, n, body),
            Role::Seg(s) if s == k => self.grid_stride(d, fx, var, n, body),
            Role::Seg(_) => Ok(()),
        }
    }

    /// The grid-stride loop of the segment's own `Parallel`, then return.
    fn grid_stride(&mut self, d: &mut DeviceFn<'ctx>, fx: &mut FnCx<'ctx>, var: Var, n: &Expr, body: &Block) -> Result<(), LlvmError> {
        let (status, ids) = (d.status, d.ids);
        let i64t = self.cx.i64_type();
        let n = int(self.expr(fx, n)?)?;
        // A thread started after a failure does nothing.
        self.exit_if_failed(fx, status, "seg.go")?;
        let start_vals = self.start_values(fx, body, &[var])?;
        let wide = |cg: &Self, x: IntValue<'ctx>| cg.b.build_int_z_extend(x, i64t, "");
        let [tid, ntid, ctaid, nctaid] = ids;
        let (tid, ntid, ctaid, nctaid) = (wide(self, tid)?, wide(self, ntid)?, wide(self, ctaid)?, wide(self, nctaid)?);
        let first = self.b.build_int_nuw_mul(ctaid, ntid, "")?;
        let first = self.b.build_int_nuw_add(first, tid, "first")?;
        let stride = self.b.build_int_nuw_mul(nctaid, ntid, "stride")?;

        let ctr = self.alloca(fx, i64t, "it")?;
        self.b.build_store(ctr, first)?;
        let cond = self.cx.append_basic_block(fx.f, "seg.cond");
        let bb = self.cx.append_basic_block(fx.f, "seg.body");
        self.b.build_unconditional_branch(cond)?;
        self.b.position_at_end(cond);
        let it = int(self.b.build_load(i64t, ctr, "it")?)?;
        let more = self.b.build_int_compare(IP::SLT, it, n, "")?;
        self.b.build_conditional_branch(more, bb, fx.exit)?;
        self.b.position_at_end(bb);
        for &(v, x) in &start_vals {
            self.store_var(fx, v, x)?;
        }
        self.store_var(fx, var, it.into())?;
        self.block(d, fx, body)?;
        let it = int(self.b.build_load(i64t, ctr, "it")?)?;
        // it < n <= i64::MAX and stride < 2^63: no wrap.
        let next = self.b.build_int_nsw_add(it, stride, "it.next")?;
        self.b.build_store(ctr, next)?;
        self.b.build_unconditional_branch(cond)?;
        // The rest of the spine is not this segment's.
        self.dead_block(fx);
        Ok(())
    }

    /// `Alloc { buf, len }` in a device function: see the module docs.
    fn device_alloc(&mut self, d: &mut DeviceFn<'ctx>, fx: &mut FnCx<'ctx>, buf: Buf, len: &Expr) -> Result<(), LlvmError> {
        let status = d.status;
        if d.role != Role::Prep {
            return Ok(());
        }
        let h = self.heap_bufs().iter().position(|&b| b == buf).ok_or_else(|| internal("alloc of a buffer that is not a heap buffer"))?;
        let i64t = self.cx.i64_type();
        let len = int(self.expr(fx, len)?)?;
        let oom = fail_code(FailKind::OutOfMemory, 0);
        let neg = self.b.build_int_compare(IP::SLT, len, i64t.const_zero(), "")?;
        self.fail_if(d, fx, neg, oom)?;
        let size = i64t.const_int(self.func.buf(buf).elem.size(), false);
        let mul = self.intrinsic("llvm.smul.with.overflow", &[i64t.into()])?;
        let r = self.call(mul, &[len.into(), size.into()])?.into_struct_value();
        let over = int(self.b.build_extract_value(r, 1, "")?)?;
        self.fail_if(d, fx, over, oom)?;
        self.store_status(status, 1 + h, len)
    }

    /// Records failure `code` in a device function (the caller then leaves through `exit`).
    fn device_record_failure(&self, d: &DeviceFn<'ctx>, code: u32) -> Result<(), LlvmError> {
        let i64t = self.cx.i64_type();
        let k = i64t.const_int(u64::from(code), false);
        match d.role {
            // One thread, and it stops here: a plain store.
            Role::Prep => self.store_status(d.status, 0, k),
            Role::Seg(_) => {
                let s0 = self.status_slot(d.status, 0)?;
                self.b.build_cmpxchg(s0, i64t.const_zero(), k, AtomicOrdering::Monotonic, AtomicOrdering::Monotonic)?;
                Ok(())
            }
        }
    }
}

/// The heap element sizes (bytes) of `f`, in the order of its heap buffers.
pub(crate) fn heap_elem_bytes(f: &crate::schedule::kir::Func) -> Vec<u32> {
    f.bufs.iter().filter(|d| d.kind == BufKind::Heap).map(|d| d.elem.size() as u32).collect()
}
