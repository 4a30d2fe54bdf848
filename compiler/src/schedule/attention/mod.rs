//! The tiled attention plan for `osm` nodes (FlashAttention-2 style on CPU).
//!
//! Applies to a node `O[.., t, .., f] = osm m lo hi F (s) (v)` whose last index `f` appears
//! in neither the logit `s` nor the head, and whose *tile index* `t` — the last other index
//! that `v` does not read — exists (the query position `p` of every attention kernel):
//!
//! ```text
//! parallel over (other indices × tiles of TP rows of t):
//!   per row: running max, running sum, "any point" flag, accumulator acc[f] (stack)
//!   per row: its bounds lo..hi; the block range is min lo .. max hi (masked blocks skipped)
//!   for each block of TM keys m0..m0+TM:
//!     S = logits of the tile's rows × the block's keys (-inf where masked)
//!     per row: rescale by exp(max_old - max_new); w = exp(S - max_new); acc[f] += w · v(m, f)
//!   O = acc / sum per row (0/0 = 0; NaN when every point's logit is -inf, as the interpreter)
//! ```
//!
//! Two ways to compute `S`, chosen at run time:
//! - **packed** (when the logit is `g(Σ_e A(t, e) · B(m, e))` with `g` elementwise and
//!   enough rows, `T >= PACKED_MIN_ROWS`): a pre-pass stores `B` transposed per (other
//!   indices) as `Bᵀ[e, m]` with padded rows; each tile packs its rows of `A`; the `S` tile is
//!   an outer-product loop over `e` (`S[i, 0..TM] += A[i, e] · Bᵀ[e, m0..m0+TM]`, vectorized
//!   along the keys); `g` and the mask are applied branch-free where they cannot fail;
//! - **natural** otherwise (decode, `p = 1`): each logit evaluated as written, its dot
//!   product over the contracted index vectorized along that index, reading `K` in place.
//!
//! `s` is evaluated once per (row, key), not once per (row, key, f) as the generic plan
//! does. The plan needs `F <= FMAX` (the accumulator is a stack array) and, packed,
//! `E <= EMAX`; the caller emits the generic plan as the run-time fallback.
//!
//! For a GPU ([`Target::Gpu`]) the same analysis feeds [`gpu`]'s block-parallel plan instead
//! ([`dispatch`]), when the logit and the value can be evaluated anywhere without failing
//! ([`fits_target`]).

mod emit;
pub(crate) mod gpu;
mod tc;

use egg::Id;

use super::{ScheduleError, ScheduleOptions, Target};
use emit::emit;

use super::lower::{Cx, Def, children};
use crate::hir::{BinOp, ReduceOp};
use crate::ir::Node;
use crate::ir::eval::compile::{Head, Op};

/// The largest `f` extent the plan handles (the accumulator row is a stack array).
pub(crate) const FMAX: u32 = 256;

/// The largest contracted extent the packed variant handles (a tile's rows of `A`).
pub(crate) const EMAX: u32 = 256;

/// The packed variant runs when the tile index has at least this many rows.
pub(crate) const PACKED_MIN_ROWS: i64 = 16;

/// What the analysis found.
pub(super) struct Plan {
    /// The osm's head.
    pub head: Head,
    /// Logit.
    pub s: Id,
    /// Value.
    pub v: Id,
    /// Position of the tile index among the node's indices.
    pub tile: usize,
    /// The dot product inside the logit, for the packed variant.
    pub dot: Option<Dot>,
    /// The logit can be evaluated at masked points without any effect (no failure, no
    /// absence), so the mask can be a select instead of a branch.
    pub pure_logit: bool,
}

/// `Σ_e Π a_k · Π b_k` inside the logit: `a` factors free of the key index, `b` factors
/// free of the tile index.
pub(super) struct Dot {
    /// The `sum` op (replaced by the computed tile).
    pub id: Id,
    /// Its head (`e` over `0..E`, no filter).
    pub head: Head,
    /// Row-side factors.
    pub a: Vec<Id>,
    /// Key-side factors.
    pub b: Vec<Id>,
}

/// True if op `id` reads index slot `slot` (not counting inner rebindings of it). One pass
/// over the ops, children before parents, so shared subterms are visited once.
pub(super) fn uses(ops: &[Op], id: Id, slot: usize) -> bool {
    let mut u = vec![false; usize::from(id) + 1];
    for i in 0..u.len() {
        let v = {
            let at = |x: Id| u[usize::from(x)];
            let head = |h: &Head, inner: &[Id]| at(h.lo) || at(h.hi) || (h.slot != slot && (at(h.filter) || inner.iter().any(|&i| at(i))));
            match &ops[i] {
                Op::Idx(s) => *s == slot,
                Op::Reduce { head: h, body, .. } => head(h, &[*body]),
                Op::URed { head: h, bodies, .. } => head(h, bodies),
                Op::Osm { head: h, s, v } => head(h, &[*s, *v]),
                op => children(op).into_iter().any(at),
            }
        };
        u[i] = v;
    }
    u[usize::from(id)]
}

