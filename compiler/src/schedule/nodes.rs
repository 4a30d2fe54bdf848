//! The kernel-level schedule: the prologue (dims, params, buffers, strides), then one loop
//! nest per node of the cascade in order — the tiled attention plan where it applies, else
//! the generic plan described in [`super`].

use std::collections::{HashMap, HashSet};

use egg::{Id, Symbol};
use tfmc_runtime::Scalar;

use super::build::{Builder, e};
use super::common::{checked_len, may_absent, open_parallel_axes};
use super::kir::{BinOp as K, BufKind, Expr, FailKind, Ty};
use super::lower::{Cx, Def, IdxVar, MAX_DIM, ScanCx, TensorInfo, vty};
use super::{ArgInfo, ScheduleError, ScheduleOptions, Scheduled};
use crate::hir::{DType, Program};
use crate::ir::eval::compile::{Op, Scope, This, compile_typed};
use crate::ir::{Cascade, Def as IrDef, Node, Role};

/// A node's compiled definition.
pub(super) enum Compiled {
    Input,
    Expr(Vec<Op>, Vec<DType>),
    Scan { axis: usize, init: (Vec<Op>, Vec<DType>), body: (Vec<Op>, Vec<DType>) },
}

/// Schedules the whole cascade (see [`super::schedule`]).
pub(super) fn schedule_cascade(program: &Program, c: &Cascade, opts: &ScheduleOptions) -> Result<Scheduled, ScheduleError> {
    let Some((_, kernel)) = program.kernel(&c.name) else {
        return Err(ScheduleError::UnknownKernel { name: c.name.clone() });
    };
    let loc0 = format!("cascade '{}'", c.name);
    let internal = |what: String, loc: &str| ScheduleError::Internal { what, loc: loc.to_string() };
    // Defaults stand in for user-reduction identities that read params.
    let defaults = crate::bind::resolve_params(program, kernel, &Default::default())
        .unwrap_or_else(|_| program.params.iter().map(|p| crate::semantics::ops::zero(p.dtype)).collect());
    let mut scope = Scope {
        program,
        params: &defaults,
        dims: HashMap::new(),
        ranges: HashMap::new(),
        slots: HashMap::new(),
        tensors: HashMap::new(),
        symbolic: true,
    };
    let mut compiled = Vec::with_capacity(c.order.len());
    let mut slots_of = Vec::with_capacity(c.order.len());
    for (slot, &ix) in c.order.iter().enumerate() {
        let node = &c.graph[ix];
        let loc = format!("IR node '{}' of cascade '{}'", node.name, c.name);
        let slots: Vec<usize> = node.indices.iter().map(|i| scope.slot(Symbol::from(i))).collect();
        let this = |scan_body| This { name: &node.name, dtype: node.dtype, scan_body };
        let run = |e| internal(format!("{e}"), &loc);
        let comp = match &node.def {
            IrDef::Input => Compiled::Input,
            IrDef::Expr(x) => {
                let (o, t) = compile_typed(x, &mut scope, &this(false), &loc).map_err(run)?;
                Compiled::Expr(o, t)
            }
            IrDef::Scan { index, init, body } => {
                let axis = node.indices.iter().position(|i| i == index).ok_or_else(|| internal(format!("scan index '{index}'"), &loc))?;
                let init = compile_typed(init, &mut scope, &this(false), &loc).map_err(run)?;
                let body = compile_typed(body, &mut scope, &this(true), &loc).map_err(run)?;
                Compiled::Scan { axis, init, body }
            }
        };
        scope.tensors.insert(node.name.as_str(), (slot, node.dtype, node.shape.len()));
        compiled.push(comp);
        slots_of.push(slots);
    }
    // Params the kernel reads, in program order.
    let mut used: HashSet<usize> = kernel.params_used.iter().map(|p| p.index()).collect();
    for comp in &compiled {
        for ops in comp_ops(comp) {
            for op in ops {
                if let Op::Param { id, .. } = op {
                    used.insert(*id);
                }
            }
        }
    }
    let mut b = Builder::new(&c.name);
    let mut dims = HashMap::new();
    let mut intervals = HashMap::new();
    for d in &c.dims {
        let v = b.var(d, Ty::I64);
        b.f.dims.push(v);
        intervals.insert(v, (0i128, MAX_DIM as i128));
        dims.insert(d.clone(), v);
    }
    for d in &c.dims {
        let v = dims[d];
        b.fail_if(e::bin(K::Gt, e::var(v), e::i64(MAX_DIM)), FailKind::BadDims, format!("dim {d} is negative or larger than 2^40"));
    }
    // Product dims: `scale × Π factors`, each step checked to stay within 2^40 (the factors
    // are in 0..=2^40 here, so a step overflows i64 only when its result is over 2^40 too).
    for p in &c.products {
        let mut acc = e::i64(p.scale);
        for f in &p.factors {
            let fv = *dims.get(f).ok_or_else(|| internal(format!("product factor '{f}'"), &loc0))?;
            let over = e::bin(
                K::Or,
                e::bin(K::MulOverflows, acc.clone(), e::var(fv)),
                e::bin(K::Gt, e::mul(acc.clone(), e::var(fv)), e::i64(MAX_DIM)),
            );
            b.fail_if(over, FailKind::BadDims, format!("dim {} = {} is larger than 2^40", p.name, p.formula()));
            acc = e::mul(acc, e::var(fv));
        }
        let v = b.let_(&p.name, acc);
        intervals.insert(v, (0i128, MAX_DIM as i128));
        dims.insert(p.name.clone(), v);
    }
    let mut params = HashMap::new();
    let mut param_list = Vec::new();
    for (i, p) in program.params.iter().enumerate() {
        if used.contains(&i) {
            if p.default.is_none() {
                return Err(ScheduleError::MissingParam { name: p.name.clone() });
            }
            let v = b.var(&p.name, Ty::from_dtype(p.dtype));
            b.f.params.push(v);
            params.insert(i, v);
            param_list.push((i, p.name.clone(), p.dtype));
        }
    }
    let mut cx = Cx {
        b,
        program,
        dims,
        params,
        tensors: Vec::new(),
        idx: Vec::new(),
        ranges: c.ranges.iter().cloned().collect(),
        intervals,
        scan: None,
        loc: loc0,
        scan_init: None,
        subst: Vec::new(),
        cpu: opts.target == super::Target::Cpu,
    };
    // Argument buffers: inputs, then outputs.
    let inputs: Vec<ArgInfo> = c.inputs().iter().map(|n| arg(n)).collect();
    let outputs: Vec<ArgInfo> = c.outputs().iter().map(|n| arg(n)).collect();
    let partial = partiality(c, &compiled);
    let mut plan = Vec::new();
    // Slots before this one are scheduled already (a fused scan group schedules several).
    let mut next = 0;
    for (slot, &ix) in c.order.iter().enumerate() {
        if slot < next {
            continue;
        }
        let node = &c.graph[ix];
        cx.loc = format!("IR node '{}' of cascade '{}'", node.name, c.name);
        if cx.cpu
            && let Some(g) = super::fused_scan::group(&cx, c, &compiled, &slots_of, slot, &partial)
        {
            for (s, (&nix, &part)) in c.order.iter().zip(&partial).enumerate().take(g.consumer + 1).skip(slot) {
                declare(&mut cx, &c.graph[nix], inputs.len(), part, (s < g.consumer).then_some(g.axis))?;
            }
            plan.push(super::fused_scan::emit(&mut cx, c, &g, &compiled, &slots_of)?);
            next = g.consumer + 1;
            continue;
        }
        declare(&mut cx, node, inputs.len(), partial[slot], None)?;
        let out = matches!(node.role, Role::Output(_));
        match &compiled[slot] {
            Compiled::Input => {}
            Compiled::Expr(ops, tys) => {
                let d = Def { ops, tys };
                if opts.attention
                    && let Some(p) = super::attention::analyze(&cx, node, &slots_of[slot], d)
                    && super::attention::fits_target(&p, d, opts)
                {
                    plan.push(format!(
                        "{}: tiled {} ({}): tiles of {} rows of {} x {} keys; {}",
                        node.name,
                        match p.norm {
                            super::attention::Norm::Softmax => "attention",
                            super::attention::Norm::Sum => "weighted sum (no normaliser)",
                        },
                        if let Some(dot) = &p.dot {
                            match dot.kind {
                                super::kir::TileOp::Mul => "packed Q·Kᵀ tile when enough rows, else natural",
                                super::kir::TileOp::SquaredDifference => "packed (Q - K)² tile when enough rows, else natural",
                            }
                        } else {
                            match p.rows {
                                super::attention::Rows::Shared if p.by_rows && opts.target == super::Target::Cpu => {
                                    "natural, keys outer: the weights read along the rows"
                                }
                                super::attention::Rows::Shared => "natural",
                                super::attention::Rows::Single => "natural, keys outer; the values read every row index: each row its own",
                            }
                        },
                        match p.rows {
                            super::attention::Rows::Shared => opts.tile_p,
                            super::attention::Rows::Single => super::attention::SINGLE_ROWS,
                        },
                        node.indices[p.tile],
                        opts.tile_m,
                        columns_note(node, opts)
                    ));
                    let site = super::attention::Site { node, slot, slots: &slots_of[slot], d, plan: &p, epilogue: None };
                    let fits = fits_columns(&cx, slot, opts);
                    if let Some(fits) = &fits {
                        cx.b.open_if(fits.clone());
                    }
                    super::attention::dispatch(&mut cx, &site, opts)?;
                    if fits.is_some() {
                        cx.b.open_else();
                        generic_node(&mut cx, node, slot, &slots_of[slot], d, None, out, &[])?;
                        cx.b.close();
                    }
                    continue;
                }
                if opts.attention
                    && let Some(line) = parts_plan(&mut cx, node, slot, &slots_of[slot], d, opts, out)?
                {
                    plan.push(line);
                    continue;
                }
                let line = match cx.cpu.then(|| super::columns::column_reduction(&cx, node, slot, &slots_of[slot], d)).flatten() {
                    Some(col) if node.indices.len() == 1 => format!("{} outer, inner loop {}", col.index(), node.indices[0]),
                    Some(col) => generic_plan(node, None).replacen(", inner loop", &format!(", {} outer, inner loop", col.index()), 1),
                    None if flat_parallel(&cx, node, slot, &slots_of[slot], d) => format!("parallel ({})", node.indices.join(", ")),
                    None => generic_plan(node, None),
                };
                plan.push(format!("{}: {line}", node.name));
                generic_node(&mut cx, node, slot, &slots_of[slot], d, None, out, &[])?;
            }
            Compiled::Scan { axis, init, body } => {
                plan.push(format!("{}: {}", node.name, generic_plan(node, Some(*axis))));
                cx.scan_init = Some(init.clone());
                let d = Def { ops: &body.0, tys: &body.1 };
                generic_node(&mut cx, node, slot, &slots_of[slot], d, Some(*axis), out, &[])?;
                cx.scan_init = None;
            }
        }
    }
    let func = cx.b.finish();
    Ok(Scheduled { func, inputs, outputs, dims: c.dims.clone(), products: c.products.clone(), params: param_list, plan })
}

