//! The attention analysis: whether an `osm` node (or a plain `Σ_m w · v`) gets an attention
//! plan, and the facts every
//! plan is built from ([`Plan`]): the key head, the logit and value ops, the tile index, the
//! dot product inside the logit (for the packed and tensor-core variants), and whether the
//! logit is pure (can be masked by a select).

use egg::Id;

use super::super::ScheduleError;
use super::super::build::e;
use super::super::common::may_absent;
use super::super::kir::{Expr, TileOp, Ty};
use super::super::lower::{Cx, Def, children, reversed};
use crate::hir::{BinOp, ReduceOp};
use crate::ir::Node;
use crate::ir::eval::compile::{Head, Op};

/// How a row's weighted values are normalised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in super::super) enum Norm {
    /// `osm`: weights `exp(s - max)`, the output divided by their sum (the online softmax).
    Softmax,
    /// A plain `Σ_m s · v`: the weights are `s` itself, nothing to divide by (sigmoid,
    /// linear, polynomial attention; any map of the logit, or a weight read from a tensor).
    Sum,
}

/// What the analysis found.
pub(in super::super) struct Plan {
    /// The reduction's head.
    pub head: Head,
    /// How the weights are normalised.
    pub norm: Norm,
    /// Logit (`Softmax`) or weight (`Sum`): free of the output column.
    pub s: Id,
    /// Value.
    pub v: Id,
    /// Position of the tile index among the node's indices.
    pub tile: usize,
    /// Which rows of the tile index share the value (and so one tile).
    pub rows: Rows,
    /// The dot product inside the logit, for the packed variant.
    pub dot: Option<Dot>,
    /// The logit can be evaluated at masked points without any effect (no failure, no
    /// absence) with its dot product a value, unfiltered: the GPU plans' condition (the CPU
    /// plan decides per variant, its row invariants being values too: `cpu::purity`).
    pub pure_logit: bool,
    /// A plain sum whose weight has no dot product and reads its tensors along the tile index,
    /// never along the key (`φ(K[m, e])` with rows `e`: a `φ(K)ᵀ·V` step): the CPU plan
    /// computes the weights keys outer and rows inner (vectorized along the rows) into a
    /// key-major tile.
    pub by_rows: bool,
    /// An `osmz`'s sink logit `c` (pure, free of the key and the output column): the row's
    /// denominator is `sum + exp(c - max)`.
    pub sink: Option<Id>,
}

/// Whether the rows of a plan's tile index read the same value `v`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in super::super) enum Rows {
    /// `v` is free of the tile index: every row of a tile shares it (the query position).
    Shared,
    /// A softmax whose value reads every index but the key (decode written without a query
    /// axis: `O[b, h, f]` from `V[b, m, h, f]`, grouped heads `Vp[.., h / (H / G), f]`): the
    /// tile index is the last one before the column, a tile is up to [`SINGLE_ROWS`]
    /// consecutive rows each with its own values, the logits are natural and computed keys
    /// outer (one key's rows read neighbouring memory), `v` is streamed per row, nothing is
    /// packed.
    Single,
}

/// The most rows of a [`Rows::Single`] tile.
pub(in super::super) const SINGLE_ROWS: u32 = 32;

/// `Σ_e Π a_k · Π b_k` (or `Σ_e (a - b)²`) inside the logit: `a` factors free of the key
/// index, `b` factors free of the tile index.
pub(in super::super) struct Dot {
    /// The `sum` op (replaced by the computed tile).
    pub id: Id,
    /// Its head (`e` over `0..E`, no filter).
    pub head: Head,
    /// Row-side factors.
    pub a: Vec<Id>,
    /// Key-side factors.
    pub b: Vec<Id>,
    /// What is summed: `Π a_k · Π b_k` ([`TileOp::Mul`]), or `(a - b)²` with one factor each
    /// side ([`TileOp::SquaredDifference`], written `d * d` or `pow(d, 2)` with `d = a - b` or
    /// `b - a`: a squared Euclidean distance, L2 attention) — the tile product that computes it.
    pub kind: TileOp,
    /// The sum's filter, if any: free of the summed index and pure (a kernel-level mask such as
    /// `m <= p` on a difference tensor `D[p, m, e]` read inside the sum); where it fails the
    /// sum is 0.
    pub filter: Option<Id>,
}

