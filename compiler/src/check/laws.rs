//! The randomized law check of user reductions: the compiler may split and reorder a
//! reduction, so its combine must be associative and its identity neutral. We evaluate the
//! combine (with [`crate::semantics::reduction`], as the IR evaluator does) on seeded random
//! states and reject a reduction whose laws visibly fail, showing the counterexample.
//!
//! Tolerance: values agree when `|x - y| <= 1e-6 * max(1, |x|, |y|)`; samples where the
//! combine errs (overflow) or either side of an associativity check is not finite are skipped,
//! so only clear failures are reported.

use crate::hir::{Program, ReductionId};
use crate::semantics::ops::{lit_scalar, zero};
use crate::semantics::reduction::{reduction_combine, reduction_identity};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tfm_dsl::Diagnostic;
use tfmc_runtime::Scalar;

const SAMPLES: usize = 64;

/// Diagnostics for every user reduction whose identity or associativity fails.
pub fn check_laws(program: &Program) -> Vec<Diagnostic> {
    let params: Vec<Scalar> = program.params.iter().map(|p| p.default.map_or(zero(p.dtype), lit_scalar)).collect();
    let mut out = Vec::new();
    for (i, red) in program.reductions.iter().enumerate() {
        let id = ReductionId(i as u32);
        let Ok(identity) = reduction_identity(program, id, &params) else { continue };
        let mut rng = StdRng::seed_from_u64(0x7f3 + i as u64);
        let state = |rng: &mut StdRng| -> Vec<Scalar> {
            red.fields
                .iter()
                .map(|(_, d)| if d.is_float() { Scalar::F(rng.random_range(-3.0..3.0)) } else { Scalar::I(rng.random_range(-5..6)) })
                .collect()
        };
        let combine = |a: &[Scalar], b: &[Scalar]| reduction_combine(program, id, &params, a, b).ok();
        for _ in 0..SAMPLES {
            let (x, y, z) = (state(&mut rng), state(&mut rng), state(&mut rng));
            for (left, what) in [(true, "combine(identity, x)"), (false, "combine(x, identity)")] {
                let r = if left { combine(&identity, &x) } else { combine(&x, &identity) };
                if let Some(r) = r
                    && let Some(k) = disagreement(&r, &x, false)
                {
                    out.push(
                        Diagnostic::error(
                            format!("the identity of reduction '{}' is not neutral", red.name),
                            red.identity[k].span,
                            "not an identity",
                        )
                        .with_note(format!("{what} = {} for x = {}", show(&r), show(&x)))
                        .with_hint("the identity must satisfy combine(identity, x) = x = combine(x, identity)"),
                    );
                    break;
                }
            }
            if out.last().is_some_and(|d| d.message.contains(&format!("'{}'", red.name))) {
                break;
            }
            let (Some(xy), Some(yz)) = (combine(&x, &y), combine(&y, &z)) else { continue };
            let (Some(l), Some(r)) = (combine(&xy, &z), combine(&x, &yz)) else { continue };
            if let Some(k) = disagreement(&l, &r, true) {
                let field = &red.fields[k].0;
                out.push(
                    Diagnostic::error(
                        format!("reduction '{}' is not associative", red.name),
                        red.result[k].span,
                        format!("field '{field}' is not associative"),
                    )
                    .with_note(format!(
                        "for x = {}, y = {}, z = {}: combine(combine(x, y), z) = {} but combine(x, combine(y, z)) = {}",
                        show(&x),
                        show(&y),
                        show(&z),
                        show(&l),
                        show(&r)
                    ))
                    .with_hint("reductions may be split and reordered, so combine(combine(a, b), c) must equal combine(a, combine(b, c))"),
                );
                break;
            }
        }
    }
    out
}

/// The first field where the states differ beyond tolerance, if any.
fn disagreement(a: &[Scalar], b: &[Scalar], skip_nonfinite: bool) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| {
        let (x, y) = (x.as_f64(), y.as_f64());
        if !x.is_finite() || !y.is_finite() {
            return !(skip_nonfinite || x == y || (x.is_nan() && y.is_nan()));
        }
        (x - y).abs() > 1e-6 * 1f64.max(x.abs()).max(y.abs())
    })
}

fn show(s: &[Scalar]) -> String {
    let parts: Vec<String> = s.iter().map(|v| format!("{:.4}", v.as_f64())).collect();
    if parts.len() == 1 { parts[0].clone() } else { format!("({})", parts.join(", ")) }
}
