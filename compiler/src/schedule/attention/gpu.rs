//! The attention plan for a GPU (FlashAttention-1/2 structure, fp32 CUDA cores): one block of
//! `T` threads per tile of `T` rows of the tile index (one row per thread), key tiles of `TM`
//! keys staged through shared memory by all the block's threads, written in KIR's GPU dialect
//! (`kir` module docs):
//!
//! ```text
//! parallel r over (other indices × rows): bnd[r] = the row's key bounds lo..hi   (may fail)
//! block parallel over (other indices × tiles of T rows), thread t owns row t0 + t:
//!   row state: running max, sum, "any point", acc[f] (per-thread stack array, F <= FMAX);
//!   packed: the row's A[e] (per-thread stack array, E <= EMAX)
//!   lo_sh[t], hi_sh[t] = the row's bounds; barrier; every thread: block range = min lo .. max hi
//!   for each key tile m0..m0+TM in the block range (tiles masked for the whole block skipped):
//!     barrier; all threads stage V[j, f] (and packed: Bᵀ[j, e] = Π b(m0 + j, e)); barrier
//!     per thread: S[j] = logit (packed: Σ_e A[e] · Bᵀ[j, e]), -inf outside the row's bounds;
//!       rescale by exp(max_old - max_new); w = exp(S - max_new); acc[f] += w · V[j, f]
//!   live rows: O = acc / sum (NaN when every point's logit is -inf, as the interpreter)
//! split-K (decode: fewer blocks than SPLIT_TARGET_BLOCKS): the block parallel runs S blocks
//!   per tile, block s taking the s-th part of the key tiles and writing its rows' partial
//!   state (max, sum, any, acc[f]) to a heap buffer; then
//! parallel r over (other indices × rows): merge the S parts (rescaled by exp(max_s - max)),
//!   O = Σ acc_s·scale_s / Σ sum_s·scale_s
//! ```
//!
//! Threads past the last row run with their row clamped to the last one (their loads stay in
//! bounds, they take part in the barriers) and store nothing. Barriers are only at the
//! block's top level and in the key-tile loop, whose trip count every thread computes from the
//! same shared bounds. The caller ([`super::fits_target`]) guarantees that the logit and the
//! value cannot fail, so nothing inside the block parallel fails (the bounds, which may, are
//! computed by the first parallel loop). Packed staging needs `E <= EMAX` at run time; a
//! logit with a dot product and `E > EMAX` gets the CPU plan with one row per parallel
//! iteration instead (its dot product, evaluated as written, has range checks that may fail).
//! A logit without a dot product is evaluated as written by each thread (`K` read from global
//! memory, `V` staged).

use super::super::ScheduleError;
use super::super::arith::exp;
use super::super::build::e;
use super::super::kir::{BinOp as K, BufKind, Expr, MmaKind, Stmt, Ty};
use super::super::lower::{Cx, Def, IdxVar, vty};
use super::super::nodes::{checked_len, node_axes};
use super::{EMAX, FMAX, Plan};
use crate::ir::Node;

