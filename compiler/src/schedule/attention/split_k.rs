//! Split-K for the GPU attention plans (FlashDecoding): when there are too few blocks to fill
//! the GPU, each block's key-tile range is cut into parts run by separate blocks, and a
//! combine parallel merges their partial softmax states ([`Split`]). Shared by the CUDA-core
//! plan ([`super::gpu`]) and the tensor-core plan ([`super::tensor_core`]), which also share
//! [`Blocks`] (block size, per-row bounds, split).

use super::super::ScheduleError;
use super::super::arith::exp;
use super::super::build::e;
use super::super::common::{checked_len, node_axes};
use super::super::kir::{BinOp as K, Buf, BufKind, Expr, Stmt, Ty, Var};
use super::super::lower::Cx;
use super::analysis::Norm;
use super::dialect::Dialect;
use super::site::{RowValue, Site};

/// Blocks wanted in flight before the plan stops splitting the key range (a few waves of an
/// H100's 132 SMs).
pub(crate) const SPLIT_TARGET_BLOCKS: i64 = 512;

/// Fewest keys per split: a split of fewer keys costs more in partials than it saves.
pub(crate) const SPLIT_MIN_KEYS: i64 = 32;

/// Most splits of one row's key range (the combine's per-split scales are a stack array).
pub(crate) const SPLIT_MAX: u32 = 64;

/// Split-K (FlashDecoding): when the grid has fewer than [`SPLIT_TARGET_BLOCKS`] blocks (few
/// rows per head: decode), every block's key-tile range is cut into `n` consecutive parts run
/// by `n` blocks, each writing its rows' partial state — max, sum, "any point", `acc[f]` —
/// to `part`; a combine parallel (one thread per row) merges the parts with the rescaling of
/// the online softmax and writes the output. `n` is computed from the dims only (the GPU
/// spine sizes the heap from it): `clamp(min(⌈M / SPLIT_MIN_KEYS⌉,
/// ⌈SPLIT_TARGET_BLOCKS / blocks⌉), 1, SPLIT_MAX)`; with `n = 1` the blocks write the output
/// themselves and the combine has no iterations.
pub(super) struct Split {
    /// The number of parts (`I64`, `1..=SPLIT_MAX`).
    pub n: Var,
    /// `[max, sum, any, acc[0..F]]` per (other point, row, part); one element when `n = 1`.
    pub part: Buf,
    /// Other points × rows.
    points: Expr,
    /// Rows of the tile index.
    rows: Expr,
    /// Elements per (row, part): `F + 3`.
    width: Expr,
    /// The accumulator's element type.
    ty: Ty,
}

impl Split {
    /// Chooses the split for blocks of `block_rows` rows and allocates the partials (kernel
    /// level).
    pub(super) fn plan(cx: &mut Cx<'_>, site: &Site<'_, '_>, block_rows: i64, outer_n: &Expr, rows: &Expr) -> Result<Split, ScheduleError> {
        let (node, plan) = (site.node, site.plan);
        let t = cx.tensors[site.slot].clone();
        let ty = site.acc_ty();
        let keys = match cx.ranges.get(plan.head.name.as_str()).cloned() {
            Some(r) => cx.size(&r)?,
            None => e::i64(1),
        };
        let ntiles = e::bin(K::Div, e::add(rows.clone(), e::i64(block_rows - 1)), e::i64(block_rows));
        let blocks = cx.b.let_("split.blocks", e::bin(K::Max, e::mul(outer_n.clone(), ntiles), e::i64(1)));
        let by_keys = e::bin(K::Div, e::add(keys, e::i64(SPLIT_MIN_KEYS - 1)), e::i64(SPLIT_MIN_KEYS));
        let by_grid = e::bin(K::Div, e::add(e::i64(SPLIT_TARGET_BLOCKS - 1), e::var(blocks)), e::var(blocks));
        let n = e::bin(K::Min, e::bin(K::Min, by_keys, by_grid), e::i64(i64::from(SPLIT_MAX)));
        // A plain sum's parts would merge by adding; its rows are not split (yet).
        let n = if plan.norm == Norm::Softmax { e::bin(K::Max, n, e::i64(1)) } else { e::i64(1) };
        let n = cx.b.let_("splits", n);
        let part = cx.b.buf(&format!("{}.parts", node.name), ty, BufKind::Heap);
        let width = e::add(t.shape[t.shape.len() - 1].clone(), e::i64(3));
        let used = e::select(e::bin(K::Gt, e::var(n), e::i64(1)), e::var(n), e::i64(0));
        let points = e::mul(outer_n.clone(), rows.clone());
        let len = checked_len(cx, &[outer_n.clone(), rows.clone(), used, width.clone()], &format!("{}.parts", node.name));
        cx.b.emit(Stmt::Alloc { buf: part, len, zeroed: true });
        Ok(Split { n, part, points, rows: rows.clone(), width, ty })
    }

