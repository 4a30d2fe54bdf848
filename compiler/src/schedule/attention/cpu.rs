//! The tiled attention plan on a CPU (see the parent module): the tile skeleton shared by both
//! variants, the packed variant's pre-pass and `S` tile, and the natural variant's per-logit
//! evaluation. [`tiles`] emits one variant as the stages of the parent's pseudo-code, in
//! order: open the tile ([`open_tile`]), pack its rows of `A` ([`pack_rows`]), set up each
//! row's state and bounds ([`init_rows`]), then per key block the `S` tile ([`dot_tile`]), the
//! logits and the online-softmax update ([`softmax_block`]) and `acc += w · v`
//! ([`accumulate`]), and last the rows' outputs ([`write_rows`]). A plain sum whose weights
//! read along the rows keeps its weight tile key-major ([`Tile::key_major`], filled keys outer
//! by [`logits_by_key`]); a plan computing a subterm of a node writes that node's definition
//! around it ([`Site::epilogue`](super::site::Site::epilogue)).

use super::super::ScheduleError;
use super::super::arith::exp;
use super::super::build::e;
use super::super::common::{checked_len, node_axes};
use super::super::hoist::{hoist, invariants};
use super::super::kir::{BinOp as K, Buf, BufKind, Expr, Stmt, TILE_MAX_COLS, TILE_MAX_ROWS, TileInit, TileOp, TileProduct, Ty, Var};
use super::super::lower::vty;
use super::super::lower::{Cx, IdxVar, Saved};
use super::analysis::{Dot, Norm, Rows, SINGLE_ROWS, pure, pure_given};
use super::site::{EMAX, FMAX, PACKED_MIN_ROWS, RowValue, Site, panel_at, panel_read};
use crate::ir::eval::compile::Op;
use egg::Id;

/// The packed variant's buffers.
struct Packed<'p> {
    /// The dot product.
    dot: &'p Dot,
    /// `Bᵀ[o, e, m]`, rows of `mp` keys.
    kt: Buf,
    /// Padded row length of `kt` (`M + TM`: blocks may start anywhere below `M`).
    mp: Expr,
    /// Contracted extent.
    e: Expr,
}

/// Emits the plan for the node of `site` with tiles of `tp` rows and blocks of `tm` keys: the
/// packed variant when it applies at run time, else the natural one.
pub(super) fn emit(cx: &mut Cx<'_>, site: &Site<'_, '_>, tp: u32, tm: u32) -> Result<(), ScheduleError> {
    let panel = if tp >= TILE_MAX_ROWS { value_prepass(cx, site)? } else { None };
    let panel = panel.as_ref();
    if site.plan.rows == Rows::Single {
        // As many rows per tile as fit (one key's rows then read one stretch of memory: all
        // heads of a token), but at least four tiles in all, so that a single sequence's decode
        // still runs in parallel: `ceil(T / ceil(4 / outer))` rows, at most SINGLE_ROWS.
        let t = cx.tensors[site.slot].shape.clone();
        let mut outer = e::i64(1);
        for &a in &site.others() {
            outer = e::mul(outer, t[a].clone());
        }
        let outer = e::bin(K::Max, e::i64(1), outer);
        let per = e::bin(K::Div, e::add(e::i64(4), e::sub(outer.clone(), e::i64(1))), outer);
        let rows = e::bin(K::Div, e::add(t[site.plan.tile].clone(), e::sub(per.clone(), e::i64(1))), per);
        let tr = cx.b.let_("tile.rows", e::bin(K::Max, e::i64(1), e::bin(K::Min, rows, e::i64(i64::from(SINGLE_ROWS)))));
        return tiles(cx, site, SINGLE_ROWS, e::var(tr), tm, None, panel);
    }
    let Some(dot) = &site.plan.dot else { return tiles(cx, site, tp, e::i64(i64::from(tp)), tm, None, panel) };
    let t = cx.tensors[site.slot].clone();
    let Some(esize) = dot_extent(cx, site, dot) else { return tiles(cx, site, tp, e::i64(i64::from(tp)), tm, None, panel) };
    let rows = t.shape[site.plan.tile].clone();
    let ok = e::bin(K::And, e::bin(K::Ge, rows, e::i64(PACKED_MIN_ROWS)), e::bin(K::Le, esize.clone(), e::i64(i64::from(EMAX))));
    cx.b.open_if(ok);
    let packed = prepass(cx, site, tm, dot, esize)?;
    tiles(cx, site, tp, e::i64(i64::from(tp)), tm, Some(&packed), panel)?;
    cx.b.open_else();
    tiles(cx, site, tp, e::i64(i64::from(tp)), tm, None, panel)?;
    cx.b.close();
    Ok(())
}

/// The contracted extent (`hi` of the dot's head, a dim).
fn dot_extent(cx: &Cx<'_>, site: &Site<'_, '_>, dot: &Dot) -> Option<Expr> {
    match &site.d.ops[usize::from(dot.head.hi)] {
        crate::ir::eval::compile::Op::Dim(name) => cx.dims.get(name.as_str()).map(|v| e::var(*v)),
        _ => None,
    }
}

/// Keys per block of the pre-pass's transpose.
const TRANSPOSE: i64 = 64;

/// The packed variant's pre-pass: `Bᵀ[o, e, m] = Π b(o, e, m)` for every other-index point
/// `o`, key `m` and contracted `e`, in a heap buffer with rows padded past `M` by what the
/// products read beyond a short last block.
fn prepass<'p>(cx: &mut Cx<'_>, site: &Site<'_, '_>, tm: u32, dot: &'p Dot, esize: Expr) -> Result<Packed<'p>, ScheduleError> {
    let node = site.node;
    let t = cx.tensors[site.slot].clone();
    let range = cx.ranges.get(site.plan.head.name.as_str()).cloned().ok_or_else(|| cx.internal("the key index has no range"))?;
    let msize = cx.size(&range)?;
    // Padding past the last key: a block's products read whole 64-key chunks (`f32`), the
    // loops of the `f64` state whole blocks.
    let pad = if site.acc_ty() == Ty::F32 { tm.min(TILE_MAX_COLS) } else { tm };
    let mp = e::var(cx.b.let_("kt.row", e::add(msize.clone(), e::i64(i64::from(pad)))));
    let mut shape: Vec<Expr> = site.others().iter().map(|&a| t.shape[a].clone()).collect();
    shape.push(esize.clone());
    shape.push(mp.clone());
    let len = checked_len(cx, &shape, &format!("{}.kt", node.name));
    let kt = cx.b.buf(&format!("{}.kt", node.name), Ty::F32, BufKind::Heap);
    // Zeroed: the products of a short last block read the padding past `M`.
    cx.b.emit(Stmt::Alloc { buf: kt, len, zeroed: true });
    let mark = cx.b.mark();
    let mut n = e::i64(1);
    for &a in &site.others() {
        n = e::mul(n, t.shape[a].clone());
    }
    let q = cx.b.open_parallel(&format!("{}.pack", node.name), n);
    let (_, saved) = cx.bind_flat(e::var(q), &node_axes(node, site.slots, &t.shape, &site.others()));
    let base = e::var(cx.b.let_("kt.base", e::mul(e::mul(e::var(q), esize.clone()), mp.clone())));
    // Blocks of TRANSPOSE keys, `e` outer within a block: the stores run along a row of `Bᵀ`
    // (they vectorize), the reads stay in the block's few rows of `B`.
    let tb = e::i64(TRANSPOSE);
    let mb = cx.b.open_for("kt.block", e::i64(0), e::bin(K::Div, e::add(msize.clone(), e::i64(TRANSPOSE - 1)), tb.clone()));
    let m0 = cx.b.let_("kt.m0", e::mul(e::var(mb), tb.clone()));
    let erange = cx.ranges.get(dot.head.name.as_str()).cloned();
    let ev = cx.b.open_for(dot.head.name.as_str(), e::i64(0), esize);
    let old_e = cx.bind(dot.head.slot, IdxVar { var: ev, range: erange });
    let mm = cx.b.open_for("kt.j", e::i64(0), e::bin(K::Min, tb, e::sub(msize, e::var(m0))));
    let m = cx.b.let_(site.plan.head.name.as_str(), e::add(e::var(m0), e::var(mm)));
    let old_m = cx.bind(site.plan.head.slot, IdxVar { var: m, range: Some(range) });
    let mut prod = e::num(Ty::F32, 1.0);
    for &b in &dot.b {
        let x = cx.lower_as(site.d, b, Ty::F32)?;
        prod = e::mul(prod, x);
    }
    cx.b.store(kt, e::add(e::add(base, e::mul(e::var(ev), mp.clone())), e::var(m)), prod);
    cx.b.close_to(mark);
    cx.unbind(dot.head.slot, old_e);
    cx.unbind(site.plan.head.slot, old_m);
    cx.restore(saved);
    Ok(Packed { dot, kt, mp, e: shape[shape.len() - 2].clone() })
}

