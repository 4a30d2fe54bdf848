//! Checking one kernel: its signature (dims, inputs, outputs), then each statement in order
//! (assignments, scans, multi-field reductions, calls), then completeness (every output
//! defined, every declared index and kernel filter used).
//!
//! Invariant: on return without new errors, the `hir::Kernel` satisfies every invariant
//! listed in `hir`.

use super::cx::{CResult, Cx, Pending, ScanCx, plural, plural_verb};
use super::infer;
use super::types::coerce;
use crate::hir::{self, DType, DimId, DimInfo, Extent, Role, TensorId, TensorInfo};
use crate::semantics::types::{Ty, converts_implicitly, join};
use std::collections::BTreeSet;
use tfm_dsl::Diagnostic;
use tfm_dsl::ast;

impl<'g, 'a> Cx<'g, 'a> {
    /// Declares the kernel's inputs and outputs.
    pub fn signature(&mut self, k: &'a ast::KernelItem) -> (Vec<TensorId>, Vec<TensorId>) {
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        for (pos, d) in k.args.iter().enumerate() {
            if let Some(t) = self.declare_tensor(d, Role::Input(pos)) {
                inputs.push(t);
            }
        }
        // A dim is bound when an input has it on its own (`direct_dims`, which only inputs
        // fill), a product when all its factors are. A dim an input has only inside a product
        // can never be bound.
        for (i, info) in self.dims.clone().iter().enumerate() {
            if info.product.is_none() && !self.direct_dims.contains(&DimId(i as u32)) {
                self.err(
                    Diagnostic::error(
                        format!("dimension '{}' occurs only inside a product", info.name),
                        info.span,
                        "its size cannot be recovered from the product",
                    )
                    .with_hint(format!("give '{}' on its own in some input's shape", info.name)),
                );
            }
        }
        for (pos, d) in k.outputs.iter().enumerate() {
            if let Some(t) = self.declare_tensor(d, Role::Output(pos)) {
                outputs.push(t);
                for (dim, e) in d.dims.iter().zip(&self.tensors[t.index()].shape.clone()) {
                    let Extent::Dim(id) = *e else { continue };
                    // The dim itself, or a product's first factor no input binds.
                    let unbound = match &self.dims[id.index()].product {
                        None => Some(id).filter(|id| !self.direct_dims.contains(id)),
                        Some(p) => p.factors.iter().copied().find(|f| !self.direct_dims.contains(f)),
                    };
                    if let Some(unbound) = unbound {
                        let name = self.dims[unbound.index()].name.clone();
                        self.err(
                            Diagnostic::error(
                                format!("dimension '{name}' of output '{}' is not bound by any input", d.name.name),
                                dim.span(),
                                "unbound dimension",
                            )
                            .with_hint("every output dimension must appear in an input's shape (or be a fixed size)"),
                        );
                    }
                }
            }
        }
        (inputs, outputs)
    }

    fn declare_tensor(&mut self, d: &'a ast::TensorDecl, role: Role) -> Option<TensorId> {
        if let Some(diag) = self.clash(&d.name.name, d.name.span, "redefined here", "first defined here") {
            self.err(diag);
            return None;
        }
        let mut shape = Vec::new();
        for dim in &d.dims {
            let e = self.dim_extent(dim, true)?;
            if let (ast::Dim::Named(_), Extent::Dim(id), Role::Input(_)) = (dim, e, role) {
                self.direct_dims.insert(id);
            }
            shape.push(e);
        }
        Some(self.new_tensor(&d.name.name, d.dtype, shape, role, d.span, matches!(role, Role::Input(_))))
    }

