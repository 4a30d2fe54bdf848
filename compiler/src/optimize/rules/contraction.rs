//! Contraction order: distributing products over sums (and sums over differences) and
//! swapping independent sums, so extraction can pick the cheaper association — linear attention's
//! `(φQ φKᵀ) V → φQ (φKᵀ V)` falls out of these plus the cost model, which charges each
//! subterm once over the indices it depends on (so `φKᵀ V`, free of `p`, is paid once).

use super::{both, float, not_free, safe, total};
use crate::ir::lang::Tfm;
use crate::optimize::analysis::FreeIndices;
use egg::{Rewrite, rewrite};

/// The contraction rules.
pub fn rules() -> Vec<Rewrite<Tfm, FreeIndices>> {
    vec![
        // a * sum_i(b) => sum_i(a * b)              when a is free of i and never absent
        rewrite!("mul-into-sum"; "(* ?a (sum ?i ?lo ?hi ?f ?b))" => "(sum ?i ?lo ?hi ?f (* ?a ?b))"
            if both(not_free("?i", &["?a"]), total("?a"))),
        // sum_i(a * b) => a * sum_i(b)              when a is free of i, never absent, and safe
        //                                           (a is now evaluated even if the range is empty)
        rewrite!("mul-out-of-sum"; "(sum ?i ?lo ?hi ?f (* ?a ?b))" => "(* ?a (sum ?i ?lo ?hi ?f ?b))"
            if both(both(not_free("?i", &["?a"]), total("?a")), safe(&["?a"]))),
        // sum_i sum_j x => sum_j sum_i x            when neither range depends on the other index
        //                                           and j's range (now outermost) is safe
        rewrite!("sum-swap"; "(sum ?i ?li ?hi ?fi (sum ?j ?lj ?hj ?fj ?x))" => "(sum ?j ?lj ?hj ?fj (sum ?i ?li ?hi ?fi ?x))"
            if both(both(not_free("?j", &["?li", "?hi", "?fi"]), not_free("?i", &["?lj", "?hj", "?fj"])), safe(&["?lj", "?hj", "?fj"]))),
        // sum_i(x - y) => sum_i(x) - sum_i(y)      when x and y are floats, never absent, and
        //                                           safe (differential attention: two softmaxes
        //                                           over the same keys become two one-pass sums)
        rewrite!("sum-of-difference"; "(sum ?i ?lo ?hi ?f (- ?x ?y))" => "(- (sum ?i ?lo ?hi ?f ?x) (sum ?i ?lo ?hi ?f ?y))"
            if both(both(float("?x"), float("?y")), both(both(total("?x"), total("?y")), safe(&["?x", "?y"])))),
        // (a - b) * v => a * v - b * v              floats
        rewrite!("mul-over-difference"; "(* (- ?a ?b) ?v)" => "(- (* ?a ?v) (* ?b ?v))"
            if both(both(float("?a"), float("?b")), float("?v"))),
    ]
}
