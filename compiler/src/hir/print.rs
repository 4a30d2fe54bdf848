//! A readable, deterministic text dump of the checked program (`tfmc ... --emit=checked`).
//!
//! Owns the textual form of the HIR. Everything is printed by name, never by id; implicit
//! conversions show as explicit casts (`f32(E)`), filters as `where` clauses (several filters
//! of one scope are joined with `&&`), scan look-backs as reads of the target at `t - c`, and
//! user-reduction locals as `a.field`, `b.field` and `letN`. Operators are printed with the
//! fewest parentheses that keep the tree unambiguous under the language's precedence.
//!
//! The output depends only on the program (no addresses, no hash order), so golden tests can
//! snapshot it. Assumes the HIR invariants of [`crate::hir`]; an out-of-range id is printed as
//! `?` rather than panicking.

use std::fmt::Write;

use super::{
    Assign, BinOp, Call, DType, Expr, ExprKind, Extent, Kernel, Lit, Program, Reduce, ReduceOp, Rhs, Role, Stmt, TensorId, TensorInfo, UnOp,
};

/// The whole program: params, user reductions, then kernels, each in declaration order.
pub fn print_program(program: &Program) -> String {
    let mut out = String::new();
    for p in &program.params {
        let _ = write!(out, "param {}: {}", p.name, p.dtype);
        if let Some(lit) = p.default {
            let _ = write!(out, " = {}", lit_text(lit, p.dtype));
        }
        out.push('\n');
    }
    for r in &program.reductions {
        if !out.is_empty() {
            out.push('\n');
        }
        let fields: Vec<String> = r.fields.iter().map(|(n, d)| format!("{n}: {d}")).collect();
        let _ = writeln!(out, "reduction {}({})", r.name, fields.join(", "));
        let p = Printer { program, kernel: None, locals: Some(r), scan: None };
        let _ = writeln!(out, "    identity = {}", p.tuple(&r.identity));
        let _ = writeln!(out, "    combine(a, b)");
        for (j, e) in r.lets.iter().enumerate() {
            let _ = writeln!(out, "        let{j} = {}", p.expr(e, 0));
        }
        let _ = writeln!(out, "        result {}", p.tuple(&r.result));
    }
    for k in &program.kernels {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&print_kernel(program, k));
    }
    out
}

/// One kernel: dims, tensors with role, dtype and shape, index ranges, params used and the
/// statements in execution order.
pub fn print_kernel(program: &Program, kernel: &Kernel) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "kernel {}", kernel.name);
    if !kernel.dims.is_empty() {
        let dims: Vec<&str> = kernel.dims.iter().map(|d| d.name.as_str()).collect();
        let _ = writeln!(out, "    dims {}", dims.join(", "));
    }
    for t in &kernel.tensors {
        let role = match t.role {
            Role::Input(_) => "input ",
            Role::Output(_) => "output",
            Role::Local => "local ",
        };
        let _ = writeln!(out, "    {role} {}: {}", t.name, tensor_type(kernel, t));
    }
    if !kernel.indices.is_empty() {
        let idx: Vec<String> = kernel.indices.iter().map(|i| format!("{}: {}", i.name, extent_name(kernel, i.extent))).collect();
        let _ = writeln!(out, "    index {}", idx.join(", "));
    }
    if !kernel.params_used.is_empty() {
        let ps: Vec<&str> = kernel.params_used.iter().map(|p| program.params.get(p.index()).map_or("?", |p| p.name.as_str())).collect();
        let _ = writeln!(out, "    params {}", ps.join(", "));
    }
    let _ = writeln!(out, "    {{");
    for s in &kernel.stmts {
        let line = match s {
            Stmt::Assign(a) => assign_text(program, kernel, a),
            Stmt::Call(c) => call_text(program, kernel, c),
        };
        let _ = writeln!(out, "        {line}");
    }
    let _ = writeln!(out, "    }}");
    out
}

/// A tensor's type as written in a signature: `f32[B, H, P, E]` (`f32[]` for a scalar).
pub fn tensor_type(kernel: &Kernel, t: &TensorInfo) -> String {
    let dims: Vec<String> = t.shape.iter().map(|e| extent_name(kernel, *e)).collect();
    format!("{}[{}]", t.dtype, dims.join(", "))
}