/// The values of a plain weighted sum or softmax packed once per call (see [`value_prepass`]):
/// `panel[o, m, f] = v(o, m, f)` for every other-index point `o`, key `m` and column `f`.
#[derive(Clone)]
struct ValuePanel {
    /// The panel (heap).
    buf: Buf,
    /// Row stride: the column extent `F`.
    row: Expr,
    /// Elements per other-index point: `M · F` (0 when no tile product runs).
    plane: Expr,
}

/// Keys per parallel iteration of [`value_prepass`].
const PANEL_KEYS: i64 = 64;

/// Values that the tile products cannot read in place ([`direct_read`]: a read with the key
/// index strided, a gather, a widening, a map of reads such as `V[m, f] · g[m] / Z`), packed
/// once per call into a dense panel instead of once per row tile and key block: every tile of
/// an other-index point reads the same values, and repacking them per tile cost more than the
/// products (Pattention's `X · Kpᵀ`, whose value `Kp[n, d]` runs along the reduced `d`, spent
/// 70% of its time there). Only for a shared-rows `f32` plan whose value is pure (evaluating
/// it at every point, not just where a weight is non-zero, cannot fail), and packed only when
/// the tile index has enough rows for a tile product (else the panel is empty: the streaming
/// path reads `v` in place); the caller asks only for tiles of at least that many rows.
fn value_prepass(cx: &mut Cx<'_>, site: &Site<'_, '_>) -> Result<Option<ValuePanel>, ScheduleError> {
    let plan = site.plan;
    if plan.rows != Rows::Shared || site.acc_ty() != Ty::F32 || !pure(site.d, plan.v, None) || direct_read(cx, site).is_some() {
        return Ok(None);
    }
    let (node, fa) = (site.node, site.f_axis());
    let t = cx.tensors[site.slot].clone();
    let range = cx.ranges.get(plan.head.name.as_str()).cloned().ok_or_else(|| cx.internal("the key index has no range"))?;
    let msize = cx.size(&range)?;
    let used = e::bin(K::Ge, t.shape[plan.tile].clone(), e::i64(i64::from(TILE_MAX_ROWS)));
    let keys = e::var(cx.b.let_("vt.keys", e::select(used, msize, e::i64(0))));
    let fsize = t.shape[fa].clone();
    let others = site.others();
    let mut shape: Vec<Expr> = others.iter().map(|&a| t.shape[a].clone()).collect();
    shape.push(keys.clone());
    shape.push(fsize.clone());
    let name = format!("{}.vt", node.name);
    let len = checked_len(cx, &shape, &name);
    let buf = cx.b.buf(&name, Ty::F32, BufKind::Heap);
    // Every key's row is stored below before the tiles read it.
    cx.b.emit(Stmt::Alloc { buf, len, zeroed: false });
    let plane = e::var(cx.b.let_("vt.plane", e::mul(keys.clone(), fsize.clone())));
    let blocks = e::var(cx.b.let_("vt.blocks", e::bin(K::Div, e::add(keys.clone(), e::i64(PANEL_KEYS - 1)), e::i64(PANEL_KEYS))));
    let mut n = blocks.clone();
    for &a in &others {
        n = e::mul(n, t.shape[a].clone());
    }
    let mark = cx.b.mark();
    let q = cx.b.open_parallel(&name, n);
    let outer = cx.b.let_("vt.outer", e::bin(K::Div, e::var(q), blocks.clone()));
    let m0 = cx.b.let_("vt.m0", e::mul(e::bin(K::Rem, e::var(q), blocks), e::i64(PANEL_KEYS)));
    let (_, saved) = cx.bind_flat(e::var(outer), &node_axes(node, site.slots, &t.shape, &others));
    let jj = cx.b.open_for("vt.j", e::i64(0), e::bin(K::Min, e::i64(PANEL_KEYS), e::sub(keys, e::var(m0))));
    let m = cx.b.let_(plan.head.name.as_str(), e::add(e::var(m0), e::var(jj)));
    let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range: Some(range) });
    let row = cx.b.let_("vt.at", e::add(e::mul(e::var(outer), plane.clone()), e::mul(e::var(m), fsize.clone())));
    let f = cx.b.open_for(node.indices[fa].as_str(), e::i64(0), fsize.clone());
    let old_f = cx.bind(site.slots[fa], IdxVar { var: f, range: Some(node.shape[fa].clone()) });
    let val = cx.lower_as(site.d, plan.v, Ty::F32)?;
    cx.b.store(buf, e::add(e::var(row), e::var(f)), val);
    cx.b.close_to(mark);
    cx.unbind(site.slots[fa], old_f);
    cx.unbind(plan.head.slot, old_m);
    cx.restore(saved);
    Ok(Some(ValuePanel { buf, row: fsize, plane }))
}

/// One parallel iteration's tile: `nt` rows from `t0` of the tile index at the other indices'
/// point `outer`, and its per-row state (stack arrays of `tp` rows).
struct Tile {
    /// The state's type (`f32`, or `f64` for `f64` nodes).
    ty: Ty,
    /// Rows of the tile and keys of a block.
    tp: u32,
    tm: u32,
    /// Every index's value where it is bound (the other indices by [`open_tile`]).
    idx: Vec<Option<Expr>>,
    /// The other indices' flat point (also the row of `Bᵀ` the packed variant reads).
    outer: Var,
    /// First row and number of rows.
    t0: Var,
    nt: Var,
    /// Per row: running max, sum, "any point", key bounds, `acc[f]` (rows of `FMAX`).
    mx: Buf,
    sum: Buf,
    any: Buf,
    lo: Buf,
    hi: Buf,
    acc: Buf,
    /// The block's logits, then weights: rows of `tm` keys, or key-major (`tp` rows per key)
    /// when `key_major`.
    sb: Buf,
    /// `sb` holds each key's rows together (a plan whose weights are computed by rows, see
    /// [`Plan::by_rows`](super::analysis::Plan::by_rows)).
    key_major: bool,
    /// A key-major tile's keys inside every row's bounds, `lomax..himin` (set by
    /// [`init_rows`]).
    common: Option<(Var, Var)>,
    /// The output columns of this pass: `fsize` (at most [`FMAX`]) from `f0`.
    fsize: Expr,
    f0: Expr,
    /// The values packed once for the whole call, if [`value_prepass`] did.
    panel: Option<ValuePanel>,
}

