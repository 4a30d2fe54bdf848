//! The extraction cost model. A term is charged once over the index space it depends on
//! (its free indices — a loop-invariant subterm such as linear attention's `φKᵀ V` is paid
//! once, not once per query), times a weight per operation (transcendentals 4, memory reads 2,
//! arithmetic 1; a square's operand is charged once), plus, for a reduction whose inputs contain another reduction over the same
//! index, a penalty of `PASS_WEIGHT` per point: that is a second traversal of the index
//! (re-reading K and V), which is what the online softmax removes.
//!
//! Trip counts of bounded reductions are estimated by evaluating `hi - lo` with every free
//! index at the middle of its range (causal: about half; a window of W: about W).

use super::analysis::Graph;
use crate::ir::lang::{Const, Tfm};
use egg::{CostFunction, Id, Language, Symbol};
use std::collections::{BTreeSet, HashMap};

/// Weight of one extra traversal of an index, per point.
pub const PASS_WEIGHT: f64 = 8.0;

/// Sizes used to estimate costs.
#[derive(Clone, Debug, Default)]
pub struct Sizes {
    /// Index name → range size.
    pub index: HashMap<String, f64>,
    /// Dim name → size.
    pub dims: HashMap<String, f64>,
    /// Param name → value.
    pub params: HashMap<String, f64>,
}

impl Sizes {
    /// Size of the space spanned by `free`.
    pub fn space(&self, free: &BTreeSet<Symbol>) -> f64 {
        free.iter().map(|s| self.index.get(s.as_str()).copied().unwrap_or(1.0).max(1.0)).product()
    }
}

/// Operation weight of one evaluation of `n` at one point.
pub fn weight(n: &Tfm) -> f64 {
    match n {
        Tfm::Const(_) | Tfm::Symbol(_) | Tfm::Idx(_) | Tfm::Dim(_) | Tfm::Param(_) => 0.0,
        Tfm::Read(_) | Tfm::Prev(_) => 2.0,
        Tfm::Call(_) => 4.0,
        Tfm::Osm(_) | Tfm::OsmZ(_) => 6.0,
        _ => 1.0,
    }
}

/// The cost function used for extraction.
pub struct WorkCost<'a> {
    /// The e-graph (for the analysis facts).
    pub egraph: &'a Graph,
    /// Sizes.
    pub sizes: &'a Sizes,
}

impl CostFunction<Tfm> for WorkCost<'_> {
    type Cost = f64;

    fn cost<C: FnMut(Id) -> f64>(&mut self, enode: &Tfm, mut costs: C) -> f64 {
        let g = self.egraph;
        let children: f64 = match enode {
            // A square `x * x` evaluates `x` once (the backends share the operand): charging it
            // twice made `Σ_e (k - q)²` look dearer than `Σ_e (k - q)·(c·k - c·q)`, which no
            // tile product computes.
            Tfm::Mul([a, b]) if g.find(*a) == g.find(*b) => costs(*a),
            _ => enode.children().iter().map(|c| costs(*c)).sum(),
        };
        let mut free: BTreeSet<Symbol> = BTreeSet::new();
        for c in enode.children() {
            free.extend(g[*c].data.free.iter().copied());
        }
        let mut points = self.sizes.space(&free);
        if let Some([i, lo, hi, f]) = enode.reduction_head() {
            let bound = g[i].data.symbol;
            if let Some(b) = bound {
                // `free` includes the bound index (it is free in the body); replace its full
                // range by the estimated trip count.
                let full = self.sizes.index.get(b.as_str()).copied().unwrap_or(1.0).max(1.0);
                let trip = trip_count(g, self.sizes, lo, hi).unwrap_or(full).clamp(0.0, full);
                if matches!(enode, Tfm::Sum(_)) && is_prefix(g, enode, b, f) {
                    // A causal prefix sum free of the query index becomes a running sum
                    // (`optimize::prefix`): one step per query point, not one per key.
                    points /= full;
                } else if free.contains(&b) {
                    points = points / full * trip.max(1.0);
                }
                let reduces_again = enode.children().iter().any(|c| *c != i && reduced_inside(g, *c, b, 0));
                if reduces_again {
                    points *= 1.0 + PASS_WEIGHT;
                }
            }
        }
        points * weight(enode) + children
    }
}

/// True if the sum `enode` over `b` has filter `b <= q` for another index `q` and a body free
/// of `q` (and starts at 0): the shape `optimize::prefix` turns into a scan.
fn is_prefix(g: &Graph, enode: &Tfm, b: Symbol, f: Id) -> bool {
    let Tfm::Sum([_, lo, _, _, body]) = enode else { return false };
    let starts_at_zero = g[*lo].nodes.iter().any(|n| matches!(n, Tfm::Const(Const::Int(0))));
    let idx_of = |id: Id| {
        g[id].nodes.iter().find_map(|n| match n {
            Tfm::Idx(s) => g[*s].data.symbol,
            _ => None,
        })
    };
    starts_at_zero
        && g[f].nodes.iter().any(|n| match n {
            Tfm::Le([x, y]) => idx_of(*x) == Some(b) && idx_of(*y).is_some_and(|q| q != b && !g[*body].data.free.contains(&q)),
            _ => false,
        })
}

/// True if class `id` contains a reduction over index `b` (up to a small depth).
fn reduced_inside(g: &Graph, id: Id, b: Symbol, depth: usize) -> bool {
    if depth > 12 {
        return false;
    }
    g[id].nodes.iter().take(1).any(|n| {
        if let Some([i, ..]) = n.reduction_head()
            && g[i].data.symbol == Some(b)
        {
            return true;
        }
        n.children().iter().any(|c| reduced_inside(g, *c, b, depth + 1))
    })
}

/// `hi - lo` evaluated with free indices at the middle of their ranges, if computable.
fn trip_count(g: &Graph, sizes: &Sizes, lo: Id, hi: Id) -> Option<f64> {
    Some(eval(g, sizes, hi, 0)? - eval(g, sizes, lo, 0)?)
}

fn eval(g: &Graph, sizes: &Sizes, id: Id, depth: usize) -> Option<f64> {
    if depth > 16 {
        return None;
    }
    g[id].nodes.iter().find_map(|n| {
        let ev = |c: Id| eval(g, sizes, c, depth + 1);
        let sym = |c: Id| g[c].data.symbol.map(|s| s.as_str().to_string());
        match n {
            Tfm::Const(Const::Int(i)) => Some(*i as f64),
            Tfm::Const(c) => Some(c.as_f64()),
            Tfm::Dim(s) => sizes.dims.get(&sym(*s)?).copied(),
            Tfm::Param(s) => sizes.params.get(&sym(*s)?).copied(),
            Tfm::Idx(s) => sizes.index.get(&sym(*s)?).map(|n| (n / 2.0).floor()),
            Tfm::Add([a, b]) => Some(ev(*a)? + ev(*b)?),
            Tfm::Sub([a, b]) => Some(ev(*a)? - ev(*b)?),
            Tfm::Mul([a, b]) => Some(ev(*a)? * ev(*b)?),
            Tfm::Div([a, b]) => Some((ev(*a)? / ev(*b)?).floor()),
            Tfm::Cast([_, a]) => ev(*a),
            Tfm::Call(ch) if ch.len() == 3 => match sym(ch[0])?.as_str() {
                "min" => Some(ev(ch[1])?.min(ev(ch[2])?)),
                "max" => Some(ev(ch[1])?.max(ev(ch[2])?)),
                _ => None,
            },
            _ => None,
        }
    })
}
