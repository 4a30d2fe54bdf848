//! The formatter: [`ast::File`](crate::ast::File) → canonical `.tfm` text (`tfmc check --emit=ast`).
//!
//! Canonical form: items separated by one blank line, doc comments (`/// `) kept, no other
//! comments, 4-space indentation, one statement per line, single spaces around binary
//! operators and after commas, outputs always in parentheses, positional call arguments before
//! named ones, and the fewest parentheses the grammar's precedence needs (lowest first: `if`,
//! `||`, `&&`, comparisons (non-associative), `+ -`, `* / %`, unary `- !`, postfix `.field`,
//! atoms; binary operators are left-associative).
//!
//! Invariant (tested in `dsl/tests/roundtrip.rs`): for every AST the parser produces,
//! `parse(print(ast))` is `ast` up to spans, and printing is idempotent. ASTs the parser cannot
//! produce need not round-trip: `Unary(Neg, <int or float literal>)` (the parser folds it into
//! the literal, except the negation of `i64::MIN`), NaN literals, one-element tuples, empty output lists,
//! reductions without indices or body, and names that are not identifiers.

use crate::ast::*;
use std::fmt::Write as _;

/// Formats a whole file.
pub fn print_file(file: &File) -> String {
    let mut p = Printer { out: String::new() };
    for (i, item) in file.items.iter().enumerate() {
        if i > 0 {
            p.out.push('\n');
        }
        p.item(item);
    }
    p.out
}

/// Formats one expression on one line (for diagnostics and dumps).
pub fn print_expr(e: &Expr) -> String {
    expr_str(e, PREC_IF)
}

/// Formats a literal so that it re-parses to the same value: floats always contain `.` or
/// `e` (or are `inf`), negative values start with `-`.
pub fn print_lit(lit: Lit) -> String {
    match lit {
        Lit::Int(i) => i.to_string(),
        Lit::Bool(b) => b.to_string(),
        Lit::Float(f) if f.is_nan() => "(inf - inf)".to_string(),
        Lit::Float(f) if f.is_infinite() => if f > 0.0 { "inf" } else { "-inf" }.to_string(),
        Lit::Float(f) => {
            // `{:?}` is the shortest text that parses back to the same f64 (`1.0`, `1e-6`).
            let s = format!("{f:?}");
            if s.contains(['.', 'e', 'E']) { s } else { format!("{s}.0") }
        }
    }
}

// Precedence levels, lowest first. An expression printed where at least `min` is needed
// gets parentheses when its own level is lower.
const PREC_IF: u8 = 0;
const PREC_OR: u8 = 1;
const PREC_AND: u8 = 2;
const PREC_CMP: u8 = 3;
const PREC_ADD: u8 = 4;
const PREC_MUL: u8 = 5;
const PREC_UNARY: u8 = 6;
const PREC_POSTFIX: u8 = 7;
const PREC_ATOM: u8 = 8;

fn binop_prec(op: BinOp) -> u8 {
    match op {
        BinOp::Or => PREC_OR,
        BinOp::And => PREC_AND,
        BinOp::Add | BinOp::Sub => PREC_ADD,
        BinOp::Mul | BinOp::Div | BinOp::Rem => PREC_MUL,
        _ => PREC_CMP,
    }
}

fn prec(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::If(..) => PREC_IF,
        ExprKind::Binary(op, ..) => binop_prec(*op),
        ExprKind::Unary(..) => PREC_UNARY,
        // `-1` is a unary minus folded into the literal: it binds like one.
        ExprKind::Lit(Lit::Int(i)) if *i < 0 => PREC_UNARY,
        ExprKind::Lit(Lit::Float(f)) if f.is_sign_negative() => PREC_UNARY,
        ExprKind::Field { .. } => PREC_POSTFIX,
        _ => PREC_ATOM,
    }
}

fn expr_str(e: &Expr, min: u8) -> String {
    let mut s = String::new();
    write_expr(&mut s, e, min);
    s
}

