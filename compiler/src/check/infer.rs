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
    match &e.kind {
        ExprKind::Access { tensor, subs } => {
            for (pos, s) in subs.iter().enumerate() {
                if let ExprKind::Name(n) = &s.kind
                    && n.name == name
                    && let Some(x) = extent_of(cx, &tensor.name, pos)
                {
                    return Some(x);
                }
            }
            subs.iter().find_map(|s| find_in_expr(cx, s, name))
        }
        ExprKind::Field { base, .. } => find_in_expr(cx, base, name),
        ExprKind::Call { args, .. } => args.iter().find_map(|a| find_in_expr(cx, a, name)),
        ExprKind::Cast { arg, .. } => find_in_expr(cx, arg, name),
        ExprKind::Reduce { filter, body, .. } => {
            body.iter().find_map(|b| find_in_expr(cx, b, name)).or_else(|| filter.as_ref().and_then(|f| find_in_expr(cx, f, name)))
        }
        ExprKind::Unary(_, a) => find_in_expr(cx, a, name),
        ExprKind::Binary(_, a, b) => find_in_expr(cx, a, name).or_else(|| find_in_expr(cx, b, name)),
        ExprKind::If(c, a, b) => {
            find_in_expr(cx, c, name).or_else(|| find_in_expr(cx, a, name)).or_else(|| find_in_expr(cx, b, name))
        }
        ExprKind::Tuple(xs) => xs.iter().find_map(|x| find_in_expr(cx, x, name)),
        ExprKind::Lit(_) | ExprKind::Name(_) => None,
    }
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
        ExprKind::Access { subs, .. } => subs.iter().for_each(|s| index_names(cx, s, out)),
        ExprKind::Field { base, .. } => index_names(cx, base, out),
        ExprKind::Call { args, .. } => args.iter().for_each(|a| index_names(cx, a, out)),
        ExprKind::Cast { arg, .. } => index_names(cx, arg, out),
        ExprKind::Reduce { indices, filter, body, .. } => {
            let mut inner = std::collections::BTreeSet::new();
            body.iter().for_each(|b| index_names(cx, b, &mut inner));
            if let Some(f) = filter {
                index_names(cx, f, &mut inner);
            }
            for i in indices {
                inner.remove(&i.name);
            }
            out.extend(inner);
        }
        ExprKind::Unary(_, a) => index_names(cx, a, out),
        ExprKind::Binary(_, a, b) => {
            index_names(cx, a, out);
            index_names(cx, b, out);
        }
        ExprKind::If(c, a, b) => {
            index_names(cx, c, out);
            index_names(cx, a, out);
            index_names(cx, b, out);
        }
        ExprKind::Tuple(xs) => xs.iter().for_each(|x| index_names(cx, x, out)),
        ExprKind::Lit(_) => {}
    }
}

/// Names of all indices reduced anywhere inside `e`.
pub fn reduced_names(e: &Expr, out: &mut std::collections::BTreeSet<String>) {
    let mut walk = |x: &Expr| reduced_names(x, out);
    match &e.kind {
        ExprKind::Reduce { indices, filter, body, .. } => {
            for i in indices {
                out.insert(i.name.clone());
            }
            for b in body {
                reduced_names(b, out);
            }
            if let Some(f) = filter {
                reduced_names(f, out);
            }
        }
        ExprKind::Access { subs, .. } => subs.iter().for_each(walk),
        ExprKind::Field { base, .. } => walk(base),
        ExprKind::Call { args, .. } => args.iter().for_each(walk),
        ExprKind::Cast { arg, .. } => walk(arg),
        ExprKind::Unary(_, a) => walk(a),
        ExprKind::Binary(_, a, b) => {
            reduced_names(a, out);
            reduced_names(b, out);
        }
        ExprKind::If(c, a, b) => {
            reduced_names(c, out);
            reduced_names(a, out);
            reduced_names(b, out);
        }
        ExprKind::Tuple(xs) => xs.iter().for_each(walk),
        ExprKind::Lit(_) | ExprKind::Name(_) => {}
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
            ExprKind::Lit(_) | ExprKind::Name(_) => {}
            ExprKind::Access { subs, .. } => stack.extend(subs),
            ExprKind::Field { base, .. } => stack.push(base),
            ExprKind::Call { args, .. } => stack.extend(args),
            ExprKind::Cast { arg, .. } => stack.push(arg),
            ExprKind::Reduce { filter, body, .. } => {
                stack.extend(body);
                stack.extend(filter.as_deref());
            }
            ExprKind::Unary(_, a) => stack.push(a),
            ExprKind::Binary(_, a, b) => stack.extend([&**a, &**b]),
            ExprKind::If(c, a, b) => stack.extend([&**c, &**a, &**b]),
            ExprKind::Tuple(xs) => stack.extend(xs),
        }
    }
    None
}

/// Names written bare as a subscript anywhere in `e`.
fn bare_subscripts(e: &Expr, out: &mut std::collections::BTreeSet<String>) {
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        match &x.kind {
            ExprKind::Access { subs, .. } => {
                for s in subs {
                    if let ExprKind::Name(n) = &s.kind {
                        out.insert(n.name.clone());
                    }
                }
                stack.extend(subs);
            }
            ExprKind::Lit(_) | ExprKind::Name(_) => {}
            ExprKind::Field { base, .. } => stack.push(base),
            ExprKind::Call { args, .. } => stack.extend(args),
            ExprKind::Cast { arg, .. } => stack.push(arg),
            ExprKind::Reduce { filter, body, .. } => {
                stack.extend(body);
                stack.extend(filter.as_deref());
            }
            ExprKind::Unary(_, a) => stack.push(a),
            ExprKind::Binary(_, a, b) => stack.extend([&**a, &**b]),
            ExprKind::If(c, a, b) => stack.extend([&**c, &**a, &**b]),
            ExprKind::Tuple(xs) => stack.extend(xs),
        }
    }
}
