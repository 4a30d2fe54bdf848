//! Schedule tests that need no backend: every lib kernel schedules, plans are as expected.

use super::{ScheduleOptions, schedule};
use crate::ir::lower::lower;
use crate::optimize::{Options, optimize};

#[test]
fn every_lib_kernel_schedules() {
    for (file, program) in crate::testing::lib_programs() {
        for k in &program.kernels {
            let c = lower(&program, &k.name).unwrap();
            let (opt, _) = optimize(&c, &Options::default()).unwrap();
            for cas in [&c, &opt] {
                let s = schedule(&program, cas, &ScheduleOptions::default()).unwrap_or_else(|e| panic!("{file}/{}: {e}", k.name));
                if std::env::var("TFMC_PRINT_KIR").is_ok() && k.name == "sdpa" {
                    println!("{}", s.func);
                }
            }
        }
    }
}

/// Every `Set` in `b` (at any depth): target and value; and every loop: its variable and its
/// bounds (a loop's variable depends on what its bounds read).
fn sets<'b>(b: &'b super::kir::Block, out: &mut Vec<(super::kir::Var, &'b super::kir::Expr)>) {
    use super::kir::Stmt;
    for s in b {
        match s {
            Stmt::Set { var, value } => out.push((*var, value)),
            Stmt::For { var, lo, hi, body } => {
                out.push((*var, lo));
                out.push((*var, hi));
                sets(body, out);
            }
            Stmt::Parallel { body, .. } | Stmt::BlockParallel { body, .. } => sets(body, out),
            Stmt::If { then, els, .. } => {
                sets(then, out);
                sets(els, out);
            }
            _ => {}
        }
    }
}

/// Every `Store` in `b` (at any depth): buffer, index and value.
fn stores<'b>(b: &'b super::kir::Block, out: &mut Vec<(super::kir::Buf, &'b super::kir::Expr, &'b super::kir::Expr)>) {
    use super::kir::Stmt;
    for s in b {
        match s {
            Stmt::Store { buf, index, value } => out.push((*buf, index, value)),
            Stmt::For { body, .. } | Stmt::Parallel { body, .. } | Stmt::BlockParallel { body, .. } => stores(body, out),
            Stmt::If { then, els, .. } => {
                stores(then, out);
                stores(els, out);
            }
            _ => {}
        }
    }
}

/// The loops of `b` nested (at any depth) inside a sequential loop whose iterations they do
/// not depend on and that read memory: work repeated once per iteration of the outer loop (a
/// contraction recomputed per output column). Returns `outer var / inner var` names.
fn invariant_loops(f: &super::kir::Func, b: &super::kir::Block, out: &mut Vec<String>) {
    use super::kir::Stmt;
    use super::uses::Uses;
    for s in b {
        match s {
            Stmt::For { var, body, .. } => {
                // Variables whose value depends on `var` (through sets and loop bounds), and
                // buffers stored with such values (a per-iteration array: its loads depend too).
                let mut dep = std::collections::BTreeSet::from([*var]);
                let mut dep_bufs = std::collections::BTreeSet::new();
                let mut all = Vec::new();
                sets(body, &mut all);
                let mut st = Vec::new();
                stores(body, &mut st);
                loop {
                    let n = (dep.len(), dep_bufs.len());
                    let depends = |x: &super::kir::Expr,
                                   dep: &std::collections::BTreeSet<super::kir::Var>,
                                   bufs: &std::collections::BTreeSet<super::kir::Buf>| {
                        let mut u = Uses::default();
                        u.expr(x);
                        u.vars.iter().any(|w| dep.contains(w)) || u.bufs.iter().any(|b| bufs.contains(b))
                    };
                    for (v, x) in &all {
                        if depends(x, &dep, &dep_bufs) {
                            dep.insert(*v);
                        }
                    }
                    for (b, index, value) in &st {
                        if depends(index, &dep, &dep_bufs) || depends(value, &dep, &dep_bufs) {
                            dep_bufs.insert(*b);
                        }
                    }
                    if (dep.len(), dep_bufs.len()) == n {
                        break;
                    }
                }
                nested_independent(f, *var, &dep, &dep_bufs, body, out);
                invariant_loops(f, body, out);
            }
            Stmt::Parallel { body, .. } | Stmt::BlockParallel { body, .. } => invariant_loops(f, body, out),
            Stmt::If { then, els, .. } => {
                invariant_loops(f, then, out);
                invariant_loops(f, els, out);
            }
            _ => {}
        }
    }
}

