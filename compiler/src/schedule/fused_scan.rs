//! Scans fused with their consumer on the CPU: a run of scan nodes over the same index `p`
//! (`S1[b, h, p, e] = scan[p](..)`, `S2[b, h, p, f, e] = scan[p](..)`) followed by the one node
//! that reads them, always at its own `p` (`O[b, h, p, f] = Σ_e Q[.., p, e] · S2[.., p, f, e] /
//! ..`): the optimizer's prefix-sum form of causal linear attention, or a user's recurrent
//! form. The generic plan materializes every step of every scan (`P × F × E` per head: 134 MB
//! for causal linear attention at 1,024 tokens, more than the work) and reads it back; fused,
//! each scan keeps one row of state per outer point and the consumer's values are computed
//! right after each step:
//!
//! ```text
//! parallel over the indices before p:
//!   for p (sequential):
//!     each scan in order: for its points after p: S[..] = body (prev = S[..] itself)
//!     the consumer:       for its points after p: O[.., p, ..] = definition
//! ```
//!
//! The consumer's contractions with a state along its last index (`Σ_e q[e] · S[.., e, f]`,
//! the prefix scans' layout) run per step as tile products of one row by 64 columns
//! ([`row_products`]: `q` packed into a stack row, the state read in place), when the row has
//! at most `FMAX` columns and the sum at most `EMAX` terms; else the per-column loops.
//!
//! The state rows are the scans' tensors declared with extent 1 and stride 0 along `p`
//! ([`super::nodes::declare`]), so the generic lowering of `prev 1` and of the consumer's reads
//! finds this step's (or, before the write, the last step's) row.
//!
//! Invariants checked by [`group`]: the scans are locals with no presence, look back exactly
//! one step, and are read only inside the group, at the reader's own indices up to `p`
//! (a scan only by later scans of the group and the consumer); the consumer is an expression
//! node whose indices up to `p` are the scans' and whose reductions run over indices that
//! subscript the scans (no softmax, no sum over keys: those keep their own plans); nothing in
//! the group can fail (evaluating it interleaved changes the order of evaluation only).

use super::ScheduleError;
use super::attention::{EMAX, FMAX, panel_at, panel_read, uses};
use super::build::e;
use super::common::open_parallel_axes;
use super::hoist::{hoist, infallible};
use super::kir::{BinOp as K, Buf, BufKind, Expr, Stmt, TILE_MAX_COLS, TileInit, TileOp, TileProduct, Ty};
use super::lower::{Cx, Def, IdxVar, ScanCx, children, vty};
use super::nodes::Compiled;
use crate::ir::eval::compile::Op;
use crate::ir::{Cascade, Node, Role};
use egg::Id;

/// A fused group: slots `start..consumer` are the scans, `consumer` the reader.
pub(super) struct Group {
    /// First slot.
    pub start: usize,
    /// Slot of the consumer (after the scans).
    pub consumer: usize,
    /// Position of the scan index among the indices (the same in every node of the group).
    pub axis: usize,
    /// How many indices after it every node shares (parallel, like those before it).
    pub shared: usize,
}

