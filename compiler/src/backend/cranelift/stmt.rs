//! Statements → control flow (see [`super::func`] for the builder's invariants).
//!
//! Owns: `For` (a hidden counter drives the loop, so writes to the loop variable in the body
//! cannot change the iteration count; `hi` is evaluated once; the loop is rotated: one guard,
//! then the body with the test at its bottom; a qualifying innermost loop goes to
//! [`super::vloop`] instead), `If`, `Set`, `Store`, `Alloc` (free any previous allocation of
//! the buffer, then an overflow-checked `tfmc_calloc(max(len, 1), size)` (`tfmc_malloc` when the buffer need not be zeroed) (the runtime's heap, `tfmc_runtime::heap`); a negative length, a byte
//! size above `i64::MAX` or a NULL result fail with `OutOfMemory` at site 0, exactly as the
//! LLVM backend) and `Fail` (kernel: jump to the exit block with the code, which frees the heap
//! buffers and returns it; parallel body: `atomic_cas(err, 0, code)` so the first failure wins,
//! then return). `Parallel` is in [`super::outline`].

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};

use super::CraneliftError;
use super::func::{BufBase, FnKind, Fx, PTR};
use super::vectorize;
use crate::schedule::kir::{Block, Buf, Const, Expr, FailKind, Stmt, fail_code};

