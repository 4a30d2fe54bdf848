//! The tensor-core attention plan for a GPU (FlashAttention-2 on `mma.sync`): for kernels whose
//! logit's dot product reads two f16 (or two bf16) tensors and whose value reads one of the
//! same format ([`kind`]), both contractions run as warp-level `m16n8k16` products
//! ([`Stmt::Mma`]) with `f32` accumulation, written in KIR's GPU dialect:
//!
//! ```text
//! parallel r: bnd[r] = the row's key bounds                      (gpu.rs, may fail)
//! block parallel over (other indices × tiles of 16·W rows × parts), W = T/32 warps,
//! warp w owns rows t0 + 16w .. + 16; lane l holds rows g = l/4 and g + 8, t = l % 4:
//!   Q fragments of the warp's rows for every 16-wide chunk of e (per-thread stack, E <= EMAX)
//!   block range = min lo .. max hi of the block's rows (shared, as gpu.rs)
//!   for each of this part's tiles of 16 keys m0..m0+16:
//!     barrier; stage Kᵀ[j, e] and V[j, f] (zero past the tile, E and F); barrier
//!     S (16 rows × 16 keys per warp) = Σ_chunks mma(Q chunk, K chunk), 2 tiles of 8 keys
//!     logits g(S), -inf outside each row's bounds; to shared; barrier
//!     per row: tile max and sum from shared (the 4 lanes of a row agree), rescale the row's
//!       O fragments by exp(max_old - max_new); P = exp(S - max_new) (in the A layout already)
//!     O (16 rows × F per warp, fragments in a per-thread stack array) += mma(P, V tile)
//!   rows: O = acc / sum, or the split's partials (split_k.rs combines them)
//! ```
//!
//! What differs from the `f32` plan: the softmax weights `P` are rounded to the input format
//! before the `P·V` product (as FlashAttention does), so results are within that format's
//! precision of the interpreter's, not `f32`'s (docs/language.md). `Q·Kᵀ` is exact products
//! summed in `f32`. Padded rows (past the last row) compute with the last row's data and store
//! nothing; padded keys are masked; padded `e` and `f` are zero.
//!
//! [`block`] emits one block parallel in the stages above: [`open_block`], [`load_q`], then per
//! key tile [`stage_tile`], [`qk_product`], [`logits`], [`row_stats`], [`pv_product`], and
//! last [`finish_rows`]. Split-K is [`super::split_k`] ("gpu.rs" above: the bounds parallel
//! and the combine).

use super::super::ScheduleError;
use super::super::arith::exp;
use super::super::build::e;
use super::super::common::node_axes;
use super::super::kir::{BinOp as K, Buf, BufKind, Expr, Mma, MmaKind, Stmt, Ty, Var};
use super::super::lower::{Cx, Def, IdxVar, Saved, vty};
use super::analysis::{Dot, Plan};
use super::dialect::Dialect;
use super::site::{EMAX, FMAX, RowValue, Site};
use super::split_k::{Blocks, Split};
use crate::hir::DType;
use crate::ir::Node;
use crate::ir::eval::compile::Op;

/// Keys per tile (one `k16` step of `P·V`, two `n8` tiles of `S`).
const TK: i64 = 16;

/// The tensor-core format of the plan, if it applies: the dot product is `Σ_e A · B` with
/// `A` and `B` plain reads of tensors of one half format (or such reads widened), and the
/// value a read of a tensor of that format (or widened) (so every input of both products is
/// exact in the format), and the node computes in f32 (an f64 node keeps f64 math: the CUDA-core
/// plan).
pub(super) fn kind(plan: &Plan, d: Def<'_>, node: &Node) -> Option<MmaKind> {
    // No sink term on tensor cores (an `osmz` runs on the CUDA-core plan).
    if vty(node.dtype) == Ty::F64 || plan.norm != super::analysis::Norm::Softmax || plan.sink.is_some() {
        return None;
    }
    // Tensor cores multiply: a squared difference (or a filtered sum) stays on the CUDA-core
    // plan.
    let dot = plan.dot.as_ref().filter(|d| d.kind == super::super::kir::TileOp::Mul && d.filter.is_none())?;
    let ([a], [b]) = (dot.a.as_slice(), dot.b.as_slice()) else { return None };
    // A read, or a read widened to f32 or f64 (exact).
    let fmt = |x: egg::Id| {
        let x = match &d.ops[usize::from(x)] {
            Op::Cast { to: DType::F32 | DType::F64, x } => *x,
            _ => x,
        };
        match (&d.ops[usize::from(x)], d.tys[usize::from(x)]) {
            (Op::Read { .. }, DType::F16) => Some(MmaKind::F16),
            (Op::Read { .. }, DType::BF16) => Some(MmaKind::BF16),
            _ => None,
        }
    };
    let k = fmt(*a)?;
    (fmt(*b) == Some(k) && fmt(plan.v) == Some(k)).then_some(k)
}