fn write_expr(out: &mut String, e: &Expr, min: u8) {
    if prec(e) < min {
        out.push('(');
        write_expr(out, e, PREC_IF);
        out.push(')');
        return;
    }
    match &e.kind {
        ExprKind::Lit(l) => out.push_str(&print_lit(*l)),
        ExprKind::Name(id) => out.push_str(&id.name),
        ExprKind::Access { tensor, subs } => {
            out.push_str(&tensor.name);
            out.push('[');
            write_list(out, subs);
            out.push(']');
        }
        ExprKind::Field { base, field } => {
            // A literal base always gets parentheses: `5.x` would lex as the float `5.`.
            if matches!(base.kind, ExprKind::Lit(_)) {
                out.push('(');
                write_expr(out, base, PREC_IF);
                out.push(')');
            } else {
                write_expr(out, base, PREC_ATOM);
            }
            out.push('.');
            out.push_str(&field.name);
        }
        ExprKind::Call { func, args } => {
            out.push_str(&func.name);
            out.push('(');
            write_list(out, args);
            out.push(')');
        }
        ExprKind::Cast { dtype, arg } => {
            out.push_str(dtype.name());
            out.push('(');
            write_expr(out, arg, PREC_IF);
            out.push(')');
        }
        ExprKind::Reduce { op, indices, filter, body } => {
            out.push_str(&op.name);
            out.push('[');
            write_idents(out, indices);
            if let Some(f) = filter {
                out.push_str(" where ");
                write_expr(out, f, PREC_IF);
            }
            out.push_str("](");
            write_list(out, body);
            out.push(')');
        }
        ExprKind::Unary(op, x) => {
            out.push(match op {
                UnOp::Neg => '-',
                UnOp::Not => '!',
            });
            // `--x`, `!-x`: the grammar takes any number of prefix operators.
            write_expr(out, x, PREC_UNARY);
        }
        ExprKind::Binary(op, a, b) => {
            let p = binop_prec(*op);
            // Left-associative: the right operand of equal precedence needs parentheses;
            // comparisons do not chain, so both their operands sit one level up.
            let left_min = if p == PREC_CMP { PREC_ADD } else { p };
            write_expr(out, a, left_min);
            let _ = write!(out, " {} ", op.symbol());
            write_expr(out, b, p + 1);
        }
        ExprKind::If(c, a, b) => {
            // Each part is a whole expression: `if if a then b else c then ...` parses, and
            // extra parentheses could push a file over the bracket limit.
            out.push_str("if ");
            write_expr(out, c, PREC_IF);
            out.push_str(" then ");
            write_expr(out, a, PREC_IF);
            out.push_str(" else ");
            write_expr(out, b, PREC_IF);
        }
        ExprKind::Tuple(elems) => {
            out.push('(');
            write_list(out, elems);
            out.push(')');
        }
    }
}

fn write_list(out: &mut String, es: &[Expr]) {
    for (i, e) in es.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_expr(out, e, PREC_IF);
    }
}

fn write_idents(out: &mut String, ids: &[Ident]) {
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&id.name);
    }
}

/// A dim as written: `B`, `64`, `MP * PS`.
pub fn dim_string(d: &Dim) -> String {
    match d {
        Dim::Named(id) => id.name.clone(),
        // The parser turns a size too long for i64 into -1 (the checker reports it); print one
        // such size so the file keeps its meaning (and its error).
        Dim::Fixed(n, _) if *n < 0 => "99999999999999999999".to_string(),
        Dim::Fixed(n, _) => n.to_string(),
        Dim::Product(fs, _) => fs.iter().map(dim_string).collect::<Vec<_>>().join(" * "),
    }
}

struct Printer {
    out: String,
}

