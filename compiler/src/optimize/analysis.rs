//! The e-graph analysis: for every e-class, the index names it may depend on (`free`) and
//! whether it may have no value at a point (`partial`: it contains a `where` outside any
//! reduction). Rules consult it so none can build an ill-scoped term: a term moves across a
//! binder of `i` only when `i` is not free in it, and a strict operation is distributed over
//! a reduction only when the moved operand is never absent.
//!
//! Merging is conservative: the union of free sets and the `or` of partiality, so a class's
//! facts hold for every term in it.

use crate::ir::lang::Tfm;
use egg::{Analysis, DidMerge, EGraph, Id, Language, Symbol};
use std::collections::BTreeSet;

/// Facts about one e-class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Index names the value may depend on.
    pub free: BTreeSet<Symbol>,
    /// True if some point may have no value.
    pub partial: bool,
    /// The symbol, if the class is a symbol leaf.
    pub symbol: Option<Symbol>,
}

/// The analysis (stateless).
#[derive(Default, Debug, Clone)]
pub struct FreeIndices;

/// The e-graph type of the optimizer.
pub type Graph = EGraph<Tfm, FreeIndices>;

impl Analysis<Tfm> for FreeIndices {
    type Data = Facts;

    fn make(egraph: &mut Graph, enode: &Tfm, _id: Id) -> Facts {
        let d = |id: &Id| &egraph[*id].data;
        match enode {
            Tfm::Symbol(s) => Facts { free: BTreeSet::new(), partial: false, symbol: Some(*s) },
            Tfm::Idx(s) => {
                let mut free = BTreeSet::new();
                if let Some(sym) = d(s).symbol {
                    free.insert(sym);
                }
                Facts { free, partial: false, symbol: None }
            }
            Tfm::Dense(x) => Facts { free: d(x).free.clone(), partial: false, symbol: None },
            Tfm::Where([f, x]) => {
                let mut free = d(f).free.clone();
                free.extend(d(x).free.iter().copied());
                Facts { free, partial: true, symbol: None }
            }
            _ => {
                if let Some([i, lo, hi, _]) = enode.reduction_head() {
                    let bound = d(&i).symbol;
                    let mut inner = BTreeSet::new();
                    for c in enode.children() {
                        if *c != i && *c != lo && *c != hi {
                            inner.extend(d(c).free.iter().copied());
                        }
                    }
                    if let Some(b) = bound {
                        inner.remove(&b);
                    }
                    inner.extend(d(&lo).free.iter().copied());
                    inner.extend(d(&hi).free.iter().copied());
                    // A reduction skips absent points, so it always has a value.
                    let partial = d(&lo).partial || d(&hi).partial;
                    return Facts { free: inner, partial, symbol: None };
                }
                let mut free = BTreeSet::new();
                let mut partial = false;
                for c in enode.children() {
                    free.extend(d(c).free.iter().copied());
                    partial |= d(c).partial;
                }
                Facts { free, partial, symbol: None }
            }
        }
    }

    fn merge(&mut self, a: &mut Facts, b: Facts) -> DidMerge {
        let before = (a.free.len(), a.partial, a.symbol);
        a.free.extend(b.free.iter().copied());
        a.partial |= b.partial;
        if a.symbol.is_none() {
            a.symbol = b.symbol;
        }
        let changed_a = before != (a.free.len(), a.partial, a.symbol);
        let changed_b = b.free.len() < a.free.len() || (a.partial && !b.partial);
        DidMerge(changed_a, changed_b)
    }
}

/// True if index `i` (a symbol class) is not free in class `x`.
pub fn free_of(egraph: &Graph, x: Id, i: Id) -> bool {
    match egraph[i].data.symbol {
        Some(s) => !egraph[x].data.free.contains(&s),
        None => false,
    }
}
