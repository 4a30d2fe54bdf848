//! Which innermost loops run [`LANES`] iterations at a time: an analysis of KIR (no code is
//! emitted here; [`super::vloop`] emits what [`plan`] accepts).
//!
//! Cranelift's x86-64 backend has 128-bit vectors only (SSE/AVX encodings of `f32x4`,
//! `i32x4`, `i64x2`; no 256- or 512-bit types), so vector loops run 4 lanes of `F32`, `I32` or
//! `Bool` (a `Bool` lane is an `i32` all-ones/zero mask). A `For` qualifies when:
//! - its body is straight-line `Set`/`Store` (no nested loop, `If`, `Fail`, `Alloc`,
//!   `Parallel`);
//! - every value has a *shape*: uniform (the same in every lane: constants, variables not set
//!   in the body, loads at uniform indices, ops on uniform values — any type), affine (`I64`
//!   `invariant + var`: lane `k` holds `base + k`; closed under `± uniform`; `affine − affine`
//!   is uniform), strided (`I64` `invariant + var × stride`, from `affine × uniform`, closed
//!   under `± uniform` and `× uniform`) or varying (one value per lane; `F32`, `I32` or `Bool`
//!   only). Varying `I64` or `F64` values, data-dependent indices, affine values anywhere else
//!   than an index, a comparison with a uniform value (a lane mask), a cast to `I32` or a
//!   temporary, and strided values anywhere else than a load index or a temporary reject the
//!   loop;
//! - every `Load`/`Store` index is uniform, affine or (loads only) strided; accesses at
//!   affine indices are contiguous vector accesses, loads at strided indices are gathered lane
//!   by lane (an extension beyond unit stride: the generic plan's reductions read `K`/`V` with
//!   the stride of their reduced index), both of `F32`/`I32` elements; stores are at affine
//!   indices only; a memory stored in the loop is loaded only at the very same (affine) index
//!   (compared structurally after substituting the body's temporaries), so each lane touches
//!   its own elements;
//! - every variable set in the body is a temporary (set before it is read in each iteration)
//!   or a reduction accumulator `acc = acc ⊕ e` (either operand order) mentioned nowhere else
//!   in the body, with `⊕` an `F32` `Add`/`Mul` marked `reassoc`, `Min`/`Max` (exact and
//!   associative, NaN-propagating ones included), or an exact `I32`/`Bool` `Add Mul Min Max And
//!   Or`.
//!
//! Every operation on varying values has a vector form or is computed lane by lane (libm
//! calls, integer division, `fmod`, ...), so no operation rejects a loop by itself. Loops that
//! do not qualify stay scalar: a performance choice, not a missing feature.

use std::collections::{HashMap, HashSet};

use super::func::{MemKey, mem_key};
use crate::schedule::kir::{BinOp, Block, Expr, Func, Stmt, Ty, UnOp, Var};

/// Lanes of a vector iteration.
pub(super) const LANES: i64 = 4;

/// Largest substituted index expression compared (bigger ones reject the loop).
const MAX_SYM: usize = 256;

/// How a value varies across the lanes of one vector iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shape {
    /// The same in every lane.
    Uni,
    /// `I64`, lane `k` holds `base + k`.
    Aff,
    /// `I64`, lane `k` holds `base + k × stride` (`stride` uniform): only an index of loads.
    Str,
    /// One value per lane.
    Vec,
}

/// A reduction accumulator of a vector loop.
#[derive(Clone, Copy, Debug)]
pub(super) struct Acc {
    /// The variable.
    pub(super) var: Var,
    /// Its operation.
    pub(super) op: BinOp,
    /// Its type (`F32`, `I32` or `Bool`).
    pub(super) ty: Ty,
}

