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
    // φQ (φKᵀ V): the sum over m, free of p, is materialized (`O.keep0[b, h, e, f]`) and
    // paid once per head, not once per query.
    assert!(text.starts_with("(/ (sum e 0 (dim E) true (* "), "{text}");
    assert!(text.contains("(read O.keep0 (idx b) (idx h) (idx e) (idx f))"), "{text}");
    let kv = c.graph.node_weights().find(|n| n.name == "O.keep0").expect("the key-value state is a tensor");
    let Def::Expr(kv) = &kv.def else { panic!("O.keep0 is an expression") };
    assert!(kv.to_string().starts_with("(sum m 0 (dim M) true (* (+ (call elu (read K"), "{kv}");
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

/// The depth of `e`'s root term (iteratively: the terms tested here are deep).
fn term_depth(e: &egg::RecExpr<crate::ir::lang::Tfm>) -> u32 {
    use egg::Language;
    let mut d: Vec<u32> = Vec::new();
    for n in e.as_ref() {
        d.push(n.children().iter().map(|c| d[usize::from(*c)]).max().map_or(1, |x| x + 1));
    }
    d.last().copied().unwrap_or(0)
}

fn chain(n: usize, step: &str) -> crate::Program {
    let mut text = String::from("kernel chain(X: f32[N]) -> (Y: f32[N]) {\n    T0[n] = X[n] + 1.0\n");
    for i in 1..n {
        text.push_str(&format!("    T{i}[n] = {}\n", step.replace("PREV", &format!("T{}[n]", i - 1))));
    }
    text.push_str(&format!("    Y[n] = T{}[n] + 1.0\n}}\n", n - 1));
    crate::load_str("chain.tfm", &text).unwrap_or_else(|d| panic!("{d}"))
}

/// Fusion's memory is linear in the program (issue 16): every local used to hold its own fully
/// inlined copy (a chain of N statements took N² nodes: 723 MB for 3000), and a statement
/// reading its predecessor twice doubled the term at every step (2^N). Terms are bounded in
/// depth, so this runs on a test thread's 2 MiB stack.
#[test]
fn fusion_is_linear_in_the_program() {
    let doubling = chain(60, "PREV + PREV");
    let c = lower(&doubling, "chain").expect("lowers");
    let fused = super::inline::inline_locals(&c);
    let size: usize = fused.outputs().iter().map(|n| if let Def::Expr(e) = &n.def { e.as_ref().len() } else { 0 }).sum();
    assert!(size < 1000, "a doubling chain of 60 fuses into {size} nodes");
    let long = chain(1500, "PREV * 0.5 + 1.0");
    let c = lower(&long, "chain").expect("lowers");
    let fused = super::inline::inline_locals(&c);
    let mut total = 0;
    for &ix in &fused.order {
        if let Def::Expr(e) = &fused.graph[ix].def {
            assert!(term_depth(e) <= super::inline::MAX_FUSED_DEPTH + 8, "{}: depth {}", fused.graph[ix].name, term_depth(e));
            total += e.as_ref().len();
        }
    }
    assert!(total < 20 * 1500, "1500 statements fuse into {total} nodes");
    let (o, _) = optimize(&c, &Options::default()).expect("optimizes");
    assert!(o.outputs().len() == 1);
}

/// The work model at the default sizes: (as written, optimized).
fn work_of(program: &crate::Program, kernel: &str) -> (f64, f64) {
    let c = lower(program, kernel).unwrap();
    let opts = Options::for_program(program);
    let (o, _) = optimize(&c, &opts).unwrap();
    let sizes = super::sizes_for(&c, &opts);
    (super::work::estimate(&c, &sizes).cost(), super::work::estimate(&o, &sizes).cost())
}