/// The fused group starting at `start`, if the slots from there form one.
pub(super) fn group(
    cx: &Cx<'_>,
    c: &Cascade,
    compiled: &[Compiled],
    slots_of: &[Vec<usize>],
    start: usize,
    partial: &[bool],
) -> Option<Group> {
    let node = |s: usize| &c.graph[c.order[s]];
    let Compiled::Scan { axis, .. } = compiled.get(start)? else { return None };
    let axis = *axis;
    let head: &[usize] = slots_of[start].get(..=axis)?;
    let mut end = start;
    while let Some(Compiled::Scan { axis: a, body, .. }) = compiled.get(end) {
        let n = node(end);
        let same = *a == axis && slots_of[end].get(..=axis) == Some(head);
        let one_back = body.0.iter().all(|op| !matches!(op, Op::Prev { back } if *back != 1));
        if !same || !one_back || partial[end] || !matches!(n.role, Role::Local) {
            break;
        }
        end += 1;
    }
    let consumer = end;
    if consumer == start || !matches!(compiled.get(consumer)?, Compiled::Expr(..)) || partial[consumer] {
        return None;
    }
    let cons = node(consumer);
    if slots_of[consumer].get(..=axis) != Some(head) || node(start).shape.get(..=axis) != cons.shape.get(..=axis) {
        return None;
    }
    // The consumer reduces only over the scans' own indices (a contraction with the state:
    // per step, work in proportion to the state). A reduction over anything else — keys
    // `m` of an attention term reading the scan at `p` — keeps the consumer on its own plan
    // (evaluated per step, it would run once per output column).
    let Compiled::Expr(cops, _) = &compiled[consumer] else { return None };
    let scan_subs: Vec<usize> = cops
        .iter()
        .filter_map(|op| match op {
            Op::Read { tensor, subs } if (start..consumer).contains(tensor) => Some(subs),
            _ => None,
        })
        .flat_map(|subs| subs.iter().filter_map(|&x| if let Op::Idx(i) = cops[usize::from(x)] { Some(i) } else { None }))
        .collect();
    let state_only = cops.iter().all(|op| match op {
        Op::Reduce { head, .. } | Op::URed { head, .. } => scan_subs.contains(&head.slot),
        Op::Osm { .. } => false,
        _ => true,
    });
    if !state_only {
        return None;
    }
    // Indices right after `p` that every node of the group has, in the same place, and that
    // every read of a scan subscripts with the reader's own: run in parallel too (Mamba's
    // channel `d`: `H[b, t, d, n]` and `Y[b, t, d]`).
    let mut shared = 0;
    while let Some(&slot) = slots_of[start].get(axis + 1 + shared) {
        let k = axis + 1 + shared;
        let same = (start..=consumer).all(|s| slots_of[s].get(k) == Some(&slot) && node(s).shape.get(k) == node(start).shape.get(k));
        if !same || !reads_of_group(compiled, start, consumer).all(|r| matches!(r.sub(k), Some(Op::Idx(i)) if *i == slot)) {
            break;
        }
        shared += 1;
    }
    // Readers: a later scan's body of the group, or the consumer (a scan's init is evaluated
    // without the group's state); at their own indices up to p.
    for r in reads_of_group(compiled, start, consumer) {
        let reader_ok = r.in_body && ((r.reader > r.tensor && r.reader < consumer) || r.reader == consumer);
        let at_own = (0..=axis).all(|k| matches!(r.sub(k), Some(Op::Idx(i)) if *i == head[k]));
        if !reader_ok || !at_own {
            return None;
        }
    }
    // Nothing in the group may fail.
    for comp in &compiled[start..=consumer] {
        let ok = match comp {
            Compiled::Expr(ops, tys) => infallible(cx, Def { ops, tys }, true),
            Compiled::Scan { init, body, .. } => {
                infallible(cx, Def { ops: &init.0, tys: &init.1 }, false) && infallible(cx, Def { ops: &body.0, tys: &body.1 }, true)
            }
            Compiled::Input => false,
        };
        if !ok {
            return None;
        }
    }
    Some(Group { start, consumer, axis, shared })
}

/// A read of one of a group's scans: who reads it and at which subscripts.
struct ScanRead<'c> {
    /// Slot of the reading node.
    reader: usize,
    /// In that node's definition or scan body (not a scan's init).
    in_body: bool,
    /// Slot of the scan read.
    tensor: usize,
    /// The ops of the reading term, and the read's subscripts among them.
    ops: &'c [Op],
    subs: &'c [egg::Id],
}

impl ScanRead<'_> {
    /// The read's subscript `k`, if it has one.
    fn sub(&self, k: usize) -> Option<&Op> {
        self.subs.get(k).map(|&x| &self.ops[usize::from(x)])
    }
}

/// Every read of a scan of the group `start..consumer` anywhere in the cascade.
fn reads_of_group(compiled: &[Compiled], start: usize, consumer: usize) -> impl Iterator<Item = ScanRead<'_>> {
    compiled
        .iter()
        .enumerate()
        .flat_map(|(reader, comp)| -> Vec<(usize, bool, &[Op])> {
            match comp {
                Compiled::Input => vec![],
                Compiled::Expr(ops, _) => vec![(reader, true, ops)],
                Compiled::Scan { init, body, .. } => vec![(reader, true, &body.0), (reader, false, &init.0)],
            }
        })
        .flat_map(move |(reader, in_body, ops)| {
            ops.iter().filter_map(move |op| match op {
                Op::Read { tensor, subs } if (start..consumer).contains(tensor) => {
                    Some(ScanRead { reader, in_body, tensor: *tensor, ops, subs })
                }
                _ => None,
            })
        })
}