/// The loops in `b` (any depth) that mention no variable of `dep` and load from memory.
#[allow(clippy::too_many_arguments)]
fn nested_independent(
    f: &super::kir::Func,
    outer: super::kir::Var,
    dep: &std::collections::BTreeSet<super::kir::Var>,
    dep_bufs: &std::collections::BTreeSet<super::kir::Buf>,
    b: &super::kir::Block,
    out: &mut Vec<String>,
) {
    use super::kir::Stmt;
    use super::uses::Uses;
    for s in b {
        match s {
            Stmt::For { var, lo, hi, body } => {
                let mut u = Uses::default();
                u.expr(lo);
                u.expr(hi);
                u.block(body);
                // A pass over 256 output columns recomputes the logits by design (once for
                // any head size up to 256; see `attention::cpu`).
                let per_pass = f.vars[outer.0 as usize].name == "f.pass";
                let reads_dep = u.vars.iter().any(|w| dep.contains(w)) || u.bufs.iter().any(|b| dep_bufs.contains(b));
                if !per_pass && !reads_dep && !u.bufs.is_empty() && loads(body) {
                    out.push(format!("{} / {}", f.vars[outer.0 as usize].name, f.vars[var.0 as usize].name));
                } else {
                    nested_independent(f, outer, dep, dep_bufs, body, out);
                }
            }
            Stmt::Parallel { body, .. } | Stmt::BlockParallel { body, .. } => nested_independent(f, outer, dep, dep_bufs, body, out),
            Stmt::If { then, els, .. } => {
                nested_independent(f, outer, dep, dep_bufs, then, out);
                nested_independent(f, outer, dep, dep_bufs, els, out);
            }
            _ => {}
        }
    }
}

/// True if `b` loads from a buffer anywhere.
fn loads(b: &super::kir::Block) -> bool {
    fn expr(x: &super::kir::Expr) -> bool {
        use super::kir::Expr;
        match x {
            Expr::Load { .. } => true,
            Expr::Const(_) | Expr::Var(_) => false,
            Expr::Unary { x, .. } | Expr::Cast { x, .. } | Expr::Bitcast { x, .. } => expr(x),
            Expr::Binary { a, b, .. } => expr(a) || expr(b),
            Expr::Select { c, a, b } => expr(c) || expr(a) || expr(b),
        }
    }
    use super::kir::Stmt;
    b.iter().any(|s| match s {
        Stmt::Set { value, .. } => expr(value),
        Stmt::Store { value, index, .. } => expr(value) || expr(index),
        Stmt::For { body, .. } | Stmt::Parallel { body, .. } | Stmt::BlockParallel { body, .. } => loads(body),
        Stmt::If { then, els, cond } => expr(cond) || loads(then) || loads(els),
        Stmt::TileProduct(_) | Stmt::Mma(_) => true,
        _ => false,
    })
}

/// No lib kernel (optimized, on the CPU schedule) evaluates a loop over memory inside a loop
/// it does not depend on: a contraction recomputed per output column, a row's normaliser per
/// column, a nested `max` per key, a projection per query. (The GPU schedules still have two:
/// the generic fallback for more than 256 output columns, and the tensor-core plan's per-block
/// fragment loop; see the issue notes.)
#[test]
fn no_lib_kernel_recomputes_a_loop_per_iteration_of_a_loop_it_does_not_read() {
    let mut bad = Vec::new();
    let targets = [ScheduleOptions::default()];
    for (file, program) in crate::testing::lib_programs() {
        for k in &program.kernels {
            let c = lower(&program, &k.name).unwrap();
            let (opt, _) = optimize(&c, &Options::for_program(&program)).unwrap();
            for opts in &targets {
                let s = schedule(&program, &opt, opts).unwrap_or_else(|e| panic!("{file}/{}: {e}", k.name));
                let mut found = Vec::new();
                invariant_loops(&s.func, &s.func.body, &mut found);
                bad.extend(found.into_iter().map(|l| format!("{file}/{} ({:?}): {l}", k.name, opts.target)));
            }
        }
    }
    assert!(bad.is_empty(), "loops recomputed per iteration of an outer loop they do not read:\n{}", bad.join("\n"));
}

