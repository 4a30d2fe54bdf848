//! The work model the optimizer and `tfmc explain` share: how often the schedule evaluates
//! each subterm of a cascade. A subterm is counted once per point of the loops around it up to
//! the innermost one it reads: the node's loops (all but the last run in parallel — a subterm
//! is evaluated at each of their points; the last is the inner loop, which invariant subterms
//! are hoisted out of, `schedule::hoist`), then the reductions on the way down (hoisted out of
//! too). A reduction the tiled plans take (`schedule::attention`: an `osm`, or a sum of `w · v`
//! with `w` free of the output column, at the top of the node's term) runs its keys outside
//! the output column. So a term fused where it is recomputed per output column or per query
//! costs that many times — what [`super::outline`] then materializes.

use super::cost::Sizes;
use crate::ir::lang::Tfm;
use crate::ir::{Cascade, Def, Node, Role};
use egg::{Id, Language, RecExpr};
use std::collections::BTreeSet;

/// Estimated work of a cascade.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Estimate {
    /// Floating-point (and integer) operations, as often as the schedule evaluates them.
    pub flops: f64,
    /// Bytes read from and written to tensors, each element touched counted once (the
    /// traffic with perfect reuse in cache).
    pub bytes: f64,
    /// Bytes of the local tensors the cascade materializes (each written once and read back:
    /// memory traffic the fused form does not have).
    pub local_bytes: f64,
}

/// What one byte of a materialized local costs, in flops: an element is written to memory
/// and read back, a few times the cost of an arithmetic operation on it (this machine class
/// does about 7 flops per byte of read bandwidth; this is deliberately lower).
const LOCAL_BYTE_FLOPS: f64 = 4.0;

impl Estimate {
    /// The cost the optimizer compares (its guard, `optimized_work_never_exceeds_the_written_work`):
    /// the flops plus the materialized locals' traffic (written and read back), in flops.
    pub fn cost(&self) -> f64 {
        self.flops + 2.0 * LOCAL_BYTE_FLOPS * self.local_bytes
    }
}

/// Estimates `c`'s work with `sizes`, as the schedule runs it.
pub fn estimate(c: &Cascade, sizes: &Sizes) -> Estimate {
    let mut est = Estimate::default();
    for &ix in &c.order {
        let n = &c.graph[ix];
        let (exprs, scan): (Vec<&RecExpr<Tfm>>, bool) = match &n.def {
            Def::Input => continue,
            Def::Expr(e) => (vec![e], false),
            Def::Scan { init, body, .. } => (vec![init, body], true),
        };
        let lhs: f64 = n.indices.iter().map(|i| sizes.index.get(i).copied().unwrap_or(1.0).max(1.0)).product();
        let (ctx, inner) = node_loops(n, scan, sizes);
        for e in exprs {
            let root = Id::from(e.as_ref().len() - 1);
            let free = free_sets(e);
            let mut seen = BTreeSet::new();
            let w = Walk { e, sizes, c, free: &free, indices: &n.indices, packed: Default::default(), in_weight: Default::default() };
            w.walk(root, &ctx, inner.as_deref(), &mut est, &mut seen);
        }
        if !matches!(n.role, Role::Input(_)) {
            est.bytes += lhs * bytes_of(n.dtype);
        }
        if matches!(n.role, Role::Local) {
            est.local_bytes += lhs * bytes_of(n.dtype);
        }
    }
    est
}

/// The weight (logit) and value of an `osm`, or of a sum of a product (the value is the factor
/// that reads an index the other does not: the output column).
pub(super) fn weight_and_value(e: &RecExpr<Tfm>, free: &[BTreeSet<String>], id: Id) -> Option<(Id, Id)> {
    match &e[id] {
        Tfm::Osm([_, _, _, _, s, v]) | Tfm::OsmZ([_, _, _, _, s, v, _]) => Some((*s, *v)),
        Tfm::Sum([_, _, _, _, body]) => match &e[*body] {
            Tfm::Mul([a, b]) => {
                let (fa, fb) = (&free[usize::from(*a)], &free[usize::from(*b)]);
                Some(if fb.iter().any(|i| !fa.contains(i)) { (*a, *b) } else { (*b, *a) })
            }
            _ => None,
        },
        _ => None,
    }
}