impl Tile {
    /// A constant of the state's type.
    fn c(&self, x: f64) -> Expr {
        e::num(self.ty, x)
    }

    /// Element `j` of row `i` of the block's logits.
    fn srow(&self, i: Var, j: Expr) -> Expr {
        if self.key_major {
            e::add(e::mul(j, e::i64(i64::from(self.tp))), e::var(i))
        } else {
            e::add(e::mul(e::var(i), e::i64(i64::from(self.tm))), j)
        }
    }

    /// Element `f` of row `i` of the accumulator.
    fn acc_at(&self, i: Var, f: Var) -> Expr {
        e::add(e::mul(e::var(i), e::i64(i64::from(FMAX))), e::var(f))
    }

    /// Opens a loop over the tile's rows binding the tile index to row `t0 + i`; returns `i`
    /// and the index's previous binding.
    fn open_rows(&self, cx: &mut Cx<'_>, site: &Site<'_, '_>) -> (Var, Option<IdxVar>) {
        let ta = site.plan.tile;
        let i = cx.b.open_for("i", e::i64(0), e::var(self.nt));
        let row = cx.b.let_(&site.node.indices[ta], e::add(e::var(self.t0), e::var(i)));
        let old = cx.bind(site.slots[ta], IdxVar { var: row, range: Some(site.node.shape[ta].clone()) });
        (i, old)
    }
}

/// The tile loop nest of one variant.
/// `tp` is the most rows of a tile (its stack arrays), `tr` how many it has.
fn tiles(
    cx: &mut Cx<'_>,
    site: &Site<'_, '_>,
    tp: u32,
    tr: Expr,
    tm: u32,
    packed: Option<&Packed<'_>>,
    panel: Option<&ValuePanel>,
) -> Result<(), ScheduleError> {
    let mark = cx.b.mark();
    let (mut tile, saved) = open_tile(cx, site, tp, tr, tm);
    tile.panel = panel.cloned();
    let pk = match packed {
        Some(p) => Some((p, pack_rows(cx, site, &tile, p)?)),
        None => None,
    };
    // The output columns in passes of at most FMAX (the accumulator rows): one pass for any
    // head size up to 256; wider values recompute the logits once per pass.
    let full = tile.fsize.clone();
    let fmx = e::i64(i64::from(FMAX));
    let passes = e::bin(K::Div, e::add(full.clone(), e::i64(i64::from(FMAX) - 1)), fmx.clone());
    let pass = cx.b.open_for("f.pass", e::i64(0), passes);
    let f0 = cx.b.let_("f0", e::mul(e::var(pass), fmx.clone()));
    tile.f0 = e::var(f0);
    tile.fsize = e::var(cx.b.let_("fsize", e::bin(K::Min, fmx, e::sub(full, e::var(f0)))));
    let (mlo, mhi, old_t) = init_rows(cx, site, &mut tile)?;
    let inv = row_invariants(cx, site, &tile)?;
    // Key blocks.
    let nb = e::select(
        e::bin(K::Lt, e::var(mlo), e::var(mhi)),
        e::bin(K::Div, e::add(e::sub(e::var(mhi), e::var(mlo)), e::i64(i64::from(tm) - 1)), e::i64(i64::from(tm))),
        e::i64(0),
    );
    let kb = cx.b.open_for("block", e::i64(0), nb);
    let m0 = cx.b.let_("m0", e::add(e::var(mlo), e::mul(e::var(kb), e::i64(i64::from(tm)))));
    let nm = cx.b.let_("keys", e::bin(K::Min, e::i64(i64::from(tm)), e::sub(e::var(mhi), e::var(m0))));
    if let Some((p, (qt, kbase))) = &pk {
        dot_tile(cx, &tile, p, *qt, *kbase, m0, nm);
    }
    softmax_block(cx, site, &tile, &inv, pk.as_ref().map(|(p, _)| *p), m0, nm)?;
    accumulate(cx, site, &tile, m0, nm)?;
    cx.b.close(); // blocks
    write_rows(cx, site, &mut tile)?;
    cx.b.close_to(mark);
    cx.unbind(site.slots[site.plan.tile], old_t);
    cx.restore(saved);
    Ok(())
}

/// Opens the parallel loop over (other indices × row tiles), binds the other indices, and
/// declares the tile's per-row state; returns the tile and the indices' previous bindings.
fn open_tile(cx: &mut Cx<'_>, site: &Site<'_, '_>, tp: u32, tr: Expr, tm: u32) -> (Tile, Saved) {
    let node = site.node;
    let t = cx.tensors[site.slot].clone();
    let ty = site.acc_ty();
    let ta = site.plan.tile;
    let others = site.others();
    let mut idx: Vec<Option<Expr>> = vec![None; site.slots.len()];
    let ntiles = e::bin(K::Div, e::add(t.shape[ta].clone(), e::sub(tr.clone(), e::i64(1))), tr.clone());
    let ntiles = e::var(cx.b.let_("tiles", ntiles));
    let mut n = ntiles.clone();
    for &a in &others {
        n = e::mul(n, t.shape[a].clone());
    }
    let q = cx.b.open_parallel(&format!("{}.tiles", node.name), n);
    let tile = cx.b.let_("tile", e::bin(K::Rem, e::var(q), ntiles.clone()));
    let outer = cx.b.let_("outer", e::bin(K::Div, e::var(q), ntiles));
    let (vals, saved) = cx.bind_flat(e::var(outer), &node_axes(node, site.slots, &t.shape, &others));
    for (&a, v) in others.iter().zip(vals) {
        idx[a] = Some(v);
    }
    let t0 = cx.b.let_("t0", e::mul(e::var(tile), tr.clone()));
    let nt = cx.b.let_("rows", e::bin(K::Min, tr, e::sub(t.shape[ta].clone(), e::var(t0))));
    let mut stack = |name: &str, ty: Ty, n: u32| cx.b.buf(&format!("{}.{name}", node.name), ty, BufKind::Stack(n));
    let (mx, sum, any) = (stack("max", ty, tp), stack("sum", ty, tp), stack("any", Ty::Bool, tp));
    let (lo, hi) = (stack("lo", Ty::I64, tp), stack("hi", Ty::I64, tp));
    let (acc, sb) = (stack("acc", ty, tp * FMAX), stack("s", ty, tp * tm));
    let fsize = t.shape[site.f_axis()].clone();
    let key_major = site.plan.by_rows;
    (
        Tile { ty, tp, tm, idx, outer, t0, nt, mx, sum, any, lo, hi, acc, sb, key_major, common: None, fsize, f0: e::i64(0), panel: None },
        saved,
    )
}

