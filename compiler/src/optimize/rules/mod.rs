//! Rewrite rules, one file per topic. Each rule is named in kebab-case with its law as a
//! one-line comment. Conditions consult the [`super::analysis`] facts, so no rule moves a term
//! across a binder of an index it depends on, or distributes over a possibly-absent value.
//!
//! Filters are normalized outside the e-graph (see `super::normalize`): moving `where`s into
//! reduction filters and filters into bounds always pays off, and as rules their `&&`
//! combinations grow without end.
//!
//! To add a rule: put it in the topic's file with its law, give it a soundness test in
//! `optimize/tests.rs` (interpret before and after on random inputs), and, if it should fire
//! on a `lib/` kernel, a golden `explain` snapshot shows it.

pub mod contraction;
pub mod fusion;
pub mod softmax;

use super::analysis::{FreeIndices, Graph, free_of};
use crate::ir::lang::Tfm;
use egg::{Id, Rewrite, Subst, Var};

/// Every rule.
pub fn all() -> Vec<Rewrite<Tfm, FreeIndices>> {
    let mut v = Vec::new();
    v.extend(fusion::rules());
    v.extend(softmax::rules());
    v.extend(contraction::rules());
    v
}

/// The pattern variable `name` (`"?x"`); rule patterns are literals, so this cannot fail.
pub fn var(name: &str) -> Var {
    name.parse().expect("pattern variable literal")
}

/// Condition: index `?i` is free in none of `xs`.
pub fn not_free(i: &'static str, xs: &'static [&'static str]) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let i = var(i);
    let xs: Vec<Var> = xs.iter().map(|x| var(x)).collect();
    move |g, _, s| xs.iter().all(|x| free_of(g, s[*x], s[i]))
}

/// Condition: `?x` always has a value.
pub fn total(x: &'static str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let x = var(x);
    move |g, _, s| !g[s[x]].data.partial
}

/// Condition: `?x` is a float (laws of real arithmetic hold; integer `/` floors).
pub fn float(x: &'static str) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let x = var(x);
    move |g, _, s| g[s[x]].data.kind == super::analysis::Kind::Float
}

/// Condition: none of `xs` can raise a run-time error (so they may move out of a guard).
pub fn safe(xs: &'static [&'static str]) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let xs: Vec<Var> = xs.iter().map(|x| var(x)).collect();
    move |g, _, s| xs.iter().all(|x| g[s[*x]].data.safe)
}

/// Both conditions.
pub fn both(
    a: impl Fn(&mut Graph, Id, &Subst) -> bool,
    b: impl Fn(&mut Graph, Id, &Subst) -> bool,
) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    move |g, id, s| a(g, id, s) && b(g, id, s)
}

/// The reductions with the shape `(op I lo hi F body)`.
pub const REDUCTIONS: [&str; 4] = ["sum", "max", "min", "prod"];