/// The CPU plan lines and KIR text of kernel `k` of `text`, optimized.
fn plan_of(text: &str, k: &str) -> (Vec<String>, String) {
    let program = crate::testing::load(text);
    let c = lower(&program, k).unwrap();
    let (opt, _) = optimize(&c, &Options::for_program(&program)).unwrap();
    let s = schedule(&program, &opt, &ScheduleOptions::default()).unwrap();
    (s.plan, s.func.to_string())
}

/// A weighted sum whose value the tile products cannot read in place — its column runs along
/// the reduced index (`X · Kpᵀ` as Pattention writes it), or it is a map of reads — packs the
/// values once per call (`.vt`), not once per row tile and key block (`.vp`).
#[test]
fn values_off_the_row_layout_are_packed_once_per_call() {
    let kernels = [
        "kernel k(X: f32[B, T, D], Kp: f32[N, D]) -> (A: f32[B, T, N]) { A[b, t, n] = sum[d](X[b, t, d] * Kp[n, d]) }",
        "kernel k(X: f32[T, D], W: f32[D, N]) -> (A: f32[T, N]) { A[t, n] = sum[d](X[t, d] * W[d, n] * 0.5) }",
        "kernel k(Q: f32[H, P, E], K: f32[H, M, E], V: f32[H, M, F], G: f32[H, M]) -> (O: f32[H, P, F]) {
            O[h, p, f] = sum[m](sigmoid(sum[e](Q[h, p, e] * K[h, m, e])) * V[h, m, f] * G[h, m])
        }",
    ];
    for text in kernels {
        let (plan, kir) = plan_of(text, "k");
        assert!(plan.iter().any(|p| p.contains("tiled weighted sum")), "{text}: {plan:?}");
        assert!(kir.contains(".vt: f32 (heap)"), "{text}:\n{kir}");
        assert!(!kir.contains(".vp: f32"), "{text}:\n{kir}");
    }
    // V read in place: nothing packed.
    let (_, kir) = plan_of("kernel k(W: f32[P, M], V: f32[M, F]) -> (O: f32[P, F]) { O[p, f] = sum[m](W[p, m] * V[m, f]) }", "k");
    assert!(!kir.contains(".vt") && !kir.contains(".vp"), "{kir}");
}

/// Squared distances in the logit or weight, however the user spells them (the query minus the
/// key or the key minus the query, `d * d` or `pow(d, 2)`, a scale outside or inside the sum, a
/// mask, no normaliser), take the packed squared-difference tile; a product of two different
/// differences does not.
#[test]
fn squared_distances_take_the_packed_tile() {
    let sig = "(Q: f32[H, P, E], K: f32[H, M, E], V: f32[H, M, F]) -> (O: f32[H, P, F])";
    let softmax = |s: &str| {
        format!(
            "kernel k{sig} {{
                S[h, p, m] = {s}
                G[h, p] = max[m](S[h, p, m])
                W[h, p, m] = exp(S[h, p, m] - G[h, p])
                O[h, p, f] = sum[m](W[h, p, m] * V[h, m, f]) / sum[m](W[h, p, m])
            }}"
        )
    };
    let kernels = [
        softmax("-sum[e]((Q[h, p, e] - K[h, m, e]) * (Q[h, p, e] - K[h, m, e])) * rsqrt(E)"),
        softmax("-0.5 * sum[e]((K[h, m, e] - Q[h, p, e]) * (K[h, m, e] - Q[h, p, e]))"),
        softmax("-sum[e](pow(Q[h, p, e] - K[h, m, e], 2.0)) / 8.0"),
        format!("kernel k{sig} {{ O[h, p, f] = sum[m](exp(-sum[e](pow(0.5 * Q[h, p, e] - K[h, m, e], 2.0))) * V[h, m, f]) }}"),
        format!(
            "kernel k{sig} where m <= p {{
                D[h, p, m, e] = Q[h, p, e] - K[h, m, e]
                O[h, p, f] = sum[m](sigmoid(-sum[e](D[h, p, m, e] * D[h, p, m, e])) * V[h, m, f])
            }}"
        ),
    ];
    for text in &kernels {
        let (plan, kir) = plan_of(text, "k");
        assert!(plan.iter().any(|p| p.contains("packed (Q - K)² tile")), "{text}: {plan:?}");
        assert!(kir.contains("sqdiff("), "{text}:\n{kir}");
    }
    let (plan, _) = plan_of(&softmax("-sum[e]((Q[h, p, e] - K[h, m, e]) * (Q[h, p, e] + K[h, m, e]))"), "k");
    assert!(!plan.iter().any(|p| p.contains("(Q - K)²")), "{plan:?}");
}

