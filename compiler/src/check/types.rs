//! Conversions in the checked HIR: an expression of one dtype made into another, a literal by
//! retyping it in place, anything else by an explicit `Cast` node. The dtype rules that decide
//! when a conversion is needed live in [`crate::semantics::types`].

use crate::hir::{DType, Expr, ExprKind};
use crate::semantics::types::convert_lit;

/// Converts `e` to `to`: literals are retyped in place, anything else gets a `Cast`.
pub fn coerce(e: Expr, to: DType) -> Expr {
    if e.dtype == to {
        return e;
    }
    let span = e.span;
    match e.kind {
        ExprKind::Lit(l) => Expr { kind: ExprKind::Lit(convert_lit(l, to)), dtype: to, span },
        kind => Expr { kind: ExprKind::Cast(Box::new(Expr { kind, dtype: e.dtype, span })), dtype: to, span },
    }
}
