//! Masked prefix sum → scan: `Σ_{m < min(H, p + 1)} x(m)` (after filters became bounds, a
//! causal `sum[m where m <= p]`) with `x` and the filter free of `p` is a running sum along
//! `p`. The subterm becomes a read of a new scan tensor
//! `Pre[.., p, ..] = scan p init 0 (prev + (if p < H && F(p) then x(p) else 0))` over the
//! subterm's free indices — O(P) work instead of O(P·M) (causal linear attention's state).
//!
//! Conditions: `lo` is 0; `hi` is `p + 1` or `min(H, p + 1)` with `H` free of `p`; `x` and the
//! filter are free of `p`, have no `where` (always present) and bind no index named `p`; the
//! consuming node is float. The new node is placed right before its reader; it accumulates in
//! `f32` (`f64` for an `f64` reader: [`scan_dtype`]).

use super::inline::free_names;
use crate::ir::lang::{Const, Tfm};
use crate::ir::{Cascade, Def, Node, Role};
use egg::{Id, Language, RecExpr, Symbol};
use petgraph::graph::NodeIndex;
use std::collections::BTreeSet;

/// Replaces every masked prefix sum in `c` by a read of a new scan node.
pub fn prefix_scans(c: &Cascade) -> Cascade {
    scan_rewrites(c, |out, ix, e, n| {
        let found = find(e)?;
        let name = format!("{}.prefix{n}", out.graph[ix].name);
        let lhs = out.graph[ix].indices.clone();
        let dtype = scan_dtype(out.graph[ix].dtype);
        let (node, read) = build(out, e, &found, &name, &lhs, dtype);
        Some((node, found.at, read))
    })
}

/// The element type of a scan that replaces a sum read by a node of type `reader`: `f32` at
/// least (a bf16 reader would otherwise sum in bf16), `f64` for an `f64` reader. An `f32` node's
/// reductions accumulate in `f32` on every plan, and so does the running sum that replaces one.
pub(super) fn scan_dtype(reader: crate::hir::DType) -> crate::hir::DType {
    if reader == crate::hir::DType::F64 { crate::hir::DType::F64 } else { crate::hir::DType::F32 }
}

/// The driver of the passes that turn a subterm into a read of a new node: over the float
/// expression nodes in order, `step(cascade, node, its expression, n)` (`n` counts the new
/// nodes from 1) gives the new node, the subterm to replace and the read that replaces it; the
/// new node goes right before its reader, and the walk starts again until no step applies.
pub(super) fn scan_rewrites(
    c: &Cascade,
    mut step: impl FnMut(&mut Cascade, NodeIndex, &RecExpr<Tfm>, usize) -> Option<(Node, Id, RecExpr<Tfm>)>,
) -> Cascade {
    let mut out = c.clone();
    let mut counter = 0;
    'again: loop {
        for pos in 0..out.order.len() {
            let ix = out.order[pos];
            let Def::Expr(e) = out.graph[ix].def.clone() else { continue };
            if !out.graph[ix].dtype.is_float() {
                continue;
            }
            let Some((node, at, read)) = step(&mut out, ix, &e, counter + 1) else { continue };
            counter += 1;
            out.graph[ix].def = Def::Expr(replace(&e, at, &read));
            let nix = out.graph.add_node(node);
            out.order.insert(pos, nix);
            continue 'again;
        }
        break;
    }
    out.relink();
    out
}

/// A prefix sum found in an expression.
struct Found {
    /// The `sum` node.
    at: Id,
    /// Its index name (`m`).
    m: String,
    /// The scanned index (`p`).
    p: String,
    /// `H` of `min(H, p + 1)`, if any.
    cap: Option<Id>,
    /// The filter and the body.
    filter: Id,
    body: Id,
}