/// Packed: this tile's rows of `A` (`a[i, e] = Π a(t0 + i, e)`, rows of `EMAX`), and where its
/// other-index point's `Bᵀ` starts.
fn pack_rows(cx: &mut Cx<'_>, site: &Site<'_, '_>, tile: &Tile, p: &Packed<'_>) -> Result<(Buf, Var), ScheduleError> {
    let base = e::mul(e::mul(e::var(tile.outer), p.e.clone()), p.mp.clone());
    let kbase = cx.b.let_("kt.base", base);
    let qt = cx.b.buf(&format!("{}.a", site.node.name), Ty::F32, BufKind::Stack(tile.tp * EMAX));
    let (i, old_t) = tile.open_rows(cx, site);
    let erange = cx.ranges.get(p.dot.head.name.as_str()).cloned();
    let ev = cx.b.open_for(p.dot.head.name.as_str(), e::i64(0), p.e.clone());
    let old_e = cx.bind(p.dot.head.slot, IdxVar { var: ev, range: erange });
    let mut prod = e::num(Ty::F32, 1.0);
    for &a in &p.dot.a {
        let x = cx.lower_as(site.d, a, Ty::F32)?;
        prod = e::mul(prod, x);
    }
    cx.b.store(qt, e::add(e::mul(e::var(i), e::i64(i64::from(EMAX))), e::var(ev)), prod);
    cx.b.close();
    cx.b.close();
    cx.unbind(p.dot.head.slot, old_e);
    cx.unbind(site.slots[site.plan.tile], old_t);
    Ok((qt, kbase))
}

/// Per row: the online-softmax state (max -inf, sum 0, no point, `acc` 0) and the key bounds;
/// returns the tile's key range `mlo..mhi` (empty rows do not widen it) and the tile index's
/// binding before the loop (the caller restores it). A key-major tile also gets the keys that
/// every row has, `lomax..himin` ([`Tile::common`]).
fn init_rows(cx: &mut Cx<'_>, site: &Site<'_, '_>, tile: &mut Tile) -> Result<(Var, Var, Option<IdxVar>), ScheduleError> {
    let mlo = cx.b.let_("mlo", e::i64(i64::MAX));
    let mhi = cx.b.let_("mhi", e::i64(i64::MIN));
    let common = if tile.key_major {
        let c = (cx.b.let_("lomax", e::i64(i64::MIN)), cx.b.let_("himin", e::i64(i64::MAX)));
        tile.common = Some(c);
        Some(c)
    } else {
        None
    };
    let (i, old_t) = tile.open_rows(cx, site);
    cx.b.store(tile.mx, e::var(i), tile.c(f64::NEG_INFINITY));
    cx.b.store(tile.sum, e::var(i), tile.c(0.0));
    cx.b.store(tile.any, e::var(i), e::bool(false));
    let f0 = cx.b.open_for("f", e::i64(0), tile.fsize.clone());
    cx.b.store(tile.acc, tile.acc_at(i, f0), tile.c(0.0));
    cx.b.close();
    let (l, h) = cx.bounds(site.d, &site.plan.head)?;
    // An empty row range must not widen the block range.
    cx.b.open_if(e::bin(K::Lt, e::var(l), e::var(h)));
    cx.b.set(mlo, e::bin(K::Min, e::var(mlo), e::var(l)));
    cx.b.set(mhi, e::bin(K::Max, e::var(mhi), e::var(h)));
    cx.b.close();
    cx.b.store(tile.lo, e::var(i), e::var(l));
    cx.b.store(tile.hi, e::var(i), e::var(h));
    if let Some((lomax, himin)) = common {
        cx.b.set(lomax, e::bin(K::Max, e::var(lomax), e::var(l)));
        cx.b.set(himin, e::bin(K::Min, e::var(himin), e::var(h)));
    }
    cx.b.close();
    Ok((mlo, mhi, old_t))
}

/// The heavy subterms of the logit (or weight) that do not depend on the key (a row's
/// normaliser, a nested `max` over the keys): evaluated once per row into a stack array of the
/// tile's rows, read back by [`softmax_block`] (see `hoist`: only infallible ones).
fn row_invariants(cx: &mut Cx<'_>, site: &Site<'_, '_>, tile: &Tile) -> Result<Vec<(Id, Buf)>, ScheduleError> {
    let (plan, d) = (site.plan, site.d);
    // Which subterms, with the tile index bound (to any variable: only whether it is bound
    // matters here).
    let ta = site.slots[plan.tile];
    let old = cx.bind(ta, IdxVar { var: tile.t0, range: None });
    let ids = invariants(cx, d, &[plan.head.filter, plan.s], plan.head.slot, false);
    cx.unbind(ta, old);
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let (i, old_t) = tile.open_rows(cx, site);
    let mut out = Vec::with_capacity(ids.len());
    for (id, _) in ids {
        let ty = vty(d.tys[usize::from(id)]);
        let buf = cx.b.buf(&format!("{}.row", site.node.name), ty, BufKind::Stack(tile.tp));
        let mark = cx.b.mark();
        let x = cx.lower_as(d, id, ty)?;
        cx.b.store(buf, e::var(i), x);
        cx.b.close_to(mark);
        out.push((id, buf));
    }
    cx.b.close();
    cx.unbind(site.slots[plan.tile], old_t);
    Ok(out)
}

/// The packed dot-product tile: `S[i, j] = Σ_e A[i, e] · Bᵀ[e, m0 + j]` (keys past the block
/// read the padding; they are masked by [`softmax_block`]). With an `f32` state, as tile
/// products of up to [`TILE_MAX_ROWS`] rows × [`TILE_MAX_COLS`] keys (the tile in registers),
/// as many per micro-tile as the block has keys; otherwise as loops.
fn dot_tile(cx: &mut Cx<'_>, tile: &Tile, p: &Packed<'_>, qt: Buf, kbase: Var, m0: Var, nm: Var) {
    let tmx = e::i64(i64::from(tile.tm));
    if tile.ty == Ty::F32 {
        // Blocks wider than a tile product are several products side by side, as many as
        // hold a key of the block (the last block may be short); the columns past `tm` of a
        // block that is not a multiple of the product's width are never read.
        let n = tile.tm.min(TILE_MAX_COLS);
        let nx = e::i64(i64::from(n));
        row_tiles(cx, tile, |cx, r0, m| {
            let chunks = e::bin(K::Div, e::add(e::var(nm), e::i64(i64::from(n) - 1)), nx.clone());
            let c = cx.b.open_for("j.chunk", e::i64(0), chunks);
            let j0 = e::mul(e::var(c), nx.clone());
            cx.b.emit(Stmt::TileProduct(Box::new(TileProduct {
                m,
                n,
                cols: if tile.tm.is_multiple_of(n) { nx.clone() } else { e::bin(K::Min, nx.clone(), e::sub(tmx.clone(), j0.clone())) },
                k: p.e.clone(),
                a: qt,
                a0: e::mul(r0.clone(), e::i64(i64::from(EMAX))),
                lda: e::i64(i64::from(EMAX)),
                ka: e::i64(1),
                b: p.kt,
                b0: e::add(e::add(e::var(kbase), e::var(m0)), j0.clone()),
                ldb: p.mp.clone(),
                c: tile.sb,
                c0: e::add(e::mul(r0, tmx.clone()), j0),
                ldc: tmx.clone(),
                init: TileInit::Zero,
                op: p.dot.kind,
            })));
            cx.b.close();
        });
        return;
    }
    let i = cx.b.open_for("i", e::i64(0), e::var(tile.nt));
    let j = cx.b.open_for("j", e::i64(0), tmx.clone());
    cx.b.store(tile.sb, e::add(e::mul(e::var(i), tmx.clone()), e::var(j)), e::num(Ty::F32, 0.0));
    cx.b.close();
    cx.b.close();
    let ev = cx.b.open_for("e", e::i64(0), p.e.clone());
    let krow = cx.b.let_("krow", e::add(e::add(e::var(kbase), e::mul(e::var(ev), p.mp.clone())), e::var(m0)));
    let i = cx.b.open_for("i", e::i64(0), e::var(tile.nt));
    let a = cx.b.let_("a", e::load(qt, e::add(e::mul(e::var(i), e::i64(i64::from(EMAX))), e::var(ev))));
    let j = cx.b.open_for("j", e::i64(0), tmx.clone());
    let at = e::add(e::mul(e::var(i), tmx.clone()), e::var(j));
    let kv = e::load(p.kt, e::add(e::var(krow), e::var(j)));
    cx.b.store(tile.sb, at.clone(), e::add(e::load(tile.sb, at), p.dot.term(e::var(a), kv)));
    cx.b.close();
    cx.b.close();
    cx.b.close();
}