/// What [`super::vloop`] needs to emit an accepted loop.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    /// The reduction accumulators.
    pub(super) accs: Vec<Acc>,
    /// The temporaries (every other variable set in the body), set to their last lane's value
    /// after the vector loop.
    pub(super) temps: Vec<Var>,
    /// Copies of the body per trip of the main vector loop: [`UNROLL`] for bodies of at most
    /// [`SMALL_BODY`] expression nodes (memory-bound loops, where the loop's own instructions
    /// matter), else 1 (compute-bound bodies gain little and would cost compile time).
    pub(super) unroll: i64,
}

/// Copies of a small body per trip of the main vector loop.
pub(super) const UNROLL: i64 = 4;

/// The largest body (in expression nodes) that is unrolled.
const SMALL_BODY: usize = 48;

/// True for the lane types of vector code.
pub(super) fn is_lane(t: Ty) -> bool {
    matches!(t, Ty::F32 | Ty::I32 | Ty::Bool)
}

/// The plan for `for var in .. { body }`, if it qualifies.
pub(super) fn plan(f: &Func, var: Var, body: &Block) -> Option<Plan> {
    analyze(f, var, body).ok()
}

/// One innermost loop of a kernel and whether this backend vectorizes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopReport {
    /// The loop variable (`name%index`, as `--emit kir` prints it).
    pub var: String,
    /// Why it stays scalar (`None`: vectorized).
    pub scalar_because: Option<String>,
    /// The buffers its body stores to, by name, in order of first store.
    pub stores: Vec<String>,
}

