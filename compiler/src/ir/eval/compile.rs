//! Resolving one definition's `RecExpr<Tfm>` into [`Op`]s, once per node before its loops:
//! tensor, index, dim and param names become slots or constants, function and reduction names
//! become their HIR ids, and every operator gets the dtype the HIR interpreter would use.
//!
//! Dtypes are inferred bottom-up with the checker's own rules ([`crate::semantics::types::join`]):
//! `idx`/`dim` are `i64`, reads and params have their declared dtype, `cast` its target,
//! comparisons and `&& || not` are `bool`, arithmetic, `if` and `where` join their operands
//! (a literal is *weak* and adapts to the other operand, exactly as in the checker), a
//! function of integers that only takes floats gives `f32`, a reduction has its body's dtype
//! (a user reduction its field's), `osm` is a float. On a lowered cascade this reproduces the
//! HIR's dtypes (whose operands are already explicitly cast), so `i32` overflow and the
//! identities of empty `max`/`min` reductions match the HIR interpreter.
//!
//! Assumes the cascade passed [`crate::ir::verify::verify`]; anything else is reported as
//! [`RunError::Internal`], never a panic.

use std::collections::HashMap;

use egg::{Id, RecExpr, Symbol};
use tfmc_runtime::Scalar;

use super::internal;
use crate::hir::{BinOp, DType, Func, Program, ReduceOp, Reduction, UnOp};
use crate::ir::lang::{Const, Tfm};
use crate::semantics::RunError;
use crate::semantics::reduction::reduction_identity;
use crate::semantics::types::{Ty, join};

/// A reduction's head: the index it binds, its bounds and its filter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head {
    /// Slot of the bound index in [`super::expr::Env::idx`].
    pub slot: usize,
    /// The index's name (for error messages).
    pub name: Symbol,
    /// The index's declared range, if the cascade declares one.
    pub range: Option<i64>,
    /// Lower bound (inclusive), evaluated in the enclosing scope.
    pub lo: Id,
    /// Upper bound (exclusive), evaluated in the enclosing scope.
    pub hi: Id,
    /// Filter, evaluated with the index bound.
    pub filter: Id,
}

/// One resolved node of a definition; children are ids into the same `Vec<Op>`.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// A symbol (only meaningful as a child of the forms that name things).
    Sym(Symbol),
    /// A literal, a dim's size or a param's value.
    Const(Scalar),
    /// The current value of the index in this slot.
    Idx(usize),
    /// An element of the tensor in slot `tensor`.
    Read {
        /// Tensor slot (position in the cascade's order).
        tensor: usize,
        /// One subscript per dimension.
        subs: Box<[Id]>,
    },
    /// `neg` or `not` on an operand of dtype `d`.
    Unary {
        /// The operator.
        op: UnOp,
        /// Operand dtype.
        d: DType,
        /// Operand.
        a: Id,
    },
    /// Arithmetic or a comparison on operands of dtype `d`.
    Binary {
        /// The operator (never `&&`/`||`).
        op: BinOp,
        /// Operand dtype.
        d: DType,
        /// Left operand.
        a: Id,
        /// Right operand.
        b: Id,
    },
    /// Short-circuit `&&`.
    And(Id, Id),
    /// Short-circuit `||`.
    Or(Id, Id),
    /// Lazy `if`.
    If(Id, Id, Id),
    /// An elementwise function with result dtype `d`.
    Call {
        /// The function.
        f: Func,
        /// Result dtype.
        d: DType,
        /// First argument.
        x: Id,
        /// Second argument of the binary functions.
        y: Option<Id>,
    },
    /// Conversion to `to`.
    Cast {
        /// Target dtype.
        to: DType,
        /// Operand.
        x: Id,
    },
    /// `x`, or the zero of `d` where `x` is absent.
    Dense {
        /// The value.
        x: Id,
        /// Its dtype.
        d: DType,
    },
    /// `x` where `filter` holds, absent otherwise.
    Where {
        /// The filter.
        filter: Id,
        /// The value.
        x: Id,
    },
    /// A built-in reduction of dtype `d`.
    Reduce {
        /// `Sum`, `Prod`, `Max` or `Min`.
        op: ReduceOp,
        /// Body (and result) dtype.
        d: DType,
        /// Index, bounds, filter.
        head: Head,
        /// The reduced value.
        body: Id,
    },
    /// Field `field` of a user reduction.
    URed {
        /// The reduction's declaration.
        red: usize,
        /// Which field is the result.
        field: usize,
        /// Its identity state (depends on params only).
        identity: Box<[Scalar]>,
        /// Index, bounds, filter.
        head: Head,
        /// One lifted value per field.
        bodies: Box<[Id]>,
    },
    /// The one-pass online softmax `Σ softmax(s) · v`, or with a sink `c` (`osmz`): the
    /// denominator gets `exp(c - max)` (see `ir::lang`).
    Osm {
        /// Index, bounds, filter.
        head: Head,
        /// Logit.
        s: Id,
        /// Value.
        v: Id,
        /// The sink's logit, evaluated outside the reduction (`osmz`).
        sink: Option<Id>,
    },
    /// The running scan's own value `back` steps back.
    Prev {
        /// How far back (≥ 1).
        back: i64,
    },
    /// A dim's size, by name (only in [`Scope::symbolic`] compilation, for code generators).
    Dim(Symbol),
    /// A param's value, by `ParamId` index (only in symbolic compilation).
    Param {
        /// The param's index in the program.
        id: usize,
    },
}