/// A dim's name, or the fixed size.
pub fn extent_name(kernel: &Kernel, e: Extent) -> String {
    match e {
        Extent::Dim(d) => kernel.dims.get(d.index()).map_or_else(|| "?".to_string(), |d| d.name.clone()),
        Extent::Const(c) => c.to_string(),
    }
}

fn assign_text(program: &Program, kernel: &Kernel, a: &Assign) -> String {
    let p = Printer { program, kernel: Some(kernel), locals: None, scan: None };
    let lhs: Vec<String> = a.targets.iter().map(|t| p.lhs(*t, &a.indices)).collect();
    let rhs = match &a.rhs {
        Rhs::Expr(e) => p.expr(e, 0),
        Rhs::Tuple(r) => p.reduce(r),
        Rhs::Scan { index, init, body } => {
            let sp = Printer { scan: Some((&a.indices, *index)), ..p };
            format!("scan[{}, init = {}]({})", p.index_name(*index), p.expr(init, 0), sp.expr(body, 0))
        }
    };
    let mut s = format!("{} = {rhs}", lhs.join(", "));
    if !a.filters.is_empty() {
        let _ = write!(s, " where {}", p.conjunction(&a.filters));
    }
    s
}

fn call_text(program: &Program, kernel: &Kernel, c: &Call) -> String {
    let p = Printer { program, kernel: Some(kernel), locals: None, scan: None };
    let outs: Vec<String> = c.outputs.iter().map(|t| p.tensor_name(*t).to_string()).collect();
    let mut args: Vec<String> = c.args.iter().map(|t| p.tensor_name(*t).to_string()).collect();
    for (pid, e) in &c.params {
        let name = program.params.get(pid.index()).map_or("?", |p| p.name.as_str());
        args.push(format!("{name} = {}", p.expr(e, 0)));
    }
    let callee = program.kernels.get(c.callee.index()).map_or("?", |k| k.name.as_str());
    format!("{} = {callee}({})", outs.join(", "), args.join(", "))
}

/// A literal as source text of the given dtype (`2.0` for an integer literal typed float).
fn lit_text(lit: Lit, dtype: DType) -> String {
    match lit {
        Lit::Int(i) if dtype.is_float() => format!("{:?}", i as f64),
        Lit::Int(i) => i.to_string(),
        Lit::Float(x) => format!("{x:?}"),
        Lit::Bool(b) => b.to_string(),
    }
}

/// Binding strength, loosest first: `if` 0, `||` 1, `&&` 2, comparisons 3, `+ -` 4,
/// `* / %` 5, unary 6, atoms 7.
fn prec(op: BinOp) -> u8 {
    match op {
        BinOp::Or => 1,
        BinOp::And => 2,
        BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 3,
        BinOp::Add | BinOp::Sub => 4,
        BinOp::Mul | BinOp::Div | BinOp::Rem => 5,
    }
}

/// Prints expressions in the context of one kernel (or one user reduction's combine).
#[derive(Clone, Copy)]
struct Printer<'a> {
    program: &'a Program,
    kernel: Option<&'a Kernel>,
    /// The reduction whose locals (`a.f`, `b.f`, `letN`) are in scope.
    locals: Option<&'a super::Reduction>,
    /// The scan statement's left-hand indices and scanned index.
    scan: Option<(&'a [super::IndexId], super::IndexId)>,
}