/// Declares the tensor of `node` (the next slot): its buffer (an argument, or a heap local
/// allocated here), shape, strides and presence buffer (`partial`). `state = Some(axis)`
/// declares a fused scan's running state instead ([`super::fused_scan`]): one row of the
/// points after `axis` per point of the indices before it (`axis` has extent 1 and stride 0,
/// so every step of the scan reads and writes the same row), the shape still the node's.
pub(super) fn declare(cx: &mut Cx<'_>, node: &Node, inputs: usize, partial: bool, state: Option<usize>) -> Result<(), ScheduleError> {
    let kind = match node.role {
        Role::Input(i) => BufKind::Arg(i),
        Role::Output(j) => BufKind::Arg(inputs + j),
        _ => BufKind::Heap,
    };
    let buf = cx.b.buf(&node.name, Ty::from_dtype(node.dtype), kind.clone());
    let shape: Vec<Expr> = node.shape.iter().map(|s| cx.size(s)).collect::<Result<_, _>>()?;
    let mut stored = shape.clone();
    if let Some(a) = state {
        stored[a] = e::i64(1);
    }
    let mut strides = strides(cx, &stored, &node.name);
    if let Some(a) = state {
        strides[a] = e::i64(0);
    }
    // Every tensor that may miss points records which exist — outputs too: their missing
    // points are written as 0, but a later statement reading one must see it missing.
    let present = partial.then(|| cx.b.buf(&format!("{}.present", node.name), Ty::Bool, BufKind::Heap));
    if kind == BufKind::Heap || present.is_some() {
        let len = checked_len(cx, &stored, &node.name);
        if kind == BufKind::Heap {
            // Every point of a total tensor is stored by its node before any read; a partial
            // one's absent points keep the zero a dense read of them gives.
            cx.b.emit(super::kir::Stmt::Alloc { buf, len: len.clone(), zeroed: partial });
        }
        if let Some(p) = present {
            cx.b.emit(super::kir::Stmt::Alloc { buf: p, len, zeroed: true });
        }
    }
    cx.tensors.push(TensorInfo { name: node.name.clone(), buf, present, sizes: node.shape.clone(), shape, strides });
    Ok(())
}

