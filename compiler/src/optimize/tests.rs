//! Optimizer tests: the rules reach the intended forms (a rule cannot silently stop firing).
//! Soundness (optimized ≡ unoptimized on random inputs) is tested in `soundness.rs`.

use super::{Options, Report, optimize};
use crate::ir::lower::lower;
use crate::ir::print::print_cascade;
use crate::ir::{Cascade, Def};
use crate::testing::lib;

fn opt(file: &str, kernel: &str) -> (Cascade, Report) {
    let p = lib(file);
    let c = lower(&p, kernel).expect("lowers");
    optimize(&c, &Options::for_program(&p)).expect("optimizes")
}

fn output_text(c: &Cascade) -> String {
    c.outputs()
        .iter()
        .map(|n| match &n.def {
            Def::Expr(e) => e.to_string(),
            _ => String::new(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn softmax_family_reaches_one_pass_online_softmax() {
    for (file, kernel) in [
        ("sdpa.tfm", "sdpa"),
        ("causal.tfm", "causal"),
        ("window.tfm", "window"),
        ("alibi.tfm", "alibi"),
        ("softcap.tfm", "softcap"),
        ("gqa.tfm", "gqa"),
        ("gqa.tfm", "mqa"),
        ("l2.tfm", "l2_attention"),
    ] {
        let (c, r) = opt(file, kernel);
        let text = output_text(&c);
        assert!(text.starts_with("(osm m "), "{kernel}: not fused to one pass:\n{}", print_cascade(&c));
        assert_eq!(r.passes_before.get("m"), Some(&3), "{kernel}: {r:?}");
        assert_eq!(r.passes_after.get("m"), Some(&1), "{kernel}: {r:?}");
        assert!(r.rules_fired.contains_key("online-softmax"), "{kernel}: {r:?}");
        assert!(r.cost_after < r.cost_before, "{kernel}: {r:?}");
    }
}

#[test]
fn causal_filter_becomes_a_bound() {
    let (c, _) = opt("causal.tfm", "causal");
    assert!(output_text(&c).starts_with("(osm m 0 (call min (dim M) (+ (idx p) 1)) true "), "{}", print_cascade(&c));
}

#[test]
fn window_filter_becomes_both_bounds() {
    let (c, _) = opt("window.tfm", "window");
    assert!(
        // W is clamped to ±2^62 so that p - W + 1 cannot overflow (W = i64::MIN selects nothing).
        output_text(&c).starts_with(
            "(osm m (call max 0 (+ (- (idx p) (call max (call min (param W) 4611686018427387904) -4611686018427387904)) 1)) \
             (call min (dim M) (+ (idx p) 1)) true "
        ),
        "{}",
        print_cascade(&c)
    );
}

#[test]
fn linear_attention_contracts_keys_and_values_first() {
    let (c, r) = opt("linear.tfm", "linear");
    let text = output_text(&c);
    // φQ (φKᵀ V): the sum over m is innermost, free of p, so it is paid once.
    assert!(text.starts_with("(/ (sum e 0 (dim E) true (* "), "{text}");
    assert!(text.contains("(sum m 0 (dim M) true (* (+ (call elu (read K"), "{text}");
    assert!(r.rules_fired.contains_key("sum-swap"), "{r:?}");
    assert!(r.cost_after * 10.0 < r.cost_before, "{r:?}");
}

#[test]
fn causal_linear_attention_becomes_a_scan() {
    let (c, r) = opt("linear.tfm", "linear_causal");
    let scans: Vec<&str> = c.graph.node_weights().filter(|n| matches!(n.def, Def::Scan { .. })).map(|n| n.name.as_str()).collect();
    // Σ_{m<=p} φK and Σ_{m<=p} φKᵀV both become running sums along p.
    assert_eq!(scans.len(), 2, "{}", print_cascade(&c));
    assert_eq!(r.passes_after.get("m").copied().unwrap_or(0), 0, "{r:?}");
    assert!(!output_text(&c).contains("(sum m"), "{}", print_cascade(&c));
}
