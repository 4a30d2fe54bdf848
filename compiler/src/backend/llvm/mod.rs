//! The LLVM backend: translates KIR ([`crate::schedule::kir`]) to LLVM IR with inkwell, then
//! to machine code in memory ([`with_jit`]), to text ([`emit_llvm`], [`emit_asm`]) or to a
//! shared library ([`build_shared_library`]).
//!
//! Owns the public API and the one pipeline every output shares (`build_module`): check the
//! exports (KIR well-formed, symbols unique C identifiers) → lower each kernel → put
//! `target-cpu`/`target-features` on every defined function → `module.verify()` →
//! `default<O{n}>`. Nothing is emitted for a module that fails to verify.
//!
//! Module map:
//! - `target`: [`TargetOptions`] → the resolved target (host defaults, CPU/feature checks; the
//!   manifest's target is [`resolve_target`]) and
//!   the `TargetMachine`; `cpus`: the x86 CPU/feature names LLVM knows;
//! - `types`: KIR types → LLVM types (values, memory, ABI slots, C types);
//! - `codegen`: module/function state (allocas, buffers, exit blocks, declarations);
//! - `expr`, `half`: expressions (math, casts, loads with F16/BF16 conversion);
//! - `stmt`: the statements every kind of code shares (loops, branches, stores, failure
//!   control flow);
//! - `lowering`: [`lowering::Lowering`], the one trait behind which the statements that depend
//!   on where the code runs are lowered (parallel loops, the GPU dialect, heap allocation,
//!   recording a failure); the core names no implementation, so device backends build on this
//!   one and never the reverse;
//! - `cpu_lowering`: the host kernels' `Lowering` (heap allocation, failure codes);
//!   `outline`: their `Parallel` bodies outlined for `tfmc_parallel_for`;
//! - `abi`: the packed entry `{symbol}_packed`, the typed wrapper `{symbol}`, the kernel function;
//! - `jit`: MCJIT with the host runtime and math symbols mapped; `aot`: object + C runtime →
//!   sealed shared library;
//! - `tests` (KIR-building helpers, buffers, loops, heap, failures, ABI), `tests_ops` (single
//!   operations, math, F16/BF16), `tests_aot` (shared libraries, text output, errors).
//!
//! Invariant of every generated kernel (the ABI contract, `tfmc_runtime::manifest`): output
//! buffers do not overlap any other buffer. The kernel function takes buffer pointers as
//! `noalias` parameters, which is what lets LLVM vectorize loops that store into outputs; a
//! caller passing overlapping outputs gets undefined results. Inputs may alias each other
//! (they are only read).

mod abi;
mod aot;
pub(crate) mod codegen;
mod cpu_lowering;
mod cpus;
mod expr;
mod half;
pub(crate) mod jit;
pub(crate) mod lowering;
mod outline;
mod stmt;
pub(crate) mod target;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_aot;
#[cfg(test)]
mod tests_ops;
mod tile;
pub(crate) mod types;

use inkwell::attributes::AttributeLoc;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{FileType, RelocMode, TargetMachine};

pub use super::Export;
pub use aot::build_shared_library;
pub use jit::{Jit, PackedFn, with_jit};
pub(crate) use target::ResolvedTarget;
pub use target::{TargetOptions, resolve_target};