/// Query rows per block of `threads` threads: 16 per warp.
pub(super) fn block_rows(threads: u32) -> i64 {
    16 * (i64::from(threads) / 32)
}

/// Lane-relative (row, column) offsets of a thread's 8 `A` elements (`kir::Mma`).
const A_AT: [(i64, i64); 8] = [(0, 0), (0, 1), (8, 0), (8, 1), (0, 8), (0, 9), (8, 8), (8, 9)];
/// Lane-relative `k` offsets of its 4 `B` elements.
const B_K: [i64; 4] = [0, 1, 8, 9];

/// The values of a chunk index `0..n`: each constant, unrolled here, when `fixed` gives `n`
/// (constant indices keep per-thread fragment arrays in registers); otherwise the variable of
/// a loop opened here over `0..hi`, which [`close_chunks`] closes.
fn chunks_of(cx: &mut Cx<'_>, name: &str, fixed: Option<i64>, hi: &Expr) -> Vec<Expr> {
    match fixed {
        Some(n) => (0..n).map(e::i64).collect(),
        None => vec![e::var(cx.b.open_for(name, e::i64(0), hi.clone()))],
    }
}

/// Closes what [`chunks_of`] opened.
fn close_chunks(cx: &mut Cx<'_>, fixed: Option<i64>) {
    if fixed.is_none() {
        cx.b.close();
    }
}

/// Head sizes `(E, F)` with a block parallel of their own, whose loops over `e` and `f`
/// chunks have constant trip counts (fully unrolled, the per-thread Q and O fragments in
/// registers); other sizes share one with run-time trip counts.
pub(super) const SPECIALIZED: [(i64, i64); 3] = [(64, 64), (128, 128), (256, 256)];

/// Emits the tensor-core plan: a block parallel per [`SPECIALIZED`] head size, chosen at run
/// time, and a general one (the caller checked `E <= EMAX` and `F <= FMAX` at run time and
/// allocated the bounds and the split).
pub(super) fn emit(cx: &mut Cx<'_>, site: &Site<'_, '_>, blocks: &Blocks<'_>, esize: Expr, kind: MmaKind) -> Result<(), ScheduleError> {
    let fsize = cx.tensors[site.slot].shape[site.f_axis()].clone();
    for &(es, fs) in &SPECIALIZED {
        cx.b.open_if(e::bin(K::And, e::bin(K::Eq, esize.clone(), e::i64(es)), e::bin(K::Eq, fsize.clone(), e::i64(fs))));
        block(cx, site, blocks, e::i64(es), Some((es, fs)), kind)?;
        cx.b.open_else();
    }
    block(cx, site, blocks, esize, None, kind)?;
    for _ in SPECIALIZED {
        cx.b.close();
    }
    Ok(())
}

/// Per-row state of the two rows a thread holds (`g` and `g + 8` of its warp's 16).
struct Row {
    /// Unclamped row index (`< rows` when live).
    at: Var,
    live: Var,
    /// Clamped to the last row (for loads).
    clamped: Var,
    lo: Var,
    hi: Var,
    max: Var,
    sum: Var,
    any: Var,
}

/// One thread's part of a tensor-core block: its warp's fragments and its two rows.
struct Warp<'a> {
    /// The dot product of the logit (`A` is the Q side, `B` the K side).
    dot: &'a Dot,
    /// Input format.
    kind: MmaKind,
    /// Rows of the tile index, `E` and `F` (constants when `spec` fixes them).
    rows: Expr,
    esize: Expr,
    fsize: Expr,
    /// Threads per block.
    tl: i64,
    dialect: Dialect,
    /// Shared: the block's rows' bounds, the staged `Kᵀ` and `V` tiles, the logits.
    lo_sh: Buf,
    hi_sh: Buf,
    ks: Buf,
    vs: Buf,
    ssh: Buf,
    /// Per thread: Q fragments, O fragments, the S fragment.
    qf: Buf,
    acc: Buf,
    sfr: Buf,
    /// Chunks of 16 along `e`, of 8 along `f` (run-time counts, and the constants when fixed).
    ec: Expr,
    fc: Expr,
    nec: Option<i64>,
    nfc: Option<i64>,
    /// The block's split part and other-index point; the thread's warp, lane group `g` and
    /// lane-in-group `t`.
    part: Var,
    outer: Var,
    warp: Var,
    g: Var,
    tg: Var,
    /// The thread's two rows.
    rs: Vec<Row>,
    /// Every index's value where it is bound.
    idx: Vec<Option<Expr>>,
}