/// The factors of a product tree of floats.
fn factors(d: Def<'_>, id: Id, out: &mut Vec<Id>) {
    match &d.ops[usize::from(id)] {
        Op::Binary { op: BinOp::Mul, d: dt, a, b } if dt.is_float() => {
            factors(d, *a, out);
            factors(d, *b, out);
        }
        _ => out.push(id),
    }
}

/// The dot product inside logit `s`, if it has the packed form.
fn find_dot(d: Def<'_>, s: Id, key: usize, tile: usize, f: usize) -> Option<Dot> {
    let sums: Vec<Id> = (0..=usize::from(s))
        .map(Id::from)
        .filter(|&i| matches!(&d.ops[usize::from(i)], Op::Reduce { op: ReduceOp::Sum, d: dt, .. } if dt.is_float()))
        .filter(|&i| reaches(d, s, i))
        .collect();
    let [id] = sums.as_slice() else { return None };
    let Op::Reduce { head, body, .. } = &d.ops[usize::from(*id)] else { return None };
    let zero = matches!(d.ops[usize::from(head.lo)], Op::Const(v) if v.as_i64() == 0 && !matches!(v, tfmc_runtime::Scalar::F(_)));
    let full = matches!(d.ops[usize::from(head.hi)], Op::Dim(_));
    let unfiltered = matches!(d.ops[usize::from(head.filter)], Op::Const(tfmc_runtime::Scalar::B(true)));
    if !(zero && full && unfiltered) || head.slot == key || head.slot == tile {
        return None;
    }
    let mut fs = Vec::new();
    factors(d, *body, &mut fs);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for x in fs {
        if uses(d.ops, x, f) {
            return None;
        }
        if uses(d.ops, x, key) {
            if uses(d.ops, x, tile) {
                return None;
            }
            b.push(x);
        } else {
            a.push(x);
        }
    }
    (!b.is_empty()).then_some(Dot { id: *id, head: *head, a, b })
}

/// True if op `target` is in the subtree of `root` (one pass from the root down: children
/// come before parents).
fn reaches(d: Def<'_>, root: Id, target: Id) -> bool {
    let mut marked = vec![false; usize::from(root) + 1];
    marked[usize::from(root)] = true;
    for i in (0..marked.len()).rev() {
        if marked[i] {
            for c in children(&d.ops[i]) {
                marked[usize::from(c)] = true;
            }
        }
    }
    marked.get(usize::from(target)).copied().unwrap_or(false)
}

/// True if evaluating `id` can neither fail nor be absent, given that `dot` (if any) is
/// replaced by a value: float arithmetic, float functions, casts, indices, dims, params,
/// and integer `+`/`-` of indices, dims and constants (which cannot overflow: dims are at
/// most 2^40).
pub(super) fn pure(d: Def<'_>, id: Id, dot: Option<Id>) -> bool {
    let mut ok = vec![false; usize::from(id) + 1];
    for i in 0..ok.len() {
        let v = Some(Id::from(i)) == dot || {
            let at = |x: Id| ok[usize::from(x)];
            let index_like = |x: Id| matches!(d.ops[usize::from(x)], Op::Idx(_) | Op::Dim(_) | Op::Const(_));
            match &d.ops[i] {
                Op::Const(_) | Op::Idx(_) | Op::Dim(_) | Op::Param { .. } => true,
                // Plain subscripts by indices bound over their declared ranges stay in bounds.
                Op::Read { subs, .. } => subs.iter().all(|&s| matches!(d.ops[usize::from(s)], Op::Idx(_))),
                Op::Unary { d: dt, a, .. } => dt.is_float() && at(*a),
                Op::Binary { op, d: dt, a, b } if dt.is_float() => !op.is_comparison() && at(*a) && at(*b),
                Op::Binary { op: BinOp::Add | BinOp::Sub, d: dt, a, b } if dt.is_int() => index_like(*a) && index_like(*b),
                Op::Call { d: dt, x, y, .. } => dt.is_float() && at(*x) && y.is_none_or(at),
                Op::Cast { to, x } => to.is_float() && at(*x),
                _ => false,
            }
        };
        ok[i] = v;
    }
    ok[usize::from(id)]
}

