//! tfmc: the compiler for attention variants written in `.tfm`.
//!
//! Pipeline (one function per stage, in order): [`load::load_files()`] (read + parse + follow
//! `use`) → [`check::check_program`] (names, indices, shapes, dtypes, filters → [`hir`]) →
//! [`interp`] (the f64 reference interpreter, the correctness oracle). Code generation is
//! [`driver`]: for one [`driver::Target`], `ir::lower` → `optimize` → `schedule` → a
//! [`backend`] (LLVM, Cranelift, NVPTX), then a JIT run, an artifact or a text dump. The
//! operator semantics the interpreter, the IR evaluator and the schedule share live in one
//! place; see `docs/ARCHITECTURE.md` for the layering rules.

pub mod backend;
pub mod bench;
pub mod bind;
pub mod check;
pub mod driver;
pub mod hir;
pub mod inputs;
pub mod interp;
pub mod ir;
pub mod load;
pub mod optimize;
pub mod schedule;
pub mod semantics;
#[cfg(test)]
mod testing;
pub mod watch;

pub use hir::Program;
pub use tfm_dsl::{Diagnostic, Diagnostics};

/// Loads, parses and checks the program whose entry file is `path`. Warnings are dropped;
/// use [`load_with_warnings`] to see them.
pub fn load(path: &std::path::Path) -> Result<Program, Diagnostics> {
    load_with_warnings(path).map(|(p, _)| p)
}

/// Like [`load`], also returning warnings.
pub fn load_with_warnings(path: &std::path::Path) -> Result<(Program, Vec<Diagnostic>), Diagnostics> {
    with_stack(|| {
        let l = load::load_files(path)?;
        check::check_program(l.sources, &l.files)
    })
}

/// Parses and checks a program given as text (`use` paths resolve against the working
/// directory). `name` is shown in diagnostics.
pub fn load_str(name: &str, text: &str) -> Result<Program, Diagnostics> {
    with_stack(|| {
        let l = load::load_text(name, text)?;
        check::check_program(l.sources, &l.files).map(|(p, _)| p)
    })
}

/// Stack size for the recursive passes (parser, checker, interpreter). Expression depth is
/// bounded by the parser (`tfm_dsl::parser::MAX_EXPR_DEPTH`), and this leaves a wide margin
/// for that depth in unoptimized builds, whatever the caller's own stack (test threads have
/// 2 MiB). Only touched pages are committed.
const STACK_BYTES: usize = 256 << 20;

/// Runs `f` on a thread with a [`STACK_BYTES`] stack (or on this thread if one cannot be
/// spawned), so deeply nested but legal input cannot overflow the caller's stack.
pub(crate) fn with_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let cell = std::sync::Mutex::new(Some(f));
    let take = || cell.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    let spawned = std::thread::scope(|scope| {
        let h = std::thread::Builder::new().stack_size(STACK_BYTES).spawn_scoped(scope, || take().map(|f| f())).ok()?;
        match h.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    match spawned {
        Some(v) => v,
        // The thread could not be spawned, so the closure is still in the cell.
        None => (take().expect("closure not yet run"))(),
    }
}
