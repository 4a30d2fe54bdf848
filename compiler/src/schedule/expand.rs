//! The scalar loop expansion of [`Stmt::TileProduct`]: the statement's definition, and how
//! every backend without a vector lowering of it runs it (Cranelift, NVPTX and its emulation
//! call [`expand_tile_products`] before translating).
//!
//! For each row `i < m` and column `j < min(cols, n)`:
//! `acc = init(i, j); for k in 0..K { acc = acc +~ A[a0 + i·lda + k] · B[b0 + k·ldb + j] };
//! C[c0 + i·ldc + j] = acc`. The result is valid KIR (new `I64` loop variables and an `F32`
//! accumulator per expanded product), with the same reads and writes as the tile product.

use super::build::e;
use super::kir::{BinOp as K, Block, Expr, Func, Stmt, TileInit, TileOp, TileProduct, Ty, Var, VarDecl};

/// `f` with every tile product replaced by its scalar loops (`f` itself when it has none).
pub fn expand_tile_products(f: &Func) -> Func {
    let mut out = f.clone();
    if !has_tile_product(&f.body) {
        return out;
    }
    let body = std::mem::take(&mut out.body);
    out.body = expand_block(&mut out, body);
    out
}

/// True if `b` contains a tile product.
pub fn has_tile_product(b: &[Stmt]) -> bool {
    b.iter().any(|s| match s {
        Stmt::TileProduct(_) => true,
        Stmt::For { body, .. } | Stmt::Parallel { body, .. } | Stmt::BlockParallel { body, .. } => has_tile_product(body),
        Stmt::If { then, els, .. } => has_tile_product(then) || has_tile_product(els),
        _ => false,
    })
}

fn expand_block(f: &mut Func, b: Block) -> Block {
    let mut out = Vec::with_capacity(b.len());
    for s in b {
        match s {
            Stmt::TileProduct(t) => out.extend(expand(f, &t)),
            Stmt::For { var, lo, hi, body } => out.push(Stmt::For { var, lo, hi, body: expand_block(f, body) }),
            Stmt::Parallel { var, n, body } => out.push(Stmt::Parallel { var, n, body: expand_block(f, body) }),
            Stmt::BlockParallel { var, n, threads, body } => out.push(Stmt::BlockParallel { var, n, threads, body: expand_block(f, body) }),
            Stmt::If { cond, then, els } => {
                let then = expand_block(f, then);
                let els = expand_block(f, els);
                out.push(Stmt::If { cond, then, els })
            }
            s => out.push(s),
        }
    }
    out
}

fn new_var(f: &mut Func, name: &str, ty: Ty) -> Var {
    f.vars.push(VarDecl { name: name.to_string(), ty });
    Var(f.vars.len() as u32 - 1)
}

/// The loops of one tile product.
fn expand(f: &mut Func, t: &TileProduct) -> Vec<Stmt> {
    let (i, j, k) = (new_var(f, "tile.i", Ty::I64), new_var(f, "tile.j", Ty::I64), new_var(f, "tile.k", Ty::I64));
    let acc = new_var(f, "tile.acc", Ty::F32);
    let at = |base: &Expr, row: Expr, ld: &Expr, col: Expr| e::add(e::add(base.clone(), e::mul(row, ld.clone())), col);
    let c_at = at(&t.c0, e::var(i), &t.ldc, e::var(j));
    let start = match &t.init {
        TileInit::Zero => e::num(Ty::F32, 0.0),
        TileInit::Load => e::load(t.c, c_at.clone()),
        TileInit::Scale { buf, at: s0 } => e::mul(e::load(*buf, e::add(s0.clone(), e::var(i))), e::load(t.c, c_at.clone())),
    };
    // A's element along the sum: `k`, or `k·ka` for a key-major tile.
    let ak = if t.ka == e::i64(1) { e::var(k) } else { e::mul(e::var(k), t.ka.clone()) };
    let (x, y) = (e::load(t.a, at(&t.a0, e::var(i), &t.lda, ak)), e::load(t.b, at(&t.b0, e::var(k), &t.ldb, e::var(j))));
    let kbody = match t.op {
        TileOp::Mul => vec![Stmt::Set { var: acc, value: e::acc(K::Add, e::var(acc), e::mul(x, y)) }],
        TileOp::SquaredDifference => {
            let d = new_var(f, "tile.d", Ty::F32);
            vec![
                Stmt::Set { var: d, value: e::sub(x, y) },
                Stmt::Set { var: acc, value: e::acc(K::Add, e::var(acc), e::mul(e::var(d), e::var(d))) },
            ]
        }
    };
    let kloop = Stmt::For { var: k, lo: e::i64(0), hi: t.k.clone(), body: kbody };
    let cols = e::bin(K::Min, t.cols.clone(), e::i64(i64::from(t.n)));
    let jloop = Stmt::For {
        var: j,
        lo: e::i64(0),
        hi: cols,
        body: vec![Stmt::Set { var: acc, value: start }, kloop, Stmt::Store { buf: t.c, index: c_at, value: e::var(acc) }],
    };
    vec![Stmt::For { var: i, lo: e::i64(0), hi: e::i64(i64::from(t.m)), body: vec![jloop] }]
}
