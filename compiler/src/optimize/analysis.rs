//! The e-graph analysis: for every e-class, the index names it may depend on (`free`) and
//! whether it may have no value at a point (`partial`: it contains a `where` outside any
//! reduction). Rules consult it so none can build an ill-scoped term: a term moves across a
//! binder of `i` only when `i` is not free in it, and a strict operation is distributed over
//! a reduction only when the moved operand is never absent.
//!
//! It also tracks the value's [`Kind`] (float, integer, bool), from tensor dtypes, casts and
//! constants, so a law that holds only for real numbers (`Σ n/d = (Σ n)/d` — integer `/`
//! floors) applies only to floats.
//!
//! Merging is conservative: the union of free sets and the `or` of partiality, so a class's
//! facts hold for every term in it; kinds of equal terms agree (rules never change a type).

use crate::ir::lang::{Const, Tfm};
use egg::{Analysis, DidMerge, EGraph, Id, Language, Symbol};
use std::collections::{BTreeSet, HashMap};
use tfm_dsl::ast::DType;

/// What kind of value a term has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A float of any width.
    Float,
    /// An integer.
    Int,
    /// A boolean.
    Bool,
    /// Not known (e.g. a param without a cast, a symbol).
    Unknown,
}

impl Kind {
    fn of(d: DType) -> Kind {
        if d.is_float() {
            Kind::Float
        } else if d.is_int() {
            Kind::Int
        } else {
            Kind::Bool
        }
    }
}

/// Facts about one e-class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Index names the value may depend on.
    pub free: BTreeSet<Symbol>,
    /// True if some point may have no value.
    pub partial: bool,
    /// The symbol, if the class is a symbol leaf.
    pub symbol: Option<Symbol>,
    /// The kind of value.
    pub kind: Kind,
    /// True if evaluating it can never raise a run-time error: every read is at bare indices
    /// (always in range), no integer division. Only safe terms may move out of the filter or
    /// range that guards them.
    pub safe: bool,
    /// True if the class contains a bare `(idx i)`.
    pub is_idx: bool,
}

/// The analysis: knows each tensor's dtype (by name) to type reads.
#[derive(Default, Debug, Clone)]
pub struct FreeIndices {
    /// Tensor name → element dtype.
    pub tensors: HashMap<String, DType>,
}

/// The e-graph type of the optimizer.
pub type Graph = EGraph<Tfm, FreeIndices>;

impl Analysis<Tfm> for FreeIndices {
    type Data = Facts;

    fn make(egraph: &mut Graph, enode: &Tfm, _id: Id) -> Facts {
        let mut facts = Self::make_scope(egraph, enode);
        facts.kind = kind_of(egraph, enode);
        facts.is_idx = matches!(enode, Tfm::Idx(_));
        let all_safe = enode.children().iter().all(|c| egraph[*c].data.safe);
        facts.safe = all_safe
            && match enode {
                Tfm::Read(ch) => ch[1..].iter().all(|c| egraph[*c].data.is_idx),
                Tfm::Div(_) | Tfm::Rem(_) => facts.kind == Kind::Float,
                Tfm::Cast([t, _]) => {
                    let target = egraph[*t].data.symbol.map(|s| s.as_str().to_string());
                    !matches!(target.as_deref(), Some("i32"))
                }
                _ => true,
            };
        facts
    }

    fn merge(&mut self, a: &mut Facts, b: Facts) -> DidMerge {
        let before = (a.free.len(), a.partial, a.symbol, a.kind, a.safe, a.is_idx);
        // Conservative: the extracted term may be any member, so all must be safe.
        a.safe &= b.safe;
        a.is_idx |= b.is_idx;
        a.free.extend(b.free.iter().copied());
        a.partial |= b.partial;
        if a.symbol.is_none() {
            a.symbol = b.symbol;
        }
        if a.kind == Kind::Unknown {
            a.kind = b.kind;
        }
        let changed_a = before != (a.free.len(), a.partial, a.symbol, a.kind, a.safe, a.is_idx);
        let changed_b = b.free.len() < a.free.len()
            || (a.partial && !b.partial)
            || (b.kind == Kind::Unknown && a.kind != Kind::Unknown)
            || (b.safe && !a.safe)
            || (a.is_idx && !b.is_idx);
        DidMerge(changed_a, changed_b)
    }
}

