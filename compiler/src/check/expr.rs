//! Typing and name resolution of expressions: AST expression → typed HIR expression.
//!
//! Invariants established (see `hir`): operands of arithmetic have the result's dtype,
//! comparison operands agree, subscripts are i64, implicit conversions are explicit casts,
//! and every bare index is bound by the statement or an enclosing reduction.

use super::cx::{CResult, Cx, LocalName, plural, plural_verb};
use super::infer;
use super::types::coerce;
use crate::hir::{BinOp, DType, Expr, ExprKind, Extent, Func, Lit, Reduce, ReduceOp, UnOp};
use crate::semantics::types::{Ty, converts_implicitly, join};
use tfm_dsl::Diagnostic;
use tfm_dsl::ast::{self, ExprKind as A};

fn mk(kind: ExprKind, dtype: DType, span: tfm_dsl::Span) -> Expr {
    Expr { kind, dtype, span }
}

impl<'g, 'a> Cx<'g, 'a> {
    /// Types `e`, requiring a `bool` result (filters, conditions).
    pub fn bool_expr(&mut self, e: &'a ast::Expr, what: &str) -> CResult<Expr> {
        let (x, t) = self.expr(e)?;
        if t.dtype != DType::Bool {
            return Err(self.err(
                Diagnostic::error(format!("{what} must be a bool, found {}", t.dtype), e.span, "not a bool")
                    .with_hint("compare to get a bool, e.g. `m <= p` or `X[i] > 0.0`"),
            ));
        }
        Ok(x)
    }

    /// Types `e` and converts it to `to`, rejecting narrowing conversions.
    pub fn expr_as(&mut self, e: &'a ast::Expr, to: DType, what: &str) -> CResult<Expr> {
        let (x, t) = self.expr(e)?;
        if !converts_implicitly(t, to) {
            return Err(self.err(
                Diagnostic::error(format!("mismatched types: {what} is {to}, found {}", t.dtype), e.span, format!("this is {}", t.dtype))
                    .with_hint(format!("convert explicitly: `{to}(...)`")),
            ));
        }
        Ok(coerce(x, to))
    }

    /// Types an expression.
    pub fn expr(&mut self, e: &'a ast::Expr) -> CResult<(Expr, Ty)> {
        let span = e.span;
        match &e.kind {
            A::Lit(l) => Ok(match l {
                Lit::Int(_) => (mk(ExprKind::Lit(*l), DType::I64, span), Ty { dtype: DType::I64, weak: true }),
                Lit::Float(_) => (mk(ExprKind::Lit(*l), DType::F32, span), Ty { dtype: DType::F32, weak: true }),
                Lit::Bool(_) => (mk(ExprKind::Lit(*l), DType::Bool, span), Ty { dtype: DType::Bool, weak: true }),
            }),
            A::Name(n) => self.name(n),
            A::Field { base, field } => self.field(base, field),
            A::Access { tensor, subs } => self.access(tensor, subs, span),
            A::Call { func, args } => self.call_fn(func, args, span),
            A::Cast { dtype, arg } => {
                let (x, t) = self.expr(arg)?;
                if t.dtype == *dtype {
                    return Ok((x, Ty::strong(*dtype)));
                }
                // A number literal converted to a float dtype is that dtype's literal
                // (`f64(1e39)` is an f64 literal, not an f32 one that overflows).
                if t.weak && dtype.is_float() && matches!(x.kind, ExprKind::Lit(Lit::Int(_) | Lit::Float(_))) {
                    return Ok((coerce(x, *dtype), Ty::strong(*dtype)));
                }
                Ok((mk(ExprKind::Cast(Box::new(x)), *dtype, span), Ty::strong(*dtype)))
            }
            A::Reduce { op, indices, filter, body } => {
                let (r, ty) = self.reduce(op, indices, filter.as_deref(), body, span)?;
                if let ReduceOp::User(_) = r.op
                    && r.body.len() > 1
                {
                    return Err(self.err(
                        Diagnostic::error(
                            format!("reduction '{}' has {} fields and cannot be used inside an expression", op.name, r.body.len()),
                            span,
                            "yields several values",
                        )
                        .with_hint(format!("bind every field: `A[i], B[i] = {}[...](...)`", op.name)),
                    ));
                }
                Ok((mk(ExprKind::Reduce(Box::new(r)), ty.dtype, span), ty))
            }
            A::Unary(op, a) => {
                let (x, t) = self.expr(a)?;
                let ok = match op {
                    UnOp::Neg => t.dtype != DType::Bool,
                    UnOp::Not => t.dtype == DType::Bool,
                };
                if !ok {
                    let (sym, want) = if *op == UnOp::Neg { ("-", "a number") } else { ("!", "a bool") };
                    return Err(self.err(Diagnostic::error(
                        format!("cannot apply `{sym}` to {}", t.dtype),
                        a.span,
                        format!("expected {want}"),
                    )));
                }
                Ok((mk(ExprKind::Unary(*op, Box::new(x)), t.dtype, span), t))
            }
            A::Binary(op, a, b) => self.binary(*op, a, b, span),
            A::If(c, a, b) => {
                let c = self.bool_expr(c, "the condition of `if`")?;
                let (x, tx) = self.expr(a)?;
                let (y, ty) = self.expr(b)?;
                let Some(t) = join(tx, ty) else {
                    return Err(self.err(
                        Diagnostic::error(
                            format!("`if` branches have incompatible types {} and {}", tx.dtype, ty.dtype),
                            span,
                            "branches disagree",
                        )
                        .with_label(a.span, format!("this is {}", tx.dtype))
                        .with_label(b.span, format!("this is {}", ty.dtype)),
                    ));
                };
                let (x, y) = (coerce(x, t.dtype), coerce(y, t.dtype));
                Ok((mk(ExprKind::If(Box::new(c), Box::new(x), Box::new(y)), t.dtype, span), t))
            }
            A::Tuple(_) => Err(self.err(
                Diagnostic::error("tuples are only allowed in a reduction's identity and combine", span, "unexpected tuple")
                    .with_hint("a user reduction's fields are listed as arguments: `lse[m](S[p, m], 1.0)`"),
            )),
        }
    }

