//! Limits on the program as a whole, so that no later stage is asked for unbounded work by a
//! small file: how deeply kernel calls nest ([`MAX_CALL_DEPTH`], which bounds the
//! interpreter's and the inliner's recursion) and how large a kernel becomes once every call is
//! inlined ([`MAX_INLINED_NODES`]: a "call bomb" of `n` kernels, each calling the previous one
//! twice, is `2^n` copies of the first one — a few kilobytes of source that no backend could
//! compile and the interpreter would run forever).
//!
//! Sizes are counted on the syntax tree: one per expression node and one per statement, a
//! call counting as its callee's whole inlined size. Counts saturate instead of wrapping.

use tfm_dsl::ast::{self, Expr, Rhs, Stmt};

/// The most levels of kernel calls below a kernel (a kernel that calls nothing has none).
pub const MAX_CALL_DEPTH: usize = 64;

/// The most expression nodes (and statements) a kernel may have with its calls inlined.
pub const MAX_INLINED_NODES: u64 = 1_000_000;

/// The size of `k`'s own statements, not counting what its calls inline (their param
/// overrides count).
pub fn own_size(k: &ast::KernelItem) -> u64 {
    let mut n = k.filter.as_ref().map_or(0, nodes);
    for s in &k.body {
        n = n.saturating_add(1).saturating_add(match s {
            Stmt::Index { .. } => 0,
            Stmt::Call(c) => c.params.iter().map(|(_, e)| nodes(e)).fold(0, u64::saturating_add),
            Stmt::Assign(a) => {
                let filter = a.filter.as_ref().map_or(0, nodes);
                let rhs = match &a.rhs {
                    Rhs::Expr(e) => nodes(e),
                    Rhs::Scan { init, body, .. } => nodes(init).saturating_add(nodes(body)),
                };
                filter.saturating_add(rhs)
            }
        });
    }
    n
}

/// Expression nodes of `e` (with an explicit stack: depth is bounded, but not by much).
fn nodes(e: &Expr) -> u64 {
    let mut n = 0u64;
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        n = n.saturating_add(1);
        stack.extend(x.children());
    }
    n
}
