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
//! - `target`: [`TargetOptions`] → [`ResolvedTarget`] (host defaults, CPU/feature checks) and
//!   the `TargetMachine`; `cpus`: the x86 CPU/feature names LLVM knows;
//! - `validate`: KIR well-formedness (types, indices, placement), so lowering never panics;
//! - `types`: KIR types → LLVM types (values, memory, ABI slots, C types);
//! - `codegen`: module/function state (allocas, buffers, exit blocks, declarations);
//! - `expr`, `half`: expressions (math, casts, loads with F16/BF16 conversion);
//! - `stmt`: statements (loops, branches, stores, heap allocation, failure);
//! - `outline`: `Parallel` bodies outlined for `tfmc_parallel_for`;
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
mod codegen;
mod cpus;
mod expr;
mod half;
mod jit;
mod outline;
mod stmt;
mod target;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_aot;
#[cfg(test)]
mod tests_ops;
mod types;
mod validate;

use std::collections::HashSet;

use inkwell::attributes::AttributeLoc;
use inkwell::context::Context;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{FileType, RelocMode, TargetMachine};

use crate::schedule::kir;

pub use aot::build_shared_library;
pub use jit::{Jit, PackedFn, with_jit};
pub use target::{ResolvedTarget, TargetOptions, resolve_target};

/// An exported kernel: its KIR and its C symbol (typed entry `symbol`, packed entry
/// `{symbol}_packed`). The typed entry's C parameter types follow from the KIR: a pointer per
/// argument buffer, `int64_t` per dim, and per param variable `int64_t`/`int32_t`/`bool`/
/// `float`/`double` by its type.
#[derive(Clone, Debug)]
pub struct Export<'a> {
    /// The kernel.
    pub func: &'a kir::Func,
    /// Its C symbol.
    pub symbol: String,
}

impl<'a> Export<'a> {
    /// The export of `func` as `symbol`.
    pub fn new(func: &'a kir::Func, symbol: impl Into<String>) -> Export<'a> {
        Export {
            func,
            symbol: symbol.into(),
        }
    }
}

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
    let buf = tm
        .write_to_memory_buffer(&module, FileType::Assembly)
        .map_err(|e| LlvmError::Codegen(e.to_string()))?;
    Ok(String::from_utf8_lossy(buf.as_slice()).into_owned())
}

/// External names the backend itself declares or links: an export may not take them.
const RESERVED: &[&str] = &[
    "tfmc_parallel_for",
    "tfmc_set_num_threads",
    "tfmc_get_num_threads",
    "tfmc_manifest",
    "tfmc_manifest_len",
    "calloc",
    "free",
    "main",
];

/// Checks that every symbol is a C identifier, not reserved, and that no two exports' entry
/// names (`s`, `s_packed`) clash.
fn check_symbols(exports: &[Export<'_>]) -> Result<(), LlvmError> {
    let mut seen = HashSet::new();
    for e in exports {
        let s = e.symbol.as_str();
        let bad = |reason| {
            Err(LlvmError::Symbol {
                symbol: s.to_string(),
                reason,
            })
        };
        let mut chars = s.chars();
        let ident = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            return bad("not a C identifier");
        }
        if RESERVED.contains(&s) || jit::LIBM_NAMES.contains(&s) || s.starts_with("__") {
            return bad("reserved by the runtime or the C library");
        }
        for name in [s.to_string(), format!("{s}_packed")] {
            if !seen.insert(name) {
                return bad("exported twice (or clashes with another export's `_packed` entry)");
            }
        }
    }
    Ok(())
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
    check_symbols(exports)?;
    for e in exports {
        validate::check(e.func).map_err(|message| LlvmError::InvalidKir {
            kernel: e.func.name.clone(),
            message,
        })?;
    }
    let module = cx.create_module("tfmc");
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    let native_f16 = target.features.iter().any(|f| f == "f16c" || f == "avx512fp16");
    for e in exports {
        abi::emit_export(cx, &module, e, native_f16)?;
    }
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
    module
        .run_passes(&format!("default<O{opt_level}>"), tm, PassBuilderOptions::create())
        .map_err(|e| LlvmError::Passes(e.to_string()))?;
    Ok(module)
}