impl Warp<'_> {
    /// Element `(row r, key kk)` of the warp's logits in shared memory.
    fn ssh_at(&self, r: Expr, kk: Expr) -> Expr {
        e::add(e::mul(e::add(e::mul(e::var(self.warp), e::i64(16)), r), e::i64(TK)), kk)
    }
}

/// One block parallel of the plan; `spec` fixes `(E, F)`.
fn block(
    cx: &mut Cx<'_>,
    site: &Site<'_, '_>,
    blocks: &Blocks<'_>,
    esize: Expr,
    spec: Option<(i64, i64)>,
    kind: MmaKind,
) -> Result<(), ScheduleError> {
    let mark = cx.b.mark();
    let (mut w, saved) = open_block(cx, site, blocks, esize, spec, kind)?;
    load_q(cx, site, &w)?;
    w.dialect.sync(cx);
    let (m0, nm) = blocks.split.open_key_tiles(cx, w.lo_sh, w.hi_sh, blocks.threads, TK, w.part);
    w.dialect.sync(cx);
    stage_tile(cx, site, &w, m0, nm)?;
    w.dialect.sync(cx);
    let cv = qk_product(cx, &w);
    logits(cx, site, &w, m0, nm)?;
    w.dialect.sync(cx);
    let (refs, scales) = row_stats(cx, &w);
    pv_product(cx, &w, &cv, &refs, &scales);
    cx.b.close(); // key tiles
    finish_rows(cx, site, &mut w, blocks.split)?;
    cx.b.close_to(mark);
    cx.restore(saved);
    Ok(())
}