/// The optimizer never raises the order of work (as scheduled): over every lib kernel and
/// variants written the way users write them (a normaliser with an extra term, two
/// softmaxes, a transformer block with projections fused into attention).
#[test]
fn optimized_work_never_exceeds_the_written_work() {
    let mut bad = Vec::new();
    for (file, program) in crate::testing::lib_programs() {
        for k in &program.kernels {
            let (before, after) = work_of(&program, &k.name);
            if after > before * 1.01 {
                bad.push(format!("{file}/{}: {before:.3e} -> {after:.3e}", k.name));
            }
        }
    }
    let variants = [
        "kernel quiet(Q: f32[B, H, P, E], K: f32[B, H, M, E], V: f32[B, H, M, F]) -> (O: f32[B, H, P, F]) {
            S[b, h, p, m] = sum[e](Q[b, h, p, e] * K[b, h, m, e])
            G[b, h, p] = max[m](S[b, h, p, m])
            N[b, h, p, m] = exp(S[b, h, p, m] - G[b, h, p])
            D[b, h, p] = exp(-G[b, h, p]) + sum[m](N[b, h, p, m])
            O[b, h, p, f] = sum[m](N[b, h, p, m] * V[b, h, m, f]) / D[b, h, p]
        }",
        "kernel sig(Q: f32[B, H, P, E], K: f32[B, H, M, E], V: f32[B, H, M, F]) -> (O: f32[B, H, P, F]) {
            S[b, h, p, m] = sum[e](Q[b, h, p, e] * K[b, h, m, e]) * rsqrt(E)
            O[b, h, p, f] = sum[m](sigmoid(S[b, h, p, m] - log(M)) * V[b, h, m, f])
        }",
        "kernel proj(X: f32[B, T, D], Wq: f32[D, E], Wk: f32[D, E], Wv: f32[D, E]) -> (O: f32[B, T, E]) {
            Qh[b, t, e] = sum[d](X[b, t, d] * Wq[d, e])
            Kh[b, t, e] = sum[d](X[b, t, d] * Wk[d, e])
            Vh[b, t, e] = sum[d](X[b, t, d] * Wv[d, e])
            S[b, p, m] = sum[e](Qh[b, p, e] * Kh[b, m, e])
            G[b, p] = max[m](S[b, p, m])
            N[b, p, m] = exp(S[b, p, m] - G[b, p])
            O[b, p, f] = sum[m](N[b, p, m] * Vh[b, m, f]) / sum[m](N[b, p, m])
        }",
    ];
    for src in variants {
        let program = crate::testing::load(src);
        let name = program.kernels[0].name.clone();
        let (before, after) = work_of(&program, &name);
        if after > before * 1.01 {
            bad.push(format!("{name}: {before:.3e} -> {after:.3e}"));
        }
    }
    assert!(bad.is_empty(), "optimized cascades doing more work than written:\n{}", bad.join("\n"));
}

/// True if a reduction's `lo` or `hi` in `e` (below `id`) reads an index bound by an enclosing
/// reduction: O(range) work per point of the outer one.
fn moving_bound(e: &egg::RecExpr<crate::ir::lang::Tfm>, id: egg::Id, bound: &mut Vec<String>) -> bool {
    use crate::ir::lang::Tfm;
    use egg::Language;
    let node = &e[id];
    let Some([i, lo, hi, _]) = node.reduction_head() else {
        return node.children().iter().any(|&c| moving_bound(e, c, bound));
    };
    for b in [lo, hi] {
        let mut free = std::collections::BTreeSet::new();
        super::inline::free_names(e, b, &mut free);
        if bound.iter().any(|x| free.contains(x)) {
            return true;
        }
    }
    let Tfm::Symbol(name) = &e[i] else { return false };
    bound.push(name.as_str().to_string());
    let inner = node.children().iter().filter(|&&c| c != i && c != lo && c != hi).any(|&c| moving_bound(e, c, bound));
    bound.pop();
    inner
}

/// Sums and products over the keys between a key and its query (stick-breaking in log and
/// product form, contextual positions, a prefix from the row's start, a gap of two keys) become
/// scans along the key axis: no reduction is left whose range moves with an enclosing one,
/// and the work estimate drops from O(M) per logit to O(1).
#[test]
fn sums_between_key_and_query_become_key_scans() {
    let mut programs = vec![("lib/stick.tfm".to_string(), lib("stick.tfm"))];
    programs.push(("tests/ok/key_scans.tfm".to_string(), crate::testing::load(include_str!("../../../tests/ok/key_scans.tfm"))));
    // The lib kernel with the mask's comparison written the other way round.
    programs.push((
        "mirrored".to_string(),
        crate::testing::load(&include_str!("../../../lib/stick.tfm").replace("m < k && k < p", "k > m && p > k")),
    ));
    let mut count = 0;
    for (file, program) in &programs {
        for k in &program.kernels {
            let c = lower(program, &k.name).expect("lowers");
            let (o, _) = optimize(&c, &Options::for_program(program)).expect("optimizes");
            let text = print_cascade(&o);
            assert!(text.contains(".keyscan"), "{file}/{}: no key scan:\n{text}", k.name);
            for n in o.graph.node_weights() {
                let Def::Expr(e) = &n.def else { continue };
                let root = egg::Id::from(e.as_ref().len() - 1);
                assert!(!moving_bound(e, root, &mut Vec::new()), "{file}/{}: {} keeps a nested moving range:\n{text}", k.name, n.name);
            }
            let (before, after) = work_of(program, &k.name);
            assert!(after < before / 10.0, "{file}/{}: work {before:.3e} -> {after:.3e}", k.name);
            count += 1;
        }
    }
    assert_eq!(count, 6);
    // The logit reads the softplus outlined for the keys between (`softplus(S[p, k])`, with the
    // product's operands in another order) at its own key instead of computing it again.
    let (o, _) = opt("stick.tfm", "stick_breaking");
    assert!(!output_text(&o).contains("softplus"), "{}", print_cascade(&o));
}

