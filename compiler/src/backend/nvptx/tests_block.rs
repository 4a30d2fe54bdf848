//! The GPU dialect (block parallels, barriers, shared memory) on hand-written KIR: emulated
//! with concurrent threads per block against a host computation, rejected by the CPU
//! validator, and lowered to PTX with `bar.sync` and `.shared` arrays (ptxas where installed).

use tfmc_runtime::gpu::{DevPtr, GpuDevice};

use super::emu::{EmuDevice, with_emulator};
use super::*;
use crate::backend::test_kir::{K, bin, bpar, for_, i, ld, par, set, st, v};
use crate::schedule::kir::*;

const T: u32 = 32;

fn if_(cond: Expr, then: Block) -> Stmt {
    Stmt::If { cond, then, els: vec![] }
}

/// Per block of `T` elements of `x` (length `n`, the last block partial, missing elements 0):
/// `o[g] = Σ block + x[block's mirror of g]`, through two shared arrays, a tree reduction with
/// a barrier per level inside a uniform loop, and a reversed read across threads.
fn block_sum() -> Func {
    let mut k = K::new("bsum");
    let x = k.arg("x", Ty::I64);
    let o = k.arg("o", Ty::I64);
    let n = k.dim("n");
    let sum = k.shared("sum", Ty::I64, T);
    let rev = k.shared("rev", Ty::I64, T);
    let blk = k.var("blk", Ty::I64);
    let t = k.thread();
    let (g, xv, r, half) = (k.var("g", Ty::I64), k.var("xv", Ty::I64), k.var("r", Ty::I64), k.var("half", Ty::I64));
    let barrier = || Stmt::Barrier;
    let tl = i64::from(T);
    let nblocks = bin(BinOp::Div, bin(BinOp::Add, v(n), i(tl - 1)), i(tl));
    let in_range = || bin(BinOp::Lt, v(g), v(n));
    // Clamp so that dead threads load in bounds (n > 0 whenever a block exists).
    let clamped = bin(BinOp::Min, v(g), bin(BinOp::Sub, v(n), i(1)));
    k.body(vec![bpar(
        blk,
        nblocks,
        T,
        vec![
            set(g, bin(BinOp::Add, bin(BinOp::Mul, v(blk), i(tl)), v(t))),
            set(xv, Expr::Select { c: Box::new(in_range()), a: Box::new(ld(x, clamped)), b: Box::new(i(0)) }),
            st(sum, v(t), v(xv)),
            st(rev, bin(BinOp::Sub, i(tl - 1), v(t)), v(xv)),
            barrier(),
            for_(
                r,
                i(0),
                i(5),
                vec![
                    set(half, bin(BinOp::Div, i(tl / 2), bin(BinOp::Shl, i(1), v(r)))),
                    if_(
                        bin(BinOp::Lt, v(t), v(half)),
                        vec![st(sum, v(t), bin(BinOp::Add, ld(sum, v(t)), ld(sum, bin(BinOp::Add, v(t), v(half)))))],
                    ),
                    barrier(),
                ],
            ),
            if_(in_range(), vec![st(o, v(g), bin(BinOp::Add, ld(sum, i(0)), ld(rev, v(t))))]),
        ],
    )])
}

fn want(x: &[i64]) -> Vec<i64> {
    let t = T as usize;
    (0..x.len())
        .map(|g| {
            let b = g / t;
            let total: i64 = x[b * t..((b + 1) * t).min(x.len())].iter().sum();
            let m = b * t + (t - 1 - g % t);
            total + x.get(m).copied().unwrap_or(0)
        })
        .collect()
}

fn alloc_i64(dev: &mut EmuDevice<'_>, v: &[i64]) -> DevPtr {
    let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let p = dev.alloc_zeroed(b.len().max(8)).unwrap();
    dev.upload(p, &b).unwrap();
    p
}

