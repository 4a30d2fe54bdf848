//! KIR as indented text (`tfmc build --emit=kir`, `tfmc explain`'s schedule section): one
//! statement per line, expressions in prefix-free infix form. For reading, not parsing.

use std::fmt::{self, Write};

use super::kir::{BinOp, BufKind, Const, Expr, Func, Stmt, UnOp};

impl fmt::Display for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.dims.iter().map(|v| self.var(*v).name.clone()).collect();
        writeln!(f, "kernel {}(dims: {}; params: {})", self.name, names.join(", "), {
            let p: Vec<String> = self.params.iter().map(|v| format!("{}: {}", self.var(*v).name, self.var(*v).ty)).collect();
            p.join(", ")
        })?;
        for (i, b) in self.bufs.iter().enumerate() {
            let kind = match &b.kind {
                BufKind::Arg(k) => format!("arg {k}"),
                BufKind::Heap => "heap".to_string(),
                BufKind::Stack(n) => format!("stack [{n}]"),
                BufKind::Shared(n) => format!("shared [{n}]"),
            };
            writeln!(f, "  buf%{i} {}: {} ({kind})", b.name, b.elem)?;
        }
        if let Some(t) = self.thread {
            writeln!(f, "  thread index {}", vname(self, t.0))?;
        }
        let mut out = String::new();
        block(self, &self.body, 1, &mut out)?;
        f.write_str(&out)
    }
}

fn block(func: &Func, b: &[Stmt], depth: usize, out: &mut String) -> fmt::Result {
    let pad = "  ".repeat(depth);
    for s in b {
        match s {
            Stmt::Set { var, value } => writeln!(out, "{pad}{} = {}", vname(func, var.0), expr(func, value))?,
            Stmt::Store { buf, index, value } => {
                writeln!(out, "{pad}{}[{}] = {}", func.buf(*buf).name, expr(func, index), expr(func, value))?
            }
            Stmt::For { var, lo, hi, body } => {
                writeln!(out, "{pad}for {} in {}..{} {{", vname(func, var.0), expr(func, lo), expr(func, hi))?;
                block(func, body, depth + 1, out)?;
                writeln!(out, "{pad}}}")?;
            }
            Stmt::Parallel { var, n, body } => {
                writeln!(out, "{pad}parallel {} in 0..{} {{", vname(func, var.0), expr(func, n))?;
                block(func, body, depth + 1, out)?;
                writeln!(out, "{pad}}}")?;
            }
            Stmt::BlockParallel { var, n, threads, body } => {
                writeln!(out, "{pad}block_parallel {} in 0..{} ({threads} threads) {{", vname(func, var.0), expr(func, n))?;
                block(func, body, depth + 1, out)?;
                writeln!(out, "{pad}}}")?;
            }
            Stmt::Barrier => writeln!(out, "{pad}barrier")?,
            Stmt::If { cond, then, els } => {
                writeln!(out, "{pad}if {} {{", expr(func, cond))?;
                block(func, then, depth + 1, out)?;
                if !els.is_empty() {
                    writeln!(out, "{pad}}} else {{")?;
                    block(func, els, depth + 1, out)?;
                }
                writeln!(out, "{pad}}}")?;
            }
            Stmt::Alloc { buf, len, zeroed } => {
                let how = if *zeroed { "" } else { " (uninitialized)" };
                writeln!(out, "{pad}alloc {}[{}]{how}", func.buf(*buf).name, expr(func, len))?
            }
            Stmt::TileProduct(t) => {
                let init = match &t.init {
                    crate::schedule::kir::TileInit::Zero => "0".to_string(),
                    crate::schedule::kir::TileInit::Load => "C".to_string(),
                    crate::schedule::kir::TileInit::Scale { buf, at } => format!("{}[{} + i] * C", func.buf(*buf).name, expr(func, at)),
                };
                // `a * b`, or `sqdiff(a, b)` for `(a - b)²`.
                let (open, op) = match t.op {
                    crate::schedule::kir::TileOp::Mul => ("", " * "),
                    crate::schedule::kir::TileOp::SquaredDifference => ("sqdiff(", ", "),
                };
                let close = if open.is_empty() { "" } else { ")" };
                // A's element along the sum: `k`, or `k*ka` for a key-major tile.
                let ak = if t.ka == crate::schedule::kir::Expr::Const(crate::schedule::kir::Const::I64(1)) {
                    "k".to_string()
                } else {
                    format!("k*{}", expr(func, &t.ka))
                };
                writeln!(
                    out,
                    "{pad}{}[{} + i*{} + j] = {init} + sum[k < {}]({open}{}[{} + i*{} + {ak}]{op}{}[{} + k*{} + j]{close}) for i < {}, j < min({}, {})",
                    func.buf(t.c).name,
                    expr(func, &t.c0),
                    expr(func, &t.ldc),
                    expr(func, &t.k),
                    func.buf(t.a).name,
                    expr(func, &t.a0),
                    expr(func, &t.lda),
                    func.buf(t.b).name,
                    expr(func, &t.b0),
                    expr(func, &t.ldb),
                    t.m,
                    expr(func, &t.cols),
                    t.n
                )?
            }
            Stmt::Mma(m) => {
                let list = |xs: &[Expr]| xs.iter().map(|x| expr(func, x)).collect::<Vec<_>>().join(", ");
                let d: Vec<String> = m.d.iter().map(|v| vname(func, v.0)).collect();
                let kind = match m.kind {
                    crate::schedule::kir::MmaKind::F16 => "f16",
                    crate::schedule::kir::MmaKind::BF16 => "bf16",
                };
                writeln!(out, "{pad}({}) = mma.m16n8k16.{kind} a[{}] b[{}] c[{}]", d.join(", "), list(&m.a), list(&m.b), list(&m.c))?
            }
            Stmt::Fail { code } => {
                let site = func.sites.get((*code >> 8) as usize).map_or("", String::as_str);
                writeln!(out, "{pad}fail {} ({site})", code & 0xff)?
            }
        }
    }
    Ok(())
}