/// Declares the block's buffers, opens the block parallel, binds the other indices, and sets
/// up the thread's two rows and the block's key range in shared memory (thread `j < rb`
/// reports block row `j`).
fn open_block<'a>(
    cx: &mut Cx<'_>,
    site: &Site<'a, '_>,
    blocks: &Blocks<'_>,
    esize: Expr,
    spec: Option<(i64, i64)>,
    kind: MmaKind,
) -> Result<(Warp<'a>, Saved), ScheduleError> {
    let (node, plan) = (site.node, site.plan);
    let dot = plan.dot.as_ref().ok_or_else(|| cx.internal("the tensor-core plan without a dot product"))?;
    let t = cx.tensors[site.slot].clone();
    let c = |x: f64| e::num(Ty::F32, x);
    let ta = plan.tile;
    let others = site.others();
    let rows = t.shape[ta].clone();
    let fsize = match spec {
        Some((_, fs)) => e::i64(fs),
        None => t.shape[site.f_axis()].clone(),
    };
    let threads = blocks.threads;
    let (tl, rb) = (i64::from(threads), block_rows(threads));
    let dialect = Dialect::new(cx);
    let prefix = format!("{}.tc", node.name);
    let shared = |cx: &mut Cx<'_>, name: &str, ty: Ty, n: u32| Dialect::shared(cx, &prefix, name, ty, n);
    let stack = |cx: &mut Cx<'_>, name: &str, ty: Ty, n: u32| cx.b.buf(&format!("{prefix}.{name}"), ty, BufKind::Stack(n));
    let lo_sh = shared(cx, "lo", Ty::I64, threads);
    let hi_sh = shared(cx, "hi", Ty::I64, threads);
    let ks = shared(cx, "kt", kind.elem(), TK as u32 * EMAX);
    let vs = shared(cx, "v", kind.elem(), TK as u32 * FMAX);
    let ssh = shared(cx, "s", Ty::F32, (rb * TK) as u32);
    let (qn, an) = spec.map_or((EMAX / 16 * 8, FMAX / 8 * 4), |(es, fs)| ((es / 2) as u32, (fs / 2) as u32));
    let qf = stack(cx, "q", kind.elem(), qn);
    let acc = stack(cx, "acc", Ty::F32, an);
    let sfr = stack(cx, "s", Ty::F32, 8);
    // Chunks of 16 along e, of 8 along f.
    let chunks = |cx: &mut Cx<'_>, name: &str, size: &Expr, w: i64| match spec {
        Some(_) => e::bin(K::Div, e::add(size.clone(), e::i64(w - 1)), e::i64(w)),
        None => e::var(cx.b.let_(name, e::bin(K::Div, e::add(size.clone(), e::i64(w - 1)), e::i64(w)))),
    };
    let ec = chunks(cx, "e_chunks", &esize, 16);
    let fc = chunks(cx, "f_chunks", &fsize, 8);
    let ntiles = cx.b.let_("tiles", e::bin(K::Div, e::add(rows.clone(), e::i64(rb - 1)), e::i64(rb)));
    let mut n = e::var(ntiles);
    for &a in &others {
        n = e::mul(n, t.shape[a].clone());
    }
    let (part, tile, outer) = blocks.split.open_blocks(cx, threads, n, ntiles);
    let (vals, saved) = cx.bind_flat(e::var(outer), &node_axes(node, site.slots, &t.shape, &others));
    let mut idx: Vec<Option<Expr>> = vec![None; site.slots.len()];
    for (&a, v) in others.iter().zip(vals) {
        idx[a] = Some(v);
    }
    let thread = dialect.thread;
    let warp = cx.b.let_("warp", e::bin(K::Div, e::var(thread), e::i64(32)));
    let lane = cx.b.let_("lane", e::bin(K::Rem, e::var(thread), e::i64(32)));
    let g = cx.b.let_("g", e::bin(K::Div, e::var(lane), e::i64(4)));
    let tg = cx.b.let_("t", e::bin(K::Rem, e::var(lane), e::i64(4)));
    let wbase = cx.b.let_("warp_row", e::add(e::mul(e::var(tile), e::i64(rb)), e::mul(e::var(warp), e::i64(16))));
    let last = e::sub(rows.clone(), e::i64(1));
    let bounds_of = |row: Expr| {
        let at = e::mul(e::add(e::mul(e::var(outer), rows.clone()), row), e::i64(2));
        (e::load(blocks.bnd, at.clone()), e::load(blocks.bnd, e::add(at, e::i64(1))))
    };
    let mut rs = Vec::with_capacity(2);
    for h in 0..2i64 {
        let at = cx.b.let_(&format!("row{h}"), e::add(e::var(wbase), e::add(e::var(g), e::i64(8 * h))));
        let live = cx.b.let_(&format!("live{h}"), e::bin(K::Lt, e::var(at), rows.clone()));
        // tiles >= 1 here, so rows >= 1.
        let clamped = cx.b.let_(&format!("rowc{h}"), e::bin(K::Min, e::var(at), last.clone()));
        let (l, hi) = bounds_of(e::var(clamped));
        let lo = cx.b.let_(&format!("lo{h}"), l);
        let hi = cx.b.let_(&format!("hi{h}"), hi);
        let max = cx.b.let_(&format!("max{h}"), c(f64::NEG_INFINITY));
        let sum = cx.b.let_(&format!("sum{h}"), c(0.0));
        let any = cx.b.let_(&format!("any{h}"), e::bool(false));
        rs.push(Row { at, live, clamped, lo, hi, max, sum, any });
    }
    // The block's key range from its rows' bounds (thread j < rb reports block row j).
    let brow = cx.b.let_("block_row", e::add(e::mul(e::var(tile), e::i64(rb)), e::var(thread)));
    let mine = e::bin(K::And, e::bin(K::Lt, e::var(thread), e::i64(rb)), e::bin(K::Lt, e::var(brow), rows.clone()));
    let mine = cx.b.let_("reports", mine);
    let (l, h) = bounds_of(e::bin(K::Min, e::var(brow), last.clone()));
    let (bl, bh) = (cx.b.let_("block_lo", l), cx.b.let_("block_hi", h));
    let some = e::bin(K::And, e::var(mine), e::bin(K::Lt, e::var(bl), e::var(bh)));
    let some = cx.b.let_("some", some);
    cx.b.store(lo_sh, e::var(thread), e::select(e::var(some), e::var(bl), e::i64(i64::MAX)));
    cx.b.store(hi_sh, e::var(thread), e::select(e::var(some), e::var(bh), e::i64(i64::MIN)));
    let (nec, nfc) = (spec.map(|(es, _)| (es + 15) / 16), spec.map(|(_, fs)| (fs + 7) / 8));
    let w = Warp {
        dot,
        kind,
        rows,
        esize,
        fsize,
        tl,
        dialect,
        lo_sh,
        hi_sh,
        ks,
        vs,
        ssh,
        qf,
        acc,
        sfr,
        ec,
        fc,
        nec,
        nfc,
        part,
        outer,
        warp,
        g,
        tg,
        rs,
        idx,
    };
    Ok((w, saved))
}