/// Names resolved for the whole cascade, shared by the definitions being compiled.
pub(crate) struct Scope<'a> {
    /// The program (params, functions, reductions).
    pub program: &'a Program,
    /// Param values by `ParamId`.
    pub params: &'a [Scalar],
    /// Dim sizes by name.
    pub dims: HashMap<&'a str, i64>,
    /// Index ranges by name (sizes).
    pub ranges: HashMap<&'a str, i64>,
    /// Slot of every index name seen so far.
    pub slots: HashMap<Symbol, usize>,
    /// Tensors defined so far: name → (slot, dtype, rank).
    pub tensors: HashMap<&'a str, (usize, DType, usize)>,
    /// Dims and params stay symbolic ([`Op::Dim`], [`Op::Param`]) instead of becoming
    /// constants: code generators compile a kernel once for every size and param value
    /// (`dims` and `params` are then unused, except that user-reduction identities take
    /// `params`).
    pub symbolic: bool,
}

impl Scope<'_> {
    /// The slot of index `name`, allocating one the first time.
    pub fn slot(&mut self, name: Symbol) -> usize {
        let n = self.slots.len();
        *self.slots.entry(name).or_insert(n)
    }
}

/// The node being compiled: what `prev` refers to.
pub(crate) struct This<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its dtype.
    pub dtype: DType,
    /// True while compiling a scan body (the only place `prev` may occur).
    pub scan_body: bool,
}

/// Compiles `e` (children before parents, as in every `RecExpr`); the root is the last op.
pub(crate) fn compile(e: &RecExpr<Tfm>, scope: &mut Scope<'_>, this: &This<'_>, loc: &str) -> Result<Vec<Op>, RunError> {
    compile_typed(e, scope, this, loc).map(|(ops, _)| ops)
}

/// Like [`compile`], also returning each op's dtype (a literal's is its weak default:
/// `i64`, `f32` or `bool`; its consumer's operand dtype says how it is used).
pub(crate) fn compile_typed(
    e: &RecExpr<Tfm>,
    scope: &mut Scope<'_>,
    this: &This<'_>,
    loc: &str,
) -> Result<(Vec<Op>, Vec<DType>), RunError> {
    let nodes = e.as_ref();
    if nodes.is_empty() {
        return Err(internal("empty expression", loc));
    }
    let mut ops: Vec<Op> = Vec::with_capacity(nodes.len());
    let mut tys: Vec<Ty> = Vec::with_capacity(nodes.len());
    for node in nodes {
        let cx = Cx { e, tys: &tys, loc };
        let (op, ty) = cx.node(node, scope, this)?;
        ops.push(op);
        tys.push(ty);
    }
    Ok((ops, tys.iter().map(|t| t.dtype).collect()))
}