fn arg(n: &Node) -> ArgInfo {
    ArgInfo { name: n.name.clone(), dtype: n.dtype, shape: n.shape.clone() }
}

fn comp_ops(c: &Compiled) -> Vec<&[Op]> {
    match c {
        Compiled::Input => vec![],
        Compiled::Expr(o, _) => vec![o],
        Compiled::Scan { init, body, .. } => vec![&init.0, &body.0],
    }
}

/// Row-major strides as variables set here.
fn strides(cx: &mut Cx<'_>, shape: &[Expr], name: &str) -> Vec<Expr> {
    let mut out = vec![e::i64(1); shape.len()];
    let mut acc = e::i64(1);
    for k in (0..shape.len()).rev() {
        out[k] = acc.clone();
        if k > 0 {
            let next = e::mul(acc.clone(), shape[k].clone());
            acc = match next {
                c @ Expr::Const(_) => c,
                x => e::var(cx.b.let_(&format!("{name}.stride{}", k - 1), x)),
            };
        }
    }
    out
}

/// Which nodes may have absent points.
fn partiality(c: &Cascade, compiled: &[Compiled]) -> Vec<bool> {
    let mut partial = vec![false; c.order.len()];
    for (slot, comp) in compiled.iter().enumerate() {
        partial[slot] = match comp {
            Compiled::Input => false,
            Compiled::Expr(ops, _) => may_absent(ops, Id::from(ops.len() - 1), &partial, false),
            Compiled::Scan { init, body, .. } => {
                let init_abs = may_absent(&init.0, Id::from(init.0.len() - 1), &partial, false);
                may_absent(&body.0, Id::from(body.0.len() - 1), &partial, init_abs)
            }
        };
    }
    partial
}