/// A node whose every point is a reduction of its own (row norms `[b, t]`, a max over keys)
/// runs all its indices in parallel — `parallel (b)` with an inner loop over `t` was one
/// thread per batch item; a column reduction keeps its rows-outer plan, and a map with a
/// subterm hoisted out of the loop over its last index keeps that loop.
#[test]
fn reductions_per_point_run_every_index_in_parallel() {
    let flat = [
        ("kernel k(A: f32[B, T, N]) -> (S: f32[B, T]) { S[b, t] = sqrt(sum[n](A[b, t, n] * A[b, t, n])) }", "S: parallel (b, t)"),
        ("kernel k(X: f32[P, E], V: f32[M, F]) -> (O: f32[P, F]) { O[p, f] = max[m](V[m, f] * X[p, m % E]) }", "O: parallel (p, f)"),
    ];
    for (text, want) in flat {
        let (plan, _) = plan_of(text, "k");
        assert!(plan.iter().any(|p| p == want), "{text}: {plan:?}");
    }
    let (plan, _) = plan_of("kernel k(X: f32[B, T, D]) -> (S: f32[B, D]) { S[b, d] = sum[t](X[b, t, d]) }", "k");
    assert!(plan.iter().any(|p| p.contains("t outer, inner loop d")), "{plan:?}");
    // Not a reduction per point: a map whose row factor `exp(Σ_e X[p, e])` is computed once
    // per row, outside the loop over `f`.
    let (plan, _) = plan_of("kernel k(X: f32[P, E], Y: f32[P, F]) -> (O: f32[P, F]) { O[p, f] = Y[p, f] * exp(sum[e](X[p, e])) }", "k");
    assert!(plan.iter().any(|p| p == "O: parallel (p), inner loop f"), "{plan:?}");
}

/// Sums, maxima and minima down the rows (the reduced index outer in every read, the output's
/// last index inner) run rows outer, columns inner; a row reduction, one whose body reads
/// along the reduced index or may fail, or a half-precision one keeps the generic order.
#[test]
fn column_reductions_run_rows_outer() {
    let cols = [
        "kernel k(X: f32[B, T, D]) -> (S: f32[B, D]) { S[b, d] = sum[t](X[b, t, d]) }",
        "kernel k(X: f32[T, D], R: f32[T]) -> (S: f32[D]) { S[d] = max[t](X[t, d] / (1.0 + abs(R[t]))) }",
        "kernel k(X: f32[H, T, D]) -> (S: f32[H, D]) { S[h, d] = min[t where t % 2 == 0](X[h, t, d] * 2.0) }",
    ];
    for text in cols {
        let (plan, _) = plan_of(text, "k");
        assert!(plan.iter().any(|p| p.starts_with("S: ") && p.contains("t outer, inner loop d")), "{text}: {plan:?}");
    }
    let rows = [
        "kernel k(X: f32[B, D, T]) -> (S: f32[B, D]) { S[b, d] = sum[t](X[b, d, t]) }",
        "kernel k(X: f32[T, D], Y: f32[D, T]) -> (S: f32[D]) { S[d] = sum[t](X[t, d] * Y[d, t]) }",
        "kernel k(X: f32[T, D], I: i32[T]) -> (S: f32[D]) { S[d] = sum[t](X[t, d] * f32(I[t] / 2)) }",
        // A half output would round the running sum at every row.
        "kernel k(X: bf16[T, D]) -> (S: bf16[D]) { S[d] = sum[t](X[t, d]) }",
    ];
    for text in rows {
        let (plan, _) = plan_of(text, "k");
        assert!(plan.iter().all(|p| !p.contains(" outer")), "{text}: {plan:?}");
    }
}

