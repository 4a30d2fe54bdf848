//! Lowering: checked kernel (`hir`) → [`Cascade`]. Statement filters become `(where F x)`,
//! multi-index built-in reductions become nested single-index reductions (exact: an empty
//! inner reduction yields the identity, which the outer one absorbs), multi-field user
//! reductions become one `ured` node per field, and kernel calls are inlined (callee tensors
//! named `callee.N.T` for the program's N-th call, indices renamed where they would clash, dims
//! and param overrides substituted).
//!
//! Invariant: the result passes [`super::verify::verify`]; lowering never panics on a checked
//! program (unsupported forms are a [`LowerError`]).

use super::lang::{Const, Tfm};
use super::{Cascade, Def, Node, Role, Size};
use crate::hir::{self, Expr, ExprKind, Extent, Func, Kernel, Program, ReduceOp, Rhs, Stmt};
use egg::{Id, Language, RecExpr, Symbol};
use petgraph::graph::DiGraph;
use std::collections::HashMap;

/// Why a kernel cannot be lowered.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// No such kernel.
    #[error("unknown kernel '{name}'; kernels: {available}")]
    UnknownKernel {
        /// The name asked for.
        name: String,
        /// The program's kernels, comma-separated (or `none`).
        available: String,
    },
    /// A form the IR does not express yet.
    #[error("kernel '{kernel}': {what} is not supported by the IR yet (at {loc})")]
    Unsupported {
        /// Kernel.
        kernel: String,
        /// What.
        what: String,
        /// Source location.
        loc: String,
    },
}

/// Lowers kernel `name` of `program`.
pub fn lower(program: &Program, name: &str) -> Result<Cascade, LowerError> {
    let (_, k) = program.kernel(name).ok_or_else(|| {
        let names: Vec<&str> = program.kernels.iter().map(|k| k.name.as_str()).collect();
        LowerError::UnknownKernel {
            name: name.to_string(),
            available: if names.is_empty() { "none".to_string() } else { names.join(", ") },
        }
    })?;
    let mut cx = Lowering { program, nodes: Vec::new(), ranges: Vec::new(), calls: 0 };
    let dims = k.dims.iter().filter(|d| d.product.is_none()).map(|d| d.name.clone()).collect();
    let products = k
        .dims
        .iter()
        .filter_map(|d| {
            let p = d.product.as_ref()?;
            let factors = p.factors.iter().map(|f| k.dims[f.index()].name.clone()).collect();
            Some(crate::ir::ProductDim { name: d.name.clone(), factors, scale: p.scale })
        })
        .collect();
    let env = Env::identity(k);
    cx.kernel(k, &env, true)?;
    let mut graph = DiGraph::new();
    let mut order = Vec::new();
    for n in cx.nodes {
        order.push(graph.add_node(n));
    }
    let mut c = Cascade { name: k.name.clone(), dims, products, ranges: cx.ranges, graph, order };
    c.relink();
    Ok(c)
}

/// How a kernel's names map into the cascade being built.
struct Env {
    /// Tensor name by `TensorId`.
    tensors: Vec<String>,
    /// Index name by `IndexId`.
    indices: Vec<String>,
    /// Size of each dim by `DimId`.
    dims: Vec<Size>,
    /// Param overrides: param id → expression (in the caller's names) to splice in.
    params: HashMap<u32, RecExpr<Tfm>>,
    /// In an inlined callee: its inputs (read through `dense`) and outputs (written through
    /// `dense`), by `TensorId` — a call passes and returns dense tensors.
    dense: Vec<bool>,
}

impl Env {
    fn identity(k: &Kernel) -> Env {
        Env {
            tensors: k.tensors.iter().map(|t| t.name.clone()).collect(),
            indices: k.indices.iter().map(|i| i.name.clone()).collect(),
            dims: k.dims.iter().map(|d| Size::Dim(d.name.clone())).collect(),
            params: HashMap::new(),
            dense: vec![false; k.tensors.len()],
        }
    }

    fn size(&self, e: Extent) -> Size {
        match e {
            Extent::Dim(d) => self.dims[d.index()].clone(),
            Extent::Const(n) => Size::Fixed(n),
        }
    }
}

struct Lowering<'p> {
    program: &'p Program,
    nodes: Vec<Node>,
    ranges: Vec<(String, Size)>,
    calls: usize,
}

