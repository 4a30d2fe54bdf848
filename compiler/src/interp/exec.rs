//! Statement execution: assignments (plain, multi-field reductions, scans) and kernel calls.
//!
//! An assignment allocates its targets with every point absent, visits the left-hand points
//! in row-major order (so a scan sees its index increase for every fixed value of the other
//! indices), and writes a point only when all its filters hold and its value exists. The
//! targets join the frame only after the statement, so a scan reads its own earlier points
//! through [`Scan`], never through the frame. A call binds the callee from the argument
//! shapes, evaluates the param overrides in the caller, runs the callee to completion and
//! stores its (fully present) outputs in the caller's tensors.

use tfmc_runtime::Scalar;

use super::eval::{Env, Eval, Scan};
use super::{Frame, MAX_CALL_DEPTH, run_kernel};
use crate::bind::bind_shapes;
use crate::hir::{Assign, Call, Rhs};
use crate::semantics::RunError;
use crate::semantics::error::Flow;
use crate::semantics::store::Buf;

/// Allocates the statement's targets, all points absent.
fn alloc_targets(frame: &Frame<'_>, a: &Assign) -> Result<Vec<Buf<'static>>, RunError> {
    let mut out = Vec::with_capacity(a.targets.len());
    for &t in &a.targets {
        let info = &frame.kernel.tensors[t.index()];
        let shape: Vec<usize> = info.shape.iter().map(|&e| frame.extent(e) as usize).collect();
        let buf = Buf::empty(info.dtype, shape.clone()).map_err(|why| RunError::TooLarge { tensor: info.name.clone(), shape, why })?;
        out.push(buf);
    }
    Ok(out)
}

/// Runs one assignment and adds its targets to the frame.
pub(super) fn assign(frame: &mut Frame<'_>, a: &Assign, env: &mut Env) -> Result<(), RunError> {
    let mut targets = alloc_targets(frame, a)?;
    let extents: Vec<i64> = a.indices.iter().map(|&i| frame.index_extent(i)).collect();
    let points = extents.iter().try_fold(1usize, |n, &e| n.checked_mul(e as usize));
    let (len, rank) = targets.first().map_or((0, 0), |t| (t.data.len(), t.shape.len()));
    let Some(points) = points.filter(|&n| n == len && extents.len() == rank && !targets.is_empty()) else {
        return Err(RunError::Internal { what: "left-hand indices do not match the target's shape".to_string(), loc: frame.loc(a.span) });
    };
    let scan_axis = match &a.rhs {
        Rhs::Scan { index, .. } => a.indices.iter().position(|i| i == index),
        _ => None,
    };
    if matches!(a.rhs, Rhs::Scan { .. }) && scan_axis.is_none() {
        return Err(RunError::Internal { what: "scan index not on the left".to_string(), loc: frame.loc(a.span) });
    }
    for &i in &a.indices {
        env.idx[i.index()] = 0;
    }
    for flat in 0..points {
        if flat > 0 {
            // Advance the odometer (row-major: last index fastest).
            for (k, &i) in a.indices.iter().enumerate().rev() {
                env.idx[i.index()] += 1;
                if env.idx[i.index()] < extents[k] {
                    break;
                }
                env.idx[i.index()] = 0;
            }
        }
        point(frame, a, &mut targets, scan_axis, flat, env)?;
    }
    for (&t, buf) in a.targets.iter().zip(targets) {
        frame.bufs[t.index()] = Some(buf);
    }
    Ok(())
}

/// Computes and stores the statement's value at one point (the environment holds it).
fn point(
    frame: &Frame<'_>,
    a: &Assign,
    targets: &mut [Buf<'static>],
    scan_axis: Option<usize>,
    flat: usize,
    env: &mut Env,
) -> Result<(), RunError> {
    let plain = Eval { frame, scan: None };
    if !plain.holds(&a.filters, env)? {
        return Ok(());
    }
    let value = match &a.rhs {
        Rhs::Expr(e) => plain.expr(e, env),
        Rhs::Scan { index, init, body } => {
            let target = &targets[0];
            let axis = scan_axis.unwrap_or(0);
            let scan = Scan { tensor: a.targets[0], target, flat, stride: target.strides[axis], t: env.idx[index.index()], init };
            Eval { frame, scan: Some(scan) }.expr(body, env)
        }
        Rhs::Tuple(r) => {
            let crate::hir::ReduceOp::User(id) = r.op else {
                return Err(RunError::Internal { what: "tuple of a built-in reduction".to_string(), loc: frame.loc(a.span) });
            };
            let start = plain.user_reduce(id, r, env)?;
            for (k, t) in targets.iter_mut().enumerate() {
                let v = env.stack.get(start + k).copied().unwrap_or(Scalar::F(0.0));
                t.set(flat, v);
            }
            env.stack.truncate(start);
            return Ok(());
        }
    };
    match value {
        Ok(v) => targets[0].set(flat, v),
        Err(Flow::Absent) => {}
        Err(Flow::Error(e)) => return Err(*e),
    }
    Ok(())
}

/// Runs another kernel on whole tensors and adds its outputs to the frame.
pub(super) fn call(frame: &mut Frame<'_>, c: &Call, env: &mut Env) -> Result<(), RunError> {
    let program = frame.program;
    let loc = || frame.loc(c.span);
    let Some(callee) = program.kernels.get(c.callee.index()) else {
        return Err(RunError::Internal { what: "unknown callee".to_string(), loc: loc() });
    };
    if frame.depth >= MAX_CALL_DEPTH {
        return Err(RunError::TooDeep { depth: MAX_CALL_DEPTH, loc: loc() });
    }
    let mut params = frame.params.clone();
    let eval = Eval { frame, scan: None };
    for (pid, e) in &c.params {
        let what = format!("override of param '{}'", program.params.get(pid.index()).map_or("?", |p| p.name.as_str()));
        let v = eval.value(e, env, &what)?;
        if let Some(slot) = params.get_mut(pid.index()) {
            *slot = v;
        }
    }
    let outputs = {
        let mut args = Vec::with_capacity(c.args.len());
        for &t in &c.args {
            let Some(buf) = frame.bufs.get(t.index()).and_then(Option::as_ref) else {
                return Err(RunError::Internal { what: "argument read before it is defined".to_string(), loc: loc() });
            };
            let too_large =
                |why| RunError::TooLarge { tensor: frame.kernel.tensors[t.index()].name.clone(), shape: buf.shape.clone(), why };
            args.push(buf.dense_view().map_err(too_large)?);
        }
        let shapes: Vec<&[usize]> = args.iter().map(|b| b.shape.as_slice()).collect();
        let bindings = bind_shapes(callee, &shapes).map_err(|source| RunError::Call {
            callee: callee.name.clone(),
            loc: loc(),
            source: Box::new(source),
        })?;
        run_kernel(program, callee, args, bindings.dims, params, frame.depth + 1)?
    };
    for (&t, buf) in c.outputs.iter().zip(outputs) {
        let info = &frame.kernel.tensors[t.index()];
        let shape: Vec<usize> = info.shape.iter().map(|&e| frame.extent(e) as usize).collect();
        if shape != buf.shape {
            return Err(RunError::ShapeMismatch { tensor: info.name.clone(), expected: shape, got: buf.shape, loc: frame.loc(c.span) });
        }
        frame.bufs[t.index()] = Some(buf);
    }
    Ok(())
}