/// Linear attention's key-value state is materialized once per head (not once per query),
/// and a transformer block's projections are computed once per token.
#[test]
fn repeated_reductions_are_materialized() {
    let (c, _) = opt("linear.tfm", "linear");
    let keep: Vec<&str> = c.graph.node_weights().filter(|n| n.name.contains(".keep")).map(|n| n.name.as_str()).collect();
    assert_eq!(keep.len(), 2, "{}", print_cascade(&c));
    let kv = c.graph.node_weights().find(|n| n.name == "O.keep0").unwrap();
    assert!(!kv.indices.iter().any(|i| i == "p"), "the state must not depend on the query: {}", print_cascade(&c));
    let program = lib("model.tfm");
    let (before, after) = work_of(&program, "block");
    assert!(after < before, "block: {before:.3e} -> {after:.3e}");
}

/// An outlined subterm is computed once: Flowformer's normaliser `Zc = Σ_m exp(Oc − max Oc)`
/// reads the `exp(…)` tensor outlined for the key-value product, and its output's `Σ_e φ(Q)·Ks`
/// the one outlined for `Qc`: no transcendental or reduction of the optimized cascade is
/// evaluated, as written, by two nodes.
#[test]
fn outlined_subterms_are_read_not_recomputed() {
    use crate::ir::Def;
    use crate::ir::lang::Tfm;
    let (c, _) = opt("flow.tfm", "flow_attention");
    let mut seen: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for n in c.graph.node_weights() {
        let Def::Expr(e) = &n.def else { continue };
        let mut here = std::collections::BTreeSet::new();
        for (k, node) in e.as_ref().iter().enumerate() {
            if matches!(node, Tfm::Call(_) | Tfm::Sum(_) | Tfm::Max(_)) {
                let t = super::outline::subterm_text(e, egg::Id::from(k));
                // Constants and reads of one index are not worth sharing.
                if t.contains("(sum") || t.contains("(call") {
                    here.insert(t);
                }
            }
        }
        for t in here {
            if let Some(other) = seen.insert(t.clone(), n.name.clone()) {
                panic!("{t}\nevaluated by {other} and {}:\n{}", n.name, print_cascade(&c));
            }
        }
    }
}

/// Attention sinks and softmax₁ (a constant or per-head term in the denominator), in the
/// spellings users write, fuse to one pass (`osmz`) and get the tiled attention plan; a sink
/// that reads the key cannot be one and stays unfused.
#[test]
fn sink_normalisers_reach_one_pass() {
    let head = "(Q: f32[B, H, P, E], K: f32[B, H, M, E], V: f32[B, H, M, F], Sink: f32[B, H], Bias: f32[M]) -> (O: f32[B, H, P, F])";
    let body = |d: &str| {
        format!(
            "kernel k{head} {{
            S[b, h, p, m] = sum[e](Q[b, h, p, e] * K[b, h, m, e]) * rsqrt(E)
            G[b, h, p] = max[m](S[b, h, p, m])
            N[b, h, p, m] = exp(S[b, h, p, m] - G[b, h, p])
            D[b, h, p] = {d}
            O[b, h, p, f] = sum[m](N[b, h, p, m] * V[b, h, m, f]) / D[b, h, p]
        }}"
        )
    };
    let fused = [
        "exp(Sink[b, h] - G[b, h, p]) + sum[m](N[b, h, p, m])",
        "sum[m](N[b, h, p, m]) + exp(Sink[b, h] - G[b, h, p])",
        "exp(-G[b, h, p]) + sum[m](N[b, h, p, m])",
        "sum[m](N[b, h, p, m]) + exp(-G[b, h, p])",
        "exp(0.5 * Sink[b, h] - G[b, h, p]) + sum[m](N[b, h, p, m])",
    ];
    for d in fused {
        let program = crate::testing::load(&body(d));
        let c = lower(&program, "k").expect("lowers");
        let (o, r) = optimize(&c, &Options::for_program(&program)).expect("optimizes");
        assert!(output_text(&o).starts_with("(osmz m "), "{d}: not fused:\n{}", print_cascade(&o));
        assert_eq!(r.passes_after.get("m"), Some(&1), "{d}: {r:?}");
        let s = crate::schedule::schedule(&program, &o, &crate::schedule::ScheduleOptions::default()).expect("schedules");
        assert!(s.plan.iter().any(|p| p.starts_with("O: tiled attention")), "{d}: {:?}", s.plan);
    }
    // A denominator that is not the weights' sum (`Σ N · Bias`) is no sink form: kept as written.
    let program = crate::testing::load(&body("exp(Bias[0] - G[b, h, p]) + sum[m](N[b, h, p, m] * Bias[m])"));
    let c = lower(&program, "k").expect("lowers");
    let (o, _) = optimize(&c, &Options::for_program(&program)).expect("optimizes");
    assert!(!output_text(&o).contains("osmz"), "{}", print_cascade(&o));
}