impl Printer<'_> {
    fn tensor_name(&self, t: TensorId) -> &str {
        self.kernel.and_then(|k| k.tensors.get(t.index())).map_or("?", |t| t.name.as_str())
    }

    fn index_name(&self, i: super::IndexId) -> &str {
        self.kernel.and_then(|k| k.indices.get(i.index())).map_or("?", |i| i.name.as_str())
    }

    fn lhs(&self, t: TensorId, indices: &[super::IndexId]) -> String {
        let idx: Vec<&str> = indices.iter().map(|i| self.index_name(*i)).collect();
        if idx.is_empty() { self.tensor_name(t).to_string() } else { format!("{}[{}]", self.tensor_name(t), idx.join(", ")) }
    }

    fn tuple(&self, es: &[Expr]) -> String {
        let parts: Vec<String> = es.iter().map(|e| self.expr(e, 0)).collect();
        if parts.len() == 1 { parts.into_iter().next().unwrap_or_default() } else { format!("({})", parts.join(", ")) }
    }

    /// Filters joined with `&&`, each bound at least as tightly as `&&`.
    fn conjunction(&self, fs: &[Expr]) -> String {
        let parts: Vec<String> = fs.iter().map(|f| self.expr(f, 2)).collect();
        parts.join(" && ")
    }

    fn reduce(&self, r: &Reduce) -> String {
        let name = match r.op {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::User(id) => self.program.reductions.get(id.index()).map_or("?", |r| r.name.as_str()),
        };
        let idx: Vec<&str> = r.indices.iter().map(|i| self.index_name(*i)).collect();
        let mut s = format!("{name}[{}", idx.join(", "));
        if !r.filters.is_empty() {
            let _ = write!(s, " where {}", self.conjunction(&r.filters));
        }
        let body: Vec<String> = r.body.iter().map(|e| self.expr(e, 0)).collect();
        let _ = write!(s, "]({})", body.join(", "));
        s
    }

    fn local(&self, i: usize) -> String {
        let Some(r) = self.locals else { return format!("local{i}") };
        let n = r.fields.len();
        match i {
            i if i < n => format!("a.{}", r.fields[i].0),
            i if i < 2 * n => format!("b.{}", r.fields[i - n].0),
            i => format!("let{}", i - 2 * n),
        }
    }

    /// `e` as text, parenthesized when it binds more loosely than `min`.
    fn expr(&self, e: &Expr, min: u8) -> String {
        let (text, p) = match &e.kind {
            ExprKind::Lit(l) => {
                let negative = match l {
                    Lit::Int(i) => *i < 0,
                    Lit::Float(x) => x.is_sign_negative() && !x.is_nan(),
                    Lit::Bool(_) => false,
                };
                (lit_text(*l, e.dtype), if negative { 6 } else { 7 })
            }
            ExprKind::Index(i) => (self.index_name(*i).to_string(), 7),
            ExprKind::Dim(d) => (self.kernel.and_then(|k| k.dims.get(d.index())).map_or_else(|| "?".to_string(), |d| d.name.clone()), 7),
            ExprKind::Param(id) => (self.program.params.get(id.index()).map_or_else(|| "?".to_string(), |p| p.name.clone()), 7),
            ExprKind::Read { tensor, subs } => {
                if subs.is_empty() {
                    (self.tensor_name(*tensor).to_string(), 7)
                } else {
                    let s: Vec<String> = subs.iter().map(|s| self.expr(s, 0)).collect();
                    (format!("{}[{}]", self.tensor_name(*tensor), s.join(", ")), 7)
                }
            }
            ExprKind::ScanPrev { tensor, offset } => (self.scan_prev(*tensor, *offset), 7),
            ExprKind::Local(i) => (self.local(*i), 7),
            ExprKind::Unary(op, a) => {
                let sym = match op {
                    UnOp::Neg => "-",
                    UnOp::Not => "!",
                };
                (format!("{sym}{}", self.expr(a, 6)), 6)
            }
            ExprKind::Binary(op, a, b) => {
                let p = prec(*op);
                // Left-associative; comparisons do not associate at all.
                let lmin = if op.is_comparison() { p + 1 } else { p };
                (format!("{} {} {}", self.expr(a, lmin), op.symbol(), self.expr(b, p + 1)), p)
            }
            ExprKind::If(c, a, b) => (format!("if {} then {} else {}", self.expr(c, 0), self.expr(a, 0), self.expr(b, 0)), 0),
            ExprKind::Call(f, args) => {
                let a: Vec<String> = args.iter().map(|x| self.expr(x, 0)).collect();
                (format!("{}({})", f.name(), a.join(", ")), 7)
            }
            ExprKind::Cast(a) => (format!("{}({})", e.dtype, self.expr(a, 0)), 7),
            ExprKind::Reduce(r) => (self.reduce(r), 7),
        };
        if p < min { format!("({text})") } else { text }
    }

    /// A look-back read, written as the source would: `T[b, t - 1, e]`.
    fn scan_prev(&self, tensor: TensorId, offset: i64) -> String {
        let name = self.tensor_name(tensor);
        let Some((indices, scanned)) = self.scan else { return format!("{name}[prev {offset}]") };
        let subs: Vec<String> = indices
            .iter()
            .map(|i| {
                let n = self.index_name(*i);
                if *i == scanned { format!("{n} - {offset}") } else { n.to_string() }
            })
            .collect();
        format!("{name}[{}]", subs.join(", "))
    }
}
