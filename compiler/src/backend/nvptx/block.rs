//! The GPU dialect of KIR (`schedule::kir` module docs) on a device: block parallels, the
//! thread index, barriers, shared buffers and tensor-core products, for real PTX
//! ([`ThreadIds::Sreg`]) and for the CPU emulation ([`ThreadIds::Params`]).
//!
//! - A block parallel (`Stmt::BlockParallel` of `T` threads over `0..n`) in its own segment is
//!   a *block-stride* loop: block `ctaid.x` runs iterations `ctaid, ctaid + nctaid, ..` (every
//!   thread of a block runs the same iterations, so barriers inside stay uniform), each
//!   starting with the thread variable (`Func::thread`) set to `tid.x` and the captured
//!   variables reset to the spine's values, and ending with a barrier (the next iteration
//!   reuses the shared arrays). In `prep` it counts `T` threads per iteration (see
//!   `lower::DeviceFn`), and the kernel's segments are launched on blocks of `T` threads
//!   ([`threads`]).
//! - A barrier (`Stmt::Barrier`) is `llvm.nvvm.barrier.cta.sync.aligned.all(0)` (`bar.sync 0`)
//!   on a device; in the emulation an indirect call of `ctx.barrier(ctx.arg)`
//!   ([`EmuBlockCtx`]), which waits until every emulated thread of the block has arrived.
//! - A tensor-core product ([`crate::schedule::kir::Mma`]) is `llvm.nvvm.mma.m16n8k16.row.col`
//!   (`.f32.f32` for f16, whose operands are `<2 x half>` pairs; `.bf16` for bf16, whose
//!   operands are `<2 x bfloat>` pairs as `i32`; element 0 of a pair in the low half) on a
//!   device; in the emulation, the thread's 16 operands (rounded by the emulator) are written
//!   to a stack array and `ctx.mma(ctx.mma_arg, thread, kind, array)` ([`EmuBlockCtx`]) puts
//!   its 4 results after them, computed from its warp's operands.
//! - A shared buffer (`BufKind::Shared`) is a module global `[n x elem]` in address space 3 per
//!   segment entry on a device; in the emulation, `ctx.shared + offset` with the offsets of
//!   [`shared_layout`] (one host buffer per block, zero-filled, laid out by the emulator).

use inkwell::AddressSpace;
use inkwell::IntPredicate as IP;
use inkwell::module::Linkage;
use inkwell::types::BasicType;
use inkwell::values::PointerValue;

use super::lower::{DeviceFn, Flavor, Role, ThreadIds};
use crate::backend::llvm::LlvmError;
use crate::backend::llvm::codegen::{BufLoc, Cg, FnCx, int, internal};
use crate::backend::llvm::types;
use crate::schedule::kir::{Block, Buf, BufKind, Expr, Func, Mma, MmaKind, Var, gpu};

/// The per-block context of an emulated launch, passed to every entry as its last argument
/// (`ptr ctx`); the generated code reads its fields at byte offsets 0, 8, 16, 24 and 32.
#[repr(C)]
pub struct EmuBlockCtx {
    /// Waits until every thread of the block has called it (with `arg`).
    pub barrier: unsafe extern "C" fn(arg: *mut std::ffi::c_void),
    /// The barrier's state.
    pub arg: *mut std::ffi::c_void,
    /// The block's shared memory ([`shared_layout`]'s total bytes, 16-byte aligned).
    pub shared: *mut u8,
    /// A tensor-core product ([`crate::schedule::kir::Mma`]) of the calling thread `thread`:
    /// `frag` holds its 8 `A`, 4 `B` and 4 `C` elements and receives its 4 `D` elements at
    /// 16..20; `kind` is 0 for f16, 1 for bf16. Every thread of the block calls it together.
    pub mma: unsafe extern "C" fn(arg: *mut std::ffi::c_void, thread: i64, kind: i32, frag: *mut f32),
    /// The product's state.
    pub mma_arg: *mut std::ffi::c_void,
}

/// Threads per block of `f`'s block parallels, if it has any (`validate::check_gpu` makes
/// them agree).
pub(crate) fn threads(f: &Func) -> Option<u32> {
    gpu::block_threads(&f.body)
}

/// Byte offsets of `f`'s shared buffers in the emulation's per-block buffer (each 16-byte
/// aligned), and the total size.
pub fn shared_layout(f: &Func) -> (Vec<(Buf, usize)>, usize) {
    let mut at = 0usize;
    let mut out = Vec::new();
    for (i, d) in f.bufs.iter().enumerate() {
        if let BufKind::Shared(n) = d.kind {
            out.push((Buf(i as u32), at));
            at += (n as usize * d.elem.size() as usize).div_ceil(16) * 16;
        }
    }
    (out, at)
}

