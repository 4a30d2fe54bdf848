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
//! split-K (decode: fewer blocks than `split_k::SPLIT_TARGET_BLOCKS`): the block parallel runs S blocks
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

//!
//! Files: this one ([`emit`], the per-row bounds, the CUDA-core block parallel in the stages
//! above: [`open_block`], [`stage_tile`], [`row_logits`], [`update_row`], [`finish_row`]) and
//! split-K is [`super::split_k`], the tensor-core block parallel [`super::tensor_core`], the GPU
//! dialect helpers both GPU plans use [`super::dialect`].

use super::super::ScheduleError;
use super::super::arith::exp;
use super::super::build::e;
use super::super::common::{checked_len, node_axes};
use super::super::kir::{BinOp as K, Buf, BufKind, Expr, MmaKind, Stmt, Ty, Var};
use super::super::lower::{Cx, IdxVar, Saved};
use super::analysis::Norm;
use super::dialect::Dialect;
use super::site::{EMAX, FMAX, RowValue, Site};
use super::split_k::{Blocks, Split};

/// Emits the GPU plan for the node of `site` with blocks of `threads` threads and tiles of
/// `tm` keys, on tensor cores of format `tc` when given.
pub(super) fn emit(cx: &mut Cx<'_>, site: &Site<'_, '_>, threads: u32, tm: u32, tc: Option<MmaKind>) -> Result<(), ScheduleError> {
    let (node, plan, d) = (site.node, site.plan, site.d);
    let t = cx.tensors[site.slot].clone();
    let ta = plan.tile;
    let others = site.others();
    let rows = t.shape[ta].clone();
    let mut outer_n = e::i64(1);
    for &a in &others {
        outer_n = e::mul(outer_n, t.shape[a].clone());
    }
    // Per-row bounds, in a heap buffer: [lo, hi] per (other point, row).
    let bnd = cx.b.buf(&format!("{}.bounds", node.name), Ty::I64, BufKind::Heap);
    let len = checked_len(cx, &[outer_n.clone(), rows.clone(), e::i64(2)], &format!("{}.bounds", node.name));
    cx.b.emit(Stmt::Alloc { buf: bnd, len, zeroed: true });
    let mark = cx.b.mark();
    let r = cx.b.open_parallel(&format!("{}.bounds", node.name), e::mul(outer_n.clone(), rows.clone()));
    let outer = cx.b.let_("outer", e::bin(K::Div, e::var(r), rows.clone()));
    let (_, saved) = cx.bind_flat(e::var(outer), &node_axes(node, site.slots, &t.shape, &others));
    let row = cx.b.let_(&node.indices[ta], e::bin(K::Rem, e::var(r), rows.clone()));
    let old_t = cx.bind(site.slots[ta], IdxVar { var: row, range: Some(node.shape[ta].clone()) });
    let (l, h) = cx.bounds(d, &plan.head)?;
    cx.b.store(bnd, e::mul(e::var(r), e::i64(2)), e::var(l));
    cx.b.store(bnd, e::add(e::mul(e::var(r), e::i64(2)), e::i64(1)), e::var(h));
    cx.b.close_to(mark);
    cx.unbind(site.slots[ta], old_t);
    cx.restore(saved);
    // The packed variant when the contracted extent fits.
    let esize = plan.dot.as_ref().and_then(|dot| match &d.ops[usize::from(dot.head.hi)] {
        crate::ir::eval::compile::Op::Dim(name) => cx.dims.get(name.as_str()).map(|v| e::var(*v)),
        _ => None,
    });
    // Rows per block: one per thread on CUDA cores, 16 per warp on tensor cores.
    let block_rows = if tc.is_some() { super::tensor_core::block_rows(threads) } else { i64::from(threads) };
    let split = Split::plan(cx, site, block_rows, &outer_n, &rows)?;
    let blocks = Blocks { threads, bnd, split: &split };
    match esize {
        Some(es) => {
            cx.b.open_if(e::bin(K::Le, es.clone(), e::i64(i64::from(EMAX))));
            match tc {
                Some(kind) => super::tensor_core::emit(cx, site, &blocks, es, kind)?,
                None => block(cx, site, &blocks, tm, Some(es))?,
            }
            split.combine(cx, site)?;
            cx.b.open_else();
            // The dot product evaluated as written has range checks that may fail: the CPU
            // plan with one row per parallel iteration (plain parallel loops) instead.
            super::cpu::emit(cx, site, 1, tm)?;
            cx.b.close();
        }
        None if plan.dot.is_some() => super::cpu::emit(cx, site, 1, tm)?,
        None => {
            block(cx, site, &blocks, tm, None)?;
            split.combine(cx, site)?;
        }
    }
    Ok(())
}