/// Emits the fused loop nest of `g` (its tensors declared already) and returns its plan line.
pub(super) fn emit(
    cx: &mut Cx<'_>,
    c: &Cascade,
    g: &Group,
    compiled: &[Compiled],
    slots_of: &[Vec<usize>],
) -> Result<String, ScheduleError> {
    let node = |s: usize| &c.graph[c.order[s]];
    let cons = node(g.consumer);
    let cslots = &slots_of[g.consumer];
    let t = cx.tensors[g.consumer].clone();
    let outer: Vec<usize> = (0..g.axis).chain(g.axis + 1..g.axis + 1 + g.shared).collect();
    let mark = cx.b.mark();
    let (mut vars, mut saved) = open_parallel_axes(cx, cons, cslots, &t.shape, &outer, &format!("{}.fused", cons.name));
    let p = cx.b.open_for(&cons.indices[g.axis], e::i64(0), t.shape[g.axis].clone());
    saved.push((cslots[g.axis], cx.bind(cslots[g.axis], IdxVar { var: p, range: Some(cons.shape[g.axis].clone()) })));
    vars[g.axis] = Some(e::var(p));
    for s in g.start..=g.consumer {
        let n = node(s);
        cx.loc = format!("IR node '{}' of cascade '{}'", n.name, c.name);
        let (d, init) = match &compiled[s] {
            Compiled::Scan { init, body, .. } => (Def { ops: &body.0, tys: &body.1 }, Some(init.clone())),
            Compiled::Expr(ops, tys) => (Def { ops, tys }, None),
            Compiled::Input => return Err(cx.internal("an input in a fused scan group")),
        };
        point(cx, n, s, &slots_of[s], d, &vars, g.axis + g.shared, init, e::var(p))?;
    }
    cx.b.close_to(mark);
    cx.restore(saved);
    let scans: Vec<&str> = (g.start..g.consumer).map(|s| node(s).name.as_str()).collect();
    let inner = if cons.indices.len() > g.axis + 1 + g.shared {
        format!(", inner loop {}", cons.indices[cons.indices.len() - 1])
    } else {
        String::new()
    };
    let par: Vec<&str> = outer.iter().map(|&a| cons.indices[a].as_str()).collect();
    Ok(format!(
        "{}, {}: fused: parallel ({}), sequential {}: each step updates the scans' state rows in place, then computes {}'s row{inner}",
        scans.join(", "),
        cons.name,
        par.join(", "),
        cons.indices[g.axis],
        cons.name
    ))
}

/// One step of one node of the group: its points after index `axis` (`vars` binds the indices
/// up to it: the outer ones, the scan's, the shared ones), each evaluated and stored; a scan's
/// `prev 1` reads the row itself (stride 0).
#[allow(clippy::too_many_arguments)]
fn point(
    cx: &mut Cx<'_>,
    n: &Node,
    slot: usize,
    slots: &[usize],
    d: Def<'_>,
    vars: &[Option<Expr>],
    axis: usize,
    init: Option<(Vec<Op>, Vec<crate::hir::DType>)>,
    p: Expr,
) -> Result<(), ScheduleError> {
    let t = cx.tensors[slot].clone();
    let k = slots.len();
    let mark = cx.b.mark();
    let mut saved = Vec::new();
    let mut idx = Vec::with_capacity(k);
    for v in vars.iter().take(axis + 1) {
        idx.push(v.clone().ok_or_else(|| cx.internal("an unbound index in a fused scan group"))?);
    }
    let mut hoisted = cx.subst.len();
    let mut rows: Vec<RowProduct> = Vec::new();
    for (a, &slot) in slots.iter().enumerate().skip(axis + 1) {
        if a == k - 1 && init.is_none() {
            // What the consumer's inner loop evaluates but does not depend on (a row's
            // normaliser) once per step (nothing here can fail: no guard needed).
            hoisted = hoist(cx, d, &[d.root()], slot, None)?;
            rows = row_products(cx, d, (slot, n.indices[a].as_str()));
            if !rows.is_empty() {
                break;
            }
        }
        let v = cx.b.open_for(&n.indices[a], e::i64(0), t.shape[a].clone());
        saved.push((slot, cx.bind(slot, IdxVar { var: v, range: Some(n.shape[a].clone()) })));
        idx.push(e::var(v));
    }
    if rows.is_empty() {
        row(cx, n, slot, slots, d, &idx, None, init, p, &[])?;
    } else {
        let l = k - 1;
        let cols = row_product_tiles(cx, n, d, &rows, (slots[l], n.shape[l].clone()), t.shape[l].clone())?;
        row(cx, n, slot, slots, d, &idx, Some(l), init.clone(), p.clone(), &cols)?;
        cx.b.open_else();
        row(cx, n, slot, slots, d, &idx, Some(l), init, p, &[])?;
        cx.b.close();
    }
    cx.b.close_to(mark);
    cx.subst.truncate(hoisted);
    cx.restore(saved);
    Ok(())
}

