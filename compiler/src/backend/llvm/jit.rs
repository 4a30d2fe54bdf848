//! In-process compilation (MCJIT). Owns [`with_jit`] and [`Jit`], and the symbol map the JIT
//! links against: `tfmc_parallel_for` → `tfmc_runtime::parallel::tfmc_parallel_for`, and every
//! C math function LLVM may call (libm functions the lowering calls, plus libcalls codegen emits
//! for intrinsics it cannot inline, e.g. `expf`, `fmodf`, `sincosf`, `floorf` without SSE4.1)
//! → Rust functions (std's, which call the process's libm; `erf`/`exp10` from the `libm` crate).
//! Mapping them all means JIT linking never depends on what the host binary happens to export
//! (MCJIT aborts the process on an unresolved symbol).
//!
//! Invariant: the context, module and execution engine live exactly as long as the closure
//! given to [`with_jit`]; entry points must not be called after it returns.

use std::collections::HashMap;
use std::ffi::c_void;

use inkwell::AddressSpace;
use inkwell::context::Context;
use inkwell::execution_engine::ExecutionEngine;
use inkwell::module::{Linkage, Module};
use inkwell::targets::RelocMode;
use inkwell::types::BasicMetadataTypeEnum;

use super::{Export, LlvmError, TargetOptions, build_module, target};
use crate::backend::host::{Sig, math_symbols};

/// A packed entry: `int32_t f(void *const *bufs, const int64_t *dims, const uint64_t *params)`.
pub type PackedFn = unsafe extern "C" fn(bufs: *const *mut c_void, dims: *const i64, params: *const u64) -> i32;

/// Compiled exports, valid inside [`with_jit`]'s closure.
pub struct Jit<'a> {
    _ee: ExecutionEngine<'a>,
    packed: HashMap<String, PackedFn>,
    typed: HashMap<String, usize>,
}

impl Jit<'_> {
    /// The packed entry of export `symbol`.
    pub fn entry(&self, symbol: &str) -> Option<PackedFn> {
        self.packed.get(symbol).copied()
    }

    /// The address of the typed entry of export `symbol` (cast it to the C signature the
    /// export's KIR implies).
    pub fn typed_entry(&self, symbol: &str) -> Option<*const c_void> {
        self.typed.get(symbol).map(|&a| a as *const c_void)
    }
}

/// Compiles `exports` in memory (O3 unless `opts` say otherwise) and runs `f` with the
/// compiled entries; the JIT lives until `f` returns. Code for a named CPU or feature string
/// is only compiled when this machine has what it may use ([`LlvmError::HostLacks`]
/// otherwise): calling it would die with an illegal instruction.
pub fn with_jit<R>(exports: &[Export<'_>], opts: &TargetOptions, f: impl FnOnce(&Jit<'_>) -> R) -> Result<R, LlvmError> {
    if opts.cpu.is_some() || opts.features.is_some() {
        target::check_host(opts)?;
    }
    let (target, features) = target::resolve(opts)?;
    let tm = target::machine(&target, &features, opts.opt_level, RelocMode::Default)?;
    let cx = Context::create();
    let module = build_module(&cx, exports, &target, &features, &tm, opts.opt_level)?;
    let ee = engine(&cx, &module, opts.opt_level)?;
    let mut packed = HashMap::new();
    let mut typed = HashMap::new();
    for e in exports {
        let lookup = |name: &str| ee.get_function_address(name).map_err(|err| LlvmError::Jit(format!("no entry '{name}': {err}")));
        let p = lookup(&format!("{}_packed", e.symbol))?;
        // SAFETY: `{symbol}_packed` is generated with exactly PackedFn's signature (abi.rs).
        packed.insert(e.symbol.clone(), unsafe { std::mem::transmute::<usize, PackedFn>(p) });
        typed.insert(e.symbol.clone(), lookup(&e.symbol)?);
    }
    let jit = Jit { _ee: ee, packed, typed };
    let r = f(&jit);
    drop(jit);
    drop(module);
    Ok(r)
}

/// An MCJIT engine for `module` (optimized already) with every host symbol mapped
/// (`tfmc_parallel_for` and the math functions).
pub(crate) fn engine<'ctx>(cx: &'ctx Context, module: &Module<'ctx>, opt_level: u8) -> Result<ExecutionEngine<'ctx>, LlvmError> {
    let decls = declare_symbols(cx, module);
    let ee = module.create_jit_execution_engine(target::level(opt_level)).map_err(|e| LlvmError::Jit(e.to_string()))?;
    for (func, addr) in decls {
        ee.add_global_mapping(&func, addr);
    }
    Ok(ee)
}

/// Declares (if absent) every symbol the JIT maps, returning the declarations and addresses.
fn declare_symbols<'ctx>(cx: &'ctx Context, module: &Module<'ctx>) -> Vec<(inkwell::values::FunctionValue<'ctx>, usize)> {
    let (f32t, f64t) = (cx.f32_type(), cx.f64_type());
    let ptr = cx.ptr_type(AddressSpace::default());
    let mut out = Vec::new();
    let mut add = |name: &str, ty: inkwell::types::FunctionType<'ctx>, addr: usize| {
        let f = module.get_function(name).unwrap_or_else(|| module.add_function(name, ty, Some(Linkage::External)));
        out.push((f, addr));
    };
    let pp: [BasicMetadataTypeEnum<'ctx>; 3] = [ptr.into(), ptr.into(), cx.i64_type().into()];
    add("tfmc_parallel_for", cx.void_type().fn_type(&pp, false), crate::backend::host::parallel_for());
    let i64t = cx.i64_type();
    add("tfmc_calloc", ptr.fn_type(&[i64t.into(), i64t.into()], false), crate::backend::host::heap_calloc());
    add("tfmc_malloc", ptr.fn_type(&[i64t.into(), i64t.into()], false), crate::backend::host::heap_malloc());
    add("tfmc_free", cx.void_type().fn_type(&[ptr.into()], false), crate::backend::host::heap_free());
    for (name, sig, addr) in math_symbols() {
        let ty = match sig {
            Sig::F32 => f32t.fn_type(&[f32t.into()], false),
            Sig::F64 => f64t.fn_type(&[f64t.into()], false),
            Sig::F32x2 => f32t.fn_type(&[f32t.into(), f32t.into()], false),
            Sig::F64x2 => f64t.fn_type(&[f64t.into(), f64t.into()], false),
            Sig::SinCosF32 => cx.void_type().fn_type(&[f32t.into(), ptr.into(), ptr.into()], false),
            Sig::SinCosF64 => cx.void_type().fn_type(&[f64t.into(), ptr.into(), ptr.into()], false),
        };
        add(name, ty, addr);
    }
    out
}
