//! The reference interpreter: runs a checked kernel on concrete tensors, in `f64`, with plain
//! loops. It is the oracle every rewrite and backend is tested against, so it follows
//! `docs/language.md` literally and is never clever.
//!
//! Semantics (beyond the HIR invariants, which it assumes):
//! - Values: every float dtype is an `f64` and is never rounded inside the interpreter (not
//!   even by a cast to a narrower float); integers are `i64` that must stay within their
//!   dtype's range (an overflowing `+ - *`, `abs`, `neg`, int-to-narrower-int cast or sum is
//!   an error, never a wrap); bools are bools. Kernel outputs are rounded to their dtype only
//!   when they are written out ([`tfmc_runtime::Tensor::set`] semantics).
//! - Statements run in order. An assignment visits its left-hand indices in row-major order;
//!   a point exists when all its filters hold (a filter that reads a missing point does not
//!   hold) and its value exists. Locals are dense with a presence mask.
//! - Absence: reading a point that does not exist makes the innermost scope point not exist:
//!   a reduction skips that point (for a user reduction, when any field's body is absent), a
//!   statement does not define that point. Reads of inputs always exist. Points of a kernel
//!   output that do not exist are written as 0 (`false`).
//! - Only the taken branch of `if` is evaluated; `&&`/`||` short-circuit.
//! - Float `/` is IEEE except `0 / 0 = 0`; float `%` rounds the quotient toward negative
//!   infinity like Python. Integer `/` and `%` round toward negative infinity; integer
//!   division by zero is an error.
//! - Casts: float to int truncates toward zero and saturates (NaN gives 0); bool to number is
//!   0/1; number to bool is `!= 0` (NaN is true).
//! - Built-in reductions: `sum` (0), `prod` (1), `max` (-inf or the integer minimum), `min`
//!   (+inf or the integer maximum); NaN propagates through `max`/`min` (also the functions).
//!   User reductions start from the identity and fold `acc = combine(acc, lift(point))` in
//!   row-major order; used in an expression they give field 0.
//! - A scan reads its target `c` steps back along the scanned index; before the start it
//!   evaluates `init` at the current point; a look-back to a point that does not exist is
//!   absent.
//! - A call passes the caller's tensors as dense arrays (absent points read as 0), binds the
//!   callee's dims from their shapes, evaluates param overrides in the caller, and runs the
//!   callee with its own outputs' absent points as 0; the callee sees unrounded values.
//!
//! Errors carry the source location as `file:line:col`.

mod eval;
mod exec;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_errors;

use std::borrow::Cow;
use std::collections::BTreeMap;

use tfm_dsl::Span;
use tfmc_runtime::{Scalar, Tensor};

use crate::bind::{bind, resolve_params};
use crate::hir::{Extent, IndexId, Kernel, Program, Stmt};
use crate::semantics::store::Buf;
use crate::semantics::{RunError, location};
use eval::Env;

/// How deeply kernel calls may nest before the interpreter gives up: the checker's limit, so a
/// checked program never reaches it (kept as a guard).
pub const MAX_CALL_DEPTH: usize = crate::check::limits::MAX_CALL_DEPTH;

/// Runs `kernel` of `program` on named inputs with param values (defaults apply to params not
/// given) and returns its outputs by name, each of its declared dtype (values rounded to it).
pub fn run(
    program: &Program,
    kernel: &str,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
) -> Result<BTreeMap<String, Tensor>, RunError> {
    run_with(program, kernel, inputs, params, false)
}

/// Like [`run`], but float outputs are returned as `f64` tensors holding the interpreter's
/// exact f64 values, not rounded to the declared dtype: the oracle's own answer, for comparing
/// against references at f64 tolerance. Integer and bool outputs keep their dtype.
pub fn run_exact(
    program: &Program,
    kernel: &str,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
) -> Result<BTreeMap<String, Tensor>, RunError> {
    run_with(program, kernel, inputs, params, true)
}

fn run_with(
    program: &Program,
    kernel: &str,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
    exact: bool,
) -> Result<BTreeMap<String, Tensor>, RunError> {
    // Evaluation recurses over expression trees; run it on a thread with a known-large stack.
    crate::with_stack(|| run_on_this_thread(program, kernel, inputs, params, exact))
}