    fn name(&mut self, n: &'a ast::Ident) -> CResult<(Expr, Ty)> {
        let span = n.span;
        if let Some(l) = self.locals.get(&n.name).cloned() {
            return match l {
                LocalName::Let { slot, dtype } => Ok((mk(ExprKind::Local(slot), dtype, span), Ty::strong(dtype))),
                LocalName::Operand { .. } => {
                    let f = self.fields.first().map_or("x".to_string(), |f| f.0.clone());
                    Err(self.err(
                        Diagnostic::error(format!("'{}' is a reduction state; use one of its fields", n.name), span, "a whole state")
                            .with_hint(format!("write `{}.{f}`", n.name)),
                    ))
                }
            };
        }
        if self.is_bound(&n.name) {
            let id = self.index_by_name[&n.name];
            return Ok((mk(ExprKind::Index(id), DType::I64, span), Ty::strong(DType::I64)));
        }
        if let Some(t) = self.tensor_by_name.get(&n.name).copied() {
            let info = &self.tensors[t.index()];
            if !info.shape.is_empty() {
                let rank = info.shape.len();
                return Err(self.err(
                    Diagnostic::error(format!("tensor '{}' has {rank} dimensions and needs subscripts", n.name), span, "no subscripts")
                        .with_label(info.span, "declared here")
                        .with_hint(format!("read one element, e.g. `{}[{}]`", n.name, vec!["i"; rank].join(", "))),
                ));
            }
            return self.read(t, Vec::new(), span);
        }
        if let Some((id, p)) = self.g.param(&n.name) {
            self.params_used.insert(id);
            return Ok((mk(ExprKind::Param(id), p.dtype, span), Ty::strong(p.dtype)));
        }
        if let Some(d) = self.dim_by_name.get(&n.name) {
            return Ok((mk(ExprKind::Dim(*d), DType::I64, span), Ty::strong(DType::I64)));
        }
        let looks_like_index = self.index_by_name.contains_key(&n.name) || self.index_universe.contains(&n.name);
        let d = if looks_like_index {
            let hint = format!(
                "indices in scope: {}; add '{}' to the left-hand side or reduce over it: `sum[{}](...)`",
                self.bound_names(),
                n.name,
                n.name
            );
            Diagnostic::error(format!("index '{}' is not bound here", n.name), span, "not bound by this statement").with_hint(hint)
        } else {
            self.unknown_name_diag(&n.name, span)
        };
        Err(self.err(d))
    }

