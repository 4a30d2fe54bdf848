//! Lowering state. [`Cg`] is one kernel's lowering into the module (context, builder,
//! declarations of intrinsics and C functions); [`FnCx`] is one LLVM function being built (the
//! kernel function, an outlined parallel body, or an entry point of another kind of code),
//! lowered together with its [`super::lowering::Lowering`].
//!
//! Invariants of every function built through [`FnCx`]:
//! - its first block (`allocas`) holds only allocas and ends with `br start`; variables,
//!   stack buffers and loop counters are allocated there lazily, on first use, so mem2reg/SROA
//!   promote them whatever the control flow;
//! - there is one exit block (`exit`); every failure and the normal end branch to it, and for
//!   the kernel function it frees every heap buffer and returns the code stored in `ret`;
//! - the builder is always positioned at the end of an unterminated block between statements
//!   (after a `Fail` it continues in a fresh unreachable block).

use std::collections::HashMap;

use inkwell::AddressSpace;
use inkwell::attributes::AttributeLoc;
use inkwell::basic_block::BasicBlock;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicMetadataTypeEnum, BasicType, BasicTypeEnum};
use inkwell::values::{BasicMetadataValueEnum, BasicValueEnum, FloatValue, FunctionValue, IntValue, PointerValue};

use super::{LlvmError, types};
use crate::schedule::kir::{Buf, BufKind, Func, Var};

/// Where a buffer's base pointer comes from in the current function.
#[derive(Clone, Copy)]
pub(crate) enum BufLoc<'ctx> {
    /// A pointer value (an argument, a stack array, a captured heap pointer).
    Ptr(PointerValue<'ctx>),
    /// A heap buffer of the kernel function: the slot holding its pointer.
    Slot(PointerValue<'ctx>),
}

/// Where the math functions that have no native instruction come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MathLib {
    /// LLVM's intrinsics (`llvm.exp`, ...) and C libm calls (`tanhf`, ...): host code.
    Libm,
    /// CUDA's libdevice (`__nv_expf`, ...) for everything a GPU target has no exact
    /// instruction for (see `super::expr`); whoever builds the module links libdevice
    /// afterwards.
    Libdevice,
}

/// One function under construction.
pub(crate) struct FnCx<'ctx> {
    pub(crate) f: FunctionValue<'ctx>,
    allocas: Builder<'ctx>,
    pub(crate) vars: HashMap<Var, PointerValue<'ctx>>,
    pub(crate) bufs: HashMap<Buf, BufLoc<'ctx>>,
    pub(crate) exit: BasicBlock<'ctx>,
}

/// One kernel's lowering.
pub(crate) struct Cg<'ctx, 'a> {
    pub(crate) cx: &'ctx Context,
    pub(crate) module: &'a Module<'ctx>,
    pub(crate) b: Builder<'ctx>,
    pub(crate) func: &'a Func,
    pub(crate) symbol: &'a str,
    pub(crate) native_f16: bool,
    /// Where non-native math comes from ([`MathLib::Libm`] unless the builder of device code
    /// says so).
    pub(crate) math: MathLib,
    /// The widest float vector the target has, in bits (128, 256 with AVX/AVX2, 512 with
    /// AVX-512): sizes the register blocking of tile products (`super::tile`).
    pub(crate) vector_bits: u32,
}

pub(crate) fn internal(msg: &str) -> LlvmError {
    LlvmError::Internal(msg.to_string())
}