/// The warp's Q fragments — element `(row g + ro, e = 16·chunk + 2t + co)` of its rows, zero
/// past `E` — and its O fragments zeroed. With a fixed `E` the chunks are unrolled here
/// (constant indices keep the fragments in registers); otherwise a loop.
fn load_q(cx: &mut Cx<'_>, site: &Site<'_, '_>, w: &Warp<'_>) -> Result<(), ScheduleError> {
    let (node, ta, dot) = (site.node, site.plan.tile, w.dot);
    let c = |x: f64| e::num(Ty::F32, x);
    let erange = cx.ranges.get(dot.head.name.as_str()).cloned();
    for kc in chunks_of(cx, "chunk", w.nec, &w.ec) {
        for (i, &(ro, co)) in A_AT.iter().enumerate() {
            let ev = e::add(e::mul(kc.clone(), e::i64(16)), e::add(e::mul(e::var(w.tg), e::i64(2)), e::i64(co)));
            let ev = cx.b.let_("e.at", ev);
            let inside = cx.b.let_("e.in", e::bin(K::Lt, e::var(ev), w.esize.clone()));
            let ecl = cx.b.let_(dot.head.name.as_str(), e::bin(K::Min, e::var(ev), e::sub(w.esize.clone(), e::i64(1))));
            let old_e = cx.bind(dot.head.slot, IdxVar { var: ecl, range: erange.clone() });
            let old_t = cx.bind(site.slots[ta], IdxVar { var: w.rs[(ro / 8) as usize].clamped, range: Some(node.shape[ta].clone()) });
            let x = cx.lower_as(site.d, dot.a[0], Ty::F32)?;
            cx.unbind(site.slots[ta], old_t);
            cx.unbind(dot.head.slot, old_e);
            cx.b.store(w.qf, e::add(e::mul(kc.clone(), e::i64(8)), e::i64(i as i64)), e::select(e::var(inside), x, c(0.0)));
        }
    }
    close_chunks(cx, w.nec);
    for nf in chunks_of(cx, "f8", w.nfc, &w.fc) {
        for i in 0..4 {
            cx.b.store(w.acc, e::add(e::mul(nf.clone(), e::i64(4)), e::i64(i)), c(0.0));
        }
    }
    close_chunks(cx, w.nfc);
    Ok(())
}