    fn field(&mut self, base: &'a ast::Expr, field: &'a ast::Ident) -> CResult<(Expr, Ty)> {
        let A::Name(b) = &base.kind else {
            return Err(self.err(Diagnostic::error("field access needs a reduction state", base.span, "not a state")));
        };
        let Some(LocalName::Operand { base: slot }) = self.locals.get(&b.name).cloned() else {
            return Err(self.err(
                Diagnostic::error(format!("'{}' has no fields", b.name), b.span, "not a reduction state")
                    .with_hint("fields exist only on the two operands of a reduction's `combine(a, b)`"),
            ));
        };
        let Some(i) = self.fields.iter().position(|f| f.0 == field.name) else {
            let names: Vec<&str> = self.fields.iter().map(|f| f.0.as_str()).collect();
            return Err(self.err(
                Diagnostic::error(format!("no field '{}' in the reduction state", field.name), field.span, "unknown field")
                    .with_hint(format!("fields: {}", names.join(", "))),
            ));
        };
        let dt = self.fields[i].1;
        Ok((mk(ExprKind::Local(slot + i), dt, base.span.to(field.span)), Ty::strong(dt)))
    }

    fn binary(&mut self, op: BinOp, a: &'a ast::Expr, b: &'a ast::Expr, span: tfm_dsl::Span) -> CResult<(Expr, Ty)> {
        let (x, tx) = self.expr(a)?;
        let (y, ty) = self.expr(b)?;
        if matches!(op, BinOp::And | BinOp::Or) {
            for (e, t) in [(a, tx), (b, ty)] {
                if t.dtype != DType::Bool {
                    return Err(self.err(Diagnostic::error(
                        format!("`{}` needs bool operands, found {}", op.symbol(), t.dtype),
                        e.span,
                        "not a bool",
                    )));
                }
            }
            return Ok((mk(ExprKind::Binary(op, Box::new(x), Box::new(y)), DType::Bool, span), Ty::strong(DType::Bool)));
        }
        let joined = join(tx, ty).filter(|t| t.dtype != DType::Bool || matches!(op, BinOp::Eq | BinOp::Ne));
        let Some(t) = joined else {
            return Err(self.err(
                Diagnostic::error(
                    format!("cannot apply `{}` to {} and {}", op.symbol(), tx.dtype, ty.dtype),
                    span,
                    "incompatible operands",
                )
                .with_label(a.span, format!("{}", tx.dtype))
                .with_label(b.span, format!("{}", ty.dtype))
                .with_hint("convert one side explicitly, e.g. `f32(x)`"),
            ));
        };
        let (x, y) = (coerce(x, t.dtype), coerce(y, t.dtype));
        if op.is_comparison() {
            let r = Ty { dtype: DType::Bool, weak: false };
            return Ok((mk(ExprKind::Binary(op, Box::new(x), Box::new(y)), DType::Bool, span), r));
        }
        Ok((mk(ExprKind::Binary(op, Box::new(x), Box::new(y)), t.dtype, span), t))
    }

    fn call_fn(&mut self, func: &'a ast::Ident, args: &'a [ast::Expr], span: tfm_dsl::Span) -> CResult<(Expr, Ty)> {
        let Some(f) = Func::from_name(&func.name) else {
            let d = if self.g.kernel_by_name.contains_key(&func.name) {
                Diagnostic::error(format!("kernel '{}' cannot be called inside an expression", func.name), func.span, "a kernel")
                    .with_hint(format!("call it as a statement: `O = {}(A, B)`", func.name))
            } else if super::globals::BUILTIN_REDUCTIONS.contains(&func.name.as_str()) || self.g.reduction_by_name.contains_key(&func.name)
            {
                Diagnostic::error(format!("reduction '{}' needs the indices it reduces", func.name), func.span, "no indices")
                    .with_hint(format!("write `{}[m](...)`; for the larger of two values use `max(a, b)`", func.name))
            } else {
                let names: Vec<&str> = Func::ALL.iter().map(|f| f.name()).collect();
                Diagnostic::error(format!("unknown function '{}'", func.name), func.span, "not a function")
                    .with_hint(format!("functions: {}", names.join(", ")))
            };
            return Err(self.err(d));
        };
        if args.len() != f.arity() {
            return Err(self.err(Diagnostic::error(
                format!(
                    "function '{}' takes {} argument{}, found {}",
                    f.name(),
                    f.arity(),
                    if f.arity() == 1 { "" } else { "s" },
                    args.len()
                ),
                span,
                "wrong number of arguments",
            )));
        }
        let mut typed = Vec::new();
        for a in args {
            let (x, t) = self.expr(a)?;
            if t.dtype == DType::Bool {
                return Err(self.err(
                    Diagnostic::error(format!("function '{}' takes numbers, found bool", f.name()), a.span, "a bool")
                        .with_hint("convert explicitly: `f32(c)`"),
                ));
            }
            typed.push((x, t));
        }
        let mut t = typed[0].1;
        if let Some((_, t2)) = typed.get(1) {
            // Both arguments are numbers, so the join exists.
            t = join(t, *t2).unwrap_or(t);
        }
        if t.dtype.is_int() && !f.accepts_int() {
            t = Ty { dtype: DType::F32, weak: t.weak };
        }
        let args: Vec<Expr> = typed.into_iter().map(|(x, _)| coerce(x, t.dtype)).collect();
        Ok((mk(ExprKind::Call(f, args), t.dtype, span), t))
    }

