//! `Parallel` loops: the body is outlined and run through
//! `void tfmc_parallel_for(void (*body)(void *ctx, int64_t lo, int64_t hi), void *ctx, int64_t n)`.
//!
//! For the `k`-th parallel loop of kernel `s`:
//! - `internal void @s.par{k}.body(ptr noalias bufs.., vars.., ptr err, i64 lo, i64 hi)` runs
//!   iterations `lo..hi`. Each iteration starts by re-storing every captured variable from its
//!   parameter (writes are private to the iteration) and setting the loop variable; stack
//!   buffers are allocated once per call (their contents are unspecified between iterations).
//!   A chunk whose `*err` is already set does nothing. Buffer pointers are `noalias`: iterations
//!   store to disjoint elements and outputs overlap nothing (see the backend's module docs).
//! - `internal void @s.par{k}(ptr ctx, i64 lo, i64 hi)` unpacks `ctx` and calls the body
//!   (O3 inlines it; the `noalias` facts survive as scoped alias metadata).
//! - The kernel fills `ctx`, an array of 8-byte slots: `err` (pointer to the kernel's `i32`
//!   error slot, zeroed before the call), one pointer per captured argument index or heap
//!   buffer, then the value of every variable the body mentions (the simplest correct capture:
//!   a variable written before it is read in the body is copied needlessly, not wrongly). After
//!   the call a non-zero error slot becomes the kernel's return code.

use std::collections::BTreeSet;

use inkwell::attributes::AttributeLoc;
use inkwell::module::Linkage;
use inkwell::types::{BasicMetadataTypeEnum, BasicTypeEnum};
use inkwell::values::{BasicMetadataValueEnum, BasicValue, BasicValueEnum, PointerValue};
use inkwell::{AtomicOrdering, IntPredicate as IP};

use super::codegen::{BufLoc, Cg, FnCx, int, internal};
use super::cpu_lowering::CpuFn;
use super::{LlvmError, types};
use crate::schedule::kir::{Block, Buf, BufKind, Expr, Func, Var};
use crate::schedule::uses::Uses;

/// A captured buffer pointer: argument buffers that share an index share one pointer (so no
/// two `noalias` parameters ever point at the same memory); heap buffers are distinct.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum PtrKey {
    Arg(usize),
    Heap(Buf),
}

fn ptr_key(f: &Func, b: Buf) -> Option<PtrKey> {
    match f.buf(b).kind {
        BufKind::Arg(i) => Some(PtrKey::Arg(i)),
        BufKind::Heap => Some(PtrKey::Heap(b)),
        // Shared buffers (GPU dialect) never reach the CPU lowering (`validate::check`).
        BufKind::Stack(_) | BufKind::Shared(_) => None,
    }
}