/// The tile's rows in micro-tiles of [`TILE_MAX_ROWS`] (`emit(r0, m)` with `m` the constant
/// micro-tile height), the rows past the last full micro-tile one at a time (`m = 1` in a
/// loop): two code paths per product, so compile time stays small; the default tile of 18
/// rows is three full micro-tiles.
fn row_tiles(cx: &mut Cx<'_>, tile: &Tile, mut emit: impl FnMut(&mut Cx<'_>, Expr, u32)) {
    let mr = TILE_MAX_ROWS.min(tile.tp);
    let mrx = e::i64(i64::from(mr));
    if mr > 1 {
        let q = cx.b.open_for("micro", e::i64(0), e::bin(K::Div, e::var(tile.nt), mrx.clone()));
        emit(cx, e::mul(e::var(q), mrx.clone()), mr);
        cx.b.close();
    }
    let rest = if mr > 1 { e::mul(e::bin(K::Div, e::var(tile.nt), mrx.clone()), mrx) } else { e::i64(0) };
    let r = cx.b.open_for("row", rest, e::var(tile.nt));
    emit(cx, e::var(r), 1);
    cx.b.close();
}

/// Whether the logit, as the block loop evaluates it (the packed dot product and the row's
/// invariants `inv` are values there), can be evaluated at masked points without any effect
/// (no failure, no absence): `(unfiltered and pure, filtered and pure with a pure filter)`.
/// Then a select masks it instead of a branch per key.
fn purity(site: &Site<'_, '_>, inv: &[(Id, Buf)], packed: Option<&Packed<'_>>) -> (bool, bool) {
    let (plan, d) = (site.plan, site.d);
    let values: Vec<Id> = inv.iter().map(|(id, _)| *id).chain(packed.map(|p| p.dot.id)).collect();
    let pure_s = pure_given(d, plan.s, &values);
    let unfiltered = matches!(d.ops[usize::from(plan.head.filter)], Op::Const(tfmc_runtime::Scalar::B(true)));
    (unfiltered && pure_s, !unfiltered && pure_s && pure(d, plan.head.filter, None))
}