    /// The extent of a written dim (a name, a literal or a product of them); `None` after an
    /// error. A name not seen before is declared when `may_declare` (tensor declarations), else
    /// it is an error (`index` declarations). A product of literals is a fixed size, one name
    /// times 1 is that dim, anything else a product dim (one per distinct product).
    pub fn dim_extent(&mut self, dim: &ast::Dim, may_declare: bool) -> Option<Extent> {
        match dim {
            ast::Dim::Fixed(n, span) => {
                if *n < 0 {
                    self.err(Diagnostic::error("dimension size out of range", *span, "too large"));
                    return None;
                }
                Some(Extent::Const(*n))
            }
            ast::Dim::Named(id) => self.named_dim(id, may_declare).map(Extent::Dim),
            ast::Dim::Product(factors, span) => {
                let mut scale: i64 = 1;
                let mut ids = Vec::new();
                for f in factors {
                    match self.dim_extent(f, may_declare)? {
                        Extent::Const(n) => match scale.checked_mul(n) {
                            Some(x) => scale = x,
                            None => {
                                self.err(Diagnostic::error("dimension size out of range", *span, "the product is too large"));
                                return None;
                            }
                        },
                        Extent::Dim(d) => ids.push(d),
                    }
                }
                if ids.is_empty() {
                    return Some(Extent::Const(scale));
                }
                if ids.len() == 1 && scale == 1 {
                    return Some(Extent::Dim(ids[0]));
                }
                let product = hir::DimProduct { factors: ids, scale };
                if let Some(i) = self.dims.iter().position(|d| d.product.as_ref().is_some_and(|p| p.same_as(&product))) {
                    return Some(Extent::Dim(DimId(i as u32)));
                }
                let name = factors.iter().map(|f| tfm_dsl::print::dim_string(f).replace(' ', "")).collect::<Vec<_>>().join("*");
                let x = DimId(self.dims.len() as u32);
                self.dims.push(DimInfo { name: name.clone(), span: *span, product: Some(product) });
                self.dim_by_name.insert(name, x);
                Some(Extent::Dim(x))
            }
        }
    }

    /// A named dim: an existing one, or (when `may_declare`) a new one.
    fn named_dim(&mut self, id: &ast::Ident, may_declare: bool) -> Option<DimId> {
        if let Some(x) = self.dim_by_name.get(&id.name) {
            return Some(*x);
        }
        if !may_declare {
            let dims: Vec<&str> = self.dims.iter().filter(|d| d.product.is_none()).map(|d| d.name.as_str()).collect();
            self.err(
                Diagnostic::error(format!("unknown dimension '{}'", id.name), id.span, "not a dimension of this kernel")
                    .with_hint(format!("dimensions: {}", if dims.is_empty() { "none".to_string() } else { dims.join(", ") })),
            );
            return None;
        }
        if !id.name.starts_with(|c: char| c.is_ascii_uppercase()) {
            self.err(
                Diagnostic::error(format!("dimension '{}' must start with an upper-case letter", id.name), id.span, "lower-case dimension")
                    .with_hint(format!("lower-case names are indices; name the dimension `{}`", capitalize(&id.name))),
            );
            return None;
        }
        if let Some(diag) = self.clash(&id.name, id.span, "used as a dimension here", "defined here") {
            self.err(diag);
            return None;
        }
        let x = DimId(self.dims.len() as u32);
        self.dims.push(DimInfo { name: id.name.clone(), span: id.span, product: None });
        self.dim_by_name.insert(id.name.clone(), x);
        Some(x)
    }

    /// Registers a tensor.
    pub fn new_tensor(&mut self, name: &str, dtype: DType, shape: Vec<Extent>, role: Role, span: tfm_dsl::Span, defined: bool) -> TensorId {
        let id = TensorId(self.tensors.len() as u32);
        self.tensors.push(TensorInfo { name: name.to_string(), dtype, shape, role, span });
        self.tensor_by_name.insert(name.to_string(), id);
        self.defined.push(defined);
        self.read.push(false);
        id
    }