/// Emits the GPU plan for `node` with blocks of `threads` threads and tiles of `tm` keys.
#[allow(clippy::too_many_arguments)]
pub(in super::super) fn emit(
    cx: &mut Cx<'_>,
    node: &Node,
    slot: usize,
    slots: &[usize],
    d: Def<'_>,
    plan: &Plan,
    threads: u32,
    tm: u32,
    tc: Option<MmaKind>,
) -> Result<(), ScheduleError> {
    let t = cx.tensors[slot].clone();
    let k = slots.len();
    let ta = plan.tile;
    let others: Vec<usize> = (0..k - 1).filter(|&a| a != ta).collect();
    let rows = t.shape[ta].clone();
    let mut outer_n = e::i64(1);
    for &a in &others {
        outer_n = e::mul(outer_n, t.shape[a].clone());
    }
    // Per-row bounds, in a heap buffer: [lo, hi] per (other point, row).
    let bnd = cx.b.buf(&format!("{}.bounds", node.name), Ty::I64, BufKind::Heap);
    let len = checked_len(cx, &[outer_n.clone(), rows.clone(), e::i64(2)], &format!("{}.bounds", node.name));
    cx.b.emit(Stmt::Alloc { buf: bnd, len });
    let mark = cx.b.mark();
    let r = cx.b.open_parallel(&format!("{}.bounds", node.name), e::mul(outer_n.clone(), rows.clone()));
    let outer = cx.b.let_("outer", e::bin(K::Div, e::var(r), rows.clone()));
    let (_, saved) = cx.bind_flat(e::var(outer), &node_axes(node, slots, &t.shape, &others));
    let row = cx.b.let_(&node.indices[ta], e::bin(K::Rem, e::var(r), rows.clone()));
    let old_t = cx.bind(slots[ta], IdxVar { var: row, range: Some(node.shape[ta].clone()) });
    let (l, h) = cx.bounds(d, &plan.head)?;
    cx.b.store(bnd, e::mul(e::var(r), e::i64(2)), e::var(l));
    cx.b.store(bnd, e::add(e::mul(e::var(r), e::i64(2)), e::i64(1)), e::var(h));
    cx.b.close_to(mark);
    cx.unbind(slots[ta], old_t);
    cx.restore(saved);
    // The packed variant when the contracted extent fits.
    let esize = plan.dot.as_ref().and_then(|dot| match &d.ops[usize::from(dot.head.hi)] {
        crate::ir::eval::compile::Op::Dim(name) => cx.dims.get(name.as_str()).map(|v| e::var(*v)),
        _ => None,
    });
    // Rows per block: one per thread on CUDA cores, 16 per warp on tensor cores.
    let block_rows = if tc.is_some() { super::tc::block_rows(threads) } else { i64::from(threads) };
    let split = Split::plan(cx, node, slot, plan, block_rows, &outer_n, &rows)?;
    match esize {
        Some(es) => {
            cx.b.open_if(e::bin(K::Le, es.clone(), e::i64(i64::from(EMAX))));
            match tc {
                Some(kind) => super::tc::emit(cx, node, slot, slots, d, plan, threads, bnd, es, kind, &split)?,
                None => block(cx, node, slot, slots, d, plan, threads, tm, bnd, Some(es), &split)?,
            }
            split.combine(cx, node, slot, slots, plan)?;
            cx.b.open_else();
            // The dot product evaluated as written has range checks that may fail: the CPU
            // plan with one row per parallel iteration (plain parallel loops) instead.
            super::emit(cx, node, slot, slots, d, plan, 1, tm)?;
            cx.b.close();
        }
        None if plan.dot.is_some() => super::emit(cx, node, slot, slots, d, plan, 1, tm)?,
        None => {
            block(cx, node, slot, slots, d, plan, threads, tm, bnd, None, &split)?;
            split.combine(cx, node, slot, slots, plan)?;
        }
    }
    Ok(())
}

/// Blocks wanted in flight before the plan stops splitting the key range (a few waves of an
/// H100's 132 SMs).
pub(crate) const SPLIT_TARGET_BLOCKS: i64 = 512;

/// Fewest keys per split: a split of fewer keys costs more in partials than it saves.
pub(crate) const SPLIT_MIN_KEYS: i64 = 32;

/// Most splits of one row's key range (the combine's per-split scales are a stack array).
pub(crate) const SPLIT_MAX: u32 = 64;