/// True if the generic plan runs every index of `node` in parallel (no inner loop over the
/// last one): the definition is a reduction (or a function of one, `sqrt(Σ_n A²)`), so each
/// point is a loop of its own, and nothing would be hoisted out of a loop over the last index
/// (a row's normaliser inside the sum stays computed once per row) — Pattention's row norms
/// `[b, t]` were one thread per batch item; unless the column plan takes it (the last index
/// inner is that plan).
fn flat_parallel(cx: &Cx<'_>, node: &Node, slot: usize, slots: &[usize], d: Def<'_>) -> bool {
    let mut at = d.root();
    loop {
        match &d.ops[usize::from(at)] {
            Op::Reduce { .. } | Op::URed { .. } => break,
            Op::Call { x, y: None, .. } | Op::Cast { x, .. } => at = *x,
            Op::Unary { a, .. } => at = *a,
            _ => return false,
        }
    }
    let Some((&last, outer)) = slots.split_last() else { return false };
    !outer.is_empty()
        && super::hoist::invariants_given(cx, d, &[d.root()], last, true, outer).is_empty()
        && !(cx.cpu && super::columns::column_reduction(cx, node, slot, slots, d).is_some())
}

fn generic_plan(node: &Node, scan: Option<usize>) -> String {
    let idx = &node.indices;
    match (scan, idx.len()) {
        (_, 0) => "scalar".to_string(),
        (None, 1) => format!("parallel {}", idx[0]),
        (None, n) => format!("parallel ({}), inner loop {}", idx[..n - 1].join(", "), idx[n - 1]),
        (Some(a), n) => {
            let last = n - 1;
            let par: Vec<&str> =
                idx.iter().enumerate().filter(|(k, _)| *k != a && (*k != last || a == last)).map(|(_, s)| s.as_str()).collect();
            let inner = if a == last { String::new() } else { format!(", inner loop {}", idx[last]) };
            format!("parallel ({}), sequential scan {}{inner}", par.join(", "), idx[a])
        }
    }
}

