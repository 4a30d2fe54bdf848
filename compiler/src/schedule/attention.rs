//! The tiled attention plan for `osm` nodes (FlashAttention-2 style on CPU).
//!
//! Applies to a node `O[.., t, .., f] = osm m lo hi F (s) (v)` whose last index `f` appears
//! in neither the logit `s` nor the head, and whose *tile index* `t` — the last other index
//! that `v` does not read — exists (the query position `p` of every attention kernel). Then:
//!
//! ```text
//! parallel over (other indices × tiles of TP rows of t):
//!   per row: running max, running sum, "any point" flag, accumulator acc[f] (stack)
//!   per row: its bounds lo..hi; the block range is min lo .. max hi (masked blocks skipped)
//!   for each block of TM keys m0..m0+TM:
//!     per row: S[j] = s(t, m) where the filter holds, else -inf (the dot product over the
//!              contracted index is the inner, vectorized loop); block max
//!              rescale the row by exp(max_old - max_new); w[j] = exp(S[j] - max_new)
//!              acc[f] += w[j] · v(m, f) (the f loop vectorized)
//!   O = acc / sum per row (0/0 = 0; NaN when every point's logit is -inf, as the interpreter)
//! ```
//!
//! `s` is evaluated once per (row, key), not once per (row, key, f) as the generic plan
//! does. The plan needs `F <= FMAX` (the accumulator is a stack array); the caller emits the
//! generic plan as the run-time fallback.

use egg::Id;

use super::ScheduleError;
use super::arith::{exp, fdiv};
use super::build::e;
use super::kir::{BinOp as K, BufKind, Expr, Ty};
use super::lower::{Cx, Def, IdxVar, MAX_DIM};
use crate::ir::Node;
use crate::ir::eval::compile::{Head, Op};

/// The largest `f` extent the plan handles (the accumulator row is a stack array).
pub(crate) const FMAX: u32 = 256;

/// What the analysis found.
pub(super) struct Plan {
    /// The osm's head.
    head: Head,
    /// Logit.
    s: Id,
    /// Value.
    v: Id,
    /// Position of the tile index among the node's indices.
    pub tile: usize,
}

/// True if op `id` reads index slot `slot` (not counting inner rebindings of it).
fn uses(ops: &[Op], id: Id, slot: usize) -> bool {
    let rec = |i: Id| uses(ops, i, slot);
    let head = |h: &Head, inner: &[Id]| rec(h.lo) || rec(h.hi) || (h.slot != slot && (rec(h.filter) || inner.iter().any(|&i| rec(i))));
    match &ops[usize::from(id)] {
        Op::Idx(s) => *s == slot,
        Op::Sym(_) | Op::Const(_) | Op::Dim(_) | Op::Param { .. } | Op::Prev { .. } => false,
        Op::Read { subs, .. } => subs.iter().any(|&s| rec(s)),
        Op::Unary { a, .. } => rec(*a),
        Op::Binary { a, b, .. } | Op::And(a, b) | Op::Or(a, b) => rec(*a) || rec(*b),
        Op::If(c, a, b) => rec(*c) || rec(*a) || rec(*b),
        Op::Call { x, y, .. } => rec(*x) || y.is_some_and(rec),
        Op::Cast { x, .. } | Op::Dense { x, .. } => rec(*x),
        Op::Where { filter, x } => rec(*filter) || rec(*x),
        Op::Reduce { head: h, body, .. } => head(h, &[*body]),
        Op::URed { head: h, bodies, .. } => head(h, bodies),
        Op::Osm { head: h, s, v } => head(h, &[*s, *v]),
    }
}

/// True if op `id` may have no point (a `where` or a read of a partial tensor).
fn may_absent(cx: &Cx<'_>, ops: &[Op], id: Id) -> bool {
    let rec = |i: Id| may_absent(cx, ops, i);
    match &ops[usize::from(id)] {
        Op::Where { .. } | Op::Prev { .. } => true,
        Op::Read { tensor, subs } => cx.tensors.get(*tensor).is_none_or(|t| t.present.is_some()) || subs.iter().any(|&s| rec(s)),
        Op::Unary { a, .. } | Op::Cast { x: a, .. } => rec(*a),
        Op::Binary { a, b, .. } | Op::And(a, b) | Op::Or(a, b) => rec(*a) || rec(*b),
        Op::If(c, a, b) => rec(*c) || rec(*a) || rec(*b),
        Op::Call { x, y, .. } => rec(*x) || y.is_some_and(rec),
        _ => false,
    }
}