/// Split-K (FlashDecoding): when the grid has fewer than [`SPLIT_TARGET_BLOCKS`] blocks (few
/// rows per head: decode), every block's key-tile range is cut into `n` consecutive parts run
/// by `n` blocks, each writing its rows' partial state — max, sum, "any point", `acc[f]` —
/// to `part`; a combine parallel (one thread per row) merges the parts with the rescaling of
/// the online softmax and writes the output. `n` is computed from the dims only (the GPU
/// spine sizes the heap from it): `clamp(min(⌈M / SPLIT_MIN_KEYS⌉,
/// ⌈SPLIT_TARGET_BLOCKS / blocks⌉), 1, SPLIT_MAX)`; with `n = 1` the blocks write the output
/// themselves and the combine has no iterations.
pub(super) struct Split {
    /// The number of parts (`I64`, `1..=SPLIT_MAX`).
    pub n: crate::schedule::kir::Var,
    /// `[max, sum, any, acc[0..F]]` per (other point, row, part); one element when `n = 1`.
    pub part: super::super::kir::Buf,
    /// Other points × rows.
    points: Expr,
    /// Rows of the tile index.
    rows: Expr,
    /// Elements per (row, part): `F + 3`.
    width: Expr,
    /// The accumulator's element type.
    ty: Ty,
}

impl Split {
    /// Chooses the split for blocks of `block_rows` rows and allocates the partials (kernel
    /// level).
    fn plan(
        cx: &mut Cx<'_>,
        node: &Node,
        slot: usize,
        plan: &Plan,
        block_rows: i64,
        outer_n: &Expr,
        rows: &Expr,
    ) -> Result<Split, ScheduleError> {
        let t = cx.tensors[slot].clone();
        let ty = if vty(node.dtype) == Ty::F64 { Ty::F64 } else { Ty::F32 };
        let keys = match cx.ranges.get(plan.head.name.as_str()).cloned() {
            Some(r) => cx.size(&r)?,
            None => e::i64(1),
        };
        let ntiles = e::bin(K::Div, e::add(rows.clone(), e::i64(block_rows - 1)), e::i64(block_rows));
        let blocks = cx.b.let_("split.blocks", e::bin(K::Max, e::mul(outer_n.clone(), ntiles), e::i64(1)));
        let by_keys = e::bin(K::Div, e::add(keys, e::i64(SPLIT_MIN_KEYS - 1)), e::i64(SPLIT_MIN_KEYS));
        let by_grid = e::bin(K::Div, e::add(e::i64(SPLIT_TARGET_BLOCKS - 1), e::var(blocks)), e::var(blocks));
        let n = e::bin(K::Min, e::bin(K::Min, by_keys, by_grid), e::i64(i64::from(SPLIT_MAX)));
        let n = cx.b.let_("splits", e::bin(K::Max, n, e::i64(1)));
        let part = cx.b.buf(&format!("{}.parts", node.name), ty, BufKind::Heap);
        let width = e::add(t.shape[t.shape.len() - 1].clone(), e::i64(3));
        let used = e::select(e::bin(K::Gt, e::var(n), e::i64(1)), e::var(n), e::i64(0));
        let points = e::mul(outer_n.clone(), rows.clone());
        let len = checked_len(cx, &[outer_n.clone(), rows.clone(), used, width.clone()], &format!("{}.parts", node.name));
        cx.b.emit(Stmt::Alloc { buf: part, len });
        Ok(Split { n, part, points, rows: rows.clone(), width, ty })
    }

    /// Opens the block parallel over `tiles` × `others` (their product `n`) × parts, with
    /// blocks of `threads` threads; returns (part, tile, outer point) of the block.
    pub fn open_blocks(
        &self,
        cx: &mut Cx<'_>,
        threads: u32,
        n: Expr,
        tiles: crate::schedule::kir::Var,
    ) -> (crate::schedule::kir::Var, crate::schedule::kir::Var, crate::schedule::kir::Var) {
        let q = cx.b.open_block_parallel(e::mul(n, e::var(self.n)), threads);
        let part = cx.b.let_("part", e::bin(K::Rem, e::var(q), e::var(self.n)));
        let qt = cx.b.let_("block_tile", e::bin(K::Div, e::var(q), e::var(self.n)));
        let tile = cx.b.let_("tile", e::bin(K::Rem, e::var(qt), e::var(tiles)));
        let outer = cx.b.let_("outer", e::bin(K::Div, e::var(qt), e::var(tiles)));
        (part, tile, outer)
    }