/// A node whose definition is not one reduction the tiled plans take, but combines some
/// (`softmax(S1)·V − λ·softmax(S2)·V`, an attention output plus a residual term): each
/// maximal subterm on the definition's unconditional path (reached through arithmetic, calls
/// and casts only, so the node evaluates it at every point anyway) that a tiled plan takes as
/// a node of its own is computed by that plan into a tensor of the node's shape first, then
/// the generic plan evaluates the rest reading those tensors. `None` (nothing emitted) when no
/// subterm qualifies; else the plan line. As for a whole node, on a GPU the generic plan alone
/// runs when `F` exceeds the tiled plans' limit ([`fits_columns`]).
#[allow(clippy::too_many_arguments)]
fn parts_plan(
    cx: &mut Cx<'_>,
    node: &Node,
    slot: usize,
    slots: &[usize],
    d: Def<'_>,
    opts: &ScheduleOptions,
    out: bool,
) -> Result<Option<String>, ScheduleError> {
    let mut found: Vec<(Id, Node, super::attention::Plan)> = Vec::new();
    let mut stack = vec![d.root()];
    while let Some(id) = stack.pop() {
        let op = &d.ops[usize::from(id)];
        let dtype = d.tys[usize::from(id)];
        if id != d.root() && matches!(dtype, DType::F32 | DType::F64) && found.iter().all(|(x, ..)| *x != id) {
            let part = Node {
                name: format!("{}.part{}", node.name, found.len()),
                dtype,
                shape: node.shape.clone(),
                indices: node.indices.clone(),
                role: Role::Local,
                def: IrDef::Input,
            };
            if let Some(p) = super::attention::analyze_at(cx, &part, slots, d, id)
                && super::attention::fits_target(&p, d, opts)
            {
                found.push((id, part, p));
                continue;
            }
        }
        match op {
            Op::Unary { .. } | Op::Binary { .. } | Op::Call { .. } | Op::Cast { .. } => {
                stack.extend(super::lower::children(op));
            }
            _ => {}
        }
    }
    if found.is_empty() {
        return Ok(None);
    }
    let t = cx.tensors[slot].clone();
    // One part under a rest that is never absent (`softplus(Q·Kᵀ)`, `g(p) · (Q·KV)[p, f] /
    // n(p)`) on the CPU: the tiled plan evaluates the node's definition as it writes each
    // element (no tensor of the part, no second pass over it), what the rest does not evaluate
    // per column hoisted per row as the generic plan would (`cpu::write_rows`).
    let partial = cx.partial();
    if let [(id, part, p)] = found.as_slice()
        && opts.target == super::Target::Cpu
        && t.present.is_none()
        && !may_absent(d.ops, d.root(), &partial, true)
        // A part constant along the columns would be hoisted out of the write loop (then the
        // generic pass reading the part's tensor is the better plan).
        && slots.last().is_some_and(|&l| super::attention::uses(d.ops, *id, l))
    {
        let pslot = cx.tensors.len();
        cx.tensors.push(TensorInfo { name: part.name.clone(), ..t.clone() });
        let site = super::attention::Site { node: part, slot: pslot, slots, d, plan: p, epilogue: Some((*id, slot, node)) };
        super::attention::dispatch(cx, &site, opts)?;
        cx.tensors.truncate(slot + 1);
        let kind = match p.norm {
            super::attention::Norm::Softmax => "attention",
            super::attention::Norm::Sum => "weighted sum",
        };
        return Ok(Some(format!(
            "{}: tiled {kind} of a subterm (tiles of {} rows of {} keys), the rest of the definition evaluated as each element is written; {}",
            node.name,
            opts.tile_p,
            opts.tile_m,
            columns_note(node, opts)
        )));
    }
    // The parts' tensors, after the node's own: slots past the cascade's, dropped afterwards.
    let mut parts = Vec::with_capacity(found.len());
    for (id, part, _) in &found {
        let buf = cx.b.buf(&part.name, vty(part.dtype), BufKind::Heap);
        let len = checked_len(cx, &t.shape, &part.name);
        // A tiled plan writes every point of its part.
        cx.b.emit(super::kir::Stmt::Alloc { buf, len, zeroed: false });
        parts.push((*id, cx.tensors.len()));
        cx.tensors.push(TensorInfo { name: part.name.clone(), buf, present: None, ..t.clone() });
    }
    let fits = fits_columns(cx, slot, opts);
    if let Some(fits) = &fits {
        cx.b.open_if(fits.clone());
    }
    let mut kinds = Vec::new();
    for ((_, part, p), &(_, pslot)) in found.iter().zip(&parts) {
        let site = super::attention::Site { node: part, slot: pslot, slots, d, plan: p, epilogue: None };
        super::attention::dispatch(cx, &site, opts)?;
        kinds.push(match p.norm {
            super::attention::Norm::Softmax => "attention",
            super::attention::Norm::Sum => "weighted sum",
        });
    }
    generic_node(cx, node, slot, slots, d, None, out, &parts)?;
    if fits.is_some() {
        cx.b.open_else();
        generic_node(cx, node, slot, slots, d, None, out, &[])?;
        cx.b.close();
    }
    cx.tensors.truncate(slot + 1);
    Ok(Some(format!(
        "{}: {} subterm(s) by the tiled plans first ({}; tiles of {} rows of {} keys), then {}; {}",
        node.name,
        found.len(),
        kinds.join(", "),
        opts.tile_p,
        opts.tile_m,
        generic_plan(node, None),
        columns_note(node, opts)
    )))
}