/// Scans read only by the next node, at its own step, are fused with it: causal linear
/// attention's prefix sums (the optimizer's form of lib's quadratic kernel and the recurrent
/// form as written), retention, a Mamba-like scan (its channel index parallel too). A scan
/// read at another step, or by two nodes, is not.
#[test]
fn scans_fuse_with_their_reader() {
    for (file, k, par) in [
        ("linear.tfm", "linear_causal", "(b, h)"),
        ("linear.tfm", "linear_causal_scan", "(b, h)"),
        ("retnet.tfm", "retention_recurrent", "(b, h)"),
        ("mamba.tfm", "selective_scan", "(b, d)"),
    ] {
        let program = crate::testing::lib(file);
        let c = lower(&program, k).unwrap();
        let (opt, _) = optimize(&c, &Options::for_program(&program)).unwrap();
        let s = schedule(&program, &opt, &ScheduleOptions::default()).unwrap();
        assert!(s.plan.iter().any(|p| p.contains(&format!("fused: parallel {par}, sequential"))), "{file}/{k}: {:?}", s.plan);
    }
    let not = [
        // Read one step back by its reader.
        "kernel k(X: f32[T, D]) -> (Y: f32[T, D]) {
            S[t, d] = scan[t, init = 0.0](S[t - 1, d] + X[t, d])
            Y[t, d] = S[t, d] - X[t, d] * S[max(t - 1, 0), d]
        }",
        // Read by two nodes.
        "kernel k(X: f32[T, D]) -> (Y: f32[T, D], Z: f32[T, D]) {
            S[t, d] = scan[t, init = 0.0](S[t - 1, d] + X[t, d])
            Y[t, d] = S[t, d] * 2.0
            Z[t, d] = S[t, d] + 1.0
        }",
        // Read at its own step by an attention term (a sum over keys): keeps the tiles.
        "kernel k(Q: f32[P, E], K: f32[M, E], V: f32[M, F], G: f32[P]) -> (O: f32[P, F]) {
            D[p] = scan[p, init = 0.0](D[p - 1] + G[p])
            O[p, f] = sum[m](sum[e](Q[p, e] * K[m, e]) * D[p] * V[m, f])
        }",
        // Looks back two steps.
        "kernel k(X: f32[T, D]) -> (Y: f32[T, D]) {
            S[t, d] = scan[t, init = 1.0](S[t - 1, d] + S[t - 2, d] * X[t, d])
            Y[t, d] = S[t, d] * 2.0
        }",
    ];
    for text in not {
        let (plan, _) = plan_of(text, "k");
        assert!(plan.iter().all(|p| !p.contains("fused")), "{text}: {plan:?}");
    }
}

/// Weighted sums whose weights read their tensors along the rows (`φ(K[m, e])` with rows `e`),
/// as users write a linear attention's state: every spelling gets the key-major weight tile;
/// a weight read along the keys, or one holding a dot product, keeps the row-major tile.
#[test]
fn weights_read_along_the_rows_take_the_key_major_tile() {
    let by_rows = [
        "kernel k(K: f32[B, H, M, E], V: f32[B, H, M, F]) -> (S: f32[B, H, E, F]) { S[b, h, e, f] = sum[m]((1.0 + elu(K[b, h, m, e])) * V[b, h, m, f]) }",
        "kernel k(K: f32[M, E], V: f32[M, F]) -> (S: f32[E, F]) { S[e, f] = sum[m](relu(K[m, e]) * relu(K[m, e]) * V[m, f]) }",
        "kernel k(K: f32[T, M, E], V: f32[T, M, F], G: f32[T, M]) -> (S: f32[T, E, F]) { S[t, e, f] = sum[m where m < t](exp(K[t, m, e]) * V[t, m, f] * G[t, m]) }",
    ];
    for text in by_rows {
        let (plan, kir) = plan_of(text, "k");
        assert!(plan.iter().any(|p| p.contains("the weights read along the rows")), "{text}: {plan:?}");
        assert!(kir.contains("sum[k <") && kir.contains("+ k*18]"), "{text}: no key-major tile product\n{kir}");
    }
    let not = [
        // `K` laid out [e, m]: the weight reads along the keys.
        "kernel k(K: f32[E, M], V: f32[M, F]) -> (S: f32[E, F]) { S[e, f] = sum[m](elu(K[e, m]) * V[m, f]) }",
        // A dot product in the weight (the packed tile).
        "kernel k(Q: f32[P, E], K: f32[M, E], V: f32[M, F]) -> (O: f32[P, F]) { O[p, f] = sum[m](sigmoid(sum[e](Q[p, e] * K[m, e])) * V[m, f]) }",
    ];
    for text in not {
        let (plan, _) = plan_of(text, "k");
        assert!(plan.iter().all(|p| !p.contains("along the rows")), "{text}: {plan:?}");
    }
}

