//! Materialization of invariant reductions (Halide's `compute_at` for tensors): fusion puts
//! every local inside its readers, and a reduction that ends up inside loops it does not read
//! would be evaluated once per point of them — linear attention's `Σ_m φ(K)ᵀ V` once per
//! query, a transformer block's key projection once per (query, key), its attention output
//! once per output column. Each such reduction becomes a tensor of its own, over exactly the
//! indices it reads, computed once per point of them, and its place in the term reads it.
//!
//! Which: a float reduction the work model ([`super::work`]) counts at least
//! [`MIN_REPEAT`] times as often as it has points (a transcendental call — `elu`, `exp`,
//! `sigmoid`, … — at least [`MIN_REPEAT_CALL`] times: a feature map inside a sum over the
//! output column, or inside a prefix scan's body over it) (or one inside a tiled plan's logit that
//! does not read the key: a row's `max` or normaliser — one value per row, and the logit left
//! is the dot product the plan packs), that is always present (no `where`, no read
//! of a tensor that may miss points) and safe (it cannot fail wherever it is evaluated: reads
//! at bare indices, no integer division; see `analysis::Facts::safe`), and whose free indices
//! all have declared ranges. The outermost such reduction first; then the new node and its
//! reader are looked at again. At most [`MAX_OUTLINED`] per cascade.
//!
//! The new node `READER.keepN` is an `f32` local (`f64` when the reduction reads an `f64`
//! tensor) placed right before its reader; its indices are the reader's indices it reads, in
//! the reader's order, then the other free ones in the order its reads subscript them (the
//! source's layout), then by name — except that an `osm` or a sum
//! of a product has its output column (the index only its value reads) last, so the tiled
//! plans take it. Floats of locals are exact in
//! the reference evaluators (stored as `f64`), so the cascade means exactly what it did.
//!
//! Sharing (`share_outlined`): a later node that evaluates an outlined term reads the tensor
//! instead — the same term up to the order of `+`/`*` operands, with its free indices the
//! tensor's or all but one named differently (stick-breaking's `softplus(S[p, k])`, outlined
//! for the keys between, is the logit's `softplus(S[p, m])`: read at `m`).

use super::analysis::{FreeIndices, Graph, Kind};
use super::cost::Sizes;
use super::work::{Estimate, Walk, free_sets, node_loops, weight_and_value};
use crate::hir::DType;
use crate::ir::lang::Tfm;
use crate::ir::{Cascade, Def, Node, Role};
use egg::{Id, Language, RecExpr, Symbol};
use std::collections::BTreeSet;

/// A reduction evaluated at least this many times per point of its own indices is
/// materialized.
pub const MIN_REPEAT: f64 = 2.0;

/// A transcendental call ([`TRANSCENDENTAL`]) evaluated at least this many times per point
/// of its own indices is materialized too (a feature map `elu(K) + 1` inside a sum over the
/// output column): an element written and read back costs a few evaluations, so the bar is
/// higher than a reduction's.
pub const MIN_REPEAT_CALL: f64 = 8.0;

/// The functions whose evaluation costs tens of instructions (inline polynomial or libm).
const TRANSCENDENTAL: &[&str] =
    &["exp", "exp2", "log", "log2", "log1p", "tanh", "sigmoid", "gelu", "elu", "silu", "softplus", "erf", "sin", "cos", "pow", "atan2"];

/// True if `node` (of `e`) is a call of a [`TRANSCENDENTAL`] function.
pub(super) fn transcendental_call(e: &RecExpr<Tfm>, node: &Tfm) -> bool {
    matches!(node, Tfm::Call(ch) if matches!(&e[ch[0]], Tfm::Symbol(s) if TRANSCENDENTAL.contains(&s.as_str())))
}

/// The most reductions one cascade gets materialized (each pass looks at the new node again).
pub const MAX_OUTLINED: usize = 64;

