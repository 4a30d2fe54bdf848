//! Split reduction (for decode, `p = 1`, where one query must traverse a long `m`): every
//! reduction over index `m` becomes an outer reduction over chunks `c` of `C` points and an
//! inner one over `m` in chunk `c`, so the chunks are independent and a schedule can run them
//! in parallel and combine (Lean Attention, flash-decoding).
//! - `sum/max/min/prod`: nested reductions (exact: an empty chunk gives the identity);
//! - `osm_m(s, v) = osm_c(lse_c, osm_{m∈c}(s, v))` with `lse_c = mx_c + log Σ_{m∈c} e^{s - mx_c}`:
//!   the associative (m, l, o) combine, written in the IR's own nodes. A chunk with no point is
//!   absent (so a fully masked row stays 0); a chunk whose logits are all `-inf` has logit
//!   `-inf` and value 0 (so it adds nothing, and an all-`-inf` row stays NaN, as unsplit).
//!
//! Chunk `c` runs over `lo / C .. ceil(hi / C)` and the inner `m` over
//! `max(lo, c·C) .. min(hi, (c + 1)·C)`; `c` is declared with `m`'s range (it never exceeds it).

use super::normalize::Hc;
use crate::ir::lang::{Const, Tfm};
use crate::ir::{Cascade, Def};
use egg::{Id, Language, RecExpr, Symbol};

/// `--split` names an index the kernel does not have.
#[derive(Debug, thiserror::Error)]
#[error("cannot split index '{index}': kernel '{kernel}' has no such index; its indices: {available}")]
pub struct UnknownIndex {
    /// The index asked for.
    pub index: String,
    /// The kernel (cascade).
    pub kernel: String,
    /// Its indices, comma-separated (or `none`).
    pub available: String,
}

/// Checks that `index` is an index of `c` (what [`split`] would split; it ignores others).
pub fn check_index(c: &Cascade, index: &str) -> Result<(), UnknownIndex> {
    if c.range(index).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = c.ranges.iter().map(|(n, _)| n.as_str()).collect();
    let available = if names.is_empty() { "none".to_string() } else { names.join(", ") };
    Err(UnknownIndex { index: index.to_string(), kernel: c.name.clone(), available })
}

/// Splits every reduction over `index` in `c` into chunks of `chunk` points (`chunk >= 1`).
/// The chunk index is named `{index}.chunk`: a `.` no source name has, so it cannot collide with
/// a user's index (`m_chunk`).
pub fn split(c: &Cascade, index: &str, chunk: i64) -> Cascade {
    let chunk = chunk.max(1);
    let cname = format!("{index}.chunk");
    let mut out = c.clone();
    if let Some(size) = c.range(index).cloned()
        && out.range(&cname).is_none()
    {
        out.ranges.push((cname.clone(), size));
    }
    for ix in out.graph.node_indices().collect::<Vec<_>>() {
        let node = &mut out.graph[ix];
        let f = |e: &RecExpr<Tfm>| split_expr(e, index, chunk, &cname);
        node.def = match &node.def {
            Def::Input => Def::Input,
            Def::Expr(e) => Def::Expr(f(e)),
            Def::Scan { index: i, init, body } => Def::Scan { index: i.clone(), init: f(init), body: f(body) },
        };
    }
    out.relink();
    out
}

fn split_expr(e: &RecExpr<Tfm>, index: &str, chunk: i64, cname: &str) -> RecExpr<Tfm> {
    let mut hc = Hc::new();
    let mut map: Vec<Id> = Vec::with_capacity(e.as_ref().len());
    for node in e.as_ref() {
        let n = node.clone().map_children(|c| map[usize::from(c)]);
        let id = split_node(&mut hc, n, index, chunk, cname);
        map.push(id);
    }
    let root = *map.last().expect("non-empty expression");
    hc.finish(root)
}

