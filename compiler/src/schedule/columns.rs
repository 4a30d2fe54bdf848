//! Column reductions on the CPU: a node `X[.., l] = sum[m](body)` (or `max`/`min`) whose body
//! reads its inputs along `l` (the node's last index is the last subscript of a read) and never
//! along `m` but for values free of `l` (`Ks[b, h, e] = sum[m](Kf[b, h, m, e])`, a column sum;
//! `Qc[b, h, e] = sum[p](Qf[b, h, p, e] / In[b, h, p])`) is computed with the loops exchanged:
//!
//! ```text
//! parallel over the other indices:
//!   for l: X[.., l] = identity
//!   for m in lo..hi (filter):  for l: X[.., l] = X[.., l] op body(m, l)
//! ```
//!
//! The generic plan's order (`for l { for m { .. } }`) reads each input element of a column
//! with a stride of a whole row (one cache line per element, nothing vectorizes); this order
//! reads rows and vectorizes along `l`.
//!
//! Invariants: the bounds and the filter are free of `l` (evaluated once per outer point);
//! the body can neither fail nor be absent ([`super::attention::pure`]: evaluating it at every
//! point in a different order is unobservable) and holds no reduction (no subterm the generic
//! plan would hoist out of the `l` loop); the node is an `f32` or `f64` (the running value is
//! kept in the output: a half format would round it at every row) with no presence buffer.

use egg::Id;

use super::ScheduleError;
use super::attention::{pure, uses};
use super::build::e;
use super::kir::{BinOp as K, Expr};
use super::lower::{Cx, Def, IdxVar, children, vty};
use crate::hir::{DType, ReduceOp};
use crate::ir::Node;
use crate::ir::eval::compile::{Head, Op};

/// The reduction of a node the column order applies to: `(op, head, body)` of its root.
pub(super) fn column_reduction<'d>(cx: &Cx<'_>, node: &Node, slot: usize, slots: &[usize], d: Def<'d>) -> Option<Column<'d>> {
    let l = *slots.last()?;
    let Op::Reduce { op, d: dt, head, body } = d.ops.get(usize::from(d.root()))? else { return None };
    // f32/f64 only: a half output would round the running value at every row.
    if *dt != node.dtype || !matches!(node.dtype, DType::F32 | DType::F64) || !matches!(op, ReduceOp::Sum | ReduceOp::Max | ReduceOp::Min) {
        return None;
    }
    if [head.lo, head.hi, head.filter].iter().any(|&x| uses(d.ops, x, l)) || !pure(d, *body, None) {
        return None;
    }
    if cx.tensors.get(slot).is_none_or(|t| t.present.is_some()) {
        return None;
    }
    // Reads along `l` and none along `m`; no nested reduction.
    let (mut along_l, mut along_m) = (false, false);
    let mut stack = vec![*body];
    let mut seen = vec![false; usize::from(*body) + 1];
    while let Some(x) = stack.pop() {
        let i = usize::from(x);
        if seen[i] {
            continue;
        }
        seen[i] = true;
        match &d.ops[i] {
            Op::Reduce { .. } | Op::URed { .. } | Op::Osm { .. } => return None,
            Op::Read { subs, .. } => {
                let last = subs.last().map(|&s| &d.ops[usize::from(s)]);
                along_l |= matches!(last, Some(Op::Idx(s)) if *s == l);
                // A read along `m` that is free of `l` is one value per key (a row
                // normaliser `In[p]`): the inner loop broadcasts it.
                along_m |= matches!(last, Some(Op::Idx(s)) if *s == head.slot) && uses(d.ops, x, l);
            }
            _ => {}
        }
        stack.extend(children(&d.ops[i]));
    }
    (along_l && !along_m).then_some(Column { op: *op, head, body: *body })
}

/// What [`column_reduction`] found: the root reduction's op, head and body.
pub(super) struct Column<'d> {
    op: ReduceOp,
    head: &'d Head,
    body: Id,
}

impl Column<'_> {
    /// The reduced index's name (the plan line's).
    pub(super) fn index(&self) -> &str {
        self.head.name.as_str()
    }
}

impl Cx<'_> {
    /// Emits the column order for the node at tensor `slot` (see the module doc), with every
    /// index but the last (`vars[..k - 1]`) already bound by the caller.
    pub(super) fn column_reduce(
        &mut self,
        node: &Node,
        slot: usize,
        slots: &[usize],
        d: Def<'_>,
        vars: &[Option<Expr>],
        col: Column<'_>,
    ) -> Result<(), ScheduleError> {
        let Column { op, head, body } = col;
        let t = self.tensors[slot].clone();
        let k = slots.len();
        let ty = vty(node.dtype);
        let mut outer = e::i64(0);
        for (a, v) in vars.iter().enumerate().take(k - 1) {
            let v = v.clone().ok_or_else(|| self.internal("an unbound left-hand index"))?;
            outer = e::add(outer, e::mul(v, t.strides[a].clone()));
        }
        let outer = e::var(self.b.let_("col.at", outer));
        let stride = t.strides[k - 1].clone();
        let at = |v: super::kir::Var| e::add(outer.clone(), e::mul(e::var(v), stride.clone()));
        let identity = super::reduce::scalar(ty, crate::semantics::ops::identity(op, node.dtype));
        let name = node.indices[k - 1].as_str();
        let range = Some(node.shape[k - 1].clone());
        // Every column starts at the identity (an empty range leaves it).
        let l = self.b.open_for(name, e::i64(0), t.shape[k - 1].clone());
        self.b.store(t.buf, at(l), identity.clone());
        self.b.close();
        let (lo, hi) = self.bounds(d, head)?;
        let mark = self.b.mark();
        let old_m = self.open_head(d, head, lo, hi)?;
        let l = self.b.open_for(name, e::i64(0), t.shape[k - 1].clone());
        let old_l = self.bind(slots[k - 1], IdxVar { var: l, range });
        let x = self.lower_as(d, body, ty)?;
        let cur = e::load(t.buf, at(l));
        let next = match op {
            ReduceOp::Sum => e::acc(K::Add, cur, x),
            ReduceOp::Max => e::acc(K::Max, cur, x),
            ReduceOp::Min => e::acc(K::Min, cur, x),
            _ => return Err(self.internal("a column reduction that is not sum, max or min")),
        };
        self.b.store(t.buf, at(l), next);
        self.b.close_to(mark);
        self.unbind(slots[k - 1], old_l);
        self.close_head(head, old_m);
        Ok(())
    }
}