/// The loops of node `n` (a scan's when `scan`) and its inner index when it has one: all
/// but the last index are parallel (each point evaluates the term; a scan's scanned index is
/// sequential); the last is the inner loop, which invariant subterms are hoisted out of. The
/// tiled plans apply to expression nodes only.
pub(super) fn node_loops(n: &Node, scan: bool, sizes: &Sizes) -> (Vec<Loop>, Option<String>) {
    let extent = |i: &String| sizes.index.get(i).copied().unwrap_or(1.0).max(1.0);
    let last = n.indices.len().checked_sub(1);
    // A scan's inner loop (its last index, unless that is the scanned one) is innermost too.
    let scanned = match &n.def {
        Def::Scan { index, .. } => Some(index.as_str()),
        _ => None,
    };
    let ctx = n
        .indices
        .iter()
        .enumerate()
        .map(|(k, i)| Loop { name: i.clone(), extent: extent(i), hoistable: Some(k) == last && k > 0 && scanned != Some(i.as_str()) })
        .collect();
    let inner = if scan || n.indices.len() < 2 { None } else { n.indices.last().cloned() };
    (ctx, inner)
}

/// A loop around a subterm: the node's indices, then the reductions on the way down.
#[derive(Clone)]
pub(super) struct Loop {
    pub name: String,
    pub extent: f64,
    /// Invariant subterms are evaluated outside it (the node's inner loop and reductions; not
    /// the parallel loops).
    pub hoistable: bool,
}

/// The free index names of every node of `e` (children before parents).
pub(super) fn free_sets(e: &RecExpr<Tfm>) -> Vec<BTreeSet<String>> {
    let mut out: Vec<BTreeSet<String>> = Vec::with_capacity(e.as_ref().len());
    for node in e.as_ref() {
        let mut f = BTreeSet::new();
        match node {
            Tfm::Idx(s) => {
                if let Tfm::Symbol(x) = &e[*s] {
                    f.insert(x.as_str().to_string());
                }
            }
            _ => {
                let head = node.reduction_head();
                let bound = head.and_then(|[i, ..]| match &e[i] {
                    Tfm::Symbol(x) => Some(x.as_str().to_string()),
                    _ => None,
                });
                for &ch in node.children() {
                    let scoped = head.is_some_and(|[i, lo, hi, _]| ch != i && ch != lo && ch != hi);
                    for x in &out[usize::from(ch)] {
                        if !(scoped && Some(x) == bound.as_ref()) {
                            f.insert(x.clone());
                        }
                    }
                }
            }
        }
        out.push(f);
    }
    out
}

/// The estimate's walk over one term.
pub(super) struct Walk<'a> {
    pub e: &'a RecExpr<Tfm>,
    pub sizes: &'a Sizes,
    pub c: &'a Cascade,
    pub free: &'a [BTreeSet<String>],
    /// The node's indices (a tiled plan needs one besides the column that the value does not
    /// read: its rows).
    pub indices: &'a [String],
    /// Subterms the tiled plans compute from packed panels (filled by the walk).
    pub packed: std::cell::RefCell<BTreeSet<Id>>,
    /// Every subterm of a planned reduction's logit (weight), with the reduction's key index
    /// (filled by the walk).
    pub in_weight: std::cell::RefCell<std::collections::BTreeMap<Id, String>>,
}