/// Stages the key tile's `Kᵀ[j, e]` (width 16·chunks) and `V[j, f]` (width 8·chunks) in
/// shared memory, zero past the tile and the dims.
fn stage_tile(cx: &mut Cx<'_>, site: &Site<'_, '_>, w: &Warp<'_>, m0: Var, nm: Var) -> Result<(), ScheduleError> {
    let (node, plan, dot, fa) = (site.node, site.plan, w.dot, site.f_axis());
    let c = |x: f64| e::num(Ty::F32, x);
    let (tl, thread) = (w.tl, w.dialect.thread);
    let erange = cx.ranges.get(dot.head.name.as_str()).cloned();
    let mrange = cx.ranges.get(plan.head.name.as_str()).cloned();
    for (buf, width, stride, extent) in
        [(w.ks, e::mul(w.ec.clone(), e::i64(16)), EMAX, w.esize.clone()), (w.vs, e::mul(w.fc.clone(), e::i64(8)), FMAX, w.fsize.clone())]
    {
        let width = cx.b.let_("stage.w", width);
        let total = e::mul(e::i64(TK), e::var(width));
        let it = cx.b.open_for("stage", e::i64(0), e::bin(K::Div, e::add(total, e::i64(tl - 1)), e::i64(tl)));
        let i = cx.b.let_("stage.i", e::add(e::mul(e::var(it), e::i64(tl)), e::var(thread)));
        cx.b.open_if(e::bin(K::Lt, e::var(i), e::mul(e::i64(TK), e::var(width))));
        let jj = cx.b.let_("j", e::bin(K::Div, e::var(i), e::var(width)));
        let x = cx.b.let_("x", e::bin(K::Rem, e::var(i), e::var(width)));
        let inside = e::bin(K::And, e::bin(K::Lt, e::var(jj), e::var(nm)), e::bin(K::Lt, e::var(x), extent.clone()));
        let inside = cx.b.let_("inside", inside);
        let m = cx.b.let_(plan.head.name.as_str(), e::add(e::var(m0), e::bin(K::Min, e::var(jj), e::sub(e::var(nm), e::i64(1)))));
        let xc = cx.b.let_("x.c", e::bin(K::Min, e::var(x), e::sub(extent.clone(), e::i64(1))));
        let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range: mrange.clone() });
        let val = if buf == w.ks {
            let old_e = cx.bind(dot.head.slot, IdxVar { var: xc, range: erange.clone() });
            let v = cx.lower_as(site.d, dot.b[0], Ty::F32)?;
            cx.unbind(dot.head.slot, old_e);
            v
        } else {
            let old_f = cx.bind(site.slots[fa], IdxVar { var: xc, range: Some(node.shape[fa].clone()) });
            let v = cx.lower_as(site.d, plan.v, Ty::F32)?;
            cx.unbind(site.slots[fa], old_f);
            v
        };
        cx.unbind(plan.head.slot, old_m);
        cx.b.store(buf, e::add(e::mul(e::var(jj), e::i64(i64::from(stride))), e::var(x)), e::select(e::var(inside), val, c(0.0)));
        cx.b.close();
        cx.b.close();
    }
    Ok(())
}

/// `S = Q·Kᵀ`: two tiles of 8 keys, each summed over the chunks of `e`, into the S fragment;
/// returns the four accumulator variables (reused by [`pv_product`]).
fn qk_product(cx: &mut Cx<'_>, w: &Warp<'_>) -> Vec<Var> {
    let cv: Vec<Var> = (0..4).map(|i| cx.b.var(&format!("c{i}"), Ty::F32)).collect();
    for nt in 0..2i64 {
        for &v in &cv {
            cx.b.set(v, e::num(Ty::F32, 0.0));
        }
        for kc in chunks_of(cx, "chunk", w.nec, &w.ec) {
            let a = (0..8).map(|i| e::load(w.qf, e::add(e::mul(kc.clone(), e::i64(8)), e::i64(i)))).collect();
            let key = e::add(e::i64(nt * 8), e::var(w.g));
            let b = B_K
                .iter()
                .map(|&ko| {
                    e::load(
                        w.ks,
                        e::add(
                            e::mul(key.clone(), e::i64(i64::from(EMAX))),
                            e::add(e::mul(kc.clone(), e::i64(16)), e::add(e::mul(e::var(w.tg), e::i64(2)), e::i64(ko))),
                        ),
                    )
                })
                .collect();
            cx.b.emit(Stmt::Mma(Box::new(Mma { kind: w.kind, a, b, c: cv.iter().map(|&v| e::var(v)).collect(), d: cv.clone() })));
        }
        close_chunks(cx, w.nec);
        for (i, &v) in cv.iter().enumerate() {
            cx.b.store(w.sfr, e::i64(nt * 4 + i as i64), e::var(v));
        }
    }
    cv
}

