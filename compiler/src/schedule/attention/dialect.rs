//! The GPU dialect as the GPU attention plans write it ([`Dialect`]: the thread index,
//! barriers, shared buffers, block parallels; see the `kir` module docs): the one place the
//! plans construct the dialect.

use super::super::kir::{Buf, BufKind, Expr, Ty, Var};
use super::super::lower::Cx;

/// The GPU dialect as a block parallel's code uses it: the thread index, barriers, shared
/// buffers and block parallels, each a KIR construct of its own kind (`kir` module docs).
#[derive(Clone, Copy)]
pub(super) struct Dialect {
    /// The thread's index in its block (the kernel's one thread-index variable).
    pub thread: Var,
}

impl Dialect {
    /// The kernel's thread index.
    pub fn new(cx: &mut Cx<'_>) -> Dialect {
        Dialect { thread: cx.b.thread_var() }
    }

    /// A barrier of the block's threads.
    pub fn sync(&self, cx: &mut Cx<'_>) {
        cx.b.barrier();
    }

    /// A shared buffer of `n` elements, one per block. `gpu:shared.{prefix}.{name}` is only its
    /// display name: its kind makes it shared.
    pub fn shared(cx: &mut Cx<'_>, prefix: &str, name: &str, ty: Ty, n: u32) -> Buf {
        cx.b.buf(&format!("gpu:shared.{prefix}.{name}"), ty, BufKind::Shared(n))
    }

    /// Opens a block parallel of `n` blocks of `threads` threads; returns the block index.
    pub fn open_blocks(cx: &mut Cx<'_>, threads: u32, n: Expr) -> Var {
        cx.b.open_block_parallel(n, threads)
    }
}
