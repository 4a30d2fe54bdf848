//! Fusion by inlining: every local tensor defined by an expression is substituted into the
//! expressions that read it (its left-hand indices replaced by the read's subscripts), so
//! each output — and each scan body — becomes one term the e-graph can see whole. Scans and
//! inputs stay materialized.
//!
//! Substitution is capture-avoiding: a reduction inside the inlined definition whose index
//! name occurs free in the substituted subscripts is renamed (`e` → `e'`). Otherwise names
//! are kept, so two inlinings of the same tensor at the same subscripts give the same term
//! (which the e-graph then shares).

use crate::ir::lang::Tfm;
use crate::ir::{Cascade, Def};
use egg::{Id, Language, RecExpr, Symbol};
use std::collections::{BTreeSet, HashMap};

/// Inlines every `Def::Expr` local into its readers and drops it; returns the new cascade.
pub fn inline_locals(c: &Cascade) -> Cascade {
    let mut renamed: Vec<(String, String)> = Vec::new();
    let mut defs: HashMap<String, (Vec<String>, RecExpr<Tfm>)> = HashMap::new();
    let mut out = c.clone();
    let mut keep = Vec::new();
    for &ix in &c.order {
        let node = &c.graph[ix];
        let new_def = match &node.def {
            Def::Input => Def::Input,
            Def::Expr(e) => Def::Expr(substitute(e, &defs, &mut renamed)),
            Def::Scan { index, init, body } => {
                Def::Scan { index: index.clone(), init: substitute(init, &defs, &mut renamed), body: substitute(body, &defs, &mut renamed) }
            }
        };
        let inlinable = matches!(node.role, crate::ir::Role::Local) && matches!(new_def, Def::Expr(_));
        if let (true, Def::Expr(e)) = (inlinable, &new_def) {
            defs.insert(node.name.clone(), (node.indices.clone(), e.clone()));
        } else {
            keep.push(ix);
        }
        out.graph[ix].def = new_def;
    }
    // Renamed binders range like the index they were renamed from.
    for (fresh, original) in renamed {
        if out.range(&fresh).is_none()
            && let Some(size) = out.range(&original).cloned()
        {
            out.ranges.push((fresh, size));
        }
    }
    // Drop the inlined locals.
    out.graph.retain_nodes(|g, ix| !defs.contains_key(&g[ix].name));
    out.order = out.graph.node_indices().collect();
    let rank: HashMap<String, usize> = keep.iter().enumerate().map(|(i, ix)| (c.graph[*ix].name.clone(), i)).collect();
    out.order.sort_by_key(|ix| rank.get(&out.graph[*ix].name).copied().unwrap_or(usize::MAX));
    out.relink();
    out
}

/// `e` with every read of a tensor in `defs` replaced by its definition.
fn substitute(e: &RecExpr<Tfm>, defs: &HashMap<String, (Vec<String>, RecExpr<Tfm>)>, renamed: &mut Vec<(String, String)>) -> RecExpr<Tfm> {
    let mut out = RecExpr::default();
    let mut map: Vec<Id> = Vec::with_capacity(e.as_ref().len());
    for node in e.as_ref() {
        let id = match node {
            Tfm::Read(ch) => {
                let name = match &e[ch[0]] {
                    Tfm::Symbol(s) => s.as_str().to_string(),
                    _ => String::new(),
                };
                match defs.get(&name) {
                    Some((indices, def)) => {
                        let subs: Vec<Id> = ch[1..].iter().map(|c| map[usize::from(*c)]).collect();
                        splice_with(&mut out, def, indices, &subs, renamed)
                    }
                    None => out.add(node.clone().map_children(|c| map[usize::from(c)])),
                }
            }
            _ => out.add(node.clone().map_children(|c| map[usize::from(c)])),
        };
        map.push(id);
    }
    // Replaced reads leave their tensor symbols unused: keep only what the root reaches.
    let root = *map.last().expect("non-empty expression");
    super::normalize::compact(&out, root)
}