fn vname(func: &Func, v: u32) -> String {
    format!("{}%{v}", func.vars.get(v as usize).map_or("?", |d| d.name.as_str()))
}

/// An expression as text.
pub fn expr(func: &Func, x: &Expr) -> String {
    match x {
        Expr::Const(c) => match c {
            Const::Bool(b) => b.to_string(),
            Const::I32(i) => format!("{i}i32"),
            Const::I64(i) => i.to_string(),
            Const::F32(v) => format!("{v:?}f32"),
            Const::F64(v) => format!("{v:?}"),
        },
        Expr::Var(v) => vname(func, v.0),
        Expr::Load { buf, index } => format!("{}[{}]", func.buf(*buf).name, expr(func, index)),
        Expr::Unary { op, x } => match op {
            UnOp::Neg => format!("-({})", expr(func, x)),
            UnOp::Not => format!("!({})", expr(func, x)),
            op => format!("{}({})", format!("{op:?}").to_lowercase(), expr(func, x)),
        },
        Expr::Binary { op, a, b, reassoc } => {
            let sym = match op {
                BinOp::Add => "+",
                BinOp::Sub => "-",
                BinOp::Mul => "*",
                BinOp::Div => "/",
                BinOp::Rem => "%",
                BinOp::Lt => "<",
                BinOp::Le => "<=",
                BinOp::Gt => ">",
                BinOp::Ge => ">=",
                BinOp::Eq => "==",
                BinOp::Ne => "!=",
                BinOp::And => "&&",
                BinOp::Or => "||",
                BinOp::Shl => "<<",
                op => {
                    let mut s = String::new();
                    let _ = write!(s, "{}({}, {})", format!("{op:?}").to_lowercase(), expr(func, a), expr(func, b));
                    return s;
                }
            };
            let r = if *reassoc { "~" } else { "" };
            format!("({} {sym}{r} {})", expr(func, a), expr(func, b))
        }
        Expr::Select { c, a, b } => format!("select({}, {}, {})", expr(func, c), expr(func, a), expr(func, b)),
        Expr::Cast { to, x } => format!("{to}({})", expr(func, x)),
        Expr::Bitcast { to, x } => format!("bitcast<{to}>({})", expr(func, x)),
    }
}