fn run_on_this_thread(
    program: &Program,
    kernel: &str,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
    exact: bool,
) -> Result<BTreeMap<String, Tensor>, RunError> {
    let Some((_, k)) = program.kernel(kernel) else {
        let names: Vec<&str> = program.kernels.iter().map(|k| k.name.as_str()).collect();
        return Err(RunError::UnknownKernel {
            name: kernel.to_string(),
            available: if names.is_empty() { "none".to_string() } else { names.join(", ") },
        });
    };
    let bindings = bind(k, inputs)?;
    let params = resolve_params(program, k, params)?;
    let args: Vec<Buf<'_>> = k
        .inputs
        .iter()
        .map(|t| {
            let tensor = &inputs[&k.tensors[t.index()].name];
            Buf::full(tensor.shape().to_vec(), Cow::Borrowed(tensor.data()))
        })
        .collect();
    let outputs = run_kernel(program, k, args, bindings.dims, params, 0)?;
    let mut out = BTreeMap::new();
    for (&t, buf) in k.outputs.iter().zip(outputs) {
        let info = &k.tensors[t.index()];
        let dtype = if exact && info.dtype.is_float() { tfmc_runtime::DType::F64 } else { info.dtype };
        let tensor = buf.to_tensor(dtype).map_err(|why| RunError::TooLarge { tensor: info.name.clone(), shape: buf.shape.clone(), why })?;
        out.insert(info.name.clone(), tensor);
    }
    Ok(out)
}

/// One kernel invocation: bound dims, param values and the tensors defined so far.
pub(crate) struct Frame<'a> {
    program: &'a Program,
    kernel: &'a Kernel,
    /// Size of each dim, by `DimId`.
    dims: Vec<i64>,
    /// Value of each param, by `ParamId`.
    params: Vec<Scalar>,
    /// Each tensor once defined, by `TensorId`.
    bufs: Vec<Option<Buf<'a>>>,
    /// Call nesting depth (0 for the kernel that was asked for).
    depth: usize,
}

impl Frame<'_> {
    /// The size of an extent (a negative fixed size counts as 0).
    fn extent(&self, e: Extent) -> i64 {
        match e {
            Extent::Dim(d) => self.dims.get(d.index()).copied().unwrap_or(0),
            Extent::Const(c) => c.max(0),
        }
    }

    /// The range of an index.
    fn index_extent(&self, i: IndexId) -> i64 {
        self.kernel.indices.get(i.index()).map_or(0, |info| self.extent(info.extent))
    }

    /// `file:line:col` of a span.
    fn loc(&self, span: Span) -> String {
        location(self.program, span)
    }
}

/// Runs `kernel` with bound inputs (in declaration order), dims and params; returns its
/// outputs in declaration order, fully present (points that did not exist are 0).
fn run_kernel<'a>(
    program: &'a Program,
    kernel: &'a Kernel,
    inputs: Vec<Buf<'a>>,
    dims: Vec<i64>,
    params: Vec<Scalar>,
    depth: usize,
) -> Result<Vec<Buf<'static>>, RunError> {
    let mut bufs: Vec<Option<Buf<'a>>> = (0..kernel.tensors.len()).map(|_| None).collect();
    for (&t, b) in kernel.inputs.iter().zip(inputs) {
        bufs[t.index()] = Some(b);
    }
    let mut frame = Frame { program, kernel, dims, params, bufs, depth };
    let mut env = Env::new(kernel.indices.len());
    for s in &kernel.stmts {
        match s {
            Stmt::Assign(a) => exec::assign(&mut frame, a, &mut env)?,
            Stmt::Call(c) => exec::call(&mut frame, c, &mut env)?,
        }
    }
    let mut out = Vec::with_capacity(kernel.outputs.len());
    for &t in &kernel.outputs {
        let buf = match frame.bufs[t.index()].take() {
            Some(b) => b.into_dense(),
            None => {
                let info = &kernel.tensors[t.index()];
                let shape: Vec<usize> = info.shape.iter().map(|&e| frame.extent(e) as usize).collect();
                Buf::empty(info.dtype, shape.clone())
                    .map_err(|why| RunError::TooLarge { tensor: info.name.clone(), shape, why })?
                    .into_dense()
            }
        };
        out.push(buf);
    }
    Ok(out)
}
