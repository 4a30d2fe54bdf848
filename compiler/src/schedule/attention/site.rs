//! What every attention plan's emitter shares: the node being planned ([`Site`]), the plan
//! limits ([`FMAX`], [`EMAX`], [`PACKED_MIN_ROWS`]), and the store of a softmax row's output
//! element ([`store_output`]). The plan files (`cpu`, `split_k`, `tensor_core`, `gpu`) import
//! this file, `analysis` and `dialect`, and each other only in that order, so there is no
//! import circle among them (`compiler/tests/layering.rs` checks it).

use super::super::ScheduleError;
use super::super::build::e;
use super::super::kir::{Expr, Ty, Var};
use super::super::lower::{Cx, Def, vty};
use super::analysis::Plan;
use crate::ir::Node;
use egg::Id;

/// The largest `f` extent the plan handles (the accumulator row is a stack array).
pub(crate) const FMAX: u32 = 256;

/// The largest contracted extent the packed variant handles (a tile's rows of `A`).
pub(crate) const EMAX: u32 = 256;

/// The packed variant runs when the tile index has at least this many rows.
pub(crate) const PACKED_MIN_ROWS: i64 = 16;

/// A node being given an attention plan: what every emitter of the plans reads.
#[derive(Clone, Copy)]
pub(in super::super) struct Site<'a, 'o> {
    /// The node.
    pub node: &'a Node,
    /// Its slot among the cascade's tensors (`cx.tensors[slot]`).
    pub slot: usize,
    /// The index slots of its indices, in order (the last is the output column `f`).
    pub slots: &'a [usize],
    /// Its definition.
    pub d: Def<'o>,
    /// What the analysis found.
    pub plan: &'a Plan,
    /// The plan computes a subterm of another node: `(its op, that node's tensor slot, the
    /// node)`. The output element is then that node's whole definition evaluated with the
    /// subterm's value (the rest is never absent: `nodes::parts_plan` checks), stored in that
    /// node's tensor, instead of the subterm's value in `slot`'s.
    pub epilogue: Option<(Id, usize, &'a Node)>,
}

impl Site<'_, '_> {
    /// Position of the output column `f` (the last index).
    pub fn f_axis(&self) -> usize {
        self.slots.len() - 1
    }

    /// Positions of the other indices: all but the tile index and `f`, in order.
    pub fn others(&self) -> Vec<usize> {
        (0..self.slots.len() - 1).filter(|&a| a != self.plan.tile).collect()
    }

    /// The online-softmax state's type: `f64` for an `f64` node, else `f32`.
    pub fn acc_ty(&self) -> Ty {
        if vty(self.node.dtype) == Ty::F64 { Ty::F64 } else { Ty::F32 }
    }
}

/// A softmax row's denominator: its sum of weights, plus `exp(c - max)` for an `osmz`'s sink
/// `c` (lowered here, with the row's indices bound: the sink reads neither the key nor the
/// output column).
pub(super) fn softmax_den(cx: &mut Cx<'_>, site: &Site<'_, '_>, ty: Ty, sum: Expr, max: Expr) -> Result<Expr, ScheduleError> {
    let Some(c) = site.plan.sink else { return Ok(sum) };
    let c = cx.lower_as(site.d, c, ty)?;
    Ok(e::add(sum, super::super::arith::exp(&mut cx.b, ty, e::sub(c, max))))
}

/// A softmax row's output element before the division: `num / den`, NaN where `nan`.
pub(super) struct RowValue {
    /// The accumulated weighted value.
    pub num: Expr,
    /// The row's sum of weights.
    pub den: Expr,
    /// True when every point's logit was -inf (the interpreter's NaN row).
    pub nan: Var,
}

/// Stores one output element of a softmax row: `num / den` (`0 / 0 = 0`), NaN where `nan`,
/// converted from the plan's `ty` to the node's dtype, at point `idx` of the node's tensor
/// (every index bound; `what` names the plan in the internal error otherwise).
pub(super) fn store_output(
    cx: &mut Cx<'_>,
    site: &Site<'_, '_>,
    idx: &[Option<Expr>],
    ty: Ty,
    v: RowValue,
    what: &str,
) -> Result<(), ScheduleError> {
    let slot = site.epilogue.map_or(site.slot, |(_, slot, _)| slot);
    let t = &cx.tensors[slot];
    let (buf, strides) = (t.buf, t.strides.clone());
    let mut flat = e::i64(0);
    for (a, x) in idx.iter().enumerate() {
        let x = x.clone().ok_or_else(|| cx.internal(&format!("an unbound index in the {what}")))?;
        flat = e::add(flat, e::mul(x, strides[a].clone()));
    }
    let o = e::select(e::var(v.nan), e::num(ty, f64::NAN), super::super::arith::fdiv(ty, v.num, v.den));
    let o = if vty(site.node.dtype) == ty { o } else { e::cast(vty(site.node.dtype), o) };
    let Some((part, _, node)) = site.epilogue else {
        cx.b.store(buf, flat, o);
        return Ok(());
    };
    // The node's definition around the subterm, at this point: every index bound (the output
    // column too, for the evaluation).
    let flat = cx.b.let_("at", flat);
    let value = cx.b.let_("part", o);
    let fa = site.f_axis();
    let col = idx[fa].clone().ok_or_else(|| cx.internal(&format!("an unbound column in the {what}")))?;
    let col = cx.b.let_(&node.indices[fa], col);
    let old = cx.bind(site.slots[fa], super::super::lower::IdxVar { var: col, range: Some(node.shape[fa].clone()) });
    cx.subst.push((part, e::var(value)));
    let x = cx.lower_as(site.d, site.d.root(), vty(node.dtype));
    cx.subst.pop();
    cx.unbind(site.slots[fa], old);
    cx.b.store(buf, e::var(flat), x?);
    Ok(())
}