    /// Checks one assignment statement.
    pub fn assign(&mut self, a: &'a ast::Assign, kernel_filters: &[&'a ast::Expr]) -> CResult<hir::Assign> {
        let first = &a.lhs[0];
        // Left-hand indices: distinct names, identical across targets.
        for (i, x) in first.indices.iter().enumerate() {
            if first.indices[..i].iter().any(|y| y.name == x.name) {
                return Err(self.err(
                    Diagnostic::error(format!("index '{}' appears twice on the left-hand side", x.name), x.span, "repeated index")
                        .with_hint("a diagonal is read, not written: `D[i] = A[i, i]`"),
                ));
            }
        }
        for l in &a.lhs[1..] {
            let same = l.indices.len() == first.indices.len() && l.indices.iter().zip(&first.indices).all(|(x, y)| x.name == y.name);
            if !same {
                return Err(self.err(
                    Diagnostic::error("every tensor defined together must have the same indices", l.span, "different indices")
                        .with_label(first.span, "first target"),
                ));
            }
        }
        let mut lhs = Vec::new();
        for x in &first.indices {
            lhs.push(self.index_id(x)?);
        }
        // Targets: new locals, or outputs not yet defined.
        let mut targets = Vec::new();
        for l in &a.lhs {
            targets.push(self.target(l, &lhs)?);
        }
        // Filters: statement-level must bind only this statement's indices; kernel-level
        // conjuncts apply where all their indices are in this statement's iteration space.
        let mut space: BTreeSet<String> = first.indices.iter().map(|i| i.name.clone()).collect();
        match &a.rhs {
            ast::Rhs::Expr(e) => infer::reduced_names(e, &mut space),
            ast::Rhs::Scan { body, .. } => infer::reduced_names(body, &mut space),
        }
        self.pending.clear();
        if let Some(f) = &a.filter {
            for c in conjuncts(f) {
                let mut idx = BTreeSet::new();
                infer::index_names(self, c, &mut idx);
                if let Some(missing) = idx.iter().find(|n| !space.contains(*n)) {
                    return Err(self.err(
                        Diagnostic::error(
                            format!("filter uses index '{missing}', which this statement does not bind"),
                            c.span,
                            "unbound index",
                        )
                        .with_hint(format!("this statement's indices: {}", space.iter().cloned().collect::<Vec<_>>().join(", "))),
                    ));
                }
                self.pending.push(Pending { ast: c, indices: idx, from_kernel: false, used: false, active: false });
            }
        }
        for c in kernel_filters {
            let mut idx = BTreeSet::new();
            infer::index_names(self, c, &mut idx);
            if !idx.is_empty() && idx.iter().all(|n| space.contains(n)) {
                self.pending.push(Pending { ast: c, indices: idx, from_kernel: true, used: false, active: false });
            }
        }
        self.bound = lhs.clone();
        let r = self.assign_rhs(a, &lhs, &targets);
        self.bound.clear();
        let (filters, rhs) = r?;
        for t in &targets {
            self.defined[t.index()] = true;
        }
        Ok(hir::Assign { targets, indices: lhs, filters, rhs, span: a.span })
    }

    fn assign_rhs(&mut self, a: &'a ast::Assign, lhs: &[hir::IndexId], targets: &[TensorId]) -> CResult<(Vec<hir::Expr>, hir::Rhs)> {
        let (filters, _) = self.attach_pending()?;
        let is_scan = matches!(a.rhs, ast::Rhs::Scan { .. });
        if is_scan && let Some(f) = filters.first() {
            let origin = if self.pending.iter().any(|p| p.from_kernel && p.used) {
                "this kernel filter restricts the scan"
            } else {
                "restricts the scan"
            };
            return Err(self.err(
                Diagnostic::error("a filter cannot restrict a scan statement", f.span, origin)
                    .with_label(a.lhs[0].span, "defined by a scan")
                    .with_hint("filter the inputs of the recurrence, or a statement that reads its result"),
            ));
        }
        let rhs = match &a.rhs {
            ast::Rhs::Expr(e) if targets.len() > 1 => {
                let ast::ExprKind::Reduce { op, indices, filter, body } = &e.kind else {
                    return Err(self.err(
                        Diagnostic::error(
                            format!("{} tensors are defined but the right-hand side gives one value", targets.len()),
                            e.span,
                            "one value",
                        )
                        .with_hint("several tensors are defined together only by a user reduction with as many fields"),
                    ));
                };
                let (r, _) = self.reduce(op, indices, filter.as_deref(), body, e.span)?;
                if r.body.len() != targets.len() {
                    return Err(self.err(Diagnostic::error(
                        format!("{} tensors are defined but reduction '{}' gives {}", targets.len(), op.name, r.body.len()),
                        e.span,
                        "field count mismatch",
                    )));
                }
                for (t, b) in targets.iter().zip(&r.body) {
                    self.settle_dtype(*t, Ty::strong(b.dtype), b.span)?;
                }
                hir::Rhs::Tuple(r)
            }
            ast::Rhs::Expr(e) => {
                let (x, t) = self.expr(e)?;
                let dt = self.settle_dtype(targets[0], t, e.span)?;
                hir::Rhs::Expr(coerce(x, dt))
            }
            ast::Rhs::Scan { index, init, body, span } => self.scan(index, init, body, *span, lhs, targets[0])?,
        };
        Ok((filters, rhs))
    }

    /// Fixes a local's dtype from its value, or checks an output's value converts.
    fn settle_dtype(&mut self, t: TensorId, v: Ty, span: tfm_dsl::Span) -> CResult<DType> {
        let info = &self.tensors[t.index()];
        if info.role == Role::Local {
            let dt = if v.weak && v.dtype == DType::F32 { DType::F32 } else { v.dtype };
            self.tensors[t.index()].dtype = dt;
            return Ok(dt);
        }
        if !converts_implicitly(v, info.dtype) {
            let (name, want) = (info.name.clone(), info.dtype);
            return Err(self.err(
                Diagnostic::error(
                    format!("mismatched types: output '{name}' is {want}, found {}", v.dtype),
                    span,
                    format!("this is {}", v.dtype),
                )
                .with_label(info.span, format!("declared {want} here"))
                .with_hint(format!("convert explicitly: `{want}(...)`")),
            ));
        }
        Ok(info.dtype)
    }

    fn target(&mut self, l: &'a ast::Lhs, lhs: &[hir::IndexId]) -> CResult<TensorId> {
        let name = &l.tensor.name;
        match self.tensor_by_name.get(name).copied() {
            Some(t) => {
                let info = self.tensors[t.index()].clone();
                match info.role {
                    Role::Input(_) => Err(self.err(
                        Diagnostic::error(format!("cannot assign to input '{name}'"), l.tensor.span, "an input")
                            .with_label(info.span, "declared as an input here")
                            .with_hint("define a new tensor instead"),
                    )),
                    _ if self.defined[t.index()] => Err(self.err(
                        Diagnostic::error(format!("tensor '{name}' is defined twice"), l.tensor.span, "second definition")
                            .with_label(info.span, "first defined here")
                            .with_hint("every tensor is defined once; give the new one another name"),
                    )),
                    _ => {
                        if info.shape.len() != lhs.len() {
                            return Err(self.err(
                                Diagnostic::error(
                                    format!(
                                        "output '{name}' has {} but {} given",
                                        plural(info.shape.len(), "dimension"),
                                        plural_verb(lhs.len(), "index")
                                    ),
                                    l.span,
                                    format!("expected {} indices", info.shape.len()),
                                )
                                .with_label(info.span, "declared here"),
                            ));
                        }
                        for (pos, (i, want)) in lhs.iter().zip(&info.shape).enumerate() {
                            let have = self.index_extent(*i);
                            if have != *want {
                                let (iname, hn, wn) =
                                    (self.indices[i.index()].name.clone(), self.extent_name(have), self.extent_name(*want));
                                return Err(self.err(
                                    Diagnostic::error(
                                        format!("index '{iname}' ranges over {hn} but dimension {pos} of '{name}' is {wn}"),
                                        l.indices[pos].span,
                                        format!("expected an index over {wn}"),
                                    )
                                    .with_label(info.span, "declared here"),
                                ));
                            }
                        }
                        Ok(t)
                    }
                }
            }
            None => {
                if let Some((what, prev)) = self.meaning_of(name) {
                    let mut d = Diagnostic::error(format!("'{name}' is {what}, not a tensor"), l.tensor.span, "cannot be defined");
                    if let Some(s) = prev {
                        d = d.with_label(s, "defined here");
                    }
                    return Err(self.err(d));
                }
                let shape = lhs.iter().map(|i| self.index_extent(*i)).collect();
                // The dtype is settled from the right-hand side.
                let t = self.new_tensor(name, DType::F32, shape, Role::Local, l.span, false);
                Ok(t)
            }
        }
    }

    fn scan(
        &mut self,
        index: &'a ast::Ident,
        init: &'a ast::Expr,
        body: &'a ast::Expr,
        span: tfm_dsl::Span,
        lhs: &[hir::IndexId],
        target: TensorId,
    ) -> CResult<hir::Rhs> {
        let Some(idx) = lhs.iter().copied().find(|i| self.indices[i.index()].name == index.name) else {
            return Err(self.err(
                Diagnostic::error(format!("scan index '{}' is not on the left-hand side", index.name), index.span, "not a left-hand index")
                    .with_hint("a recurrence runs along one of the indices it defines"),
            ));
        };
        let mut init_names = BTreeSet::new();
        infer::index_names(self, init, &mut init_names);
        if init_names.contains(&index.name) {
            return Err(self.err(
                Diagnostic::error(
                    format!("the init of a scan cannot use the scanned index '{}'", index.name),
                    init.span,
                    "uses the scanned index",
                )
                .with_hint(format!(
                    "init is the value read before the start (`{} - c < 0`); it may use the other left-hand indices",
                    index.name
                )),
            ));
        }
        // `init` is evaluated with the other left-hand indices bound, not the scanned one.
        let saved = std::mem::take(&mut self.bound);
        self.bound = lhs.iter().copied().filter(|i| *i != idx).collect();
        let init_r = self.expr(init);
        self.bound = saved;
        let (init_x, init_t) = init_r?;
        let info = self.tensors[target.index()].clone();
        let mut dt = if info.role == Role::Local { init_t.dtype } else { info.dtype };
        // Type the body assuming look-back reads have `dt`; widen once if the body is wider.
        for _ in 0..2 {
            self.scan = Some(ScanCx { target, name: info.name.clone(), index: idx, lhs: lhs.to_vec(), dtype: dt });
            let r = self.expr(body);
            self.scan = None;
            let (bx, bt) = r?;
            let settled = if info.role == Role::Local {
                let want = join(Ty::strong(dt), Ty { dtype: bt.dtype, weak: bt.weak }).map_or(dt, |t| t.dtype);
                if want != dt {
                    dt = want;
                    continue;
                }
                self.tensors[target.index()].dtype = dt;
                dt
            } else {
                self.settle_dtype(target, bt, body.span)?
            };
            if !converts_implicitly(init_t, settled) {
                return Err(self.err(
                    Diagnostic::error(
                        format!("mismatched types: the scan is {settled}, its init is {}", init_t.dtype),
                        init.span,
                        "init type",
                    )
                    .with_hint(format!("convert explicitly: `{settled}(...)`")),
                ));
            }
            return Ok(hir::Rhs::Scan { index: idx, init: coerce(init_x, settled), body: coerce(bx, settled) });
        }
        Err(self.err(
            Diagnostic::error("cannot settle the type of this recurrence", span, "ambiguous type")
                .with_hint("convert the body explicitly, e.g. `f64(...)`"),
        ))
    }

    /// Checks a kernel call statement.
    pub fn call(&mut self, c: &'a ast::Call, callee: &hir::Kernel, callee_id: hir::KernelId) -> CResult<hir::Call> {
        if c.args.len() != callee.inputs.len() {
            return Err(self.err(
                Diagnostic::error(
                    format!(
                        "kernel '{}' takes {} but {} given",
                        callee.name,
                        plural(callee.inputs.len(), "tensor"),
                        plural_verb(c.args.len(), "argument")
                    ),
                    c.span,
                    "wrong number of arguments",
                )
                .with_label(callee.name_span, "defined here"),
            ));
        }
        if c.outputs.len() != callee.outputs.len() {
            return Err(self.err(
                Diagnostic::error(
                    format!(
                        "kernel '{}' returns {} but {} given",
                        callee.name,
                        plural(callee.outputs.len(), "tensor"),
                        plural_verb(c.outputs.len(), "name")
                    ),
                    c.span,
                    "wrong number of results",
                )
                .with_label(callee.name_span, "defined here"),
            ));
        }
        // A product dim's size is derived at the kernel's entry; the inliner unifies the
        // callee's dims with the caller's extents one by one and has no product of extents.
        if let Some(d) = callee.dims.iter().find(|d| d.product.is_some()) {
            return Err(self.err(
                Diagnostic::error(
                    format!("kernel '{}' has the product dimension '{}' and cannot be called from another kernel", callee.name, d.name),
                    c.callee.span,
                    "called here",
                )
                .with_label(d.span, "product dimension")
                .with_hint("build and call it on its own (from Rust, C or Python), or write the callee's dims as names"),
            ));
        }
        // Unify the callee's dims with the argument shapes.
        let mut map: Vec<Option<Extent>> = vec![None; callee.dims.len()];
        let mut args = Vec::new();
        for (a, pid) in c.args.iter().zip(&callee.inputs) {
            let Some(t) = self.tensor_by_name.get(&a.name).copied() else {
                return Err(self.unknown_arg(a));
            };
            let (rx, _) = self.read(t, Vec::new(), a.span)?;
            drop(rx);
            let info = self.tensors[t.index()].clone();
            let p = &callee.tensors[pid.index()];
            if info.dtype != p.dtype || info.shape.len() != p.shape.len() {
                return Err(self.err(
                    Diagnostic::error(
                        format!(
                            "argument '{}' is {}{} but '{}' expects `{}: {}{}`",
                            a.name,
                            info.dtype,
                            self.shape_text(&info.shape),
                            callee.name,
                            p.name,
                            p.dtype,
                            callee_shape(callee, &p.shape)
                        ),
                        a.span,
                        "mismatched argument",
                    )
                    .with_label(p.span, "parameter declared here"),
                ));
            }
            for (pos, (have, want)) in info.shape.iter().zip(&p.shape).enumerate() {
                let ok = match want {
                    Extent::Const(n) => *have == Extent::Const(*n),
                    Extent::Dim(d) => match map[d.index()] {
                        None => {
                            map[d.index()] = Some(*have);
                            true
                        }
                        Some(prev) => prev == *have,
                    },
                };
                if !ok {
                    let wn = match want {
                        Extent::Dim(d) => callee.dims[d.index()].name.clone(),
                        Extent::Const(n) => n.to_string(),
                    };
                    let bound = match want {
                        Extent::Dim(d) => map[d.index()].map(|e| self.extent_name(e)).unwrap_or_default(),
                        Extent::Const(n) => n.to_string(),
                    };
                    return Err(self.err(
                        Diagnostic::error(
                            format!(
                                "dimension {pos} of argument '{}' is {}, but '{}' needs it to be {wn} = {bound}",
                                a.name,
                                self.extent_name(*have),
                                callee.name
                            ),
                            a.span,
                            "shape mismatch",
                        )
                        .with_label(p.span, "parameter declared here"),
                    ));
                }
            }
            args.push(t);
        }
        let mut outputs = Vec::new();
        for (o, pid) in c.outputs.iter().zip(&callee.outputs) {
            let p = &callee.tensors[pid.index()];
            // Callee outputs only use dims bound by its inputs (checked), so the map is total.
            let shape: Vec<Extent> = p
                .shape
                .iter()
                .map(|e| match e {
                    Extent::Const(n) => Extent::Const(*n),
                    Extent::Dim(d) => map[d.index()].unwrap_or(Extent::Const(0)),
                })
                .collect();
            let t = match self.tensor_by_name.get(&o.name).copied() {
                Some(t)
                    if self.tensors[t.index()].role != Role::Input(0)
                        && matches!(self.tensors[t.index()].role, Role::Output(_))
                        && !self.defined[t.index()] =>
                {
                    let info = self.tensors[t.index()].clone();
                    if info.dtype != p.dtype || info.shape != shape {
                        return Err(self.err(
                            Diagnostic::error(
                                format!(
                                    "output '{}' is {}{} but '{}' returns {}{}",
                                    o.name,
                                    info.dtype,
                                    self.shape_text(&info.shape),
                                    callee.name,
                                    p.dtype,
                                    self.shape_text(&shape)
                                ),
                                o.span,
                                "mismatched result",
                            )
                            .with_label(info.span, "declared here"),
                        ));
                    }
                    t
                }
                Some(t) => {
                    let info = self.tensors[t.index()].clone();
                    return Err(self.err(
                        Diagnostic::error(format!("tensor '{}' is defined twice", o.name), o.span, "second definition")
                            .with_label(info.span, "first defined here"),
                    ));
                }
                None => {
                    if let Some((what, prev)) = self.meaning_of(&o.name) {
                        let mut d = Diagnostic::error(format!("'{}' is {what}, not a tensor", o.name), o.span, "cannot be defined");
                        if let Some(s) = prev {
                            d = d.with_label(s, "defined here");
                        }
                        return Err(self.err(d));
                    }
                    self.new_tensor(&o.name, p.dtype, shape, Role::Local, o.span, false)
                }
            };
            self.defined[t.index()] = true;
            outputs.push(t);
        }
        let mut params = Vec::new();
        for (name, value) in &c.params {
            let Some((pid, p)) = self.g.param(&name.name) else {
                return Err(self.err(Diagnostic::error(format!("unknown param '{}'", name.name), name.span, "not a param")));
            };
            if !callee.params_used.contains(&pid) {
                return Err(self.err(
                    Diagnostic::error(format!("kernel '{}' does not use param '{}'", callee.name, name.name), name.span, "has no effect")
                        .with_label(callee.name_span, "kernel defined here"),
                ));
            }
            let dt = p.dtype;
            self.bound.clear();
            let v = self.expr_as(value, dt, "the param")?;
            params.push((pid, v));
        }
        for p in &callee.params_used {
            self.params_used.insert(*p);
        }
        Ok(hir::Call { callee: callee_id, args, outputs, params, span: c.span })
    }

    fn unknown_arg(&mut self, a: &ast::Ident) -> super::cx::Reported {
        let known: Vec<String> = {
            let mut v: Vec<String> = self.tensor_by_name.keys().cloned().collect();
            v.sort();
            v
        };
        self.err(
            Diagnostic::error(format!("unknown tensor '{}'", a.name), a.span, "not defined in this kernel")
                .with_hint(format!("tensors in scope: {}", known.join(", "))),
        )
    }
}

fn callee_shape(k: &hir::Kernel, shape: &[Extent]) -> String {
    let parts: Vec<String> = shape
        .iter()
        .map(|e| match e {
            Extent::Dim(d) => k.dims[d.index()].name.clone(),
            Extent::Const(n) => n.to_string(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Splits `a && b && c` into its conjuncts.
pub fn conjuncts(e: &ast::Expr) -> Vec<&ast::Expr> {
    match &e.kind {
        ast::ExprKind::Binary(ast::BinOp::And, a, b) => {
            let mut v = conjuncts(a);
            v.extend(conjuncts(b));
            v
        }
        _ => vec![e],
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.to_string();
    if let Some(f) = c.get_mut(0..1) {
        f.make_ascii_uppercase();
    }
    c
}