/// The plan for `node` (slots of its indices `slots`, definition `d`), if it applies.
pub(super) fn analyze(cx: &Cx<'_>, node: &Node, slots: &[usize], d: Def<'_>) -> Option<Plan> {
    // The osm itself, or the osm rounded to the node's half format (`O = bf16(...)`): the
    // plan computes in f32 and the store rounds.
    let root = match d.ops.last()? {
        Op::Cast { to, x } if *to == node.dtype && matches!(to, crate::hir::DType::F16 | crate::hir::DType::BF16) => {
            d.ops.get(usize::from(*x))?
        }
        op => op,
    };
    let Op::Osm { head, s, v } = root.clone() else { return None };
    let f = *slots.last()?;
    if slots.len() < 2 || uses(d.ops, s, f) || uses(d.ops, head.lo, f) || uses(d.ops, head.hi, f) || uses(d.ops, head.filter, f) {
        return None;
    }
    // Tensors with a presence buffer are exactly those that may miss points.
    let partial: Vec<bool> = cx.tensors.iter().map(|t| t.present.is_some()).collect();
    let absent = |x: Id| super::nodes::may_absent(d.ops, x, &partial, true);
    if head.slot == f || slots.contains(&head.slot) || absent(s) || absent(v) {
        return None;
    }
    let tile = (0..slots.len() - 1).rev().find(|&k| !uses(d.ops, v, slots[k]))?;
    if !node.dtype.is_float() {
        return None;
    }
    let dot = find_dot(d, s, head.slot, slots[tile], f);
    let unfiltered = matches!(d.ops[usize::from(head.filter)], Op::Const(tfmc_runtime::Scalar::B(true)));
    let pure_logit = unfiltered && pure(d, s, dot.as_ref().map(|x| x.id));
    Some(Plan { head, s, v, tile, dot, pure_logit })
}

/// Stores one output element of a softmax row: `num / den` (`0 / 0 = 0`), NaN where `nan`
/// (every point's logit was -inf, as the interpreter), converted from the plan's `ty` to the
/// node's dtype, at point `idx` of `t` (every index bound; `plan` names the plan in the
/// internal error otherwise).
#[allow(clippy::too_many_arguments)]
pub(super) fn store_output(
    cx: &mut Cx<'_>,
    node: &Node,
    t: &super::lower::TensorInfo,
    idx: &[Option<super::kir::Expr>],
    ty: super::kir::Ty,
    num: super::kir::Expr,
    den: super::kir::Expr,
    nan: super::kir::Var,
    plan: &str,
) -> Result<(), ScheduleError> {
    use super::build::e;
    let mut flat = e::i64(0);
    for (a, x) in idx.iter().enumerate() {
        let x = x.clone().ok_or_else(|| cx.internal(&format!("an unbound index in the {plan}")))?;
        flat = e::add(flat, e::mul(x, t.strides[a].clone()));
    }
    let o = e::select(e::var(nan), e::num(ty, f64::NAN), super::arith::fdiv(ty, num, den));
    let o = if super::lower::vty(node.dtype) == ty { o } else { e::cast(super::lower::vty(node.dtype), o) };
    cx.b.store(t.buf, flat, o);
    Ok(())
}

/// True if the plan can be emitted for `opts.target`: always on a CPU; on a GPU when the
/// logit is a pure, unfiltered expression and the value is pure (no failure can happen inside
/// a block parallel).
pub(super) fn fits_target(plan: &Plan, d: Def<'_>, opts: &ScheduleOptions) -> bool {
    match opts.target {
        Target::Cpu => true,
        Target::Gpu { .. } => plan.pure_logit && pure(d, plan.v, None),
    }
}

/// Emits the plan for `opts.target` (the CPU's tiles, or [`gpu`]'s block parallel).
#[allow(clippy::too_many_arguments)]
pub(super) fn dispatch(
    cx: &mut Cx<'_>,
    node: &Node,
    slot: usize,
    slots: &[usize],
    d: Def<'_>,
    plan: &Plan,
    opts: &ScheduleOptions,
) -> Result<(), ScheduleError> {
    match opts.target {
        Target::Cpu => emit(cx, node, slot, slots, d, plan, opts.tile_p, opts.tile_m),
        Target::Gpu { threads, tensor_cores } => {
            let tc = if tensor_cores { tc::kind(plan, d, node) } else { None };
            gpu::emit(cx, node, slot, slots, d, plan, threads, opts.tile_m, tc)
        }
    }
}