/// Every innermost `For` of `f` (straight-line body, in program order) with the analysis'
/// verdict.
pub fn vector_report(f: &Func) -> Vec<LoopReport> {
    fn walk(f: &Func, b: &Block, out: &mut Vec<LoopReport>) {
        for s in b {
            match s {
                Stmt::For { var, body, .. } => {
                    let innermost = body.iter().all(|s| matches!(s, Stmt::Set { .. } | Stmt::Store { .. }));
                    if innermost {
                        let mut stores: Vec<String> = Vec::new();
                        for s in body {
                            if let Stmt::Store { buf, .. } = s
                                && !stores.contains(&f.buf(*buf).name)
                            {
                                stores.push(f.buf(*buf).name.clone());
                            }
                        }
                        out.push(LoopReport {
                            var: format!("{}%{}", f.var(*var).name, var.0),
                            scalar_because: analyze(f, *var, body).err(),
                            stores,
                        });
                    } else {
                        walk(f, body, out);
                    }
                }
                Stmt::Parallel { body, .. } => walk(f, body, out),
                Stmt::If { then, els, .. } => {
                    walk(f, then, out);
                    walk(f, els, out);
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(f, &f.body, &mut out);
    out
}

/// A value's shape, and for `I64` values its expression with the body's temporaries
/// substituted (to compare indices).
#[derive(Clone)]
struct Info {
    shape: Shape,
    sym: Option<Expr>,
}

struct An<'f> {
    f: &'f Func,
    /// Every variable set in the body.
    set: HashSet<Var>,
    accs: HashMap<Var, Acc>,
    /// Reductions that cannot be vectorized, and why.
    not_acc: HashMap<Var, String>,
    /// Variables set so far in this iteration (and the loop variable).
    env: HashMap<Var, Info>,
    /// The substituted index every store to a memory uses.
    stores: HashMap<MemKey, Expr>,
    /// Loads: memory, and the substituted index when affine (`None`: uniform).
    loads: Vec<(MemKey, Option<Expr>)>,
}

/// Times each variable is read in `e`.
fn count_reads(e: &Expr, n: &mut HashMap<Var, usize>) {
    match e {
        Expr::Const(_) => {}
        Expr::Var(v) => *n.entry(*v).or_default() += 1,
        Expr::Load { index, .. } => count_reads(index, n),
        Expr::Unary { x, .. } | Expr::Cast { x, .. } | Expr::Bitcast { x, .. } => count_reads(x, n),
        Expr::Binary { a, b, .. } => {
            count_reads(a, n);
            count_reads(b, n);
        }
        Expr::Select { c, a, b } => {
            count_reads(c, n);
            count_reads(a, n);
            count_reads(b, n);
        }
    }
}

fn size(e: &Expr) -> usize {
    match e {
        Expr::Const(_) | Expr::Var(_) => 1,
        Expr::Load { index, .. } => 1 + size(index),
        Expr::Unary { x, .. } | Expr::Cast { x, .. } | Expr::Bitcast { x, .. } => 1 + size(x),
        Expr::Binary { a, b, .. } => 1 + size(a) + size(b),
        Expr::Select { c, a, b } => 1 + size(c) + size(a) + size(b),
    }
}

/// Whether `op` on `t` (with its `reassoc` flag) is an exact-or-allowed reduction.
fn reduces(op: BinOp, t: Ty, reassoc: bool) -> bool {
    use BinOp::*;
    match t {
        Ty::F32 => matches!(op, Min | Max) || (reassoc && matches!(op, Add | Mul)),
        Ty::I32 => matches!(op, Add | Mul | Min | Max | And | Or),
        Ty::Bool => matches!(op, Min | Max | And | Or),
        _ => false,
    }
}

/// The other operand of an accumulator update `acc = acc ⊕ e` / `e ⊕ acc`.
pub(super) fn acc_operand(acc: Var, value: &Expr) -> Option<&Expr> {
    let Expr::Binary { a, b, .. } = value else { return None };
    match (&**a, &**b) {
        (Expr::Var(v), e) if *v == acc => Some(e),
        (e, Expr::Var(v)) if *v == acc => Some(e),
        _ => None,
    }
}

fn analyze(f: &Func, var: Var, body: &Block) -> Result<Plan, String> {
    let mut set = HashSet::new();
    let mut sets = HashMap::<Var, usize>::new();
    let mut reads = HashMap::new();
    for s in body {
        match s {
            Stmt::Set { var, value } => {
                set.insert(*var);
                *sets.entry(*var).or_default() += 1;
                count_reads(value, &mut reads);
            }
            Stmt::Store { index, value, .. } => {
                count_reads(index, &mut reads);
                count_reads(value, &mut reads);
            }
            _ => return Err("the body is not straight-line".into()),
        }
    }
    let mut accs = HashMap::new();
    let mut not_acc = HashMap::new();
    for s in body {
        let Stmt::Set { var: v, value } = s else { continue };
        let Expr::Binary { op, reassoc, .. } = value else { continue };
        let t = f.var(*v).ty;
        if *v != var && sets[v] == 1 && reads.get(v) == Some(&1) && acc_operand(*v, value).is_some() {
            if reduces(*op, t, *reassoc) {
                accs.insert(*v, Acc { var: *v, op: *op, ty: t });
            } else {
                let why = if t.is_float() && matches!(op, BinOp::Add | BinOp::Mul) && !reassoc {
                    "without reassoc"
                } else {
                    "without a vector form"
                };
                not_acc.insert(*v, format!("a {op:?} reduction of {t} into '{}' ({why})", f.var(*v).name));
            }
        }
    }
    let mut an = An { f, set, accs, not_acc, env: HashMap::new(), stores: HashMap::new(), loads: Vec::new() };
    an.env.insert(var, Info { shape: Shape::Aff, sym: Some(Expr::Var(var)) });
    let mut temps = Vec::new();
    for s in body {
        match s {
            Stmt::Set { var: v, value } => {
                if an.accs.contains_key(v) {
                    // acc_operand holds for accumulators (checked above).
                    let e = acc_operand(*v, value).ok_or("an accumulator update lost its accumulator")?;
                    if matches!(an.shape(e)?.shape, Shape::Aff | Shape::Str) {
                        return Err(format!("an i64 lane value reduced into '{}'", f.var(*v).name));
                    }
                    continue;
                }
                let info = an.shape(value)?;
                an.env.insert(*v, info);
                if !temps.contains(v) {
                    temps.push(*v);
                }
            }
            Stmt::Store { buf, index, value } => {
                let d = f.buf(*buf);
                let i = an.shape(index)?;
                if i.shape != Shape::Aff {
                    return Err(format!("a store to '{}' at a non-unit-stride index", d.name));
                }
                if !matches!(d.elem, Ty::F32 | Ty::I32) {
                    return Err(format!("a store of {} elements to '{}'", d.elem, d.name));
                }
                if matches!(an.shape(value)?.shape, Shape::Aff | Shape::Str) {
                    return Err(format!("an i64 lane value stored to '{}'", d.name));
                }
                let sym = i.sym.ok_or("an index expression too large to compare")?;
                let key = mem_key(f, *buf);
                match an.stores.get(&key) {
                    Some(prev) if *prev != sym => {
                        return Err(format!("stores to '{}' at two different indices", d.name));
                    }
                    _ => {
                        an.stores.insert(key, sym);
                    }
                }
            }
            _ => return Err("the body is not straight-line".into()),
        }
    }
    for (key, sym) in &an.loads {
        if let Some(st) = an.stores.get(key)
            && sym.as_ref() != Some(st)
        {
            return Err("a memory stored in the loop is loaded at another index".into());
        }
    }
    let mut accs: Vec<Acc> = an.accs.into_values().collect();
    accs.sort_by_key(|a| a.var);
    let nodes: usize = body
        .iter()
        .map(|s| match s {
            Stmt::Set { value, .. } => size(value),
            Stmt::Store { index, value, .. } => size(index) + size(value),
            _ => 0,
        })
        .sum();
    let unroll = if nodes <= SMALL_BODY { UNROLL } else { 1 };
    Ok(Plan { accs, temps, unroll })
}

/// `e` as a substituted form, unless too large to compare.
fn small(e: Expr) -> Option<Expr> {
    (size(&e) <= MAX_SYM).then_some(e)
}

fn boxed(i: &Info) -> Option<Box<Expr>> {
    i.sym.clone().map(Box::new)
}

impl An<'_> {
    fn uni(sym: Option<Expr>) -> Info {
        Info { shape: Shape::Uni, sym: sym.and_then(small) }
    }

    fn vec(t: Ty) -> Result<Info, String> {
        if is_lane(t) { Ok(Info { shape: Shape::Vec, sym: None }) } else { Err(format!("a varying {t} value")) }
    }

    fn strided() -> Info {
        Info { shape: Shape::Str, sym: None }
    }

    fn aff(sym: Option<Expr>) -> Info {
        Info { shape: Shape::Aff, sym: sym.and_then(small) }
    }

    /// The shape of `e` (see the module docs) and, for uniform and affine values, its form
    /// with the body's temporaries substituted (`None` when too large), to compare indices.
    fn shape(&mut self, e: &Expr) -> Result<Info, String> {
        use Shape::*;
        let f = self.f;
        let t = f.ty(e);
        Ok(match e {
            Expr::Const(_) => Self::uni(Some(e.clone())),
            Expr::Var(v) => {
                if let Some(i) = self.env.get(v) {
                    i.clone()
                } else if self.accs.contains_key(v) {
                    return Err(format!("accumulator '{}' read outside its update", f.var(*v).name));
                } else if let Some(why) = self.not_acc.get(v) {
                    return Err(why.clone());
                } else if self.set.contains(v) {
                    return Err(format!("'{}' carries a value from one iteration to the next", f.var(*v).name));
                } else {
                    Self::uni(Some(e.clone()))
                }
            }
            Expr::Load { buf, index } => {
                let i = self.shape(index)?;
                let d = f.buf(*buf);
                let key = mem_key(f, *buf);
                match i.shape {
                    Uni => {
                        self.loads.push((key, None));
                        Self::uni(boxed(&i).map(|index| Expr::Load { buf: *buf, index }))
                    }
                    Aff if matches!(d.elem, Ty::F32 | Ty::I32) => {
                        let sym = i.sym.ok_or("an index expression too large to compare")?;
                        self.loads.push((key, Some(sym)));
                        Self::vec(t)?
                    }
                    Str if matches!(d.elem, Ty::F32 | Ty::I32) => {
                        // Never the index a store uses: a stored memory loaded so rejects.
                        self.loads.push((key, None));
                        Self::vec(t)?
                    }
                    Aff | Str => return Err(format!("a load of {} elements of '{}'", d.elem, d.name)),
                    Vec => return Err(format!("a gather from '{}'", d.name)),
                }
            }
            Expr::Unary { op, x } => {
                let i = self.shape(x)?;
                match i.shape {
                    Uni => Self::uni(boxed(&i).map(|x| Expr::Unary { op: *op, x })),
                    Aff | Str => return Err(format!("{op:?} of an i64 lane value")),
                    Vec => Self::vec(if *op == UnOp::IsNan { Ty::Bool } else { t })?,
                }
            }
            Expr::Binary { op, a, b, reassoc } => {
                let (ia, ib) = (self.shape(a)?, self.shape(b)?);
                let sym = || Some(Expr::Binary { op: *op, a: boxed(&ia)?, b: boxed(&ib)?, reassoc: *reassoc });
                let overflow = matches!(op, BinOp::AddOverflows | BinOp::SubOverflows | BinOp::MulOverflows);
                match (ia.shape, ib.shape, op) {
                    (Uni, Uni, _) => Self::uni(sym()),
                    (Aff, Uni, _) | (Uni, Aff, _) if op.is_predicate() && !overflow => Self::vec(Ty::Bool)?,
                    (Aff, Uni, BinOp::Add | BinOp::Sub) | (Uni, Aff, BinOp::Add) => Self::aff(sym()),
                    (Aff, Aff, BinOp::Sub) => Self::uni(sym()),
                    (Str, Uni, BinOp::Add | BinOp::Sub)
                    | (Uni, Str, BinOp::Add)
                    | (Aff | Str, Uni, BinOp::Mul)
                    | (Uni, Aff | Str, BinOp::Mul) => Self::strided(),
                    (Aff | Str, _, _) | (_, Aff | Str, _) => return Err(format!("{op:?} of an i64 lane value")),
                    _ => {
                        let ot = f.ty(a);
                        if !is_lane(ot) {
                            return Err(format!("a varying {ot} value"));
                        }
                        Self::vec(t)?
                    }
                }
            }
            Expr::Select { c, a, b } => {
                let (ic, ia, ib) = (self.shape(c)?, self.shape(a)?, self.shape(b)?);
                let shapes = [ic.shape, ia.shape, ib.shape];
                if shapes.contains(&Aff) || shapes.contains(&Str) {
                    return Err("a select of i64 lane values".into());
                }
                if shapes.iter().all(|s| *s == Uni) {
                    let sym = || Some(Expr::Select { c: boxed(&ic)?, a: boxed(&ia)?, b: boxed(&ib)? });
                    Self::uni(sym())
                } else {
                    Self::vec(t)?
                }
            }
            Expr::Cast { to, x } => {
                let i = self.shape(x)?;
                let from = f.ty(x);
                match i.shape {
                    Uni => Self::uni(boxed(&i).map(|x| Expr::Cast { to: *to, x })),
                    Aff | Str if *to == Ty::I64 => i,
                    Aff if *to == Ty::I32 => Self::vec(Ty::I32)?,
                    Aff | Str => return Err(format!("a cast of an i64 lane value to {to}")),
                    Vec if is_lane(from) && is_lane(*to) => Self::vec(*to)?,
                    Vec => return Err(format!("a cast of varying {from} values to {to}")),
                }
            }
            Expr::Bitcast { to, x } => {
                let i = self.shape(x)?;
                match i.shape {
                    Uni => Self::uni(boxed(&i).map(|x| Expr::Bitcast { to: *to, x })),
                    Aff | Str if *to == Ty::I64 => i,
                    Aff | Str => return Err("a bitcast of an i64 lane value".into()),
                    Vec => Self::vec(*to)?,
                }
            }
        })
    }
}
