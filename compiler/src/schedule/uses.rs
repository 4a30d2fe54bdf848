//! What a KIR block mentions: the variables and buffers an outlined `Parallel` body must be
//! given (every backend outlines parallel bodies the same way: the captured set is everything
//! the body mentions, minus its loop variable; a variable the body writes before reading is
//! copied needlessly, never wrongly).

use std::collections::BTreeSet;

use super::kir::{Block, Buf, Expr, Stmt, Var};

/// Variables and buffers mentioned in a block.
#[derive(Clone, Debug, Default)]
pub struct Uses {
    /// Every variable read or written (loop variables included).
    pub vars: BTreeSet<Var>,
    /// Every buffer loaded, stored or allocated.
    pub bufs: BTreeSet<Buf>,
}

impl Uses {
    /// Adds what `b` mentions.
    pub fn block(&mut self, b: &Block) {
        for s in b {
            match s {
                Stmt::Set { var, value } => {
                    self.vars.insert(*var);
                    self.expr(value);
                }
                Stmt::Store { buf, index, value } => {
                    self.bufs.insert(*buf);
                    self.expr(index);
                    self.expr(value);
                }
                Stmt::For { var, lo, hi, body } => {
                    self.vars.insert(*var);
                    self.expr(lo);
                    self.expr(hi);
                    self.block(body);
                }
                Stmt::Parallel { var, n, body } | Stmt::BlockParallel { var, n, body, .. } => {
                    self.vars.insert(*var);
                    self.expr(n);
                    self.block(body);
                }
                Stmt::If { cond, then, els } => {
                    self.expr(cond);
                    self.block(then);
                    self.block(els);
                }
                Stmt::Alloc { buf, len, .. } => {
                    self.bufs.insert(*buf);
                    self.expr(len);
                }
                Stmt::Mma(m) => {
                    self.vars.extend(m.d.iter().copied());
                    m.operands().for_each(|e| self.expr(e));
                }
                Stmt::TileProduct(t) => {
                    self.bufs.extend(t.bufs());
                    t.exprs().for_each(|e| self.expr(e));
                }
                Stmt::Barrier | Stmt::Fail { .. } => {}
            }
        }
    }

    /// Adds what `e` mentions.
    pub fn expr(&mut self, e: &Expr) {
        match e {
            Expr::Const(_) => {}
            Expr::Var(v) => {
                self.vars.insert(*v);
            }
            Expr::Load { buf, index } => {
                self.bufs.insert(*buf);
                self.expr(index);
            }
            Expr::Unary { x, .. } | Expr::Cast { x, .. } | Expr::Bitcast { x, .. } => self.expr(x),
            Expr::Binary { a, b, .. } => {
                self.expr(a);
                self.expr(b);
            }
            Expr::Select { c, a, b } => {
                self.expr(c);
                self.expr(a);
                self.expr(b);
            }
        }
    }
}