/// The kind of `enode`'s value from its children's kinds.
fn kind_of(g: &Graph, enode: &Tfm) -> Kind {
    let k = |id: &Id| g[*id].data.kind;
    let join = |a: Kind, b: Kind| match (a, b) {
        (Kind::Float, _) | (_, Kind::Float) => Kind::Float,
        (Kind::Int, Kind::Int) => Kind::Int,
        (Kind::Bool, Kind::Bool) => Kind::Bool,
        _ => Kind::Unknown,
    };
    let sym = |id: &Id| g[*id].data.symbol.map(|s| s.as_str().to_string());
    match enode {
        Tfm::Const(Const::Int(_)) | Tfm::Idx(_) | Tfm::Dim(_) => Kind::Int,
        Tfm::Const(Const::Float(_)) | Tfm::Osm(_) | Tfm::OsmZ(_) => Kind::Float,
        Tfm::Const(Const::Bool(_)) => Kind::Bool,
        Tfm::Symbol(_) | Tfm::Param(_) | Tfm::Prev(_) | Tfm::URed(_) => Kind::Unknown,
        Tfm::Read(ch) => ch.first().and_then(sym).and_then(|t| g.analysis.tensors.get(&t).copied()).map_or(Kind::Unknown, Kind::of),
        Tfm::Cast([t, _]) => sym(t).and_then(|n| DType::parse(&n)).map_or(Kind::Unknown, Kind::of),
        Tfm::Lt(_) | Tfm::Le(_) | Tfm::Gt(_) | Tfm::Ge(_) | Tfm::Eq(_) | Tfm::Ne(_) | Tfm::And(_) | Tfm::Or(_) | Tfm::Not(_) => Kind::Bool,
        Tfm::Add([a, b]) | Tfm::Sub([a, b]) | Tfm::Mul([a, b]) | Tfm::Div([a, b]) | Tfm::Rem([a, b]) => join(k(a), k(b)),
        Tfm::Neg(a) | Tfm::Dense(a) => k(a),
        Tfm::Where([_, x]) => k(x),
        Tfm::If([_, a, b]) => join(k(a), k(b)),
        Tfm::Sum(c) | Tfm::Max(c) | Tfm::Min(c) | Tfm::Prod(c) => k(&c[4]),
        Tfm::Call(ch) => match ch.first().and_then(sym).as_deref() {
            Some("abs" | "neg" | "sign" | "relu" | "min" | "max") => ch[1..].iter().fold(k(&ch[1]), |acc, c| join(acc, k(c))),
            Some(_) => Kind::Float,
            None => Kind::Unknown,
        },
    }
}

impl FreeIndices {
    /// Free indices, partiality and symbol of `enode` (its kind is computed separately).
    fn make_scope(egraph: &Graph, enode: &Tfm) -> Facts {
        let d = |id: &Id| &egraph[*id].data;
        match enode {
            Tfm::Symbol(s) => {
                Facts { free: BTreeSet::new(), partial: false, symbol: Some(*s), kind: Kind::Unknown, safe: true, is_idx: false }
            }
            Tfm::Idx(s) => {
                let mut free = BTreeSet::new();
                if let Some(sym) = d(s).symbol {
                    free.insert(sym);
                }
                Facts { free, partial: false, symbol: None, kind: Kind::Unknown, safe: true, is_idx: false }
            }
            Tfm::Dense(x) => {
                Facts { free: d(x).free.clone(), partial: false, symbol: None, kind: Kind::Unknown, safe: true, is_idx: false }
            }
            Tfm::Where([f, x]) => {
                let mut free = d(f).free.clone();
                free.extend(d(x).free.iter().copied());
                Facts { free, partial: true, symbol: None, kind: Kind::Unknown, safe: true, is_idx: false }
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
                    return Facts { free: inner, partial, symbol: None, kind: Kind::Unknown, safe: true, is_idx: false };
                }
                let mut free = BTreeSet::new();
                let mut partial = false;
                for c in enode.children() {
                    free.extend(d(c).free.iter().copied());
                    partial |= d(c).partial;
                }
                Facts { free, partial, symbol: None, kind: Kind::Unknown, safe: true, is_idx: false }
            }
        }
    }
}

/// True if index `i` (a symbol class) is not free in class `x`.
pub fn free_of(egraph: &Graph, x: Id, i: Id) -> bool {
    match egraph[i].data.symbol {
        Some(s) => !egraph[x].data.free.contains(&s),
        None => false,
    }
}
