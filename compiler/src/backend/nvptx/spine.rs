//! The spine transform (KIR → KIR) that the GPU launch protocol needs: afterwards, the
//! *spine* of a kernel (everything outside `Parallel` bodies) touches no memory except
//! through `Alloc`, so it can be re-run by every GPU thread and by the one-thread `prep`
//! entry without side effects.
//!
//! Rule: in every block of the spine, each maximal run of consecutive statements that load or
//! store a buffer (outside `Parallel` bodies) and contain no `Parallel` is wrapped in
//! `Parallel { n: 1 }` (the generic schedule emits such code for rank-0 / rank-1 nodes).
//! Statements that contain a `Parallel` are kept, and the blocks of an `If` around one are
//! transformed recursively. A block parallel ([`Stmt::BlockParallel`], GPU dialect) counts as
//! a `Parallel` throughout: a segment of its own, never part of the spine.
//!
//! A run that sets a variable read after it takes the following statements of its block
//! (up to a parallel loop or an allocation) into it, up to the first point where nothing it
//! sets is read afterwards: e.g. the accumulators of rank-0 reductions and the store that
//! combines them end up in one wrapper.
//!
//! Rejected (the protocol cannot express them; [`SpineError`]):
//! - a variable set inside a wrapped run (extended as above) and possibly read after it (an
//!   iteration's writes are private to it): checked with a liveness analysis of the spine, so
//!   a variable that is always set again before being read is fine;
//! - a `Parallel` inside a `For` (each segment is launched once);
//! - an `If` around a `Parallel` whose condition reads memory;
//! - an `Alloc` inside a run that touches memory (it would end up inside a `Parallel`).
//!
//! Invariant of the result: it passes `schedule::validate::check` (`check_gpu`) when the input
//! does, and has the input's semantics (wrapped runs execute once, in order, before the next
//! statement).

use std::collections::BTreeSet;

use crate::schedule::kir::{Block, Const, Expr, Func, Stmt, Ty, Var, VarDecl};
use crate::schedule::uses::Uses;

/// Why a kernel's spine cannot be made memory-free.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpineError {
    /// A variable set in memory-touching code outside parallel loops is read later.
    #[error(
        "variable '{var}' is set by code that reads or writes memory outside any parallel loop and is read after it; a GPU thread cannot hand it on"
    )]
    Escapes {
        /// The variable's name.
        var: String,
    },
    /// A parallel loop nested in a sequential loop.
    #[error("a parallel loop inside the sequential loop over '{var}' (each GPU segment is launched once)")]
    ParallelInLoop {
        /// The sequential loop's variable.
        var: String,
    },
    /// A branch around a parallel loop depends on memory.
    #[error("the condition of an 'if' around a parallel loop reads memory")]
    MemoryCondition,
    /// A heap allocation among memory-touching statements.
    #[error("heap buffer '{buf}' is allocated inside code that reads or writes memory outside any parallel loop")]
    AllocInMemoryCode {
        /// The buffer's name.
        buf: String,
    },
}

/// The GPU form of `f` (see the module docs). Adds one `I64` variable (`spine.it`, the loop
/// variable of every wrapper) when something is wrapped.
pub fn make_spine_memory_free(f: &Func) -> Result<Func, SpineError> {
    let mut out = f.clone();
    let it = Var(f.vars.len() as u32);
    let mut cx = Cx { f, it, wrapped: false };
    out.body = cx.block(&f.body, &BTreeSet::new())?;
    if cx.wrapped {
        out.vars.push(VarDecl { name: "spine.it".to_string(), ty: Ty::I64 });
    }
    Ok(out)
}

/// The number of `Parallel` and block parallel statements of `b` (the segments of a
/// transformed kernel, numbered in this pre-order).
pub fn count_parallel(b: &Block) -> usize {
    b.iter()
        .map(|s| match s {
            Stmt::Parallel { .. } | Stmt::BlockParallel { .. } => 1,
            Stmt::For { body, .. } => count_parallel(body),
            Stmt::If { then, els, .. } => count_parallel(then) + count_parallel(els),
            _ => 0,
        })
        .sum()
}

struct Cx<'a> {
    f: &'a Func,
    it: Var,
    wrapped: bool,
}

