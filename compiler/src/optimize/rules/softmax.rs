//! Softmax: normalization hoisting and the online-softmax derivation (FuseMax's 1-pass
//! cascade; Lean Attention's associative (m, l, o) combine), also with a sink term in the
//! denominator (`osmz`: attention sinks, softmax₁). The pattern is the *shape* of
//! the cascade — any logits `s` (ALiBi bias, softcap, L2 distance, GQA reads), any filter `F`
//! and bounds, any values `v` — not a template for one kernel.

use super::{both, float, not_free, safe, total};
use crate::ir::lang::Tfm;
use crate::optimize::analysis::FreeIndices;
use egg::{Rewrite, rewrite};

/// The softmax rules.
pub fn rules() -> Vec<Rewrite<Tfm, FreeIndices>> {
    vec![
        // sum_i(a * (n / d)) => sum_i(a * n) / d    when d is a float free of i, never absent
        rewrite!("hoist-div-right"; "(sum ?i ?lo ?hi ?f (* ?a (/ ?n ?d)))" => "(/ (sum ?i ?lo ?hi ?f (* ?a ?n)) ?d)"
            if both(both(not_free("?i", &["?d"]), total("?d")), both(float("?d"), safe(&["?d"])))),
        // sum_i(n / d) => sum_i(n) / d              when d is a float free of i, never absent
        rewrite!("hoist-div"; "(sum ?i ?lo ?hi ?f (/ ?n ?d))" => "(/ (sum ?i ?lo ?hi ?f ?n) ?d)"
            if both(both(not_free("?i", &["?d"]), total("?d")), both(float("?d"), safe(&["?d"])))),
        // sum_i(exp(s - max_i s) * v) / sum_i(exp(s - max_i s)) => osm_i(s, v)   (one pass)
        rewrite!("online-softmax";
            "(/ (sum ?i ?lo ?hi ?f (* (call exp (- ?s (max ?i ?lo ?hi ?f ?s))) ?v))
                (sum ?i ?lo ?hi ?f (call exp (- ?s (max ?i ?lo ?hi ?f ?s)))))"
            => "(osm ?i ?lo ?hi ?f ?s ?v)"),
        // With a sink in the denominator (attention sinks; softmax₁'s `exp(-max)`): the same
        // one pass, the sink added to the row's sum at the end     when c is a float free of
        // i that can neither fail nor be absent. Both orders of the `+`.
        rewrite!("online-softmax-sink";
            "(/ (sum ?i ?lo ?hi ?f (* (call exp (- ?s (max ?i ?lo ?hi ?f ?s))) ?v))
                (+ (call exp (- ?c (max ?i ?lo ?hi ?f ?s))) (sum ?i ?lo ?hi ?f (call exp (- ?s (max ?i ?lo ?hi ?f ?s))))))"
            => "(osmz ?i ?lo ?hi ?f ?s ?v ?c)"
            if sink()),
        rewrite!("online-softmax-sink-last";
            "(/ (sum ?i ?lo ?hi ?f (* (call exp (- ?s (max ?i ?lo ?hi ?f ?s))) ?v))
                (+ (sum ?i ?lo ?hi ?f (call exp (- ?s (max ?i ?lo ?hi ?f ?s)))) (call exp (- ?c (max ?i ?lo ?hi ?f ?s)))))"
            => "(osmz ?i ?lo ?hi ?f ?s ?v ?c)"
            if sink()),
        // softmax₁ written with `exp(-max)`: a sink of 0.
        rewrite!("online-softmax-one";
            "(/ (sum ?i ?lo ?hi ?f (* (call exp (- ?s (max ?i ?lo ?hi ?f ?s))) ?v))
                (+ (call exp (neg (max ?i ?lo ?hi ?f ?s))) (sum ?i ?lo ?hi ?f (call exp (- ?s (max ?i ?lo ?hi ?f ?s))))))"
            => "(osmz ?i ?lo ?hi ?f ?s ?v 0.0)"),
        rewrite!("online-softmax-one-last";
            "(/ (sum ?i ?lo ?hi ?f (* (call exp (- ?s (max ?i ?lo ?hi ?f ?s))) ?v))
                (+ (sum ?i ?lo ?hi ?f (call exp (- ?s (max ?i ?lo ?hi ?f ?s)))) (call exp (neg (max ?i ?lo ?hi ?f ?s)))))"
            => "(osmz ?i ?lo ?hi ?f ?s ?v 0.0)"),
    ]
}

/// A sink term `c` the rows' write evaluates once: a float free of the reduced index `?i` that
/// can neither fail nor be absent.
fn sink() -> impl Fn(&mut crate::optimize::Graph, egg::Id, &egg::Subst) -> bool {
    both(both(not_free("?i", &["?c"]), total("?c")), both(float("?c"), safe(&["?c"])))
}
