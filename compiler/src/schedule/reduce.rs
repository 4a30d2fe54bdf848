//! Reductions in KIR, one loop each: built-in `sum`/`prod`/`max`/`min`, user reductions
//! (their `combine` inlined from the HIR), and the generic one-pass online softmax `osm`
//! (the tiled attention schedule in [`super::attention`] handles the hot case).
//!
//! Semantics as the interpreter: bounds evaluated outside the loop (absent → empty range),
//! points whose filter fails or whose body is absent skipped, an empty reduction gives its
//! identity. Float accumulators are marked `reassoc` so loops vectorize: the summation order
//! is unspecified (documented in `docs/language.md`).

use egg::Id;
use tfmc_runtime::Scalar;

use super::ScheduleError;
use super::arith::{exp, fdiv};
use super::build::e;
use super::kir::{BinOp as K, Expr, Ty, Var};
use super::lower::{Cx, Def, vty};
use crate::hir::{self, DType, ExprKind, ReduceOp};
use crate::ir::eval::compile::Head;

/// A scalar constant of value type `ty`.
pub(crate) fn scalar(ty: Ty, v: Scalar) -> Expr {
    match v {
        Scalar::F(x) => e::num(ty, x),
        Scalar::I(i) if ty.is_int() => match ty {
            Ty::I32 => Expr::Const(super::kir::Const::I32(i as i32)),
            _ => e::i64(i),
        },
        Scalar::I(i) => e::num(ty, i as f64),
        Scalar::B(b) if ty == Ty::Bool => e::bool(b),
        Scalar::B(b) => e::num(ty, f64::from(u8::from(b))),
    }
}

