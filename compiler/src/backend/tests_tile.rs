//! Tile products (`kir::TileProduct`) on every CPU code path against their definition: the
//! LLVM vector lowering at each vector width it selects (512, 256 and 128 bits: the host and
//! the x86-64-v3 and x86-64-v2 CPUs, all of which an AVX-512 host runs), and the scalar expansion (`schedule::expand`) on LLVM and Cranelift.
//! Random `m <= 6`, `n` in `1..=64`, `K` in `0..=300`, every init kind, `cols` below, at and
//! above `n`; elements of `C` outside the tile must stay untouched.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::backend::Export;
use crate::backend::llvm::{PackedFn, TargetOptions};
use crate::backend::test_kir::{K, call, p};
use crate::schedule::expand::expand_tile_products;
use crate::schedule::kir::{Expr, Func, Stmt, TileInit, TileOp, TileProduct, Ty};

/// The three init kinds.
#[derive(Clone, Copy, Debug)]
enum Init {
    Zero,
    Load,
    Scale,
}

/// A kernel running one `m × n` tile product whose operands come from the dims
/// `[K, cols, a0, lda, ka, b0, ldb, c0, ldc, s0]` and buffers `A, B, C, S`.
fn kernel(m: u32, n: u32, init: Init, op: TileOp) -> Func {
    let mut k = K::new("tile");
    let (a, b, c, s) = (k.arg("A", Ty::F32), k.arg("B", Ty::F32), k.arg("C", Ty::F32), k.arg("S", Ty::F32));
    let d: Vec<Expr> = ["K", "cols", "a0", "lda", "ka", "b0", "ldb", "c0", "ldc", "s0"].iter().map(|n| Expr::Var(k.dim(n))).collect();
    let init = match init {
        Init::Zero => TileInit::Zero,
        Init::Load => TileInit::Load,
        Init::Scale => TileInit::Scale { buf: s, at: d[9].clone() },
    };
    let t = TileProduct {
        m,
        n,
        cols: d[1].clone(),
        k: d[0].clone(),
        a,
        a0: d[2].clone(),
        lda: d[3].clone(),
        ka: d[4].clone(),
        b,
        b0: d[5].clone(),
        ldb: d[6].clone(),
        c,
        c0: d[7].clone(),
        ldc: d[8].clone(),
        init,
        op,
    };
    k.body(vec![Stmt::TileProduct(Box::new(t))])
}

/// One case's operands.
struct Case {
    kk: usize,
    cols: i64,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    s: Vec<f32>,
    dims: [i64; 10],
}