    /// Opens the loop over this block's part of its key tiles of `tm` keys (the block range is
    /// min lo .. max hi of the `threads` bounds in `lo_sh`/`hi_sh`; all of it without a split);
    /// returns (first key, keys in the tile). The caller closes the loop.
    pub fn open_key_tiles(
        &self,
        cx: &mut Cx<'_>,
        lo_sh: super::super::kir::Buf,
        hi_sh: super::super::kir::Buf,
        threads: u32,
        tm: i64,
        part: crate::schedule::kir::Var,
    ) -> (crate::schedule::kir::Var, crate::schedule::kir::Var) {
        let mlo = cx.b.let_("mlo", e::i64(i64::MAX));
        let mhi = cx.b.let_("mhi", e::i64(i64::MIN));
        let j = cx.b.open_for("j", e::i64(0), e::i64(i64::from(threads)));
        cx.b.set(mlo, e::bin(K::Min, e::var(mlo), e::load(lo_sh, e::var(j))));
        cx.b.set(mhi, e::bin(K::Max, e::var(mhi), e::load(hi_sh, e::var(j))));
        cx.b.close();
        let nb = e::select(
            e::bin(K::Lt, e::var(mlo), e::var(mhi)),
            e::bin(K::Div, e::add(e::sub(e::var(mhi), e::var(mlo)), e::i64(tm - 1)), e::i64(tm)),
            e::i64(0),
        );
        let nb = cx.b.let_("key_tiles", nb);
        let part_lo = e::bin(K::Div, e::mul(e::var(part), e::var(nb)), e::var(self.n));
        let part_hi = e::bin(K::Div, e::mul(e::add(e::var(part), e::i64(1)), e::var(nb)), e::var(self.n));
        let kb = cx.b.open_for("block", part_lo, part_hi);
        let m0 = cx.b.let_("m0", e::add(e::var(mlo), e::mul(e::var(kb), e::i64(tm))));
        let nm = cx.b.let_("keys", e::bin(K::Min, e::i64(tm), e::sub(e::var(mhi), e::var(m0))));
        (m0, nm)
    }

    /// Stores a row's state — max, sum, any — as part `part` of flat row `r` (the
    /// accumulator's elements are the caller's).
    pub fn store_state(
        &self,
        cx: &mut Cx<'_>,
        r: &Expr,
        part: crate::schedule::kir::Var,
        (max, sum, any): (crate::schedule::kir::Var, crate::schedule::kir::Var, crate::schedule::kir::Var),
    ) {
        let c = |x: f64| e::num(self.ty, x);
        cx.b.store(self.part, self.at(r.clone(), e::var(part), e::i64(0)), e::var(max));
        cx.b.store(self.part, self.at(r.clone(), e::var(part), e::i64(1)), e::var(sum));
        cx.b.store(self.part, self.at(r.clone(), e::var(part), e::i64(2)), e::select(e::var(any), c(1.0), c(0.0)));
    }

    /// Element `k` of part `c` of row `r` (flat over other points × rows).
    fn at(&self, r: Expr, c: Expr, k: Expr) -> Expr {
        e::add(e::mul(e::add(e::mul(r, e::var(self.n)), c), self.width.clone()), k)
    }

    /// Accumulator element `f` of part `c` of row `r`.
    pub fn acc_at(&self, r: Expr, c: Expr, f: Expr) -> Expr {
        self.at(r, c, e::add(f, e::i64(3)))
    }