/// Why the backend could not produce code.
#[derive(Debug, thiserror::Error)]
pub enum LlvmError {
    /// `TargetOptions::cpu` names no CPU LLVM knows for the target.
    #[error("unknown target cpu '{0}'")]
    UnknownCpu(String),
    /// A feature in `TargetOptions::features` that LLVM does not know.
    #[error("unknown target feature '{0}'")]
    UnknownFeature(String),
    /// `TargetOptions::opt_level` above 3.
    #[error("optimization level {0} is out of range (0..=3)")]
    OptLevel(u8),
    /// The target could not be set up.
    #[error("target '{triple}': {message}")]
    Target {
        /// The target triple.
        triple: String,
        /// LLVM's message.
        message: String,
    },
    /// An export symbol is not a C identifier, is reserved, or clashes with another.
    #[error("invalid export symbol '{symbol}': {reason}")]
    Symbol {
        /// The symbol.
        symbol: String,
        /// Why.
        reason: &'static str,
    },
    /// KIR the module docs do not allow (a type mismatch, an out-of-range index, ...).
    #[error("invalid KIR in kernel '{kernel}': {message}")]
    InvalidKir {
        /// The kernel's name.
        kernel: String,
        /// What is wrong.
        message: String,
    },
    /// The generated module did not verify (a backend bug).
    #[error("LLVM verifier: {0}")]
    Verify(String),
    /// The optimization pipeline failed.
    #[error("LLVM optimizer: {0}")]
    Passes(String),
    /// Instruction selection / object emission failed.
    #[error("LLVM code generation: {0}")]
    Codegen(String),
    /// The JIT could not be created or lacks an entry.
    #[error("LLVM JIT: {0}")]
    Jit(String),
    /// The IR builder refused an instruction (a backend bug).
    #[error("LLVM IR builder: {0}")]
    Builder(String),
    /// `cc` could not be run, or failed.
    #[error("the C compiler `cc` failed: {0}")]
    Cc(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A broken backend invariant.
    #[error("internal LLVM backend error: {0}")]
    Internal(String),
}

impl From<inkwell::builder::BuilderError> for LlvmError {
    fn from(e: inkwell::builder::BuilderError) -> Self {
        LlvmError::Builder(e.to_string())
    }
}

/// Textual LLVM IR of the exports, after optimization.
pub fn emit_llvm(exports: &[Export<'_>], opts: &TargetOptions) -> Result<String, LlvmError> {
    let (target, features) = target::resolve(opts)?;
    let tm = target::machine(&target, &features, opts.opt_level, RelocMode::Default)?;
    let cx = Context::create();
    let module = build_module(&cx, exports, &target, &features, &tm, opts.opt_level)?;
    Ok(module.print_to_string().to_string())
}

/// Assembly for the exports (host-specific: not for snapshots).
pub fn emit_asm(exports: &[Export<'_>], opts: &TargetOptions) -> Result<String, LlvmError> {
    let (target, features) = target::resolve(opts)?;
    let tm = target::machine(&target, &features, opts.opt_level, RelocMode::Default)?;
    let cx = Context::create();
    let module = build_module(&cx, exports, &target, &features, &tm, opts.opt_level)?;
    let buf = tm.write_to_memory_buffer(&module, FileType::Assembly).map_err(|e| LlvmError::Codegen(e.to_string()))?;
    Ok(String::from_utf8_lossy(buf.as_slice()).into_owned())
}

/// The shared pipeline: checks, lowers, sets target attributes, verifies and optimizes.
fn build_module<'ctx>(
    cx: &'ctx Context,
    exports: &[Export<'_>],
    target: &ResolvedTarget,
    features: &str,
    tm: &TargetMachine,
    opt_level: u8,
) -> Result<Module<'ctx>, LlvmError> {
    check_exports(exports)?;
    let module = new_module(cx, tm);
    let native_f16 = target.features.iter().any(|f| f == "f16c" || f == "avx512fp16");
    let vector_bits = target::vector_bits(target);
    for e in exports {
        abi::emit_export(cx, &module, e, native_f16, vector_bits)?;
    }
    finish_module(cx, &module, target, features, tm, opt_level)?;
    Ok(module)
}

/// Checks the exports' symbols ([`super::check_symbols`]) and KIR
/// ([`crate::schedule::validate::check`]).
pub(crate) fn check_exports(exports: &[Export<'_>]) -> Result<(), LlvmError> {
    super::check_symbols(exports).map_err(|(symbol, reason)| LlvmError::Symbol { symbol, reason })?;
    for e in exports {
        crate::schedule::validate::check(e.func).map_err(|message| LlvmError::InvalidKir { kernel: e.func.name.clone(), message })?;
    }
    Ok(())
}

/// An empty module with `tm`'s triple and data layout.
pub(crate) fn new_module<'ctx>(cx: &'ctx Context, tm: &TargetMachine) -> Module<'ctx> {
    let module = cx.create_module("tfmc");
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    module
}

/// The end of the pipeline for a host target: `target-cpu`/`target-features` on every defined
/// function, `module.verify()`, then `default<O{opt_level}>`.
pub(crate) fn finish_module<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
    target: &ResolvedTarget,
    features: &str,
    tm: &TargetMachine,
    opt_level: u8,
) -> Result<(), LlvmError> {
    let cpu = cx.create_string_attribute("target-cpu", &target.cpu);
    let feats = cx.create_string_attribute("target-features", features);
    // Some CPUs' tuning (e.g. znver4/5) prefers 256-bit vectors; the kernels' loops are long
    // and FMA-bound, so use the full AVX-512 width where the target has it.
    let wide = target.features.iter().any(|f| f == "avx512f");
    let width = cx.create_string_attribute("prefer-vector-width", "512");
    let mut f = module.get_first_function();
    while let Some(func) = f {
        if func.count_basic_blocks() > 0 {
            func.add_attribute(AttributeLoc::Function, cpu);
            func.add_attribute(AttributeLoc::Function, feats);
            if wide {
                func.add_attribute(AttributeLoc::Function, width);
            }
        }
        f = func.get_next_function();
    }
    module.verify().map_err(|e| LlvmError::Verify(e.to_string()))?;
    module.run_passes(&format!("default<O{opt_level}>"), tm, PassBuilderOptions::create()).map_err(|e| LlvmError::Passes(e.to_string()))?;
    Ok(())
}