/// The logits `g(S)`, `-inf` outside each row's bounds and past the tile, into the S fragment
/// and the warp's rows in shared memory: element `i` of the fragment is row
/// `g + 8·((i % 4) / 2)`, key `8·(i / 4) + 2t + i % 2`.
fn logits(cx: &mut Cx<'_>, site: &Site<'_, '_>, w: &Warp<'_>, m0: Var, nm: Var) -> Result<(), ScheduleError> {
    let (node, plan, ta) = (site.node, site.plan, site.plan.tile);
    let mrange = cx.ranges.get(plan.head.name.as_str()).cloned();
    for i in 0..8i64 {
        let h = ((i % 4) / 2) as usize;
        let kk = cx.b.let_("key.at", e::add(e::i64(8 * (i / 4) + i % 2), e::mul(e::var(w.tg), e::i64(2))));
        let key = cx.b.let_("key", e::add(e::var(m0), e::var(kk)));
        let r = &w.rs[h];
        let valid = e::bin(
            K::And,
            e::bin(K::Lt, e::var(kk), e::var(nm)),
            e::bin(K::And, e::bin(K::Ge, e::var(key), e::var(r.lo)), e::bin(K::Lt, e::var(key), e::var(r.hi))),
        );
        let valid = cx.b.let_("valid", valid);
        let m = cx.b.let_(plan.head.name.as_str(), e::bin(K::Min, e::var(key), e::add(e::var(m0), e::sub(e::var(nm), e::i64(1)))));
        let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range: mrange.clone() });
        let old_t = cx.bind(site.slots[ta], IdxVar { var: r.clamped, range: Some(node.shape[ta].clone()) });
        cx.subst = vec![(w.dot.id, e::load(w.sfr, e::i64(i)))];
        let x = cx.lower_as(site.d, plan.s, Ty::F32);
        cx.subst.clear();
        let x = x?;
        cx.unbind(site.slots[ta], old_t);
        cx.unbind(plan.head.slot, old_m);
        let s = cx.b.let_("logit", e::select(e::var(valid), x, e::num(Ty::F32, f64::NEG_INFINITY)));
        // Whether the row has a point in this tile — the same on every lane of the row (a lane
        // only sees some of the tile's keys; the one writing the row must know of all).
        let row_has = e::bin(K::Lt, e::bin(K::Max, e::var(m0), e::var(r.lo)), e::bin(K::Min, e::add(e::var(m0), e::var(nm)), e::var(r.hi)));
        cx.b.set(r.any, e::bin(K::Or, e::var(r.any), row_has));
        cx.b.store(w.sfr, e::i64(i), e::var(s));
        cx.b.store(w.ssh, w.ssh_at(e::add(e::var(w.g), e::i64(8 * h as i64)), e::var(kk)), e::var(s));
    }
    Ok(())
}

/// Per row: the tile's max and sum (from shared: the row's 4 lanes compute the same) and the
/// rescale of the row's state; a row without a finite max yet keeps weights 0. Returns each
/// row's reference max and scale.
fn row_stats(cx: &mut Cx<'_>, w: &Warp<'_>) -> (Vec<Var>, Vec<Var>) {
    let ty = Ty::F32;
    let c = |x: f64| e::num(ty, x);
    let mut refs = Vec::with_capacity(2);
    let mut scales = Vec::with_capacity(2);
    for (h, r) in w.rs.iter().enumerate() {
        let rr = e::add(e::var(w.g), e::i64(8 * h as i64));
        let bmax = cx.b.let_("bmax", c(f64::NEG_INFINITY));
        let j = cx.b.open_for("j", e::i64(0), e::i64(TK));
        cx.b.set(bmax, e::acc(K::Max, e::var(bmax), e::load(w.ssh, w.ssh_at(rr.clone(), e::var(j)))));
        cx.b.close();
        let mnew = cx.b.let_("mnew", e::bin(K::Max, e::var(r.max), e::var(bmax)));
        let mref = cx.b.let_(&format!("mref{h}"), e::select(e::bin(K::Eq, e::var(mnew), c(f64::NEG_INFINITY)), c(0.0), e::var(mnew)));
        let sc = exp(&mut cx.b, ty, e::sub(e::var(r.max), e::var(mref)));
        let scale = cx.b.let_(&format!("scale{h}"), sc);
        let tsum = cx.b.let_("tsum", c(0.0));
        let j = cx.b.open_for("j", e::i64(0), e::i64(TK));
        let wt = exp(&mut cx.b, ty, e::sub(e::load(w.ssh, w.ssh_at(rr.clone(), e::var(j))), e::var(mref)));
        cx.b.set(tsum, e::acc(K::Add, e::var(tsum), wt));
        cx.b.close();
        cx.b.set(r.sum, e::add(e::mul(e::var(r.sum), e::var(scale)), e::var(tsum)));
        cx.b.set(r.max, e::var(mnew));
        refs.push(mref);
        scales.push(scale);
    }
    (refs, scales)
}

