//! The IR verifier, run after lowering and after every pass: see the invariants listed on
//! [`super::Cascade`]. A failure is a compiler bug, reported with the node and the reason.

use super::lang::Tfm;
use super::{Cascade, Def};
use egg::{Id, RecExpr};
use std::collections::HashSet;

/// A broken IR invariant.
#[derive(Debug, thiserror::Error)]
#[error("IR verifier: cascade '{cascade}', tensor '{node}': {what}")]
pub struct VerifyError {
    /// Cascade name.
    pub cascade: String,
    /// Offending node.
    pub node: String,
    /// What is wrong.
    pub what: String,
}

/// Checks every invariant of `c`.
pub fn verify(c: &Cascade) -> Result<(), VerifyError> {
    let err = |node: &str, what: String| VerifyError { cascade: c.name.clone(), node: node.to_string(), what };
    let mut names = HashSet::new();
    for n in c.graph.node_weights() {
        if !names.insert(n.name.as_str()) {
            return Err(err(&n.name, "defined twice".into()));
        }
    }
    if c.order.len() != c.graph.node_count() {
        return Err(err("", format!("order lists {} of {} nodes", c.order.len(), c.graph.node_count())));
    }
    let mut defined: HashSet<&str> = HashSet::new();
    for &ix in &c.order {
        let n = &c.graph[ix];
        if !matches!(n.def, Def::Input) && n.indices.len() != n.shape.len() {
            return Err(err(&n.name, format!("{} indices for {} dimensions", n.indices.len(), n.shape.len())));
        }
        let bound: Vec<&str> = n.indices.iter().map(String::as_str).collect();
        let exprs: Vec<&RecExpr<Tfm>> = match &n.def {
            Def::Input => Vec::new(),
            Def::Expr(e) => vec![e],
            Def::Scan { index, init, body } => {
                if !n.indices.contains(index) {
                    return Err(err(&n.name, format!("scan index '{index}' is not a left-hand index")));
                }
                vec![init, body]
            }
        };
        for e in exprs {
            if e.as_ref().is_empty() {
                return Err(err(&n.name, "empty expression".into()));
            }
            let root = Id::from(e.as_ref().len() - 1);
            check(c, e, root, &mut bound.clone(), &defined, &n.name).map_err(|w| err(&n.name, w))?;
        }
        defined.insert(n.name.as_str());
    }
    Ok(())
}

fn sym(e: &RecExpr<Tfm>, id: Id) -> Option<&str> {
    match &e[id] {
        Tfm::Symbol(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Checks the subterm at `id` with `bound` indices in scope.
fn check<'e>(c: &Cascade, e: &'e RecExpr<Tfm>, id: Id, bound: &mut Vec<&'e str>, defined: &HashSet<&str>, this: &str) -> Result<(), String> {
    let node = &e[id];
    match node {
        Tfm::Idx(s) => {
            let name = sym(e, *s).ok_or("`idx` needs a symbol")?;
            if !bound.contains(&name) {
                return Err(format!("index '{name}' is not bound here"));
            }
            Ok(())
        }
        Tfm::Dim(s) => {
            let name = sym(e, *s).ok_or("`dim` needs a symbol")?;
            if !c.dims.iter().any(|d| d == name) {
                return Err(format!("unknown dimension '{name}'"));
            }
            Ok(())
        }
        Tfm::Read(ch) => {
            let t = sym(e, ch[0]).ok_or("`read` needs a tensor symbol")?;
            let Some(n) = c.node(t) else { return Err(format!("reads unknown tensor '{t}'")) };
            if !defined.contains(t) {
                return Err(format!("reads '{t}' before it is defined"));
            }
            if ch.len() - 1 != n.shape.len() {
                return Err(format!("reads '{t}' with {} subscripts, it has {} dimensions", ch.len() - 1, n.shape.len()));
            }
            ch[1..].iter().try_for_each(|s| check(c, e, *s, bound, defined, this))
        }
        Tfm::Prev(ch) => {
            let t = sym(e, ch[0]).ok_or("`prev` needs a tensor symbol")?;
            if t != this {
                return Err(format!("`prev` of '{t}' outside its scan"));
            }
            Ok(())
        }
        _ => {
            if let Some([i, lo, hi, f]) = node.reduction_head() {
                let name = sym(e, i).ok_or("a reduction needs an index symbol")?;
                check(c, e, lo, bound, defined, this)?;
                check(c, e, hi, bound, defined, this)?;
                bound.push(name);
                let rest: Vec<Id> = egg::Language::children(node).iter().copied().filter(|x| ![i, lo, hi].contains(x) || *x == f).collect();
                let r = rest.iter().try_for_each(|x| if sym(e, *x).is_some() { Ok(()) } else { check(c, e, *x, bound, defined, this) });
                bound.pop();
                return r;
            }
            egg::Language::children(node).iter().try_for_each(|x| match &e[*x] {
                Tfm::Symbol(_) => Ok(()),
                _ => check(c, e, *x, bound, defined, this),
            })
        }
    }
}