    fn access(&mut self, tensor: &'a ast::Ident, subs: &'a [ast::Expr], span: tfm_dsl::Span) -> CResult<(Expr, Ty)> {
        if let Some(sc) = self.scan.clone()
            && sc.name == tensor.name
        {
            return self.scan_prev(&sc, subs, span);
        }
        let Some(t) = self.tensor_by_name.get(&tensor.name).copied() else {
            return Err(self.unknown_tensor(tensor));
        };
        let info = self.tensors[t.index()].clone();
        if subs.len() != info.shape.len() {
            return Err(self.err(
                Diagnostic::error(
                    format!(
                        "tensor '{}' has {} but {} given",
                        tensor.name,
                        plural(info.shape.len(), "dimension"),
                        plural_verb(subs.len(), "subscript")
                    ),
                    span,
                    format!("expected {} subscripts", info.shape.len()),
                )
                .with_label(info.span, format!("'{}' is {}{}", tensor.name, info.dtype, self.shape_text(&info.shape))),
            ));
        }
        let mut typed = Vec::new();
        for (pos, s) in subs.iter().enumerate() {
            let (x, ts) = self.expr(s)?;
            if !ts.dtype.is_int() {
                return Err(self.err(
                    Diagnostic::error(format!("subscripts must be integers, found {}", ts.dtype), s.span, "not an integer")
                        .with_hint("convert explicitly: `i64(x)`"),
                ));
            }
            if let ExprKind::Index(i) = x.kind {
                let have = self.indices[i.index()].extent;
                let want = info.shape[pos];
                if have != want {
                    let iname = self.indices[i.index()].name.clone();
                    let (hn, wn) = (self.extent_name(have), self.extent_name(want));
                    return Err(self.err(
                        Diagnostic::error(
                            format!("index '{iname}' ranges over {hn} but dimension {pos} of '{}' is {wn}", tensor.name),
                            s.span,
                            format!("expected an index over {wn}"),
                        )
                        .with_label(info.span, format!("'{}' is {}{}", tensor.name, info.dtype, self.shape_text(&info.shape)))
                        .with_hint(format!("use an index over {wn} here, or declare one: `index x: {wn}`")),
                    ));
                }
            }
            typed.push(coerce(x, DType::I64));
        }
        self.read(t, typed, span)
    }

    pub fn read(&mut self, t: crate::hir::TensorId, subs: Vec<Expr>, span: tfm_dsl::Span) -> CResult<(Expr, Ty)> {
        let info = &self.tensors[t.index()];
        if !self.defined[t.index()] {
            let name = info.name.clone();
            let def = info.span;
            return Err(self.err(
                Diagnostic::error(format!("tensor '{name}' is read before it is defined"), span, "read here")
                    .with_label(def, "declared here")
                    .with_hint("statements run in order; define it above, or use `scan[t, init = ...](...)` for a recurrence"),
            ));
        }
        self.read[t.index()] = true;
        let dt = info.dtype;
        Ok((mk(ExprKind::Read { tensor: t, subs }, dt, span), Ty::strong(dt)))
    }

