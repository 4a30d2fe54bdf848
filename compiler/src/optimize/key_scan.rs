//! A sum or product whose range starts or ends at an enclosing index → a scan along its index.
//!
//! Stick-breaking attention weighs key `m` of row `p` by `β_pm · Π_{m<k<p} (1 - β_pk)`: in log
//! space a sum over the keys *between* `m` and `p`, `Σ_{k = m+1}^{p-1} L[p, k]`, evaluated for
//! every `(p, m)`: O(M) per logit, O(P·M²) per head. Contextual position encoding (CoPE) counts
//! `Σ_{k = m}^{p} σ(q_p·k_k)` the same way. Such a sum, as `(sum k lo hi F g)` with `g` and `F`
//! free of the enclosing index `m`, is a running sum of `g` along `k` read at `m`:
//!
//! (A `prod` the same way, with `·` and 1.)
//!
//! - **suffix** (`lo` = `m + c`, `max(0, m + c)` or `m`; `hi` free of `m`): a scan over a reversed
//!   copy `j` of `k`'s range, `R[.., j] = prev + (if K-1-j < hi && F then g(K-1-j) else 0)`, read
//!   as `R[.., K-1-lo]` (0 where `K-1-lo < 0`: an empty range). Summed from `hi` down towards
//!   `m`, in the order the terms nearest the diagonal come first — no `total − prefix`
//!   cancellation.
//! - **prefix** (`hi` = `m + c` or `min(K, m + c)`; `lo` free of `m`): a scan along `j` = `k`,
//!   `R[.., j] = prev + (if j >= lo && F then g(j) else 0)`, read as `R[.., hi-1]` (0 where
//!   `hi - 1 < 0`).
//!
//! The scan's tensor spans the sum's free indices other than `m` plus `j` (the reader's
//! left-hand indices first, `j` innermost): O(K) work per row instead of O(K) per point.
//!
//! Conditions (else the sum is left alone): `k`'s range is a dim or a fixed size `K`; `hi` is
//! `K` or a `min` with `K` as one argument (suffix), `lo` is 0, a non-negative constant or
//! `max(0, ..)` (prefix) — so the sum's range lies inside `k`'s and the rewrite cannot hide a
//! range failure; `g` and `F` are free of `m`, have no `where` and bind no index named `m`;
//! the reader is a float node (the scan is `f32`, `f64` for an `f64` reader). Runs after
//! filters became bounds.

use super::inline::free_names;
use super::prefix::{has_where_or_binder, idx_name, sym};
use crate::ir::lang::{Const, Tfm};
use crate::ir::{Cascade, Def, Node, Role, Size};
use egg::{Id, Language, RecExpr, Symbol};
use std::collections::BTreeSet;

/// Which end of the sum moves with the enclosing index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// `lo` moves: `Σ_{k >= m + c} g(k)` below a fixed `hi`.
    Suffix,
    /// `hi` moves: `Σ_{k < m + c} g(k)` above a fixed `lo`.
    Prefix,
}

/// A sum found in an expression.
struct Found {
    /// The `sum` or `prod` node.
    at: Id,
    /// True for a `prod`.
    prod: bool,
    /// Its index (`k`) and that index's range.
    k: String,
    size: Size,
    /// The enclosing index its moving end follows (`m`).
    m: String,
    end: End,
    /// The scan's shift `s` (see [`build`]): 0, or the one that makes the read `R[.., m]`
    /// (prefix) or `R[.., K-1-m]` (suffix), always inside `R`, with no guard.
    shift: i64,
    /// True when the read is that unguarded one.
    direct: bool,
    lo: Id,
    hi: Id,
    filter: Id,
    body: Id,
}

/// Replaces every sum with a moving end (see the module docs) by a read of a new scan node.
pub fn key_scans(c: &Cascade) -> Cascade {
    super::prefix::scan_rewrites(c, |out, ix, e, n| {
        let found = find(out, e)?;
        let name = format!("{}.keyscan{n}", out.graph[ix].name);
        let j = fresh_index(out, &format!("{}.{}", found.k, if found.end == End::Suffix { "rev" } else { "run" }));
        out.ranges.push((j.clone(), found.size.clone()));
        let lhs = out.graph[ix].indices.clone();
        let dtype = super::prefix::scan_dtype(out.graph[ix].dtype);
        let (node, read) = build(e, &found, &name, &j, &lhs, dtype, out);
        Some((node, found.at, read))
    })
}

