//! tfmc: the compiler for attention variants written in `.tfm`.
//!
//! Pipeline (one function per stage, in order): [`load::load_files`] (read + parse + follow
//! `use`) → [`check::check_program`] (names, indices, shapes, dtypes, filters → [`hir`]) →
//! [`interp`] (the f64 reference interpreter, the correctness oracle). Later stages (IR,
//! rewrites, schedule, backends) consume the same [`hir::Program`].

pub mod bind;
pub mod check;
pub mod dtype;
pub mod hir;
pub mod inputs;
pub mod interp;
pub mod load;

pub use hir::Program;
pub use tfm_dsl::{Diagnostic, Diagnostics};

/// Loads, parses and checks the program whose entry file is `path`. Warnings are dropped;
/// use [`load_with_warnings`] to see them.
pub fn load(path: &std::path::Path) -> Result<Program, Diagnostics> {
    load_with_warnings(path).map(|(p, _)| p)
}

/// Like [`load`], also returning warnings.
pub fn load_with_warnings(path: &std::path::Path) -> Result<(Program, Vec<Diagnostic>), Diagnostics> {
    let l = load::load_files(path)?;
    check::check_program(l.sources, &l.files)
}

/// Parses and checks a program given as text (`use` paths resolve against the working
/// directory). `name` is shown in diagnostics.
pub fn load_str(name: &str, text: &str) -> Result<Program, Diagnostics> {
    let l = load::load_text(name, text)?;
    check::check_program(l.sources, &l.files).map(|(p, _)| p)
}
