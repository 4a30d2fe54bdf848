//! The GPU dialect as the GPU attention plans write it ([`Dialect`]: the thread index,
//! barriers, shared buffers, block parallels; see the `kir` module docs): the one place the
//! plans construct the dialect.

use super::super::kir::{Buf, BufKind, Const, Expr, Ty, Var, gpu};
use super::super::lower::Cx;

/// The GPU dialect as a block parallel's code uses it: the thread index, barriers and shared
/// buffers (one per kernel of each; see the `kir` module docs).
#[derive(Clone, Copy)]
pub(super) struct Dialect {
    /// The thread's index in its block.
    pub thread: Var,
    barrier: Var,
}

impl Dialect {
    /// The kernel's thread index and barrier.
    pub fn new(cx: &mut Cx<'_>) -> Dialect {
        let thread = cx.b.reserved_var(gpu::THREAD, Ty::I64);
        let barrier = cx.b.reserved_var(gpu::BARRIER, Ty::Bool);
        Dialect { thread, barrier }
    }

    /// A barrier of the block's threads.
    pub fn sync(&self, cx: &mut Cx<'_>) {
        cx.b.set(self.barrier, Expr::Const(Const::Bool(true)));
    }

    /// A shared buffer of `n` elements, one per block, named `{prefix}.{name}` for dumps.
    pub fn shared(cx: &mut Cx<'_>, prefix: &str, name: &str, ty: Ty, n: u32) -> Buf {
        cx.b.buf(&format!("{}{prefix}.{name}", gpu::SHARED_PREFIX), ty, BufKind::Stack(n))
    }

    /// Opens a block parallel of `n` blocks of `threads` threads; returns the block index.
    pub fn open_blocks(cx: &mut Cx<'_>, threads: u32, n: Expr) -> Var {
        cx.b.open_parallel(&gpu::block_var_name(threads), n)
    }
}
