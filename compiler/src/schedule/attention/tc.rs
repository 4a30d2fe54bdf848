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
//!   rows: O = acc / sum, or the split's partials (gpu.rs combines them)
//! ```
//!
//! What differs from the `f32` plan: the softmax weights `P` are rounded to the input format
//! before the `P·V` product (as FlashAttention does), so results are within that format's
//! precision of the interpreter's, not `f32`'s (docs/language.md). `Q·Kᵀ` is exact products
//! summed in `f32`. Padded rows (past the last row) compute with the last row's data and store
//! nothing; padded keys are masked; padded `e` and `f` are zero.

use super::super::ScheduleError;
use super::super::arith::exp;
use super::super::build::e;
use super::super::kir::{BinOp as K, Buf, BufKind, Expr, Mma, MmaKind, Stmt, Ty, Var};
use super::super::lower::{Cx, Def, IdxVar, vty};
use super::super::nodes::node_axes;
use super::gpu::Split;
use super::{EMAX, FMAX, Plan};
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
    if vty(node.dtype) == Ty::F64 {
        return None;
    }
    let dot = plan.dot.as_ref()?;
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

/// Head sizes `(E, F)` with a block parallel of their own, whose loops over `e` and `f`
/// chunks have constant trip counts (fully unrolled, the per-thread Q and O fragments in
/// registers); other sizes share one with run-time trip counts.
pub(super) const SPECIALIZED: [(i64, i64); 3] = [(64, 64), (128, 128), (256, 256)];

/// Emits the tensor-core plan: a block parallel per [`SPECIALIZED`] head size, chosen at run
/// time, and a general one (the caller checked `E <= EMAX` and `F <= FMAX` at run time and
/// allocated `bnd` and the split).
#[allow(clippy::too_many_arguments)]
pub(super) fn emit(
    cx: &mut Cx<'_>,
    node: &Node,
    slot: usize,
    slots: &[usize],
    d: Def<'_>,
    plan: &Plan,
    threads: u32,
    bnd: Buf,
    esize: Expr,
    kind: MmaKind,
    split: &Split,
) -> Result<(), ScheduleError> {
    let fsize = cx.tensors[slot].shape[slots.len() - 1].clone();
    for &(es, fs) in &SPECIALIZED {
        cx.b.open_if(e::bin(K::And, e::bin(K::Eq, esize.clone(), e::i64(es)), e::bin(K::Eq, fsize.clone(), e::i64(fs))));
        block(cx, node, slot, slots, d, plan, threads, bnd, e::i64(es), Some((es, fs)), kind, split)?;
        cx.b.open_else();
    }
    block(cx, node, slot, slots, d, plan, threads, bnd, esize, None, kind, split)?;
    for _ in SPECIALIZED {
        cx.b.close();
    }
    Ok(())
}

