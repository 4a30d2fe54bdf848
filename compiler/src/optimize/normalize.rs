//! Deterministic normalizations that always pay off, run outside the e-graph (as e-graph
//! rules their `&&` combinations blow up):
//! - [`float_filters`], before saturation: a `where` travels out of strict operations
//!   (arithmetic, functions, casts, comparisons; not out of `if` branches, which are lazy)
//!   and, at the top of a reduction's body, joins the reduction's filter — absent points are
//!   skipped either way. Conjunctions are flattened and deduplicated (terms are hash-consed).
//! - [`filters_to_bounds`], after extraction: a filter conjunct that bounds the reduction's
//!   own index by a term free of it becomes `lo`/`hi` (`m <= p` → `hi = min(hi, p + 1)`;
//!   `p - m < W` → `lo = max(lo, p - W + 1)`), so masked points are never visited. Only a
//!   bound that cannot fail moves (reads at bare indices, no division, no arithmetic that can
//!   overflow): bounds are evaluated even when the range is empty or an earlier conjunct
//!   (`n + 1 < N && m < Len[n + 1]`) would have short-circuited. The arithmetic the rewrite
//!   adds (`+ 1`, `p - W`) cannot overflow either: an operand that is not provably small (a
//!   param, a tensor read) is first clamped to ±2^62, which keeps the range exactly what the
//!   filter selects because indices and dims are at most 2^40 (`bind::MAX_DIM`): with
//!   `W = i64::MIN`, `p - m < W` selects nothing and `lo = max(lo, p - 2^62 + 1)` is empty.

use super::inline::free_names;
use crate::ir::lang::{Const, Tfm};
use egg::{Id, Language, RecExpr, Symbol};
use std::collections::{BTreeSet, HashMap};

/// A hash-consing builder: identical subterms get the same id.
pub(super) struct Hc {
    pub(super) out: RecExpr<Tfm>,
    seen: HashMap<Tfm, Id>,
}

impl Hc {
    pub(super) fn new() -> Hc {
        Hc { out: RecExpr::default(), seen: HashMap::new() }
    }

    pub(super) fn add(&mut self, n: Tfm) -> Id {
        if let Some(&id) = self.seen.get(&n) {
            return id;
        }
        let id = self.out.add(n.clone());
        self.seen.insert(n, id);
        id
    }

    /// The id of `n` if it was added.
    pub(super) fn lookup(&self, n: &Tfm) -> Option<Id> {
        self.seen.get(n).copied()
    }

    pub(super) fn konst(&mut self, c: Const) -> Id {
        self.add(Tfm::Const(c))
    }

