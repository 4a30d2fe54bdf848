//! The IR interpreter: runs a [`Cascade`] on concrete tensors in `f64`, with exactly the
//! semantics of the HIR reference interpreter ([`crate::interp`], whose module header is the
//! specification), so every rewrite of the optimizer can be checked end to end against it.
//!
//! How it runs: the inputs and params are bound against the HIR kernel of the same name (the
//! cascade's inputs are that kernel's inputs; dims by name); every definition is compiled once
//! ([`compile`]: names resolved to slots, dtypes inferred) before any loop; then the nodes run
//! in `order`, each visiting its left-hand indices in row-major order and writing a point when
//! its value exists. Nodes are dense with a presence mask; absent points of outputs are 0.
//!
//! Semantics of the forms (beyond the HIR interpreter's, which they mirror):
//! - `(where F x)`: `x` where `F` holds; a false or absent `F` makes the point absent.
//! - `(sum|max|min|prod I lo hi F body)`, `(ured ..)`, `(osm ..)`: `lo`/`hi` are evaluated in
//!   the enclosing scope; `I` runs over `lo..hi` shadowing an outer `I` (restored after); a
//!   non-empty range must lie inside `I`'s declared range (else an internal error — the
//!   rewrite that made it is wrong); an absent bound gives an empty range, as a filter reading
//!   that point would. Points where `F` is false/absent or the body is absent are skipped.
//! - `(osm I lo hi F s v)` is `Σ_I softmax_I(s) · v` in one pass (see [`expr`]): it equals the
//!   naive cascade `Σ exp(s - max s) v / Σ exp(s - max s)` up to rounding, and is 0 on a row
//!   with no point. On a row whose every logit is `-inf` it gives 0, where the naive cascade
//!   gives NaN (`-inf - -inf`).
//! - `(prev T c)` reads the scan's own value `c` steps back, or evaluates `init` at the
//!   current point before the start; a look-back to an absent point is absent.
//!
//! Errors are [`RunError`]s located as `IR node 'S' of cascade 'sdpa'` (the IR has no spans).

pub(crate) mod compile;
mod expr;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};

use egg::Symbol;
use tfmc_runtime::{DType, Scalar, Tensor};

use super::{Cascade, Def, Node, Role, Size};
use crate::bind::{bind, resolve_params};
use crate::semantics::RunError;
use crate::semantics::error::Flow;
use crate::semantics::store::Buf as Store;
use compile::{Op, Scope, This};
use expr::{Env, Eval, ScanPoint};

/// An internal error (a broken IR invariant) at `loc`.
fn internal(what: &str, loc: &str) -> RunError {
    RunError::Internal { what: what.to_string(), loc: loc.to_string() }
}

/// Runs cascade `c` (lowered from, or rewritten from, kernel `c.name` of `program`) on named
/// inputs with param values (defaults apply to params not given), returning its outputs by
/// name. With `exact`, float outputs are `f64` tensors of the unrounded values (like
/// [`crate::interp::run_exact`]); otherwise each output has its declared dtype (like
/// [`crate::interp::run`]).
pub fn run_cascade(
    c: &Cascade,
    program: &crate::Program,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
    exact: bool,
) -> Result<BTreeMap<String, Tensor>, RunError> {
    crate::with_stack(|| run_here(c, program, inputs, params, exact))
}

/// One node, ready to run.
struct Step<'c> {
    node: &'c Node,
    /// Its concrete shape.
    shape: Vec<usize>,
    /// Slots of its left-hand indices.
    slots: Vec<usize>,
    /// `IR node 'S' of cascade 'sdpa'`.
    loc: String,
    kind: Kind,
}

enum Kind {
    Input,
    Expr(Vec<Op>),
    Scan { axis: usize, init: Vec<Op>, body: Vec<Op> },
}

