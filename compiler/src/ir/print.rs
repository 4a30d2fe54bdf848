//! The IR's text form: one line per tensor, expressions as egg s-expressions.
//!
//! ```text
//! cascade sdpa
//!   dims B H P E M F
//!   range b: B, h: H, ...
//!   input Q: f32[B, H, P, E]
//!   local S[b, h, p, m]: f32[B, H, P, M] = (* (sum e 0 (dim E) true ...) ...)
//!   output O[b, h, p, f]: f32[B, H, P, F] = ...
//!   local C[t]: f32[T] = scan t init 0.0 body (+ (prev C 1) (read X t))
//! ```
//! Each expression is printed in egg's s-expression syntax, which `RecExpr::from_str` reads back.

use super::{Cascade, Def, Role, Size};

fn shape(s: &[Size]) -> String {
    let parts: Vec<String> = s.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// The text form of a cascade.
pub fn print_cascade(c: &Cascade) -> String {
    let mut out = format!("cascade {}\n", c.name);
    out.push_str(&format!("  dims {}\n", c.dims.join(" ")));
    let ranges: Vec<String> = c.ranges.iter().map(|(n, s)| format!("{n}: {s}")).collect();
    out.push_str(&format!("  range {}\n", ranges.join(", ")));
    for &ix in &c.order {
        let n = &c.graph[ix];
        let role = match n.role {
            Role::Input(_) => "input",
            Role::Output(_) => "output",
            Role::Local => "local",
        };
        match &n.def {
            Def::Input => out.push_str(&format!("  {role} {}: {}{}\n", n.name, n.dtype, shape(&n.shape))),
            Def::Expr(e) => out.push_str(&format!(
                "  {role} {}[{}]: {}{} = {}\n",
                n.name,
                n.indices.join(", "),
                n.dtype,
                shape(&n.shape),
                e
            )),
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