impl Walk<'_> {
    /// How often the schedule evaluates `id` inside loops `ctx`: once per point of the loops
    /// up to the innermost one it reads (or the last parallel one); and how many loops of
    /// `ctx` those are (it is evaluated outside the rest).
    pub fn count(&self, id: Id, ctx: &[Loop]) -> (f64, usize) {
        let free = &self.free[usize::from(id)];
        if self.packed.borrow().contains(&id) {
            // Packed into a panel: once per point of its own indices.
            let extent = |i: &String| {
                ctx.iter()
                    .rev()
                    .find(|l| &l.name == i)
                    .map_or_else(|| self.sizes.index.get(i).copied().unwrap_or(1.0).max(1.0), |l| l.extent)
            };
            return (free.iter().map(extent).product(), ctx.len());
        }
        let mut k = ctx.iter().rposition(|l| !l.hoistable);
        for (j, l) in ctx.iter().enumerate().rev() {
            if free.contains(&l.name) {
                k = Some(k.map_or(j, |k| k.max(j)));
                break;
            }
        }
        k.map_or((1.0, 0), |k| (ctx[..=k].iter().map(|l| l.extent).product(), k + 1))
    }

    /// A reduction's loop: its index and estimated trip count.
    fn reduction_loop(&self, i: Id, lo: Id, hi: Id) -> Loop {
        let name = match &self.e[i] {
            Tfm::Symbol(s) => s.as_str().to_string(),
            _ => String::new(),
        };
        let full = self.sizes.index.get(&name).copied().unwrap_or(1.0).max(1.0);
        let trip = match (eval(self.e, lo, self.sizes), eval(self.e, hi, self.sizes)) {
            (Some(l), Some(h)) => (h - l).clamp(0.0, full),
            _ => full,
        };
        Loop { name, extent: trip.max(1.0), hoistable: true }
    }

    /// True if the reduction `id` is one the tiled plans take with the node's inner index
    /// `inner` as the output column: an `osm` with another node index (the value may read
    /// them all: a single-row plan), or a sum of `w · v` with `w` free of it (bounds and filter
    /// too) and a row index (a node index besides the column that the value does not read):
    /// they evaluate the logit or weight once per (row, key), the column innermost.
    fn planned(&self, id: Id, inner: &str) -> bool {
        let uses = |x: Id| self.free[usize::from(x)].contains(inner);
        let has_rows = |v: Id| self.indices.iter().any(|i| i != inner && !self.free[usize::from(v)].contains(i));
        match &self.e[id] {
            // A value that reads every index gets the single-row plan (decode).
            Tfm::Osm([_, lo, hi, f, s, _]) | Tfm::OsmZ([_, lo, hi, f, s, _, _]) => {
                !uses(*lo) && !uses(*hi) && !uses(*f) && !uses(*s) && self.indices.iter().any(|i| i != inner)
            }
            Tfm::Sum([_, lo, hi, f, body]) => {
                !uses(*lo)
                    && !uses(*hi)
                    && !uses(*f)
                    && matches!(&self.e[*body], Tfm::Mul([a, b]) if uses(*a) != uses(*b) && has_rows(if uses(*a) { *a } else { *b }))
            }
            _ => false,
        }
    }

    /// What a planned reduction computes from packed panels, counted once per point of its
    /// indices: the logit (weight) when its only reduction is the dot product the plan packs,
    /// and the value (packed per row tile and key block) when it holds none. Anything else is
    /// evaluated where it stands (per row and key) and counted so.
    fn panels_of(&self, id: Id) -> Vec<Id> {
        let Some((w, v)) = weight_and_value(self.e, self.free, id) else { return Vec::new() };
        let mut out = Vec::new();
        if self.reductions(w) <= 1 {
            out.push(w);
        }
        if self.reductions(v) == 0 {
            out.push(v);
        }
        out
    }

    /// How many reductions the subterm at `id` holds.
    fn reductions(&self, id: Id) -> usize {
        let mut seen = BTreeSet::new();
        let mut stack = vec![id];
        let mut n = 0;
        while let Some(x) = stack.pop() {
            if seen.insert(x) {
                n += usize::from(self.e[x].reduction_head().is_some());
                stack.extend(self.e[x].children().iter().copied());
            }
        }
        n
    }

    /// Marks `id` and everything under it as computed from packed panels.
    fn pack(&self, id: Id) {
        let mut stack = vec![id];
        let mut packed = self.packed.borrow_mut();
        while let Some(x) = stack.pop() {
            if packed.insert(x) {
                stack.extend(self.e[x].children().iter().copied());
            }
        }
    }

    /// Adds `id`'s work inside loops `ctx`; `inner` is the node's inner index while the walk
    /// is on the term's unconditional arithmetic path from the root (where the tiled plans
    /// take a reduction, see [`Walk::planned`]).
    pub fn walk(&self, id: Id, ctx: &[Loop], inner: Option<&str>, est: &mut Estimate, seen: &mut BTreeSet<(Id, u64)>) {
        self.visit(id, ctx, inner, est, seen, &mut |_, _, _| false);
    }

    /// [`Walk::walk`], calling `see(id, evaluations, depth)` at every subterm first (`depth`:
    /// how many loops of the context it is evaluated in); a subterm for which it returns true
    /// is not counted or entered.
    pub fn visit(
        &self,
        id: Id,
        ctx: &[Loop],
        inner: Option<&str>,
        est: &mut Estimate,
        seen: &mut BTreeSet<(Id, u64)>,
        see: &mut dyn FnMut(Id, f64, &[Loop]) -> bool,
    ) {
        let (pts, depth) = self.count(id, ctx);
        if !seen.insert((id, pts.to_bits())) {
            return; // a shared subterm is computed once where it is evaluated equally often
        }
        if see(id, pts, ctx) {
            return;
        }
        let node = &self.e[id];
        let mut pts_here = pts;
        let mut osm_ctx: Vec<Loop> = Vec::new();
        if let Some([i, lo, hi, f]) = node.reduction_head() {
            let l = self.reduction_loop(i, lo, hi);
            let l_name = l.name.clone();
            pts_here *= l.extent;
            self.visit(lo, ctx, None, est, seen, see);
            self.visit(hi, ctx, None, est, seen, see);
            // Hoisted out of the loops it does not read, the reduction runs its body there.
            let mut body_ctx: Vec<Loop> = ctx[..depth].to_vec();
            if let Some(inner) = inner
                && self.planned(id, inner)
                && let Some(pos) = body_ctx.iter().rposition(|x| x.name == inner)
            {
                // The tiled plan: rows, keys, then the output column; the logit (weight) is
                // computed from packed panels, each factor once per point of its indices.
                let col = body_ctx.remove(pos);
                body_ctx.push(l);
                body_ctx.push(col);
                for x in self.panels_of(id) {
                    self.pack(x);
                }
                if let Some((w, _)) = weight_and_value(self.e, self.free, id) {
                    let mut inw = self.in_weight.borrow_mut();
                    let mut stack = vec![w];
                    while let Some(x) = stack.pop() {
                        if inw.insert(x, l_name.clone()).is_none() {
                            stack.extend(self.e[x].children().iter().copied());
                        }
                    }
                }
            } else {
                body_ctx.push(l);
            }
            let _ = f;
            osm_ctx = body_ctx.clone();
            for &ch in node.children() {
                if ch != i && ch != lo && ch != hi {
                    self.visit(ch, &body_ctx, None, est, seen, see);
                }
            }
        } else {
            let arithmetic =
                matches!(node, Tfm::Add(_) | Tfm::Sub(_) | Tfm::Mul(_) | Tfm::Div(_) | Tfm::Neg(_) | Tfm::Call(_) | Tfm::Cast(_));
            for &ch in node.children() {
                self.visit(ch, ctx, if arithmetic { inner } else { None }, est, seen, see);
            }
        }
        match node {
            Tfm::Read(ch) => {
                let dt = match &self.e[ch[0]] {
                    Tfm::Symbol(s) => self.c.node(s.as_str()).map_or(4.0, |n| bytes_of(n.dtype)),
                    _ => 4.0,
                };
                // Bytes touched: each element once (what stays in cache is reused).
                let space: f64 =
                    self.free[usize::from(id)].iter().map(|i| self.sizes.index.get(i).copied().unwrap_or(1.0).max(1.0)).product();
                est.bytes += space * dt;
            }
            Tfm::Const(_) | Tfm::Symbol(_) | Tfm::Idx(_) | Tfm::Dim(_) | Tfm::Param(_) | Tfm::Prev(_) => {}
            // The accumulate `acc += w · v` per (row, key, column), plus the weight
            // `exp(s - max)` and the running max per (row, key) (the rescale is per block).
            Tfm::Osm([_, _, _, _, s, _]) | Tfm::OsmZ([_, _, _, _, s, _, _]) => {
                let per_key = self.count(*s, &osm_ctx).0;
                est.flops += 2.0 * pts_here + 4.0 * per_key;
            }
            _ if node.reduction_head().is_some() => est.flops += pts_here,
            _ => est.flops += pts,
        }
    }
}