/// One block parallel of the plan; `spec` fixes `(E, F)`.
#[allow(clippy::too_many_arguments)]
fn block(
    cx: &mut Cx<'_>,
    node: &Node,
    slot: usize,
    slots: &[usize],
    d: Def<'_>,
    plan: &Plan,
    threads: u32,
    bnd: Buf,
    esize: Expr,
    spec: Option<(i64, i64)>,
    kind: MmaKind,
    split: &Split,
) -> Result<(), ScheduleError> {
    let dot = plan.dot.as_ref().ok_or_else(|| cx.internal("the tensor-core plan without a dot product"))?;
    let t = cx.tensors[slot].clone();
    let ty = Ty::F32;
    let c = |x: f64| e::num(ty, x);
    let k = slots.len();
    let (fa, ta) = (k - 1, plan.tile);
    let others: Vec<usize> = (0..k - 1).filter(|&a| a != ta).collect();
    let rows = t.shape[ta].clone();
    let fsize = match spec {
        Some((_, fs)) => e::i64(fs),
        None => t.shape[fa].clone(),
    };
    let tl = i64::from(threads);
    let rb = block_rows(threads);
    let mark = cx.b.mark();
    let thread = cx.b.thread_var();
    let sync = |cx: &mut Cx<'_>| cx.b.barrier();
    // `gpu:shared.` is only the buffers' display name: their kind makes them shared.
    let shared =
        |cx: &mut Cx<'_>, name: &str, ty: Ty, n: u32| cx.b.buf(&format!("gpu:shared.{}.tc.{name}", node.name), ty, BufKind::Shared(n));
    let stack = |cx: &mut Cx<'_>, name: &str, ty: Ty, n: u32| cx.b.buf(&format!("{}.tc.{name}", node.name), ty, BufKind::Stack(n));
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
    let (part, tile, outer) = split.open_blocks(cx, threads, n, ntiles);
    let (vals, saved) = cx.bind_flat(e::var(outer), &node_axes(node, slots, &t.shape, &others));
    let mut idx: Vec<Option<Expr>> = vec![None; k];
    for (&a, v) in others.iter().zip(vals) {
        idx[a] = Some(v);
    }
    let warp = cx.b.let_("warp", e::bin(K::Div, e::var(thread), e::i64(32)));
    let lane = cx.b.let_("lane", e::bin(K::Rem, e::var(thread), e::i64(32)));
    let g = cx.b.let_("g", e::bin(K::Div, e::var(lane), e::i64(4)));
    let tg = cx.b.let_("t", e::bin(K::Rem, e::var(lane), e::i64(4)));
    let wbase = cx.b.let_("warp_row", e::add(e::mul(e::var(tile), e::i64(rb)), e::mul(e::var(warp), e::i64(16))));
    let last = e::sub(rows.clone(), e::i64(1));
    let bounds_of = |row: Expr| {
        let at = e::mul(e::add(e::mul(e::var(outer), rows.clone()), row), e::i64(2));
        (e::load(bnd, at.clone()), e::load(bnd, e::add(at, e::i64(1))))
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
    // Q fragments: element (row g + ro, e = 16·chunk + 2t + co) of the warp's rows.
    let erange = cx.ranges.get(dot.head.name.as_str()).cloned();
    // With a fixed E the chunks are unrolled here (constant indices keep the fragments in
    // registers); otherwise a loop.
    let (nec, nfc) = (spec.map(|(es, _)| (es + 15) / 16), spec.map(|(_, fs)| (fs + 7) / 8));
    for kc in chunks_of(cx, "chunk", nec, &ec) {
        for (i, &(ro, co)) in A_AT.iter().enumerate() {
            let ev = e::add(e::mul(kc.clone(), e::i64(16)), e::add(e::mul(e::var(tg), e::i64(2)), e::i64(co)));
            let ev = cx.b.let_("e.at", ev);
            let inside = cx.b.let_("e.in", e::bin(K::Lt, e::var(ev), esize.clone()));
            let ecl = cx.b.let_(dot.head.name.as_str(), e::bin(K::Min, e::var(ev), e::sub(esize.clone(), e::i64(1))));
            let old_e = cx.bind(dot.head.slot, IdxVar { var: ecl, range: erange.clone() });
            let old_t = cx.bind(slots[ta], IdxVar { var: rs[(ro / 8) as usize].clamped, range: Some(node.shape[ta].clone()) });
            let x = cx.lower_as(d, dot.a[0], Ty::F32)?;
            cx.unbind(slots[ta], old_t);
            cx.unbind(dot.head.slot, old_e);
            cx.b.store(qf, e::add(e::mul(kc.clone(), e::i64(8)), e::i64(i as i64)), e::select(e::var(inside), x, c(0.0)));
        }
    }
    close_chunks(cx, nec);
    for nf in chunks_of(cx, "f8", nfc, &fc) {
        for i in 0..4 {
            cx.b.store(acc, e::add(e::mul(nf.clone(), e::i64(4)), e::i64(i)), c(0.0));
        }
    }
    close_chunks(cx, nfc);
    sync(cx);
    let (m0, nm) = split.open_key_tiles(cx, lo_sh, hi_sh, threads, TK, part);
    sync(cx);
    let mrange = cx.ranges.get(plan.head.name.as_str()).cloned();
    // Stage Kᵀ[j, e] (width 16·ec) and V[j, f] (width 8·fc), zero past the tile and the dims.
    for (buf, width, stride, extent) in
        [(ks, e::mul(ec.clone(), e::i64(16)), EMAX, esize.clone()), (vs, e::mul(fc.clone(), e::i64(8)), FMAX, fsize.clone())]
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
        let val = if buf == ks {
            let old_e = cx.bind(dot.head.slot, IdxVar { var: xc, range: erange.clone() });
            let v = cx.lower_as(d, dot.b[0], Ty::F32)?;
            cx.unbind(dot.head.slot, old_e);
            v
        } else {
            let old_f = cx.bind(slots[fa], IdxVar { var: xc, range: Some(node.shape[fa].clone()) });
            let v = cx.lower_as(d, plan.v, Ty::F32)?;
            cx.unbind(slots[fa], old_f);
            v
        };
        cx.unbind(plan.head.slot, old_m);
        cx.b.store(buf, e::add(e::mul(e::var(jj), e::i64(i64::from(stride))), e::var(x)), e::select(e::var(inside), val, c(0.0)));
        cx.b.close();
        cx.b.close();
    }
    sync(cx);
    // S = Q·Kᵀ: two tiles of 8 keys, summed over the chunks of e.
    let cv: Vec<Var> = (0..4).map(|i| cx.b.var(&format!("c{i}"), Ty::F32)).collect();
    for nt in 0..2i64 {
        for &v in &cv {
            cx.b.set(v, c(0.0));
        }
        for kc in chunks_of(cx, "chunk", nec, &ec) {
            let a = (0..8).map(|i| e::load(qf, e::add(e::mul(kc.clone(), e::i64(8)), e::i64(i)))).collect();
            let key = e::add(e::i64(nt * 8), e::var(g));
            let b = B_K
                .iter()
                .map(|&ko| {
                    e::load(
                        ks,
                        e::add(
                            e::mul(key.clone(), e::i64(i64::from(EMAX))),
                            e::add(e::mul(kc.clone(), e::i64(16)), e::add(e::mul(e::var(tg), e::i64(2)), e::i64(ko))),
                        ),
                    )
                })
                .collect();
            cx.b.emit(Stmt::Mma(Box::new(Mma { kind, a, b, c: cv.iter().map(|&v| e::var(v)).collect(), d: cv.clone() })));
        }
        close_chunks(cx, nec);
        for (i, &v) in cv.iter().enumerate() {
            cx.b.store(sfr, e::i64(nt * 4 + i as i64), e::var(v));
        }
    }
    // Logits: element i of the S fragment is row g + 8·((i % 4) / 2), key 8·(i / 4) + 2t + i % 2.
    let ssh_at = |r: Expr, kk: Expr| e::add(e::mul(e::add(e::mul(e::var(warp), e::i64(16)), r), e::i64(TK)), kk);
    for i in 0..8i64 {
        let h = ((i % 4) / 2) as usize;
        let kk = cx.b.let_("key.at", e::add(e::i64(8 * (i / 4) + i % 2), e::mul(e::var(tg), e::i64(2))));
        let key = cx.b.let_("key", e::add(e::var(m0), e::var(kk)));
        let r = &rs[h];
        let valid = e::bin(
            K::And,
            e::bin(K::Lt, e::var(kk), e::var(nm)),
            e::bin(K::And, e::bin(K::Ge, e::var(key), e::var(r.lo)), e::bin(K::Lt, e::var(key), e::var(r.hi))),
        );
        let valid = cx.b.let_("valid", valid);
        let m = cx.b.let_(plan.head.name.as_str(), e::bin(K::Min, e::var(key), e::add(e::var(m0), e::sub(e::var(nm), e::i64(1)))));
        let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range: mrange.clone() });
        let old_t = cx.bind(slots[ta], IdxVar { var: r.clamped, range: Some(node.shape[ta].clone()) });
        cx.subst = vec![(dot.id, e::load(sfr, e::i64(i)))];
        let x = cx.lower_as(d, plan.s, ty);
        cx.subst.clear();
        let x = x?;
        cx.unbind(slots[ta], old_t);
        cx.unbind(plan.head.slot, old_m);
        let s = cx.b.let_("logit", e::select(e::var(valid), x, c(f64::NEG_INFINITY)));
        cx.b.set(r.any, e::bin(K::Or, e::var(r.any), e::var(valid)));
        cx.b.store(sfr, e::i64(i), e::var(s));
        cx.b.store(ssh, ssh_at(e::add(e::var(g), e::i64(8 * h as i64)), e::var(kk)), e::var(s));
    }
    sync(cx);
    // Per row: the tile's max and sum (from shared: the row's 4 lanes compute the same), the
    // rescale of the row's state; a row without a finite max yet keeps weights 0.
    let mut refs = Vec::with_capacity(2);
    let mut scales = Vec::with_capacity(2);
    for (h, r) in rs.iter().enumerate() {
        let rr = e::add(e::var(g), e::i64(8 * h as i64));
        let bmax = cx.b.let_("bmax", c(f64::NEG_INFINITY));
        let j = cx.b.open_for("j", e::i64(0), e::i64(TK));
        cx.b.set(bmax, e::acc(K::Max, e::var(bmax), e::load(ssh, ssh_at(rr.clone(), e::var(j)))));
        cx.b.close();
        let mnew = cx.b.let_("mnew", e::bin(K::Max, e::var(r.max), e::var(bmax)));
        let mref = cx.b.let_(&format!("mref{h}"), e::select(e::bin(K::Eq, e::var(mnew), c(f64::NEG_INFINITY)), c(0.0), e::var(mnew)));
        let sc = exp(&mut cx.b, ty, e::sub(e::var(r.max), e::var(mref)));
        let scale = cx.b.let_(&format!("scale{h}"), sc);
        let tsum = cx.b.let_("tsum", c(0.0));
        let j = cx.b.open_for("j", e::i64(0), e::i64(TK));
        let w = exp(&mut cx.b, ty, e::sub(e::load(ssh, ssh_at(rr.clone(), e::var(j))), e::var(mref)));
        cx.b.set(tsum, e::acc(K::Add, e::var(tsum), w));
        cx.b.close();
        cx.b.set(r.sum, e::add(e::mul(e::var(r.sum), e::var(scale)), e::var(tsum)));
        cx.b.set(r.max, e::var(mnew));
        refs.push(mref);
        scales.push(scale);
    }
    // P in the A layout: S tile 0 is A's columns 0..8, tile 1 columns 8..16.
    let mut p = Vec::with_capacity(8);
    for i in 0..8i64 {
        let h = ((i % 4) / 2) as usize;
        let w = exp(&mut cx.b, ty, e::sub(e::load(sfr, e::i64(i)), e::var(refs[h])));
        p.push(e::var(cx.b.let_("p", w)));
    }
    // O = O·scale + P·V, 8 columns of f at a time.
    for nf in chunks_of(cx, "f8", nfc, &fc) {
        let at = |i: usize| e::add(e::mul(nf.clone(), e::i64(4)), e::i64(i as i64));
        for (i, &v) in cv.iter().enumerate() {
            cx.b.set(v, e::mul(e::load(acc, at(i)), e::var(scales[i / 2])));
        }
        let col = e::add(e::mul(nf.clone(), e::i64(8)), e::var(g));
        let b = B_K
            .iter()
            .map(|&ko| e::load(vs, e::add(e::mul(e::add(e::mul(e::var(tg), e::i64(2)), e::i64(ko)), e::i64(i64::from(FMAX))), col.clone())))
            .collect();
        cx.b.emit(Stmt::Mma(Box::new(Mma { kind, a: p.clone(), b, c: cv.iter().map(|&v| e::var(v)).collect(), d: cv.clone() })));
        for (i, &v) in cv.iter().enumerate() {
            cx.b.store(acc, at(i), e::var(v));
        }
    }
    close_chunks(cx, nfc);
    cx.b.close(); // key tiles
    // The rows: element i of fragment chunk nf is row g + 8·(i / 2), column 8·nf + 2t + i % 2.
    for (h, r) in rs.iter().enumerate() {
        let flat_row = e::add(e::mul(e::var(outer), rows.clone()), e::var(r.at));
        cx.b.open_if(e::bin(K::And, e::var(r.live), e::bin(K::Gt, e::var(split.n), e::i64(1))));
        cx.b.open_if(e::bin(K::Eq, e::var(tg), e::i64(0)));
        split.store_state(cx, &flat_row, part, (r.max, r.sum, r.any));
        cx.b.close();
        for nf in chunks_of(cx, "f8", nfc, &fc) {
            for i in 0..2i64 {
                let f = cx.b.let_("f", e::add(e::mul(nf.clone(), e::i64(8)), e::add(e::mul(e::var(tg), e::i64(2)), e::i64(i))));
                cx.b.open_if(e::bin(K::Lt, e::var(f), fsize.clone()));
                let v = e::load(acc, e::add(e::mul(nf.clone(), e::i64(4)), e::i64(2 * h as i64 + i)));
                cx.b.store(split.part, split.acc_at(flat_row.clone(), e::var(part), e::var(f)), v);
                cx.b.close();
            }
        }
        close_chunks(cx, nfc);
        cx.b.open_else();
        cx.b.open_if(e::var(r.live));
        let nan = cx.b.let_("all_neg_inf", e::bin(K::And, e::var(r.any), e::bin(K::Eq, e::var(r.max), c(f64::NEG_INFINITY))));
        idx[ta] = Some(e::var(r.at));
        for nf in chunks_of(cx, "f8", nfc, &fc) {
            for i in 0..2i64 {
                let f = cx.b.let_("f", e::add(e::mul(nf.clone(), e::i64(8)), e::add(e::mul(e::var(tg), e::i64(2)), e::i64(i))));
                cx.b.open_if(e::bin(K::Lt, e::var(f), fsize.clone()));
                idx[fa] = Some(e::var(f));
                let v = e::load(acc, e::add(e::mul(nf.clone(), e::i64(4)), e::i64(2 * h as i64 + i)));
                super::store_output(cx, node, &t, &idx, ty, v, e::var(r.sum), nan, "tensor-core attention plan")?;
                cx.b.close();
            }
        }
        close_chunks(cx, nfc);
        cx.b.close();
        cx.b.close();
    }
    cx.b.close_to(mark);
    cx.restore(saved);
    Ok(())
}