/// Per row of the tile: the block's logits (`-inf` outside the row's bounds or filter; from
/// the packed `S` tile when `packed`), then the online-softmax update — rescale `sum` and
/// `acc` by `exp(max_old - max_new)` and turn the logits into weights `exp(S - max_new)` (0
/// for a row without a live point yet).
fn softmax_block(
    cx: &mut Cx<'_>,
    site: &Site<'_, '_>,
    tile: &Tile,
    inv: &[(Id, Buf)],
    packed: Option<&Packed<'_>>,
    m0: Var,
    nm: Var,
) -> Result<(), ScheduleError> {
    let (plan, d, ty) = (site.plan, site.d, tile.ty);
    let c = |x: f64| tile.c(x);
    let softmax = plan.norm == Norm::Softmax;
    // A masked point's logit is -inf (weight 0 after the softmax); a plain sum's weight is 0.
    let masked = if softmax { f64::NEG_INFINITY } else { 0.0 };
    let (pure_logit, pure_filtered) = purity(site, inv, packed);
    let by_key = plan.rows == Rows::Single || tile.key_major;
    let bm = if by_key { logits_by_key(cx, site, tile, inv, (m0, nm), masked, (pure_logit, pure_filtered))? } else { None };
    if by_key && !softmax {
        // The weights are final and `any` is set: nothing per row is left.
        return Ok(());
    }
    let i = cx.b.open_for("i", e::i64(0), e::var(tile.nt));
    let subst0 = cx.subst.len();
    for (id, buf) in inv {
        cx.subst.push((*id, e::load(*buf, e::var(i))));
    }
    let row = cx.b.let_(&site.node.indices[plan.tile], e::add(e::var(tile.t0), e::var(i)));
    cx.bind(site.slots[plan.tile], IdxVar { var: row, range: Some(site.node.shape[plan.tile].clone()) });
    let (rlo, rhi) = (cx.b.let_("lo", e::load(tile.lo, e::var(i))), cx.b.let_("hi", e::load(tile.hi, e::var(i))));
    let bmax = cx.b.let_("bmax", bm.map_or(c(f64::NEG_INFINITY), |bm| e::load(bm, e::var(i))));
    let anyrow = cx.b.let_("anyrow", e::load(tile.any, e::var(i)));
    let range = cx.ranges.get(plan.head.name.as_str()).cloned();
    let inside = |m: Var| e::bin(K::And, e::bin(K::Ge, e::var(m), e::var(rlo)), e::bin(K::Lt, e::var(m), e::var(rhi)));
    // Logits, in a loop over the block's keys: the key bound, the packed tile's value
    // substituted for the dot product, and the running block max.
    let open_keys = |cx: &mut Cx<'_>| -> Result<(Var, Var, Option<IdxVar>), ScheduleError> {
        let j = cx.b.open_for("j", e::i64(0), e::var(nm));
        let m = cx.b.let_("m", e::add(e::var(m0), e::var(j)));
        let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range: range.clone() });
        if let Some(p) = packed {
            let tile_value = e::load(tile.sb, tile.srow(i, e::var(j)));
            let tile_value = if ty == Ty::F32 { tile_value } else { e::cast(ty, tile_value) };
            let value = p.dot.value(cx, d, tile_value, ty)?;
            cx.subst.push((p.dot.id, value));
        }
        Ok((j, m, old_m))
    };
    let close_keys = |cx: &mut Cx<'_>, j: Var, sv: Expr, old_m: Option<IdxVar>| {
        if packed.is_some() {
            cx.subst.pop();
        }
        // The packed tile's own value needs no store back; any other logit is computed once,
        // stored over the tile's value and read by the max.
        let at = tile.srow(i, e::var(j));
        let sv = if sv == e::load(tile.sb, at.clone()) {
            sv
        } else {
            let v = cx.b.let_("logit", sv);
            cx.b.store(tile.sb, at, e::var(v));
            e::var(v)
        };
        if softmax {
            cx.b.set(bmax, e::acc(K::Max, e::var(bmax), sv));
        }
        cx.b.close();
        cx.unbind(plan.head.slot, old_m);
    };
    if by_key {
        // The logits are in `sb` already.
    } else if pure_logit {
        // Nothing in the logit can fail or be absent: a block inside the row's key bounds has
        // no mask code (the common case); an edge block masks with a select (vectorizes).
        let interior = e::bin(K::And, e::bin(K::Ge, e::var(m0), e::var(rlo)), e::bin(K::Le, e::add(e::var(m0), e::var(nm)), e::var(rhi)));
        cx.b.open_if(interior);
        let (j, _, old_m) = open_keys(cx)?;
        let x = cx.lower_as(d, plan.s, ty)?;
        close_keys(cx, j, x, old_m);
        // A block has at least one key.
        cx.b.set(anyrow, e::bool(true));
        cx.b.open_else();
        let (j, m, old_m) = open_keys(cx)?;
        let valid = cx.b.let_("valid", inside(m));
        let x = cx.lower_as(d, plan.s, ty)?;
        cx.b.set(anyrow, e::bin(K::Or, e::var(anyrow), e::var(valid)));
        close_keys(cx, j, e::select(e::var(valid), x, c(masked)), old_m);
        cx.b.close();
    } else if pure_filtered {
        // A filter read from a tensor (a graph's adjacency): every key masks, by a select on
        // the filter and the row's bounds (vectorizes; a branch per key did not).
        let (j, m, old_m) = open_keys(cx)?;
        let f = cx.lower_as(d, plan.head.filter, Ty::Bool)?;
        let valid = cx.b.let_("valid", e::bin(K::And, inside(m), f));
        let x = cx.lower_as(d, plan.s, ty)?;
        cx.b.set(anyrow, e::bin(K::Or, e::var(anyrow), e::var(valid)));
        close_keys(cx, j, e::select(e::var(valid), x, c(masked)), old_m);
    } else {
        let (j, m, old_m) = open_keys(cx)?;
        let sv = cx.b.let_("logit", c(masked));
        cx.b.open_if(inside(m));
        let ok = cx.holds(d, plan.head.filter)?;
        cx.b.open_if(ok);
        let x = cx.lower_as(d, plan.s, ty)?;
        cx.b.set(sv, x);
        cx.b.set(anyrow, e::bool(true));
        cx.b.close();
        cx.b.close();
        close_keys(cx, j, e::var(sv), old_m);
    }
    cx.subst.truncate(subst0);
    cx.b.store(tile.any, e::var(i), e::var(anyrow));
    if !softmax {
        // The weights are final: nothing to rescale.
        cx.b.close(); // rows
        return Ok(());
    }
    // Online softmax update of the row.
    let old = cx.b.let_("mold", e::load(tile.mx, e::var(i)));
    let mnew = cx.b.let_("mnew", e::bin(K::Max, e::var(old), e::var(bmax)));
    cx.b.open_if(e::bin(K::Ne, e::var(mnew), c(f64::NEG_INFINITY)));
    let lsum = cx.b.let_("l", e::load(tile.sum, e::var(i)));
    // A max that did not move scales by exp(0) = 1 exactly: most blocks skip the rescale (`Ne`
    // is true on NaN, which rescales to NaN as the interpreter's row is).
    cx.b.open_if(e::bin(K::Ne, e::var(old), e::var(mnew)));
    let sc = exp(&mut cx.b, ty, e::sub(e::var(old), e::var(mnew)));
    let scale = cx.b.let_("scale", sc);
    cx.b.set(lsum, e::mul(e::var(lsum), e::var(scale)));
    let f1 = cx.b.open_for("f", e::i64(0), tile.fsize.clone());
    let at = tile.acc_at(i, f1);
    cx.b.store(tile.acc, at.clone(), e::mul(e::load(tile.acc, at), e::var(scale)));
    cx.b.close();
    cx.b.close();
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let w = exp(&mut cx.b, ty, e::sub(e::load(tile.sb, tile.srow(i, e::var(j))), e::var(mnew)));
    let w = cx.b.let_("w", w);
    cx.b.store(tile.sb, tile.srow(i, e::var(j)), e::var(w));
    cx.b.set(lsum, e::acc(K::Add, e::var(lsum), e::var(w)));
    cx.b.close();
    cx.b.store(tile.sum, e::var(i), e::var(lsum));
    cx.b.store(tile.mx, e::var(i), e::var(mnew));
    cx.b.open_else();
    // A row with no live point this block: its weights are 0.
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    cx.b.store(tile.sb, tile.srow(i, e::var(j)), c(0.0));
    cx.b.close();
    cx.b.close(); // if mnew live
    cx.b.close(); // rows
    Ok(())
}

/// Logits keys outer and rows inner, for a single-row plan (consecutive rows are consecutive
/// values of the tile index: the heads of one token in a `[.., m, h, e]` cache, so the reads of
/// one key stream through neighbouring memory instead of each row striding over the keys) and
/// for a key-major tile (weights that read their tensors along the rows, `φ(K[m, e])` with
/// rows `e`: with a pure weight the loop over the rows is branch-free and vectorizes).
/// Stores `sb[i, j]` for the block's keys `m0 .. m0 + nm` (`masked` outside a row's bounds or
/// filter, where nothing is evaluated unless the weight is pure: `purity`'s verdict) and sets
/// `any[i]`; for a softmax, returns the rows' block maxima (a stack array of the tile's rows).
fn logits_by_key(
    cx: &mut Cx<'_>,
    site: &Site<'_, '_>,
    tile: &Tile,
    inv: &[(Id, Buf)],
    (m0, nm): (Var, Var),
    masked: f64,
    (pure_logit, pure_filtered): (bool, bool),
) -> Result<Option<Buf>, ScheduleError> {
    let (plan, d, ty) = (site.plan, site.d, tile.ty);
    let bm = if plan.norm == Norm::Softmax {
        let bm = cx.b.buf(&format!("{}.bmax", site.node.name), ty, BufKind::Stack(tile.tp));
        let i = cx.b.open_for("i", e::i64(0), e::var(tile.nt));
        cx.b.store(bm, e::var(i), tile.c(f64::NEG_INFINITY));
        cx.b.close();
        Some(bm)
    } else {
        None
    };
    let select = tile.key_major && (pure_logit || pure_filtered);
    let common = tile.common.filter(|_| select && pure_logit);
    if let Some((lomax, himin)) = common {
        // A block inside every row's key bounds (the common case) has no mask code at all.
        let interior =
            e::bin(K::And, e::bin(K::Ge, e::var(m0), e::var(lomax)), e::bin(K::Le, e::add(e::var(m0), e::var(nm)), e::var(himin)));
        cx.b.open_if(interior);
        let i = cx.b.open_for("i", e::i64(0), e::var(tile.nt));
        cx.b.store(tile.any, e::var(i), e::bool(true));
        cx.b.close();
        by_key_loops(cx, site, tile, inv, m0, nm, bm, |cx, _, _| cx.lower_as(d, plan.s, ty))?;
        cx.b.open_else();
    }
    by_key_loops(cx, site, tile, inv, m0, nm, bm, |cx, i, m| {
        let inside =
            e::bin(K::And, e::bin(K::Ge, e::var(m), e::load(tile.lo, e::var(i))), e::bin(K::Lt, e::var(m), e::load(tile.hi, e::var(i))));
        if select {
            // Nothing in the weight or the filter can fail: a select masks it (a single-row
            // plan's logit holds a dot product, not evaluated where masked).
            let valid = if pure_filtered { e::bin(K::And, inside, cx.lower_as(d, plan.head.filter, Ty::Bool)?) } else { inside };
            let valid = cx.b.let_("valid", valid);
            let x = cx.lower_as(d, plan.s, ty)?;
            cx.b.store(tile.any, e::var(i), e::bin(K::Or, e::load(tile.any, e::var(i)), e::var(valid)));
            return Ok(e::select(e::var(valid), x, tile.c(masked)));
        }
        let sv = cx.b.let_("logit", tile.c(masked));
        cx.b.open_if(inside);
        let ok = cx.holds(d, plan.head.filter)?;
        cx.b.open_if(ok);
        let x = cx.lower_as(d, plan.s, ty)?;
        cx.b.set(sv, x);
        cx.b.store(tile.any, e::var(i), e::bool(true));
        cx.b.close();
        cx.b.close();
        Ok(e::var(sv))
    })?;
    if common.is_some() {
        cx.b.close();
    }
    Ok(bm)
}