fn bytes_of(d: crate::hir::DType) -> f64 {
    match d {
        crate::hir::DType::F16 | crate::hir::DType::BF16 => 2.0,
        crate::hir::DType::F64 | crate::hir::DType::I64 => 8.0,
        crate::hir::DType::Bool => 1.0,
        _ => 4.0,
    }
}

/// Integer value of a bound term with free indices at mid-range.
fn eval(e: &RecExpr<Tfm>, id: Id, sizes: &Sizes) -> Option<f64> {
    let sym = |c: Id| match &e[c] {
        Tfm::Symbol(s) => Some(s.as_str().to_string()),
        _ => None,
    };
    Some(match &e[id] {
        Tfm::Const(k) => k.as_f64(),
        Tfm::Dim(s) => *sizes.dims.get(&sym(*s)?)?,
        Tfm::Param(s) => *sizes.params.get(&sym(*s)?)?,
        Tfm::Idx(s) => (sizes.index.get(&sym(*s)?)? / 2.0).floor(),
        Tfm::Add([a, b]) => eval(e, *a, sizes)? + eval(e, *b, sizes)?,
        Tfm::Sub([a, b]) => eval(e, *a, sizes)? - eval(e, *b, sizes)?,
        Tfm::Mul([a, b]) => eval(e, *a, sizes)? * eval(e, *b, sizes)?,
        Tfm::Cast([_, a]) => eval(e, *a, sizes)?,
        Tfm::Call(ch) if ch.len() == 3 => {
            let (a, b) = (eval(e, ch[1], sizes)?, eval(e, ch[2], sizes)?);
            match sym(ch[0])?.as_str() {
                "min" => a.min(b),
                "max" => a.max(b),
                _ => return None,
            }
        }
        _ => return None,
    })
}
