//! Emitting the tiled attention plan (see the parent module): the tile skeleton shared by
//! both variants, the packed variant's pre-pass and `S` tile, and the natural variant's
//! per-logit evaluation.

use super::super::ScheduleError;
use super::super::arith::exp;
use super::super::build::e;
use super::super::common::{checked_len, node_axes};
use super::super::kir::{BinOp as K, Buf, BufKind, Expr, Stmt, Ty, Var};
use super::super::lower::{Cx, Def, IdxVar, vty};
use super::{Dot, EMAX, FMAX, PACKED_MIN_ROWS, Plan};
use crate::ir::Node;

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

/// The node and its plan, for the emitters.
struct Site<'a, 'o> {
    node: &'a Node,
    slot: usize,
    slots: &'a [usize],
    d: Def<'o>,
    plan: &'a Plan,
    tp: u32,
    tm: u32,
}

/// Emits the plan for `node`: the packed variant when it applies at run time, else the
/// natural one.
#[allow(clippy::too_many_arguments)]
pub(in super::super) fn emit(
    cx: &mut Cx<'_>,
    node: &Node,
    slot: usize,
    slots: &[usize],
    d: Def<'_>,
    plan: &Plan,
    tp: u32,
    tm: u32,
) -> Result<(), ScheduleError> {
    let site = Site { node, slot, slots, d, plan, tp, tm };
    let Some(dot) = &plan.dot else { return tiles(cx, &site, None) };
    let t = cx.tensors[slot].clone();
    let Some(esize) = dot_extent(cx, d, dot) else { return tiles(cx, &site, None) };
    let rows = t.shape[plan.tile].clone();
    let ok = e::bin(K::And, e::bin(K::Ge, rows, e::i64(PACKED_MIN_ROWS)), e::bin(K::Le, esize.clone(), e::i64(i64::from(EMAX))));
    cx.b.open_if(ok);
    let packed = prepass(cx, &site, dot, esize)?;
    tiles(cx, &site, Some(&packed))?;
    cx.b.open_else();
    tiles(cx, &site, None)?;
    cx.b.close();
    Ok(())
}

/// The contracted extent (`hi` of the dot's head, a dim).
fn dot_extent(cx: &Cx<'_>, d: Def<'_>, dot: &Dot) -> Option<Expr> {
    match &d.ops[usize::from(dot.head.hi)] {
        crate::ir::eval::compile::Op::Dim(name) => cx.dims.get(name.as_str()).map(|v| e::var(*v)),
        _ => None,
    }
}

fn others(site: &Site<'_, '_>) -> Vec<usize> {
    let k = site.slots.len();
    (0..k - 1).filter(|&a| a != site.plan.tile).collect()
}