/// [`logits_by_key`]'s loop nest: keys outer, rows inner, each point's logit by `logit(cx,
/// i, m)` (the row's and the key's variables; the tile index and the key are bound), stored at
/// `sb[i, j]` and folded into the row's block max `bm`.
#[allow(clippy::too_many_arguments)]
fn by_key_loops(
    cx: &mut Cx<'_>,
    site: &Site<'_, '_>,
    tile: &Tile,
    inv: &[(Id, Buf)],
    m0: Var,
    nm: Var,
    bm: Option<Buf>,
    logit: impl FnOnce(&mut Cx<'_>, Var, Var) -> Result<Expr, ScheduleError>,
) -> Result<(), ScheduleError> {
    let plan = site.plan;
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let m = cx.b.let_("m", e::add(e::var(m0), e::var(j)));
    let range = cx.ranges.get(plan.head.name.as_str()).cloned();
    let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range });
    let (i, old_t) = tile.open_rows(cx, site);
    let subst0 = cx.subst.len();
    for (id, buf) in inv {
        cx.subst.push((*id, e::load(*buf, e::var(i))));
    }
    let sv = logit(cx, i, m)?;
    let sv = match sv {
        Expr::Var(v) => v,
        sv => cx.b.let_("logit", sv),
    };
    cx.subst.truncate(subst0);
    cx.b.store(tile.sb, tile.srow(i, e::var(j)), e::var(sv));
    if let Some(bm) = bm {
        cx.b.store(bm, e::var(i), e::acc(K::Max, e::load(bm, e::var(i)), e::var(sv)));
    }
    cx.b.close(); // rows
    cx.unbind(site.slots[plan.tile], old_t);
    cx.b.close(); // keys
    cx.unbind(plan.head.slot, old_m);
    Ok(())
}

/// `acc[i] += w[i, j] · v(m0 + j)`: keys outer, rows inner, so consecutive updates go to
/// different accumulator rows (no store-to-load chain) and v's row is reused by all rows.
fn accumulate(cx: &mut Cx<'_>, site: &Site<'_, '_>, tile: &Tile, m0: Var, nm: Var) -> Result<(), ScheduleError> {
    let (plan, node, fa) = (site.plan, site.node, site.f_axis());
    let pure_v = pure(site.d, plan.v, None);
    // Tile products from a full micro-tile of rows on; fewer rows (decode: one) stream `v`
    // once through the loops below instead of packing it first.
    // (Not for single-row plans: their rows read different values.)
    let tiles = tile.ty == Ty::F32 && tile.tp >= TILE_MAX_ROWS && plan.rows == Rows::Shared;
    if tiles {
        cx.b.open_if(e::bin(K::Ge, e::var(tile.nt), e::i64(i64::from(TILE_MAX_ROWS))));
        accumulate_tiles(cx, site, tile, m0, nm, pure_v)?;
        cx.b.open_else();
    }
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let m = cx.b.let_("m", e::add(e::var(m0), e::var(j)));
    let range = cx.ranges.get(plan.head.name.as_str()).cloned();
    let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range });
    let i = cx.b.open_for("i", e::i64(0), e::var(tile.nt));
    // The row's tile index, which `v` reads in a single-row plan (else `v` is free of it).
    let old_t = if plan.rows != Rows::Shared {
        let row = cx.b.let_(&node.indices[plan.tile], e::add(e::var(tile.t0), e::var(i)));
        Some(cx.bind(site.slots[plan.tile], IdxVar { var: row, range: Some(node.shape[plan.tile].clone()) }))
    } else {
        None
    };
    let w = cx.b.let_("w", e::load(tile.sb, tile.srow(i, e::var(j))));
    if !pure_v {
        // v is evaluated only where the interpreter would (a point with weight).
        cx.b.open_if(e::bin(K::Ne, e::var(w), tile.c(0.0)));
    }
    let f2 = cx.b.open_for("f", e::i64(0), tile.fsize.clone());
    let fcol = cx.b.let_("fcol", e::add(tile.f0.clone(), e::var(f2)));
    let old_f = cx.bind(site.slots[fa], IdxVar { var: fcol, range: Some(node.shape[fa].clone()) });
    let val = cx.lower_as(site.d, plan.v, tile.ty)?;
    let at = tile.acc_at(i, f2);
    cx.b.store(tile.acc, at.clone(), e::add(e::load(tile.acc, at), e::mul(e::var(w), val)));
    cx.b.close();
    cx.unbind(site.slots[fa], old_f);
    if !pure_v {
        cx.b.close();
    }
    cx.b.close(); // rows
    if let Some(old_t) = old_t {
        cx.unbind(site.slots[plan.tile], old_t);
    }
    cx.b.close(); // keys
    cx.unbind(plan.head.slot, old_m);
    if tiles {
        cx.b.close();
    }
    Ok(())
}

/// The value read in place as the `B` panel of `P·V`, when it is an `f32` read
/// `V[.., m, .., f]` with `f` last (stride 1), the key alone in one subscript, and the other
/// subscripts free of the key, `f` and the tile index (`V[b, h / (H / G), m, f]`), no presence:
/// `(buffer, index of v(m0, f0), row stride)`. Then nothing is packed: the tile products read
/// `V`'s rows where they are. Called once per key block: a subscript that may fail is checked
/// there, which is exactly when the interpreter evaluates `v` (the block exists only if a row of
/// the tile has a point, and no subscript reads the row or the key).
fn direct_panel(cx: &mut Cx<'_>, site: &Site<'_, '_>, tile: &Tile, m0: Var) -> Result<Option<(Buf, Expr, Expr)>, ScheduleError> {
    let (plan, node, fa) = (site.plan, site.node, site.f_axis());
    let Some(key_axis) = direct_read(cx, site) else { return Ok(None) };
    let range = cx.ranges.get(plan.head.name.as_str()).cloned();
    let f0 = cx.b.let_("f0", tile.f0.clone());
    let key = (plan.head.slot, m0, range);
    Ok(Some(panel_at(cx, site.d, plan.v, key_axis, key, (site.slots[fa], f0, Some(node.shape[fa].clone())))?))
}

/// The key's axis when the value is a read [`direct_panel`] can use in place ([`panel_read`],
/// its subscripts free of the tile index too).
fn direct_read(cx: &Cx<'_>, site: &Site<'_, '_>) -> Option<usize> {
    let (plan, fa) = (site.plan, site.f_axis());
    let key = (plan.head.slot, plan.head.name.as_str());
    panel_read(cx, site.d, plan.v, key, (site.slots[fa], site.node.indices[fa].as_str()), &[site.slots[plan.tile]])
}

