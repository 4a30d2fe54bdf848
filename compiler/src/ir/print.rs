//! The IR's text form: one line per tensor, expressions as egg s-expressions.
//!
//! ```text
//! cascade sdpa
//!   dims B H P E M F
//!   product MP*PS = MP * PS         (one line per product dim, when the kernel has any)
//!   range b: B, h: H, ...
//!   input Q: f32[B, H, P, E]
//!   local S[b, h, p, m]: f32[B, H, P, M] = (* (sum e 0 (dim E) true ...) ...)
//!   output O[b, h, p, f]: f32[B, H, P, F] = ...
//!   local C[t]: f32[T] = scan t init 0.0 body (+ (prev C 1) (read X (idx t)))
//! ```
//! Each expression is printed in egg's s-expression syntax, which `RecExpr::from_str` reads back;
//! [`super::parse::parse_cascade`] reads the whole text back (round-trip tested over `lib/`).
//! Inputs and outputs are numbered by order of appearance; one whose argument/output position
//! differs is written `input#k` / `output#k`. Floats print bit-exactly (see `lang::Const`).

use super::{Cascade, Def, Role, Size};

fn shape(s: &[Size]) -> String {
    let parts: Vec<String> = s.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// `input`/`output` when `i` is the number of such nodes printed before (the usual case),
/// else `input#i`/`output#i` (a kernel may define its outputs out of declaration order).
fn numbered(word: &str, i: usize, seen: &mut usize) -> String {
    let s = if i == *seen { word.to_string() } else { format!("{word}#{i}") };
    *seen += 1;
    s
}

/// The text form of a cascade.
pub fn print_cascade(c: &Cascade) -> String {
    let mut out = format!("cascade {}\n", c.name);
    let dims: String = c.dims.iter().map(|d| format!(" {d}")).collect();
    out.push_str(&format!("  dims{dims}\n"));
    for p in &c.products {
        out.push_str(&format!("  product {} = {}\n", p.name, p.formula()));
    }
    let ranges: Vec<String> = c.ranges.iter().map(|(n, s)| format!("{n}: {s}")).collect();
    let sep = if ranges.is_empty() { "" } else { " " };
    out.push_str(&format!("  range{sep}{}\n", ranges.join(", ")));
    let (mut inputs, mut outputs) = (0, 0);
    for &ix in &c.order {
        let n = &c.graph[ix];
        let role = match n.role {
            Role::Input(i) => numbered("input", i, &mut inputs),
            Role::Output(i) => numbered("output", i, &mut outputs),
            Role::Local => "local".to_string(),
        };
        match &n.def {
            Def::Input => out.push_str(&format!("  {role} {}: {}{}\n", n.name, n.dtype, shape(&n.shape))),
            Def::Expr(e) => {
                out.push_str(&format!("  {role} {}[{}]: {}{} = {}\n", n.name, n.indices.join(", "), n.dtype, shape(&n.shape), e))
            }
            Def::Scan { index, init, body } => out.push_str(&format!(
                "  {role} {}[{}]: {}{} = scan {index} init {init} body {body}\n",
                n.name,
                n.indices.join(", "),
                n.dtype,
                shape(&n.shape)
            )),
        }
    }
    out
}