/// Materializes every repeated invariant reduction of `c` (see the module docs).
pub fn outline(c: &Cascade, sizes: &Sizes) -> Cascade {
    let mut out = c.clone();
    let mut done = 0;
    let mut pos = 0;
    // Outlined subterms (as first written, with their indices and dtype) → their node.
    let mut made: std::collections::HashMap<(String, Vec<String>, DType), String> = std::collections::HashMap::new();
    while pos < out.order.len() && done < MAX_OUTLINED {
        let ix = out.order[pos];
        let Some((at, indices, dtype)) = candidate(&out, &out.graph[ix], sizes) else {
            pos += 1;
            continue;
        };
        let Def::Expr(e) = &out.graph[ix].def else {
            pos += 1;
            continue;
        };
        let def = subterm(e, at);
        // The same subterm outlined before (for another reader, or another place of this one:
        // Flowformer's `Σ_m φ(K)` reached three readers) and placed before this reader is read
        // instead of computed again.
        let key = (def.to_string(), indices.clone(), dtype);
        let earlier = made.get(&key).filter(|n| out.order[..pos].iter().any(|&k| out.graph[k].name == **n)).cloned();
        let name = earlier.clone().unwrap_or_else(|| fresh_name(&out, &out.graph[ix].name));
        let mut shape = Vec::with_capacity(indices.len());
        for i in &indices {
            match out.range(i) {
                Some(s) => shape.push(s.clone()),
                None => break,
            }
        }
        if shape.len() != indices.len() {
            pos += 1;
            continue;
        }
        out.graph[ix].def = Def::Expr(replaced_by_read(e, at, &name, &indices));
        if earlier.is_some() {
            // The reader is looked at again (its next reduction).
            done += 1;
            continue;
        }
        made.insert(key, name.clone());
        let node = Node { name, dtype, shape, indices, role: Role::Local, def: Def::Expr(def) };
        let nix = out.graph.add_node(node);
        out.order.insert(pos, nix);
        done += 1;
        // Look at the new node (now at `pos`) next, then its reader again.
    }
    share_outlined(&mut out, &made);
    out.relink();
    out
}

/// Every later place where a node evaluates an outlined subterm exactly as written (Flowformer's
/// normaliser `Zc = Σ_m exp(Oc[m] − max Oc)` sums the `exp(…)` outlined for the key-value
/// product) reads its tensor instead: the same indices name the same points, so the read is
/// the value the subterm would compute.
fn share_outlined(out: &mut Cascade, made: &std::collections::HashMap<(String, Vec<String>, DType), String>) {
    // Larger subterms first (one may hold another), in a fixed order.
    let mut made: Vec<(&String, &String)> = made.iter().map(|((text, _, _), name)| (text, name)).collect();
    made.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
    for (text, name) in made {
        let Some(pn) = out.order.iter().position(|&k| out.graph[k].name == *name) else { continue };
        let Node { def: Def::Expr(def), indices, .. } = out.graph[out.order[pn]].clone() else { continue };
        // The subterm as first written, or as it reads now (its own repeated reductions
        // outlined since, as they were in the other readers), up to the order of `+` and `*`
        // operands.
        let mut forms = vec![canonical(&def, last(&def), None)];
        if let Ok(first) = text.parse::<RecExpr<Tfm>>() {
            forms.push(canonical(&first, last(&first), None));
        }
        let root = def.as_ref().last().cloned();
        for k in out.order[pn + 1..].iter().copied() {
            let Def::Expr(mut e) = out.graph[k].def.clone() else { continue };
            let mut changed = false;
            // One place at a time (ids move after a replacement); each replacement removes
            // one occurrence, so this ends.
            while let Some((at, subs)) = (0..e.as_ref().len()).map(Id::from).find_map(|i| {
                if !root.as_ref().is_some_and(|r| e[i].matches(r)) {
                    return None;
                }
                same_up_to_renaming(&e, i, &forms, &indices, &def).map(|subs| (i, subs))
            }) {
                e = replaced_by_read(&e, at, name, &subs);
                changed = true;
            }
            if changed {
                out.graph[k].def = Def::Expr(e);
            }
        }
    }
}

/// The root of a non-empty expression.
fn last(e: &RecExpr<Tfm>) -> Id {
    Id::from(e.as_ref().len().saturating_sub(1))
}

/// The subscripts of a read of the outlined tensor (`indices`, defined by `def`, whose
/// canonical texts are `forms`) that stands for `e`'s subterm at `at`, if it is that term: its
/// free indices are `indices`, or all but one, which the subterm names differently (the
/// outlined key term `softplus(S[p, k])` read at `m` in the logit).
fn same_up_to_renaming(e: &RecExpr<Tfm>, at: Id, forms: &[String], indices: &[String], def: &RecExpr<Tfm>) -> Option<Vec<String>> {
    let mut free = BTreeSet::new();
    super::inline::free_names(e, at, &mut free);
    let mine: BTreeSet<String> = indices.iter().cloned().collect();
    let theirs: Vec<&String> = free.difference(&mine).collect();
    let ours: Vec<&String> = mine.difference(&free).collect();
    match (theirs.as_slice(), ours.as_slice()) {
        ([], []) => forms.contains(&canonical(e, at, None)).then(|| indices.to_vec()),
        ([x], [y]) => {
            // Renaming `x` to `y` must not capture: neither term may bind either name.
            if binds(e, at, &[x.as_str(), y.as_str()]) || binds(def, last(def), &[x.as_str(), y.as_str()]) {
                return None;
            }
            let text = canonical(e, at, Some((x.as_str(), y.as_str())));
            forms.contains(&text).then(|| indices.iter().map(|i| if i == *y { (*x).clone() } else { i.clone() }).collect())
        }
        _ => None,
    }
}