    /// Opens the block parallel over `tiles` × `others` (their product `n`) × parts, with
    /// blocks of `threads` threads; returns (part, tile, outer point) of the block.
    pub fn open_blocks(&self, cx: &mut Cx<'_>, threads: u32, n: Expr, tiles: Var) -> (Var, Var, Var) {
        let q = Dialect::open_blocks(cx, threads, e::mul(n, e::var(self.n)));
        let part = cx.b.let_("part", e::bin(K::Rem, e::var(q), e::var(self.n)));
        let qt = cx.b.let_("block_tile", e::bin(K::Div, e::var(q), e::var(self.n)));
        let tile = cx.b.let_("tile", e::bin(K::Rem, e::var(qt), e::var(tiles)));
        let outer = cx.b.let_("outer", e::bin(K::Div, e::var(qt), e::var(tiles)));
        (part, tile, outer)
    }

    /// Opens the loop over this block's part of its key tiles of `tm` keys (the block range is
    /// min lo .. max hi of the `threads` bounds in `lo_sh`/`hi_sh`; all of it without a split);
    /// returns (first key, keys in the tile). The caller closes the loop.
    pub fn open_key_tiles(&self, cx: &mut Cx<'_>, lo_sh: Buf, hi_sh: Buf, threads: u32, tm: i64, part: Var) -> (Var, Var) {
        let mlo = cx.b.let_("mlo", e::i64(i64::MAX));
        let mhi = cx.b.let_("mhi", e::i64(i64::MIN));
        let j = cx.b.open_for("j", e::i64(0), e::i64(i64::from(threads)));
        cx.b.set(mlo, e::bin(K::Min, e::var(mlo), e::load(lo_sh, e::var(j))));
        cx.b.set(mhi, e::bin(K::Max, e::var(mhi), e::load(hi_sh, e::var(j))));
        cx.b.close();
        let nb = e::select(
            e::bin(K::Lt, e::var(mlo), e::var(mhi)),
            e::bin(K::Div, e::add(e::sub(e::var(mhi), e::var(mlo)), e::i64(tm - 1)), e::i64(tm)),
            e::i64(0),
        );
        let nb = cx.b.let_("key_tiles", nb);
        let part_lo = e::bin(K::Div, e::mul(e::var(part), e::var(nb)), e::var(self.n));
        let part_hi = e::bin(K::Div, e::mul(e::add(e::var(part), e::i64(1)), e::var(nb)), e::var(self.n));
        let kb = cx.b.open_for("block", part_lo, part_hi);
        let m0 = cx.b.let_("m0", e::add(e::var(mlo), e::mul(e::var(kb), e::i64(tm))));
        let nm = cx.b.let_("keys", e::bin(K::Min, e::i64(tm), e::sub(e::var(mhi), e::var(m0))));
        (m0, nm)
    }

    /// Stores a row's state — max, sum, any — as part `part` of flat row `r` (the
    /// accumulator's elements are the caller's).
    pub fn store_state(&self, cx: &mut Cx<'_>, r: &Expr, part: Var, (max, sum, any): (Var, Var, Var)) {
        let c = |x: f64| e::num(self.ty, x);
        cx.b.store(self.part, self.at(r.clone(), e::var(part), e::i64(0)), e::var(max));
        cx.b.store(self.part, self.at(r.clone(), e::var(part), e::i64(1)), e::var(sum));
        cx.b.store(self.part, self.at(r.clone(), e::var(part), e::i64(2)), e::select(e::var(any), c(1.0), c(0.0)));
    }

    /// Element `k` of part `c` of row `r` (flat over other points × rows).
    fn at(&self, r: Expr, c: Expr, k: Expr) -> Expr {
        e::add(e::mul(e::add(e::mul(r, e::var(self.n)), c), self.width.clone()), k)
    }

    /// Accumulator element `f` of part `c` of row `r`.
    pub fn acc_at(&self, r: Expr, c: Expr, f: Expr) -> Expr {
        self.at(r, c, e::add(f, e::i64(3)))
    }