fn split_node(hc: &mut Hc, n: Tfm, index: &str, chunk: i64, cname: &str) -> Id {
    let head = match &n {
        Tfm::Sum(c) | Tfm::Max(c) | Tfm::Min(c) | Tfm::Prod(c) => Some([c[0], c[1], c[2], c[3]]),
        Tfm::Osm(c) => Some([c[0], c[1], c[2], c[3]]),
        _ => None,
    };
    let Some([i, lo, hi, f]) = head else { return hc.add(n) };
    if !matches!(&hc.out[i], Tfm::Symbol(s) if s.as_str() == index) {
        return hc.add(n);
    }
    let cc = hc.konst(Const::Int(chunk));
    let one = hc.konst(Const::Int(1));
    let csym = hc.add(Tfm::Symbol(Symbol::from(cname)));
    let cidx = hc.add(Tfm::Idx(csym));
    // Chunk range and the inner range of chunk c.
    let lo_c = hc.add(Tfm::Div([lo, cc]));
    let cm1 = hc.konst(Const::Int(chunk - 1));
    let hi_up = hc.add(Tfm::Add([hi, cm1]));
    let hi_c = hc.add(Tfm::Div([hi_up, cc]));
    let start = hc.add(Tfm::Mul([cidx, cc]));
    let c1 = hc.add(Tfm::Add([cidx, one]));
    let end = hc.add(Tfm::Mul([c1, cc]));
    let lo_m = call2(hc, "max", lo, start);
    let hi_m = call2(hc, "min", hi, end);
    let tru = hc.konst(Const::Bool(true));
    match n {
        Tfm::Osm([_, _, _, _, s, v]) => {
            let inner = hc.add(Tfm::Osm([i, lo_m, hi_m, f, s, v]));
            let mx = hc.add(Tfm::Max([i, lo_m, hi_m, f, s]));
            let d = hc.add(Tfm::Sub([s, mx]));
            let ex = call1(hc, "exp", d);
            let l = hc.add(Tfm::Sum([i, lo_m, hi_m, f, ex]));
            let log_l = call1(hc, "log", l);
            let lse = hc.add(Tfm::Add([mx, log_l]));
            let ninf = hc.konst(Const::float(f64::NEG_INFINITY));
            let zero = hc.konst(Const::float(0.0));
            let all_ninf = hc.add(Tfm::Eq([mx, ninf]));
            let logit = hc.add(Tfm::If([all_ninf, ninf, lse]));
            let value = hc.add(Tfm::If([all_ninf, zero, inner]));
            let count = hc.add(Tfm::Sum([i, lo_m, hi_m, f, one]));
            let izero = hc.konst(Const::Int(0));
            let nonempty = hc.add(Tfm::Gt([count, izero]));
            let present = hc.add(Tfm::Where([nonempty, logit]));
            hc.add(Tfm::Osm([csym, lo_c, hi_c, tru, present, value]))
        }
        n => {
            let mut inner = n.clone();
            let slots = [(1usize, lo_m), (2usize, hi_m)];
            for (k, c) in inner.children_mut().iter_mut().enumerate() {
                if let Some((_, v)) = slots.iter().find(|(s, _)| *s == k) {
                    *c = *v;
                }
            }
            let inner = hc.add(inner);
            let mut outer = n;
            let outer_slots = [(0usize, csym), (1, lo_c), (2, hi_c), (3, tru), (4, inner)];
            for (k, c) in outer.children_mut().iter_mut().enumerate() {
                if let Some((_, v)) = outer_slots.iter().find(|(s, _)| *s == k) {
                    *c = *v;
                }
            }
            hc.add(outer)
        }
    }
}

fn call1(hc: &mut Hc, f: &str, a: Id) -> Id {
    let s = hc.add(Tfm::Symbol(Symbol::from(f)));
    hc.add(Tfm::Call(vec![s, a].into_boxed_slice()))
}

fn call2(hc: &mut Hc, f: &str, a: Id, b: Id) -> Id {
    let s = hc.add(Tfm::Symbol(Symbol::from(f)));
    hc.add(Tfm::Call(vec![s, a, b].into_boxed_slice()))
}