/// The plan for `node` (slots of its indices `slots`, definition `d`), if it applies.
pub(super) fn analyze(cx: &Cx<'_>, node: &Node, slots: &[usize], d: Def<'_>) -> Option<Plan> {
    let Op::Osm { head, s, v } = d.ops.last()?.clone() else { return None };
    let f = *slots.last()?;
    if slots.len() < 2 || uses(d.ops, s, f) || uses(d.ops, head.lo, f) || uses(d.ops, head.hi, f) || uses(d.ops, head.filter, f) {
        return None;
    }
    if head.slot == f || slots.contains(&head.slot) || may_absent(cx, d.ops, s) || may_absent(cx, d.ops, v) {
        return None;
    }
    let tile = (0..slots.len() - 1).rev().find(|&k| !uses(d.ops, v, slots[k]))?;
    if !node.dtype.is_float() {
        return None;
    }
    Some(Plan { head, s, v, tile })
}

/// Emits the plan for `node` (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(super) fn emit(cx: &mut Cx<'_>, node: &Node, slot: usize, slots: &[usize], d: Def<'_>, plan: &Plan, tp: u32, tm: u32) -> Result<(), ScheduleError> {
    let t = cx.tensors[slot].clone();
    let ty = Ty::F32.max_with(super::lower::vty(node.dtype));
    let c = |x: f64| e::num(ty, x);
    let k = slots.len();
    let (fa, ta) = (k - 1, plan.tile);
    let others: Vec<usize> = (0..k - 1).filter(|&a| a != ta).collect();
    let mark = cx.b.mark();
    let mut saved = Vec::new();
    let mut idx: Vec<Option<Expr>> = vec![None; k];
    // Parallel over (other indices × row tiles).
    let ntiles = e::bin(K::Div, e::add(t.shape[ta].clone(), e::i64(i64::from(tp) - 1)), e::i64(i64::from(tp)));
    let ntiles = e::var(cx.b.let_("tiles", ntiles));
    let mut n = ntiles.clone();
    for &a in &others {
        n = e::mul(n, t.shape[a].clone());
    }
    let q = cx.b.open_parallel(&format!("{}.tiles", node.name), n);
    let tile = cx.b.let_("tile", e::bin(K::Rem, e::var(q), ntiles.clone()));
    let mut rest = e::bin(K::Div, e::var(q), ntiles);
    for (i, &a) in others.iter().enumerate().rev() {
        let x = if i == 0 { rest.clone() } else { e::bin(K::Rem, rest.clone(), t.shape[a].clone()) };
        let v = cx.b.let_(&node.indices[a], x);
        rest = e::bin(K::Div, rest, t.shape[a].clone());
        cx.intervals.insert(v, (0, MAX_DIM as i128));
        idx[a] = Some(e::var(v));
        saved.push((slots[a], cx.bind(slots[a], IdxVar { var: v, range: Some(node.shape[a].clone()) })));
    }
    let t0 = cx.b.let_("t0", e::mul(e::var(tile), e::i64(i64::from(tp))));
    let nt = cx.b.let_("rows", e::bin(K::Min, e::i64(i64::from(tp)), e::sub(t.shape[ta].clone(), e::var(t0))));
    let stack = |cx: &mut Cx<'_>, name: &str, ty: Ty, n: u32| cx.b.buf(&format!("{}.{name}", node.name), ty, BufKind::Stack(n));
    let mx = stack(cx, "max", ty, tp);
    let sum = stack(cx, "sum", ty, tp);
    let any = stack(cx, "any", Ty::Bool, tp);
    let lo = stack(cx, "lo", Ty::I64, tp);
    let hi = stack(cx, "hi", Ty::I64, tp);
    let acc = stack(cx, "acc", ty, tp * FMAX);
    let sb = stack(cx, "s", ty, tp * tm);
    let fsize = t.shape[fa].clone();
    let fmax = e::i64(i64::from(FMAX));
    // Per row: state and bounds.
    let mlo = cx.b.let_("mlo", e::i64(i64::MAX));
    let mhi = cx.b.let_("mhi", e::i64(i64::MIN));
    let i = cx.b.open_for("i", e::i64(0), e::var(nt));
    let row = cx.b.let_(&node.indices[ta], e::add(e::var(t0), e::var(i)));
    cx.intervals.insert(row, (0, MAX_DIM as i128));
    let old_t = cx.bind(slots[ta], IdxVar { var: row, range: Some(node.shape[ta].clone()) });
    cx.b.store(mx, e::var(i), c(f64::NEG_INFINITY));
    cx.b.store(sum, e::var(i), c(0.0));
    cx.b.store(any, e::var(i), e::bool(false));
    let f0 = cx.b.open_for("f", e::i64(0), fsize.clone());
    cx.b.store(acc, e::add(e::mul(e::var(i), fmax.clone()), e::var(f0)), c(0.0));
    cx.b.close();
    let (l, h) = cx.bounds(d, &plan.head)?;
    // An empty row range must not widen the block range.
    cx.b.open_if(e::bin(K::Lt, e::var(l), e::var(h)));
    cx.b.set(mlo, e::bin(K::Min, e::var(mlo), e::var(l)));
    cx.b.set(mhi, e::bin(K::Max, e::var(mhi), e::var(h)));
    cx.b.close();
    cx.b.store(lo, e::var(i), e::var(l));
    cx.b.store(hi, e::var(i), e::var(h));
    cx.b.close();
    // Key blocks.
    let nb = e::select(
        e::bin(K::Lt, e::var(mlo), e::var(mhi)),
        e::bin(K::Div, e::add(e::sub(e::var(mhi), e::var(mlo)), e::i64(i64::from(tm) - 1)), e::i64(i64::from(tm))),
        e::i64(0),
    );
    let kb = cx.b.open_for("block", e::i64(0), nb);
    let m0 = cx.b.let_("m0", e::add(e::var(mlo), e::mul(e::var(kb), e::i64(i64::from(tm)))));
    let nm = cx.b.let_("keys", e::bin(K::Min, e::i64(i64::from(tm)), e::sub(e::var(mhi), e::var(m0))));
    let i = cx.b.open_for("i", e::i64(0), e::var(nt));
    let row = cx.b.let_(&node.indices[ta], e::add(e::var(t0), e::var(i)));
    cx.intervals.insert(row, (0, MAX_DIM as i128));
    cx.bind(slots[ta], IdxVar { var: row, range: Some(node.shape[ta].clone()) });
    let (rlo, rhi) = (cx.b.let_("lo", e::load(lo, e::var(i))), cx.b.let_("hi", e::load(hi, e::var(i))));
    let bmax = cx.b.let_("bmax", c(f64::NEG_INFINITY));
    let anyrow = cx.b.let_("anyrow", e::load(any, e::var(i)));
    let srow = |i: Var, j: Expr| e::add(e::mul(e::var(i), e::i64(i64::from(tm))), j);
    // Logits.
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let m = cx.b.let_("m", e::add(e::var(m0), e::var(j)));
    cx.intervals.insert(m, (0, MAX_DIM as i128));
    let range = cx.ranges.get(plan.head.name.as_str()).cloned();
    let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range });
    let sv = cx.b.let_("logit", c(f64::NEG_INFINITY));
    let inside = e::bin(K::And, e::bin(K::Ge, e::var(m), e::var(rlo)), e::bin(K::Lt, e::var(m), e::var(rhi)));
    cx.b.open_if(inside);
    let ok = cx.holds(d, plan.head.filter)?;
    cx.b.open_if(ok);
    let x = cx.lower_as(d, plan.s, ty)?;
    cx.b.set(sv, x);
    cx.b.set(anyrow, e::bool(true));
    cx.b.close();
    cx.b.close();
    cx.b.store(sb, srow(i, e::var(j)), e::var(sv));
    cx.b.set(bmax, e::acc(K::Max, e::var(bmax), e::var(sv)));
    cx.b.close();
    cx.b.store(any, e::var(i), e::var(anyrow));
    // Online softmax update of the row.
    let old = cx.b.let_("mold", e::load(mx, e::var(i)));
    let mnew = cx.b.let_("mnew", e::bin(K::Max, e::var(old), e::var(bmax)));
    cx.b.open_if(e::bin(K::Ne, e::var(mnew), c(f64::NEG_INFINITY)));
    let sc = exp(&mut cx.b, ty, e::sub(e::var(old), e::var(mnew)));
    let scale = cx.b.let_("scale", sc);
    let lsum = cx.b.let_("l", e::mul(e::load(sum, e::var(i)), e::var(scale)));
    let f1 = cx.b.open_for("f", e::i64(0), fsize.clone());
    let at = e::add(e::mul(e::var(i), fmax.clone()), e::var(f1));
    cx.b.store(acc, at.clone(), e::mul(e::load(acc, at), e::var(scale)));
    cx.b.close();
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let w = exp(&mut cx.b, ty, e::sub(e::load(sb, srow(i, e::var(j))), e::var(mnew)));
    let w = cx.b.let_("w", w);
    cx.b.store(sb, srow(i, e::var(j)), e::var(w));
    cx.b.set(lsum, e::acc(K::Add, e::var(lsum), e::var(w)));
    cx.b.close();
    cx.b.store(sum, e::var(i), e::var(lsum));
    cx.b.store(mx, e::var(i), e::var(mnew));
    // acc += w · v.
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let w = cx.b.let_("w", e::load(sb, srow(i, e::var(j))));
    let m = cx.b.let_("m", e::add(e::var(m0), e::var(j)));
    cx.intervals.insert(m, (0, MAX_DIM as i128));
    let range = cx.ranges.get(plan.head.name.as_str()).cloned();
    cx.bind(plan.head.slot, IdxVar { var: m, range });
    cx.b.open_if(e::bin(K::Ne, e::var(w), c(0.0)));
    let f2 = cx.b.open_for("f", e::i64(0), fsize.clone());
    let old_f = cx.bind(slots[fa], IdxVar { var: f2, range: Some(node.shape[fa].clone()) });
    let val = cx.lower_as(d, plan.v, ty)?;
    let at = e::add(e::mul(e::var(i), fmax.clone()), e::var(f2));
    cx.b.store(acc, at.clone(), e::add(e::load(acc, at), e::mul(e::var(w), val)));
    cx.b.close();
    cx.unbind(slots[fa], old_f);
    cx.b.close();
    cx.b.close();
    cx.unbind(plan.head.slot, old_m);
    cx.b.close(); // if mnew live
    cx.b.close(); // rows
    cx.b.close(); // blocks
    // Write the rows.
    let i = cx.b.open_for("i", e::i64(0), e::var(nt));
    let rowv = e::add(e::var(t0), e::var(i));
    idx[ta] = Some(rowv);
    let nan = e::bin(K::And, e::load(any, e::var(i)), e::bin(K::Eq, e::load(mx, e::var(i)), c(f64::NEG_INFINITY)));
    let nan = cx.b.let_("all_neg_inf", nan);
    let lrow = cx.b.let_("l", e::load(sum, e::var(i)));
    let f3 = cx.b.open_for("f", e::i64(0), fsize);
    idx[fa] = Some(e::var(f3));
    let mut flat = e::i64(0);
    for (a, x) in idx.iter().enumerate() {
        let x = x.clone().ok_or_else(|| cx.internal("an unbound index in the attention plan"))?;
        flat = e::add(flat, e::mul(x, t.strides[a].clone()));
    }
    let o = fdiv(ty, e::load(acc, e::add(e::mul(e::var(i), fmax), e::var(f3))), e::var(lrow));
    let o = e::select(e::var(nan), c(f64::NAN), o);
    let o = if super::lower::vty(node.dtype) == ty { o } else { e::cast(super::lower::vty(node.dtype), o) };
    cx.b.store(t.buf, flat, o);
    cx.b.close_to(mark);
    cx.unbind(slots[ta], old_t);
    for (s, old) in saved.into_iter().rev() {
        cx.unbind(s, old);
    }
    Ok(())
}

use super::kir::Var;

/// The wider of two float value types.
trait MaxWith {
    fn max_with(self, other: Ty) -> Ty;
}

impl MaxWith for Ty {
    fn max_with(self, other: Ty) -> Ty {
        if self == Ty::F64 || other == Ty::F64 { Ty::F64 } else { Ty::F32 }
    }
}