impl Dot {
    /// The sum's value from the computed tile's value `x` (of type `ty`), with the index
    /// variables bound: `x`, or `x` where the filter holds and 0 elsewhere.
    pub fn value(&self, cx: &mut Cx<'_>, d: Def<'_>, x: Expr, ty: Ty) -> Result<Expr, ScheduleError> {
        let Some(f) = self.filter else { return Ok(x) };
        let ok = cx.lower_as(d, f, Ty::Bool)?;
        Ok(e::select(ok, x, e::num(ty, 0.0)))
    }

    /// The summand from the row side's value `a` (its factors' product) and the key side's `b`.
    pub fn term(&self, a: Expr, b: Expr) -> Expr {
        match self.kind {
            TileOp::Mul => e::mul(a, b),
            TileOp::SquaredDifference => {
                let d = e::sub(a, b);
                e::mul(d.clone(), d)
            }
        }
    }
}

/// True if ops `x` and `y` compute the same value by construction: the same op, or the same
/// arithmetic, calls and casts on the same reads, indices, constants and dims (conservative:
/// other ops compare equal only by id).
fn same(d: Def<'_>, x: Id, y: Id) -> bool {
    if x == y {
        return true;
    }
    let all = |a: &[Id], b: &[Id]| a.len() == b.len() && a.iter().zip(b).all(|(&p, &q)| same(d, p, q));
    match (&d.ops[usize::from(x)], &d.ops[usize::from(y)]) {
        (Op::Const(a), Op::Const(b)) => a == b,
        (Op::Idx(a), Op::Idx(b)) => a == b,
        (Op::Dim(a), Op::Dim(b)) => a == b,
        (Op::Read { tensor: t, subs: a }, Op::Read { tensor: u, subs: b }) => t == u && all(a, b),
        (Op::Unary { op: o, d: t, a }, Op::Unary { op: p, d: u, a: b }) => o == p && t == u && same(d, *a, *b),
        (Op::Binary { op: o, d: t, a, b }, Op::Binary { op: p, d: u, a: c, b: e }) => {
            o == p && t == u && same(d, *a, *c) && same(d, *b, *e)
        }
        (Op::Call { f, d: t, x, y }, Op::Call { f: g, d: u, x: z, y: w }) => {
            f == g && t == u && same(d, *x, *z) && y.is_some() == w.is_some() && y.zip(*w).is_none_or(|(p, q)| same(d, p, q))
        }
        (Op::Cast { to: t, x }, Op::Cast { to: u, x: y }) => t == u && same(d, *x, *y),
        _ => false,
    }
}

/// `(a - b)²` with `a` free of the key index and `b` free of the tile index (either order):
/// `(row side, key side)`.
fn squared_difference(d: Def<'_>, body: Id, key: usize, tile: usize) -> Option<(Id, Id)> {
    let base = match &d.ops[usize::from(body)] {
        Op::Binary { op: BinOp::Mul, d: dt, a, b } if dt.is_float() && same(d, *a, *b) => *a,
        Op::Call { f: crate::hir::Func::Pow, d: dt, x, y: Some(y) }
            if dt.is_float() && matches!(d.ops[usize::from(*y)], Op::Const(c) if c.as_f64() == 2.0) =>
        {
            *x
        }
        _ => return None,
    };
    let Op::Binary { op: BinOp::Sub, d: dt, a, b } = d.ops[usize::from(base)] else { return None };
    if !dt.is_float() {
        return None;
    }
    let side = |x: Id| (uses(d.ops, x, key), uses(d.ops, x, tile));
    match (side(a), side(b)) {
        ((false, _), (_, false)) => Some((a, b)),
        ((_, false), (false, _)) => Some((b, a)),
        _ => None,
    }
}

