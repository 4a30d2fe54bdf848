//! Pass counting (FuseMax's metric): how many traversals of each reduced index a kernel
//! needs. In the cascade as written, every statement that reduces over `i` is its own loop
//! nest, so each is one pass. In an optimized (fused) term, reductions over `i` at the same
//! dependency level share one traversal, and a reduction whose inputs need another reduction
//! over `i` first starts a new pass: passes = the deepest chain of dependent reductions.

use crate::ir::lang::Tfm;
use crate::ir::{Cascade, Def};
use egg::{Id, Language, RecExpr};
use std::collections::BTreeMap;

/// Passes per reduced index name in the cascade as written (one per reducing statement).
pub fn passes_as_written(c: &Cascade) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for &ix in &c.order {
        let exprs: Vec<&RecExpr<Tfm>> = match &c.graph[ix].def {
            Def::Input => vec![],
            Def::Expr(e) => vec![e],
            Def::Scan { init, body, .. } => vec![init, body],
        };
        let mut here = std::collections::BTreeSet::new();
        for e in exprs {
            for n in e.as_ref() {
                if let Some([i, ..]) = n.reduction_head()
                    && let Tfm::Symbol(s) = &e[i]
                {
                    here.insert(s.as_str().to_string());
                }
            }
        }
        for i in here {
            *out.entry(i).or_insert(0) += 1;
        }
    }
    out
}

/// Passes per reduced index name in a fused cascade (dependency depth per output term).
pub fn passes_fused(c: &Cascade) -> BTreeMap<String, usize> {
    let mut out: BTreeMap<String, usize> = BTreeMap::new();
    for &ix in &c.order {
        let exprs: Vec<&RecExpr<Tfm>> = match &c.graph[ix].def {
            Def::Input => vec![],
            Def::Expr(e) => vec![e],
            Def::Scan { init, body, .. } => vec![init, body],
        };
        for e in exprs {
            let mut memo = BTreeMap::new();
            let root = Id::from(e.as_ref().len() - 1);
            for (i, depth) in depth(e, root, &mut memo) {
                let slot = out.entry(i).or_insert(0);
                *slot = (*slot).max(depth);
            }
        }
    }
    out
}

/// For the subterm `id`: for each index, the deepest chain of dependent reductions over it.
fn depth(e: &RecExpr<Tfm>, id: Id, memo: &mut BTreeMap<Id, BTreeMap<String, usize>>) -> BTreeMap<String, usize> {
    if let Some(d) = memo.get(&id) {
        return d.clone();
    }
    let node = &e[id];
    let mut acc: BTreeMap<String, usize> = BTreeMap::new();
    for &c in node.children() {
        for (i, d) in depth(e, c, memo) {
            let slot = acc.entry(i).or_insert(0);
            *slot = (*slot).max(d);
        }
    }
    if let Some([i, ..]) = node.reduction_head()
        && let Tfm::Symbol(s) = &e[i]
    {
        // A binder renamed to avoid capture (`e'`) counts as the index it came from.
        let slot = acc.entry(s.as_str().trim_end_matches('\'').to_string()).or_insert(0);
        *slot += 1;
    }
    memo.insert(id, acc.clone());
    acc
}
