//! Fusion by inlining: every local tensor defined by an expression is substituted into the
//! expressions that read it (its left-hand indices replaced by the read's subscripts), so
//! each output — and each scan body — becomes one term the e-graph can see whole. Scans and
//! inputs stay materialized, and so does a local whose inlined term would be deeper than
//! [`MAX_FUSED_DEPTH`] (a chain of thousands of statements): every later pass may recurse
//! over a term's depth, which this bounds.
//!
//! Substitution is capture-avoiding: a reduction inside the inlined definition whose index
//! name occurs free in the substituted subscripts is renamed (`e` → `e'`). Otherwise names
//! are kept, so two inlinings of the same tensor at the same subscripts give the same term
//! (which the e-graph then shares).

use super::normalize::{Hc, compact};
use crate::ir::lang::Tfm;
use crate::ir::{Cascade, Def};
use egg::{Id, Language, RecExpr, Symbol};
use std::collections::{BTreeSet, HashMap};

/// The deepest term fusion builds; a local whose inlined term is deeper stays a tensor.
pub const MAX_FUSED_DEPTH: u32 = 256;

/// Inlines every `Def::Expr` local into its readers and drops it; returns the new cascade.
///
/// Memory is linear in the program: every inlined definition lives once in one hash-consed
/// pool (a local read at its own left-hand indices, `T[n]` for `T[n] = ...`, is its
/// definition's id, copied nowhere), and only the kept nodes' terms are extracted from it, as
/// DAGs. (Each local used to hold its own fully inlined copy: a chain of N statements took N²
/// nodes, and `T_i = T_{i-1} + T_{i-1}` doubled at every step.)
pub fn inline_locals(c: &Cascade) -> Cascade {
    inline_locals_but(c, &BTreeSet::new())
}