/// The run-time condition under which a tiled plan runs on `opts.target` (`None`: always):
/// the CPU plans take any number of output columns (in passes of `FMAX`); the GPU plans keep
/// a row of `FMAX` per thread, so wider nodes run the generic plan.
fn fits_columns(cx: &Cx<'_>, slot: usize, opts: &ScheduleOptions) -> Option<Expr> {
    match opts.target {
        super::Target::Cpu => None,
        super::Target::Gpu { .. } => {
            Some(e::bin(K::Le, cx.tensors[slot].shape.last().cloned().unwrap_or(e::i64(0)), e::i64(i64::from(super::attention::FMAX))))
        }
    }
}

/// How a tiled plan handles the output columns, for the plan line.
fn columns_note(node: &Node, opts: &ScheduleOptions) -> String {
    let f = node.shape.last().map_or(String::new(), |s| s.to_string());
    match opts.target {
        super::Target::Cpu => format!("{f} in passes of {}", super::attention::FMAX),
        super::Target::Gpu { .. } => format!("generic when {f} > {}", super::attention::FMAX),
    }
}

/// The generic loop nest of one node; `scan` is the scanned axis of a scan node; `parts` are
/// subterms already computed into tensors of the node's shape (`(op, tensor slot)`).
#[allow(clippy::too_many_arguments)]
fn generic_node(
    cx: &mut Cx<'_>,
    node: &Node,
    slot: usize,
    slots: &[usize],
    d: Def<'_>,
    scan: Option<usize>,
    out: bool,
    parts: &[(Id, usize)],
) -> Result<(), ScheduleError> {
    let t = cx.tensors[slot].clone();
    let k = slots.len();
    let mark = cx.b.mark();
    let last = k.checked_sub(1);
    // Parallel axes: all but the innermost and the scanned (all of them for a reduction per
    // point, `flat_parallel`).
    let flat = scan.is_none() && parts.is_empty() && flat_parallel(cx, node, slot, slots, d);
    let par: Vec<usize> = (0..k).filter(|&a| Some(a) != scan && (flat || Some(a) != last || scan == last)).collect();
    let (mut vars, mut saved) = open_parallel_axes(cx, node, slots, &t.shape, &par, &format!("{}.outer", node.name));
    let open_seq = |cx: &mut Cx<'_>, a: usize, vars: &mut Vec<Option<Expr>>, saved: &mut Vec<_>| {
        let v = cx.b.open_for(&node.indices[a], e::i64(0), t.shape[a].clone());
        vars[a] = Some(e::var(v));
        saved.push((slots[a], cx.bind(slots[a], IdxVar { var: v, range: Some(node.shape[a].clone()) })));
    };
    // A scan along the innermost loop carries its last value in a variable (`ScanCx::carry`).
    let carry = match scan {
        Some(_) if scan == last && t.present.is_none() => Some(cx.b.var(&format!("{}.carry", node.name), vty(node.dtype))),
        _ => None,
    };
    if let Some(a) = scan {
        open_seq(cx, a, &mut vars, &mut saved);
    }
    if scan.is_none()
        && parts.is_empty()
        && cx.cpu
        && let Some(col) = super::columns::column_reduction(cx, node, slot, slots, d)
    {
        cx.column_reduce(node, slot, slots, d, &vars, col)?;
        cx.b.close_to(mark);
        cx.restore(saved);
        return Ok(());
    }
    // What the inner loop evaluates but does not depend on (a row's normaliser, a nested
    // reduction) is evaluated once per point of the outer indices.
    let mut hoisted = cx.subst.len();
    if let Some(l) = last
        && Some(l) != scan
        && !flat
    {
        if scan.is_none() && k > 1 {
            let nonempty = e::bin(K::Gt, t.shape[l].clone(), e::i64(0));
            hoisted = super::hoist::hoist(cx, d, &[d.root()], slots[l], Some(nonempty))?;
        }
        open_seq(cx, l, &mut vars, &mut saved);
    }
    let mut flat = e::i64(0);
    for (a, v) in vars.iter().enumerate() {
        let v = v.clone().ok_or_else(|| cx.internal("an unbound left-hand index"))?;
        flat = e::add(flat, e::mul(v, t.strides[a].clone()));
    }
    let flat = e::var(cx.b.let_("at", flat));
    let before_parts = cx.subst.len();
    for &(id, ps) in parts {
        cx.subst.push((id, e::load(cx.tensors[ps].buf, flat.clone())));
    }
    if let Some(a) = scan {
        let tv = vars[a].clone().ok_or_else(|| cx.internal("an unbound scan index"))?;
        cx.scan = Some(ScanCx { tensor: slot, flat: flat.clone(), stride: t.strides[a].clone(), t: tv, carry });
    }
    let ty = vty(node.dtype);
    if out || (scan.is_some() && carry.is_none()) {
        // Absent points of outputs are 0 (the caller's buffer may hold anything); a scan's
        // look-back may read a point before its presence is known, so clear it too (not one
        // that carries its look-back in a register: it has no presence, every point stores).
        cx.b.store(t.buf, flat.clone(), super::reduce::scalar(ty, Scalar::F(0.0)));
    }
    // The carried value mirrors the store: 0 unless the definition stores this step.
    let step = carry.map(|_| cx.b.let_(&format!("{}.step", node.name), super::reduce::scalar(ty, Scalar::F(0.0))));
    let inner = cx.b.mark();
    let v = cx.lower_as(d, d.root(), ty)?;
    let v = match step {
        Some(sv) => {
            cx.b.set(sv, v);
            e::var(sv)
        }
        None => v,
    };
    cx.b.store(t.buf, flat.clone(), v);
    if let Some(p) = t.present {
        cx.b.store(p, flat, e::bool(true));
    }
    cx.b.close_to(inner);
    if let (Some(c), Some(sv)) = (carry, step) {
        cx.b.set(c, e::var(sv));
    }
    cx.subst.truncate(before_parts);
    cx.scan = None;
    cx.b.close_to(mark);
    cx.subst.truncate(hoisted);
    cx.restore(saved);
    Ok(())
}
