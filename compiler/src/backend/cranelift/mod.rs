//! The Cranelift backend: the fast-compile JIT tier. Translates the same KIR
//! ([`crate::schedule::kir`]) as the LLVM backend into Cranelift IR and JIT-compiles it in
//! milliseconds ([`with_jit`]), or prints the IR ([`emit_clif`]).
//!
//! Owns the public API (mirroring `backend::llvm`'s JIT, so callers swap backends by one line)
//! and the one pipeline both outputs share (`translate`): check the export symbols
//! ([`crate::backend::check_symbols`]) and every kernel
//! ([`crate::schedule::validate::check`]) → per export, build the packed entry
//! `{symbol}_packed` and one function per `Parallel` body → run Cranelift's verifier (debug
//! builds and tests; its failure is [`CraneliftError::Verify`], never a panic) → compile the
//! functions (in parallel) and define them in the JIT module, or print them.
//!
//! Module map:
//! - `jit`: the host ISA (flags from `cranelift-native`), the JIT module with every runtime
//!   and math symbol registered, parallel compilation of a module's functions, [`Jit`] and
//!   [`with_jit`];
//! - `func`: one Cranelift function under construction (variables, buffers, calls, memory);
//! - `expr`, `half`: scalar expressions (math, casts, F16/BF16 conversion);
//! - `stmt`: statements (loops, branches, stores, heap allocation, failure);
//! - `outline`: `Parallel` bodies as `extern "C" fn(ctx, lo, hi)` for `tfmc_parallel_for`
//!   (the LLVM backend's context layout and error-slot protocol);
//! - `entry`: the packed entry (the kernel itself) and the per-export driver;
//! - `vectorize`: which innermost loops run 4 lanes at a time (a KIR analysis; also
//!   [`vector_report`], the verdict on every innermost loop of a kernel);
//!   `vloop`: emitting those loops (f32x4 / i32x4, small bodies unrolled 4 times);
//! - `tests*`: hand-written KIR (`tests`, `tests_ops`, `tests_vec`) and every `lib/` kernel
//!   against the interpreter (`tests_lib`).
//!
//! Invariant of every generated kernel (the ABI contract, `tfmc_runtime::manifest`): output
//! buffers overlap no other buffer; the vectorizer relies on it (distinct argument indices are
//! distinct memory).

mod entry;
mod expr;
mod func;
mod half;
mod jit;
mod outline;
mod stmt;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_lib;
#[cfg(test)]
mod tests_ops;
#[cfg(test)]
mod tests_vec;
mod vectorize;
mod vloop;

use cranelift_codegen::ir::Function;
use cranelift_module::FuncId;

use crate::schedule::kir;

pub use super::Export;
pub use super::llvm::PackedFn;
pub use jit::{Jit, with_jit};
pub use vectorize::{LoopReport, vector_report};

/// Cranelift's optimization level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OptLevel {
    /// No optimization (fastest compile).
    None,
    /// Cranelift's `speed` level (e-graph mid-end, LICM, GVN).
    #[default]
    Speed,
}

/// Options of the Cranelift backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CraneliftOptions {
    /// Optimization level (default [`OptLevel::Speed`]).
    pub opt_level: OptLevel,
    /// Vectorize qualifying innermost loops (default true; only used when the host has
    /// SSE4.2, which Cranelift's 128-bit vector lowering wants).
    pub simd: bool,
}

impl Default for CraneliftOptions {
    fn default() -> Self {
        CraneliftOptions { opt_level: OptLevel::Speed, simd: true }
    }
}

/// Why the backend could not produce code.
#[derive(Debug, thiserror::Error)]
pub enum CraneliftError {
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
    /// The host ISA could not be set up.
    #[error("Cranelift cannot target this host: {0}")]
    Host(String),
    /// A stack buffer too large for a Cranelift stack slot.
    #[error("kernel '{kernel}': stack buffer '{buffer}' of {bytes} bytes is too large")]
    StackBuffer {
        /// The kernel's name.
        kernel: String,
        /// The buffer's name.
        buffer: String,
        /// Its size in bytes.
        bytes: u64,
    },
    /// Cranelift's verifier rejected a generated function (a backend bug).
    #[error("Cranelift verifier rejected '{function}' of kernel '{kernel}':\n{message}")]
    Verify {
        /// The kernel's name.
        kernel: String,
        /// The Cranelift function.
        function: String,
        /// The verifier's report.
        message: String,
    },
    /// Code generation or linking failed.
    #[error("Cranelift could not compile '{function}' of kernel '{kernel}': {message}")]
    Compile {
        /// The kernel's name.
        kernel: String,
        /// The Cranelift function.
        function: String,
        /// Cranelift's message.
        message: String,
    },
    /// The JIT module could not be declared, finalized or lacks an entry.
    #[error("Cranelift JIT: {0}")]
    Jit(String),
    /// A broken backend invariant.
    #[error("internal Cranelift backend error in kernel '{kernel}': {message}")]
    Internal {
        /// The kernel's name.
        kernel: String,
        /// What went wrong.
        message: String,
    },
}

/// Textual Cranelift IR of the exports as translated (before Cranelift's own optimizations):
/// a legend naming every function of the module (`; u0:N = name`, Cranelift prints functions
/// by id), then one function after another: each packed entry followed by its outlined
/// parallel bodies. Vector loops appear as `f32x4`/`i32x4` code when `opts.simd` is on and
/// the host allows it; `fma` appears where the host has FMA. Every function is verified first
/// (debug builds).
pub fn emit_clif(exports: &[Export<'_>], opts: &CraneliftOptions) -> Result<String, CraneliftError> {
    use cranelift_module::Module;
    let mut cx = jit::Cx::new(opts)?;
    let mut funcs = String::new();
    translate(&mut cx, exports, &mut |cx, kernel, _, func| {
        cx.verify(kernel, &func)?;
        funcs.push_str(&func.display().to_string());
        funcs.push('\n');
        Ok(())
    })?;
    let mut out = String::new();
    for (id, decl) in cx.module.declarations().get_functions() {
        let name = decl.name.as_deref().unwrap_or("(anonymous)");
        out.push_str(&format!("; u0:{} = {name} ({:?})\n", id.as_u32(), decl.linkage));
    }
    out.push('\n');
    out.push_str(&funcs);
    Ok(out)
}

/// Where `translate` hands each finished function: the context, the kernel's name, the
/// function's id in the module and the function.
type Sink<'s> = dyn FnMut(&mut jit::Cx, &str, FuncId, Function) -> Result<(), CraneliftError> + 's;

/// The shared pipeline: checks the exports, then translates each kernel and its parallel
/// bodies, handing every finished function to `sink`.
fn translate(cx: &mut jit::Cx, exports: &[Export<'_>], sink: &mut Sink<'_>) -> Result<(), CraneliftError> {
    super::check_symbols(exports).map_err(|(symbol, reason)| CraneliftError::Symbol { symbol, reason })?;
    for e in exports {
        crate::schedule::validate::check(e.func).map_err(|message| CraneliftError::InvalidKir { kernel: e.func.name.clone(), message })?;
    }
    // Tile products run as their scalar loops here (the vectorizer may still vectorize them).
    let expanded: Vec<kir::Func> = exports.iter().map(|e| crate::schedule::expand::expand_tile_products(e.func)).collect();
    for (e, func) in exports.iter().zip(&expanded) {
        entry::translate_export(cx, &Export { func, symbol: e.symbol.clone() }, sink)?;
    }
    Ok(())
}