/// An index name not yet in `c`'s ranges.
fn fresh_index(c: &Cascade, base: &str) -> String {
    let mut name = base.to_string();
    let mut n = 1;
    while c.range(&name).is_some() {
        n += 1;
        name = format!("{base}{n}");
    }
    name
}

fn int(e: &RecExpr<Tfm>, id: Id) -> Option<i64> {
    match e[id] {
        Tfm::Const(Const::Int(v)) => Some(v),
        _ => None,
    }
}

/// `Some((m, c))` if `id` is `(idx m)` or `(+ (idx m) c)` / `(+ c (idx m))` for a constant `c`.
fn index_plus(e: &RecExpr<Tfm>, id: Id) -> Option<(String, i64)> {
    if let Some(m) = idx_name(e, id) {
        return Some((m, 0));
    }
    match &e[id] {
        Tfm::Add([a, b]) => match (idx_name(e, *a), int(e, *b), int(e, *a), idx_name(e, *b)) {
            (Some(m), Some(c), ..) | (_, _, Some(c), Some(m)) => Some((m, c)),
            _ => None,
        },
        Tfm::Sub([a, b]) => Some((idx_name(e, *a)?, -int(e, *b)?)),
        _ => None,
    }
}

/// The arguments of `(call name a b)`.
fn call2(e: &RecExpr<Tfm>, id: Id, name: &str) -> Option<(Id, Id)> {
    match &e[id] {
        Tfm::Call(ch) if ch.len() == 3 && sym(e, ch[0]).as_deref() == Some(name) => Some((ch[1], ch[2])),
        _ => None,
    }
}

/// True if `id` is `k`'s whole extent `K` (its dim or its fixed size).
fn is_extent(e: &RecExpr<Tfm>, id: Id, size: &Size) -> bool {
    match (size, &e[id]) {
        (Size::Dim(d), Tfm::Dim(s)) => sym(e, *s).as_deref() == Some(d.as_str()),
        (Size::Fixed(n), _) => int(e, id) == Some(*n),
        _ => false,
    }
}

/// `Some(m, c)` for a suffix sum's `lo`: `m + c` with `c >= 0`, or `max(0, m + c)`.
fn moving_lo(e: &RecExpr<Tfm>, lo: Id) -> Option<(String, i64)> {
    if let Some((a, b)) = call2(e, lo, "max") {
        let (zero, x) = if int(e, a) == Some(0) { (a, b) } else { (b, a) };
        if int(e, zero) == Some(0) {
            return index_plus(e, x);
        }
        return None;
    }
    index_plus(e, lo).filter(|(_, c)| *c >= 0)
}

/// `Some(m, c)` for a prefix sum's `hi`: `min(K, m + c)` (either order), or `m + c` with
/// `c <= 1` and `m` ranging over `k`'s extent (then `hi <= m + 1 <= K`).
fn moving_hi(c: &Cascade, e: &RecExpr<Tfm>, hi: Id, size: &Size) -> Option<(String, i64)> {
    if let Some((a, b)) = call2(e, hi, "min") {
        let x = if is_extent(e, a, size) {
            b
        } else if is_extent(e, b, size) {
            a
        } else {
            return None;
        };
        return index_plus(e, x);
    }
    index_plus(e, hi).filter(|(m, k)| *k <= 1 && c.range(m) == Some(size))
}

/// True if `hi` is at most `k`'s extent by its form: `K`, or `min` with `K` as an argument.
fn capped(e: &RecExpr<Tfm>, hi: Id, size: &Size) -> bool {
    is_extent(e, hi, size) || call2(e, hi, "min").is_some_and(|(a, b)| is_extent(e, a, size) || is_extent(e, b, size))
}

/// True if `lo` is at least 0 by its form: a non-negative constant or `max(0, ..)`.
fn non_negative(e: &RecExpr<Tfm>, lo: Id) -> bool {
    int(e, lo).is_some_and(|v| v >= 0) || call2(e, lo, "max").is_some_and(|(a, b)| int(e, a) == Some(0) || int(e, b) == Some(0))
}