fn case(rng: &mut StdRng, m: u32, n: u32, kk: usize, cols: i64) -> Case {
    let (m, n) = (m as usize, n as usize);
    // Offsets and strides larger than the tile, so stray reads or writes land on sentinels.
    // Half the cases store `A` key-major (`A[i][k]` at `a0 + i + k·ka`, the attention plan's
    // transposed weight tile), half row-major.
    let (a0, (lda, ka)) =
        (rng.random_range(0..5), if rng.random_bool(0.5) { (kk + rng.random_range(0..4), 1) } else { (1, m + rng.random_range(0..4)) });
    let (b0, ldb) = (rng.random_range(0..5), n + rng.random_range(0..9));
    let (c0, ldc) = (rng.random_range(0..5), n + rng.random_range(1..9));
    let s0 = rng.random_range(0..3);
    let mut r = |len: usize| (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<f32>>();
    let a = r(a0 + m * lda + kk * ka + 1);
    let b = r(b0 + kk.max(1) * ldb + 1);
    let c = r(c0 + m * ldc + 8);
    let s = r(s0 + m);
    let dims = [kk as i64, cols, a0 as i64, lda as i64, ka as i64, b0 as i64, ldb as i64, c0 as i64, ldc as i64, s0 as i64];
    Case { kk, cols, a, b, c, s, dims }
}

/// `C` after the product, by the definition, in f64.
fn expected(cs: &Case, m: u32, n: u32, init: Init, op: TileOp) -> Vec<f64> {
    let d = |i: usize| cs.dims[i] as usize;
    let (a0, lda, ka, b0, ldb, c0, ldc, s0) = (d(2), d(3), d(4), d(5), d(6), d(7), d(8), d(9));
    let mut c: Vec<f64> = cs.c.iter().map(|&x| f64::from(x)).collect();
    let cols = cs.cols.clamp(0, i64::from(n)) as usize;
    for i in 0..m as usize {
        for j in 0..cols {
            let at = c0 + i * ldc + j;
            let mut acc = match init {
                Init::Zero => 0.0,
                Init::Load => f64::from(cs.c[at]),
                Init::Scale => f64::from(cs.s[s0 + i]) * f64::from(cs.c[at]),
            };
            for k in 0..cs.kk {
                let (x, y) = (f64::from(cs.a[a0 + i * lda + k * ka]), f64::from(cs.b[b0 + k * ldb + j]));
                acc += match op {
                    TileOp::Mul => x * y,
                    TileOp::SquaredDifference => (x - y) * (x - y),
                };
            }
            c[at] = acc;
        }
    }
    c
}

/// Runs every case through `entry` and compares with the definition: each element within
/// 1e-5 of the sum of the magnitudes of its terms (f32 accumulation in any order; a squared
/// difference's terms are up to 4), untouched elements bit-for-bit.
fn check(what: &str, entry: PackedFn, cases: &mut [Case], m: u32, n: u32, init: Init, op: TileOp) {
    for cs in cases.iter_mut() {
        let want = expected(cs, m, n, init, op);
        let mut c = cs.c.clone();
        let code = call(entry, &[p(&mut cs.a), p(&mut cs.b), p(&mut c), p(&mut cs.s)], &cs.dims, &[]);
        assert_eq!(code, 0, "{what}");
        for (at, (&g, &w)) in c.iter().zip(&want).enumerate() {
            let term = if op == TileOp::Mul { 2.0 } else { 8.0 };
            let bound = 1e-5 * (1.0 + term * cs.kk as f64);
            assert!(
                (f64::from(g) - w).abs() <= bound,
                "{what}: m {m} n {n} {init:?} {op:?} K {} cols {}: C[{at}] = {g}, want {w}",
                cs.kk,
                cs.cols
            );
        }
    }
}

#[test]
fn tile_products_match_their_definition_on_every_cpu_path() {
    let mut rng = StdRng::seed_from_u64(7);
    let widths = [
        ("host", TargetOptions::default()),
        ("x86-64-v3 (avx2)", TargetOptions { cpu: Some("x86-64-v3".into()), ..Default::default() }),
        ("x86-64-v2 (sse)", TargetOptions { cpu: Some("x86-64-v2".into()), ..Default::default() }),
    ];
    let (mul, sq) = (TileOp::Mul, TileOp::SquaredDifference);
    let mut shapes: Vec<(u32, u32, Init, TileOp)> = vec![
        (6, 64, Init::Zero, mul),
        (6, 64, Init::Scale, mul),
        (1, 1, Init::Load, mul),
        (4, 17, Init::Load, mul),
        (6, 64, Init::Zero, sq),
        (3, 37, Init::Load, sq),
    ];
    for _ in 0..12 {
        let init = [Init::Zero, Init::Load, Init::Scale][rng.random_range(0..3)];
        let op = [mul, sq][rng.random_range(0..2)];
        shapes.push((rng.random_range(1..=6), rng.random_range(1..=64), init, op));
    }
    let mut runs = 0;
    for &(m, n, init, op) in &shapes {
        let f = kernel(m, n, init, op);
        let expanded = expand_tile_products(&f);
        let mut cases: Vec<Case> = Vec::new();
        for kk in [0usize, 1, 7, 64, rng.random_range(0..=300)] {
            for cols in [0, i64::from(n) - 1, i64::from(n), i64::from(n) + 5, rng.random_range(1..=i64::from(n))] {
                cases.push(case(&mut rng, m, n, kk, cols));
            }
        }
        for (name, opts) in &widths {
            crate::backend::llvm::with_jit(&[Export::new(&f, "k")], opts, |j| {
                check(&format!("llvm {name}"), j.entry("k").expect("entry"), &mut cases, m, n, init, op)
            })
            .unwrap_or_else(|e| panic!("{e}"));
            runs += cases.len();
        }
        crate::backend::llvm::with_jit(&[Export::new(&expanded, "k")], &TargetOptions::default(), |j| {
            check("llvm, expanded", j.entry("k").expect("entry"), &mut cases, m, n, init, op)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        crate::backend::cranelift::with_jit(&[Export::new(&f, "k")], &Default::default(), |j| {
            check("cranelift", j.entry("k").expect("entry"), &mut cases, m, n, init, op)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        runs += 2 * cases.len();
    }
    assert!(runs > 1000, "{runs} runs");
}

/// The tile stays in registers: in the assembly of a 6 × 64 tile product (AVX-512: one panel
/// of 24 `zmm` accumulators; AVX2: panels of 6 × 16 in 12 `ymm`), products and squared
/// differences (one more register for the difference), nothing between the first and the last
/// FMA of a panel's `k` loop is stored to the stack.
#[test]
fn tile_accumulators_stay_in_registers() {
    for (op, cpu, reg) in [
        (TileOp::Mul, "x86-64-v4", "zmm"),
        (TileOp::Mul, "x86-64-v3", "ymm"),
        (TileOp::SquaredDifference, "x86-64-v4", "zmm"),
        (TileOp::SquaredDifference, "x86-64-v3", "ymm"),
    ] {
        let f = kernel(6, 64, Init::Load, op);
        let opts = TargetOptions { cpu: Some(cpu.into()), ..Default::default() };
        let asm = crate::backend::llvm::emit_asm(&[Export::new(&f, "k")], &opts).unwrap_or_else(|e| panic!("{e}"));
        let lines: Vec<&str> = asm.lines().map(str::trim).collect();
        let fma = |l: &str| l.starts_with("vfmadd") && l.contains(reg);
        let first = lines.iter().position(|l| fma(l)).unwrap_or_else(|| panic!("{cpu} {op:?}: no {reg} FMA in\n{asm}"));
        // The first panel's loop: from its first FMA to the backward branch after its last.
        let end = lines[first..].iter().position(|l| l.starts_with('j') && !l.starts_with("jmp")).map_or(lines.len(), |k| first + k);
        let body = &lines[first..end];
        let fmas = body.iter().filter(|l| fma(l)).count();
        assert!(fmas >= 12, "{cpu} {op:?}: only {fmas} FMAs in the loop body:\n{}", body.join("\n"));
        let spills: Vec<&&str> =
            body.iter().filter(|l| l.starts_with("vmov") && (l.ends_with("(%rsp)") || l.ends_with("(%rbp)"))).collect();
        assert!(spills.is_empty(), "{cpu} {op:?}: stack stores in the tile loop: {spills:?}\n{}", body.join("\n"));
    }
}
