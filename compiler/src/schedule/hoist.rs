//! Loop-invariant hoisting (Halide's `compute_at` for scalars): before a loop over an index is
//! opened — the generic plan's inner loop over a node's last index, or a reduction's loop —
//! every *heavy* subterm of what the loop evaluates (one that contains a reduction) that does
//! not depend on the loop's index is evaluated once, into a variable, and substituted
//! ([`Cx::subst`]) wherever the loop body would evaluate it. So a cascade whose optimized form
//! keeps a row's normaliser or a nested `max` inside a loop costs what the cost model counts
//! (each subterm once per point of the indices it reads), not once per point of the loop.
//!
//! Invariants: a hoisted subterm reads only indices bound where it is evaluated, and none that a
//! reduction inside the loop rebinds (the substitution is by op, and an op is shared by
//! every place it occurs); it is always
//! present (no `where` without a `dense`, no partial tensor); it is never part of a scan's
//! look-back. Evaluating it where the original would not (an empty loop, an untaken branch,
//! a filtered-out point) cannot fail: either it is *infallible* ([`nofail`]: float arithmetic,
//! in-range reads, reductions over constant or dim bounds), or it sits on the loop body's
//! unconditional path and the caller guards the evaluation by the loop being non-empty, where
//! the original evaluates it in the first iteration anyway.

use egg::Id;

use super::ScheduleError;
use super::build::e;
use super::common::may_absent;
use super::kir::Expr;
use super::lower::{Cx, Def, children, vty};
use crate::ir::eval::compile::Op;

/// Per op of a definition: the index slots it reads (a bit per slot), whether it contains a
/// reduction, and whether evaluating it can neither fail nor depend on a scan's position.
struct Facts {
    free: Vec<u128>,
    heavy: Vec<bool>,
    nofail: Vec<bool>,
    /// Depends on the enclosing scan's position (a look-back or a read of the scanned tensor).
    scan_dep: Vec<bool>,
}

/// The facts of ops `0..=top` (children come before parents); `None` when a slot does not fit
/// the bit set (no hoisting then).
fn facts(cx: &Cx<'_>, d: Def<'_>, top: Id, prev_ok: bool) -> Option<Facts> {
    let n = usize::from(top) + 1;
    let mut f = Facts { free: vec![0; n], heavy: vec![false; n], nofail: vec![false; n], scan_dep: vec![false; n] };
    let scanned = cx.scan.as_ref().map(|s| s.tensor);
    let index_like = |x: Id| leaf(d, x);
    // Reduction bounds within the declared range: a constant, a dim, an index ± a constant
    // or a dim, clamped by `min`/`max` (what filter-to-bounds writes) — `Cx::bounds` checks the
    // range at run time, and these never leave it on a program that checks.
    let bound_like = |x: Id| bound_like(d, x);
    for i in 0..n {
        let op = &d.ops[i];
        let kids = children(op);
        let all = |v: &[bool]| kids.iter().all(|&c| v[usize::from(c)]);
        let mut free = 0u128;
        let (mut heavy, mut dep) = (false, false);
        for &c in &kids {
            free |= f.free[usize::from(c)];
            heavy |= f.heavy[usize::from(c)];
            dep |= f.scan_dep[usize::from(c)];
        }
        let nofail_kids = all(&f.nofail);
        let nofail = match op {
            Op::Const(_) | Op::Dim(_) | Op::Param { .. } => true,
            Op::Idx(s) => {
                free |= 1u128.checked_shl(u32::try_from(*s).ok()?).filter(|&b| b != 0)?;
                true
            }
            Op::Read { tensor, subs } => {
                dep |= Some(*tensor) == scanned;
                subs.iter().all(|&s| matches!(d.ops[usize::from(s)], Op::Idx(_)))
            }
            Op::Prev { .. } => {
                dep = true;
                prev_ok
            }
            Op::Unary { d: dt, .. } => dt.is_float() && nofail_kids,
            Op::Binary { op, d: dt, a, b } => {
                nofail_kids
                    && (dt.is_float()
                        || op.is_comparison()
                        || (matches!(op, crate::hir::BinOp::Add | crate::hir::BinOp::Sub) && index_like(*a) && index_like(*b)))
            }
            Op::And(..) | Op::Or(..) | Op::If(..) | Op::Dense { .. } => nofail_kids,
            Op::Call { f: func, d: dt, .. } => {
                (dt.is_float() || matches!(func, crate::hir::Func::Min | crate::hir::Func::Max)) && nofail_kids
            }
            Op::Cast { to, .. } => to.is_float() && nofail_kids,
            Op::Where { .. } => nofail_kids,
            Op::Reduce { head, .. } | Op::Osm { head, .. } => {
                heavy = true;
                let inner = u32::try_from(head.slot).ok().and_then(|s| 1u128.checked_shl(s))?;
                free = f.free[usize::from(head.lo)] | f.free[usize::from(head.hi)] | (free & !inner);
                nofail_kids && bound_like(head.lo) && bound_like(head.hi)
            }
            Op::URed { head, .. } => {
                heavy = true;
                let inner = u32::try_from(head.slot).ok().and_then(|s| 1u128.checked_shl(s))?;
                free = f.free[usize::from(head.lo)] | f.free[usize::from(head.hi)] | (free & !inner);
                false
            }
            Op::Sym(_) => false,
        };
        f.free[i] = free;
        f.heavy[i] = heavy;
        f.nofail[i] = nofail;
        f.scan_dep[i] = dep;
    }
    Some(f)
}

