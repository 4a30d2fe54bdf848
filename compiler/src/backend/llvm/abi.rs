//! The three functions of an export `s` (see `tfmc_runtime::manifest` for the C ABI):
//! - `internal i32 @s.kernel(ptr noalias a0.., i64 dims.., params..)`: the body. One pointer per
//!   argument index, `noalias` (outputs overlap no other buffer; inputs are only read), dims and
//!   params as values, stored into their variables on entry. Heap slots start null and are
//!   freed in `exit`, which every path reaches.
//! - `i32 @s_packed(ptr bufs, ptr dims, ptr params)`: checks that no pointer is NULL first
//!   (`bufs`, every `bufs[i]`, and `dims`/`params` when the kernel has dims/params; else
//!   returns `fail_code(NullPointer, 0)`), then every dim `>= 0` (else
//!   returns `fail_code(BadDims, j)` for the first negative dim `j`, the site of its check), loads `bufs[i]`, the dims and the 8-byte param slots
//!   (`i64` → `I64`, truncated to `I32`, `!= 0` for `Bool`; `double` → `F64`, `fptrunc` to
//!   `F32`) and calls the kernel function.
//! - `i32 @s(T* a0.., int64_t dims.., params..)`: the typed wrapper; params are
//!   `int64_t`/`int32_t`/`bool` (`i1 zeroext`)/`float`/`double` by variable type. It packs its
//!   arguments into stack arrays and calls `s_packed` (so it checks pointers and dims too).

use inkwell::IntPredicate as IP;
use inkwell::attributes::AttributeLoc;
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicMetadataTypeEnum, BasicTypeEnum};
use inkwell::values::{BasicMetadataValueEnum, BasicValueEnum, FunctionValue, PointerValue};

use super::codegen::{BufLoc, Cg, float, int, internal};
use super::cpu_lowering::CpuFn;
use super::{Export, LlvmError, types};
use crate::schedule::kir::{BufKind, FailKind, Ty, fail_code};

/// Emits the kernel function, packed entry and typed wrapper of `e` into `module`.
pub(super) fn emit_export<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
    e: &Export<'_>,
    native_f16: bool,
    vector_bits: u32,
) -> Result<(), LlvmError> {
    let mut cg = Cg::new(cx, module, e.func, &e.symbol, native_f16);
    cg.vector_bits = vector_bits;
    let kernel = cg.kernel_fn()?;
    let packed = cg.packed_entry(kernel)?;
    cg.typed_wrapper(packed)
}