    fn unknown_tensor(&mut self, tensor: &ast::Ident) -> super::cx::Reported {
        if let Some((what, prev)) = self.meaning_of(&tensor.name) {
            let mut d = Diagnostic::error(format!("'{}' is {what} and cannot be subscripted", tensor.name), tensor.span, "not a tensor");
            if let Some(s) = prev {
                d = d.with_label(s, "defined here");
            }
            return self.err(d);
        }
        let later = self.body.iter().find_map(|s| match s {
            ast::Stmt::Assign(a) => a.lhs.iter().find(|l| l.tensor.name == tensor.name).map(|l| l.span),
            ast::Stmt::Call(c) => c.outputs.iter().find(|o| o.name == tensor.name).map(|o| o.span),
            ast::Stmt::Index { .. } => None,
        });
        let d = match later {
            Some(def) => Diagnostic::error(format!("tensor '{}' is read before it is defined", tensor.name), tensor.span, "read here")
                .with_label(def, "defined later here")
                .with_hint("statements run in order; move the definition above this use"),
            None => {
                let known: Vec<&str> = self.tensor_by_name.keys().map(String::as_str).collect();
                let mut known = known;
                known.sort_unstable();
                Diagnostic::error(format!("unknown tensor '{}'", tensor.name), tensor.span, "not defined in this kernel")
                    .with_hint(format!("tensors in scope: {}", known.join(", ")))
            }
        };
        self.err(d)
    }

    fn scan_prev(&mut self, sc: &super::cx::ScanCx, subs: &'a [ast::Expr], span: tfm_dsl::Span) -> CResult<(Expr, Ty)> {
        let bad = |cx: &mut Self, label: &str| {
            let iname = cx.indices[sc.index.index()].name.clone();
            cx.err(Diagnostic::error(format!("a recurrence may only look back along '{iname}'"), span, label.to_string()).with_hint(
                format!("read '{}' with the left-hand subscripts, except `{iname} - c` (c ≥ 1) in the scanned position", sc.name),
            ))
        };
        if subs.len() != sc.lhs.len() {
            return Err(bad(self, "wrong number of subscripts"));
        }
        let mut offset = None;
        for (s, &want) in subs.iter().zip(&sc.lhs) {
            let wname = self.indices[want.index()].name.clone();
            if want == sc.index {
                match &s.kind {
                    A::Binary(BinOp::Sub, a, b) if matches!(&a.kind, A::Name(n) if n.name == wname) => match b.kind {
                        A::Lit(Lit::Int(c)) if c >= 1 => offset = Some(c),
                        _ => return Err(bad(self, "the look-back must be a constant of at least 1")),
                    },
                    A::Name(n) if n.name == wname => return Err(bad(self, "reads the value being defined")),
                    _ => return Err(bad(self, "not an earlier point")),
                }
            } else if !matches!(&s.kind, A::Name(n) if n.name == wname) {
                return Err(bad(self, "other subscripts must equal the left-hand side's"));
            }
        }
        // The scanned position always exists, so the loop set `offset`.
        let offset = offset.unwrap_or(1);
        Ok((mk(ExprKind::ScanPrev { tensor: sc.target, offset }, sc.dtype, span), Ty::strong(sc.dtype)))
    }

