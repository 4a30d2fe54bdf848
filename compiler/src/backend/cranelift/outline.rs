//! `Parallel` loops: the body is outlined into its own function and run through
//! `void tfmc_parallel_for(void (*body)(void *ctx, int64_t lo, int64_t hi), void *ctx, int64_t n)`
//! (the LLVM backend's model, `backend/llvm/outline.rs`, in one function instead of two).
//!
//! For the `k`-th parallel loop of export `s`:
//! - the kernel fills `ctx`, a stack array of 8-byte slots: slot 0 the address of the kernel's
//!   `i32` error slot (zeroed before the call), then one pointer per captured buffer memory
//!   (argument index or heap buffer, [`MemKey`] order), then the value of every variable the
//!   body mentions ([`Uses`], minus the loop variable) that an iteration may read before it
//!   writes it ([`live_in`], a conservative must-write analysis: the schedule's temporaries,
//!   written before they are read, are not copied — copying them would be needless, and
//!   reading them in the kernel, where they are unset, costs SSA construction time). After the
//!   call a non-zero error slot becomes the kernel's return code (through its exit block, which
//!   frees the heap buffers);
//! - `s.par{k}(ctx, lo, hi)` (local to the module) loads the slots once, returns at once if
//!   `*err` is already set (a chunk started after a failure does nothing), then runs iterations
//!   `lo..hi`, each starting with every captured variable reset to its captured value (writes
//!   are private to the iteration) and the loop variable set. Stack buffers are stack slots of
//!   the body function (one per call; contents unspecified between iterations). A `Fail` does
//!   `atomic_cas(err, 0, code)` (first failure wins) and returns.

use std::collections::{BTreeSet, HashSet};

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{Function, InstBuilder, MemFlagsData, UserFuncName, types};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{Linkage, Module};

use super::func::{BufBase, FnKind, Fx, Job, MemKey, PTR, clif_ty, mem_key};
use super::jit::Cx;
use super::{CraneliftError, Sink};
use crate::schedule::kir::{Block, Buf, BufKind, Expr, Func, Stmt, Var};
use crate::schedule::uses::Uses;

impl<'k> Fx<'_, 'k> {
    /// Lowers `Parallel { var, n, body }` in the kernel function (see the module docs).
    pub(super) fn parallel(&mut self, var: Var, n: &Expr, body: &'k Block) -> Result<(), CraneliftError> {
        let FnKind::Kernel { exit, err } = self.kind else {
            return Err(self.internal("a parallel loop outside the kernel function"));
        };
        let mut uses = Uses::default();
        uses.block(body);
        uses.vars.remove(&var);
        let live = live_in(var, body);
        uses.vars.retain(|v| live.contains(v));
        let f = self.f;
        let keys: BTreeSet<MemKey> = uses
            .bufs
            .iter()
            .filter(|&&b| !matches!(f.buf(b).kind, BufKind::Stack(_) | BufKind::Shared(_)))
            .map(|&b| mem_key(f, b))
            .collect();
        let keys: Vec<MemKey> = keys.into_iter().collect();
        let vars: Vec<Var> = uses.vars.iter().copied().collect();
        let n = self.expr(n)?;

        let name = format!("{}.par{}", self.symbol, self.jobs.len());
        let sig = self.cx.signature(&[PTR, types::I64, types::I64], None);
        let id = self.cx.declare(&name, Linkage::Local, &sig)?;

        let slots = 1 + keys.len() + vars.len();
        let ctx = self.stack_slot(8 * slots as u64, "parallel context")?;
        let err_addr = self.b.ins().stack_addr(PTR, err, 0);
        self.b.ins().stack_store(PTR, err_addr, ctx, 0);
        for (j, key) in keys.iter().enumerate() {
            // Some buffer has this memory (keys come from the body's uses).
            let b = (0..f.bufs.len() as u32)
                .map(Buf)
                .find(|&b| mem_key(f, b) == *key)
                .ok_or_else(|| self.internal("a captured memory without a buffer"))?;
            let p = self.base(b)?;
            self.b.ins().stack_store(PTR, p, ctx, 8 * (1 + j) as i32);
        }
        for (j, &v) in vars.iter().enumerate() {
            let x = self.use_var(v)?;
            self.b.ins().stack_store(PTR, x, ctx, 8 * (1 + keys.len() + j) as i32);
        }
        let zero = self.iconst(types::I32, 0);
        self.b.ins().stack_store(PTR, zero, err, 0);
        let fref = self.func_ref(id);
        let body_ptr = self.b.ins().func_addr(PTR, fref);
        let ctx_ptr = self.b.ins().stack_addr(PTR, ctx, 0);
        self.call("tfmc_parallel_for", &[PTR, PTR, types::I64], None, &[body_ptr, ctx_ptr, n])?;
        let e = self.b.ins().stack_load(PTR, types::I32, err, 0);
        let failed = self.b.ins().icmp_imm_s(IntCC::NotEqual, e, 0);
        let ok = self.block();
        let bad = self.block();
        self.b.ins().brif(failed, bad, &[], ok, &[]);
        self.b.seal_block(bad);
        self.b.seal_block(ok);
        self.b.switch_to_block(bad);
        self.b.set_cold_block(bad);
        self.b.ins().jump(exit, &[e.into()]);
        self.b.switch_to_block(ok);
        self.jobs.push(Job { id, var, body, keys, vars });
        Ok(())
    }
}