impl<'k> Fx<'_, 'k> {
    /// Lowers every statement of `block`.
    pub(super) fn stmts(&mut self, block: &'k Block) -> Result<(), CraneliftError> {
        block.iter().try_for_each(|s| self.stmt(s))
    }

    fn stmt(&mut self, s: &'k Stmt) -> Result<(), CraneliftError> {
        match s {
            Stmt::Set { var, value } => {
                let v = self.expr(value)?;
                self.def_var(*var, v)
            }
            Stmt::Store { buf, index, value } => {
                let i = self.expr(index)?;
                let v = self.expr(value)?;
                self.store_elem(*buf, i, v)
            }
            Stmt::For { var, lo, hi, body } => {
                let known = match (lo, hi) {
                    (Expr::Const(Const::I64(a)), Expr::Const(Const::I64(b))) => b.checked_sub(*a),
                    _ => None,
                };
                let lo = self.expr(lo)?;
                let hi = self.expr(hi)?;
                if self.cx.simd
                    && let Some(plan) = vectorize::plan(self.f, *var, body)
                {
                    return self.vector_loop(*var, (lo, hi), known, body, &plan);
                }
                self.counted_loop(lo, hi, 1, |fx, i| {
                    fx.def_var(*var, i)?;
                    fx.stmts(body)
                })
            }
            Stmt::Parallel { var, n, body } => self.parallel(*var, n, body),
            Stmt::If { cond, then, els } => {
                let c = self.expr(cond)?;
                let bt = self.block();
                let merge = self.block();
                let be = if els.is_empty() { merge } else { self.block() };
                self.b.ins().brif(c, bt, &[], be, &[]);
                self.b.seal_block(bt);
                if be != merge {
                    self.b.seal_block(be);
                }
                self.b.switch_to_block(bt);
                self.stmts(then)?;
                self.b.ins().jump(merge, &[]);
                if be != merge {
                    self.b.switch_to_block(be);
                    self.stmts(els)?;
                    self.b.ins().jump(merge, &[]);
                }
                self.b.seal_block(merge);
                self.b.switch_to_block(merge);
                Ok(())
            }
            Stmt::Alloc { buf, len, zeroed } => {
                let len = self.expr(len)?;
                self.alloc(*buf, len, *zeroed)
            }
            // GPU dialect only: `validate::check` rejects them before any CPU backend runs.
            Stmt::BlockParallel { .. } => Err(self.gpu_dialect("a block parallel")),
            Stmt::Barrier => Err(self.gpu_dialect("a barrier")),
            Stmt::Mma(_) => Err(self.gpu_dialect("a tensor-core product")),
            // `super::expand_exports` replaced every tile product by its loops.
            Stmt::TileProduct(_) => Err(CraneliftError::InvalidKir {
                kernel: self.f.name.clone(),
                message: "a tile product reached the translation unexpanded".into(),
            }),
            Stmt::Fail { code } => {
                self.fail_jump(*code);
                self.dead_block();
                Ok(())
            }
        }
    }

    /// The error for construct `what` of the GPU dialect in a CPU kernel.
    fn gpu_dialect(&self, what: &str) -> CraneliftError {
        CraneliftError::InvalidKir { kernel: self.f.name.clone(), message: format!("{what} (GPU dialect) in a CPU kernel") }
    }

    /// `for i in (lo..hi).step_by(step) { body(i) }` with a hidden `i64` counter, rotated
    /// (guard, then body and test); `step` divides `hi - lo` when it is not 1.
    pub(super) fn counted_loop(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        body: impl FnOnce(&mut Self, Value) -> Result<(), CraneliftError>,
    ) -> Result<(), CraneliftError> {
        let ctr = self.b.declare_var(types::I64);
        self.def_variable(ctr, lo)?;
        let bb = self.block();
        let after = self.block();
        let go = self.b.ins().icmp(IntCC::SignedLessThan, lo, hi);
        self.b.ins().brif(go, bb, &[], after, &[]);
        self.b.switch_to_block(bb);
        let i = self.use_variable(ctr)?;
        body(self, i)?;
        let next = self.b.ins().iadd_imm_s(i, step);
        self.def_variable(ctr, next)?;
        let more = self.b.ins().icmp(IntCC::SignedLessThan, next, hi);
        self.b.ins().brif(more, bb, &[], after, &[]);
        self.b.seal_block(bb);
        self.b.seal_block(after);
        self.b.switch_to_block(after);
        Ok(())
    }

    /// Ends the current block with a failure of `code` (see the module docs).
    pub(super) fn fail_jump(&mut self, code: u32) {
        let k = self.iconst(types::I32, i64::from(code));
        match self.kind {
            FnKind::Kernel { exit, .. } => {
                self.b.ins().jump(exit, &[k.into()]);
            }
            FnKind::Body { err, exit } => {
                let zero = self.iconst(types::I32, 0);
                self.b.ins().atomic_cas(MemFlagsData::trusted(), err, zero, k);
                self.b.ins().jump(exit, &[]);
            }
        }
    }

    /// Fails with `code` when `bad`, else continues.
    pub(super) fn fail_if(&mut self, bad: Value, code: u32) {
        let fail = self.block();
        let ok = self.block();
        self.b.ins().brif(bad, fail, &[], ok, &[]);
        self.b.seal_block(fail);
        self.b.seal_block(ok);
        self.b.switch_to_block(fail);
        self.b.set_cold_block(fail);
        self.fail_jump(code);
        self.b.switch_to_block(ok);
    }

    fn alloc(&mut self, buf: Buf, len: Value, zeroed: bool) -> Result<(), CraneliftError> {
        let Some(&BufBase::Heap(var)) = self.bufs.get(&buf) else {
            return Err(self.internal(format!("alloc of '{}' outside the kernel function", self.f.buf(buf).name)));
        };
        let oom = fail_code(FailKind::OutOfMemory, 0);
        let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, len, 0);
        self.fail_if(neg, oom);
        let one = self.iconst(types::I64, 1);
        let n = self.b.ins().smax(len, one);
        let size = self.iconst(types::I64, self.f.buf(buf).elem.size() as i64);
        let (_, over) = self.b.ins().smul_overflow(n, size);
        self.fail_if(over, oom);
        let old = self.use_variable(var)?;
        self.call("tfmc_free", &[PTR], None, &[old])?;
        let null = self.iconst(PTR, 0);
        self.def_variable(var, null)?;
        let name = if zeroed { "tfmc_calloc" } else { "tfmc_malloc" };
        let p = self.call_value(name, &[types::I64, types::I64], PTR, &[n, size])?;
        let is_null = self.b.ins().icmp_imm_s(IntCC::Equal, p, 0);
        self.fail_if(is_null, oom);
        self.def_variable(var, p)
    }
}