/// `P = exp(S - max)` in the A layout (S tile 0 is A's columns 0..8, tile 1 columns 8..16),
/// then `O = O·scale + P·V`, 8 columns of `f` at a time.
fn pv_product(cx: &mut Cx<'_>, w: &Warp<'_>, cv: &[Var], refs: &[Var], scales: &[Var]) {
    let mut p = Vec::with_capacity(8);
    for i in 0..8i64 {
        let h = ((i % 4) / 2) as usize;
        let x = exp(&mut cx.b, Ty::F32, e::sub(e::load(w.sfr, e::i64(i)), e::var(refs[h])));
        p.push(e::var(cx.b.let_("p", x)));
    }
    for nf in chunks_of(cx, "f8", w.nfc, &w.fc) {
        let at = |i: usize| e::add(e::mul(nf.clone(), e::i64(4)), e::i64(i as i64));
        for (i, &v) in cv.iter().enumerate() {
            cx.b.set(v, e::mul(e::load(w.acc, at(i)), e::var(scales[i / 2])));
        }
        let col = e::add(e::mul(nf.clone(), e::i64(8)), e::var(w.g));
        let b = B_K
            .iter()
            .map(|&ko| {
                e::load(w.vs, e::add(e::mul(e::add(e::mul(e::var(w.tg), e::i64(2)), e::i64(ko)), e::i64(i64::from(FMAX))), col.clone()))
            })
            .collect();
        cx.b.emit(Stmt::Mma(Box::new(Mma { kind: w.kind, a: p.clone(), b, c: cv.iter().map(|&v| e::var(v)).collect(), d: cv.to_vec() })));
        for (i, &v) in cv.iter().enumerate() {
            cx.b.store(w.acc, at(i), e::var(v));
        }
    }
    close_chunks(cx, w.nfc);
}

/// The thread's rows after the key tiles: a split part's state and O fragment (the state by
/// the row's lane `t = 0`), or (no split) the outputs `O / sum`. Element `i` of O fragment
/// chunk `nf` is row `g + 8·(i / 2)`, column `8·nf + 2t + i % 2`.
fn finish_rows(cx: &mut Cx<'_>, site: &Site<'_, '_>, w: &mut Warp<'_>, split: &Split) -> Result<(), ScheduleError> {
    let (ta, fa) = (site.plan.tile, site.f_axis());
    let c = |x: f64| e::num(Ty::F32, x);
    for h in 0..w.rs.len() {
        let (at, live, max, sum, any) = (w.rs[h].at, w.rs[h].live, w.rs[h].max, w.rs[h].sum, w.rs[h].any);
        let flat_row = e::add(e::mul(e::var(w.outer), w.rows.clone()), e::var(at));
        cx.b.open_if(e::bin(K::And, e::var(live), e::bin(K::Gt, e::var(split.n), e::i64(1))));
        cx.b.open_if(e::bin(K::Eq, e::var(w.tg), e::i64(0)));
        split.store_state(cx, &flat_row, w.part, (max, sum, any));
        cx.b.close();
        for nf in chunks_of(cx, "f8", w.nfc, &w.fc) {
            for i in 0..2i64 {
                let f = cx.b.let_("f", e::add(e::mul(nf.clone(), e::i64(8)), e::add(e::mul(e::var(w.tg), e::i64(2)), e::i64(i))));
                cx.b.open_if(e::bin(K::Lt, e::var(f), w.fsize.clone()));
                let v = e::load(w.acc, e::add(e::mul(nf.clone(), e::i64(4)), e::i64(2 * h as i64 + i)));
                cx.b.store(split.part, split.acc_at(flat_row.clone(), e::var(w.part), e::var(f)), v);
                cx.b.close();
            }
        }
        close_chunks(cx, w.nfc);
        cx.b.open_else();
        cx.b.open_if(e::var(live));
        let nan = cx.b.let_("all_neg_inf", e::bin(K::And, e::var(any), e::bin(K::Eq, e::var(max), c(f64::NEG_INFINITY))));
        w.idx[ta] = Some(e::var(at));
        for nf in chunks_of(cx, "f8", w.nfc, &w.fc) {
            for i in 0..2i64 {
                let f = cx.b.let_("f", e::add(e::mul(nf.clone(), e::i64(8)), e::add(e::mul(e::var(w.tg), e::i64(2)), e::i64(i))));
                cx.b.open_if(e::bin(K::Lt, e::var(f), w.fsize.clone()));
                w.idx[fa] = Some(e::var(f));
                let v = e::load(w.acc, e::add(e::mul(nf.clone(), e::i64(4)), e::i64(2 * h as i64 + i)));
                super::site::store_output(
                    cx,
                    site,
                    &w.idx,
                    Ty::F32,
                    RowValue { num: v, den: e::var(sum), nan },
                    "tensor-core attention plan",
                )?;
                cx.b.close();
            }
        }
        close_chunks(cx, w.nfc);
        cx.b.close();
        cx.b.close();
    }
    Ok(())
}