impl Lowering<'_> {
    /// Lowers `k`'s statements with names mapped by `env`. `top` adds its inputs as nodes.
    fn kernel(&mut self, k: &Kernel, env: &Env, top: bool) -> Result<(), LowerError> {
        for (i, info) in k.indices.iter().enumerate() {
            let size = env.size(info.extent);
            if !self.ranges.iter().any(|(n, _)| *n == env.indices[i]) {
                self.ranges.push((env.indices[i].clone(), size));
            }
        }
        if top {
            for &t in &k.inputs {
                let info = &k.tensors[t.index()];
                self.nodes.push(Node {
                    name: env.tensors[t.index()].clone(),
                    dtype: info.dtype,
                    shape: info.shape.iter().map(|e| env.size(*e)).collect(),
                    indices: Vec::new(),
                    role: info.role,
                    def: Def::Input,
                });
            }
        }
        for s in &k.stmts {
            match s {
                Stmt::Assign(a) => self.assign(k, env, a, top)?,
                Stmt::Call(c) => self.call(k, env, c, top)?,
            }
        }
        Ok(())
    }

    fn role(&self, k: &Kernel, t: hir::TensorId, top: bool) -> Role {
        match k.tensors[t.index()].role {
            Role::Output(i) if top => Role::Output(i),
            Role::Input(i) if top => Role::Input(i),
            _ => Role::Local,
        }
    }

    fn assign(&mut self, k: &Kernel, env: &Env, a: &hir::Assign, top: bool) -> Result<(), LowerError> {
        let indices: Vec<String> = a.indices.iter().map(|i| env.indices[i.index()].clone()).collect();
        for (field, &t) in a.targets.iter().enumerate() {
            let info = &k.tensors[t.index()];
            let def = match &a.rhs {
                Rhs::Expr(e) => {
                    let mut b = Builder { program: self.program, k, env, out: RecExpr::default() };
                    let v = b.expr(e)?;
                    let v = b.filtered(&a.filters, v)?;
                    b.densify(env.dense[t.index()], v);
                    Def::Expr(b.out)
                }
                Rhs::Tuple(r) => {
                    let mut b = Builder { program: self.program, k, env, out: RecExpr::default() };
                    let v = b.reduce(r, field, a.span)?;
                    let v = b.filtered(&a.filters, v)?;
                    b.densify(env.dense[t.index()], v);
                    Def::Expr(b.out)
                }
                Rhs::Scan { index, init, body } => {
                    let mut bi = Builder { program: self.program, k, env, out: RecExpr::default() };
                    bi.expr(init)?;
                    let mut bb = Builder { program: self.program, k, env, out: RecExpr::default() };
                    bb.expr(body)?;
                    Def::Scan { index: env.indices[index.index()].clone(), init: bi.out, body: bb.out }
                }
            };
            self.nodes.push(Node {
                name: env.tensors[t.index()].clone(),
                dtype: info.dtype,
                shape: info.shape.iter().map(|e| env.size(*e)).collect(),
                indices: indices.clone(),
                role: self.role(k, t, top),
                def,
            });
        }
        Ok(())
    }

    fn call(&mut self, k: &Kernel, env: &Env, c: &hir::Call, top: bool) -> Result<(), LowerError> {
        let callee = &self.program.kernels[c.callee.index()];
        self.calls += 1;
        // `callee.N.`: a kernel name cannot contain `.`, so the call number is delimited and
        // every inlined name is unique (`a11` call 1 is `a11.1.`, `a1` call 11 is `a1.11.`).
        let prefix = format!("{}.{}.", callee.name, self.calls);
        // Callee dims: unify with the argument shapes (the checker guarantees they agree).
        let mut dims: Vec<Size> = callee.dims.iter().map(|d| Size::Dim(d.name.clone())).collect();
        for (arg, &p) in c.args.iter().zip(&callee.inputs) {
            for (have, want) in k.tensors[arg.index()].shape.iter().zip(&callee.tensors[p.index()].shape) {
                if let Extent::Dim(d) = want {
                    dims[d.index()] = env.size(*have);
                }
            }
        }
        let mut tensors: Vec<String> = callee.tensors.iter().map(|t| format!("{prefix}{}", t.name)).collect();
        for (arg, &p) in c.args.iter().zip(&callee.inputs) {
            tensors[p.index()] = env.tensors[arg.index()].clone();
        }
        for (out, &p) in c.outputs.iter().zip(&callee.outputs) {
            tensors[p.index()] = env.tensors[out.index()].clone();
        }
        // Keep index names unless the caller uses the same name for another range.
        let mut indices = Vec::new();
        for info in &callee.indices {
            let size = match info.extent {
                Extent::Dim(d) => dims[d.index()].clone(),
                Extent::Const(n) => Size::Fixed(n),
            };
            let mut name = info.name.clone();
            while self.ranges.iter().any(|(n, s)| *n == name && *s != size) {
                name.push('\'');
            }
            indices.push(name);
        }
        let mut params = HashMap::new();
        for (pid, value) in &c.params {
            let mut b = Builder { program: self.program, k, env, out: RecExpr::default() };
            b.expr(value)?;
            params.insert(pid.0, b.out);
        }
        // Arguments that are the caller's locals may have points that do not exist; the callee
        // reads them as dense (absent = 0). Inputs always exist, so they need no wrapper.
        let mut dense = vec![false; callee.tensors.len()];
        for (arg, &p) in c.args.iter().zip(&callee.inputs) {
            dense[p.index()] = k.tensors[arg.index()].role == Role::Local || env.dense[arg.index()];
        }
        for t in &callee.outputs {
            dense[t.index()] = true;
        }
        let callee_env = Env { tensors, indices, dims, params, dense };
        let first = self.nodes.len();
        self.kernel(callee, &callee_env, false)?;
        // The callee's outputs are the caller's call targets: give them the caller's roles.
        for (out, _) in c.outputs.iter().zip(&callee.outputs) {
            let name = &env.tensors[out.index()];
            let role = self.role(k, *out, top);
            if let Some(n) = self.nodes[first..].iter_mut().find(|n| &n.name == name) {
                n.role = role;
            }
        }
        Ok(())
    }
}