impl<'ctx> Cg<'ctx, '_> {
    /// Binds every shared buffer of the kernel in segment entries (see the module docs); `ctx`
    /// is the emulation's block context, if any.
    pub(super) fn bind_shared(
        &mut self,
        fx: &mut FnCx<'ctx>,
        role: Role,
        flavor: Flavor,
        ctx: Option<PointerValue<'ctx>>,
    ) -> Result<(), LlvmError> {
        let Role::Seg(k) = role else { return Ok(()) };
        let (layout, _) = shared_layout(self.func);
        let i8t = self.cx.i8_type();
        for (j, (b, off)) in layout.into_iter().enumerate() {
            let d = self.func.buf(b);
            let BufKind::Shared(n) = d.kind else { return Err(internal("a shared buffer without a length")) };
            let p = match (flavor.ids, ctx) {
                (ThreadIds::Params, Some(ctx)) => {
                    let i64t = self.cx.i64_type();
                    let slot = self.gep(i8t.into(), ctx, i64t.const_int(16, false))?;
                    let base = self.b.build_load(self.ptr_type(), slot, "shared")?.into_pointer_value();
                    self.gep(i8t.into(), base, i64t.const_int(off as u64, false))?
                }
                _ => {
                    let ty = types::memory(self.cx, d.elem, self.native_f16).array_type(n);
                    let name = format!("{}_seg{k}_shared{j}", self.symbol);
                    let g = self.module.add_global(ty, Some(AddressSpace::from(3u16)), &name);
                    g.set_linkage(Linkage::Internal);
                    g.set_initializer(&ty.get_undef());
                    g.set_alignment(16);
                    g.as_pointer_value()
                }
            };
            fx.bufs.insert(b, BufLoc::Ptr(p));
        }
        Ok(())
    }

    /// A barrier of the GPU dialect (see the module docs); `ctx` is the emulation's block
    /// context, if any.
    pub(super) fn device_barrier(&mut self, ctx: Option<PointerValue<'ctx>>) -> Result<(), LlvmError> {
        match ctx {
            Some(ctx) => {
                let (i8t, i64t) = (self.cx.i8_type(), self.cx.i64_type());
                let pt = self.ptr_type();
                let f = self.b.build_load(pt, ctx, "barrier")?.into_pointer_value();
                let slot = self.gep(i8t.into(), ctx, i64t.const_int(8, false))?;
                let arg = self.b.build_load(pt, slot, "barrier.arg")?;
                let fty = self.cx.void_type().fn_type(&[pt.into()], false);
                self.b.build_indirect_call(fty, f, &[arg.into()], "")?;
            }
            None => {
                let i32t = self.cx.i32_type();
                let f = self.intrinsic("llvm.nvvm.barrier.cta.sync.aligned.all", &[])?;
                self.b.build_call(f, &[i32t.const_zero().into()], "")?;
            }
        }
        Ok(())
    }

    /// A tensor-core product of the GPU dialect (see the module docs); `ctx` is the
    /// emulation's block context, if any.
    pub(super) fn device_mma(&mut self, ctx: Option<PointerValue<'ctx>>, fx: &mut FnCx<'ctx>, m: &Mma) -> Result<(), LlvmError> {
        let (f32t, i64t) = (self.cx.f32_type(), self.cx.i64_type());
        let mut ops = Vec::with_capacity(16);
        for e in m.operands() {
            ops.push(self.expr(fx, e)?.into_float_value());
        }
        let d: Vec<inkwell::values::FloatValue<'ctx>> = match ctx {
            Some(ctx) => {
                let i8t = self.cx.i8_type();
                let pt = self.ptr_type();
                let frag = self.alloca(fx, f32t.array_type(20), "mma.frag")?;
                for (k, x) in ops.iter().enumerate() {
                    let p = self.gep(f32t.into(), frag, i64t.const_int(k as u64, false))?;
                    self.b.build_store(p, *x)?;
                }
                let slot = self.gep(i8t.into(), ctx, i64t.const_int(24, false))?;
                let f = self.b.build_load(pt, slot, "mma.fn")?.into_pointer_value();
                let slot = self.gep(i8t.into(), ctx, i64t.const_int(32, false))?;
                let arg = self.b.build_load(pt, slot, "mma.arg")?;
                let thread = self.func.thread.ok_or_else(|| internal("a tensor-core product in a kernel without a thread variable"))?;
                let tid = self.load_var(fx, thread)?;
                let kind = self.cx.i32_type().const_int(u64::from(m.kind == MmaKind::BF16), false);
                let fty = self.cx.void_type().fn_type(&[pt.into(), i64t.into(), self.cx.i32_type().into(), pt.into()], false);
                self.b.build_indirect_call(fty, f, &[arg.into(), tid.into(), kind.into(), frag.into()], "")?;
                let mut d = Vec::with_capacity(4);
                for k in 16..20u64 {
                    let p = self.gep(f32t.into(), frag, i64t.const_int(k, false))?;
                    d.push(self.b.build_load(f32t, p, "mma.d")?.into_float_value());
                }
                d
            }
            None => {
                // Pairs of inputs, element 0 in the low half.
                let pack = |cg: &mut Self,
                            x: inkwell::values::FloatValue<'ctx>,
                            y: inkwell::values::FloatValue<'ctx>|
                 -> Result<inkwell::values::BasicMetadataValueEnum<'ctx>, LlvmError> {
                    let et = match m.kind {
                        MmaKind::F16 => cg.cx.f16_type(),
                        MmaKind::BF16 => cg.cx.bf16_type(),
                    };
                    let vt = et.vec_type(2);
                    let (x, y) = (cg.b.build_float_trunc(x, et, "")?, cg.b.build_float_trunc(y, et, "")?);
                    let i32t = cg.cx.i32_type();
                    let v = cg.b.build_insert_element(vt.get_undef(), x, i32t.const_zero(), "")?;
                    let v = cg.b.build_insert_element(v, y, i32t.const_int(1, false), "")?;
                    Ok(match m.kind {
                        MmaKind::F16 => v.into(),
                        MmaKind::BF16 => cg.b.build_bit_cast(v, i32t, "")?.into(),
                    })
                };
                let mut args = Vec::with_capacity(10);
                for k in 0..6 {
                    args.push(pack(self, ops[2 * k], ops[2 * k + 1])?);
                }
                args.extend(ops[12..16].iter().map(|&c| inkwell::values::BasicMetadataValueEnum::from(c)));
                let name = match m.kind {
                    MmaKind::F16 => "llvm.nvvm.mma.m16n8k16.row.col.f32.f32",
                    MmaKind::BF16 => "llvm.nvvm.mma.m16n8k16.row.col.bf16",
                };
                let f = self.intrinsic(name, &[])?;
                let r = self.b.build_call(f, &args, "mma")?;
                let r = r.try_as_basic_value().basic().ok_or_else(|| internal("mma intrinsic without a value"))?.into_struct_value();
                let mut d = Vec::with_capacity(4);
                for k in 0..4 {
                    d.push(self.b.build_extract_value(r, k, "mma.d")?.into_float_value());
                }
                d
            }
        };
        for (&v, x) in m.d.iter().zip(d) {
            self.store_var(fx, v, x.into())?;
        }
        Ok(())
    }

    /// The block-stride loop of the segment's own block parallel, then return.
    pub(super) fn block_stride(
        &mut self,
        d: &mut DeviceFn<'ctx>,
        fx: &mut FnCx<'ctx>,
        var: Var,
        n: &Expr,
        body: &Block,
    ) -> Result<(), LlvmError> {
        let (status, ids) = (d.status, d.ids);
        let i64t = self.cx.i64_type();
        let n = int(self.expr(fx, n)?)?;
        // Failures come only from earlier segments (no `Fail` in a block parallel), so every
        // thread of the launch reads the same status and the blocks stay whole.
        self.exit_if_failed(fx, status, "blk.go")?;
        let thread = self.func.thread;
        let skip: Vec<Var> = std::iter::once(var).chain(thread).collect();
        let start_vals = self.start_values(fx, body, &skip)?;
        let [tid, _, ctaid, nctaid] = ids;
        let tid = self.b.build_int_z_extend(tid, i64t, "tid")?;
        let first = self.b.build_int_z_extend(ctaid, i64t, "first")?;
        let stride = self.b.build_int_z_extend(nctaid, i64t, "stride")?;
        let ctr = self.alloca(fx, i64t, "blk")?;
        self.b.build_store(ctr, first)?;
        let cond = self.cx.append_basic_block(fx.f, "blk.cond");
        let bb = self.cx.append_basic_block(fx.f, "blk.body");
        self.b.build_unconditional_branch(cond)?;
        self.b.position_at_end(cond);
        let it = int(self.b.build_load(i64t, ctr, "blk")?)?;
        let more = self.b.build_int_compare(IP::SLT, it, n, "")?;
        self.b.build_conditional_branch(more, bb, fx.exit)?;
        self.b.position_at_end(bb);
        for &(v, x) in &start_vals {
            self.store_var(fx, v, x)?;
        }
        self.store_var(fx, var, it.into())?;
        if let Some(t) = thread {
            self.store_var(fx, t, tid.into())?;
        }
        self.block(d, fx, body)?;
        // The next iteration reuses the shared arrays: wait until every thread is done with
        // this one's.
        self.device_barrier(d.ctx)?;
        let it = int(self.b.build_load(i64t, ctr, "blk")?)?;
        // it < n <= i64::MAX and stride < 2^32: no wrap.
        let next = self.b.build_int_nsw_add(it, stride, "blk.next")?;
        self.b.build_store(ctr, next)?;
        self.b.build_unconditional_branch(cond)?;
        self.dead_block(fx);
        Ok(())
    }
}