/// A feature map of an input that several statements read (Flowformer's `φ(Q)`, read by five)
/// stays a tensor, computed once, instead of being inlined into every reader; one read once
/// is inlined, and a term of locals (a softmax's weights) is fused as before.
#[test]
fn shared_feature_maps_stay_tensors() {
    let program = crate::testing::load(
        "kernel k(Q: f32[B, P, E], K: f32[B, M, E], V: f32[B, M, F]) -> (O: f32[B, P, F]) {
            Qf[b, p, e] = sigmoid(Q[b, p, e])
            Kf[b, m, e] = elu(K[b, m, e]) + 1.0
            Ks[b, e] = sum[m](Kf[b, m, e])
            Nq[b, p] = sum[e](Qf[b, p, e] * Ks[b, e])
            KV[b, e, f] = sum[m](Kf[b, m, e] * V[b, m, f])
            O[b, p, f] = sum[e](Qf[b, p, e] * KV[b, e, f]) / Nq[b, p]
        }",
    );
    let c = lower(&program, "k").expect("lowers");
    let (o, _) = optimize(&c, &Options::for_program(&program)).expect("optimizes");
    let names: Vec<&str> = o.graph.node_weights().map(|n| n.name.as_str()).collect();
    assert!(names.contains(&"Qf") && names.contains(&"Kf"), "{}", print_cascade(&o));
    let calls = |name: &str| print_cascade(&o).matches(name).count();
    assert_eq!(calls("sigmoid"), 1, "{}", print_cascade(&o));
    assert_eq!(calls("elu"), 1, "{}", print_cascade(&o));
    // Read once: inlined.
    let once = crate::testing::load(
        "kernel k(Q: f32[B, P, E], V: f32[B, P, F]) -> (O: f32[B, P, F]) {
            Qf[b, p, e] = sigmoid(Q[b, p, e])
            O[b, p, f] = sum[e](Qf[b, p, e]) * V[b, p, f]
        }",
    );
    let c = lower(&once, "k").expect("lowers");
    let (o, _) = optimize(&c, &Options::for_program(&once)).expect("optimizes");
    assert!(o.graph.node_weights().all(|n| n.name != "Qf"), "{}", print_cascade(&o));
}