/// One thread's part of a CUDA-core block: its row and that row's state.
struct Thread {
    /// The state's type (`f32`, or `f64` for `f64` nodes).
    ty: Ty,
    /// The block's threads and the dialect.
    tl: i64,
    dialect: Dialect,
    /// Rows of the tile index and `F`, at run time.
    rows: Expr,
    fsize: Expr,
    /// Shared: the block's rows' bounds, the staged `V` tile and (packed) `Bᵀ` tile.
    lo_sh: Buf,
    hi_sh: Buf,
    vs: Buf,
    ks: Option<Buf>,
    /// Per thread: `acc[f]`, the tile's logits, (packed) the row's `A[e]`.
    acc: Buf,
    sloc: Buf,
    qa: Option<Buf>,
    /// The block's split part and other-index point; the row (unclamped), whether it is live,
    /// and its key bounds.
    part: Var,
    outer: Var,
    rowi: Var,
    live: Var,
    l: Var,
    h: Var,
    /// Running max, sum, "any point".
    mx: Var,
    sum: Var,
    any: Var,
    /// Every index's value where it is bound.
    idx: Vec<Option<Expr>>,
}

impl Thread {
    fn c(&self, x: f64) -> Expr {
        e::num(self.ty, x)
    }
}

/// The block parallel (packed when `esize` is given).
fn block(cx: &mut Cx<'_>, site: &Site<'_, '_>, blocks: &Blocks<'_>, tm: u32, esize: Option<Expr>) -> Result<(), ScheduleError> {
    let mark = cx.b.mark();
    let (mut th, saved, old_t) = open_block(cx, site, blocks, tm, esize.as_ref())?;
    th.dialect.sync(cx);
    let (m0, nm) = blocks.split.open_key_tiles(cx, th.lo_sh, th.hi_sh, blocks.threads, i64::from(tm), th.part);
    th.dialect.sync(cx);
    stage_tile(cx, site, &th, esize.as_ref(), m0, nm)?;
    th.dialect.sync(cx);
    let bmax = row_logits(cx, site, &th, esize.as_ref(), m0, nm)?;
    match site.plan.norm {
        Norm::Softmax => update_row(cx, &th, bmax, nm),
        Norm::Sum => accumulate_row(cx, &th, nm),
    }
    cx.b.close(); // key tiles
    finish_row(cx, site, &mut th, blocks.split)?;
    cx.b.close_to(mark);
    cx.unbind(site.slots[site.plan.tile], old_t);
    cx.restore(saved);
    Ok(())
}

