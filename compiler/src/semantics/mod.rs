//! The shared semantics of the language: what its operators, literals and dtypes mean, in one
//! place that the reference interpreter ([`crate::interp`]), the checker ([`crate::check`]),
//! the IR evaluator ([`crate::ir::eval`]) and the schedule ([`crate::schedule`]) all import.
//!
//! Invariant (layering): this module depends only on the data model ([`crate::hir`],
//! `tfmc_runtime` values) and input binding ([`crate::bind`]), never on the stages that use it,
//! and `ir/` and `schedule/` take these rules from here rather than from the interpreter or the
//! checker — the interpreter is the oracle they are tested against, so they must not share its
//! code paths beyond these definitions (enforced by `compiler/tests/layering.rs`).
//!
//! - [`ops`]: scalar operators, casts, functions, built-in reduction identities/combiners,
//!   literal values.
//! - [`error`]: [`RunError`], the control flow of an expression without a value, `location`.
//! - [`memory`]: checked, fallible allocation of large buffers (a clear error, never an abort).
//! - [`reduction`]: user reductions' identity and combine on given states.
//! - [`store`]: dense tensors with a presence mask (absent points, rounding on output).
//! - [`types`]: dtype promotion (`join`), implicit conversions, literal adaptation.

pub mod error;
pub mod memory;
pub mod ops;
pub mod reduction;
pub mod store;
pub mod types;

pub use error::{RunError, location};