/// The name of symbol node `id`.
pub(super) fn sym(e: &RecExpr<Tfm>, id: Id) -> Option<String> {
    match &e[id] {
        Tfm::Symbol(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// The index name of `(idx i)` node `id`.
pub(super) fn idx_name(e: &RecExpr<Tfm>, id: Id) -> Option<String> {
    match &e[id] {
        Tfm::Idx(s) => sym(e, *s),
        _ => None,
    }
}

/// `Some(p)` if `id` is `(+ (idx p) 1)`.
fn p_plus_one(e: &RecExpr<Tfm>, id: Id) -> Option<String> {
    match &e[id] {
        Tfm::Add([a, b]) if matches!(e[*b], Tfm::Const(Const::Int(1))) => idx_name(e, *a),
        _ => None,
    }
}

/// True if the subterm at `id` has a `where` or a reduction binding an index named `p`.
pub(super) fn has_where_or_binder(e: &RecExpr<Tfm>, id: Id, p: &str) -> bool {
    let node = &e[id];
    if matches!(node, Tfm::Where(_)) {
        return true;
    }
    if let Some([i, ..]) = node.reduction_head()
        && sym(e, i).as_deref() == Some(p)
    {
        return true;
    }
    node.children().iter().any(|c| has_where_or_binder(e, *c, p))
}

fn find(e: &RecExpr<Tfm>) -> Option<Found> {
    for (k, node) in e.as_ref().iter().enumerate() {
        let Tfm::Sum([i, lo, hi, f, body]) = node else { continue };
        if !matches!(e[*lo], Tfm::Const(Const::Int(0))) {
            continue;
        }
        let (p, cap) = match &e[*hi] {
            Tfm::Call(ch) if ch.len() == 3 && sym(e, ch[0]).as_deref() == Some("min") => match p_plus_one(e, ch[2]) {
                Some(p) => (p, Some(ch[1])),
                None => continue,
            },
            _ => match p_plus_one(e, *hi) {
                Some(p) => (p, None),
                None => continue,
            },
        };
        let Some(m) = sym(e, *i) else { continue };
        if m == p {
            continue;
        }
        let mut free = BTreeSet::new();
        free_names(e, *body, &mut free);
        free_names(e, *f, &mut free);
        if let Some(cap) = cap {
            free_names(e, cap, &mut free);
        }
        if free.contains(&p) || has_where_or_binder(e, *body, &p) || has_where_or_binder(e, *f, &p) {
            continue;
        }
        return Some(Found { at: Id::from(k), m, p, cap, filter: *f, body: *body });
    }
    None
}

/// Copies subterm `id` of `e` into `out`, replacing free `(idx from)` by `(idx to)`.
fn copy_subst(out: &mut RecExpr<Tfm>, e: &RecExpr<Tfm>, id: Id, from: &str, to: &str) -> Id {
    let node = &e[id];
    if let Tfm::Idx(s) = node
        && sym(e, *s).as_deref() == Some(from)
    {
        let t = out.add(Tfm::Symbol(Symbol::from(to)));
        return out.add(Tfm::Idx(t));
    }
    // Under a binder of `from`, occurrences are the binder's own: copy without substitution.
    let shadowed = node.reduction_head().is_some_and(|[i, ..]| sym(e, i).as_deref() == Some(from));
    let mut n = node.clone();
    let head = node.reduction_head();
    for c in n.children_mut() {
        let is_bound_part = shadowed && head.is_some_and(|[i, lo, hi, _]| *c != i && *c != lo && *c != hi);
        *c = if is_bound_part { copy_subst(out, e, *c, "\u{0}", "\u{0}") } else { copy_subst(out, e, *c, from, to) };
    }
    out.add(n)
}

fn build(c: &Cascade, e: &RecExpr<Tfm>, f: &Found, name: &str, lhs: &[String], dtype: crate::hir::DType) -> (Node, RecExpr<Tfm>) {
    // The new tensor's indices: the prefix sum's free indices, `p` included, laid out for
    // its reader: the reader's left-hand indices in the reader's order, then the rest (indices
    // the reader reduces over), then the reader's last index innermost. The reader contracts
    // the state with a row along its last index (`O[.., f] = Σ_e q[e] · S[.., e, f]`): the
    // fused plan runs that as a vector–matrix product reading rows of `f`.
    let mut free = BTreeSet::new();
    free_names(e, f.at, &mut free);
    let mut indices: Vec<String> = free.into_iter().collect();
    let last = lhs.last().filter(|_| lhs.len() > 1);
    indices.sort_by_key(|i| match lhs.iter().position(|l| l == i) {
        Some(_) if Some(i) == last => usize::MAX,
        Some(k) => k,
        None => usize::MAX - 1,
    });
    let shape = indices.iter().map(|i| c.range(i).cloned().unwrap_or(crate::ir::Size::Fixed(1))).collect();
    // body: prev + (if p < H && F(p) then x(p) else 0)
    let mut b = RecExpr::default();
    let tsym = b.add(Tfm::Symbol(Symbol::from(name)));
    let one = b.add(Tfm::Const(Const::Int(1)));
    let prev = b.add(Tfm::Prev([tsym, one]));
    let x = copy_subst(&mut b, e, f.body, &f.m, &f.p);
    let filt = copy_subst(&mut b, e, f.filter, &f.m, &f.p);
    let psym = b.add(Tfm::Symbol(Symbol::from(f.p.as_str())));
    let pidx = b.add(Tfm::Idx(psym));
    let filter_is_true = matches!(b[filt], Tfm::Const(Const::Bool(true)));
    let cond = match f.cap {
        Some(cap) => {
            let h = copy_subst(&mut b, e, cap, &f.m, &f.p);
            let lt = b.add(Tfm::Lt([pidx, h]));
            if filter_is_true { lt } else { b.add(Tfm::And([lt, filt])) }
        }
        None => filt,
    };
    let zero = b.add(Tfm::Const(Const::float(0.0)));
    let step = b.add(Tfm::If([cond, x, zero]));
    b.add(Tfm::Add([prev, step]));
    let mut init = RecExpr::default();
    init.add(Tfm::Const(Const::float(0.0)));
    let node = Node {
        name: name.to_string(),
        dtype,
        shape,
        indices: indices.clone(),
        role: Role::Local,
        def: Def::Scan { index: f.p.clone(), init, body: b },
    };
    // The read that replaces the prefix sum.
    let mut read = RecExpr::default();
    let t = read.add(Tfm::Symbol(Symbol::from(name)));
    let mut ch = vec![t];
    for i in &indices {
        let s = read.add(Tfm::Symbol(Symbol::from(i.as_str())));
        ch.push(read.add(Tfm::Idx(s)));
    }
    read.add(Tfm::Read(ch.into_boxed_slice()));
    (node, read)
}

/// `e` with subterm `at` replaced by `with`.
pub(super) fn replace(e: &RecExpr<Tfm>, at: Id, with: &RecExpr<Tfm>) -> RecExpr<Tfm> {
    let mut out = RecExpr::default();
    let mut map: Vec<Id> = Vec::with_capacity(e.as_ref().len());
    for (k, node) in e.as_ref().iter().enumerate() {
        let id = if Id::from(k) == at {
            let mut inner: Vec<Id> = Vec::new();
            for n in with.as_ref() {
                let n2 = n.clone().map_children(|c| inner[usize::from(c)]);
                inner.push(out.add(n2));
            }
            // A non-empty replacement always has a root.
            *inner.last().expect("replacement has a root")
        } else {
            out.add(node.clone().map_children(|c| map[usize::from(c)]))
        };
        map.push(id);
    }
    out
}