/// True if evaluating all of `d` can never fail (float arithmetic, in-range reads, reductions
/// over constant or dim bounds, ...); `prev_ok`: a scan's look-back counts as infallible (its
/// load, or `init` before the start, which the caller checks apart).
pub(super) fn infallible(cx: &Cx<'_>, d: Def<'_>, prev_ok: bool) -> bool {
    facts(cx, d, d.root(), prev_ok).is_some_and(|f| f.nofail[usize::from(d.root())])
}

/// How a loop's body reaches a subterm.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    /// Evaluated in every iteration (only arithmetic, calls and casts on the way).
    Always,
    /// Maybe not (a branch, a filter, a reduction's body on the way).
    Maybe,
}

/// Evaluates the heavy subterms of `roots` (what one iteration of a loop over index slot
/// `slot` evaluates) that do not depend on `slot`, before the loop is opened, and substitutes
/// them; returns the length [`Cx::subst`] had, to truncate to once the loop is closed.
/// `guard`: the loop's trip count is positive (then subterms on the unconditional path may be
/// hoisted even when they could fail); `None` hoists only infallible subterms.
pub(super) fn hoist(cx: &mut Cx<'_>, d: Def<'_>, roots: &[Id], slot: usize, guard: Option<Expr>) -> Result<usize, ScheduleError> {
    let before = cx.subst.len();
    for (id, guarded) in invariants(cx, d, roots, slot, guard.is_some()) {
        let ty = vty(d.tys[usize::from(id)]);
        let var = cx.b.var("hoisted", ty);
        cx.b.set(var, e::num(ty, 0.0));
        let mark = cx.b.mark();
        if guarded && let Some(g) = &guard {
            cx.b.open_if(g.clone());
        }
        let x = cx.lower_as(d, id, ty)?;
        cx.b.set(var, x);
        cx.b.close_to(mark);
        cx.subst.push((id, e::var(var)));
    }
    Ok(before)
}

/// The maximal heavy subterms of `roots` that a loop over `slot` may evaluate once before it
/// opens (see the module docs), children before parents, each with whether it needs the
/// loop's non-empty guard (only when `guarded` is allowed: it may fail, on the unconditional
/// path). Reads the indices bound in `cx` now.
pub(super) fn invariants(cx: &Cx<'_>, d: Def<'_>, roots: &[Id], slot: usize, guarded: bool) -> Vec<(Id, bool)> {
    invariants_given(cx, d, roots, slot, guarded, &[])
}

