//! What the generic plan ([`super::nodes`]) and the attention plans ([`super::attention`])
//! share about a node: its axes as [`Cx::bind_flat`] takes them (and a parallel loop over some
//! of them: [`open_parallel_axes`]), checked element counts of
//! the locals they allocate, and which ops may have absent points. Depends on the lowering
//! context only, so the plans import it and not each other.

use egg::Id;

use super::build::e;
use super::kir::{BinOp as K, Expr, FailKind};
use super::lower::{Cx, Saved, children};
use crate::ir::Node;
use crate::ir::eval::compile::Op;

/// The node's indices at positions `which` as [`Cx::bind_flat`] takes them: slot, name,
/// run-time extent (from `shape`) and declared range.
pub(super) fn node_axes<'n>(
    node: &'n Node,
    slots: &[usize],
    shape: &[Expr],
    which: &[usize],
) -> Vec<(usize, &'n str, Expr, crate::ir::Size)> {
    which.iter().map(|&a| (slots[a], node.indices[a].as_str(), shape[a].clone(), node.shape[a].clone())).collect()
}

/// Opens a parallel loop named `name` over the points of `node`'s axes `axes` (no loop when
/// there are none) and binds them; returns the value of each of the node's axes (`None` for
/// those not in `axes`) and the bindings to restore.
pub(super) fn open_parallel_axes(
    cx: &mut Cx<'_>,
    node: &Node,
    slots: &[usize],
    shape: &[Expr],
    axes: &[usize],
    name: &str,
) -> (Vec<Option<Expr>>, Saved) {
    let mut vars: Vec<Option<Expr>> = vec![None; slots.len()];
    if axes.is_empty() {
        return (vars, Vec::new());
    }
    let mut n = e::i64(1);
    for &a in axes {
        n = e::mul(n, shape[a].clone());
    }
    let q = cx.b.open_parallel(name, n);
    let (vals, saved) = cx.bind_flat(e::var(q), &node_axes(node, slots, shape, axes));
    for (&a, v) in axes.iter().zip(vals) {
        vars[a] = Some(v);
    }
    (vars, saved)
}

/// The element count of a local, failing with `OutOfMemory` when it overflows `i64`.
pub(super) fn checked_len(cx: &mut Cx<'_>, shape: &[Expr], name: &str) -> Expr {
    let mut len = e::i64(1);
    for s in shape {
        let ovf = e::bin(K::MulOverflows, len.clone(), s.clone());
        if !cx.within(&e::mul(len.clone(), s.clone()), 0, i64::MAX as i128) {
            cx.b.fail_if(ovf, FailKind::OutOfMemory, format!("local tensor '{name}' has too many elements"));
        }
        len = e::var(cx.b.let_(&format!("{name}.len"), e::mul(len, s.clone())));
    }
    len
}

/// True if op `id` may have no point (conservative); `partial` says which tensors may
/// miss points, `prev_absent` whether a scan's look-back may.
pub(super) fn may_absent(ops: &[Op], id: Id, partial: &[bool], prev_absent: bool) -> bool {
    // One pass, children before parents, so shared subterms are visited once.
    let mut absent = vec![false; usize::from(id) + 1];
    for i in 0..absent.len() {
        let v = match &ops[i] {
            Op::Read { tensor, .. } if partial.get(*tensor).copied().unwrap_or(true) => true,
            Op::Dense { .. } | Op::Reduce { .. } | Op::URed { .. } | Op::Osm { .. } => false,
            Op::Where { .. } => true,
            Op::Prev { .. } => prev_absent,
            op => children(op).into_iter().any(|c| absent[usize::from(c)]),
        };
        absent[i] = v;
    }
    absent[usize::from(id)]
}