/// True if a reduction in `e` below `id` binds one of `names`.
fn binds(e: &RecExpr<Tfm>, id: Id, names: &[&str]) -> bool {
    let node = &e[id];
    if let Some([i, ..]) = node.reduction_head()
        && matches!(&e[i], Tfm::Symbol(s) if names.contains(&s.as_str()))
    {
        return true;
    }
    node.children().iter().any(|&c| binds(e, c, names))
}

/// `e`'s subterm at `id` as text, the operands of `+` and `*` sorted (equal texts: equal terms
/// up to commutativity) and the free index `rename.0` written as `rename.1`.
fn canonical(e: &RecExpr<Tfm>, id: Id, rename: Option<(&str, &str)>) -> String {
    let node = &e[id];
    if let Tfm::Idx(s) = node
        && let Tfm::Symbol(name) = &e[*s]
    {
        let name = match rename {
            Some((from, to)) if name.as_str() == from => to,
            _ => name.as_str(),
        };
        return format!("(idx {name})");
    }
    let kids: Vec<Id> = node.children().to_vec();
    if kids.is_empty() {
        return node.to_string();
    }
    let mut texts: Vec<String> = kids.iter().map(|&c| canonical(e, c, rename)).collect();
    if matches!(node, Tfm::Add(_) | Tfm::Mul(_)) {
        texts.sort();
    }
    format!("({} {})", node, texts.join(" "))
}

/// The outermost reduction of `node` to materialize: its id, the new node's indices and
/// dtype.
fn candidate(c: &Cascade, node: &Node, sizes: &Sizes) -> Option<(Id, Vec<String>, DType)> {
    let Def::Expr(e) = &node.def else { return None };
    if node.indices.is_empty() {
        return None;
    }
    // The analysis facts (free indices, presence, safety, kind) of every subterm.
    let tensors = c.graph.node_weights().map(|n| (n.name.clone(), n.dtype)).collect();
    let mut g = Graph::new(FreeIndices { tensors });
    let mut class: Vec<Id> = Vec::with_capacity(e.as_ref().len());
    for n in e.as_ref() {
        let id = g.add(n.clone().map_children(|ch| class[usize::from(ch)]));
        class.push(id);
    }
    g.rebuild();
    let free = free_sets(e);
    let walk = Walk { e, sizes, c, free: &free, indices: &node.indices, packed: Default::default(), in_weight: Default::default() };
    let (ctx, inner) = node_loops(node, false, sizes);
    let mut found: Option<Id> = None;
    let mut est = Estimate::default();
    let mut seen = BTreeSet::new();
    let root = Id::from(e.as_ref().len() - 1);
    walk.visit(root, &ctx, inner.as_deref(), &mut est, &mut seen, &mut |id, count, _| {
        if found.is_some() {
            return true;
        }
        let call = transcendental_call(e, &e[id]);
        if id == root || (e[id].reduction_head().is_none() && !call) {
            return false;
        }
        let facts = &g[g.find(class[usize::from(id)])].data;
        let points: f64 = free[usize::from(id)].iter().map(|i| sizes.index.get(i).copied().unwrap_or(1.0).max(1.0)).product();
        let ok = facts.kind == Kind::Float && facts.safe && !facts.partial && free[usize::from(id)].iter().all(|i| c.range(i).is_some());
        // A row's reduction inside a tiled plan's logit (a `max` or a normaliser over the keys,
        // not the dot product): one value per row, so the logit is a packable dot product.
        let row_term = walk.in_weight.borrow().get(&id).is_some_and(|key| !free[usize::from(id)].contains(key));
        let repeat = if call { MIN_REPEAT_CALL } else { MIN_REPEAT };
        if ok && (count >= repeat * points || (row_term && !call)) {
            found = Some(id);
            return true;
        }
        false
    });
    let at = found?;
    let fs = &free[usize::from(at)];
    let mut indices: Vec<String> = node.indices.iter().filter(|i| fs.contains(*i)).cloned().collect();
    // The others in the order the subterm's reads subscript them (`elu(K[b, h, m, e])` keeps
    // K's `m, e`: written and read back along its rows), then any left in name order.
    for i in subscript_order(e, at).into_iter().chain(fs.iter().cloned()) {
        if fs.contains(&i) && !indices.contains(&i) {
            indices.push(i);
        }
    }
    // A reduction the tiled plans take gets its output column (read by the value only) last.
    if let Some(col) = value_column(e, at, &free)
        && let Some(k) = indices.iter().position(|i| *i == col)
    {
        let c = indices.remove(k);
        indices.push(c);
    }
    let wide = reads_f64(c, e, at);
    Some((at, indices, if wide { DType::F64 } else { DType::F32 }))
}