/// [`invariants`] as if the index slots `also` were bound too (a plan deciding its loops
/// before it opens them).
pub(super) fn invariants_given(cx: &Cx<'_>, d: Def<'_>, roots: &[Id], slot: usize, guarded: bool, also: &[usize]) -> Vec<(Id, bool)> {
    let Some(top) = roots.iter().copied().max() else { return Vec::new() };
    if !roots.iter().any(|&r| heavy_inside(d, r)) {
        return Vec::new();
    }
    let Some(f) = facts(cx, d, top, false) else { return Vec::new() };
    // Slots bound here (the loop's own slot is about to be rebound).
    let mut bound = 0u128;
    for (s, iv) in cx.idx.iter().enumerate() {
        if (iv.is_some() || also.contains(&s)) && s != slot && s < 128 {
            bound |= 1 << s;
        }
    }
    // An op is shared by every place it occurs, so one that reads an index some reduction in
    // here rebinds may stand for different values: never substitute those.
    let mut rebound = 0u128;
    for op in &d.ops[..=usize::from(top)] {
        if let Op::Reduce { head, .. } | Op::URed { head, .. } | Op::Osm { head, .. } = op {
            rebound |= 1u128 << head.slot.min(127);
        }
    }
    let partial = cx.partial();
    let mut picked: Vec<(Id, bool)> = Vec::new();
    let mut seen = vec![false; usize::from(top) + 1];
    let mut stack: Vec<(Id, Path, u128)> = roots.iter().map(|&r| (r, Path::Always, bound)).collect();
    while let Some((id, path, avail)) = stack.pop() {
        let i = usize::from(id);
        if seen[i] || cx.subst.iter().any(|(s, _)| *s == id) {
            continue;
        }
        seen[i] = true;
        if !f.heavy[i] {
            continue;
        }
        let invariant = f.free[i] & !avail == 0 && f.free[i] & rebound == 0 && !f.scan_dep[i];
        let needs_guard = !f.nofail[i];
        let safe = !needs_guard || (path == Path::Always && guarded);
        if invariant && safe && !may_absent(d.ops, id, &partial, true) {
            picked.push((id, needs_guard));
            continue;
        }
        match &d.ops[i] {
            Op::Reduce { head, .. } | Op::URed { head, .. } | Op::Osm { head, .. } => {
                let inner = avail & !(1u128 << head.slot.min(127));
                stack.push((head.lo, path, avail));
                stack.push((head.hi, path, avail));
                for c in children(&d.ops[i]).into_iter().skip(2) {
                    stack.push((c, Path::Maybe, inner));
                }
            }
            Op::If(c, a, b) => {
                stack.push((*c, path, avail));
                stack.push((*a, Path::Maybe, avail));
                stack.push((*b, Path::Maybe, avail));
            }
            Op::And(a, b) | Op::Or(a, b) => {
                stack.push((*a, path, avail));
                stack.push((*b, Path::Maybe, avail));
            }
            Op::Where { filter, x } => {
                stack.push((*filter, path, avail));
                stack.push((*x, Path::Maybe, avail));
            }
            op => stack.extend(children(op).into_iter().map(|c| (c, path, avail))),
        }
    }
    // Children before parents, so a subterm shared by two picks is evaluated first.
    picked.sort_by_key(|(id, _)| *id);
    picked
}

/// True if `x` is a reduction bound of the forms filter-to-bounds writes (see [`facts`]).
fn bound_like(d: Def<'_>, x: Id) -> bool {
    match &d.ops[usize::from(x)] {
        Op::Dim(_) | Op::Const(_) | Op::Idx(_) => leaf(d, x),
        Op::Binary { op: crate::hir::BinOp::Add | crate::hir::BinOp::Sub, d: dt, a, b } if dt.is_int() => leaf(d, *a) && leaf(d, *b),
        Op::Call { f: crate::hir::Func::Min | crate::hir::Func::Max, d: dt, x, y: Some(y) } if dt.is_int() => {
            bound_like(d, *x) && bound_like(d, *y)
        }
        _ => false,
    }
}

/// An index, a dim or a constant of at most 2^40 in magnitude: the sum or difference of two
/// cannot overflow (dims and so indices are at most 2^40).
fn leaf(d: Def<'_>, x: Id) -> bool {
    match &d.ops[usize::from(x)] {
        Op::Idx(_) | Op::Dim(_) => true,
        Op::Const(v) => v.as_i64().unsigned_abs() <= 1 << 40,
        _ => false,
    }
}

/// True if `root`'s subtree holds a reduction (a cheap pre-check before [`facts`]).
fn heavy_inside(d: Def<'_>, root: Id) -> bool {
    d.ops[..=usize::from(root)].iter().any(|op| matches!(op, Op::Reduce { .. } | Op::URed { .. } | Op::Osm { .. }))
}