/// Declares the block's buffers, opens the block parallel, binds the thread's row (clamped to
/// the last one past the end), publishes its bounds to shared memory, and sets up its state
/// (and, packed, its row of `A`).
fn open_block(
    cx: &mut Cx<'_>,
    site: &Site<'_, '_>,
    blocks: &Blocks<'_>,
    tm: u32,
    esize: Option<&Expr>,
) -> Result<(Thread, Saved, Option<IdxVar>), ScheduleError> {
    let (node, plan, d) = (site.node, site.plan, site.d);
    let t = cx.tensors[site.slot].clone();
    let ty = site.acc_ty();
    let c = |x: f64| e::num(ty, x);
    let ta = plan.tile;
    let others = site.others();
    let rows = t.shape[ta].clone();
    let fsize = t.shape[site.f_axis()].clone();
    let tl = i64::from(blocks.threads);
    let mut idx: Vec<Option<Expr>> = vec![None; site.slots.len()];
    let ntiles = cx.b.let_("tiles", e::bin(K::Div, e::add(rows.clone(), e::i64(tl - 1)), e::i64(tl)));
    let mut n = e::var(ntiles);
    for &a in &others {
        n = e::mul(n, t.shape[a].clone());
    }
    let dialect = Dialect::new(cx);
    let shared = |cx: &mut Cx<'_>, name: &str, ty: Ty, n: u32| Dialect::shared(cx, &node.name, name, ty, n);
    let stack = |cx: &mut Cx<'_>, name: &str, ty: Ty, n: u32| cx.b.buf(&format!("{}.{name}", node.name), ty, BufKind::Stack(n));
    let lo_sh = shared(cx, "lo", Ty::I64, blocks.threads);
    let hi_sh = shared(cx, "hi", Ty::I64, blocks.threads);
    let vs = shared(cx, "v", ty, tm * FMAX);
    let ks = esize.map(|_| shared(cx, "kt", Ty::F32, tm * EMAX));
    let acc = stack(cx, "acc", ty, FMAX);
    let sloc = stack(cx, "s", ty, tm);
    let qa = esize.map(|_| stack(cx, "a", Ty::F32, EMAX));
    let (part, tile, outer) = blocks.split.open_blocks(cx, blocks.threads, n, ntiles);
    let (vals, saved) = cx.bind_flat(e::var(outer), &node_axes(node, site.slots, &t.shape, &others));
    for (&a, v) in others.iter().zip(vals) {
        idx[a] = Some(v);
    }
    let rowi = cx.b.let_("row", e::add(e::mul(e::var(tile), e::i64(tl)), e::var(dialect.thread)));
    let live = cx.b.let_("live", e::bin(K::Lt, e::var(rowi), rows.clone()));
    // ntiles >= 1 here, so rows >= 1.
    let row = cx.b.let_(&node.indices[ta], e::bin(K::Min, e::var(rowi), e::sub(rows.clone(), e::i64(1))));
    let old_t = cx.bind(site.slots[ta], IdxVar { var: row, range: Some(node.shape[ta].clone()) });
    let at = e::mul(e::add(e::mul(e::var(outer), rows.clone()), e::var(row)), e::i64(2));
    let l = cx.b.let_("lo", e::load(blocks.bnd, at.clone()));
    let h = cx.b.let_("hi", e::load(blocks.bnd, e::add(at, e::i64(1))));
    let some = cx.b.let_("some", e::bin(K::And, e::var(live), e::bin(K::Lt, e::var(l), e::var(h))));
    cx.b.store(lo_sh, e::var(dialect.thread), e::select(e::var(some), e::var(l), e::i64(i64::MAX)));
    cx.b.store(hi_sh, e::var(dialect.thread), e::select(e::var(some), e::var(h), e::i64(i64::MIN)));
    let mx = cx.b.let_("max", c(f64::NEG_INFINITY));
    let sum = cx.b.let_("sum", c(0.0));
    let any = cx.b.let_("any", e::bool(false));
    let f0 = cx.b.open_for("f", e::i64(0), fsize.clone());
    cx.b.store(acc, e::var(f0), c(0.0));
    cx.b.close();
    if let (Some(es), Some(qa), Some(dot)) = (esize, qa, &plan.dot) {
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
    let th = Thread { ty, tl, dialect, rows, fsize, lo_sh, hi_sh, vs, ks, acc, sloc, qa, part, outer, rowi, live, l, h, mx, sum, any, idx };
    Ok((th, saved, old_t))
}

/// Stages the key tile's `V[j, f]` (and packed, `Bᵀ[j, e]`) in shared memory: element `i` of
/// the tile by thread `i mod T`.
fn stage_tile(cx: &mut Cx<'_>, site: &Site<'_, '_>, th: &Thread, esize: Option<&Expr>, m0: Var, nm: Var) -> Result<(), ScheduleError> {
    let (node, plan, d, fa) = (site.node, site.plan, site.d, site.f_axis());
    let (tl, thread) = (th.tl, th.dialect.thread);
    let range = cx.ranges.get(plan.head.name.as_str()).cloned();
    let stage = |cx: &mut Cx<'_>,
                 width: Expr,
                 body: &mut dyn FnMut(&mut Cx<'_>, Var, Var) -> Result<(), ScheduleError>|
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
    stage(cx, th.fsize.clone(), &mut |cx, jj, f| {
        let old_f = cx.bind(site.slots[fa], IdxVar { var: f, range: Some(node.shape[fa].clone()) });
        let val = cx.lower_as(d, plan.v, th.ty)?;
        cx.b.store(th.vs, e::add(e::mul(e::var(jj), e::i64(i64::from(FMAX))), e::var(f)), val);
        cx.unbind(site.slots[fa], old_f);
        Ok(())
    })?;
    if let (Some(es), Some(ks), Some(dot)) = (esize, th.ks, &plan.dot) {
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
    Ok(())
}

/// Per thread: the logits of its row for the key tile (packed: `Σ_e A[e] · Bᵀ[j, e]` in the
/// logit), `-inf` outside the row's bounds; returns the tile's max.
fn row_logits(cx: &mut Cx<'_>, site: &Site<'_, '_>, th: &Thread, esize: Option<&Expr>, m0: Var, nm: Var) -> Result<Var, ScheduleError> {
    let (plan, d, ty) = (site.plan, site.d, th.ty);
    // A masked point: logit -inf (softmax), weight 0 (a plain sum).
    let masked = if plan.norm == Norm::Softmax { f64::NEG_INFINITY } else { 0.0 };
    let range = cx.ranges.get(plan.head.name.as_str()).cloned();
    let bmax = cx.b.let_("bmax", th.c(f64::NEG_INFINITY));
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let m = cx.b.let_("m", e::add(e::var(m0), e::var(j)));
    let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range });
    let valid = cx.b.let_("valid", e::bin(K::And, e::bin(K::Ge, e::var(m), e::var(th.l)), e::bin(K::Lt, e::var(m), e::var(th.h))));
    if let (Some(es), Some(ks), Some(qa), Some(dot)) = (esize, th.ks, th.qa, &plan.dot) {
        let dv = cx.b.let_("dot", e::num(Ty::F32, 0.0));
        let ev = cx.b.open_for("e", e::i64(0), es.clone());
        let kv = e::load(ks, e::add(e::mul(e::var(j), e::i64(i64::from(EMAX))), e::var(ev)));
        cx.b.set(dv, e::acc(K::Add, e::var(dv), dot.term(e::load(qa, e::var(ev)), kv)));
        cx.b.close();
        let x = if ty == Ty::F32 { e::var(dv) } else { e::cast(ty, e::var(dv)) };
        let x = dot.value(cx, d, x, ty)?;
        cx.subst = vec![(dot.id, x)];
    }
    let x = cx.lower_as(d, plan.s, ty)?;
    cx.subst.clear();
    let sv = cx.b.let_("logit", e::select(e::var(valid), x, th.c(masked)));
    cx.b.set(th.any, e::bin(K::Or, e::var(th.any), e::var(valid)));
    cx.b.store(th.sloc, e::var(j), e::var(sv));
    cx.b.set(bmax, e::acc(K::Max, e::var(bmax), e::var(sv)));
    cx.b.close();
    cx.unbind(plan.head.slot, old_m);
    Ok(bmax)
}

/// The online-softmax update of the thread's row with the tile's max `bmax`: rescale by
/// `exp(max_old - max_new)`, then `acc[f] += exp(S[j] - max_new) · V[j, f]`.
fn update_row(cx: &mut Cx<'_>, th: &Thread, bmax: Var, nm: Var) {
    let ty = th.ty;
    let mnew = cx.b.let_("mnew", e::bin(K::Max, e::var(th.mx), e::var(bmax)));
    cx.b.open_if(e::bin(K::Ne, e::var(mnew), th.c(f64::NEG_INFINITY)));
    let sc = exp(&mut cx.b, ty, e::sub(e::var(th.mx), e::var(mnew)));
    let scale = cx.b.let_("scale", sc);
    cx.b.set(th.sum, e::mul(e::var(th.sum), e::var(scale)));
    let f1 = cx.b.open_for("f", e::i64(0), th.fsize.clone());
    cx.b.store(th.acc, e::var(f1), e::mul(e::load(th.acc, e::var(f1)), e::var(scale)));
    cx.b.close();
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let w = exp(&mut cx.b, ty, e::sub(e::load(th.sloc, e::var(j)), e::var(mnew)));
    let w = cx.b.let_("w", w);
    cx.b.set(th.sum, e::acc(K::Add, e::var(th.sum), e::var(w)));
    let f2 = cx.b.open_for("f", e::i64(0), th.fsize.clone());
    let vv = e::load(th.vs, e::add(e::mul(e::var(j), e::i64(i64::from(FMAX))), e::var(f2)));
    cx.b.store(th.acc, e::var(f2), e::add(e::load(th.acc, e::var(f2)), e::mul(e::var(w), vv)));
    cx.b.close();
    cx.b.close();
    cx.b.set(th.mx, e::var(mnew));
    cx.b.close(); // if live max
}

/// A plain sum's update of the thread's row: `acc[f] += w[j] · V[j, f]` (the weights are
/// final: nothing to rescale).
fn accumulate_row(cx: &mut Cx<'_>, th: &Thread, nm: Var) {
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let w = cx.b.let_("w", e::load(th.sloc, e::var(j)));
    let f2 = cx.b.open_for("f", e::i64(0), th.fsize.clone());
    let vv = e::load(th.vs, e::add(e::mul(e::var(j), e::i64(i64::from(FMAX))), e::var(f2)));
    cx.b.store(th.acc, e::var(f2), e::add(e::load(th.acc, e::var(f2)), e::mul(e::var(w), vv)));
    cx.b.close();
    cx.b.close();
}

/// The thread's row after the key tiles: a split part's state for the combine, or (no split)
/// the row's output `acc / sum`.
fn finish_row(cx: &mut Cx<'_>, site: &Site<'_, '_>, th: &mut Thread, split: &Split) -> Result<(), ScheduleError> {
    let (ta, fa) = (site.plan.tile, site.f_axis());
    // A part of a split row: its state, for the combine.
    cx.b.open_if(e::bin(K::And, e::var(th.live), e::bin(K::Gt, e::var(split.n), e::i64(1))));
    let r = e::add(e::mul(e::var(th.outer), th.rows.clone()), e::var(th.rowi));
    split.store_state(cx, &r, th.part, (th.mx, th.sum, th.any));
    let f4 = cx.b.open_for("f", e::i64(0), th.fsize.clone());
    cx.b.store(split.part, split.acc_at(r, e::var(th.part), e::var(f4)), e::load(th.acc, e::var(f4)));
    cx.b.close();
    cx.b.close();
    // Write the row (no split).
    cx.b.open_if(e::bin(K::And, e::var(th.live), e::bin(K::Eq, e::var(split.n), e::i64(1))));
    th.idx[ta] = Some(e::var(th.rowi));
    let (nan, den) = match site.plan.norm {
        Norm::Softmax => {
            let nan = e::bin(K::And, e::var(th.any), e::bin(K::Eq, e::var(th.mx), th.c(f64::NEG_INFINITY)));
            let den = super::site::softmax_den(cx, site, th.ty, e::var(th.sum), e::var(th.mx))?;
            (cx.b.let_("all_neg_inf", nan), den)
        }
        // A plain sum: the accumulator is the output.
        Norm::Sum => (cx.b.let_("all_neg_inf", e::bool(false)), th.c(1.0)),
    };
    let f3 = cx.b.open_for("f", e::i64(0), th.fsize.clone());
    th.idx[fa] = Some(e::var(f3));
    let v = RowValue { num: e::load(th.acc, e::var(f3)), den, nan };
    super::site::store_output(cx, site, &th.idx, th.ty, v, "GPU attention plan")
}