/// The types computed so far, for one node's rule.
struct Cx<'e> {
    e: &'e RecExpr<Tfm>,
    tys: &'e [Ty],
    loc: &'e str,
}

fn weak(dtype: DType) -> Ty {
    Ty { dtype, weak: true }
}

impl Cx<'_> {
    fn ty(&self, id: Id) -> Ty {
        self.tys[usize::from(id)]
    }

    fn sym(&self, id: Id, what: &str) -> Result<Symbol, RunError> {
        match &self.e[id] {
            Tfm::Symbol(s) => Ok(*s),
            other => Err(internal(&format!("{what} must be a symbol, found `{other}`"), self.loc)),
        }
    }

    /// The common dtype of two operands (the left one's if they do not join).
    fn join(&self, a: Id, b: Id) -> Ty {
        join(self.ty(a), self.ty(b)).unwrap_or_else(|| self.ty(a))
    }

    fn head(&self, c: &[Id], scope: &mut Scope<'_>) -> Result<Head, RunError> {
        let name = self.sym(c[0], "a reduction's index")?;
        let range = scope.ranges.get(name.as_str()).copied();
        Ok(Head { slot: scope.slot(name), name, range, lo: c[1], hi: c[2], filter: c[3] })
    }

    fn node(&self, node: &Tfm, scope: &mut Scope<'_>, this: &This<'_>) -> Result<(Op, Ty), RunError> {
        let strong = Ty::strong;
        let bool_ty = strong(DType::Bool);
        let bin = |op: BinOp, [a, b]: [Id; 2]| {
            let t = self.join(a, b);
            let r = if op.is_comparison() { bool_ty } else { t };
            (Op::Binary { op, d: t.dtype, a, b }, r)
        };
        Ok(match node {
            Tfm::Symbol(s) => (Op::Sym(*s), weak(DType::Bool)),
            Tfm::Const(Const::Int(i)) => (Op::Const(Scalar::I(*i)), weak(DType::I64)),
            Tfm::Const(c @ Const::Float(_)) => (Op::Const(Scalar::F(c.as_f64())), weak(DType::F32)),
            Tfm::Const(Const::Bool(b)) => (Op::Const(Scalar::B(*b)), weak(DType::Bool)),
            Tfm::Idx(s) => {
                let name = self.sym(*s, "`idx`'s argument")?;
                (Op::Idx(scope.slot(name)), strong(DType::I64))
            }
            Tfm::Dim(s) => {
                let name = self.sym(*s, "`dim`'s argument")?;
                if scope.symbolic {
                    return Ok((Op::Dim(name), strong(DType::I64)));
                }
                let Some(&v) = scope.dims.get(name.as_str()) else {
                    return Err(internal(&format!("unknown dimension '{name}'"), self.loc));
                };
                (Op::Const(Scalar::I(v)), strong(DType::I64))
            }
            Tfm::Param(s) => {
                let name = self.sym(*s, "`param`'s argument")?;
                let Some((id, p)) = scope.program.param(name.as_str()) else {
                    return Err(internal(&format!("unknown param '{name}'"), self.loc));
                };
                if scope.symbolic {
                    return Ok((Op::Param { id: id.index() }, strong(p.dtype)));
                }
                let v = scope.params.get(id.index()).copied().unwrap_or(crate::semantics::ops::zero(p.dtype));
                (Op::Const(v), strong(p.dtype))
            }
            Tfm::Read(ch) => {
                let name = self.sym(ch[0], "a read's tensor")?;
                let Some(&(tensor, dtype, rank)) = scope.tensors.get(name.as_str()) else {
                    return Err(internal(&format!("reads '{name}' before it is defined"), self.loc));
                };
                if ch.len() - 1 != rank {
                    return Err(internal(&format!("reads '{name}' with {} subscripts, it has {rank} dimensions", ch.len() - 1), self.loc));
                }
                (Op::Read { tensor, subs: ch[1..].into() }, strong(dtype))
            }
            Tfm::Add(c) => bin(BinOp::Add, *c),
            Tfm::Sub(c) => bin(BinOp::Sub, *c),
            Tfm::Mul(c) => bin(BinOp::Mul, *c),
            Tfm::Div(c) => bin(BinOp::Div, *c),
            Tfm::Rem(c) => bin(BinOp::Rem, *c),
            Tfm::Lt(c) => bin(BinOp::Lt, *c),
            Tfm::Le(c) => bin(BinOp::Le, *c),
            Tfm::Gt(c) => bin(BinOp::Gt, *c),
            Tfm::Ge(c) => bin(BinOp::Ge, *c),
            Tfm::Eq(c) => bin(BinOp::Eq, *c),
            Tfm::Ne(c) => bin(BinOp::Ne, *c),
            Tfm::And([a, b]) => (Op::And(*a, *b), bool_ty),
            Tfm::Or([a, b]) => (Op::Or(*a, *b), bool_ty),
            Tfm::Neg(a) => (Op::Unary { op: UnOp::Neg, d: self.ty(*a).dtype, a: *a }, self.ty(*a)),
            Tfm::Not(a) => (Op::Unary { op: UnOp::Not, d: DType::Bool, a: *a }, bool_ty),
            Tfm::If([c, a, b]) => (Op::If(*c, *a, *b), self.join(*a, *b)),
            Tfm::Call(ch) => self.call(ch)?,
            Tfm::Cast([d, x]) => {
                let name = self.sym(*d, "a cast's dtype")?;
                let Some(to) = DType::parse(name.as_str()) else {
                    return Err(internal(&format!("unknown dtype '{name}'"), self.loc));
                };
                (Op::Cast { to, x: *x }, strong(to))
            }
            Tfm::Where([f, x]) => (Op::Where { filter: *f, x: *x }, self.ty(*x)),
            Tfm::Dense(x) => (Op::Dense { x: *x, d: self.ty(*x).dtype }, self.ty(*x)),
            Tfm::Sum(c) | Tfm::Prod(c) | Tfm::Max(c) | Tfm::Min(c) => {
                let op = match node {
                    Tfm::Sum(_) => ReduceOp::Sum,
                    Tfm::Prod(_) => ReduceOp::Prod,
                    Tfm::Max(_) => ReduceOp::Max,
                    _ => ReduceOp::Min,
                };
                let t = self.ty(c[4]);
                (Op::Reduce { op, d: t.dtype, head: self.head(c, scope)?, body: c[4] }, t)
            }
            Tfm::URed(ch) => self.ured(ch, scope)?,
            Tfm::Osm(c) => {
                let t = self.join(c[4], c[5]);
                let d = if t.dtype.is_float() { t.dtype } else { DType::F32 };
                (Op::Osm { head: self.head(c, scope)?, s: c[4], v: c[5], sink: None }, strong(d))
            }
            Tfm::OsmZ(c) => {
                let t = self.join(c[4], c[5]);
                let d = if t.dtype.is_float() { t.dtype } else { DType::F32 };
                (Op::Osm { head: self.head(c, scope)?, s: c[4], v: c[5], sink: Some(c[6]) }, strong(d))
            }
            Tfm::Prev([t, c]) => {
                let name = self.sym(*t, "`prev`'s tensor")?;
                if !this.scan_body || name.as_str() != this.name {
                    return Err(internal(&format!("`prev` of '{name}' outside its scan"), self.loc));
                }
                let back = match self.e[*c] {
                    Tfm::Const(Const::Int(k)) if k >= 1 => k,
                    _ => return Err(internal("`prev` needs a constant distance of at least 1", self.loc)),
                };
                (Op::Prev { back }, strong(this.dtype))
            }
        })
    }

    /// `(call f x [y])`, typed like the checker's `call_fn`.
    fn call(&self, ch: &[Id]) -> Result<(Op, Ty), RunError> {
        let name = self.sym(ch[0], "a call's function")?;
        let Some(f) = Func::from_name(name.as_str()) else {
            return Err(internal(&format!("unknown function '{name}'"), self.loc));
        };
        let args = &ch[1..];
        if args.len() != f.arity() {
            return Err(internal(&format!("function '{name}' takes {} arguments, found {}", f.arity(), args.len()), self.loc));
        }
        let mut t = self.ty(args[0]);
        if let Some(&y) = args.get(1) {
            t = self.join(args[0], y);
        }
        if t.dtype.is_int() && !f.accepts_int() {
            t = Ty { dtype: DType::F32, weak: t.weak };
        }
        Ok((Op::Call { f, d: t.dtype, x: args[0], y: args.get(1).copied() }, t))
    }

    /// `(ured R k I lo hi F b1 .. bn)`.
    fn ured(&self, ch: &[Id], scope: &mut Scope<'_>) -> Result<(Op, Ty), RunError> {
        if ch.len() < 7 {
            return Err(internal("`ured` needs a reduction, a field, a head and bodies", self.loc));
        }
        let name = self.sym(ch[0], "a user reduction's name")?;
        let program = scope.program;
        let Some((red, r)) = program.reductions.iter().enumerate().find(|(_, r)| r.name == name.as_str()) else {
            return Err(internal(&format!("unknown reduction '{name}'"), self.loc));
        };
        let field = match self.e[ch[1]] {
            Tfm::Const(Const::Int(k)) if k >= 0 && (k as usize) < r.fields.len() => k as usize,
            _ => return Err(internal(&format!("`ured {name}` needs a field number below {}", r.fields.len()), self.loc)),
        };
        let bodies: Box<[Id]> = ch[6..].into();
        if bodies.len() != r.fields.len() || !shape_ok(r) {
            return Err(internal(&format!("reduction '{name}' has {} fields, `ured` gives {}", r.fields.len(), bodies.len()), self.loc));
        }
        let id = crate::hir::ReductionId(red as u32);
        let identity = reduction_identity(program, id, scope.params)?.into_boxed_slice();
        let head = self.head(&ch[2..6], scope)?;
        Ok((Op::URed { red, field, identity, head, bodies }, Ty::strong(r.fields[field].1)))
    }
}