fn find(c: &Cascade, e: &RecExpr<Tfm>) -> Option<Found> {
    for (at, node) in e.as_ref().iter().enumerate() {
        let (prod, [i, lo, hi, f, body]) = match node {
            Tfm::Sum(ch) => (false, ch),
            Tfm::Prod(ch) => (true, ch),
            _ => continue,
        };
        let Some(k) = sym(e, *i) else { continue };
        let Some(size) = c.range(&k).cloned() else { continue };
        let (end, m, off) = if let Some((m, off)) = moving_lo(e, *lo).filter(|_| capped(e, *hi, &size)) {
            (End::Suffix, m, off)
        } else if let Some((m, off)) = moving_hi(c, e, *hi, &size).filter(|_| non_negative(e, *lo)) {
            (End::Prefix, m, off)
        } else {
            continue;
        };
        // `m + 0` or `m + 1` with `m` over `k`'s own range: the moving end is `m` or `m + 1`
        // (a `max(0, ..)` or `min(K, ..)` around it changes nothing there).
        let direct = (off == 0 || off == 1) && c.range(&m) == Some(&size);
        let shift = match (direct, end) {
            (false, _) => 0,
            (true, End::Suffix) => off,
            (true, End::Prefix) => 1 - off,
        };
        if m == k {
            continue;
        }
        // The fixed end must not move with `m` either.
        let mut fixed = BTreeSet::new();
        free_names(e, if end == End::Suffix { *hi } else { *lo }, &mut fixed);
        let mut inner = BTreeSet::new();
        free_names(e, *body, &mut inner);
        free_names(e, *f, &mut inner);
        if fixed.contains(&m) || fixed.contains(&k) || inner.contains(&m) {
            continue;
        }
        if has_where_or_binder(e, *body, &m) || has_where_or_binder(e, *f, &m) {
            continue;
        }
        return Some(Found { at: Id::from(at), prod, k, size, m, end, shift, direct, lo: *lo, hi: *hi, filter: *f, body: *body });
    }
    None
}

/// Copies subterm `id` of `e` into `out`, replacing free `(idx from)` by the subterm `to` of
/// `out` (already added).
fn copy_subst(out: &mut RecExpr<Tfm>, e: &RecExpr<Tfm>, id: Id, from: &str, to: Id) -> Id {
    let node = &e[id];
    if let Tfm::Idx(s) = node
        && sym(e, *s).as_deref() == Some(from)
    {
        return to;
    }
    let head = node.reduction_head();
    let shadowed = head.is_some_and(|[i, ..]| sym(e, i).as_deref() == Some(from));
    let mut n = node.clone();
    for ch in n.children_mut() {
        // Under a binder of `from`, its body and filter see the binder's own index.
        let bound_part = shadowed && head.is_some_and(|[i, lo, hi, _]| *ch != i && *ch != lo && *ch != hi);
        *ch = if bound_part { copy_plain(out, e, *ch) } else { copy_subst(out, e, *ch, from, to) };
    }
    out.add(n)
}

/// Copies subterm `id` of `e` into `out` unchanged.
fn copy_plain(out: &mut RecExpr<Tfm>, e: &RecExpr<Tfm>, id: Id) -> Id {
    let n = e[id].clone().map_children(|ch| copy_plain(out, e, ch));
    out.add(n)
}

/// `K - 1 - x` in `out` for `k`'s extent `K`.
fn reversed(out: &mut RecExpr<Tfm>, size: &Size, x: Id) -> Id {
    let last = match size {
        Size::Dim(d) => {
            let s = out.add(Tfm::Symbol(Symbol::from(d.as_str())));
            let dim = out.add(Tfm::Dim(s));
            let one = out.add(Tfm::Const(Const::Int(1)));
            out.add(Tfm::Sub([dim, one]))
        }
        Size::Fixed(n) => out.add(Tfm::Const(Const::Int(n - 1))),
    };
    out.add(Tfm::Sub([last, x]))
}

