//! The packed entry of an export `s`, which is the kernel itself:
//! `i32 s_packed(ptr bufs, ptr dims, ptr params)` (the ABI of `tfmc_runtime::manifest`).
//!
//! It returns `fail_code(NullPointer, 0)` when `bufs`, `dims` or `params` (the latter two
//! when the kernel has dims or params) or any buffer pointer is NULL, as the LLVM backend;
//! then it checks every dim `>= 0` (else returns `fail_code(BadDims, j)` for the first
//! negative dim `j`, as the LLVM backend), loads `bufs[i]` (one base pointer per argument index), the dims and the 8-byte
//! param slots (`i64` → `I64`, truncated to `I32`, `!= 0` for `Bool`; `f64` → `F64`, demoted
//! to `F32`) into their variables, sets every heap buffer's pointer variable to null, and runs
//! the body. Every return goes through one exit block taking the code as its parameter: it
//! frees every heap buffer (`free(NULL)` is a no-op) and returns the code.
//!
//! [`translate_export`] is the per-export driver: the entry first, then each outlined
//! parallel body it met ([`super::outline`]).

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{Function, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, UserFuncName, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{Linkage, Module};

use super::func::{BufBase, FnKind, Fx, PTR};
use super::jit::Cx;
use super::outline::outline_body;
use super::{CraneliftError, Export, Sink};
use crate::schedule::kir::{Buf, BufKind, FailKind, Ty, fail_code};

/// Translates export `e`: its packed entry, then its parallel bodies, each handed to `sink`.
pub(super) fn translate_export(cx: &mut Cx, e: &Export<'_>, sink: &mut Sink<'_>) -> Result<(), CraneliftError> {
    let f = e.func;
    let sig = cx.signature(&[PTR, PTR, PTR], Some(types::I32));
    let id = cx.declare(&format!("{}_packed", e.symbol), Linkage::Export, &sig)?;
    cx.entries.insert(e.symbol.clone(), id);
    let mut func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
    let mut fctx = FunctionBuilderContext::new();
    let cfg = cx.module.target_config();
    let jobs = {
        let mut b = FunctionBuilder::new(&mut func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let p = b.block_params(entry).to_vec();
        let (bufs, dims, params) = (p[0], p[1], p[2]);
        let exit = b.create_block();
        let code = b.append_block_param(exit, types::I32);
        let err = b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 4, 2));
        let mut fx = Fx::new(b, cx, f, &e.symbol, FnKind::Kernel { exit, err });
        let slot = MemFlagsData::trusted();

        // NULL for `bufs`, for `dims` or `params` when there are dims or params, or for any
        // buffer pointer: NullPointer (as the LLVM backend), before anything is read through them.
        let is_null = |fx: &mut Fx<'_, '_>, p| fx.b.ins().icmp_imm_u(IntCC::Equal, p, 0);
        let mut any_null = is_null(&mut fx, bufs);
        for (p, used) in [(dims, !f.dims.is_empty()), (params, !f.params.is_empty())] {
            if used {
                let n = is_null(&mut fx, p);
                any_null = fx.b.ins().bor(any_null, n);
            }
        }
        let null = fx.block();
        let bufs_ok = fx.block();
        fx.b.ins().brif(any_null, null, &[], bufs_ok, &[]);
        fx.b.seal_block(bufs_ok);
        fx.b.switch_to_block(bufs_ok);
        let mut any_null = fx.iconst(types::I8, 0);
        let mut arg_ptrs = Vec::with_capacity(f.n_args);
        for a in 0..f.n_args {
            let ptr = fx.b.ins().load(PTR, slot, bufs, 8 * a as i32);
            let n = is_null(&mut fx, ptr);
            any_null = fx.b.ins().bor(any_null, n);
            arg_ptrs.push(ptr);
        }
        let check_dims = fx.block();
        fx.b.ins().brif(any_null, null, &[], check_dims, &[]);
        fx.b.seal_block(null);
        fx.b.seal_block(check_dims);
        fx.b.switch_to_block(null);
        let k = fx.iconst(types::I32, i64::from(fail_code(FailKind::NullPointer, 0)));
        fx.b.ins().return_(&[k]);
        fx.b.switch_to_block(check_dims);

        // Dims: all >= 0, else BadDims.
        let mut ok = fx.iconst(types::I8, 1);
        let mut dv = Vec::with_capacity(f.dims.len());
        for j in 0..f.dims.len() {
            let d = fx.b.ins().load(types::I64, slot, dims, 8 * j as i32);
            let ge = fx.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, d, 0);
            ok = fx.b.ins().band(ok, ge);
            dv.push(d);
        }
        let run = fx.block();
        let bad = fx.block();
        fx.b.ins().brif(ok, run, &[], bad, &[]);
        fx.b.seal_block(run);
        fx.b.seal_block(bad);
        fx.b.switch_to_block(bad);
        // The first negative dim's site (the schedule's prologue makes site j the check of
        // dim j), as the LLVM backend.
        let mut k = fx.iconst(types::I32, i64::from(fail_code(FailKind::BadDims, 0)));
        for (j, &d) in dv.iter().enumerate().rev() {
            let neg = fx.b.ins().icmp_imm_s(IntCC::SignedLessThan, d, 0);
            let site = fx.iconst(types::I32, i64::from(fail_code(FailKind::BadDims, j as u32)));
            k = fx.b.ins().select(neg, site, k);
        }
        fx.b.ins().return_(&[k]);
        fx.b.switch_to_block(run);

        for (i, d) in f.bufs.iter().enumerate() {
            let buf = Buf(i as u32);
            match d.kind {
                BufKind::Arg(a) => {
                    let ptr = *arg_ptrs.get(a).ok_or_else(|| fx.internal("an argument buffer beyond n_args"))?;
                    fx.bufs.insert(buf, BufBase::Ptr(ptr));
                }
                BufKind::Heap => {
                    let var = fx.b.declare_var(PTR);
                    let null = fx.iconst(PTR, 0);
                    fx.def_variable(var, null)?;
                    fx.bufs.insert(buf, BufBase::Heap(var));
                }
                // Shared buffers (GPU dialect) are rejected by `validate::check`; `Fx::base`
                // reports one that got here.
                BufKind::Stack(_) | BufKind::Shared(_) => {}
            }
        }
        for (&v, d) in f.dims.iter().zip(dv) {
            fx.def_var(v, d)?;
        }
        for (j, &v) in f.params.iter().enumerate() {
            let off = 8 * j as i32;
            let ins = fx.b.ins();
            let x = match f.var(v).ty {
                Ty::I64 => ins.load(types::I64, slot, params, off),
                Ty::I32 => {
                    let raw = ins.load(types::I64, slot, params, off);
                    fx.b.ins().ireduce(types::I32, raw)
                }
                Ty::Bool => {
                    let raw = ins.load(types::I64, slot, params, off);
                    fx.b.ins().icmp_imm_s(IntCC::NotEqual, raw, 0)
                }
                Ty::F64 => ins.load(types::F64, slot, params, off),
                Ty::F32 => {
                    let raw = ins.load(types::F64, slot, params, off);
                    fx.b.ins().fdemote(types::F32, raw)
                }
                // validate: variables have value types.
                Ty::F16 | Ty::BF16 => return Err(fx.internal("a param of a memory-only type")),
            };
            fx.def_var(v, x)?;
        }

        fx.stmts(&f.body)?;
        let zero = fx.iconst(types::I32, 0);
        fx.b.ins().jump(exit, &[zero.into()]);
        fx.b.seal_block(exit);
        fx.b.switch_to_block(exit);
        for i in 0..f.bufs.len() as u32 {
            if let Some(&BufBase::Heap(var)) = fx.bufs.get(&Buf(i)) {
                let p = fx.use_variable(var)?;
                fx.call("tfmc_free", &[PTR], None, &[p])?;
            }
        }
        fx.b.ins().return_(&[code]);
        let Fx { b, jobs, .. } = fx;
        b.finalize(cfg);
        jobs
    };
    sink(cx, &f.name, id, func)?;
    for job in &jobs {
        outline_body(cx, f, &e.symbol, job, sink)?;
    }
    Ok(())
}