/// Decode written without a query axis — the value reads every output index but the column —
/// in the spellings users write (MHA with `[B, M, H, E]` caches, GQA through `h / (H / G)`, a
/// length mask, a paged cache through a block table with a product dim) fuses to one online
/// softmax and gets the tiled attention plan with single-row tiles (before, no plan took it
/// and the three passes stayed).
#[test]
fn decode_without_a_query_axis_reaches_one_pass() {
    let kernels = [
        "kernel k(Q: f32[B, H, E], K: f32[B, M, H, E], V: f32[B, M, H, F]) -> (O: f32[B, H, F]) {
            S[b, h, m] = sum[e](Q[b, h, e] * K[b, m, h, e]) / sqrt(f32(E))
            Mx[b, h] = max[m](S[b, h, m])
            W[b, h, m] = exp(S[b, h, m] - Mx[b, h])
            O[b, h, f] = sum[m](W[b, h, m] * V[b, m, h, f]) / sum[m](W[b, h, m])
        }",
        "kernel k(Q: f32[B, H, E], K: f32[B, G, M, E], V: f32[B, G, M, F], Len: i32[B]) -> (O: f32[B, H, F]) where m < Len[b] {
            S[b, h, m] = sum[e](Q[b, h, e] * K[b, h / (H / G), m, e]) * rsqrt(E)
            Mx[b, h] = max[m](S[b, h, m])
            N[b, h, m] = exp(S[b, h, m] - Mx[b, h])
            O[b, h, f] = sum[m](N[b, h, m] * V[b, h / (H / G), m, f]) / sum[m](N[b, h, m])
        }",
        "kernel k(Q: f32[B, H, E], Kp: f32[NB, PS, H, E], Vp: f32[NB, PS, H, F], Tbl: i32[B, MP]) -> (O: f32[B, H, F]) {
            index m: PS * MP
            S[b, h, m] = sum[e](Q[b, h, e] * Kp[Tbl[b, m / PS], m % PS, h, e]) * rsqrt(E)
            Mx[b, h] = max[m](S[b, h, m])
            N[b, h, m] = exp(S[b, h, m] - Mx[b, h])
            O[b, h, f] = sum[m](N[b, h, m] * Vp[Tbl[b, m / PS], m % PS, h, f]) / sum[m](N[b, h, m])
        }",
    ];
    for text in kernels {
        let program = crate::testing::load(text);
        let c = lower(&program, "k").expect("lowers");
        let (o, r) = optimize(&c, &Options::for_program(&program)).expect("optimizes");
        assert_eq!(r.passes_after.get("m"), Some(&1), "{text}:\n{}", print_cascade(&o));
        assert!(output_text(&o).contains("(osm m "), "{text}:\n{}", print_cascade(&o));
        let s = crate::schedule::schedule(&program, &o, &crate::schedule::ScheduleOptions::default()).expect("schedules");
        assert!(s.plan.iter().any(|p| p.starts_with("O: tiled attention") && p.contains("keys outer")), "{text}: {:?}", s.plan);
    }
}

/// Differential attention (two softmaxes over the same keys, their difference applied to V),
/// as lib/ writes it and as a user might (the difference outside the sums), reaches two
/// one-pass online softmaxes: the P × M score tensors are not materialized.
#[test]
fn differential_attention_reaches_two_online_softmaxes() {
    let (c, r) = opt("diff.tfm", "diff_attention");
    let text = output_text(&c);
    assert_eq!(text.matches("(osm m ").count(), 2, "{}", print_cascade(&c));
    assert_eq!(r.passes_after.get("m"), Some(&1), "{r:?}");
    assert!(c.graph.node_weights().all(|n| n.indices.len() < 4 || n.name == "O"), "{}", print_cascade(&c));
    let user = crate::testing::load(
        "kernel d(Q1: f32[B, H, P, E], Q2: f32[B, H, P, E], K1: f32[B, H, M, E], K2: f32[B, H, M, E], V: f32[B, H, M, F], L: f32[H])
            -> (O: f32[B, H, P, F]) {
            S1[b, h, p, m] = sum[e](Q1[b, h, p, e] * K1[b, h, m, e])
            S2[b, h, p, m] = sum[e](Q2[b, h, p, e] * K2[b, h, m, e])
            G1[b, h, p] = max[m](S1[b, h, p, m])
            G2[b, h, p] = max[m](S2[b, h, p, m])
            A1[b, h, p, m] = exp(S1[b, h, p, m] - G1[b, h, p])
            A2[b, h, p, m] = exp(S2[b, h, p, m] - G2[b, h, p])
            O[b, h, p, f] = sum[m](A1[b, h, p, m] * V[b, h, m, f]) / sum[m](A1[b, h, p, m])
                - L[h] * (sum[m](A2[b, h, p, m] * V[b, h, m, f]) / sum[m](A2[b, h, p, m]))
        }",
    );
    let c = lower(&user, "d").expect("lowers");
    let (o, _) = optimize(&c, &Options::for_program(&user)).expect("optimizes");
    assert_eq!(output_text(&o).matches("(osm m ").count(), 2, "{}", print_cascade(&o));
}

/// A transcendental feature map that fusion leaves inside a loop it does not read (causal
/// linear attention's `elu(K) + 1` inside the prefix scan over the output column) is
/// materialized: no scan body evaluates `elu`.
#[test]
fn repeated_feature_maps_are_materialized() {
    let (c, _) = opt("linear.tfm", "linear_causal");
    for n in c.graph.node_weights() {
        if let Def::Scan { body, .. } = &n.def {
            assert!(!body.to_string().contains("(call elu"), "{}: {}", n.name, print_cascade(&c));
        }
    }
    assert!(
        c.graph.node_weights().any(|n| matches!(&n.def, Def::Expr(e) if e.to_string().starts_with("(call elu"))),
        "{}",
        print_cascade(&c)
    );
}