/// The variables an iteration of a parallel body (loop variable `var`) may read before writing
/// them: a read counts unless every path from the iteration's start to it writes the variable
/// (writes inside a loop or one branch of an `If` do not count after it).
pub(super) fn live_in(var: Var, body: &Block) -> BTreeSet<Var> {
    fn reads(e: &Expr, written: &HashSet<Var>, live: &mut BTreeSet<Var>) {
        let mut u = Uses::default();
        u.expr(e);
        live.extend(u.vars.into_iter().filter(|v| !written.contains(v)));
    }
    fn walk(b: &Block, written: &mut HashSet<Var>, live: &mut BTreeSet<Var>) {
        for s in b {
            match s {
                Stmt::Set { var, value } => {
                    reads(value, written, live);
                    written.insert(*var);
                }
                Stmt::Store { index, value, .. } => {
                    reads(index, written, live);
                    reads(value, written, live);
                }
                Stmt::For { var, lo, hi, body } => {
                    reads(lo, written, live);
                    reads(hi, written, live);
                    let mut w = written.clone();
                    w.insert(*var);
                    walk(body, &mut w, live);
                }
                Stmt::Parallel { var, n, body } | Stmt::BlockParallel { var, n, body, .. } => {
                    reads(n, written, live);
                    let mut w = written.clone();
                    w.insert(*var);
                    walk(body, &mut w, live);
                }
                Stmt::If { cond, then, els } => {
                    reads(cond, written, live);
                    let mut a = written.clone();
                    walk(then, &mut a, live);
                    let mut b = written.clone();
                    walk(els, &mut b, live);
                    *written = a.intersection(&b).copied().collect();
                }
                Stmt::Alloc { len, .. } => reads(len, written, live),
                Stmt::Mma(m) => {
                    m.operands().for_each(|e| reads(e, written, live));
                    written.extend(m.d.iter().copied());
                }
                Stmt::TileProduct(t) => t.exprs().for_each(|e| reads(e, written, live)),
                Stmt::Barrier | Stmt::Fail { .. } => {}
            }
        }
    }
    let mut live = BTreeSet::new();
    walk(body, &mut HashSet::from([var]), &mut live);
    live
}

/// Builds the outlined function of `job` (a parallel loop of kernel `f`, exported as
/// `symbol`) and hands it to `sink`.
pub(super) fn outline_body<'k>(
    cx: &mut Cx,
    f: &'k Func,
    symbol: &'k str,
    job: &Job<'k>,
    sink: &mut Sink<'_>,
) -> Result<(), CraneliftError> {
    let sig = cx.signature(&[PTR, types::I64, types::I64], None);
    let mut func = Function::with_name_signature(UserFuncName::user(0, job.id.as_u32()), sig);
    let mut fctx = FunctionBuilderContext::new();
    let cfg = cx.module.target_config();
    {
        let mut b = FunctionBuilder::new(&mut func, &mut fctx);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let p = b.block_params(entry).to_vec();
        let (ctx, lo, hi) = (p[0], p[1], p[2]);
        let exit = b.create_block();
        let slot = MemFlagsData::trusted();
        let err = b.ins().load(PTR, slot, ctx, 0);
        let mut fx = Fx::new(b, cx, f, symbol, FnKind::Body { err, exit });
        for (j, key) in job.keys.iter().enumerate() {
            let ptr = fx.b.ins().load(PTR, slot, ctx, 8 * (1 + j) as i32);
            for (i, d) in f.bufs.iter().enumerate() {
                let buf = Buf(i as u32);
                if !matches!(d.kind, BufKind::Stack(_) | BufKind::Shared(_)) && mem_key(f, buf) == *key {
                    fx.bufs.insert(buf, BufBase::Ptr(ptr));
                }
            }
        }
        let mut captured = Vec::with_capacity(job.vars.len());
        for (j, &v) in job.vars.iter().enumerate() {
            let ty = clif_ty(f.var(v).ty);
            let off = 8 * (1 + job.keys.len() + j) as i32;
            captured.push((v, fx.b.ins().load(ty, slot, ctx, off)));
        }
        // A chunk started after a failure does nothing.
        let e = fx.b.ins().atomic_load(types::I32, MemFlagsData::trusted(), err);
        let failed = fx.b.ins().icmp_imm_s(IntCC::NotEqual, e, 0);
        let go = fx.block();
        fx.b.ins().brif(failed, exit, &[], go, &[]);
        fx.b.seal_block(go);
        fx.b.switch_to_block(go);
        fx.counted_loop(lo, hi, 1, |fx, i| {
            for &(v, x) in &captured {
                fx.def_var(v, x)?;
            }
            fx.def_var(job.var, i)?;
            fx.stmts(job.body)
        })?;
        fx.b.ins().jump(exit, &[]);
        fx.b.seal_block(exit);
        fx.b.switch_to_block(exit);
        fx.b.ins().return_(&[]);
        let Fx { b, .. } = fx;
        b.finalize(cfg);
    }
    sink(cx, &f.name, job.id, func)
}