    /// Conjuncts of `id` (flattening `&&`, dropping `true`).
    fn conjuncts(&self, id: Id, out: &mut Vec<Id>) {
        match &self.out[id] {
            Tfm::And([a, b]) => {
                self.conjuncts(*a, out);
                self.conjuncts(*b, out);
            }
            Tfm::Const(Const::Bool(true)) => {}
            _ => {
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
    }

    fn and_all(&mut self, parts: &[Id]) -> Id {
        let mut acc: Option<Id> = None;
        for &p in parts {
            acc = Some(match acc {
                None => p,
                Some(a) => self.add(Tfm::And([a, p])),
            });
        }
        acc.unwrap_or_else(|| self.konst(Const::Bool(true)))
    }

    /// The expression rooted at `root`, compacted so the root is the last node (hash-consing
    /// can make the root an earlier node, and earlier passes may leave unused nodes).
    pub(super) fn finish(self, root: Id) -> RecExpr<Tfm> {
        compact(&self.out, root)
    }

    fn and(&mut self, a: Id, b: Id) -> Id {
        let mut parts = Vec::new();
        self.conjuncts(a, &mut parts);
        self.conjuncts(b, &mut parts);
        self.and_all(&parts)
    }
}

/// Child positions `[index, lo, hi, filter]` and the body positions of a reduction node.
fn slots(n: &Tfm) -> Option<([usize; 4], std::ops::Range<usize>)> {
    match n {
        Tfm::Sum(_) | Tfm::Max(_) | Tfm::Min(_) | Tfm::Prod(_) => Some(([0, 1, 2, 3], 4..5)),
        // An `osmz`'s sink (position 6) is outside the reduction, as its bounds are.
        Tfm::Osm(_) | Tfm::OsmZ(_) => Some(([0, 1, 2, 3], 4..6)),
        Tfm::URed(c) if c.len() >= 7 => Some(([2, 3, 4, 5], 6..c.len())),
        _ => None,
    }
}

/// True for operations whose result is absent when any operand is.
fn strict(n: &Tfm) -> bool {
    matches!(
        n,
        Tfm::Add(_)
            | Tfm::Sub(_)
            | Tfm::Mul(_)
            | Tfm::Div(_)
            | Tfm::Rem(_)
            | Tfm::Neg(_)
            | Tfm::Not(_)
            | Tfm::Lt(_)
            | Tfm::Le(_)
            | Tfm::Gt(_)
            | Tfm::Ge(_)
            | Tfm::Eq(_)
            | Tfm::Ne(_)
            | Tfm::Call(_)
            | Tfm::Cast(_)
            | Tfm::Read(_)
    )
}

/// Floats `where` filters out of strict operations and into reduction filters.
pub fn float_filters(e: &RecExpr<Tfm>) -> RecExpr<Tfm> {
    let mut hc = Hc::new();
    let mut map: Vec<Id> = Vec::with_capacity(e.as_ref().len());
    for node in e.as_ref() {
        let n = node.clone().map_children(|c| map[usize::from(c)]);
        let id = float_node(&mut hc, n);
        map.push(id);
    }
    let root = *map.last().expect("non-empty expression");
    hc.finish(root)
}

/// The nodes of `e` reachable from `root`, in order, with `root` last.
pub fn compact(e: &RecExpr<Tfm>, root: Id) -> RecExpr<Tfm> {
    // Only what `root` reaches is visited (`e` may be a large shared pool).
    let mut reached: Vec<Id> = Vec::new();
    let mut seen: HashMap<Id, Id> = HashMap::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if seen.insert(id, id).is_none() {
            reached.push(id);
            stack.extend(e[id].children().iter().copied());
        }
    }
    reached.sort_unstable();
    let mut out = RecExpr::default();
    for id in reached {
        // Children precede their parent and are reached, so they are mapped already.
        let n = e[id].clone().map_children(|c| seen[&c]);
        seen.insert(id, out.add(n));
    }
    out
}

fn float_node(hc: &mut Hc, n: Tfm) -> Id {
    // where g (where h x) => where (g && h) x
    if let Tfm::Where([g, x]) = n {
        if let Tfm::Where([h, y]) = hc.out[x].clone() {
            let gh = hc.and(g, h);
            return hc.add(Tfm::Where([gh, y]));
        }
        return hc.add(Tfm::Where([g, x]));
    }
    if strict(&n) {
        // Pull the filters of `where` operands out: op(.., where g x, ..) => where g op(.., x, ..).
        let mut conds = Vec::new();
        let mut n = n;
        for c in n.children_mut() {
            if let Tfm::Where([g, x]) = hc.out[*c].clone() {
                hc.conjuncts(g, &mut conds);
                *c = x;
            }
        }
        let inner = hc.add(n);
        if conds.is_empty() {
            return inner;
        }
        let g = hc.and_all(&conds);
        return hc.add(Tfm::Where([g, inner]));
    }
    // A reduction's body `where g b` joins its filter.
    if let Some(([_, _, _, fs], bodies)) = slots(&n) {
        let mut n = n;
        let children = n.children().to_vec();
        let mut conds = Vec::new();
        let mut new_children = children.clone();
        for k in bodies {
            if let Tfm::Where([g, x]) = hc.out[children[k]].clone() {
                hc.conjuncts(g, &mut conds);
                new_children[k] = x;
            }
        }
        if !conds.is_empty() {
            let mut all = Vec::new();
            hc.conjuncts(children[fs], &mut all);
            for c in conds {
                if !all.contains(&c) {
                    all.push(c);
                }
            }
            new_children[fs] = hc.and_all(&all);
        }
        for (slot, c) in n.children_mut().iter_mut().enumerate() {
            *c = new_children[slot];
        }
        return hc.add(n);
    }
    hc.add(n)
}

/// Moves filter conjuncts that bound a reduction's own index into its `lo`/`hi`.
pub fn filters_to_bounds(e: &RecExpr<Tfm>) -> RecExpr<Tfm> {
    let mut hc = Hc::new();
    let mut map: Vec<Id> = Vec::with_capacity(e.as_ref().len());
    for node in e.as_ref() {
        let n = node.clone().map_children(|c| map[usize::from(c)]);
        let id = bound_node(&mut hc, n);
        map.push(id);
    }
    let root = *map.last().expect("non-empty expression");
    hc.finish(root)
}

fn sym_of(hc: &Hc, id: Id) -> Option<Symbol> {
    match &hc.out[id] {
        Tfm::Symbol(s) => Some(*s),
        _ => None,
    }
}

/// `Some(e)` if `x` is `(idx i)`.
fn is_idx(hc: &Hc, x: Id, i: Symbol) -> bool {
    matches!(&hc.out[x], Tfm::Idx(s) if sym_of(hc, *s) == Some(i))
}

/// True if evaluating `x` cannot raise a run-time error: reads only at bare indices, no
/// division or remainder (bounds are integers, whose division can fail).
fn safe_term(hc: &Hc, x: Id) -> bool {
    let mut stack = vec![x];
    while let Some(id) = stack.pop() {
        let n = &hc.out[id];
        match n {
            Tfm::Read(ch) if !ch[1..].iter().all(|c| matches!(hc.out[*c], Tfm::Idx(_))) => return false,
            Tfm::Div(_) | Tfm::Rem(_) | Tfm::Prev(_) | Tfm::Where(_) => return false,
            _ => stack.extend(n.children().iter().copied()),
        }
    }
    true
}

/// Operands beyond this are clamped to it before the rewrite adds to them.
const CLAMP: i64 = 1 << 62;

/// An upper bound of `|x|` for an integer term built from indices and dims (at most
/// `MAX_DIM`), integer constants, `+ - * neg` and `min max abs neg` calls; `None` for anything
/// else (params, tensor reads: any i64).
fn magnitude(hc: &Hc, x: Id) -> Option<u128> {
    let m = |c: Id| magnitude(hc, c);
    match &hc.out[x] {
        Tfm::Idx(_) | Tfm::Dim(_) => Some(crate::bind::MAX_DIM as u128),
        Tfm::Const(Const::Int(c)) => Some(u128::from(c.unsigned_abs())),
        Tfm::Add([a, b]) | Tfm::Sub([a, b]) => Some(m(*a)? + m(*b)?),
        Tfm::Mul([a, b]) => m(*a)?.checked_mul(m(*b)?),
        Tfm::Neg(a) => m(*a),
        Tfm::Call(ch) => match (call_name(hc, ch), &ch[1..]) {
            (Some("min" | "max"), [a, b]) => Some(m(*a)?.max(m(*b)?)),
            (Some("abs" | "neg"), [a]) => m(*a),
            _ => None,
        },
        _ => None,
    }
}

fn call_name<'a>(hc: &'a Hc, ch: &[Id]) -> Option<&'a str> {
    match &hc.out[*ch.first()?] {
        Tfm::Symbol(s) => Some(s.as_str()),
        _ => None,
    }
}

