//! Run-time errors of evaluation, shared by the reference interpreter and the IR evaluator
//! (which must fail exactly where the interpreter fails, with the same error), and the
//! source-location helper that locates them.
//!
//! Invariants: every located error carries its place as text (`file:line:col` from
//! [`location`] for the HIR, `IR node 'S' of cascade 'sdpa'` for the IR), never a span, so
//! errors compare equal across evaluators up to their location; a failing scalar operation
//! ([`OpError`]) becomes a [`RunError`] in exactly one way ([`OpError::at`]).

use tfm_dsl::Span;

use super::ops::OpError;
use crate::bind::BindError;
use crate::hir::Program;

/// Why a kernel could not be run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    /// The inputs or params do not fit the kernel.
    #[error(transparent)]
    Bind(Box<BindError>),
    /// No kernel of that name.
    #[error("unknown kernel '{name}'; kernels: {available}")]
    UnknownKernel {
        /// The name asked for.
        name: String,
        /// The program's kernels, comma-separated (or `none`).
        available: String,
    },
    /// A subscript outside its dimension.
    #[error("subscript {axis} of '{tensor}' is {value}, outside 0..{size} (at {loc})")]
    OutOfRange {
        /// The tensor read.
        tensor: String,
        /// Position of the subscript (0-based).
        axis: usize,
        /// Its value.
        value: i64,
        /// The dimension's size.
        size: usize,
        /// `file:line:col` of the subscript.
        loc: String,
    },
    /// Integer `/` or `%` by zero.
    #[error("integer division by zero (at {loc})")]
    DivByZero {
        /// `file:line:col` of the operation.
        loc: String,
    },
    /// An integer result outside its dtype's range.
    #[error("{what} (at {loc})")]
    Overflow {
        /// `i32 overflow in 2147483647 + 1`.
        what: String,
        /// `file:line:col` of the operation.
        loc: String,
    },
    /// A value that must exist reads a point that does not.
    #[error("the {what} reads a point that does not exist (at {loc})")]
    Absent {
        /// What needed the value.
        what: String,
        /// `file:line:col` of the expression.
        loc: String,
    },
    /// A called kernel does not fit its arguments.
    #[error("in the call of '{callee}' (at {loc}): {source}")]
    Call {
        /// The callee.
        callee: String,
        /// `file:line:col` of the call.
        loc: String,
        /// What did not fit.
        source: Box<BindError>,
    },
    /// A callee's output does not have the shape of the caller's tensor.
    #[error("tensor '{tensor}' has shape {expected:?} but the call gives {got:?} (at {loc})")]
    ShapeMismatch {
        /// The caller's tensor.
        tensor: String,
        /// Its shape.
        expected: Vec<usize>,
        /// The callee output's shape.
        got: Vec<usize>,
        /// `file:line:col` of the call.
        loc: String,
    },
    /// Calls nested too deeply.
    #[error("kernel calls nested deeper than {depth} (at {loc})")]
    TooDeep {
        /// The limit.
        depth: usize,
        /// `file:line:col` of the call.
        loc: String,
    },
    /// A tensor with more elements than fit in memory.
    #[error("tensor '{tensor}' of shape {shape:?} is too large: {why}")]
    TooLarge {
        /// The tensor.
        tensor: String,
        /// Its shape.
        shape: Vec<usize>,
        /// Why it does not fit.
        why: super::memory::MemoryError,
    },
    /// The program breaks an invariant the checker should have established.
    #[error("internal error: {what} (at {loc})")]
    Internal {
        /// What went wrong.
        what: String,
        /// `file:line:col`, if known.
        loc: String,
    },
}

impl From<BindError> for RunError {
    fn from(e: BindError) -> RunError {
        RunError::Bind(Box::new(e))
    }
}

impl OpError {
    /// The run-time error of this failed scalar operation at `loc`.
    pub(crate) fn at(self, loc: String) -> RunError {
        match self {
            OpError::DivByZero => RunError::DivByZero { loc },
            OpError::Overflow(what) => RunError::Overflow { what, loc },
            OpError::Unsupported(what) => RunError::Internal { what, loc },
        }
    }
}

/// Why an expression has no value (in the interpreter and the IR evaluator alike).
#[derive(Debug)]
pub(crate) enum Flow {
    /// It read a point that does not exist (or a filter failed).
    Absent,
    /// A run-time error.
    Error(Box<RunError>),
}

impl From<RunError> for Flow {
    fn from(e: RunError) -> Flow {
        Flow::Error(Box::new(e))
    }
}

impl Flow {
    /// The error of a value that must not be absent here (absence becomes an internal error
    /// without a location).
    pub(crate) fn into_error(self) -> Box<RunError> {
        match self {
            Flow::Error(e) => e,
            Flow::Absent => Box::new(RunError::Internal { what: "absent value".to_string(), loc: String::new() }),
        }
    }
}

/// Renders the start of `span` as `file:line:col` (1-based; the column counts characters).
pub fn location(program: &Program, span: Span) -> String {
    let Some((_, file)) = program.sources.files().find(|(id, _)| *id == span.file) else {
        return "<unknown>".to_string();
    };
    let start = (span.start as usize).min(file.text.len());
    let before = file.text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("{}:{line}:{col}", file.name)
}