/// Builds one RecExpr from HIR expressions.
struct Builder<'a> {
    program: &'a Program,
    k: &'a Kernel,
    env: &'a Env,
    out: RecExpr<Tfm>,
}

impl Builder<'_> {
    fn sym(&mut self, s: &str) -> Id {
        self.out.add(Tfm::Symbol(Symbol::from(s)))
    }

    fn konst(&mut self, c: Const) -> Id {
        self.out.add(Tfm::Const(c))
    }

    fn size(&mut self, s: &Size) -> Id {
        match s {
            Size::Dim(d) => {
                let d = self.sym(d);
                self.out.add(Tfm::Dim(d))
            }
            Size::Fixed(n) => self.konst(Const::Int(*n)),
        }
    }

    /// Wraps the root `v` in `(dense v)` when `on` (an inlined call's result).
    fn densify(&mut self, on: bool, v: Id) {
        if on {
            self.out.add(Tfm::Dense(v));
        }
    }

    /// `(where F v)` for the conjunction of `filters` (nothing when empty).
    fn filtered(&mut self, filters: &[Expr], v: Id) -> Result<Id, LowerError> {
        match self.conj(filters)? {
            None => Ok(v),
            Some(f) => Ok(self.out.add(Tfm::Where([f, v]))),
        }
    }

    fn conj(&mut self, filters: &[Expr]) -> Result<Option<Id>, LowerError> {
        let mut acc = None;
        for f in filters {
            let x = self.expr(f)?;
            acc = Some(match acc {
                None => x,
                Some(a) => self.out.add(Tfm::And([a, x])),
            });
        }
        Ok(acc)
    }

    fn splice(&mut self, e: &RecExpr<Tfm>) -> Id {
        let mut map: Vec<Id> = Vec::with_capacity(e.as_ref().len());
        for node in e.as_ref() {
            let n = node.clone().map_children(|c| map[usize::from(c)]);
            map.push(self.out.add(n));
        }
        // A non-empty expression always has a root.
        *map.last().expect("non-empty override expression")
    }

    fn expr(&mut self, e: &Expr) -> Result<Id, LowerError> {
        Ok(match &e.kind {
            ExprKind::Lit(l) => self.konst(match l {
                hir::Lit::Int(i) => Const::Int(*i),
                hir::Lit::Float(x) => Const::float(*x),
                hir::Lit::Bool(b) => Const::Bool(*b),
            }),
            ExprKind::Index(i) => {
                let s = self.sym(&self.env.indices[i.index()].clone());
                self.out.add(Tfm::Idx(s))
            }
            ExprKind::Dim(d) => {
                let s = self.env.dims[d.index()].clone();
                self.size(&s)
            }
            ExprKind::Param(p) => match self.env.params.get(&p.0) {
                Some(over) => {
                    let over = over.clone();
                    self.splice(&over)
                }
                None => {
                    let name = self.k_param_name(*p);
                    let s = self.sym(&name);
                    self.out.add(Tfm::Param(s))
                }
            },
            ExprKind::Read { tensor, subs } => {
                let mut ch = vec![self.sym(&self.env.tensors[tensor.index()].clone())];
                for s in subs {
                    ch.push(self.expr(s)?);
                }
                let r = self.out.add(Tfm::Read(ch.into_boxed_slice()));
                // A callee reads its arguments as dense tensors.
                let is_arg = self.env.dense[tensor.index()] && matches!(self.k.tensors[tensor.index()].role, Role::Input(_));
                if is_arg { self.out.add(Tfm::Dense(r)) } else { r }
            }
            ExprKind::ScanPrev { tensor, offset } => {
                let t = self.sym(&self.env.tensors[tensor.index()].clone());
                let c = self.konst(Const::Int(*offset));
                self.out.add(Tfm::Prev([t, c]))
            }
            ExprKind::Local(_) => return Err(self.unsupported("a reduction-local name outside a reduction", e.span)),
            ExprKind::Unary(op, a) => {
                let a = self.expr(a)?;
                self.out.add(match op {
                    hir::UnOp::Neg => Tfm::Neg(a),
                    hir::UnOp::Not => Tfm::Not(a),
                })
            }
            ExprKind::Binary(op, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                let c = [a, b];
                self.out.add(match op {
                    hir::BinOp::Add => Tfm::Add(c),
                    hir::BinOp::Sub => Tfm::Sub(c),
                    hir::BinOp::Mul => Tfm::Mul(c),
                    hir::BinOp::Div => Tfm::Div(c),
                    hir::BinOp::Rem => Tfm::Rem(c),
                    hir::BinOp::Eq => Tfm::Eq(c),
                    hir::BinOp::Ne => Tfm::Ne(c),
                    hir::BinOp::Lt => Tfm::Lt(c),
                    hir::BinOp::Le => Tfm::Le(c),
                    hir::BinOp::Gt => Tfm::Gt(c),
                    hir::BinOp::Ge => Tfm::Ge(c),
                    hir::BinOp::And => Tfm::And(c),
                    hir::BinOp::Or => Tfm::Or(c),
                })
            }
            ExprKind::If(c, a, b) => {
                let (c, a, b) = (self.expr(c)?, self.expr(a)?, self.expr(b)?);
                self.out.add(Tfm::If([c, a, b]))
            }
            ExprKind::Call(f, args) => {
                let mut ch = vec![self.sym(func_name(*f))];
                for a in args {
                    ch.push(self.expr(a)?);
                }
                self.out.add(Tfm::Call(ch.into_boxed_slice()))
            }
            ExprKind::Cast(a) => {
                let d = self.sym(e.dtype.name());
                let a = self.expr(a)?;
                self.out.add(Tfm::Cast([d, a]))
            }
            ExprKind::Reduce(r) => self.reduce(r, 0, e.span)?,
        })
    }

    fn k_param_name(&self, p: hir::ParamId) -> String {
        self.program.params[p.index()].name.clone()
    }

    fn reduce(&mut self, r: &hir::Reduce, field: usize, span: tfm_dsl::Span) -> Result<Id, LowerError> {
        let mut heads = Vec::new();
        for &i in &r.indices {
            let name = self.env.indices[i.index()].clone();
            let size = match self.k.indices[i.index()].extent {
                Extent::Dim(d) => self.env.dims[d.index()].clone(),
                Extent::Const(n) => Size::Fixed(n),
            };
            heads.push((name, size));
        }
        let f = match self.conj(&r.filters)? {
            Some(f) => f,
            None => self.konst(Const::Bool(true)),
        };
        let tru = self.konst(Const::Bool(true));
        let zero = self.konst(Const::Int(0));
        if let ReduceOp::User(id) = r.op {
            if heads.len() != 1 {
                return Err(self.unsupported("a user-defined reduction over several indices", span));
            }
            let (name, size) = &heads[0];
            let rname = self.program.reductions[id.index()].name.clone();
            let mut ch = vec![self.sym(&rname), self.konst(Const::Int(field as i64)), self.sym(name), zero];
            ch.push(self.size(size));
            ch.push(f);
            for b in &r.body {
                ch.push(self.expr(b)?);
            }
            return Ok(self.out.add(Tfm::URed(ch.into_boxed_slice())));
        }
        let body = r.body.first().ok_or_else(|| self.unsupported("a reduction without a body", span))?;
        let mut acc = self.expr(body)?;
        // Innermost first; the filter sits on the innermost reduction (all indices bound).
        for (depth, (name, size)) in heads.iter().enumerate().rev() {
            let s = self.sym(name);
            let hi = self.size(size);
            let filt = if depth == heads.len() - 1 { f } else { tru };
            let c = [s, zero, hi, filt, acc];
            acc = self.out.add(match r.op {
                ReduceOp::Sum => Tfm::Sum(c),
                ReduceOp::Prod => Tfm::Prod(c),
                ReduceOp::Max => Tfm::Max(c),
                _ => Tfm::Min(c),
            });
        }
        Ok(acc)
    }

    fn unsupported(&self, what: &str, span: tfm_dsl::Span) -> LowerError {
        let loc = crate::semantics::location(self.program, span);
        LowerError::Unsupported { kernel: self.k.name.clone(), what: what.to_string(), loc }
    }
}

/// The `.tfm` name of a function (the IR spells calls by name).
pub fn func_name(f: Func) -> &'static str {
    f.name()
}