impl<'ctx> Cg<'ctx, '_> {
    /// The value types of the params, in ABI order.
    pub(crate) fn param_tys(&self) -> Vec<Ty> {
        self.func.params.iter().map(|&v| self.func.var(v).ty).collect()
    }

    /// `(buffer pointers.., dims.., params..)`: the kernel function's and typed wrapper's
    /// parameter types.
    fn value_params(&self) -> Vec<BasicMetadataTypeEnum<'ctx>> {
        let ptr = self.ptr_type();
        let i64t = self.cx.i64_type();
        let mut v: Vec<BasicMetadataTypeEnum<'ctx>> = (0..self.func.n_args).map(|_| ptr.into()).collect();
        v.extend(self.func.dims.iter().map(|_| BasicMetadataTypeEnum::from(i64t)));
        v.extend(self.param_tys().into_iter().map(|t| BasicMetadataTypeEnum::from(types::value(self.cx, t))));
        v
    }

    fn kernel_fn(&mut self) -> Result<FunctionValue<'ctx>, LlvmError> {
        let f = self.func;
        let ty = self.cx.i32_type().fn_type(&self.value_params(), false);
        let k = self.add_function(&format!("{}.kernel", self.symbol), ty, Some(Linkage::Internal));
        for i in 0..f.n_args {
            self.attr(k, AttributeLoc::Param(i as u32), "noalias");
        }
        let ptr = self.ptr_type();
        let i32t = self.cx.i32_type();
        let heap_bufs: Vec<usize> = (0..f.bufs.len()).filter(|&i| f.bufs[i].kind == BufKind::Heap).collect();
        let (mut fx, mut lw) = self.begin(k, |ab| {
            let ret = ab.build_alloca(i32t, "ret")?;
            let err = ab.build_alloca(i32t, "err")?;
            let heap = heap_bufs.iter().map(|&i| ab.build_alloca(ptr, &f.bufs[i].name)).collect::<Result<Vec<_>, _>>()?;
            Ok(CpuFn::Kernel { ret, err, heap, n_par: 0 })
        })?;
        let CpuFn::Kernel { ret, heap, .. } = &lw else {
            return Err(internal("kernel function of the wrong kind"));
        };
        let (ret, heap) = (*ret, heap.clone());
        for (&i, &slot) in heap_bufs.iter().zip(&heap) {
            self.b.build_store(slot, ptr.const_null())?;
            fx.bufs.insert(crate::schedule::kir::Buf(i as u32), BufLoc::Slot(slot));
        }
        let params = k.get_params();
        for (i, d) in f.bufs.iter().enumerate() {
            if let BufKind::Arg(a) = d.kind {
                // validate: a < n_args, and there is one pointer parameter per argument.
                fx.bufs.insert(crate::schedule::kir::Buf(i as u32), BufLoc::Ptr(params[a].into_pointer_value()));
            }
        }
        let vars = f.dims.iter().chain(&f.params);
        for (j, &v) in vars.enumerate() {
            self.store_var(&mut fx, v, params[f.n_args + j])?;
        }
        self.block(&mut lw, &mut fx, &f.body)?;
        self.b.build_store(ret, i32t.const_zero())?;
        self.b.build_unconditional_branch(fx.exit)?;
        self.b.position_at_end(fx.exit);
        let free = self.extern_fn("tfmc_free", None, &[ptr.into()]);
        for slot in heap {
            let p = self.b.build_load(ptr, slot, "")?;
            self.b.build_call(free, &[p.into()], "")?;
        }
        let r = self.b.build_load(i32t, ret, "ret")?;
        self.b.build_return(Some(&r))?;
        Ok(k)
    }

    /// Loads element `j` of type `ty` from the array at `base`.
    pub(crate) fn load_at(&self, ty: BasicTypeEnum<'ctx>, base: PointerValue<'ctx>, j: usize) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let at = self.gep(ty, base, self.cx.i64_type().const_int(j as u64, false))?;
        Ok(self.b.build_load(ty, at, "")?)
    }

    fn store_at(&self, ty: BasicTypeEnum<'ctx>, base: PointerValue<'ctx>, j: usize, v: BasicValueEnum<'ctx>) -> Result<(), LlvmError> {
        let at = self.gep(ty, base, self.cx.i64_type().const_int(j as u64, false))?;
        self.b.build_store(at, v)?;
        Ok(())
    }

    fn packed_entry(&mut self, kernel: FunctionValue<'ctx>) -> Result<FunctionValue<'ctx>, LlvmError> {
        let f = self.func;
        let ptr = self.ptr_type();
        let (i32t, i64t) = (self.cx.i32_type(), self.cx.i64_type());
        let ty = i32t.fn_type(&[ptr.into(), ptr.into(), ptr.into()], false);
        let e = self.add_function(&format!("{}_packed", self.symbol), ty, Some(Linkage::External));
        let p = e.get_params();
        let (bufs, dims, params) = (p[0].into_pointer_value(), p[1].into_pointer_value(), p[2].into_pointer_value());
        let entry = self.cx.append_basic_block(e, "entry");
        let null = self.cx.append_basic_block(e, "null_pointer");
        let bufs_ok = self.cx.append_basic_block(e, "bufs");
        let check_dims = self.cx.append_basic_block(e, "check_dims");
        let bad = self.cx.append_basic_block(e, "bad_dims");
        let run = self.cx.append_basic_block(e, "run");
        // NULL for `bufs`, for `dims` or `params` when there are dims or params, or for any
        // buffer pointer: `fail_code(NullPointer, 0)`.
        self.b.position_at_end(entry);
        let is_null = |b: &inkwell::builder::Builder<'ctx>, p: PointerValue<'ctx>| b.build_is_null(p, "");
        let mut any_null = is_null(&self.b, bufs)?;
        if !f.dims.is_empty() {
            any_null = self.b.build_or(any_null, is_null(&self.b, dims)?, "")?;
        }
        if !f.params.is_empty() {
            any_null = self.b.build_or(any_null, is_null(&self.b, params)?, "")?;
        }
        self.b.build_conditional_branch(any_null, null, bufs_ok)?;
        self.b.position_at_end(null);
        self.b.build_return(Some(&i32t.const_int(u64::from(fail_code(FailKind::NullPointer, 0)), false)))?;
        self.b.position_at_end(bufs_ok);
        let mut buf_ptrs = Vec::new();
        let mut any_null = self.cx.bool_type().const_zero();
        for i in 0..f.n_args {
            let p = self.load_at(ptr.into(), bufs, i)?.into_pointer_value();
            any_null = self.b.build_or(any_null, is_null(&self.b, p)?, "")?;
            buf_ptrs.push(p);
        }
        self.b.build_conditional_branch(any_null, null, check_dims)?;
        self.b.position_at_end(check_dims);
        let mut ok = self.cx.bool_type().const_int(1, false);
        let mut dv = Vec::new();
        for j in 0..f.dims.len() {
            let d = int(self.load_at(i64t.into(), dims, j)?)?;
            let ge = self.b.build_int_compare(IP::SGE, d, i64t.const_zero(), "")?;
            ok = self.b.build_and(ok, ge, "")?;
            dv.push(d);
        }
        self.b.build_conditional_branch(ok, run, bad)?;
        self.b.position_at_end(bad);
        // The first negative dim's site (the schedule's prologue makes site j the check of
        // dim j).
        let mut code = i32t.const_int(u64::from(fail_code(FailKind::BadDims, 0)), false);
        for (j, &d) in dv.iter().enumerate().rev() {
            let neg = self.b.build_int_compare(IP::SLT, d, i64t.const_zero(), "")?;
            let site = i32t.const_int(u64::from(fail_code(FailKind::BadDims, j as u32)), false);
            code = self.b.build_select(neg, site, code, "")?.into_int_value();
        }
        self.b.build_return(Some(&code))?;
        self.b.position_at_end(run);
        let mut args: Vec<BasicMetadataValueEnum<'ctx>> = buf_ptrs.into_iter().map(BasicMetadataValueEnum::from).collect();
        args.extend(dv.into_iter().map(BasicMetadataValueEnum::from));
        for v in self.load_params(params)? {
            args.push(v.into());
        }
        let r = self.call(kernel, &args)?;
        self.b.build_return(Some(&r))?;
        Ok(e)
    }

    /// The values of the params, loaded from the ABI's 8-byte slots at `params` (`i64` → `I64`,
    /// truncated to `I32`, `!= 0` for `Bool`; `double` → `F64`, `fptrunc` to `F32`).
    pub(crate) fn load_params(&self, params: PointerValue<'ctx>) -> Result<Vec<BasicValueEnum<'ctx>>, LlvmError> {
        let (i32t, i64t) = (self.cx.i32_type(), self.cx.i64_type());
        let mut out = Vec::new();
        for (j, t) in self.param_tys().into_iter().enumerate() {
            let raw = self.load_at(types::slot(self.cx, t), params, j)?;
            let v: BasicValueEnum<'ctx> = match t {
                Ty::I64 | Ty::F64 => raw,
                Ty::I32 => self.b.build_int_truncate(int(raw)?, i32t, "")?.into(),
                Ty::Bool => self.b.build_int_compare(IP::NE, int(raw)?, i64t.const_zero(), "")?.into(),
                Ty::F32 => self.b.build_float_trunc(float(raw)?, self.cx.f32_type(), "")?.into(),
                // validate: param variables have value types.
                Ty::F16 | Ty::BF16 => return Err(internal("param of a memory-only type")),
            };
            out.push(v);
        }
        Ok(out)
    }

    fn typed_wrapper(&mut self, packed: FunctionValue<'ctx>) -> Result<(), LlvmError> {
        let f = self.func;
        let ptr = self.ptr_type();
        let (i32t, i64t) = (self.cx.i32_type(), self.cx.i64_type());
        let ty = i32t.fn_type(&self.value_params(), false);
        let w = self.add_function(self.symbol, ty, Some(Linkage::External));
        let ptys = self.param_tys();
        let first_param = f.n_args + f.dims.len();
        for (j, t) in ptys.iter().enumerate() {
            if *t == Ty::Bool {
                self.attr(w, AttributeLoc::Param((first_param + j) as u32), "zeroext");
            }
        }
        let entry = self.cx.append_basic_block(w, "entry");
        self.b.position_at_end(entry);
        let p = w.get_params();
        let bufs = self.b.build_alloca(ptr.array_type(f.n_args.max(1) as u32), "bufs")?;
        let dims = self.b.build_alloca(i64t.array_type(f.dims.len().max(1) as u32), "dims")?;
        let params = self.b.build_alloca(i64t.array_type(ptys.len().max(1) as u32), "params")?;
        for (i, &a) in p[..f.n_args].iter().enumerate() {
            self.store_at(ptr.into(), bufs, i, a)?;
        }
        for (j, &d) in p[f.n_args..first_param].iter().enumerate() {
            self.store_at(i64t.into(), dims, j, d)?;
        }
        for (j, t) in ptys.iter().enumerate() {
            let v = p[first_param + j];
            let slot: BasicValueEnum<'ctx> = match t {
                Ty::I64 | Ty::F64 => v,
                Ty::I32 => self.b.build_int_s_extend(int(v)?, i64t, "")?.into(),
                Ty::Bool => self.b.build_int_z_extend(int(v)?, i64t, "")?.into(),
                Ty::F32 => self.b.build_float_ext(float(v)?, self.cx.f64_type(), "")?.into(),
                Ty::F16 | Ty::BF16 => return Err(internal("param of a memory-only type")),
            };
            self.store_at(types::slot(self.cx, *t), params, j, slot)?;
        }
        let r = self.call(packed, &[bufs.into(), dims.into(), params.into()])?;
        self.b.build_return(Some(&r))?;
        Ok(())
    }
}
