//! Inference of an index's range from the places it is used bare (`Off[s]` gives `s` the
//! range of `Off`'s dim 0; `O[p, f]` on the left of an output gives `f` that output's dim 1).
//!
//! Only tensors whose shapes are already known count (inputs, outputs, locals defined so
//! far). Consistency of every use is checked where the use is typed, not here.

use super::cx::Cx;
use crate::hir::Extent;
use tfm_dsl::ast::{Expr, ExprKind, Rhs, Stmt};

/// The range of `name` from its first bare use as a subscript of a known tensor.
pub fn range_from_uses(cx: &Cx, name: &str) -> Option<Extent> {
    for stmt in cx.body {
        if let Stmt::Assign(a) = stmt {
            for l in &a.lhs {
                if let Some(pos) = l.indices.iter().position(|i| i.name == name)
                    && let Some(e) = extent_of(cx, &l.tensor.name, pos)
                {
                    return Some(e);
                }
            }
            let mut found = None;
            let mut visit = |e: &Expr| {
                if found.is_none() {
                    found = find_in_expr(cx, e, name);
                }
            };
            match &a.rhs {
                Rhs::Expr(e) => visit(e),
                Rhs::Scan { init, body, .. } => {
                    visit(init);
                    visit(body);
                }
            }
            if let Some(f) = &a.filter {
                visit(f);
            }
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

fn extent_of(cx: &Cx, tensor: &str, pos: usize) -> Option<Extent> {
    let t = cx.tensor_by_name.get(tensor)?;
    cx.tensors[t.index()].shape.get(pos).copied()
}

fn find_in_expr(cx: &Cx, e: &Expr, name: &str) -> Option<Extent> {
    if let ExprKind::Access { tensor, subs } = &e.kind {
        for (pos, s) in subs.iter().enumerate() {
            if let ExprKind::Name(n) = &s.kind
                && n.name == name
                && let Some(x) = extent_of(cx, &tensor.name, pos)
            {
                return Some(x);
            }
        }
    }
    e.children().into_iter().find_map(|c| find_in_expr(cx, c, name))
}

/// Names in `e` that would be indices: bare names that are not tensors, dims, params or
/// locals, excluding those bound by a reduction inside `e`.
pub fn index_names(cx: &Cx, e: &Expr, out: &mut std::collections::BTreeSet<String>) {
    match &e.kind {
        ExprKind::Name(n) => {
            if cx.meaning_of(&n.name).is_none() && !cx.locals.contains_key(&n.name) {
                out.insert(n.name.clone());
            }
        }
        ExprKind::Reduce { indices, .. } => {
            let mut inner = std::collections::BTreeSet::new();
            for c in e.children() {
                index_names(cx, c, &mut inner);
            }
            for i in indices {
                inner.remove(&i.name);
            }
            out.extend(inner);
        }
        _ => {
            for c in e.children() {
                index_names(cx, c, out);
            }
        }
    }
}

/// Names of all indices reduced anywhere inside `e`.
pub fn reduced_names(e: &Expr, out: &mut std::collections::BTreeSet<String>) {
    if let ExprKind::Reduce { indices, .. } = &e.kind {
        out.extend(indices.iter().map(|i| i.name.clone()));
    }
    for c in e.children() {
        reduced_names(c, out);
    }
}

/// Every name used as an index somewhere in a kernel body: left-hand indices, scan indices,
/// reduced indices, and names written bare as a subscript (`Q[p, e]`).
pub fn binder_names(body: &[Stmt]) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for s in body {
        if let Stmt::Assign(a) = s {
            let mut roots: Vec<&Expr> = a.filter.iter().collect();
            match &a.rhs {
                Rhs::Expr(e) => roots.push(e),
                Rhs::Scan { init, body, .. } => roots.extend([init, body]),
            }
            for r in roots {
                bare_subscripts(r, &mut out);
            }
            for l in &a.lhs {
                out.extend(l.indices.iter().map(|i| i.name.clone()));
            }
            match &a.rhs {
                Rhs::Expr(e) => reduced_names(e, &mut out),
                Rhs::Scan { index, init, body, .. } => {
                    out.insert(index.name.clone());
                    reduced_names(init, &mut out);
                    reduced_names(body, &mut out);
                }
            }
            if let Some(f) = &a.filter {
                reduced_names(f, &mut out);
            }
        }
    }
    out
}

/// The span of the first bare use of `name` in `e`.
pub fn find_name(e: &Expr, name: &str) -> Option<tfm_dsl::Span> {
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        match &x.kind {
            ExprKind::Name(n) if n.name == name => return Some(n.span),
            _ => stack.extend(x.children()),
        }
    }
    None
}

/// Names written bare as a subscript anywhere in `e`.
fn bare_subscripts(e: &Expr, out: &mut std::collections::BTreeSet<String>) {
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        if let ExprKind::Access { subs, .. } = &x.kind {
            out.extend(subs.iter().filter_map(|s| if let ExprKind::Name(n) = &s.kind { Some(n.name.clone()) } else { None }));
        }
        stack.extend(x.children());
    }
}
