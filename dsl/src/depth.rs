//! The expression-depth limit: every expression tree of a file must be at most
//! `MAX_EXPR_DEPTH` deep. Measured with an explicit stack (no recursion), so a pathological
//! input cannot overflow the stack here, and every later recursive pass is bounded.

use crate::ast::{Expr, File, Item, Rhs, Stmt};
use crate::diagnostic::Diagnostic;

/// Errors on the first expression deeper than `limit`.
#[allow(clippy::result_large_err)] // called once per file; the caller boxes it
pub fn check_depth(file: &File, limit: usize) -> Result<(), Diagnostic> {
    let mut roots: Vec<&Expr> = Vec::new();
    for item in &file.items {
        match item {
            Item::Use(_) | Item::Param(_) => {}
            Item::Reduction(r) => {
                roots.push(&r.identity);
                roots.extend(r.lets.iter().map(|(_, e)| e));
                roots.push(&r.result);
            }
            Item::Kernel(k) => {
                roots.extend(k.filter.as_ref());
                for s in &k.body {
                    match s {
                        Stmt::Index { .. } => {}
                        Stmt::Call(c) => roots.extend(c.params.iter().map(|(_, e)| e)),
                        Stmt::Assign(a) => {
                            roots.extend(a.filter.as_ref());
                            match &a.rhs {
                                Rhs::Expr(e) => roots.push(e),
                                Rhs::Scan { init, body, .. } => {
                                    roots.push(init);
                                    roots.push(body);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    for root in roots {
        if let Some(deep) = deeper_than(root, limit) {
            return Err(Diagnostic::error("expression nested too deeply", deep.span, "nesting limit reached here").with_hint(format!(
                "at most {limit} levels of operators, calls and brackets are allowed; split the expression into several statements"
            )));
        }
    }
    Ok(())
}

/// The first sub-expression found at depth `limit + 1`, if any.
fn deeper_than<'e>(root: &'e Expr, limit: usize) -> Option<&'e Expr> {
    let mut stack: Vec<(&'e Expr, usize)> = vec![(root, 1)];
    while let Some((e, d)) = stack.pop() {
        if d > limit {
            return Some(e);
        }
        stack.extend(e.children().into_iter().map(|c| (c, d + 1)));
    }
    None
}