/// A contraction of the consumer with a scan's state along its last index `l`,
/// `Σ_e x(e) · S[.., e, .., l]` (`x` free of `l`, `S` read with `l` last at stride 1 and `e` in
/// one subscript): one row of a vector–matrix product per step.
struct RowProduct {
    /// The `sum`.
    at: Id,
    /// `x` and the read of `S`.
    x: Id,
    y: Id,
    /// The axis of `S` that `e` subscripts.
    key_axis: usize,
}

/// The consumer's [`RowProduct`]s with columns at index slot `l` (named `l_name`; the state is
/// read in place: [`panel_read`]), outside every other
/// reduction (so every index they read but `e` and `l` is bound at the consumer's row).
fn row_products(cx: &Cx<'_>, d: Def<'_>, (l, l_name): (usize, &str)) -> Vec<RowProduct> {
    let mut out = Vec::new();
    let mut stack = vec![d.root()];
    let mut seen = vec![false; usize::from(d.root()) + 1];
    while let Some(at) = stack.pop() {
        let i = usize::from(at);
        if seen[i] {
            continue;
        }
        seen[i] = true;
        match &d.ops[i] {
            Op::Reduce { op: crate::hir::ReduceOp::Sum, d: crate::hir::DType::F32, head, body } => {
                let unfiltered = matches!(d.ops[usize::from(head.filter)], Op::Const(tfmc_runtime::Scalar::B(true)));
                let Op::Binary { op: crate::hir::BinOp::Mul, a, b, .. } = &d.ops[usize::from(*body)] else { continue };
                for (x, y) in [(*a, *b), (*b, *a)] {
                    if let Some(key_axis) = panel_read(cx, d, y, (head.slot, head.name.as_str()), (l, l_name), &[])
                        && unfiltered
                        && !uses(d.ops, x, l)
                        && !uses(d.ops, head.lo, l)
                        && !uses(d.ops, head.hi, l)
                    {
                        out.push(RowProduct { at, x, y, key_axis });
                        break;
                    }
                }
            }
            Op::Reduce { .. } | Op::URed { .. } | Op::Osm { .. } => {}
            op => stack.extend(children(op)),
        }
    }
    out.sort_by_key(|r| r.at);
    out
}

