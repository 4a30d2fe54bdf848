//! Tensor-core products ([`Stmt::Mma`]) on hand-written KIR: every thread of a warp gives its
//! fragment elements by the layout of `kir::Mma` and stores its part of `D`; the emulation
//! must reproduce `D = A·B + C` of the whole tiles (with the inputs rounded to the format),
//! the PTX must carry the `mma.sync` instruction for sm_80/sm_90 (assembled by ptxas where
//! installed), and sm_75 must be a clean error.

use tfmc_runtime::gpu::{DevPtr, GpuDevice};

use super::emu::{EmuDevice, with_emulator};
use super::*;
use crate::backend::test_kir::{K, bin, bpar, i, ld, set, st, v};
use crate::schedule::kir::*;

/// Threads per block: two warps, so two products per block.
const T: u32 = 64;

/// `D[w] = A[w]·B[w] + C[w]` for `w` in `0..2·nb` (`A` 16×16, `B` 16×8, `C`/`D` 16×8, row
/// major, one tile per warp).
fn tiles(kind: MmaKind) -> Func {
    let mut k = K::new("mma");
    let (a, b, c) = (k.arg("a", Ty::F32), k.arg("b", Ty::F32), k.arg("c", Ty::F32));
    let d = k.arg("d", Ty::F32);
    let nb = k.dim("nb");
    let blk = k.var("blk", Ty::I64);
    let t = k.thread();
    let (w, g, tg) = (k.var("w", Ty::I64), k.var("g", Ty::I64), k.var("tg", Ty::I64));
    let dv: Vec<Var> = (0..4).map(|j| k.var(&format!("d{j}"), Ty::F32)).collect();
    let add = |x: Expr, y: i64| bin(BinOp::Add, x, i(y));
    let mul = |x: Expr, y: i64| bin(BinOp::Mul, x, i(y));
    let row = |r: i64| add(v(g), r);
    let col = |c: i64| add(mul(v(tg), 2), c);
    let at_a = |r: Expr, cc: Expr| ld(a, bin(BinOp::Add, mul(v(w), 256), bin(BinOp::Add, mul(r, 16), cc)));
    let at_c = |r: Expr, n: Expr| bin(BinOp::Add, mul(v(w), 128), bin(BinOp::Add, mul(r, 8), n));
    let av = vec![
        at_a(row(0), col(0)),
        at_a(row(0), col(1)),
        at_a(row(8), col(0)),
        at_a(row(8), col(1)),
        at_a(row(0), col(8)),
        at_a(row(0), col(9)),
        at_a(row(8), col(8)),
        at_a(row(8), col(9)),
    ];
    let bv = [0, 1, 8, 9].into_iter().map(|kk| ld(b, at_c(col(kk), v(g)))).collect();
    let cpos = [(0, 0), (0, 1), (8, 0), (8, 1)];
    let cv = cpos.iter().map(|&(r, n)| ld(c, at_c(row(r), col(n)))).collect();
    let mut body = vec![
        set(w, bin(BinOp::Add, mul(v(blk), 2), bin(BinOp::Div, v(t), i(32)))),
        set(g, bin(BinOp::Div, bin(BinOp::Rem, v(t), i(32)), i(4))),
        set(tg, bin(BinOp::Rem, v(t), i(4))),
        Stmt::Mma(Box::new(Mma { kind, a: av, b: bv, c: cv, d: dv.clone() })),
    ];
    for (j, &(r, n)) in cpos.iter().enumerate() {
        body.push(st(d, at_c(row(r), col(n)), v(dv[j])));
    }
    k.body(vec![bpar(blk, v(nb), T, body)])
}