/// A tiled subterm under a pointwise rest, as users write it (a map of the product, a gate
/// and a normaliser read or reduced per row): the tiled plan writes the node's definition, with
/// no tensor of the part; the row's normaliser is evaluated once per row, not per column. Two
/// parts, or a rest that may be absent, keep the parts' tensors.
#[test]
fn subterms_under_a_pointwise_rest_are_written_by_their_tiles() {
    let fused = [
        "kernel k(Q: f32[P, E], K: f32[M, E]) -> (S: f32[P, M]) { S[p, m] = softplus(sum[e](Q[p, e] * K[m, e])) }",
        "kernel k(X: f32[T, D], W: f32[N, D], G: f32[T]) -> (Y: f32[T, N]) { Y[t, n] = sigmoid(G[t]) * sum[d](X[t, d] * W[n, d]) - 0.5 }",
        "kernel k(Q: f32[P, E], KV: f32[E, F], Z: f32[E]) -> (O: f32[P, F]) { O[p, f] = sum[e](exp(Q[p, e]) * KV[e, f]) / sum[e](exp(Q[p, e]) * Z[e]) }",
    ];
    for text in fused {
        let (plan, kir) = plan_of(text, "k");
        assert!(plan.iter().any(|p| p.contains("evaluated as each element is written")), "{text}: {plan:?}");
        assert!(!kir.contains(".part0: f32 (heap)"), "{text}:\n{kir}");
    }
    // The normaliser `Σ_e exp(Q[p, e]) · Z[e]` is hoisted out of the columns' loop.
    let (_, kir) = plan_of(fused[2], "k");
    let lines: Vec<&str> = kir.lines().map(str::trim).collect();
    let set = lines.iter().rposition(|l| l.starts_with("hoisted%") && l.contains("= acc%"));
    let columns = lines.iter().rposition(|l| l.starts_with("for f%"));
    assert!(matches!((set, columns), (Some(a), Some(b)) if a < b), "the normaliser is not evaluated before the columns:\n{kir}");
    // Two parts: the generic pass reads both.
    let (plan, _) = plan_of(
        "kernel k(Q: f32[P, E], K: f32[M, E], R: f32[M, E]) -> (S: f32[P, M]) { S[p, m] = sum[e](Q[p, e] * K[m, e]) - sum[e](Q[p, e] * R[m, e]) }",
        "k",
    );
    assert!(plan.iter().all(|p| !p.contains("as each element is written")), "{plan:?}");
}

/// The fused recurrent plan reads the consumer's contractions with the state as one-row tile
/// products, for the optimizer's prefix form and for a recurrent form as written.
#[test]
fn fused_scan_readouts_are_row_products() {
    for (file, k) in [("linear.tfm", "linear_causal"), ("linear.tfm", "linear_causal_scan"), ("retnet.tfm", "retention_recurrent")] {
        let program = crate::testing::lib(file);
        let c = lower(&program, k).unwrap();
        let (opt, _) = optimize(&c, &Options::for_program(&program)).unwrap();
        let s = schedule(&program, &opt, &ScheduleOptions::default()).unwrap();
        let kir = s.func.to_string();
        assert!(kir.contains(".row[(f.chunk") && kir.contains("for i < 1"), "{file}/{k}: no one-row tile product\n{kir}");
    }
}