/// The packed variant's pre-pass: `Bᵀ[o, e, m] = Π b(o, e, m)` for every other-index point
/// `o`, key `m` and contracted `e`, in a heap buffer with rows padded to `M + TM` keys.
fn prepass<'p>(cx: &mut Cx<'_>, site: &Site<'_, '_>, dot: &'p Dot, esize: Expr) -> Result<Packed<'p>, ScheduleError> {
    let node = site.node;
    let t = cx.tensors[site.slot].clone();
    let range = cx.ranges.get(site.plan.head.name.as_str()).cloned().ok_or_else(|| cx.internal("the key index has no range"))?;
    let msize = cx.size(&range)?;
    let mp = e::var(cx.b.let_("kt.row", e::add(msize.clone(), e::i64(i64::from(site.tm)))));
    let mut shape: Vec<Expr> = others(site).iter().map(|&a| t.shape[a].clone()).collect();
    shape.push(esize.clone());
    shape.push(mp.clone());
    let len = checked_len(cx, &shape, &format!("{}.kt", node.name));
    let kt = cx.b.buf(&format!("{}.kt", node.name), Ty::F32, BufKind::Heap);
    cx.b.emit(Stmt::Alloc { buf: kt, len });
    let mark = cx.b.mark();
    let mut n = e::i64(1);
    for &a in &others(site) {
        n = e::mul(n, t.shape[a].clone());
    }
    let q = cx.b.open_parallel(&format!("{}.pack", node.name), n);
    let (_, saved) = cx.bind_flat(e::var(q), &node_axes(node, site.slots, &t.shape, &others(site)));
    let base = e::var(cx.b.let_("kt.base", e::mul(e::mul(e::var(q), esize.clone()), mp.clone())));
    let m = cx.b.open_for(site.plan.head.name.as_str(), e::i64(0), msize);
    let old_m = cx.bind(site.plan.head.slot, IdxVar { var: m, range: Some(range) });
    let erange = cx.ranges.get(dot.head.name.as_str()).cloned();
    let ev = cx.b.open_for(dot.head.name.as_str(), e::i64(0), esize);
    let old_e = cx.bind(dot.head.slot, IdxVar { var: ev, range: erange });
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

/// The tile loop nest of one variant.
fn tiles(cx: &mut Cx<'_>, site: &Site<'_, '_>, packed: Option<&Packed<'_>>) -> Result<(), ScheduleError> {
    let Site { node, slot, slots, d, plan, tp, tm } = *site;
    let t = cx.tensors[slot].clone();
    // Online-softmax state in f32, or f64 for f64 outputs.
    let ty = if vty(node.dtype) == Ty::F64 { Ty::F64 } else { Ty::F32 };
    let c = |x: f64| e::num(ty, x);
    let k = slots.len();
    let (fa, ta) = (k - 1, plan.tile);
    let others: Vec<usize> = (0..k - 1).filter(|&a| a != ta).collect();
    let mark = cx.b.mark();
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
    // The other indices' flat point (also the row of Bᵀ the packed variant reads).
    let outer = cx.b.let_("outer", e::bin(K::Div, e::var(q), ntiles));
    let (vals, saved) = cx.bind_flat(e::var(outer), &node_axes(node, slots, &t.shape, &others));
    for (&a, v) in others.iter().zip(vals) {
        idx[a] = Some(v);
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
    // Packed: this tile's rows of A, and where its other-index point's Bᵀ starts.
    let pk = match packed {
        Some(p) => {
            let base = e::mul(e::mul(e::var(outer), p.e.clone()), p.mp.clone());
            let kbase = cx.b.let_("kt.base", base);
            let qt = stack(cx, "a", Ty::F32, tp * EMAX);
            let i = cx.b.open_for("i", e::i64(0), e::var(nt));
            let row = cx.b.let_(&node.indices[ta], e::add(e::var(t0), e::var(i)));
            let old_t = cx.bind(slots[ta], IdxVar { var: row, range: Some(node.shape[ta].clone()) });
            let erange = cx.ranges.get(p.dot.head.name.as_str()).cloned();
            let ev = cx.b.open_for(p.dot.head.name.as_str(), e::i64(0), p.e.clone());
            let old_e = cx.bind(p.dot.head.slot, IdxVar { var: ev, range: erange });
            let mut prod = e::num(Ty::F32, 1.0);
            for &a in &p.dot.a {
                let x = cx.lower_as(d, a, Ty::F32)?;
                prod = e::mul(prod, x);
            }
            cx.b.store(qt, e::add(e::mul(e::var(i), e::i64(i64::from(EMAX))), e::var(ev)), prod);
            cx.b.close();
            cx.b.close();
            cx.unbind(p.dot.head.slot, old_e);
            cx.unbind(slots[ta], old_t);
            Some((p, qt, kbase))
        }
        None => None,
    };
    // Per row: state and bounds.
    let mlo = cx.b.let_("mlo", e::i64(i64::MAX));
    let mhi = cx.b.let_("mhi", e::i64(i64::MIN));
    let i = cx.b.open_for("i", e::i64(0), e::var(nt));
    let row = cx.b.let_(&node.indices[ta], e::add(e::var(t0), e::var(i)));
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
    if let Some((p, qt, kbase)) = &pk {
        // The dot-product tile: S[i, j] = Σ_e A[i, e] · Bᵀ[e, m0 + j] (keys past the block
        // read the padding; they are masked below).
        let tmx = e::i64(i64::from(tm));
        let i = cx.b.open_for("i", e::i64(0), e::var(nt));
        let j = cx.b.open_for("j", e::i64(0), tmx.clone());
        cx.b.store(sb, e::add(e::mul(e::var(i), tmx.clone()), e::var(j)), e::num(Ty::F32, 0.0));
        cx.b.close();
        cx.b.close();
        let ev = cx.b.open_for("e", e::i64(0), p.e.clone());
        let krow = cx.b.let_("krow", e::add(e::add(e::var(*kbase), e::mul(e::var(ev), p.mp.clone())), e::var(m0)));
        let i = cx.b.open_for("i", e::i64(0), e::var(nt));
        let a = cx.b.let_("a", e::load(*qt, e::add(e::mul(e::var(i), e::i64(i64::from(EMAX))), e::var(ev))));
        let j = cx.b.open_for("j", e::i64(0), tmx.clone());
        let at = e::add(e::mul(e::var(i), tmx.clone()), e::var(j));
        let kv = e::load(p.kt, e::add(e::var(krow), e::var(j)));
        cx.b.store(sb, at.clone(), e::add(e::load(sb, at), e::mul(e::var(a), kv)));
        cx.b.close();
        cx.b.close();
        cx.b.close();
    }
    let i = cx.b.open_for("i", e::i64(0), e::var(nt));
    let row = cx.b.let_(&node.indices[ta], e::add(e::var(t0), e::var(i)));
    cx.bind(slots[ta], IdxVar { var: row, range: Some(node.shape[ta].clone()) });
    let (rlo, rhi) = (cx.b.let_("lo", e::load(lo, e::var(i))), cx.b.let_("hi", e::load(hi, e::var(i))));
    let bmax = cx.b.let_("bmax", c(f64::NEG_INFINITY));
    let anyrow = cx.b.let_("anyrow", e::load(any, e::var(i)));
    let srow = |i: Var, j: Expr| e::add(e::mul(e::var(i), e::i64(i64::from(tm))), j);
    // Logits.
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let m = cx.b.let_("m", e::add(e::var(m0), e::var(j)));
    let range = cx.ranges.get(plan.head.name.as_str()).cloned();
    let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range });
    let sv = cx.b.let_("logit", c(f64::NEG_INFINITY));
    let inside = e::bin(K::And, e::bin(K::Ge, e::var(m), e::var(rlo)), e::bin(K::Lt, e::var(m), e::var(rhi)));
    if let Some((p, _, _)) = &pk {
        let tile_value = e::load(sb, srow(i, e::var(j)));
        let tile_value = if ty == Ty::F32 { tile_value } else { e::cast(ty, tile_value) };
        cx.subst = vec![(p.dot.id, tile_value)];
    }
    if plan.pure_logit && (pk.is_some() || plan.dot.is_none()) {
        // Nothing in the logit can fail or be absent: mask with a select (vectorizes).
        let valid = cx.b.let_("valid", inside);
        let x = cx.lower_as(d, plan.s, ty)?;
        cx.b.set(sv, e::select(e::var(valid), x, c(f64::NEG_INFINITY)));
        cx.b.set(anyrow, e::bin(K::Or, e::var(anyrow), e::var(valid)));
    } else {
        cx.b.open_if(inside);
        let ok = cx.holds(d, plan.head.filter)?;
        cx.b.open_if(ok);
        let x = cx.lower_as(d, plan.s, ty)?;
        cx.b.set(sv, x);
        cx.b.set(anyrow, e::bool(true));
        cx.b.close();
        cx.b.close();
    }
    cx.subst.clear();
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
    cx.b.open_else();
    // A row with no live point this block: its weights are 0.
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    cx.b.store(sb, srow(i, e::var(j)), c(0.0));
    cx.b.close();
    cx.b.close(); // if mnew live
    cx.b.close(); // rows
    cx.unbind(plan.head.slot, old_m);
    // acc[i] += w[i, j] · v(m0 + j): keys outer, rows inner, so consecutive updates go to
    // different accumulator rows (no store-to-load chain) and v's row is reused by all rows.
    let pure_v = super::pure(d, plan.v, None);
    let j = cx.b.open_for("j", e::i64(0), e::var(nm));
    let m = cx.b.let_("m", e::add(e::var(m0), e::var(j)));
    let range = cx.ranges.get(plan.head.name.as_str()).cloned();
    let old_m = cx.bind(plan.head.slot, IdxVar { var: m, range });
    let i = cx.b.open_for("i", e::i64(0), e::var(nt));
    let w = cx.b.let_("w", e::load(sb, srow(i, e::var(j))));
    if !pure_v {
        // v is evaluated only where the interpreter would (a point with weight).
        cx.b.open_if(e::bin(K::Ne, e::var(w), c(0.0)));
    }
    let f2 = cx.b.open_for("f", e::i64(0), fsize.clone());
    let old_f = cx.bind(slots[fa], IdxVar { var: f2, range: Some(node.shape[fa].clone()) });
    let val = cx.lower_as(d, plan.v, ty)?;
    let at = e::add(e::mul(e::var(i), fmax.clone()), e::var(f2));
    cx.b.store(acc, at.clone(), e::add(e::load(acc, at), e::mul(e::var(w), val)));
    cx.b.close();
    cx.unbind(slots[fa], old_f);
    if !pure_v {
        cx.b.close();
    }
    cx.b.close(); // rows
    cx.b.close(); // keys
    cx.unbind(plan.head.slot, old_m);
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
    let num = e::load(acc, e::add(e::mul(e::var(i), fmax), e::var(f3)));
    super::store_output(cx, node, &t, &idx, ty, num, e::var(lrow), nan, "attention plan")?;
    cx.b.close_to(mark);
    cx.unbind(slots[ta], old_t);
    cx.restore(saved);
    Ok(())
}
