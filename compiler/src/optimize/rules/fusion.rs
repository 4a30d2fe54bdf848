//! Fusion: the algebraic laws that let producers and consumers meet once locals are inlined
//! (products reordered and regrouped). Common subterms are shared by the e-graph itself;
//! filters are normalized by `optimize::normalize` before saturation.

use crate::ir::lang::Tfm;
use crate::optimize::analysis::FreeIndices;
use egg::{Rewrite, rewrite};

/// The fusion rules.
pub fn rules() -> Vec<Rewrite<Tfm, FreeIndices>> {
    let v = vec![
        // a * b => b * a
        rewrite!("mul-comm"; "(* ?a ?b)" => "(* ?b ?a)"),
        // a * (b * c) => (a * b) * c
        rewrite!("mul-assoc-left"; "(* ?a (* ?b ?c))" => "(* (* ?a ?b) ?c)"),
        // (a * b) * c => a * (b * c)
        rewrite!("mul-assoc-right"; "(* (* ?a ?b) ?c)" => "(* ?a (* ?b ?c))"),
        // dense(x) => x                          when x always has a value
        rewrite!("dense-total"; "(dense ?x)" => "?x" if super::total("?x")),
    ];
    v
}
