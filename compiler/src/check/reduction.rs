//! Checking user-defined reductions: field names, identity and combine types.
//!
//! Invariant: a returned `hir::Reduction` has one identity and one result expression per
//! field, each of the field's dtype, using locals as documented on `hir::Reduction`.

use super::cx::{Cx, LocalName};
use super::globals::Globals;
use crate::hir;
use tfm_dsl::Diagnostic;
use tfm_dsl::ast;

/// Checks one reduction; reports and returns `None` on error.
pub fn check(g: &Globals, diags: &mut Vec<Diagnostic>, r: &ast::ReductionItem) -> Option<hir::Reduction> {
    let mut cx = Cx::new(g, diags, &[]);
    let n = r.fields.len();
    for (i, f) in r.fields.iter().enumerate() {
        if let Some(prev) = r.fields[..i].iter().find(|x| x.name.name == f.name.name) {
            cx.err(
                Diagnostic::error(format!("field '{}' is declared twice", f.name.name), f.name.span, "repeated field")
                    .with_label(prev.name.span, "first declared here"),
            );
            return None;
        }
        if f.dtype == hir::DType::Bool {
            cx.err(Diagnostic::error("reduction fields must be numbers", f.name.span, "a bool field"));
            return None;
        }
    }
    cx.fields = r.fields.iter().map(|f| (f.name.name.clone(), f.dtype)).collect();
    let identity = values(&mut cx, &r.identity, r, "identity")?;
    let (a, b) = &r.operands;
    if a.name == b.name {
        cx.err(Diagnostic::error("the two operands of `combine` need different names", b.span, "same name as the first"));
        return None;
    }
    cx.locals.insert(a.name.clone(), LocalName::Operand { base: 0 });
    cx.locals.insert(b.name.clone(), LocalName::Operand { base: n });
    let mut lets = Vec::new();
    for (j, (name, e)) in r.lets.iter().enumerate() {
        if cx.locals.contains_key(&name.name) || cx.g.param(&name.name).is_some() {
            cx.err(
                Diagnostic::error(format!("'{}' is already defined", name.name), name.span, "shadows an earlier name")
                    .with_hint("choose another name"),
            );
            return None;
        }
        let (x, _) = cx.expr(e).ok()?;
        cx.locals.insert(name.name.clone(), LocalName::Let { slot: 2 * n + j, dtype: x.dtype });
        lets.push(x);
    }
    let result = values(&mut cx, &r.result, r, "combine result")?;
    Some(hir::Reduction {
        name: r.name.name.clone(),
        docs: r.docs.clone(),
        fields: cx.fields.clone(),
        identity,
        lets,
        result,
        span: r.span,
    })
}

fn values<'a>(cx: &mut Cx<'_, 'a>, e: &'a ast::Expr, r: &'a ast::ReductionItem, what: &str) -> Option<Vec<hir::Expr>> {
    let n = r.fields.len();
    let elems: Vec<&ast::Expr> = match &e.kind {
        ast::ExprKind::Tuple(xs) => xs.iter().collect(),
        _ => vec![e],
    };
    if elems.len() != n {
        cx.err(
            Diagnostic::error(
                format!("the {what} has {} values but '{}' has {n} fields", elems.len(), r.name.name),
                e.span,
                format!("expected {n} values"),
            )
            .with_hint(if n == 1 {
                "write a single value".to_string()
            } else {
                format!("write a tuple of {n} values: `(a, b)`")
            }),
        );
        return None;
    }
    let mut out = Vec::new();
    for (x, f) in elems.into_iter().zip(&r.fields) {
        out.push(cx.expr_as(x, f.dtype, &format!("field '{}'", f.name.name)).ok()?);
    }
    Some(out)
}