impl Cx<'_> {
    /// A built-in reduction of dtype `dt`.
    pub(super) fn reduce(&mut self, d: Def<'_>, op: ReduceOp, dt: DType, head: &Head, body: Id) -> Result<Expr, ScheduleError> {
        let ty = vty(dt);
        let acc = self.b.let_("acc", scalar(ty, crate::semantics::ops::identity(op, dt)));
        let (lo, hi) = self.bounds(d, head)?;
        let hoisted = super::hoist::hoist(self, d, &[head.filter, body], head.slot, None)?;
        let mark = self.b.mark();
        let old = self.open_head(d, head, lo, hi)?;
        let x = self.lower_as(d, body, ty)?;
        let a = e::var(acc);
        let next = match op {
            ReduceOp::Sum if ty.is_float() => e::acc(K::Add, a, x),
            ReduceOp::Prod if ty.is_float() => e::acc(K::Mul, a, x),
            ReduceOp::Sum => self.bin_values(hir::BinOp::Add, ty, a, x),
            ReduceOp::Prod => self.bin_values(hir::BinOp::Mul, ty, a, x),
            ReduceOp::Max if ty == Ty::Bool => e::bin(K::Or, a, x),
            ReduceOp::Min if ty == Ty::Bool => e::bin(K::And, a, x),
            ReduceOp::Max => e::acc(K::Max, a, x),
            ReduceOp::Min => e::acc(K::Min, a, x),
            ReduceOp::User(_) => return Err(self.internal("a user reduction as a built-in")),
        };
        self.b.set(acc, next);
        self.b.close_to(mark);
        self.close_head(head, old);
        self.subst.truncate(hoisted);
        Ok(e::var(acc))
    }

    /// Field `field` of user reduction `red`: the identity folded with `combine(acc, lift)`.
    pub(super) fn ured(
        &mut self,
        d: Def<'_>,
        red: usize,
        field: usize,
        identity: &[Scalar],
        head: &Head,
        bodies: &[Id],
    ) -> Result<Expr, ScheduleError> {
        let program = self.program;
        let Some(r) = program.reductions.get(red) else { return Err(self.internal("unknown reduction")) };
        let tys: Vec<Ty> = r.fields.iter().map(|(_, dt)| vty(*dt)).collect();
        let accs: Vec<Var> = tys.iter().zip(identity).map(|(t, v)| self.b.let_("state", scalar(*t, *v))).collect();
        let (lo, hi) = self.bounds(d, head)?;
        let mut roots = vec![head.filter];
        roots.extend(bodies);
        let hoisted = super::hoist::hoist(self, d, &roots, head.slot, None)?;
        let mark = self.b.mark();
        let old = self.open_head(d, head, lo, hi)?;
        let mut locals: Vec<Expr> = accs.iter().map(|v| e::var(*v)).collect();
        for (&b, &t) in bodies.iter().zip(&tys) {
            let x = self.lower_as(d, b, t)?;
            let v = self.b.let_("lift", x);
            locals.push(e::var(v));
        }
        for l in &r.lets {
            let x = self.combine_expr(l, &locals)?;
            let v = self.b.let_("let", x);
            locals.push(e::var(v));
        }
        let mut results = Vec::with_capacity(r.result.len());
        for (x, &t) in r.result.iter().zip(&tys) {
            let v = self.combine_expr(x, &locals)?;
            let v = if self.b.ty(&v) == t { v } else { e::cast(t, v) };
            results.push(self.b.let_("next", v));
        }
        for (acc, v) in accs.iter().zip(results) {
            self.b.set(*acc, e::var(v));
        }
        self.b.close_to(mark);
        self.close_head(head, old);
        self.subst.truncate(hoisted);
        accs.get(field).map(|v| e::var(*v)).ok_or_else(|| self.internal("a user reduction field out of range"))
    }

    /// A `combine` expression of a user reduction, with `locals` = [acc, x, lets].
    fn combine_expr(&mut self, x: &hir::Expr, locals: &[Expr]) -> Result<Expr, ScheduleError> {
        let ty = vty(x.dtype);
        Ok(match &x.kind {
            ExprKind::Lit(l) => scalar(ty, crate::semantics::ops::lit_scalar(*l)),
            ExprKind::Param(p) => match self.params.get(&p.index()) {
                Some(v) => e::var(*v),
                None => return Err(self.internal("a param the kernel does not take")),
            },
            ExprKind::Local(i) => locals.get(*i).cloned().ok_or_else(|| self.internal("a local outside a combine"))?,
            ExprKind::Unary(op, a) => {
                let at = vty(a.dtype);
                let v = self.combine_expr(a, locals)?;
                match op {
                    hir::UnOp::Not => e::un(super::kir::UnOp::Not, v),
                    hir::UnOp::Neg => self.neg(at, v),
                }
            }
            ExprKind::Binary(op, a, b) => {
                let at = vty(a.dtype);
                let va = self.combine_expr(a, locals)?;
                let vb = self.combine_expr(b, locals)?;
                self.bin_values(*op, at, va, vb)
            }
            ExprKind::If(c, a, b) => {
                let vc = self.combine_expr(c, locals)?;
                let va = self.combine_expr(a, locals)?;
                let vb = self.combine_expr(b, locals)?;
                e::select(vc, va, vb)
            }
            ExprKind::Call(f, args) => {
                let mut vs = Vec::with_capacity(args.len());
                for a in args {
                    let v = self.combine_expr(a, locals)?;
                    vs.push(if self.b.ty(&v) == ty || ty == Ty::Bool { v } else { e::cast(ty, v) });
                }
                let a = vs.first().cloned().ok_or_else(|| self.internal("a call without arguments"))?;
                let b = vs.get(1).cloned().unwrap_or_else(|| a.clone());
                if ty.is_int() { self.int_func(*f, ty, a, Some(b)) } else { super::arith::float_func(&mut self.b, *f, ty, a, b) }
            }
            ExprKind::Cast(a) => {
                let v = self.combine_expr(a, locals)?;
                self.cast_value(vty(a.dtype), ty, v)
            }
            _ => return Err(self.internal("a combine reads a tensor, an index or a reduction")),
        })
    }

    /// The one-pass online softmax `Σ_I softmax_I(s) · v`, point by point (as the
    /// interpreter: a row whose points all have `-inf` logits is NaN, no point gives 0); with
    /// a `sink` (`osmz`) the denominator is `sum + exp(sink - max)`.
    pub(super) fn osm(&mut self, d: Def<'_>, ty: Ty, head: &Head, s: Id, v: Id, sink: Option<Id>) -> Result<Expr, ScheduleError> {
        let c = |x: f64| e::num(ty, x);
        // The sink first, outside the loop (as the IR evaluator does).
        let sink = match sink {
            Some(x) => {
                let x = self.lower_as(d, x, ty)?;
                Some(self.b.let_("osm.sink", x))
            }
            None => None,
        };
        let mx = self.b.let_("osm.max", c(f64::NEG_INFINITY));
        let l = self.b.let_("osm.sum", c(0.0));
        let o = self.b.let_("osm.acc", c(0.0));
        let any = self.b.let_("osm.any", e::bool(false));
        let (lo, hi) = self.bounds(d, head)?;
        let hoisted = super::hoist::hoist(self, d, &[head.filter, s, v], head.slot, None)?;
        let mark = self.b.mark();
        let old = self.open_head(d, head, lo, hi)?;
        let sv = self.lower_as(d, s, ty)?;
        let sv = self.b.let_("logit", sv);
        let vv = self.lower_as(d, v, ty)?;
        let vv = self.b.let_("value", vv);
        self.b.set(any, e::bool(true));
        let m = self.b.let_("m", e::bin(K::Max, e::var(mx), e::var(sv)));
        let live = e::bin(K::Ne, e::var(m), c(f64::NEG_INFINITY));
        let ex = exp(&mut self.b, ty, e::sub(e::var(mx), e::var(m)));
        let scale = self.b.let_("scale", e::select(live.clone(), ex, c(1.0)));
        let ew = exp(&mut self.b, ty, e::sub(e::var(sv), e::var(m)));
        let w = self.b.let_("w", e::select(live, ew, c(0.0)));
        self.b.set(l, e::add(e::mul(e::var(l), e::var(scale)), e::var(w)));
        self.b.set(o, e::add(e::mul(e::var(o), e::var(scale)), e::mul(e::var(w), e::var(vv))));
        self.b.set(mx, e::var(m));
        self.b.close_to(mark);
        self.close_head(head, old);
        self.subst.truncate(hoisted);
        let all_neg_inf = e::bin(K::And, e::var(any), e::bin(K::Eq, e::var(mx), c(f64::NEG_INFINITY)));
        let den = match sink {
            Some(x) => {
                let ex = exp(&mut self.b, ty, e::sub(e::var(x), e::var(mx)));
                e::add(e::var(l), ex)
            }
            None => e::var(l),
        };
        Ok(e::select(all_neg_inf, c(f64::NAN), fdiv(ty, e::var(o), den)))
    }
}
