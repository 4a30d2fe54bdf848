//! What every attention plan's emitter shares: the node being planned ([`Site`]), the plan
//! limits ([`FMAX`], [`EMAX`], [`PACKED_MIN_ROWS`]), and the store of a softmax row's output
//! element ([`store_output`]). The plan files (`cpu`, `split_k`, `tensor_core`, `gpu`) import
//! this file, `analysis` and `dialect`, and each other only in that order, so there is no
//! import circle among them (`compiler/tests/layering.rs` checks it).

use super::super::ScheduleError;
use super::super::build::e;
use super::super::kir::{Buf, Expr, Ty, Var};
use super::super::lower::{Cx, Def, IdxVar, vty};
use super::analysis::{Plan, uses};
use crate::ir::Node;
use crate::ir::eval::compile::Op;
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
    let old = cx.bind(site.slots[fa], IdxVar { var: col, range: Some(node.shape[fa].clone()) });
    cx.subst.push((part, e::var(value)));
    let x = cx.lower_as(site.d, site.d.root(), vty(node.dtype));
    cx.subst.pop();
    cx.unbind(site.slots[fa], old);
    cx.b.store(buf, e::var(flat), x?);
    Ok(())
}

/// The axis of the tensor that index slot `key` subscripts, when op `y` is an `f32` read that a
/// tile product can use in place as its `B` panel along columns at index slot `col`: `col`
/// alone in the last subscript (stride 1), `key` alone in exactly one other, every other
/// subscript free of `key`, `col` and the slots `free`, no presence, and `key` and `col` (by
/// their names' ranges) running over exactly the tensor's dims there, so every element of the
/// panel is in bounds.
pub(in super::super) fn panel_read(
    cx: &Cx<'_>,
    d: Def<'_>,
    y: Id,
    (key, key_name): (usize, &str),
    (col, col_name): (usize, &str),
    free: &[usize],
) -> Option<usize> {
    let Op::Read { tensor, subs } = &d.ops[usize::from(y)] else { return None };
    let t = cx.tensors.get(*tensor)?;
    let is_idx = |s: Id, slot: usize| matches!(d.ops[usize::from(s)], Op::Idx(x) if x == slot);
    let (&last, rest) = subs.split_last()?;
    let key_axes: Vec<usize> = (0..rest.len()).filter(|&a| is_idx(rest[a], key)).collect();
    let others_free =
        (0..rest.len()).filter(|a| !key_axes.contains(a)).all(|a| [key, col].iter().chain(free).all(|&slot| !uses(d.ops, rest[a], slot)));
    let over = |axis: usize, name: &str| cx.ranges.contains_key(name) && cx.ranges.get(name) == t.sizes.get(axis);
    let plain = is_idx(last, col)
        && key_axes.len() == 1
        && over(key_axes[0], key_name)
        && over(rest.len(), col_name)
        && others_free
        && t.present.is_none()
        && t.strides.last() == Some(&e::i64(1))
        && cx.b.elem(t.buf) == Ty::F32;
    if plain { key_axes.first().copied() } else { None }
}

/// Where the panel of read `y` ([`panel_read`] found its key at `key_axis`) starts with the key
/// at `key.1` and the column at `col.1` (each index bound by slot, variable and range while `y`
/// is lowered): `(buffer, index, stride between the panel's rows)`.
pub(in super::super) fn panel_at(
    cx: &mut Cx<'_>,
    d: Def<'_>,
    y: Id,
    key_axis: usize,
    key: (usize, Var, Option<crate::ir::Size>),
    col: (usize, Var, Option<crate::ir::Size>),
) -> Result<(Buf, Expr, Expr), ScheduleError> {
    let Op::Read { tensor, .. } = &d.ops[usize::from(y)] else { return Err(cx.internal("a panel that is not a read")) };
    let t = &cx.tensors[*tensor];
    let (buf, ldb) = (t.buf, t.strides[key_axis].clone());
    let old_k = cx.bind(key.0, IdxVar { var: key.1, range: key.2 });
    let old_c = cx.bind(col.0, IdxVar { var: col.1, range: col.2 });
    let val = cx.lower_as(d, y, Ty::F32);
    cx.unbind(col.0, old_c);
    cx.unbind(key.0, old_k);
    match val? {
        Expr::Load { buf: got, index } if got == buf => Ok((buf, *index, ldb)),
        _ => Err(cx.internal("a plain read did not lower to a load")),
    }
}
