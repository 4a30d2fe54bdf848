//! Fusion: algebraic normal forms that let producers and consumers meet, and filters that
//! travel from a value (`where`) to the iteration space of the reduction consuming it.
//! Common subterms are shared by the e-graph itself.

use super::REDUCTIONS;
use crate::ir::lang::Tfm;
use crate::optimize::analysis::FreeIndices;
use egg::{Rewrite, rewrite};

/// The fusion rules.
pub fn rules() -> Vec<Rewrite<Tfm, FreeIndices>> {
    let mut v = vec![
        // a * b => b * a
        rewrite!("mul-comm"; "(* ?a ?b)" => "(* ?b ?a)"),
        // a * (b * c) => (a * b) * c
        rewrite!("mul-assoc-left"; "(* ?a (* ?b ?c))" => "(* (* ?a ?b) ?c)"),
        // (a * b) * c => a * (b * c)
        rewrite!("mul-assoc-right"; "(* (* ?a ?b) ?c)" => "(* ?a (* ?b ?c))"),
        // (where g x) * y => where g (x * y)        (absence propagates through strict ops)
        rewrite!("where-out-of-mul"; "(* (where ?g ?x) ?y)" => "(where ?g (* ?x ?y))"),
        // (where g x) + y => where g (x + y)
        rewrite!("where-out-of-add-left"; "(+ (where ?g ?x) ?y)" => "(where ?g (+ ?x ?y))"),
        // y + (where g x) => where g (y + x)
        rewrite!("where-out-of-add-right"; "(+ ?y (where ?g ?x))" => "(where ?g (+ ?y ?x))"),
        // (where g x) - y => where g (x - y)
        rewrite!("where-out-of-sub-left"; "(- (where ?g ?x) ?y)" => "(where ?g (- ?x ?y))"),
        // y - (where g x) => where g (y - x)
        rewrite!("where-out-of-sub-right"; "(- ?y (where ?g ?x))" => "(where ?g (- ?y ?x))"),
        // (where g x) / y => where g (x / y)
        rewrite!("where-out-of-div-left"; "(/ (where ?g ?x) ?y)" => "(where ?g (/ ?x ?y))"),
        // y / (where g x) => where g (y / x)
        rewrite!("where-out-of-div-right"; "(/ ?y (where ?g ?x))" => "(where ?g (/ ?y ?x))"),
        // f(where g x) => where g f(x)              (unary elementwise function)
        rewrite!("where-out-of-call"; "(call ?f (where ?g ?x))" => "(where ?g (call ?f ?x))"),
        // cast(where g x) => where g cast(x)
        rewrite!("where-out-of-cast"; "(cast ?t (where ?g ?x))" => "(where ?g (cast ?t ?x))"),
        // where g (where h x) => where (g && h) x
        rewrite!("where-where"; "(where ?g (where ?h ?x))" => "(where (&& ?g ?h) ?x)"),
        // true && a => a
        rewrite!("and-true-left"; "(&& true ?a)" => "?a"),
        // a && true => a
        rewrite!("and-true-right"; "(&& ?a true)" => "?a"),
        // a && a => a
        rewrite!("and-idem"; "(&& ?a ?a)" => "?a"),
        // a && (a && b) => a && b
        rewrite!("and-absorb"; "(&& ?a (&& ?a ?b))" => "(&& ?a ?b)"),
    ];
    for op in REDUCTIONS {
        // op_i[F](where g b) => op_i[F && g](b)     (absent points are skipped either way)
        v.push(
            Rewrite::new(
                format!("where-into-{op}-filter"),
                format!("({op} ?i ?lo ?hi ?f (where ?g ?b))").parse::<egg::Pattern<Tfm>>().expect("rule pattern"),
                format!("({op} ?i ?lo ?hi (&& ?f ?g) ?b)").parse::<egg::Pattern<Tfm>>().expect("rule pattern"),
            )
            .expect("valid rule"),
        );
    }
    v
}