/// True if evaluating the integer term `x` cannot overflow: every `+ - * neg` (and `abs`,
/// `neg` call) has operands of known magnitude and a result within i64, and there is no cast
/// to `i32` (from an integer it can fail) and no `sum`, `prod` or user reduction (an integer
/// sum can overflow; `max` and `min` cannot).
fn cannot_overflow(hc: &Hc, x: Id) -> bool {
    let fits = |v: Option<u128>| v.is_some_and(|v| v <= i64::MAX as u128);
    let mut stack = vec![x];
    while let Some(id) = stack.pop() {
        let n = &hc.out[id];
        let ok = match n {
            Tfm::Add(_) | Tfm::Sub(_) | Tfm::Mul(_) | Tfm::Neg(_) => fits(magnitude(hc, id)),
            Tfm::Call(ch) if matches!(call_name(hc, ch), Some("abs" | "neg")) => fits(magnitude(hc, id)),
            Tfm::Cast([t, _]) => !matches!(&hc.out[*t], Tfm::Symbol(s) if s.as_str() == "i32"),
            Tfm::Sum(_) | Tfm::Prod(_) | Tfm::URed(_) | Tfm::Osm(_) | Tfm::OsmZ(_) => false,
            _ => true,
        };
        if !ok {
            return false;
        }
        stack.extend(n.children().iter().copied());
    }
    true
}

/// `x`, clamped to `±CLAMP` unless it is provably smaller.
fn clamped(hc: &mut Hc, x: Id) -> Id {
    if magnitude(hc, x).is_some_and(|m| m <= CLAMP as u128) {
        return x;
    }
    let (lo, hi) = (hc.konst(Const::Int(-CLAMP)), hc.konst(Const::Int(CLAMP)));
    let capped = call2(hc, "min", x, hi);
    call2(hc, "max", capped, lo)
}

/// `x + 1` without overflow: `x` is capped at `CLAMP` first unless it is provably smaller
/// (an index never exceeds `MAX_DIM`, so `i <= x` and `i > x` select the same points).
fn plus_one(hc: &mut Hc, x: Id) -> Id {
    let one = hc.konst(Const::Int(1));
    let x = if magnitude(hc, x).is_some_and(|m| m <= CLAMP as u128) {
        x
    } else {
        let cap = hc.konst(Const::Int(CLAMP));
        call2(hc, "min", x, cap)
    };
    hc.add(Tfm::Add([x, one]))
}