impl Cx<'_> {
    fn var_name(&self, v: Var) -> String {
        self.f.vars.get(v.0 as usize).map_or_else(|| format!("%{}", v.0), |d| d.name.clone())
    }

    /// Transforms `b`, whose successor reads the variables in `after`.
    fn block(&mut self, b: &Block, after: &BTreeSet<Var>) -> Result<Block, SpineError> {
        // live[i]: variables possibly read before being set, from statement i on.
        let mut live = vec![after.clone(); b.len() + 1];
        for i in (0..b.len()).rev() {
            live[i] = live_stmt(&b[i], &live[i + 1]);
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let s = &b[i];
            if has_parallel(s) {
                out.push(self.around_parallel(s, &live[i + 1])?);
                i += 1;
            } else if touches_memory(s) {
                let mut j = i;
                while j < b.len() && touches_memory(&b[j]) && !has_parallel(&b[j]) {
                    j += 1;
                }
                if let Some(buf) = first_alloc(&b[i..j]) {
                    let name = self.f.bufs.get(buf.0 as usize).map_or_else(String::new, |d| d.name.clone());
                    return Err(SpineError::AllocInMemoryCode { buf: name });
                }
                let escaping = |j: usize| {
                    let mut written = BTreeSet::new();
                    writes(&b[i..j], &mut written);
                    written.intersection(&live[j]).next().copied()
                };
                if let Some(v) = escaping(j) {
                    // The run sets a variable read later: take the following statements (with
                    // no parallel loop or allocation) into the run, up to the first point
                    // where nothing it sets is read afterwards, so the reader runs in the same
                    // one-thread iteration (a rank-0 result computed from accumulators).
                    let extended = (j + 1..=b.len())
                        .take_while(|&k| !has_parallel(&b[k - 1]) && first_alloc(&b[k - 1..k]).is_none())
                        .find(|&k| escaping(k).is_none());
                    match extended {
                        Some(k) => j = k,
                        None => return Err(SpineError::Escapes { var: self.var_name(v) }),
                    }
                }
                let run = &b[i..j];
                self.wrapped = true;
                out.push(Stmt::Parallel { var: self.it, n: Expr::Const(Const::I64(1)), body: run.to_vec() });
                i = j;
            } else {
                out.push(s.clone());
                i += 1;
            }
        }
        Ok(out)
    }

    /// A statement containing a `Parallel`, followed by code reading `after`.
    fn around_parallel(&mut self, s: &Stmt, after: &BTreeSet<Var>) -> Result<Stmt, SpineError> {
        match s {
            Stmt::If { cond, then, els } => {
                if expr_memory(cond) {
                    return Err(SpineError::MemoryCondition);
                }
                Ok(Stmt::If { cond: cond.clone(), then: self.block(then, after)?, els: self.block(els, after)? })
            }
            Stmt::For { var, .. } => Err(SpineError::ParallelInLoop { var: self.var_name(*var) }),
            _ => Ok(s.clone()),
        }
    }
}

/// True if `s` contains a `Parallel` (or a block parallel).
fn has_parallel(s: &Stmt) -> bool {
    match s {
        Stmt::Parallel { .. } | Stmt::BlockParallel { .. } => true,
        Stmt::For { body, .. } => body.iter().any(has_parallel),
        Stmt::If { then, els, .. } => then.iter().chain(els).any(has_parallel),
        _ => false,
    }
}

/// True if `s` loads or stores a buffer outside `Parallel` bodies.
fn touches_memory(s: &Stmt) -> bool {
    match s {
        Stmt::Set { value, .. } => expr_memory(value),
        Stmt::Store { .. } => true,
        Stmt::For { lo, hi, body, .. } => expr_memory(lo) || expr_memory(hi) || body.iter().any(touches_memory),
        Stmt::Parallel { n, .. } | Stmt::BlockParallel { n, .. } => expr_memory(n),
        Stmt::If { cond, then, els } => expr_memory(cond) || then.iter().chain(els).any(touches_memory),
        Stmt::Alloc { len, .. } => expr_memory(len),
        // Only inside block parallels, which are never part of the spine.
        Stmt::Mma(m) => m.operands().any(expr_memory),
        Stmt::TileProduct(_) => true,
        Stmt::Barrier | Stmt::Fail { .. } => false,
    }
}

