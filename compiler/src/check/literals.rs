//! Literals must have a value of the dtype they were given: a float literal that rounds to
//! infinity in its dtype (`X[n] * 1e39` with `X: f32`), a float param default beyond its
//! dtype, or an `i32` literal beyond `i32` is an error at the literal. (The interpreter would
//! compute with the literal's exact value in f64 and compiled code with the rounded one, so
//! the two would disagree: infinities and NaN instead of numbers.)

use crate::hir::{Expr, ExprKind, Kernel, Lit, Rhs, Stmt};
use crate::semantics::types::{lit_out_of_range, max_finite};
use tfm_dsl::Diagnostic;

/// The diagnostic for a literal `l` of dtype `d` written at `e.span`, if it is out of range.
fn out_of_range(e: &Expr, l: Lit) -> Option<Diagnostic> {
    if !lit_out_of_range(l, e.dtype) {
        return None;
    }
    let d = e.dtype;
    Some(match l {
        Lit::Float(x) => {
            Diagnostic::error(format!("float literal out of range for {d}"), e.span, format!("{x:e} rounds to infinity in {d}")).with_hint(
                format!(
                    "the largest finite {d} is {}; write `inf` for infinity, or convert the other operand to f64 (`f64(x)`)",
                    max_finite(d)
                ),
            )
        }
        _ => Diagnostic::error(format!("integer literal out of range for {d}"), e.span, format!("does not fit in {d}")).with_hint(format!(
            "{d} holds {} to {}; convert the other operand to i64 (`i64(x)`)",
            i32::MIN,
            i32::MAX
        )),
    })
}

/// The first literal of `e` without a value of its dtype.
pub fn first_in_expr(e: &Expr) -> Option<Diagnostic> {
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        match &x.kind {
            ExprKind::Lit(l) => {
                if let Some(d) = out_of_range(x, *l) {
                    return Some(d);
                }
            }
            ExprKind::Index(_) | ExprKind::Dim(_) | ExprKind::Param(_) | ExprKind::ScanPrev { .. } | ExprKind::Local(_) => {}
            ExprKind::Read { subs, .. } => stack.extend(subs.iter().rev()),
            ExprKind::Unary(_, a) | ExprKind::Cast(a) => stack.push(a),
            ExprKind::Binary(_, a, b) => stack.extend([b.as_ref(), a.as_ref()]),
            ExprKind::If(c, a, b) => stack.extend([b.as_ref(), a.as_ref(), c.as_ref()]),
            ExprKind::Call(_, args) => stack.extend(args.iter().rev()),
            ExprKind::Reduce(r) => stack.extend(r.body.iter().rev().chain(r.filters.iter().rev())),
        }
    }
    None
}

/// The first out-of-range literal of kernel `k`, in statement order.
pub fn first_in_kernel(k: &Kernel) -> Option<Diagnostic> {
    for s in &k.stmts {
        let found = match s {
            Stmt::Assign(a) => {
                let rhs = match &a.rhs {
                    Rhs::Expr(e) => first_in_expr(e),
                    Rhs::Tuple(r) => r.filters.iter().chain(&r.body).find_map(first_in_expr),
                    Rhs::Scan { init, body, .. } => first_in_expr(init).or_else(|| first_in_expr(body)),
                };
                rhs.or_else(|| a.filters.iter().find_map(first_in_expr))
            }
            Stmt::Call(c) => c.params.iter().find_map(|(_, e)| first_in_expr(e)),
        };
        if found.is_some() {
            return found;
        }
    }
    None
}