/// True if op `id` reads index slot `slot` (not counting inner rebindings of it). One pass
/// over the ops, children before parents, so shared subterms are visited once.
pub(in super::super) fn uses(ops: &[Op], id: Id, slot: usize) -> bool {
    let mut u = vec![false; usize::from(id) + 1];
    for i in 0..u.len() {
        let v = {
            let at = |x: Id| u[usize::from(x)];
            let head = |h: &Head, inner: &[Id]| at(h.lo) || at(h.hi) || (h.slot != slot && (at(h.filter) || inner.iter().any(|&i| at(i))));
            match &ops[i] {
                Op::Idx(s) => *s == slot,
                Op::Reduce { head: h, body, .. } => head(h, &[*body]),
                Op::URed { head: h, bodies, .. } => head(h, bodies),
                // An osmz's sink is outside the reduction, as its bounds are.
                Op::Osm { head: h, s, v, sink } => head(h, &[*s, *v]) || sink.is_some_and(at),
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
    // A filter that does not read the summed index holds for the whole sum or not at all.
    let filter = (!unfiltered).then_some(head.filter);
    if filter.is_some_and(|x| uses(d.ops, x, head.slot) || uses(d.ops, x, f) || !pure(d, x, None)) {
        return None;
    }
    if !(zero && full) || head.slot == key || head.slot == tile {
        return None;
    }
    if let Some((a, b)) = squared_difference(d, *body, key, tile) {
        if uses(d.ops, a, f) || uses(d.ops, b, f) || !uses(d.ops, b, key) {
            return None;
        }
        return Some(Dot { id: *id, head: *head, a: vec![a], b: vec![b], kind: TileOp::SquaredDifference, filter });
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
    (!b.is_empty()).then_some(Dot { id: *id, head: *head, a, b, kind: TileOp::Mul, filter })
}

/// True if the logit `s` holds no reduction but its dot product (a GPU thread evaluates the
/// logit per key: a row-invariant reduction in it would be recomputed per key; the CPU plan
/// evaluates those once per row instead).
pub(super) fn only_dot_reduces(d: Def<'_>, s: Id, dot: Option<Id>) -> bool {
    let mut stack = vec![s];
    let mut seen = vec![false; usize::from(s) + 1];
    while let Some(x) = stack.pop() {
        let i = usize::from(x);
        if Some(x) == dot || seen[i] {
            continue;
        }
        seen[i] = true;
        if matches!(d.ops[i], Op::Reduce { .. } | Op::URed { .. } | Op::Osm { .. }) {
            return false;
        }
        stack.extend(children(&d.ops[i]));
    }
    true
}

/// True if some tensor read under `s` has the tile index (slot `tile`) in its last subscript
/// (stride 1) and none has the key (slot `key`) there: consecutive rows of a weight tile are
/// then neighbours in memory, consecutive keys are not.
fn reads_along_rows(d: Def<'_>, s: Id, tile: usize, key: usize) -> bool {
    let mut marked = vec![false; usize::from(s) + 1];
    marked[usize::from(s)] = true;
    let (mut rows, mut keys) = (0, 0);
    for i in (0..marked.len()).rev() {
        if !marked[i] {
            continue;
        }
        if let Op::Read { subs, .. } = &d.ops[i]
            && let Some(&last) = subs.last()
        {
            if uses(d.ops, last, key) {
                keys += 1;
            } else if uses(d.ops, last, tile) {
                rows += 1;
            }
        }
        for c in children(&d.ops[i]) {
            marked[usize::from(c)] = true;
        }
    }
    rows > 0 && keys == 0
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
pub(in super::super) fn pure(d: Def<'_>, id: Id, dot: Option<Id>) -> bool {
    pure_given(d, id, dot.as_slice())
}

/// [`pure`] with every op of `values` replaced by a value (a packed dot product, a row's
/// invariants evaluated before the key loop).
pub(in super::super) fn pure_given(d: Def<'_>, id: Id, values: &[Id]) -> bool {
    let mut ok = vec![false; usize::from(id) + 1];
    for i in 0..ok.len() {
        let v = values.contains(&Id::from(i)) || {
            let at = |x: Id| ok[usize::from(x)];
            let index_like = |x: Id| matches!(d.ops[usize::from(x)], Op::Idx(_) | Op::Dim(_) | Op::Const(_));
            match &d.ops[i] {
                Op::Const(_) | Op::Idx(_) | Op::Dim(_) | Op::Param { .. } => true,
                // Plain subscripts by indices bound over their declared ranges stay in bounds,
                // and so do those ranges walked backwards (`D - 1 - m`: a suffix scan's read; the lowering
                // checks that `m` ranges over the axis' `D`, else it guards the read).
                Op::Read { subs, .. } => subs.iter().all(|&s| matches!(d.ops[usize::from(s)], Op::Idx(_)) || reversed(d, s).is_some()),
                Op::Unary { d: dt, a, .. } => dt.is_float() && at(*a),
                Op::Binary { op, d: dt, a, b } if dt.is_float() => !op.is_comparison() && at(*a) && at(*b),
                Op::Binary { op: BinOp::Add | BinOp::Sub, d: dt, a, b } if dt.is_int() => index_like(*a) && index_like(*b),
                // Comparisons of integers that cannot fail (a mask such as `m <= p`), and
                // their conjunctions.
                Op::Binary { op, d: dt, a, b } if dt.is_int() && op.is_comparison() => at(*a) && at(*b),
                Op::And(a, b) | Op::Or(a, b) => at(*a) && at(*b),
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
pub(in super::super) fn analyze(cx: &Cx<'_>, node: &Node, slots: &[usize], d: Def<'_>) -> Option<Plan> {
    analyze_at(cx, node, slots, d, d.root())
}

/// The plan for op `at` of `d` as the definition of `node` (the whole definition, or a
/// subterm the generic plan materializes into a tensor of `node`'s shape first).
pub(in super::super) fn analyze_at(cx: &Cx<'_>, node: &Node, slots: &[usize], d: Def<'_>, at: Id) -> Option<Plan> {
    // The osm itself, or the osm rounded to the node's half format (`O = bf16(...)`): the
    // plan computes in f32 and the store rounds.
    let root = match d.ops.get(usize::from(at))? {
        Op::Cast { to, x } if *to == node.dtype && matches!(to, crate::hir::DType::F16 | crate::hir::DType::BF16) => {
            d.ops.get(usize::from(*x))?
        }
        op => op,
    };
    let f = *slots.last()?;
    let mut sink = None;
    let (head, norm, s, v) = match root.clone() {
        Op::Osm { head, s, v, sink: c } => {
            // A sink the rows' write can evaluate: it neither fails nor reads the column.
            if let Some(c) = c {
                if !pure(d, c, None) || uses(d.ops, c, f) {
                    return None;
                }
                sink = Some(c);
            }
            (head, Norm::Softmax, s, v)
        }
        Op::Reduce { op: ReduceOp::Sum, d: dt, head, body } if dt.is_float() => {
            // `Σ_m w · v` with the weight `w` free of the output column and `v` reading it.
            let Op::Binary { op: BinOp::Mul, a, b, .. } = d.ops[usize::from(body)] else { return None };
            match (uses(d.ops, a, f), uses(d.ops, b, f)) {
                (false, true) => (head, Norm::Sum, a, b),
                (true, false) => (head, Norm::Sum, b, a),
                _ => return None,
            }
        }
        _ => return None,
    };
    if slots.len() < 2 || uses(d.ops, s, f) || uses(d.ops, head.lo, f) || uses(d.ops, head.hi, f) || uses(d.ops, head.filter, f) {
        return None;
    }
    let partial = cx.partial();
    let absent = |x: Id| may_absent(d.ops, x, &partial, true);
    if head.slot == f || slots.contains(&head.slot) || absent(s) || absent(v) {
        return None;
    }
    let free_tile = (0..slots.len() - 1).rev().find(|&k| !uses(d.ops, v, slots[k]));
    // Single-row plans for softmax rows only: a plain weighted sum whose value reads every
    // index is a GEMM chain's step (flow attention's), which the generic plan keeps.
    let (tile, rows) = match free_tile {
        Some(t) => (t, Rows::Shared),
        None if norm == Norm::Softmax => (slots.len() - 2, Rows::Single),
        None => return None,
    };
    if !node.dtype.is_float() {
        return None;
    }
    let dot = if rows == Rows::Shared { find_dot(d, s, head.slot, slots[tile], f) } else { None };
    let unfiltered = matches!(d.ops[usize::from(head.filter)], Op::Const(tfmc_runtime::Scalar::B(true)));
    let pure_s = pure(d, s, dot.as_ref().map(|x| x.id));
    let pure_logit = unfiltered && pure_s;
    let pure_filtered = !unfiltered && pure_s && pure(d, head.filter, None);
    let by_rows = rows == Rows::Shared
        && norm == Norm::Sum
        && dot.is_none()
        && (pure_logit || pure_filtered)
        && reads_along_rows(d, s, slots[tile], head.slot);
    Some(Plan { head, norm, s, v, tile, rows, dot, pure_logit, by_rows, sink })
}
