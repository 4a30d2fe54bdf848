//! The `.tfm` language front end: grammar (pest), syntax tree, parser and diagnostics.
//!
//! This crate knows nothing about meaning: it turns text into an [`ast::File`] whose nodes
//! carry [`span::Span`]s, and renders [`diagnostic::Diagnostic`]s like rustc. Name resolution,
//! shapes and types are the checker's job (crate `tfmc`, module `check`).

pub mod ast;
pub mod depth;
pub mod diagnostic;
pub mod parser;
pub mod print;
pub mod span;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use parser::parse_file;
pub use span::{FileId, SourceMap, Span};