    /// The combine parallel: one thread per (other point, row), merging the parts.
    fn combine(&self, cx: &mut Cx<'_>, node: &Node, slot: usize, slots: &[usize], plan: &Plan) -> Result<(), ScheduleError> {
        let t = cx.tensors[slot].clone();
        let ty = self.ty;
        let c = |x: f64| e::num(ty, x);
        let k = slots.len();
        let (fa, ta) = (k - 1, plan.tile);
        let others: Vec<usize> = (0..k - 1).filter(|&a| a != ta).collect();
        let fsize = t.shape[fa].clone();
        let mark = cx.b.mark();
        let n = e::select(e::bin(K::Gt, e::var(self.n), e::i64(1)), self.points.clone(), e::i64(0));
        let r = cx.b.open_parallel(&format!("{}.combine", node.name), n);
        let outer = cx.b.let_("outer", e::bin(K::Div, e::var(r), self.rows.clone()));
        let row = cx.b.let_(&node.indices[ta], e::bin(K::Rem, e::var(r), self.rows.clone()));
        let (vals, saved) = cx.bind_flat(e::var(outer), &node_axes(node, slots, &t.shape, &others));
        let mut idx: Vec<Option<Expr>> = vec![None; k];
        for (&a, v) in others.iter().zip(vals) {
            idx[a] = Some(v);
        }
        idx[ta] = Some(e::var(row));
        let scales = cx.b.buf(&format!("{}.split_scale", node.name), ty, BufKind::Stack(SPLIT_MAX));
        let gmax = cx.b.let_("gmax", c(f64::NEG_INFINITY));
        let any = cx.b.let_("any", e::bool(false));
        let s = cx.b.open_for("split", e::i64(0), e::var(self.n));
        cx.b.set(gmax, e::bin(K::Max, e::var(gmax), e::load(self.part, self.at(e::var(r), e::var(s), e::i64(0)))));
        cx.b.set(any, e::bin(K::Or, e::var(any), e::bin(K::Ne, e::load(self.part, self.at(e::var(r), e::var(s), e::i64(2))), c(0.0))));
        cx.b.close();
        let sum = cx.b.let_("sum", c(0.0));
        let s = cx.b.open_for("split", e::i64(0), e::var(self.n));
        let ms = cx.b.let_("part_max", e::load(self.part, self.at(e::var(r), e::var(s), e::i64(0))));
        // A part without a finite logit contributes nothing (and exp(-inf - -inf) is NaN).
        let x = exp(&mut cx.b, ty, e::sub(e::var(ms), e::var(gmax)));
        let sc = cx.b.let_("scale", e::select(e::bin(K::Eq, e::var(ms), c(f64::NEG_INFINITY)), c(0.0), x));
        cx.b.store(scales, e::var(s), e::var(sc));
        cx.b.set(sum, e::acc(K::Add, e::var(sum), e::mul(e::var(sc), e::load(self.part, self.at(e::var(r), e::var(s), e::i64(1))))));
        cx.b.close();
        let nan = cx.b.let_("all_neg_inf", e::bin(K::And, e::var(any), e::bin(K::Eq, e::var(gmax), c(f64::NEG_INFINITY))));
        let f = cx.b.open_for("f", e::i64(0), fsize);
        idx[fa] = Some(e::var(f));
        let o = cx.b.let_("o", c(0.0));
        let s = cx.b.open_for("split", e::i64(0), e::var(self.n));
        let a = e::load(self.part, self.acc_at(e::var(r), e::var(s), e::var(f)));
        cx.b.set(o, e::acc(K::Add, e::var(o), e::mul(e::load(scales, e::var(s)), a)));
        cx.b.close();
        super::store_output(cx, node, &t, &idx, ty, e::var(o), e::var(sum), nan, "split-K combine")?;
        cx.b.close_to(mark);
        cx.restore(saved);
        Ok(())
    }
}