/// Copies `def` into `out`, replacing `(idx v)` for each left-hand index `v` by the matching
/// subscript term (already in `out`), renaming a reduction index only where a substituted
/// term mentions it (it would be captured).
fn splice_with(out: &mut RecExpr<Tfm>, def: &RecExpr<Tfm>, indices: &[String], subs: &[Id], renamed: &mut Vec<(String, String)>) -> Id {
    let mut subst: HashMap<String, (Id, BTreeSet<String>)> = HashMap::new();
    for (v, &t) in indices.iter().zip(subs) {
        let mut free = BTreeSet::new();
        free_names(out, t, &mut free);
        subst.insert(v.clone(), (t, free));
    }
    copy(out, def, Id::from(def.as_ref().len() - 1), &subst, renamed)
}

/// Copies subterm `id` of `def` under `subst` (index name → replacement term and its free
/// names; a renamed binder maps to `(idx fresh)` with an empty free set).
fn copy(
    out: &mut RecExpr<Tfm>,
    def: &RecExpr<Tfm>,
    id: Id,
    subst: &HashMap<String, (Id, BTreeSet<String>)>,
    renamed: &mut Vec<(String, String)>,
) -> Id {
    let node = &def[id];
    match node {
        Tfm::Idx(s) => {
            let name = sym(def, *s);
            match subst.get(&name) {
                Some((t, _)) => *t,
                None => {
                    let s = out.add(Tfm::Symbol(Symbol::from(name.as_str())));
                    out.add(Tfm::Idx(s))
                }
            }
        }
        _ => {
            let Some([i, lo, hi, _]) = node.reduction_head() else {
                let mut n = node.clone();
                for c in n.children_mut() {
                    *c = copy(out, def, *c, subst, renamed);
                }
                return out.add(n);
            };
            let name = sym(def, i);
            let lo2 = copy(out, def, lo, subst, renamed);
            let hi2 = copy(out, def, hi, subst, renamed);
            // Inside the binder `name` is the bound index; a substituted term that mentions
            // `name` would be captured, so then the binder gets a fresh name.
            let mut inner = subst.clone();
            inner.remove(&name);
            let captured: BTreeSet<String> = inner.values().flat_map(|(_, f)| f.iter().cloned()).collect();
            let bound = if captured.contains(&name) {
                let mut fresh = format!("{name}'");
                while captured.contains(&fresh) {
                    fresh.push('\'');
                }
                let s = out.add(Tfm::Symbol(Symbol::from(fresh.as_str())));
                let t = out.add(Tfm::Idx(s));
                inner.insert(name.clone(), (t, BTreeSet::new()));
                renamed.push((fresh.clone(), name.clone()));
                fresh
            } else {
                name
            };
            let mut n = node.clone();
            for c in n.children_mut() {
                *c = if *c == i {
                    out.add(Tfm::Symbol(Symbol::from(bound.as_str())))
                } else if *c == lo {
                    lo2
                } else if *c == hi {
                    hi2
                } else {
                    copy(out, def, *c, &inner, renamed)
                };
            }
            out.add(n)
        }
    }
}

fn sym(e: &RecExpr<Tfm>, id: Id) -> String {
    match &e[id] {
        Tfm::Symbol(s) => s.as_str().to_string(),
        _ => String::new(),
    }
}

/// Free index names of the subterm `id` of `e`.
pub fn free_names(e: &RecExpr<Tfm>, id: Id, out: &mut BTreeSet<String>) {
    let node = &e[id];
    match node {
        Tfm::Idx(s) => {
            out.insert(sym(e, *s));
        }
        _ => {
            if let Some([i, lo, hi, _]) = node.reduction_head() {
                free_names(e, lo, out);
                free_names(e, hi, out);
                let mut inner = BTreeSet::new();
                for &c in node.children() {
                    if c != i && c != lo && c != hi {
                        free_names(e, c, &mut inner);
                    }
                }
                inner.remove(&sym(e, i));
                out.extend(inner);
            } else {
                for &c in node.children() {
                    free_names(e, c, out);
                }
            }
        }
    }
}