/// [`inline_locals`] keeping the locals named in `keep_names` materialized too.
pub fn inline_locals_but(c: &Cascade, keep_names: &BTreeSet<String>) -> Cascade {
    let mut shared = shared_feature_maps(c);
    shared.extend(keep_names.iter().cloned());
    let mut renamed: Vec<(String, String)> = Vec::new();
    let mut pool = Hc::new();
    let mut defs: HashMap<String, (Vec<String>, Id)> = HashMap::new();
    let mut out = c.clone();
    let mut keep = Vec::new();
    // The depth of each pool term (pool ids are topologically ordered: children first).
    let mut depth: Vec<u32> = Vec::new();
    for &ix in &c.order {
        let node = &c.graph[ix];
        let mut sub = |e: &RecExpr<Tfm>| substitute(&mut pool, e, &defs, &mut renamed);
        let new_def = match &node.def {
            Def::Input => Def::Input,
            Def::Expr(e) => {
                let s = sub(e);
                for id in depth.len()..pool.out.as_ref().len() {
                    let d = pool.out[Id::from(id)].children().iter().map(|c| depth[usize::from(*c)]).max().map_or(1, |d| d + 1);
                    depth.push(d);
                }
                let root = *s.ids.last().expect("non-empty expression");
                if matches!(node.role, crate::ir::Role::Local)
                    && depth[usize::from(root)] <= MAX_FUSED_DEPTH
                    && !shared.contains(&node.name)
                {
                    defs.insert(node.name.clone(), (node.indices.clone(), root));
                    continue;
                }
                Def::Expr(extract(&pool, e, &s, &renamed))
            }
            Def::Scan { index, init: i, body: b } => {
                let (si, sb) = (sub(i), sub(b));
                Def::Scan { index: index.clone(), init: extract(&pool, i, &si, &renamed), body: extract(&pool, b, &sb, &renamed) }
            }
        };
        keep.push(ix);
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

/// The locals defined by a reduction that two or more statements read (`A = X · Kpᵀ`, read by
/// its row norm and by the map of it): inlining one into each reader computes the contraction
/// once per reader, so a partial fusion keeps them ([`super::optimize`] tries it when fusing
/// everything would do more work than the cascade as written).
pub fn shared_contractions(c: &Cascade) -> BTreeSet<String> {
    let readers = reader_counts(c);
    c.graph
        .node_weights()
        .filter(|n| matches!(n.role, crate::ir::Role::Local) && readers.get(&n.name).copied().unwrap_or(0) >= 2)
        .filter(|n| matches!(&n.def, Def::Expr(e) if e.as_ref().iter().any(|x| x.reduction_head().is_some())))
        .map(|n| n.name.clone())
        .collect()
}

/// How many statements read each tensor (a statement reading one twice counts once).
fn reader_counts(c: &Cascade) -> HashMap<String, usize> {
    let mut readers: HashMap<String, usize> = HashMap::new();
    for n in c.graph.node_weights() {
        for r in crate::ir::reads_of(&n.def).into_iter().collect::<BTreeSet<_>>() {
            *readers.entry(r).or_default() += 1;
        }
    }
    readers
}

/// The locals that stay tensors although they could be inlined: a feature map — an
/// elementwise term of inputs only (no reduction, no local, no `prev`) with a transcendental
/// call (`sigmoid(Q[b, h, p, e])`, `elu(K[..]) + 1`) — that two or more statements read.
/// Inlined, every reader would evaluate the call again at every point (Flowformer's `φ(Q)`,
/// read by five statements, took five sigmoids per element); kept, it is computed once and
/// read back. A map read once is inlined as before (a sigmoid attention's weight), and so is
/// any term of locals (a softmax's `exp(S - G)`, which the online-softmax rule needs whole).
fn shared_feature_maps(c: &Cascade) -> BTreeSet<String> {
    let inputs: BTreeSet<&str> = c.graph.node_weights().filter(|n| matches!(n.def, Def::Input)).map(|n| n.name.as_str()).collect();
    let readers = reader_counts(c);
    let mut out = BTreeSet::new();
    for n in c.graph.node_weights() {
        let Def::Expr(e) = &n.def else { continue };
        if !matches!(n.role, crate::ir::Role::Local) || readers.get(&n.name).copied().unwrap_or(0) < 2 {
            continue;
        }
        let nodes = e.as_ref();
        let elementwise = nodes.iter().all(|x| x.reduction_head().is_none() && !matches!(x, Tfm::Prev(_)));
        let only_inputs = nodes.iter().all(|x| match x {
            Tfm::Read(ch) => inputs.contains(sym(e, ch[0]).as_str()),
            _ => true,
        });
        let transcendental = nodes.iter().any(|x| super::outline::transcendental_call(e, x));
        if elementwise && only_inputs && transcendental {
            out.insert(n.name.clone());
        }
    }
    out
}

/// An expression with the reads of inlined locals replaced, as terms of the pool.
struct Substituted {
    /// The pool id of each node of the expression, in its order (the last is the root).
    ids: Vec<Id>,
    /// Which nodes were reads replaced by a definition.
    replaced: Vec<bool>,
}

/// `e` with every read of a tensor in `defs` replaced by its definition, as terms of `pool`.
fn substitute(
    pool: &mut Hc,
    e: &RecExpr<Tfm>,
    defs: &HashMap<String, (Vec<String>, Id)>,
    renamed: &mut Vec<(String, String)>,
) -> Substituted {
    let mut map: Vec<Id> = Vec::with_capacity(e.as_ref().len());
    let mut replaced = vec![false; e.as_ref().len()];
    for (k, node) in e.as_ref().iter().enumerate() {
        let id = match node {
            Tfm::Read(ch) => {
                let name = sym(e, ch[0]);
                match defs.get(&name) {
                    Some((indices, def)) => {
                        let subs: Vec<Id> = ch[1..].iter().map(|c| map[usize::from(*c)]).collect();
                        replaced[k] = true;
                        splice_with(pool, *def, indices, &subs, renamed)
                    }
                    None => pool.add(node.clone().map_children(|c| map[usize::from(c)])),
                }
            }
            _ => pool.add(node.clone().map_children(|c| map[usize::from(c)])),
        };
        map.push(id);
    }
    Substituted { ids: map, replaced }
}

/// The term of `pool` that `substitute` gave for `e` as an expression of its own. Nodes come
/// in the order a copy of each inlined definition into `e` would give (`e`'s own nodes that
/// are still used, in their order; an inlined definition depth-first at the read it replaces,
/// a reduction's bounds before its other children and a binder renamed against capture
/// (`renamed`) with its `(idx ..)`), so the e-graph numbers its classes, and breaks
/// extraction ties, as it always has. Iterative: a chain of statements inlines into a deep
/// term.
fn extract(hc: &Hc, e: &RecExpr<Tfm>, s: &Substituted, renamed: &[(String, String)]) -> RecExpr<Tfm> {
    let pool = &hc.out;
    let root = *s.ids.last().expect("non-empty expression");
    // What the root reaches in the pool.
    let mut reached: BTreeSet<Id> = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if reached.insert(id) {
            stack.extend(pool[id].children().iter().copied());
        }
    }
    // `e`'s own nodes still used: the root, the children of a used node; of a replaced read,
    // only subscripts the definition took in.
    let n = e.as_ref().len();
    let mut used = vec![false; n];
    used[n - 1] = true;
    for k in (0..n).rev() {
        if !used[k] {
            continue;
        }
        let children = e[Id::from(k)].children();
        let children = if s.replaced[k] { &children[1..] } else { children };
        for &c in children {
            if !s.replaced[k] || reached.contains(&s.ids[usize::from(c)]) {
                used[usize::from(c)] = true;
            }
        }
    }
    let mut out = RecExpr::default();
    let mut done: HashMap<Id, Id> = HashMap::new();
    for top in (0..n).filter(|&k| used[k]).map(|k| s.ids[k]) {
        let mut stack = vec![(top, false)];
        while let Some((id, expanded)) = stack.pop() {
            if done.contains_key(&id) {
                continue;
            }
            let node = &pool[id];
            if expanded {
                let n = node.clone().map_children(|c| done[&c]);
                done.insert(id, out.add(n));
                continue;
            }
            stack.push((id, true));
            let mut first: Vec<Id> = Vec::new();
            if let Some([i, lo, hi, _]) = node.reduction_head() {
                first.extend([lo, hi, i]);
                let fresh = matches!(&pool[i], Tfm::Symbol(s) if renamed.iter().any(|(f, _)| f == s.as_str()));
                first.extend(hc.lookup(&Tfm::Idx(i)).filter(|_| fresh));
            }
            first.extend(node.children().iter().copied());
            stack.extend(first.into_iter().rev().filter(|c| !done.contains_key(c)).map(|c| (c, false)));
        }
    }
    compact(&out, done[&root])
}

/// `def` (a term of `pool`) with `(idx v)` for each left-hand index `v` replaced by the
/// matching subscript term, renaming a reduction index only where a substituted term mentions
/// it (it would be captured). Reading a tensor at its own left-hand indices is `def` itself.
fn splice_with(pool: &mut Hc, def: Id, indices: &[String], subs: &[Id], renamed: &mut Vec<(String, String)>) -> Id {
    let identity = indices.iter().zip(subs).all(|(v, &t)| match &pool.out[t] {
        Tfm::Idx(s) => matches!(&pool.out[*s], Tfm::Symbol(x) if x.as_str() == v),
        _ => false,
    });
    if identity {
        return def;
    }
    let mut subst: HashMap<String, (Id, BTreeSet<String>)> = HashMap::new();
    for (v, &t) in indices.iter().zip(subs) {
        let mut free = BTreeSet::new();
        free_names(&pool.out, t, &mut free);
        subst.insert(v.clone(), (t, free));
    }
    copy(pool, def, &subst, renamed, &mut HashMap::new())
}

/// Copies subterm `id` of `pool` under `subst` (index name → replacement term and its free
/// names; a renamed binder maps to `(idx fresh)` with an empty free set). `memo` holds the
/// copies made under this `subst`, so a shared subterm is copied once.
fn copy(
    pool: &mut Hc,
    id: Id,
    subst: &HashMap<String, (Id, BTreeSet<String>)>,
    renamed: &mut Vec<(String, String)>,
    memo: &mut HashMap<Id, Id>,
) -> Id {
    if let Some(&done) = memo.get(&id) {
        return done;
    }
    let node = pool.out[id].clone();
    let result = match &node {
        Tfm::Idx(s) => {
            let name = sym(&pool.out, *s);
            match subst.get(&name) {
                Some((t, _)) => *t,
                None => id,
            }
        }
        _ => match node.reduction_head() {
            None => {
                let mut n = node.clone();
                for c in n.children_mut() {
                    *c = copy(pool, *c, subst, renamed, memo);
                }
                pool.add(n)
            }
            Some([i, lo, hi, _]) => {
                let name = sym(&pool.out, i);
                let lo2 = copy(pool, lo, subst, renamed, memo);
                let hi2 = copy(pool, hi, subst, renamed, memo);
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
                    let s = pool.add(Tfm::Symbol(Symbol::from(fresh.as_str())));
                    let t = pool.add(Tfm::Idx(s));
                    inner.insert(name.clone(), (t, BTreeSet::new()));
                    renamed.push((fresh.clone(), name.clone()));
                    fresh
                } else {
                    name
                };
                // The body is under another substitution: copies of its own.
                let mut inner_memo = HashMap::new();
                let mut n = node.clone();
                for c in n.children_mut() {
                    *c = if *c == i {
                        pool.add(Tfm::Symbol(Symbol::from(bound.as_str())))
                    } else if *c == lo {
                        lo2
                    } else if *c == hi {
                        hi2
                    } else {
                        copy(pool, *c, &inner, renamed, &mut inner_memo)
                    };
                }
                pool.add(n)
            }
        },
    };
    memo.insert(id, result);
    result
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