/// The block parallel (packed when `esize` is given).
#[allow(clippy::too_many_arguments)]
fn block(
    cx: &mut Cx<'_>,
    node: &Node,
    slot: usize,
    slots: &[usize],
    d: Def<'_>,
    plan: &Plan,
    threads: u32,
    tm: u32,
    bnd: super::super::kir::Buf,
    esize: Option<Expr>,
    split: &Split,
) -> Result<(), ScheduleError> {
    let t = cx.tensors[slot].clone();
    let ty = if vty(node.dtype) == Ty::F64 { Ty::F64 } else { Ty::F32 };
    let c = |x: f64| e::num(ty, x);
    let k = slots.len();
    let (fa, ta) = (k - 1, plan.tile);
    let others: Vec<usize> = (0..k - 1).filter(|&a| a != ta).collect();
    let rows = t.shape[ta].clone();
    let fsize = t.shape[fa].clone();
    let tl = i64::from(threads);
    let mark = cx.b.mark();
    let mut idx: Vec<Option<Expr>> = vec![None; k];
    let ntiles = cx.b.let_("tiles", e::bin(K::Div, e::add(rows.clone(), e::i64(tl - 1)), e::i64(tl)));
    let mut n = e::var(ntiles);
    for &a in &others {
        n = e::mul(n, t.shape[a].clone());
    }
    let thread = cx.b.thread_var();
    let sync = |cx: &mut Cx<'_>| cx.b.barrier();
    // `gpu:shared.` is only the buffers' display name: their kind makes them shared.
    let shared =
        |cx: &mut Cx<'_>, name: &str, ty: Ty, n: u32| cx.b.buf(&format!("gpu:shared.{}.{name}", node.name), ty, BufKind::Shared(n));
    let stack = |cx: &mut Cx<'_>, name: &str, ty: Ty, n: u32| cx.b.buf(&format!("{}.{name}", node.name), ty, BufKind::Stack(n));
    let lo_sh = shared(cx, "lo", Ty::I64, threads);
    let hi_sh = shared(cx, "hi", Ty::I64, threads);
    let vs = shared(cx, "v", ty, tm * FMAX);
    let ks = esize.as_ref().map(|_| shared(cx, "kt", Ty::F32, tm * EMAX));
    let acc = stack(cx, "acc", ty, FMAX);
    let sloc = stack(cx, "s", ty, tm);
    let qa = esize.as_ref().map(|_| stack(cx, "a", Ty::F32, EMAX));
    let (part, tile, outer) = split.open_blocks(cx, threads, n, ntiles);
    let (vals, saved) = cx.bind_flat(e::var(outer), &node_axes(node, slots, &t.shape, &others));
    for (&a, v) in others.iter().zip(vals) {
        idx[a] = Some(v);
    }
    let rowi = cx.b.let_("row", e::add(e::mul(e::var(tile), e::i64(tl)), e::var(thread)));
    let live = cx.b.let_("live", e::bin(K::Lt, e::var(rowi), rows.clone()));
    // ntiles >= 1 here, so rows >= 1.
    let row = cx.b.let_(&node.indices[ta], e::bin(K::Min, e::var(rowi), e::sub(rows.clone(), e::i64(1))));
    let old_t = cx.bind(slots[ta], IdxVar { var: row, range: Some(node.shape[ta].clone()) });
    let at = e::mul(e::add(e::mul(e::var(outer), rows.clone()), e::var(row)), e::i64(2));
    let l = cx.b.let_("lo", e::load(bnd, at.clone()));
    let h = cx.b.let_("hi", e::load(bnd, e::add(at, e::i64(1))));
    let some = cx.b.let_("some", e::bin(K::And, e::var(live), e::bin(K::Lt, e::var(l), e::var(h))));
    cx.b.store(lo_sh, e::var(thread), e::select(e::var(some), e::var(l), e::i64(i64::MAX)));
    cx.b.store(hi_sh, e::var(thread), e::select(e::var(some), e::var(h), e::i64(i64::MIN)));
    let mx = cx.b.let_("max", c(f64::NEG_INFINITY));
    let sum = cx.b.let_("sum", c(0.0));
    let any = cx.b.let_("any", e::bool(false));
    let f0 = cx.b.open_for("f", e::i64(0), fsize.clone());
    cx.b.store(acc, e::var(f0), c(0.0));
    cx.b.close();
    if let (Some(es), Some(qa), Some(dot)) = (&esize, qa, &plan.dot) {
        let erange = cx.ranges.get(dot.head.name.as_str()).cloned();
        let ev = cx.b.open_for(dot.head.name.as_str(), e::i64(0), es.clone());
        let old_e = cx.bind(dot.head.slot, IdxVar { var: ev, range: erange });
        let mut prod = e::num(Ty::F32, 1.0);
        for &a in &dot.a {
            prod = e::mul(prod, cx.lower_as(d, a, Ty::F32)?);
        }
        cx.b.store(qa, e::var(ev), prod);
        cx.b.close();
        cx.unbind(dot.head.slot, old_e);
    }
    sync(cx);
    let (m0, nm) = split.open_key_tiles(cx, lo_sh, hi_sh, threads, i64::from(tm), part);
    sync(cx);
    let range = cx.ranges.get(plan.head.name.as_str()).cloned();
    // Stage V[j, f] (and Bᵀ[j, e]): element i of the tile by thread i mod T.
    let stage = |cx: &mut Cx<'_>,
                 width: Expr,
                 body: &mut dyn FnMut(&mut Cx<'_>, crate::schedule::kir::Var, crate::schedule::kir::Var) -> Result<(), ScheduleError>|
     -> Result<(), ScheduleError> {
        let total = cx.b.let_("stage.n", e::mul(e::var(nm), width.clone()));
        let it = cx.b.open_for("stage", e::i64(0), e::bin(K::Div, e::add(e::var(total), e::i64(tl - 1)), e::i64(tl)));
        let i = cx.b.let_("stage.i", e::add(e::mul(e::var(it), e::i64(tl)), e::var(thread)));
        cx.b.open_if(e::bin(K::Lt, e::var(i), e::var(total)));
        let jj = cx.b.let_("j", e::bin(K::Div, e::var(i), width.clone()));
        let x = cx.b.let_("x", e::bin(K::Rem, e::var(i), width.clone()));
        let m = cx.b.let_("m", e::add(e::var(m0), e::var(jj)));
        let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range: range.clone() });
        body(cx, jj, x)?;
        cx.unbind(plan.head.slot, old_m);
        cx.b.close();
        cx.b.close();
        Ok(())
    };
    stage(cx, fsize.clone(), &mut |cx, jj, f| {
        let old_f = cx.bind(slots[fa], IdxVar { var: f, range: Some(node.shape[fa].clone()) });
        let val = cx.lower_as(d, plan.v, ty)?;
        cx.b.store(vs, e::add(e::mul(e::var(jj), e::i64(i64::from(FMAX))), e::var(f)), val);
        cx.unbind(slots[fa], old_f);
        Ok(())
    })?;
    if let (Some(es), Some(ks), Some(dot)) = (&esize, ks, &plan.dot) {
        let erange = cx.ranges.get(dot.head.name.as_str()).cloned();
        stage(cx, es.clone(), &mut |cx, jj, ev| {
            let old_e = cx.bind(dot.head.slot, IdxVar { var: ev, range: erange.clone() });
            let mut prod = e::num(Ty::F32, 1.0);
            for &b in &dot.b {
                prod = e::mul(prod, cx.lower_as(d, b, Ty::F32)?);
            }
            cx.b.store(ks, e::add(e::mul(e::var(jj), e::i64(i64::from(EMAX))), e::var(ev)), prod);
            cx.unbind(dot.head.slot, old_e);
            Ok(())
        })?;
    }
    sync(cx);
    // Per thread: the logits of its row.
    let bmax = cx.b.let_("bmax", c(f64::NEG_INFINITY));
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let m = cx.b.let_("m", e::add(e::var(m0), e::var(j)));
    let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range: range.clone() });
    let valid = cx.b.let_("valid", e::bin(K::And, e::bin(K::Ge, e::var(m), e::var(l)), e::bin(K::Lt, e::var(m), e::var(h))));
    if let (Some(es), Some(ks), Some(qa), Some(dot)) = (&esize, ks, qa, &plan.dot) {
        let dv = cx.b.let_("dot", e::num(Ty::F32, 0.0));
        let ev = cx.b.open_for("e", e::i64(0), es.clone());
        let kv = e::load(ks, e::add(e::mul(e::var(j), e::i64(i64::from(EMAX))), e::var(ev)));
        cx.b.set(dv, e::acc(K::Add, e::var(dv), e::mul(e::load(qa, e::var(ev)), kv)));
        cx.b.close();
        let x = if ty == Ty::F32 { e::var(dv) } else { e::cast(ty, e::var(dv)) };
        cx.subst = vec![(dot.id, x)];
    }
    let x = cx.lower_as(d, plan.s, ty)?;
    cx.subst.clear();
    let sv = cx.b.let_("logit", e::select(e::var(valid), x, c(f64::NEG_INFINITY)));
    cx.b.set(any, e::bin(K::Or, e::var(any), e::var(valid)));
    cx.b.store(sloc, e::var(j), e::var(sv));
    cx.b.set(bmax, e::acc(K::Max, e::var(bmax), e::var(sv)));
    cx.b.close();
    cx.unbind(plan.head.slot, old_m);
    // Online softmax update of the row.
    let mnew = cx.b.let_("mnew", e::bin(K::Max, e::var(mx), e::var(bmax)));
    cx.b.open_if(e::bin(K::Ne, e::var(mnew), c(f64::NEG_INFINITY)));
    let sc = exp(&mut cx.b, ty, e::sub(e::var(mx), e::var(mnew)));
    let scale = cx.b.let_("scale", sc);
    cx.b.set(sum, e::mul(e::var(sum), e::var(scale)));
    let f1 = cx.b.open_for("f", e::i64(0), fsize.clone());
    cx.b.store(acc, e::var(f1), e::mul(e::load(acc, e::var(f1)), e::var(scale)));
    cx.b.close();
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let w = exp(&mut cx.b, ty, e::sub(e::load(sloc, e::var(j)), e::var(mnew)));
    let w = cx.b.let_("w", w);
    cx.b.set(sum, e::acc(K::Add, e::var(sum), e::var(w)));
    let f2 = cx.b.open_for("f", e::i64(0), fsize.clone());
    let vv = e::load(vs, e::add(e::mul(e::var(j), e::i64(i64::from(FMAX))), e::var(f2)));
    cx.b.store(acc, e::var(f2), e::add(e::load(acc, e::var(f2)), e::mul(e::var(w), vv)));
    cx.b.close();
    cx.b.close();
    cx.b.set(mx, e::var(mnew));
    cx.b.close(); // if live max
    cx.b.close(); // key tiles
    // A part of a split row: its state, for the combine.
    cx.b.open_if(e::bin(K::And, e::var(live), e::bin(K::Gt, e::var(split.n), e::i64(1))));
    let r = e::add(e::mul(e::var(outer), rows.clone()), e::var(rowi));
    split.store_state(cx, &r, part, (mx, sum, any));
    let f4 = cx.b.open_for("f", e::i64(0), fsize.clone());
    cx.b.store(split.part, split.acc_at(r, e::var(part), e::var(f4)), e::load(acc, e::var(f4)));
    cx.b.close();
    cx.b.close();
    // Write the row (no split).
    cx.b.open_if(e::bin(K::And, e::var(live), e::bin(K::Eq, e::var(split.n), e::i64(1))));
    idx[ta] = Some(e::var(rowi));
    let nan = cx.b.let_("all_neg_inf", e::bin(K::And, e::var(any), e::bin(K::Eq, e::var(mx), c(f64::NEG_INFINITY))));
    let f3 = cx.b.open_for("f", e::i64(0), fsize);
    idx[fa] = Some(e::var(f3));
    super::store_output(cx, node, &t, &idx, ty, e::load(acc, e::var(f3)), e::var(sum), nan, "GPU attention plan")?;
    cx.b.close_to(mark);
    cx.unbind(slots[ta], old_t);
    cx.restore(saved);
    Ok(())
}