fn alloc(dev: &mut EmuDevice<'_>, bytes: &[u8]) -> DevPtr {
    let p = dev.alloc_zeroed(bytes.len().max(8)).unwrap();
    dev.upload(p, bytes).unwrap();
    p
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Runs [`tiles`] on `nb` blocks in the emulation.
fn run(kind: MmaKind, nb: usize, a: &[f32], b: &[f32], c: &[f32]) -> Vec<f32> {
    let f = tiles(kind);
    crate::schedule::validate::check_gpu(&f).unwrap();
    with_emulator(&[Export::new(&f, "k")], |dev| {
        let (ap, bp, cp) = (alloc(dev, &f32_bytes(a)), alloc(dev, &f32_bytes(b)), alloc(dev, &f32_bytes(c)));
        let dp = dev.alloc_zeroed(4 * c.len()).unwrap();
        let ptrs: Vec<u8> = [ap, bp, cp, dp].iter().flat_map(|p| (*p as i64).to_le_bytes()).collect();
        let args = [
            alloc(dev, &ptrs),
            alloc(dev, &(nb as i64).to_le_bytes()),
            dev.alloc_zeroed(8).unwrap(),
            dev.alloc_zeroed(8).unwrap(),
            dev.alloc_zeroed(16).unwrap(),
        ];
        dev.launch("k_prep", 1, 1, args).unwrap();
        dev.launch("k_seg0", nb as u32, T, args).unwrap();
        let mut out = vec![0u8; 4 * c.len()];
        dev.download(dp, &mut out).unwrap();
        out.chunks_exact(4).map(|x| f32::from_le_bytes(x.try_into().unwrap())).collect()
    })
    .unwrap()
}

/// `A·B + C` per tile on the host, with the inputs rounded by `round`.
fn want(tiles: usize, a: &[f32], b: &[f32], c: &[f32], round: impl Fn(f32) -> f32) -> Vec<f32> {
    let mut d = vec![0.0f32; tiles * 128];
    for w in 0..tiles {
        for r in 0..16 {
            for n in 0..8 {
                let dot: f64 = (0..16).map(|k| f64::from(round(a[w * 256 + r * 16 + k])) * f64::from(round(b[w * 128 + k * 8 + n]))).sum();
                d[w * 128 + r * 8 + n] = (dot + f64::from(c[w * 128 + r * 8 + n])) as f32;
            }
        }
    }
    d
}

#[test]
fn emulated_products_follow_the_fragment_layout_and_round_to_the_format() {
    let nb = 3;
    let tiles_n = 2 * nb;
    // Distinct small values: any misplaced element changes the result. 1 + 2^-9 is an f16
    // but not a bf16, so the formats' rounding shows.
    let a: Vec<f32> =
        (0..tiles_n * 256).map(|j| ((j * 7 % 23) as f32 - 11.0) * 0.25 + if j % 5 == 0 { 1.0 / 512.0 } else { 0.0 }).collect();
    let b: Vec<f32> = (0..tiles_n * 128).map(|j| ((j * 5 % 19) as f32 - 9.0) * 0.5).collect();
    let c: Vec<f32> = (0..tiles_n * 128).map(|j| (j % 11) as f32 - 5.0).collect();
    let f16 = |x: f32| half::f16::from_f32(x).to_f32();
    let bf16 = |x: f32| half::bf16::from_f32(x).to_f32();
    assert_eq!(run(MmaKind::F16, nb, &a, &b, &c), want(tiles_n, &a, &b, &c, f16));
    let got = run(MmaKind::BF16, nb, &a, &b, &c);
    assert_eq!(got, want(tiles_n, &a, &b, &c, bf16));
    assert_ne!(got, want(tiles_n, &a, &b, &c, f16), "bf16 inputs are rounded to bf16");
}

#[test]
fn products_lower_to_mma_sync_for_sm80_and_sm90_and_are_an_error_before() {
    for (kind, inst) in [
        (MmaKind::F16, "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"),
        (MmaKind::BF16, "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"),
    ] {
        let f = tiles(kind);
        for sm in [80, 90] {
            let text = emit_ptx(&[Export::new(&f, "k")], &NvptxOptions { sm, ..Default::default() }).unwrap();
            assert!(text.contains(inst), "{inst} for sm_{sm}:\n{text}");
            super::tests::assemble_if_installed(&text, &format!("nvptx_mma_{kind:?}_sm{sm}"), sm);
        }
        let e = emit_ptx(&[Export::new(&f, "k")], &NvptxOptions { sm: 75, ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("need sm_80 or newer"), "{e}");
    }
    // The CPU backends never see one: validation rejects it as GPU dialect.
    let e = crate::schedule::validate::check(&tiles(MmaKind::F16)).unwrap_err();
    assert!(e.contains("GPU dialect"), "{e}");
}