/// The index names that the reads in subterm `at` of `e` subscript with a bare index, in the
/// order of the reads (left to right) and of their subscripts, each once.
fn subscript_order(e: &RecExpr<Tfm>, at: Id) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut stack = vec![at];
    let mut seen = vec![false; usize::from(at) + 1];
    while let Some(x) = stack.pop() {
        if std::mem::replace(&mut seen[usize::from(x)], true) {
            continue;
        }
        if let Tfm::Read(ch) = &e[x] {
            for &s in ch.iter().skip(1) {
                if let Tfm::Idx(n) = &e[s]
                    && let Tfm::Symbol(name) = &e[*n]
                    && !out.iter().any(|o| o == name.as_str())
                {
                    out.push(name.to_string());
                }
            }
        }
        // Children pushed in reverse: popped left to right.
        stack.extend(e[x].children().iter().rev().copied());
    }
    out
}

/// For an `osm` or a sum of a product, an index its value reads and its weight (logit) does
/// not: the output column of the tiled plans.
fn value_column(e: &RecExpr<Tfm>, at: Id, free: &[BTreeSet<String>]) -> Option<String> {
    let (w, v) = weight_and_value(e, free, at)?;
    let at_free = &free[usize::from(at)];
    free[usize::from(v)].iter().find(|i| at_free.contains(*i) && !free[usize::from(w)].contains(*i)).cloned()
}

/// True if the subterm at `at` reads an `f64` tensor.
fn reads_f64(c: &Cascade, e: &RecExpr<Tfm>, at: Id) -> bool {
    let sub = subterm(e, at);
    sub.as_ref().iter().any(|n| match n {
        Tfm::Read(ch) => match &sub[ch[0]] {
            Tfm::Symbol(s) => c.node(s.as_str()).is_some_and(|t| t.dtype == DType::F64),
            _ => false,
        },
        _ => false,
    })
}

/// `e` with its subterm at `at` replaced by a read of tensor `name` at `indices` (each a bare
/// index), dead nodes dropped.
fn replaced_by_read(e: &RecExpr<Tfm>, at: Id, name: &str, indices: &[String]) -> RecExpr<Tfm> {
    let mut read = RecExpr::default();
    let t = read.add(Tfm::Symbol(Symbol::from(name)));
    let mut ch = vec![t];
    for i in indices {
        let s = read.add(Tfm::Symbol(Symbol::from(i.as_str())));
        ch.push(read.add(Tfm::Idx(s)));
    }
    read.add(Tfm::Read(ch.into_boxed_slice()));
    let replaced = super::prefix::replace(e, at, &read);
    subterm(&replaced, Id::from(replaced.as_ref().len() - 1))
}

/// The text of the subterm of `e` rooted at `at` (for tests).
#[cfg(test)]
pub(super) fn subterm_text(e: &RecExpr<Tfm>, at: Id) -> String {
    subterm(e, at).to_string()
}

/// The subterm of `e` at `at` as an expression of its own (only the nodes it reaches).
fn subterm(e: &RecExpr<Tfm>, at: Id) -> RecExpr<Tfm> {
    let n = usize::from(at) + 1;
    let mut live = vec![false; n];
    live[n - 1] = true;
    for k in (0..n).rev() {
        if live[k] {
            for ch in e[Id::from(k)].children() {
                live[usize::from(*ch)] = true;
            }
        }
    }
    let mut out = RecExpr::default();
    let mut map: Vec<Id> = vec![Id::from(0); n];
    for k in 0..n {
        if live[k] {
            map[k] = out.add(e[Id::from(k)].clone().map_children(|ch| map[usize::from(ch)]));
        }
    }
    out
}

/// A node name not in `c`: `READER.keepN`.
fn fresh_name(c: &Cascade, reader: &str) -> String {
    (0..).map(|k| format!("{reader}.keep{k}")).find(|n| c.node(n).is_none()).unwrap_or_else(|| reader.to_string())
}