/// True if `e` loads from a buffer.
fn expr_memory(e: &Expr) -> bool {
    match e {
        Expr::Const(_) | Expr::Var(_) => false,
        Expr::Load { .. } => true,
        Expr::Unary { x, .. } | Expr::Cast { x, .. } | Expr::Bitcast { x, .. } => expr_memory(x),
        Expr::Binary { a, b, .. } => expr_memory(a) || expr_memory(b),
        Expr::Select { c, a, b } => expr_memory(c) || expr_memory(a) || expr_memory(b),
    }
}

/// The first buffer allocated in `b`, if any.
fn first_alloc(b: &[Stmt]) -> Option<crate::schedule::kir::Buf> {
    b.iter().find_map(|s| match s {
        Stmt::Alloc { buf, .. } => Some(*buf),
        Stmt::For { body, .. } | Stmt::Parallel { body, .. } | Stmt::BlockParallel { body, .. } => first_alloc(body),
        Stmt::If { then, els, .. } => first_alloc(then).or_else(|| first_alloc(els)),
        _ => None,
    })
}

/// Adds every variable `b` sets (loop variables included) to `out`.
fn writes(b: &[Stmt], out: &mut BTreeSet<Var>) {
    for s in b {
        match s {
            Stmt::Set { var, .. } => {
                out.insert(*var);
            }
            Stmt::For { var, body, .. } | Stmt::Parallel { var, body, .. } | Stmt::BlockParallel { var, body, .. } => {
                out.insert(*var);
                writes(body, out);
            }
            Stmt::If { then, els, .. } => {
                writes(then, out);
                writes(els, out);
            }
            Stmt::Mma(m) => out.extend(m.d.iter().copied()),
            Stmt::Store { .. } | Stmt::Alloc { .. } | Stmt::Barrier | Stmt::TileProduct(_) | Stmt::Fail { .. } => {}
        }
    }
}

fn reads(e: &Expr, out: &mut BTreeSet<Var>) {
    let mut u = Uses::default();
    u.expr(e);
    out.extend(u.vars);
}

/// Variables possibly read before being set when `b` runs and then code reading `after`.
fn live_block(b: &[Stmt], after: &BTreeSet<Var>) -> BTreeSet<Var> {
    b.iter().rev().fold(after.clone(), |l, s| live_stmt(s, &l))
}

/// Variables possibly read before being set when `s` runs and then code reading `after`.
fn live_stmt(s: &Stmt, after: &BTreeSet<Var>) -> BTreeSet<Var> {
    let mut l;
    match s {
        Stmt::Set { var, value } => {
            l = after.clone();
            l.remove(var);
            reads(value, &mut l);
        }
        Stmt::Store { index, value, .. } => {
            l = after.clone();
            reads(index, &mut l);
            reads(value, &mut l);
        }
        Stmt::For { var, lo, hi, body } => {
            // The loop head: the code after the loop or another iteration (which sets `var`
            // first). Iterate to the fixpoint (sets only grow, bounded by the variables).
            let mut head = after.clone();
            loop {
                let mut next = live_block(body, &head);
                next.remove(var);
                next.extend(after.iter().copied());
                if next == head {
                    break;
                }
                head = next;
            }
            l = head;
            reads(lo, &mut l);
            reads(hi, &mut l);
        }
        Stmt::Parallel { var, n, body } | Stmt::BlockParallel { var, n, body, .. } => {
            // Iterations' writes are private: nothing they set reaches the code after.
            l = live_block(body, &BTreeSet::new());
            l.remove(var);
            l.extend(after.iter().copied());
            reads(n, &mut l);
        }
        Stmt::If { cond, then, els } => {
            l = live_block(then, after);
            l.extend(live_block(els, after));
            reads(cond, &mut l);
        }
        Stmt::Alloc { len, .. } => {
            l = after.clone();
            reads(len, &mut l);
        }
        Stmt::Barrier => l = after.clone(),
        Stmt::Mma(m) => {
            l = after.clone();
            for d in &m.d {
                l.remove(d);
            }
            m.operands().for_each(|e| reads(e, &mut l));
        }
        Stmt::TileProduct(t) => {
            l = after.clone();
            t.exprs().for_each(|e| reads(e, &mut l));
        }
        Stmt::Fail { .. } => l = BTreeSet::new(),
    }
    l
}