fn run_here(
    c: &Cascade,
    program: &crate::Program,
    inputs: &BTreeMap<String, Tensor>,
    params: &BTreeMap<String, Scalar>,
    exact: bool,
) -> Result<BTreeMap<String, Tensor>, RunError> {
    let Some((_, k)) = program.kernel(&c.name) else {
        let names: Vec<&str> = program.kernels.iter().map(|k| k.name.as_str()).collect();
        return Err(RunError::UnknownKernel {
            name: c.name.clone(),
            available: if names.is_empty() { "none".to_string() } else { names.join(", ") },
        });
    };
    let bindings = bind(k, inputs)?;
    let params = resolve_params(program, k, params)?;
    let dims: HashMap<&str, i64> = k.dims.iter().map(|d| d.name.as_str()).zip(bindings.dims.iter().copied()).collect();
    let size = |s: &Size| match s {
        Size::Dim(d) => dims.get(d.as_str()).copied(),
        Size::Fixed(n) => Some((*n).max(0)),
    };
    let mut ranges = HashMap::new();
    for (name, s) in &c.ranges {
        let n = size(s).ok_or_else(|| internal(&format!("index '{name}' ranges over unknown dimension '{s}'"), &c.name))?;
        ranges.insert(name.as_str(), n);
    }
    let mut scope =
        Scope { program, params: &params, dims: dims.clone(), ranges, slots: HashMap::new(), tensors: HashMap::new(), symbolic: false };
    let mut steps = Vec::with_capacity(c.order.len());
    for (slot, &ix) in c.order.iter().enumerate() {
        let node = &c.graph[ix];
        let loc = format!("IR node '{}' of cascade '{}'", node.name, c.name);
        let mut shape = Vec::with_capacity(node.shape.len());
        for s in &node.shape {
            let n = size(s).ok_or_else(|| internal(&format!("unknown dimension '{s}'"), &loc))?;
            shape.push(n as usize);
        }
        let slots: Vec<usize> = node.indices.iter().map(|i| scope.slot(Symbol::from(i))).collect();
        if !matches!(node.def, Def::Input) && slots.len() != shape.len() {
            return Err(internal("left-hand indices do not match the shape", &loc));
        }
        let this = |scan_body| This { name: &node.name, dtype: node.dtype, scan_body };
        let kind = match &node.def {
            Def::Input => Kind::Input,
            Def::Expr(e) => Kind::Expr(compile::compile(e, &mut scope, &this(false), &loc)?),
            Def::Scan { index, init, body } => {
                let axis = node.indices.iter().position(|i| i == index);
                let axis = axis.ok_or_else(|| internal(&format!("scan index '{index}' is not a left-hand index"), &loc))?;
                let init = compile::compile(init, &mut scope, &this(false), &loc)?;
                let body = compile::compile(body, &mut scope, &this(true), &loc)?;
                Kind::Scan { axis, init, body }
            }
        };
        scope.tensors.insert(node.name.as_str(), (slot, node.dtype, shape.len()));
        steps.push(Step { node, shape, slots, loc, kind });
    }
    let names: Vec<String> = steps.iter().map(|s| s.node.name.clone()).collect();
    let mut env = Env { idx: vec![0; scope.slots.len()], stack: Vec::new(), memo_slots: Vec::new(), memo: Vec::new() };
    let mut stores: Vec<Option<Store<'_>>> = (0..steps.len()).map(|_| None).collect();
    for (slot, step) in steps.iter().enumerate() {
        let store = match &step.kind {
            Kind::Input => {
                let t = inputs.get(&step.node.name).ok_or_else(|| internal("not an input of the kernel", &step.loc))?;
                if t.shape() != step.shape.as_slice() {
                    return Err(internal(&format!("input has shape {:?}, the IR says {:?}", t.shape(), step.shape), &step.loc));
                }
                Store::input(t)
            }
            kind => {
                let ev = Eval { program, params: &params, stores: &stores, names: &names, loc: &step.loc, scan: None };
                run_node(&ev, step, kind, &mut env)?
            }
        };
        stores[slot] = Some(store);
    }
    let mut out = BTreeMap::new();
    for (step, store) in steps.iter().zip(&stores) {
        if let (Role::Output(_), Some(store)) = (step.node.role, store) {
            let d = step.node.dtype;
            let dtype = if exact && d.is_float() { DType::F64 } else { d };
            let tensor = store.to_tensor(dtype).map_err(|why| RunError::TooLarge {
                tensor: step.node.name.clone(),
                shape: store.shape.clone(),
                why,
            })?;
            out.insert(step.node.name.clone(), tensor);
        }
    }
    Ok(out)
}

/// Computes one defined node at every point of its index space.
fn run_node(ev: &Eval<'_>, step: &Step<'_>, kind: &Kind, env: &mut Env) -> Result<Store<'static>, RunError> {
    let mut target = Store::empty(step.node.dtype, step.shape.clone()).map_err(|why| RunError::TooLarge {
        tensor: step.node.name.clone(),
        shape: step.shape.clone(),
        why,
    })?;
    for &s in &step.slots {
        env.idx[s] = 0;
    }
    // A fresh memo per node (a scan's body reads its own target as it grows: no memo there).
    env.memo_slots = match kind {
        Kind::Expr(ops) => expr::memo_slots(ops),
        _ => Vec::new(),
    };
    env.memo = vec![HashMap::new(); env.memo_slots.len()];
    let extents: Vec<i64> = step.shape.iter().map(|&n| n as i64).collect();
    for flat in 0..target.len() {
        if flat > 0 {
            // Advance the odometer (row-major: last index fastest).
            for (k, &s) in step.slots.iter().enumerate().rev() {
                env.idx[s] += 1;
                if env.idx[s] < extents[k] {
                    break;
                }
                env.idx[s] = 0;
            }
        }
        let value = match kind {
            Kind::Expr(ops) => ev.root(ops, env),
            Kind::Scan { axis, init, body } => {
                let scan = ScanPoint { target: &target, flat, stride: target.strides[*axis], t: env.idx[step.slots[*axis]], init };
                Eval { scan: Some(scan), ..*ev }.root(body, env)
            }
            Kind::Input => return Err(internal("an input has no definition", &step.loc)),
        };
        match value {
            Ok(v) => target.set(flat, v),
            Err(Flow::Absent) => {}
            Err(Flow::Error(e)) => return Err(*e),
        }
    }
    Ok(target)
}