/// True if the declaration gives one identity and one result per field.
fn shape_ok(r: &Reduction) -> bool {
    r.identity.len() == r.fields.len() && r.result.len() == r.fields.len()
}

/// The ops an op reads (for a reduction: its bounds, filter and body).
pub(crate) fn children(op: &Op) -> Vec<Id> {
    match op {
        Op::Sym(_) | Op::Const(_) | Op::Idx(_) | Op::Dim(_) | Op::Param { .. } | Op::Prev { .. } => vec![],
        Op::Read { subs, .. } => subs.to_vec(),
        Op::Unary { a, .. } | Op::Cast { x: a, .. } | Op::Dense { x: a, .. } => vec![*a],
        Op::Binary { a, b, .. } | Op::And(a, b) | Op::Or(a, b) => vec![*a, *b],
        Op::If(c, a, b) => vec![*c, *a, *b],
        Op::Call { x, y, .. } => std::iter::once(*x).chain(*y).collect(),
        Op::Where { filter, x } => vec![*filter, *x],
        Op::Reduce { head, body, .. } => vec![head.lo, head.hi, head.filter, *body],
        Op::URed { head, bodies, .. } => [head.lo, head.hi, head.filter].into_iter().chain(bodies.iter().copied()).collect(),
        Op::Osm { head, s, v, sink } => [head.lo, head.hi, head.filter, *s, *v].into_iter().chain(*sink).collect(),
    }
}