/// The integer in `v` (validated KIR makes the kinds agree; a mismatch is a backend bug).
pub(crate) fn int(v: BasicValueEnum<'_>) -> Result<IntValue<'_>, LlvmError> {
    match v {
        BasicValueEnum::IntValue(i) => Ok(i),
        _ => Err(internal("expected an integer value")),
    }
}

/// The float in `v`.
pub(crate) fn float(v: BasicValueEnum<'_>) -> Result<FloatValue<'_>, LlvmError> {
    match v {
        BasicValueEnum::FloatValue(x) => Ok(x),
        _ => Err(internal("expected a float value")),
    }
}

impl<'ctx, 'a> Cg<'ctx, 'a> {
    pub(crate) fn new(cx: &'ctx Context, module: &'a Module<'ctx>, func: &'a Func, symbol: &'a str, native_f16: bool) -> Self {
        Cg { cx, module, b: cx.create_builder(), func, symbol, native_f16, math: MathLib::Libm, vector_bits: 128 }
    }

    pub(crate) fn ptr_type(&self) -> inkwell::types::PointerType<'ctx> {
        self.cx.ptr_type(AddressSpace::default())
    }

    /// Adds a function with `nounwind` (nothing here unwinds).
    pub(crate) fn add_function(&self, name: &str, ty: inkwell::types::FunctionType<'ctx>, linkage: Option<Linkage>) -> FunctionValue<'ctx> {
        let f = self.module.add_function(name, ty, linkage);
        let kind = inkwell::attributes::Attribute::get_named_enum_kind_id("nounwind");
        f.add_attribute(AttributeLoc::Function, self.cx.create_enum_attribute(kind, 0));
        f
    }

    /// Adds enum attribute `name` to `f` at `loc`.
    pub(crate) fn attr(&self, f: FunctionValue<'ctx>, loc: AttributeLoc, name: &str) {
        let kind = inkwell::attributes::Attribute::get_named_enum_kind_id(name);
        f.add_attribute(loc, self.cx.create_enum_attribute(kind, 0));
    }

    /// The declaration of intrinsic `name` overloaded on `tys`.
    pub(crate) fn intrinsic(&self, name: &str, tys: &[BasicTypeEnum<'ctx>]) -> Result<FunctionValue<'ctx>, LlvmError> {
        Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, tys))
            .ok_or_else(|| LlvmError::Internal(format!("no intrinsic {name}")))
    }

    /// The declaration of external C function `name` (declared on first use).
    pub(crate) fn extern_fn(
        &self,
        name: &str,
        ret: Option<BasicTypeEnum<'ctx>>,
        params: &[BasicMetadataTypeEnum<'ctx>],
    ) -> FunctionValue<'ctx> {
        if let Some(f) = self.module.get_function(name) {
            return f;
        }
        let ty = match ret {
            Some(r) => r.fn_type(params, false),
            None => self.cx.void_type().fn_type(params, false),
        };
        self.add_function(name, ty, Some(Linkage::External))
    }

    /// Calls `f` and returns its (non-void) result.
    pub(crate) fn call(&self, f: FunctionValue<'ctx>, args: &[BasicMetadataValueEnum<'ctx>]) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        self.b
            .build_call(f, args, "")
            .map_err(LlvmError::from)?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| internal("call without a value"))
    }

    /// Starts function `f`: the `allocas` block, `start` (where the builder is left) and
    /// `exit` (empty; the caller fills it). `init` runs with a builder at the end of the
    /// `allocas` block (for the caller's own slots: a return code, an error slot); its result
    /// is returned with the function's state.
    pub(crate) fn begin<T>(
        &self,
        f: FunctionValue<'ctx>,
        init: impl FnOnce(&Builder<'ctx>) -> Result<T, LlvmError>,
    ) -> Result<(FnCx<'ctx>, T), LlvmError> {
        let entry = self.cx.append_basic_block(f, "allocas");
        let start = self.cx.append_basic_block(f, "start");
        let exit = self.cx.append_basic_block(f, "exit");
        let allocas = self.cx.create_builder();
        allocas.position_at_end(entry);
        let br = allocas.build_unconditional_branch(start)?;
        allocas.position_before(&br);
        let state = init(&allocas)?;
        self.b.position_at_end(start);
        Ok((FnCx { f, allocas, vars: HashMap::new(), bufs: HashMap::new(), exit }, state))
    }

    /// A new alloca of `ty` in the function's `allocas` block.
    pub(crate) fn alloca(&self, fx: &FnCx<'ctx>, ty: impl BasicType<'ctx>, name: &str) -> Result<PointerValue<'ctx>, LlvmError> {
        Ok(fx.allocas.build_alloca(ty, name)?)
    }

    /// The slot of variable `v` in the current function.
    pub(crate) fn var_ptr(&self, fx: &mut FnCx<'ctx>, v: Var) -> Result<PointerValue<'ctx>, LlvmError> {
        if let Some(&p) = fx.vars.get(&v) {
            return Ok(p);
        }
        let d = self.func.var(v);
        let p = self.alloca(fx, types::value(self.cx, d.ty), &d.name)?;
        fx.vars.insert(v, p);
        Ok(p)
    }

    /// The base pointer of buffer `b` in the current function (loads a heap slot; allocates
    /// a stack array on first use).
    pub(crate) fn buf_ptr(&self, fx: &mut FnCx<'ctx>, b: Buf) -> Result<PointerValue<'ctx>, LlvmError> {
        match fx.bufs.get(&b) {
            Some(BufLoc::Ptr(p)) => return Ok(*p),
            Some(BufLoc::Slot(s)) => {
                let name = &self.func.buf(b).name;
                return Ok(self.b.build_load(self.ptr_type(), *s, name)?.into_pointer_value());
            }
            None => {}
        }
        let d = self.func.buf(b);
        // Argument and heap buffers are bound when a function begins, and so are shared ones
        // (GPU dialect) by the lowering that supports them.
        let BufKind::Stack(n) = d.kind else {
            return Err(LlvmError::Internal(format!("buffer '{}' is not available in this function", d.name)));
        };
        let elem = types::memory(self.cx, d.elem, self.native_f16);
        let p = self.alloca(fx, elem.array_type(n), &d.name)?;
        p.as_instruction()
            .ok_or_else(|| internal("alloca is not an instruction"))?
            .set_alignment(64)
            .map_err(|e| internal(&e.to_string()))?;
        fx.bufs.insert(b, BufLoc::Ptr(p));
        Ok(p)
    }

    /// Loads variable `v`.
    pub(crate) fn load_var(&self, fx: &mut FnCx<'ctx>, v: Var) -> Result<BasicValueEnum<'ctx>, LlvmError> {
        let p = self.var_ptr(fx, v)?;
        let d = self.func.var(v);
        Ok(self.b.build_load(types::value(self.cx, d.ty), p, &d.name)?)
    }

    /// Stores `x` into variable `v`.
    pub(crate) fn store_var(&self, fx: &mut FnCx<'ctx>, v: Var, x: BasicValueEnum<'ctx>) -> Result<(), LlvmError> {
        let p = self.var_ptr(fx, v)?;
        self.b.build_store(p, x)?;
        Ok(())
    }

    /// Continues in a fresh block after the current one was terminated.
    pub(crate) fn dead_block(&self, fx: &FnCx<'ctx>) {
        let bb = self.cx.append_basic_block(fx.f, "dead");
        self.b.position_at_end(bb);
    }

    /// The element pointer `base[index]` for elements of memory type `elem`.
    pub(crate) fn gep(
        &self,
        elem: BasicTypeEnum<'ctx>,
        base: PointerValue<'ctx>,
        index: IntValue<'ctx>,
    ) -> Result<PointerValue<'ctx>, LlvmError> {
        // SAFETY (of the LLVM call): one i64 index on a pointer to `elem`, a well-formed GEP.
        Ok(unsafe { self.b.build_in_bounds_gep(elem, base, &[index], "")? })
    }
}