    /// Checks a reduction: binds its indices, attaches pending filters, types the body.
    pub fn reduce(
        &mut self,
        op: &'a ast::Ident,
        indices: &'a [ast::Ident],
        filter: Option<&'a ast::Expr>,
        body: &'a [ast::Expr],
        span: tfm_dsl::Span,
    ) -> CResult<(Reduce, Ty)> {
        let rop = match op.name.as_str() {
            "sum" => ReduceOp::Sum,
            "prod" => ReduceOp::Prod,
            "max" => ReduceOp::Max,
            "min" => ReduceOp::Min,
            other => match self.g.reduction_by_name.get(other) {
                Some((id, _)) => ReduceOp::User(*id),
                None => {
                    let mut user: Vec<&str> = self.g.reduction_by_name.keys().map(String::as_str).collect();
                    user.sort_unstable();
                    let list = if user.is_empty() { String::new() } else { format!(", {}", user.join(", ")) };
                    return Err(self.err(
                        Diagnostic::error(format!("unknown reduction '{other}'"), op.span, "not a reduction")
                            .with_hint(format!("reductions: sum, prod, max, min{list}")),
                    ));
                }
            },
        };
        let outer = self.bound.len();
        let mut ids = Vec::new();
        for i in indices {
            if self.is_bound(&i.name) || indices.iter().filter(|j| j.name == i.name).count() > 1 {
                self.bound.truncate(outer);
                return Err(self.err(
                    Diagnostic::error(format!("index '{}' is already bound", i.name), i.span, "bound twice")
                        .with_hint(format!("indices in scope: {}; reduce over a new index name", self.bound_names())),
                ));
            }
            let id = match self.index_id(i) {
                Ok(id) => id,
                Err(r) => {
                    self.bound.truncate(outer);
                    return Err(r);
                }
            };
            ids.push(id);
            self.bound.push(id);
        }
        let result = self.reduce_inner(rop, op, indices, &ids, filter, body, span);
        self.bound.truncate(outer);
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn reduce_inner(
        &mut self,
        rop: ReduceOp,
        op: &'a ast::Ident,
        indices: &'a [ast::Ident],
        ids: &[crate::hir::IndexId],
        filter: Option<&'a ast::Expr>,
        body: &'a [ast::Expr],
        span: tfm_dsl::Span,
    ) -> CResult<(Reduce, Ty)> {
        // Every reduced index must be used.
        let mut used = std::collections::BTreeSet::new();
        for b in body {
            infer::index_names(self, b, &mut used);
        }
        if let Some(f) = filter {
            infer::index_names(self, f, &mut used);
        }
        for i in indices {
            if !used.contains(&i.name) {
                return Err(self.err(
                    Diagnostic::error(format!("index '{}' is reduced but never used", i.name), i.span, "unused")
                        .with_hint(format!("remove it from `{}[...]`, or use it in the body", op.name)),
                ));
            }
        }
        let (mut filters, activated) = self.attach_pending()?;
        let r = (|| {
            if let Some(f) = filter {
                filters.push(self.bool_expr(f, "a filter")?);
            }
            self.reduce_body(rop, op, ids, filters, body, span)
        })();
        for i in activated {
            self.pending[i].active = false;
        }
        r
    }

    fn reduce_body(
        &mut self,
        rop: ReduceOp,
        op: &'a ast::Ident,
        ids: &[crate::hir::IndexId],
        filters: Vec<Expr>,
        body: &'a [ast::Expr],
        span: tfm_dsl::Span,
    ) -> CResult<(Reduce, Ty)> {
        match rop {
            ReduceOp::User(id) => {
                let fields = self.g.reduction_by_name[&op.name].1.clone();
                if body.len() != fields.len() {
                    return Err(self.err(
                        Diagnostic::error(
                            format!(
                                "reduction '{}' has {} but {} given",
                                op.name,
                                plural(fields.len(), "field"),
                                plural_verb(body.len(), "value")
                            ),
                            span,
                            format!("expected {} values", fields.len()),
                        )
                        .with_hint("give one value per state field, e.g. `lse[m](S[p, m], 1.0)`"),
                    ));
                }
                let mut typed = Vec::new();
                for (b, dt) in body.iter().zip(&fields) {
                    typed.push(self.expr_as(b, *dt, "the reduction field")?);
                }
                Ok((Reduce { op: ReduceOp::User(id), indices: ids.to_vec(), filters, body: typed }, Ty::strong(fields[0])))
            }
            _ => {
                if body.len() != 1 {
                    return Err(self.err(Diagnostic::error(
                        format!("`{}` reduces one value, found {}", op.name, body.len()),
                        span,
                        "too many values",
                    )));
                }
                let (x, t) = self.expr(&body[0])?;
                if t.dtype == DType::Bool {
                    return Err(self.err(
                        Diagnostic::error(format!("cannot `{}` bools", op.name), body[0].span, "a bool")
                            .with_hint("convert explicitly: `i64(c)`"),
                    ));
                }
                Ok((Reduce { op: rop, indices: ids.to_vec(), filters, body: vec![x] }, t))
            }
        }
    }

    /// Types and returns the pending filters whose indices are now all bound and that are not
    /// active in an enclosing scope; marks them active and returns which ones.
    pub fn attach_pending(&mut self) -> CResult<(Vec<Expr>, Vec<usize>)> {
        let mut out = Vec::new();
        let mut activated = Vec::new();
        for i in 0..self.pending.len() {
            let p = &self.pending[i];
            if p.active || !p.indices.iter().all(|n| self.is_bound(n)) {
                continue;
            }
            let ast = p.ast;
            self.pending[i].active = true;
            self.pending[i].used = true;
            activated.push(i);
            match self.bool_expr(ast, "a filter") {
                Ok(f) => out.push(f),
                Err(r) => {
                    for j in activated {
                        self.pending[j].active = false;
                    }
                    return Err(r);
                }
            }
        }
        Ok((out, activated))
    }

    /// Whether an extent equals an index's range (used by statements).
    pub fn index_extent(&self, id: crate::hir::IndexId) -> Extent {
        self.indices[id.index()].extent
    }
}
