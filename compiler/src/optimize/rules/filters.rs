//! Filters → iteration-space bounds: a conjunct of a reduction's filter that bounds its index
//! by a term free of it moves into `lo`/`hi`, so causal reductions visit `0..=p` (half the
//! work) and a window visits `p-W+1..=p` (W keys) instead of testing every point.

use super::{REDUCTIONS, both, not_free};
use crate::optimize::analysis::Graph;
use egg::{ENodeOrVar, Id, Language, Subst};
use crate::ir::lang::Tfm;
use crate::optimize::analysis::FreeIndices;
use egg::{Pattern, Rewrite};

/// `(lhs, rhs)` filter shapes: a bound on `(idx ?i)` and the new `(lo, hi)`.
const BOUNDS: [(&str, &str, &str, &str); 5] = [
    // i <= e  =>  hi = min(hi, e + 1)
    ("upper-le", "(<= (idx ?i) ?e)", "?lo", "(call min ?hi (+ ?e 1))"),
    // i < e   =>  hi = min(hi, e)
    ("upper-lt", "(< (idx ?i) ?e)", "?lo", "(call min ?hi ?e)"),
    // i >= e  =>  lo = max(lo, e)
    ("lower-ge", "(>= (idx ?i) ?e)", "(call max ?lo ?e)", "?hi"),
    // e - i < w  =>  i > e - w  =>  lo = max(lo, e - w + 1)
    ("lower-window", "(< (- ?e (idx ?i)) ?w)", "(call max ?lo (+ (- ?e ?w) 1))", "?hi"),
    // i > e   =>  lo = max(lo, e + 1)
    ("lower-gt", "(> (idx ?i) ?e)", "(call max ?lo (+ ?e 1))", "?hi"),
];

/// Condition: the remaining conjunct `?r` is not itself the bound being moved (through
/// `a && a = a` it can be, and moving it again would nest `min(min(..))` forever).
fn rest_differs(cond: Pattern<Tfm>) -> impl Fn(&mut Graph, Id, &Subst) -> bool {
    let r = super::var("?r");
    move |g, _, s| {
        let ast = cond.ast.as_ref();
        !class_matches(g, ast, ast.len() - 1, s[r], s, 0)
    }
}

/// True if class `class` contains a term of pattern node `p` with variables as bound in `s`.
/// Works on a not-yet-rebuilt e-graph (conditions run during rule application).
fn class_matches(g: &Graph, ast: &[ENodeOrVar<Tfm>], p: usize, class: Id, s: &Subst, depth: usize) -> bool {
    if depth > 8 {
        return false;
    }
    match &ast[p] {
        ENodeOrVar::Var(v) => s.get(*v).is_some_and(|x| g.find(*x) == g.find(class)),
        ENodeOrVar::ENode(pn) => g[g.find(class)].nodes.iter().any(|n| {
            n.matches(pn)
                && n.children().iter().zip(pn.children()).all(|(c, pc)| class_matches(g, ast, usize::from(*pc), *c, s, depth + 1))
        }),
    }
}

fn pat(s: &str) -> Pattern<Tfm> {
    s.parse().expect("rule pattern literal")
}

/// The filter rules, for every reduction and the fused `osm`.
pub fn rules() -> Vec<Rewrite<Tfm, FreeIndices>> {
    let mut v = Vec::new();
    let shapes: Vec<(String, &str)> = REDUCTIONS
        .iter()
        .map(|op| (format!("({op} ?i LO HI F ?b)"), *op))
        .chain(std::iter::once(("(osm ?i LO HI F ?s ?v)".to_string(), "osm")))
        .collect();
    for (shape, op) in shapes {
        for (name, cond, lo, hi) in BOUNDS {
            let vars: &'static [&'static str] = if name == "lower-window" { &["?e", "?w"] } else { &["?e"] };
            // op_i[c](b) => op_i in new bounds (b)
            let lhs = shape.replace("LO", "?lo").replace("HI", "?hi").replace("F", cond);
            let rhs = shape.replace("LO", lo).replace("HI", hi).replace("F", "true");
            v.push(Rewrite::new(format!("{op}-filter-{name}"), pat(&lhs), egg::ConditionalApplier { condition: not_free("?i", vars), applier: pat(&rhs) }).expect("valid rule"));
            // op_i[c && r](b) => op_i[r] in new bounds (b)
            let lhs = shape.replace("LO", "?lo").replace("HI", "?hi").replace("F", &format!("(&& {cond} ?r)"));
            let rhs = shape.replace("LO", lo).replace("HI", hi).replace("F", "?r");
            let cond_pat = pat(cond);
            let condition = both(not_free("?i", vars), rest_differs(cond_pat.clone()));
            v.push(Rewrite::new(format!("{op}-filter-{name}-and"), pat(&lhs), egg::ConditionalApplier { condition, applier: pat(&rhs) }).expect("valid rule"));
            // op_i[r && c](b) => op_i[r] in new bounds (b)
            let lhs = shape.replace("LO", "?lo").replace("HI", "?hi").replace("F", &format!("(&& ?r {cond})"));
            let condition = both(not_free("?i", vars), rest_differs(cond_pat));
            v.push(Rewrite::new(format!("{op}-filter-{name}-and2"), pat(&lhs), egg::ConditionalApplier { condition, applier: pat(&rhs) }).expect("valid rule"));
        }
    }
    v
}
