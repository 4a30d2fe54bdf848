//! Evaluating a user reduction's identity and combine on given states, outside any kernel —
//! used by the checker's randomized identity/associativity check.
//!
//! Invariant: the expressions evaluated read no tensors and no indices (the checker only
//! allows literals, params and the combine's locals there), so an empty kernel frame suffices.

use super::Frame;
use super::eval::{Env, Eval};
use crate::hir::{Kernel, Program, ReductionId};
use crate::semantics::RunError;
use tfmc_runtime::Scalar;

fn empty_kernel(program: &Program, id: ReductionId) -> Kernel {
    let span = program.reductions.get(id.index()).map(|r| r.span).unwrap_or_default();
    Kernel {
        name: String::new(),
        docs: Vec::new(),
        dims: Vec::new(),
        tensors: Vec::new(),
        indices: Vec::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        params_used: Vec::new(),
        stmts: Vec::new(),
        span,
        name_span: span,
    }
}

fn with_eval<T>(
    program: &Program,
    id: ReductionId,
    params: &[Scalar],
    f: impl FnOnce(&Eval, &mut Env) -> Result<T, RunError>,
) -> Result<T, RunError> {
    let kernel = empty_kernel(program, id);
    let frame = Frame { program, kernel: &kernel, dims: Vec::new(), params: params.to_vec(), bufs: Vec::new(), depth: 0 };
    let eval = Eval { frame: &frame, scan: None };
    let mut env = Env::new(0);
    f(&eval, &mut env)
}

/// The identity state of reduction `id` (params by `ParamId`).
pub fn reduction_identity(program: &Program, id: ReductionId, params: &[Scalar]) -> Result<Vec<Scalar>, RunError> {
    let red = &program.reductions[id.index()];
    with_eval(program, id, params, |eval, env| red.identity.iter().map(|e| eval.value(e, env, "identity")).collect())
}

/// `combine(a, b)` of reduction `id`; `a` and `b` have one value per field.
pub fn reduction_combine(
    program: &Program,
    id: ReductionId,
    params: &[Scalar],
    a: &[Scalar],
    b: &[Scalar],
) -> Result<Vec<Scalar>, RunError> {
    let red = &program.reductions[id.index()];
    with_eval(program, id, params, |eval, env| {
        env.stack.extend_from_slice(a);
        env.stack.extend_from_slice(b);
        env.base = 0;
        for e in &red.lets {
            let v = eval.value(e, env, "let")?;
            env.stack.push(v);
        }
        red.result.iter().map(|e| eval.value(e, env, "combine")).collect()
    })
}