fn read_i64(dev: &mut EmuDevice<'_>, p: DevPtr, n: usize) -> Vec<i64> {
    let mut b = vec![0u8; 8 * n];
    dev.download(p, &mut b).unwrap();
    b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn block_parallel_threads_meet_at_barriers_and_share_memory() {
    let f = block_sum();
    assert_eq!(launch_info(&f).unwrap().block, T, "the kernel's segments launch on blocks of T");
    with_emulator(&[Export::new(&f, "k")], |dev| {
        for n in [1usize, 31, 32, 33, 100] {
            let x: Vec<i64> = (0..n as i64).map(|j| j * j % 17 - 5).collect();
            let xp = alloc_i64(dev, &x);
            let op = dev.alloc_zeroed(8 * n).unwrap();
            let args = [
                alloc_i64(dev, &[xp as i64, op as i64]),
                alloc_i64(dev, &[n as i64]),
                dev.alloc_zeroed(8).unwrap(),
                dev.alloc_zeroed(8).unwrap(),
                dev.alloc_zeroed(16).unwrap(),
            ];
            dev.launch("k_prep", 1, 1, args).unwrap();
            let blocks = n.div_ceil(T as usize);
            assert_eq!(read_i64(dev, args[4], 2), vec![0, (blocks * T as usize) as i64], "T threads per block counted");
            // Fewer blocks than iterations: the block-stride loop covers the rest.
            let grid = blocks.div_ceil(2) as u32;
            dev.launch("k_seg0", grid, T, args).unwrap();
            assert_eq!(read_i64(dev, op, n), want(&x), "n = {n}");
        }
    })
    .unwrap();
}

#[test]
fn cpu_validation_rejects_the_gpu_dialect() {
    let f = block_sum();
    let e = crate::schedule::validate::check(&f).unwrap_err();
    assert!(e.contains("GPU dialect"), "{e}");
    crate::schedule::validate::check_gpu(&f).unwrap();
    let opts = crate::backend::llvm::TargetOptions::default();
    let e = crate::backend::llvm::jit::with_jit(&[Export::new(&f, "k")], &opts, |_| ()).unwrap_err();
    assert!(e.to_string().contains("GPU dialect"), "{e}");
}

/// One kernel per construct of the GPU dialect, each alone: the CPU validator and both CPU
/// backends name the construct.
#[test]
fn cpu_backends_reject_each_gpu_construct_by_kind() {
    let kernel = |what: &str| {
        let mut k = K::new("one");
        let o = k.arg("o", Ty::I64);
        let b = k.var("b", Ty::I64);
        let body = match what {
            "a block parallel" => vec![bpar(b, i(1), 32, vec![st(o, i(0), i(1))])],
            "a barrier" => vec![Stmt::Barrier],
            "shared buffer" => {
                let s = k.shared("s", Ty::I64, 32);
                vec![st(s, i(0), i(1))]
            }
            "the thread-index variable" => {
                k.thread();
                vec![st(o, i(0), i(1))]
            }
            _ => unreachable!(),
        };
        k.body(body)
    };
    for what in ["a block parallel", "a barrier", "shared buffer", "the thread-index variable"] {
        let f = kernel(what);
        let e = crate::schedule::validate::check(&f).unwrap_err();
        assert!(e.starts_with(what) && e.contains("GPU dialect"), "{what}: {e}");
        let exports = [Export::new(&f, "k")];
        let e = crate::backend::llvm::emit_llvm(&exports, &crate::backend::llvm::TargetOptions::default()).unwrap_err();
        assert!(e.to_string().contains(what), "{what}: {e}");
        let e = crate::backend::cranelift::emit_clif(&exports, &Default::default()).unwrap_err();
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
}

#[test]
fn gpu_validation_checks_the_dialect_rules() {
    // A failure inside a block parallel.
    let mut f = block_sum();
    if let Stmt::BlockParallel { body, .. } = &mut f.body[0] {
        body.push(Stmt::Fail { code: 7 });
    }
    let e = crate::schedule::validate::check_gpu(&f).unwrap_err();
    assert!(e.contains("failure inside a block parallel"), "{e}");
    // A barrier outside any block parallel.
    let mut f = block_sum();
    f.body.push(Stmt::Barrier);
    let e = crate::schedule::validate::check_gpu(&f).unwrap_err();
    assert!(e.contains("barrier outside"), "{e}");
    // A thread count that is not a multiple of 32.
    let mut f = block_sum();
    let Stmt::BlockParallel { threads, .. } = &mut f.body[0] else { unreachable!() };
    *threads = 48;
    let e = crate::schedule::validate::check_gpu(&f).unwrap_err();
    assert!(e.contains("multiple of 32"), "{e}");
    // The thread variable outside a block parallel.
    let mut k = K::new("t");
    let o = k.arg("o", Ty::I64);
    let t = k.thread();
    let j = k.var("j", Ty::I64);
    let f = k.body(vec![par(j, i(4), vec![st(o, v(j), v(t))])]);
    let e = crate::schedule::validate::check_gpu(&f).unwrap_err();
    assert!(e.contains("thread variable"), "{e}");
}

#[test]
fn block_parallels_lower_to_bar_sync_and_shared_arrays() {
    let f = block_sum();
    for sm in [80, 90] {
        let text = emit_ptx(&[Export::new(&f, "k")], &NvptxOptions { sm, ..Default::default() }).unwrap();
        assert!(text.contains("bar.sync") || text.contains("barrier.sync"), "a barrier:\n{text}");
        assert!(text.contains(".shared .align 16 .b8 k_seg0_shared0[256]"), "shared arrays:\n{text}");
        assert!(text.contains(".maxntid 32"), "blocks of 32:\n{text}");
        super::tests::assemble_if_installed(&text, &format!("nvptx_block_sm{sm}"), sm);
    }
}