fn build(e: &RecExpr<Tfm>, f: &Found, name: &str, j: &str, lhs: &[String], dtype: crate::hir::DType, c: &Cascade) -> (Node, RecExpr<Tfm>) {
    // The scan's indices: the sum's free indices but `m`, the reader's left-hand ones first in
    // its order, then `j` innermost.
    let mut free = BTreeSet::new();
    free_names(e, f.at, &mut free);
    free.remove(&f.m);
    let mut indices: Vec<String> = free.into_iter().collect();
    indices.sort_by_key(|i| lhs.iter().position(|l| l == i).unwrap_or(usize::MAX));
    indices.push(j.to_string());
    let shape = indices.iter().map(|i| c.range(i).cloned().unwrap_or(Size::Fixed(1))).collect();

    // body: prev + (if in range && F(k) then g(k) else 0), k = K-1-j+s (suffix) or j-s
    // (prefix); a product: prev · (.. else 1). With the shift s = 1, R[.., j] sums the terms
    // before k (an exclusive scan; k = K or -1 at j = 0 is outside every range).
    let mut b = RecExpr::default();
    let tsym = b.add(Tfm::Symbol(Symbol::from(name)));
    let one = b.add(Tfm::Const(Const::Int(1)));
    let prev = b.add(Tfm::Prev([tsym, one]));
    let jsym = b.add(Tfm::Symbol(Symbol::from(j)));
    let jidx = b.add(Tfm::Idx(jsym));
    let sh = b.add(Tfm::Const(Const::Int(f.shift)));
    let kval = match f.end {
        End::Suffix => {
            let r = reversed(&mut b, &f.size, jidx);
            if f.shift == 0 { r } else { b.add(Tfm::Add([r, sh])) }
        }
        End::Prefix => {
            if f.shift == 0 {
                jidx
            } else {
                b.add(Tfm::Sub([jidx, sh]))
            }
        }
    };
    let g = copy_subst(&mut b, e, f.body, &f.k, kval);
    let filt = copy_subst(&mut b, e, f.filter, &f.k, kval);
    let in_range = match f.end {
        End::Suffix => {
            let hi = copy_plain(&mut b, e, f.hi);
            b.add(Tfm::Lt([kval, hi]))
        }
        End::Prefix => {
            let lo = copy_plain(&mut b, e, f.lo);
            b.add(Tfm::Ge([kval, lo]))
        }
    };
    let cond = if matches!(b[filt], Tfm::Const(Const::Bool(true))) { in_range } else { b.add(Tfm::And([in_range, filt])) };
    let unit = Const::float(if f.prod { 1.0 } else { 0.0 });
    let skip = b.add(Tfm::Const(unit));
    let step = b.add(Tfm::If([cond, g, skip]));
    b.add(if f.prod { Tfm::Mul([prev, step]) } else { Tfm::Add([prev, step]) });
    let mut init = RecExpr::default();
    init.add(Tfm::Const(unit));
    let node = Node {
        name: name.to_string(),
        dtype,
        shape,
        indices: indices.clone(),
        role: Role::Local,
        def: Def::Scan { index: j.to_string(), init, body: b },
    };

    // The read: R[.., K-1-m] (suffix) or R[.., m] (prefix) when direct; else
    // (if at >= 0 then R[.., at] else 0 or 1), at = K-1-lo (suffix) or hi-1 (prefix).
    let mut read = RecExpr::default();
    let at = if f.direct {
        let ms = read.add(Tfm::Symbol(Symbol::from(f.m.as_str())));
        let mi = read.add(Tfm::Idx(ms));
        match f.end {
            End::Suffix => reversed(&mut read, &f.size, mi),
            End::Prefix => mi,
        }
    } else {
        match f.end {
            End::Suffix => {
                let lo = copy_plain(&mut read, e, f.lo);
                reversed(&mut read, &f.size, lo)
            }
            End::Prefix => {
                let hi = copy_plain(&mut read, e, f.hi);
                let one = read.add(Tfm::Const(Const::Int(1)));
                read.add(Tfm::Sub([hi, one]))
            }
        }
    };
    let t = read.add(Tfm::Symbol(Symbol::from(name)));
    let mut ch = vec![t];
    for i in &indices[..indices.len() - 1] {
        let s = read.add(Tfm::Symbol(Symbol::from(i.as_str())));
        ch.push(read.add(Tfm::Idx(s)));
    }
    ch.push(at);
    let r = read.add(Tfm::Read(ch.into_boxed_slice()));
    if !f.direct {
        let zero_i = read.add(Tfm::Const(Const::Int(0)));
        let nonempty = read.add(Tfm::Ge([at, zero_i]));
        let empty = read.add(Tfm::Const(unit));
        read.add(Tfm::If([nonempty, r, empty]));
    }
    (node, read)
}