impl Printer {
    fn line(&mut self, indent: usize, text: &str) {
        for _ in 0..indent {
            self.out.push_str("    ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn docs(&mut self, docs: &[String]) {
        for d in docs {
            if d.is_empty() { self.line(0, "///") } else { self.line(0, &format!("/// {d}")) }
        }
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Use(u) => self.line(0, &format!("use \"{}\"", u.path)),
            Item::Param(p) => {
                self.docs(&p.docs);
                let mut s = format!("param {}: {}", p.name.name, p.dtype.name());
                if let Some((lit, _)) = &p.default {
                    let _ = write!(s, " = {}", print_lit(*lit));
                }
                self.line(0, &s);
            }
            Item::Reduction(r) => self.reduction(r),
            Item::Kernel(k) => self.kernel(k),
        }
    }

    fn reduction(&mut self, r: &ReductionItem) {
        self.docs(&r.docs);
        let fields: Vec<String> = r.fields.iter().map(|f| format!("{}: {}", f.name.name, f.dtype.name())).collect();
        self.line(0, &format!("reduction {}({}) {{", r.name.name, fields.join(", ")));
        self.line(1, &format!("identity = {}", print_expr(&r.identity)));
        self.line(1, &format!("combine({}, {}) {{", r.operands.0.name, r.operands.1.name));
        // Nothing separates the last `let` from the result: `let m = a` then `-b` would parse
        // as `a - b`, and `let m = a` then `(m, b)` as the call `a(m, b)` (`X[i]` then `(..)`
        // as a reduction). Parenthesize the result, then the last value, where needed.
        let mut result = print_expr(&r.result);
        if !r.lets.is_empty() && result.starts_with('-') {
            result = format!("({result})");
        }
        for (i, (name, value)) in r.lets.iter().enumerate() {
            let mut v = print_expr(value);
            let last = i + 1 == r.lets.len();
            if last && result.starts_with('(') && v.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == ']') {
                v = format!("({v})");
            }
            self.line(2, &format!("let {} = {v}", name.name));
        }
        self.line(2, &result);
        self.line(1, "}");
        self.line(0, "}");
    }

    fn kernel(&mut self, k: &KernelItem) {
        self.docs(&k.docs);
        let decls = |ds: &[TensorDecl]| -> String {
            let parts: Vec<String> = ds
                .iter()
                .map(|d| {
                    let dims: Vec<String> = d.dims.iter().map(dim_string).collect();
                    format!("{}: {}[{}]", d.name.name, d.dtype.name(), dims.join(", "))
                })
                .collect();
            parts.join(", ")
        };
        let mut head = format!("kernel {}({}) -> ({})", k.name.name, decls(&k.args), decls(&k.outputs));
        if let Some(f) = &k.filter {
            let _ = write!(head, " where {}", print_expr(f));
        }
        head.push_str(" {");
        self.line(0, &head);
        for s in &k.body {
            let text = stmt_str(s);
            self.line(1, &text);
        }
        self.line(0, "}");
    }
}

fn stmt_str(s: &Stmt) -> String {
    match s {
        Stmt::Index { name, range, .. } => format!("index {}: {}", name.name, dim_string(range)),
        Stmt::Call(c) => {
            let outs: Vec<&str> = c.outputs.iter().map(|o| o.name.as_str()).collect();
            let mut args: Vec<String> = c.args.iter().map(|a| a.name.clone()).collect();
            args.extend(c.params.iter().map(|(n, e)| format!("{} = {}", n.name, print_expr(e))));
            format!("{} = {}({})", outs.join(", "), c.callee.name, args.join(", "))
        }
        Stmt::Assign(a) => {
            let mut s = String::new();
            for (i, l) in a.lhs.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(&l.tensor.name);
                s.push('[');
                write_idents(&mut s, &l.indices);
                s.push(']');
            }
            s.push_str(" = ");
            match &a.rhs {
                Rhs::Expr(e) => write_expr(&mut s, e, PREC_IF),
                Rhs::Scan { index, init, body, .. } => {
                    let _ = write!(s, "scan[{}, init = {}](", index.name, print_expr(init));
                    write_expr(&mut s, body, PREC_IF);
                    s.push(')');
                }
            }
            if let Some(f) = &a.filter {
                s.push_str(" where ");
                write_expr(&mut s, f, PREC_IF);
            }
            s
        }
    }
}