/// Packs the block's values: `vp[j, f] = v(m0 + j, f)` (rows of `FMAX`: any index map, gather
/// or widening of `V` is absorbed here). When `v` may fail or be absent (not `pure_v`), key `j`
/// is packed only if some row of the tile has weight there (else its row of `vp` is 0): `v`
/// does not read the tile index, so that is exactly where the interpreter evaluates it.
fn pack_values(cx: &mut Cx<'_>, site: &Site<'_, '_>, tile: &Tile, m0: Var, nm: Var, pure_v: bool) -> Result<Buf, ScheduleError> {
    let (plan, node, fa) = (site.plan, site.node, site.f_axis());
    let fmax = e::i64(i64::from(FMAX));
    let vp = cx.b.buf(&format!("{}.vp", node.name), Ty::F32, BufKind::Stack(tile.tm * FMAX));
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let m = cx.b.let_("m", e::add(e::var(m0), e::var(j)));
    let range = cx.ranges.get(plan.head.name.as_str()).cloned();
    let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range });
    if !pure_v {
        let live = cx.b.let_("live", e::bool(false));
        let i = cx.b.open_for("i", e::i64(0), e::var(tile.nt));
        cx.b.set(live, e::bin(K::Or, e::var(live), e::bin(K::Ne, e::load(tile.sb, tile.srow(i, e::var(j))), tile.c(0.0))));
        cx.b.close();
        cx.b.open_if(e::var(live));
    }
    let f = cx.b.open_for("f", e::i64(0), tile.fsize.clone());
    let fcol = cx.b.let_("fcol", e::add(tile.f0.clone(), e::var(f)));
    let old_f = cx.bind(site.slots[fa], IdxVar { var: fcol, range: Some(node.shape[fa].clone()) });
    let val = cx.lower_as(site.d, plan.v, Ty::F32)?;
    cx.b.store(vp, e::add(e::mul(e::var(j), fmax.clone()), e::var(f)), val);
    cx.b.close();
    cx.unbind(site.slots[fa], old_f);
    if !pure_v {
        cx.b.open_else();
        let f = cx.b.open_for("f", e::i64(0), tile.fsize.clone());
        cx.b.store(vp, e::add(e::mul(e::var(j), fmax.clone()), e::var(f)), e::num(Ty::F32, 0.0));
        cx.b.close();
        cx.b.close();
    }
    cx.b.close();
    cx.unbind(plan.head.slot, old_m);
    Ok(vp)
}

/// [`accumulate`] as tile products (an `f32` state): the block's values as a dense panel (`V`
/// itself where [`direct_panel`] can read it in place, else packed by [`pack_values`]), then
/// each micro-tile of rows adds `w · panel` to its accumulator rows, [`TILE_MAX_COLS`] columns
/// of `f` at a time, the tile in registers.
fn accumulate_tiles(cx: &mut Cx<'_>, site: &Site<'_, '_>, tile: &Tile, m0: Var, nm: Var, pure_v: bool) -> Result<(), ScheduleError> {
    let (b, b0, ldb) = match (&tile.panel, direct_panel(cx, site, tile, m0)?) {
        (_, Some(panel)) => panel,
        (Some(p), None) => {
            let at = e::add(e::add(e::mul(e::var(tile.outer), p.plane.clone()), e::mul(e::var(m0), p.row.clone())), tile.f0.clone());
            (p.buf, at, p.row.clone())
        }
        (None, None) => (pack_values(cx, site, tile, m0, nm, pure_v)?, e::i64(0), e::i64(i64::from(FMAX))),
    };
    let fmax = e::i64(i64::from(FMAX));
    let tmx = e::i64(i64::from(tile.tm));
    let cw = e::i64(i64::from(TILE_MAX_COLS));
    row_tiles(cx, tile, |cx, r0, mrows| {
        let chunks = e::bin(K::Div, e::add(tile.fsize.clone(), e::i64(i64::from(TILE_MAX_COLS) - 1)), cw.clone());
        let fc = cx.b.open_for("f.chunk", e::i64(0), chunks);
        let f0 = e::mul(e::var(fc), cw.clone());
        cx.b.emit(Stmt::TileProduct(Box::new(TileProduct {
            m: mrows,
            n: TILE_MAX_COLS,
            cols: e::sub(tile.fsize.clone(), f0.clone()),
            k: e::var(nm),
            a: tile.sb,
            a0: if tile.key_major { r0.clone() } else { e::mul(r0.clone(), tmx.clone()) },
            lda: if tile.key_major { e::i64(1) } else { tmx.clone() },
            ka: if tile.key_major { e::i64(i64::from(tile.tp)) } else { e::i64(1) },
            b,
            b0: e::add(b0.clone(), f0.clone()),
            ldb: ldb.clone(),
            c: tile.acc,
            c0: e::add(e::mul(r0, fmax.clone()), f0),
            ldc: fmax.clone(),
            init: TileInit::Load,
            op: TileOp::Mul,
        })));
        cx.b.close();
    });
    Ok(())
}

/// The rows' outputs: `acc / sum` (with a sink `c`: `acc / (sum + exp(c - max))`), NaN for a
/// row whose every point's logit was -inf.
fn write_rows(cx: &mut Cx<'_>, site: &Site<'_, '_>, tile: &mut Tile) -> Result<(), ScheduleError> {
    let (ta, fa) = (site.plan.tile, site.f_axis());
    let (i, old_t) = tile.open_rows(cx, site);
    tile.idx[ta] = Some(e::add(e::var(tile.t0), e::var(i)));
    let (nan, lrow) = if site.plan.norm == Norm::Softmax {
        let nan = e::bin(K::And, e::load(tile.any, e::var(i)), e::bin(K::Eq, e::load(tile.mx, e::var(i)), tile.c(f64::NEG_INFINITY)));
        let l = super::site::softmax_den(cx, site, tile.ty, e::load(tile.sum, e::var(i)), e::load(tile.mx, e::var(i)))?;
        (cx.b.let_("all_neg_inf", nan), cx.b.let_("l", l))
    } else {
        // A plain sum: the accumulator is the output (`acc / 1`, never NaN by the rule).
        (cx.b.let_("all_neg_inf", e::bool(false)), cx.b.let_("l", tile.c(1.0)))
    };
    // The definition around a subterm: what it evaluates but does not depend on the column
    // for (a row's normaliser) once per row, as the generic plan would.
    let hoisted = match site.epilogue {
        Some(_) => {
            let nonempty = e::bin(K::Gt, tile.fsize.clone(), e::i64(0));
            Some(hoist(cx, site.d, &[site.d.root()], site.slots[fa], Some(nonempty))?)
        }
        None => None,
    };
    let f3 = cx.b.open_for("f", e::i64(0), tile.fsize.clone());
    tile.idx[fa] = Some(e::add(tile.f0.clone(), e::var(f3)));
    let num = e::load(tile.acc, tile.acc_at(i, f3));
    super::site::store_output(cx, site, &tile.idx, tile.ty, RowValue { num, den: e::var(lrow), nan }, "attention plan")?;
    cx.b.close(); // columns
    if let Some(h) = hoisted {
        cx.subst.truncate(h);
    }
    cx.unbind(site.slots[ta], old_t);
    Ok(())
}