/// Opens `if` the products fit (each sum at most `EMAX` long, at most `FMAX` columns) and, in
/// it, computes each [`RowProduct`] into a stack row of `FMAX` columns: `x(e)` packed into a
/// stack row, then tile products of one row by `TILE_MAX_COLS` columns reading the state in
/// place (the accumulators stay in registers across `e`). Returns the rows, for the caller to
/// substitute; the caller emits the `else` (the per-column loops) and closes the `if`.
fn row_product_tiles(
    cx: &mut Cx<'_>,
    n: &Node,
    d: Def<'_>,
    rows: &[RowProduct],
    (l, lrange): (usize, crate::ir::Size),
    cols: Expr,
) -> Result<Vec<(Id, Buf)>, ScheduleError> {
    let mut spans = Vec::with_capacity(rows.len());
    let mut fits = e::bin(K::Le, cols.clone(), e::i64(i64::from(FMAX)));
    for r in rows {
        let Op::Reduce { head, .. } = &d.ops[usize::from(r.at)] else { return Err(cx.internal("a row product that is not a sum")) };
        // The bounds are checked against the index's range here, as the sum would.
        let (lo, hi) = cx.bounds(d, head)?;
        let len = cx.b.let_("len", e::bin(K::Max, e::i64(0), e::sub(e::var(hi), e::var(lo))));
        fits = e::bin(K::And, fits, e::bin(K::Le, e::var(len), e::i64(i64::from(EMAX))));
        spans.push((head, lo, len));
    }
    cx.b.open_if(fits);
    let mut out = Vec::with_capacity(rows.len());
    let cw = e::i64(i64::from(TILE_MAX_COLS));
    for (r, (head, lo, len)) in rows.iter().zip(spans) {
        let range = cx.ranges.get(head.name.as_str()).cloned();
        let a = cx.b.buf(&format!("{}.x", n.name), Ty::F32, BufKind::Stack(EMAX));
        let j = cx.b.open_for("j", e::i64(0), e::var(len));
        let ev = cx.b.let_(head.name.as_str(), e::add(e::var(lo), e::var(j)));
        let old = cx.bind(head.slot, IdxVar { var: ev, range: range.clone() });
        let x = cx.lower_as(d, r.x, Ty::F32)?;
        cx.b.store(a, e::var(j), x);
        cx.b.close();
        cx.unbind(head.slot, old);
        // The state's row `e = lo`, column 0: where the panel starts (bound as in range: the
        // products read nothing when the sum is empty or the row has no column).
        let zero = cx.b.let_("l0", e::i64(0));
        let (b, b0, ldb) = panel_at(cx, d, r.y, r.key_axis, (head.slot, lo, range), (l, zero, Some(lrange.clone())))?;
        let c = cx.b.buf(&format!("{}.row", n.name), Ty::F32, BufKind::Stack(FMAX));
        let chunks = e::bin(K::Div, e::add(cols.clone(), e::i64(i64::from(TILE_MAX_COLS) - 1)), cw.clone());
        let fc = cx.b.open_for("f.chunk", e::i64(0), chunks);
        let f0 = e::mul(e::var(fc), cw.clone());
        cx.b.emit(Stmt::TileProduct(Box::new(TileProduct {
            m: 1,
            n: TILE_MAX_COLS,
            cols: e::sub(cols.clone(), f0.clone()),
            k: e::var(len),
            a,
            a0: e::i64(0),
            lda: e::i64(0),
            ka: e::i64(1),
            b,
            b0: e::add(b0, f0.clone()),
            ldb,
            c,
            c0: f0,
            ldc: e::i64(0),
            init: TileInit::Zero,
            op: TileOp::Mul,
        })));
        cx.b.close();
        out.push((r.at, c));
    }
    Ok(out)
}

/// The innermost part of [`point`]: opens the loop of index `open` when given (the rows `cols`
/// substituted for their sums, read at it), then evaluates the node's point and stores it.
#[allow(clippy::too_many_arguments)]
fn row(
    cx: &mut Cx<'_>,
    n: &Node,
    slot: usize,
    slots: &[usize],
    d: Def<'_>,
    idx: &[Expr],
    open: Option<usize>,
    init: Option<(Vec<Op>, Vec<crate::hir::DType>)>,
    p: Expr,
    cols: &[(Id, Buf)],
) -> Result<(), ScheduleError> {
    let t = cx.tensors[slot].clone();
    let mark = cx.b.mark();
    let mut idx = idx.to_vec();
    let mut saved = Vec::new();
    let subst0 = cx.subst.len();
    if let Some(a) = open {
        let v = cx.b.open_for(&n.indices[a], e::i64(0), t.shape[a].clone());
        saved.push((slots[a], cx.bind(slots[a], IdxVar { var: v, range: Some(n.shape[a].clone()) })));
        idx.push(e::var(v));
        for (id, buf) in cols {
            cx.subst.push((*id, e::load(*buf, e::var(v))));
        }
    }
    let mut flat = e::i64(0);
    for (a, x) in idx.iter().enumerate() {
        flat = e::add(flat, e::mul(x.clone(), t.strides[a].clone()));
    }
    let flat = e::var(cx.b.let_("at", flat));
    let ty = vty(n.dtype);
    if init.is_some() {
        cx.scan = Some(ScanCx { tensor: slot, flat: flat.clone(), stride: e::i64(0), t: p, carry: None });
        cx.scan_init = init;
    } else if matches!(n.role, Role::Output(_)) {
        // Absent points of outputs are 0 (the caller's buffer may hold anything).
        cx.b.store(t.buf, flat.clone(), super::reduce::scalar(ty, tfmc_runtime::Scalar::F(0.0)));
    }
    let inner = cx.b.mark();
    let v = cx.lower_as(d, d.root(), ty)?;
    cx.b.store(t.buf, flat, v);
    cx.b.close_to(inner);
    cx.scan = None;
    cx.scan_init = None;
    cx.b.close_to(mark);
    cx.subst.truncate(subst0);
    cx.restore(saved);
    Ok(())
}