impl<'ctx> Cg<'ctx, '_> {
    /// Lowers `Parallel { var, n, body }`, the `k`-th of the kernel, in the kernel function
    /// `fx` (whose return code and error slots are `ret` and `err`).
    pub(super) fn parallel(
        &mut self,
        fx: &mut FnCx<'ctx>,
        (ret, err): (PointerValue<'ctx>, PointerValue<'ctx>),
        k: usize,
        var: Var,
        n: &Expr,
        body: &Block,
    ) -> Result<(), LlvmError> {
        let mut uses = Uses::default();
        uses.block(body);
        uses.vars.remove(&var);
        let keys: BTreeSet<PtrKey> = uses.bufs.iter().filter_map(|&b| ptr_key(self.func, b)).collect();
        let keys: Vec<PtrKey> = keys.into_iter().collect();
        let vars: Vec<Var> = uses.vars.iter().copied().collect();

        let n = int(self.expr(fx, n)?)?;
        let inner = self.outline_body(k, var, &keys, &vars, &uses, body)?;
        let wrapper = self.outline_wrapper(k, inner, &keys, &vars)?;

        // Fill the context: err, pointers, variable values.
        let i64t = self.cx.i64_type();
        let nslots = 1 + keys.len() + vars.len();
        let ctx = self.alloca(fx, i64t.array_type(nslots as u32), "ctx")?;
        let mut values: Vec<BasicValueEnum<'ctx>> = vec![err.into()];
        for key in &keys {
            let b = match *key {
                PtrKey::Heap(b) => b,
                PtrKey::Arg(i) => {
                    // Some declared buffer has this argument index (keys come from uses).
                    let pos = self
                        .func
                        .bufs
                        .iter()
                        .position(|d| d.kind == BufKind::Arg(i))
                        .ok_or_else(|| internal("argument without a buffer"))?;
                    Buf(pos as u32)
                }
            };
            values.push(self.buf_ptr(fx, b)?.into());
        }
        for &v in &vars {
            values.push(self.load_var(fx, v)?);
        }
        for (j, v) in values.into_iter().enumerate() {
            let slot = self.gep(i64t.into(), ctx, i64t.const_int(j as u64, false))?;
            self.b.build_store(slot, v)?.set_alignment(8).map_err(|e| internal(&e.to_string()))?;
        }
        let i32t = self.cx.i32_type();
        self.b.build_store(err, i32t.const_zero())?;
        let ptr = self.ptr_type();
        let pf = self.extern_fn("tfmc_parallel_for", None, &[ptr.into(), ptr.into(), i64t.into()]);
        let body_ptr = wrapper.as_global_value().as_pointer_value();
        self.b.build_call(pf, &[body_ptr.into(), ctx.into(), n.into()], "")?;
        let e = int(self.b.build_load(i32t, err, "err")?)?;
        let failed = self.b.build_int_compare(IP::NE, e, i32t.const_zero(), "")?;
        let bad = self.cx.append_basic_block(fx.f, "par.fail");
        let ok = self.cx.append_basic_block(fx.f, "par.ok");
        self.b.build_conditional_branch(failed, bad, ok)?;
        self.b.position_at_end(bad);
        self.b.build_store(ret, e)?;
        self.b.build_unconditional_branch(fx.exit)?;
        self.b.position_at_end(ok);
        Ok(())
    }

    /// `@s.par{k}.body`: see the module docs.
    fn outline_body(
        &mut self,
        k: usize,
        var: Var,
        keys: &[PtrKey],
        vars: &[Var],
        uses: &Uses,
        body: &Block,
    ) -> Result<inkwell::values::FunctionValue<'ctx>, LlvmError> {
        let ptr = self.ptr_type();
        let i64t = self.cx.i64_type();
        let mut params: Vec<BasicMetadataTypeEnum<'ctx>> = keys.iter().map(|_| ptr.into()).collect();
        params.extend(vars.iter().map(|&v| BasicMetadataTypeEnum::from(types::value(self.cx, self.func.var(v).ty))));
        params.extend::<[BasicMetadataTypeEnum<'ctx>; 3]>([ptr.into(), i64t.into(), i64t.into()]);
        let ty = self.cx.void_type().fn_type(&params, false);
        let f = self.add_function(&format!("{}.par{k}.body", self.symbol), ty, Some(Linkage::Internal));
        for j in 0..keys.len() {
            self.attr(f, AttributeLoc::Param(j as u32), "noalias");
        }
        let p = f.get_params();
        let base = keys.len() + vars.len();
        let (err, lo, hi) = (p[base].into_pointer_value(), int(p[base + 1])?, int(p[base + 2])?);

        // Save the kernel's insertion point: the body is built with the same builder.
        let saved = self.b.get_insert_block().ok_or_else(|| internal("builder not positioned"))?;
        let (mut bx, ()) = self.begin(f, |_| Ok(()))?;
        let mut lw = CpuFn::Body { err };
        for (j, key) in keys.iter().enumerate() {
            let ptr = p[j].into_pointer_value();
            for &b in &uses.bufs {
                if ptr_key(self.func, b) == Some(*key) {
                    bx.bufs.insert(b, BufLoc::Ptr(ptr));
                }
            }
        }
        // A chunk started after a failure does nothing.
        let i32t = self.cx.i32_type();
        let e = self.b.build_load(i32t, err, "err")?;
        if let Some(i) = e.as_instruction_value() {
            i.set_atomic_ordering(AtomicOrdering::Monotonic).map_err(|e| internal(&e.to_string()))?;
            i.set_alignment(4).map_err(|e| internal(&e.to_string()))?;
        }
        let failed = self.b.build_int_compare(IP::NE, int(e)?, i32t.const_zero(), "")?;
        let go = self.cx.append_basic_block(f, "go");
        self.b.build_conditional_branch(failed, bx.exit, go)?;
        self.b.position_at_end(go);
        self.counted_loop(&mut bx, lo, hi, |cg, bx, i| {
            for (j, &v) in vars.iter().enumerate() {
                cg.store_var(bx, v, p[keys.len() + j])?;
            }
            cg.store_var(bx, var, i.into())?;
            cg.block(&mut lw, bx, body)
        })?;
        self.b.build_unconditional_branch(bx.exit)?;
        self.b.position_at_end(bx.exit);
        self.b.build_return(None)?;
        self.b.position_at_end(saved);
        Ok(f)
    }

    /// `@s.par{k}(ctx, lo, hi)`: unpacks the context slots and calls the body.
    fn outline_wrapper(
        &mut self,
        k: usize,
        inner: inkwell::values::FunctionValue<'ctx>,
        keys: &[PtrKey],
        vars: &[Var],
    ) -> Result<inkwell::values::FunctionValue<'ctx>, LlvmError> {
        let ptr = self.ptr_type();
        let i64t = self.cx.i64_type();
        let ty = self.cx.void_type().fn_type(&[ptr.into(), i64t.into(), i64t.into()], false);
        let f = self.add_function(&format!("{}.par{k}", self.symbol), ty, Some(Linkage::Internal));
        let saved = self.b.get_insert_block().ok_or_else(|| internal("builder not positioned"))?;
        let bb = self.cx.append_basic_block(f, "entry");
        self.b.position_at_end(bb);
        let p = f.get_params();
        let ctx = p[0].into_pointer_value();
        let slot = |cg: &Self, j: usize, ty: BasicTypeEnum<'ctx>| -> Result<BasicValueEnum<'ctx>, LlvmError> {
            let at: PointerValue<'ctx> = cg.gep(i64t.into(), ctx, i64t.const_int(j as u64, false))?;
            let v = cg.b.build_load(ty, at, "")?;
            if let Some(i) = v.as_instruction_value() {
                i.set_alignment(8).map_err(|e| internal(&e.to_string()))?;
            }
            Ok(v)
        };
        let mut args: Vec<BasicMetadataValueEnum<'ctx>> = Vec::new();
        for j in 0..keys.len() {
            args.push(slot(self, 1 + j, ptr.into())?.into());
        }
        for (j, &v) in vars.iter().enumerate() {
            args.push(slot(self, 1 + keys.len() + j, types::value(self.cx, self.func.var(v).ty))?.into());
        }
        args.push(slot(self, 0, ptr.into())?.into());
        args.push(p[1].into());
        args.push(p[2].into());
        self.b.build_call(inner, &args, "")?;
        self.b.build_return(None)?;
        self.b.position_at_end(saved);
        Ok(f)
    }
}