/// `e - w + 1` (the `lo` of `e - i < w`) without overflow, or `None` when neither operand is
/// provably small (clamping both would change which points the filter selects).
fn diff_plus_one(hc: &mut Hc, e: Id, w: Id) -> Option<Id> {
    let small = |m: Option<u128>| m.is_some_and(|m| m <= (CLAMP / 2) as u128);
    let (me, mw) = (magnitude(hc, e), magnitude(hc, w));
    let (e, w) = match (me, mw) {
        (Some(a), Some(b)) if a + b < i64::MAX as u128 => (e, w),
        _ if small(me) => (e, clamped(hc, w)),
        _ if small(mw) => (clamped(hc, e), w),
        _ => return None,
    };
    let one = hc.konst(Const::Int(1));
    let d = hc.add(Tfm::Sub([e, w]));
    Some(hc.add(Tfm::Add([d, one])))
}

fn free_of(hc: &Hc, x: Id, i: Symbol) -> bool {
    let mut free = BTreeSet::new();
    free_names(&hc.out, x, &mut free);
    !free.contains(i.as_str())
}

fn call2(hc: &mut Hc, f: &str, a: Id, b: Id) -> Id {
    let s = hc.add(Tfm::Symbol(Symbol::from(f)));
    hc.add(Tfm::Call(vec![s, a, b].into_boxed_slice()))
}

fn bound_node(hc: &mut Hc, n: Tfm) -> Id {
    let Some(([is, ls, hs, fs], _)) = slots(&n) else { return hc.add(n) };
    let ch = n.children().to_vec();
    let (i, lo, hi, f) = (ch[is], ch[ls], ch[hs], ch[fs]);
    let Some(isym) = sym_of(hc, i) else { return hc.add(n) };
    let mut conjs = Vec::new();
    hc.conjuncts(f, &mut conjs);
    let (mut lo2, mut hi2) = (lo, hi);
    let mut rest = Vec::new();
    // A bound term: free of `i`, cannot fail, cannot overflow.
    let bound = |hc: &Hc, e: Id| free_of(hc, e, isym) && safe_term(hc, e) && cannot_overflow(hc, e);
    for c in conjs {
        // `e < i` is `i > e` (and so on): the index on the left for the arms below.
        let mirrored = |b: Id, a: Id| is_idx(hc, a, isym) && !is_idx(hc, b, isym);
        let node = match hc.out[c].clone() {
            Tfm::Lt([b, a]) if mirrored(b, a) => Tfm::Gt([a, b]),
            Tfm::Le([b, a]) if mirrored(b, a) => Tfm::Ge([a, b]),
            Tfm::Gt([b, a]) if mirrored(b, a) => Tfm::Lt([a, b]),
            Tfm::Ge([b, a]) if mirrored(b, a) => Tfm::Le([a, b]),
            n => n,
        };
        let moved = match node {
            // i <= e  =>  hi = min(hi, e + 1)
            Tfm::Le([a, b]) if is_idx(hc, a, isym) && bound(hc, b) => {
                let e1 = plus_one(hc, b);
                hi2 = call2(hc, "min", hi2, e1);
                true
            }
            // i < e  =>  hi = min(hi, e)
            Tfm::Lt([a, b]) if is_idx(hc, a, isym) && bound(hc, b) => {
                hi2 = call2(hc, "min", hi2, b);
                true
            }
            // i >= e  =>  lo = max(lo, e)
            Tfm::Ge([a, b]) if is_idx(hc, a, isym) && bound(hc, b) => {
                lo2 = call2(hc, "max", lo2, b);
                true
            }
            // i > e  =>  lo = max(lo, e + 1)
            Tfm::Gt([a, b]) if is_idx(hc, a, isym) && bound(hc, b) => {
                let e1 = plus_one(hc, b);
                lo2 = call2(hc, "max", lo2, e1);
                true
            }
            // e - i < w  =>  lo = max(lo, e - w + 1)
            Tfm::Lt([d, w]) if bound(hc, w) => match hc.out[d].clone() {
                Tfm::Sub([e, x]) if is_idx(hc, x, isym) && bound(hc, e) => match diff_plus_one(hc, e, w) {
                    Some(ew1) => {
                        lo2 = call2(hc, "max", lo2, ew1);
                        true
                    }
                    None => false,
                },
                _ => false,
            },
            _ => false,
        };
        if !moved {
            rest.push(c);
        }
    }
    let f2 = hc.and_all(&rest);
    let mut n = n;
    let slots_new = [(ls, lo2), (hs, hi2), (fs, f2)];
    for (slot, c) in n.children_mut().iter_mut().enumerate() {
        if let Some((_, v)) = slots_new.iter().find(|(k, _)| *k == slot) {
            *c = *v;
        }
    }
    hc.add(n)
}