    /// The combine parallel: one thread per (other point, row), merging the parts.
    pub(super) fn combine(&self, cx: &mut Cx<'_>, site: &Site<'_, '_>) -> Result<(), ScheduleError> {
        let (node, slots) = (site.node, site.slots);
        let t = cx.tensors[site.slot].clone();
        let ty = self.ty;
        let c = |x: f64| e::num(ty, x);
        let k = slots.len();
        let (fa, ta) = (site.f_axis(), site.plan.tile);
        let others = site.others();
        let fsize = t.shape[fa].clone();
        let mark = cx.b.mark();
        let n = e::select(e::bin(K::Gt, e::var(self.n), e::i64(1)), self.points.clone(), e::i64(0));
        let r = cx.b.open_parallel(&format!("{}.combine", node.name), n);
        let outer = cx.b.let_("outer", e::bin(K::Div, e::var(r), self.rows.clone()));
        let row = cx.b.let_(&node.indices[ta], e::bin(K::Rem, e::var(r), self.rows.clone()));
        let (vals, saved) = cx.bind_flat(e::var(outer), &node_axes(node, slots, &t.shape, &others));
        let mut idx: Vec<Option<Expr>> = vec![None; k];
        for (&a, v) in others.iter().zip(vals) {
            idx[a] = Some(v);
        }
        idx[ta] = Some(e::var(row));
        let old_t = cx.bind(slots[ta], crate::schedule::lower::IdxVar { var: row, range: Some(node.shape[ta].clone()) });
        let scales = cx.b.buf(&format!("{}.split_scale", node.name), ty, BufKind::Stack(SPLIT_MAX));
        let gmax = cx.b.let_("gmax", c(f64::NEG_INFINITY));
        let any = cx.b.let_("any", e::bool(false));
        let s = cx.b.open_for("split", e::i64(0), e::var(self.n));
        cx.b.set(gmax, e::bin(K::Max, e::var(gmax), e::load(self.part, self.at(e::var(r), e::var(s), e::i64(0)))));
        cx.b.set(any, e::bin(K::Or, e::var(any), e::bin(K::Ne, e::load(self.part, self.at(e::var(r), e::var(s), e::i64(2))), c(0.0))));
        cx.b.close();
        let sum = cx.b.let_("sum", c(0.0));
        let s = cx.b.open_for("split", e::i64(0), e::var(self.n));
        let ms = cx.b.let_("part_max", e::load(self.part, self.at(e::var(r), e::var(s), e::i64(0))));
        // A part without a finite logit contributes nothing (and exp(-inf - -inf) is NaN).
        let x = exp(&mut cx.b, ty, e::sub(e::var(ms), e::var(gmax)));
        let sc = cx.b.let_("scale", e::select(e::bin(K::Eq, e::var(ms), c(f64::NEG_INFINITY)), c(0.0), x));
        cx.b.store(scales, e::var(s), e::var(sc));
        cx.b.set(sum, e::acc(K::Add, e::var(sum), e::mul(e::var(sc), e::load(self.part, self.at(e::var(r), e::var(s), e::i64(1))))));
        cx.b.close();
        let nan = cx.b.let_("all_neg_inf", e::bin(K::And, e::var(any), e::bin(K::Eq, e::var(gmax), c(f64::NEG_INFINITY))));
        let f = cx.b.open_for("f", e::i64(0), fsize);
        idx[fa] = Some(e::var(f));
        let o = cx.b.let_("o", c(0.0));
        let s = cx.b.open_for("split", e::i64(0), e::var(self.n));
        let a = e::load(self.part, self.acc_at(e::var(r), e::var(s), e::var(f)));
        cx.b.set(o, e::acc(K::Add, e::var(o), e::mul(e::load(scales, e::var(s)), a)));
        cx.b.close();
        let den = super::site::softmax_den(cx, site, ty, e::var(sum), e::var(gmax))?;
        super::site::store_output(cx, site, &idx, ty, RowValue { num: e::var(o), den, nan }, "split-K combine")?;
        cx.b.close_to(mark);
        cx.unbind(slots[ta], old_t);
        cx.restore(saved);
        Ok(())
    }
}

/// What the block parallels of one node share: their block size, the per-row key bounds
/// written by the bounds parallel (`[lo, hi]` per flat row), and the split.
pub(super) struct Blocks<'s> {
    /// Threads per block.
    pub threads: u32,
    /// The rows' bounds.
    pub bnd: Buf,
    /// The split of the key range.
    pub split: &'s Split,
}
