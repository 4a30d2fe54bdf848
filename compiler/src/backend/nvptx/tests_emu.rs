//! The emulated entries on hand-written KIR: the protocol driven by hand (status slots, grid
//! stride, private iteration state, failures, bad dims), the runtime's driver
//! (`tfmc_runtime::gpu::run`) on a hand-made manifest, and the device's memory checks.

use std::collections::BTreeMap;

use tfmc_runtime::gpu::{DevPtr, GpuDevice};
use tfmc_runtime::manifest::{DimSpec, GpuLaunch, KernelManifest, TensorSpec};
use tfmc_runtime::{DType, RuntimeError, Tensor};

use super::emu::{EmuDevice, with_emulator};
use super::*;
use crate::backend::test_kir::{K, bin, i, ld, par, set, st, v};
use crate::schedule::kir::*;

fn f32c(x: f32) -> Expr {
    Expr::Const(Const::F32(x))
}

fn bytes_i64(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn alloc_with(dev: &mut EmuDevice<'_>, bytes: &[u8]) -> DevPtr {
    let p = dev.alloc_zeroed(bytes.len()).unwrap();
    dev.upload(p, bytes).unwrap();
    p
}

fn read_i64(dev: &mut EmuDevice<'_>, p: DevPtr, n: usize) -> Vec<i64> {
    let mut b = vec![0u8; 8 * n];
    dev.download(p, &mut b).unwrap();
    b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect()
}

/// The five protocol arrays for `bufs` (device pointers), `dims`, no params, `n_heap` heap
/// slots and `n_status` status slots.
fn arrays(dev: &mut EmuDevice<'_>, bufs: &[DevPtr], dims: &[i64], n_heap: usize, n_status: usize) -> [DevPtr; 5] {
    let b: Vec<i64> = bufs.iter().map(|&p| p as i64).collect();
    [
        alloc_with(dev, &bytes_i64(&b)),
        alloc_with(dev, &bytes_i64(dims)),
        dev.alloc_zeroed(8).unwrap(),
        dev.alloc_zeroed(8 * n_heap.max(1)).unwrap(),
        dev.alloc_zeroed(8 * n_status).unwrap(),
    ]
}

/// `acc = 5` in the spine; `parallel j { acc = acc + j; o[j] = acc }`: every iteration starts
/// from the spine's `acc`, however many iterations a thread runs.
fn private_state() -> Func {
    let mut k = K::new("priv");
    let o = k.arg("o", Ty::I64);
    let n = k.dim("n");
    let (acc, j) = (k.var("acc", Ty::I64), k.var("j", Ty::I64));
    k.body(vec![set(acc, i(5)), par(j, v(n), vec![set(acc, bin(BinOp::Add, v(acc), v(j))), st(o, v(j), v(acc))])])
}

#[test]
fn grid_stride_loops_cover_every_iteration_from_the_spine_state() {
    let f = private_state();
    with_emulator(&[Export::new(&f, "k")], |dev| {
        assert_eq!(dev.entries(), vec!["k_prep".to_string(), "k_seg0".to_string()]);
        let n = 23;
        let o = dev.alloc_zeroed(8 * n).unwrap();
        let args = arrays(dev, &[o], &[n as i64], 0, 2);
        dev.launch("k_prep", 1, 1, args).unwrap();
        assert_eq!(read_i64(dev, args[4], 2), vec![0, n as i64], "prep writes the segment's count");
        // 2 blocks of 3 threads: each thread runs about 4 iterations.
        dev.launch("k_seg0", 2, 3, args).unwrap();
        let want: Vec<i64> = (0..n as i64).map(|j| 5 + j).collect();
        assert_eq!(read_i64(dev, o, n), want);
        assert_eq!(dev.stats().threads, 1 + 6);
    })
    .unwrap();
}

#[test]
fn prep_reports_heap_sizes_counts_and_failures_in_status() {
    // Heap buffers t (f64, n + 2 elements), u (i32, len param-free: 3); a wrapped rank-0 store;
    // a parallel loop over n skipped by prep; a negative count clamps to 0.
    let mut k = K::new("k");
    let o = k.arg("o", Ty::F64);
    let (t, u) = (k.heap("t", Ty::F64), k.heap("u", Ty::I32));
    let n = k.dim("n");
    let (j, q) = (k.var("j", Ty::I64), k.var("q", Ty::I64));
    let f = k.body(vec![
        Stmt::Alloc { buf: t, len: bin(BinOp::Add, v(n), i(2)), zeroed: true },
        Stmt::Alloc { buf: u, len: i(3), zeroed: true },
        st(o, i(0), Expr::Const(Const::F64(1.0))),
        par(j, v(n), vec![st(t, v(j), Expr::Const(Const::F64(2.0)))]),
        par(q, bin(BinOp::Sub, i(0), v(n)), vec![st(u, v(q), Expr::Const(Const::I32(1)))]),
    ]);
    assert_eq!(launch_info(&f).unwrap().heap_elem_bytes, vec![8, 4]);
    with_emulator(&[Export::new(&f, "k")], |dev| {
        let o = dev.alloc_zeroed(8).unwrap();
        let args = arrays(dev, &[o], &[7], 2, 1 + 2 + 3);
        dev.launch("k_prep", 1, 1, args).unwrap();
        assert_eq!(read_i64(dev, args[4], 6), vec![0, 9, 3, 1, 7, 0]);
        // A negative dim: BadDims before anything else.
        let args = arrays(dev, &[o], &[-1], 2, 6);
        dev.launch("k_prep", 1, 1, args).unwrap();
        assert_eq!(read_i64(dev, args[4], 6), vec![i64::from(fail_code(FailKind::BadDims, 0)), 0, 0, 0, 0, 0]);
    })
    .unwrap();
    // A heap length whose byte size overflows i64: OutOfMemory at site 0.
    let mut k = K::new("k");
    let t = k.heap("t", Ty::F64);
    let n = k.dim("n");
    let f = k.body(vec![Stmt::Alloc { buf: t, len: bin(BinOp::Shl, v(n), i(60)), zeroed: true }]);
    with_emulator(&[Export::new(&f, "k")], |dev| {
        let args = arrays(dev, &[], &[1], 1, 2);
        dev.launch("k_prep", 1, 1, args).unwrap();
        assert_eq!(read_i64(dev, args[4], 2), vec![i64::from(fail_code(FailKind::OutOfMemory, 0)), 0]);
    })
    .unwrap();
}

/// `o[j] = x[x[j]]` with the subscript checked: `Fail(OutOfRange, site 0)` when out of range.
fn gather() -> Func {
    let mut k = K::new("gather");
    let (x, o) = (k.arg("x", Ty::I64), k.arg("o", Ty::I64));
    let n = k.dim("n");
    let (j, s) = (k.var("j", Ty::I64), k.var("s", Ty::I64));
    let bad = bin(BinOp::Or, bin(BinOp::Lt, v(s), i(0)), bin(BinOp::Ge, v(s), v(n)));
    let mut f = k.body(vec![par(
        j,
        v(n),
        vec![
            set(s, ld(x, v(j))),
            Stmt::If {
                cond: bad,
                then: vec![Stmt::Fail { code: fail_code(FailKind::OutOfRange, 0) }],
                els: vec![st(o, v(j), ld(x, v(s)))],
            },
        ],
    )]);
    f.sites = vec!["subscript of 'x' in 'o'".into()];
    f
}

fn gather_manifest(f: &Func) -> KernelManifest {
    let spec = |name: &str| TensorSpec { name: name.into(), dtype: "i64".into(), shape: vec![DimSpec::Dim("n".into())] };
    let info = launch_info(f).unwrap();
    KernelManifest {
        name: "gather".into(),
        symbol: "k".into(),
        doc: String::new(),
        inputs: vec![spec("x")],
        outputs: vec![spec("o")],
        dims: vec!["n".into()],
        params: vec![],
        sites: f.sites.clone(),
        gpu: Some(GpuLaunch { block: info.block, heap_elem_bytes: info.heap_elem_bytes, segments: info.segments }),
    }
}

fn i64_tensor(v: &[i64]) -> BTreeMap<String, Tensor> {
    let t = Tensor::new(DType::I64, vec![v.len()], tfmc_runtime::TensorData::I(v.to_vec())).unwrap();
    [("x".to_string(), t)].into()
}

#[test]
fn the_runtime_driver_runs_emulated_kernels_and_maps_segment_failures_as_the_cpu_path() {
    let f = gather();
    let m = gather_manifest(&f);
    let ok = i64_tensor(&[2, 0, 1, 1]);
    let bad = i64_tensor(&[2, 0, 9, 1]);
    let params = BTreeMap::new();
    with_emulator(&[Export::new(&f, "k")], |dev| {
        let out = tfmc_runtime::gpu::run(dev, &m, &ok, &params).unwrap();
        assert_eq!(out["o"].to_f64_vec(), vec![1.0, 2.0, 0.0, 0.0]);
        let e = tfmc_runtime::gpu::run(dev, &m, &bad, &params).unwrap_err();
        // The CPU path's error for the same call.
        let cpu = crate::backend::llvm::with_jit(&[Export::new(&f, "k")], &Default::default(), |j| {
            let mut m = m.clone();
            m.gpu = None;
            // SAFETY: the entry is compiled from `f`, whose ABI the manifest describes.
            unsafe { tfmc_runtime::call::call(j.entry("k").unwrap(), &m, &bad, &params) }.unwrap_err()
        })
        .unwrap();
        assert_eq!(e.to_string(), cpu.to_string());
        assert!(matches!(e, RuntimeError::Kernel { kind: FailKind::OutOfRange, .. }), "{e}");
        // Every device allocation was freed by the driver.
        assert_eq!(dev.live_allocations(), 0);
        assert_eq!(dev.stats().preps, 2);
    })
    .unwrap();
}

#[test]
fn the_first_failure_wins_and_later_threads_stop() {
    let f = gather();
    with_emulator(&[Export::new(&f, "k")], |dev| {
        let n = 6;
        let x = alloc_with(dev, &bytes_i64(&[1, -1, 1, 50, 1, 1]));
        let o = dev.alloc_zeroed(8 * n).unwrap();
        let args = arrays(dev, &[x, o], &[n as i64], 0, 2);
        dev.launch("k_seg0", 1, n as u32, args).unwrap();
        assert_eq!(read_i64(dev, args[4], 1), vec![i64::from(fail_code(FailKind::OutOfRange, 0))]);
        // Thread 0 ran; the threads after the failing one skipped their iteration (status is
        // checked at entry), so they neither stored nor failed again.
        assert_eq!(read_i64(dev, o, n), vec![-1, 0, 0, 0, 0, 0]);
        // A launch finding status[0] set does nothing.
        dev.upload(x, &bytes_i64(&[1, 1, 1, 1, 1, 1])).unwrap();
        dev.launch("k_seg0", 1, n as u32, args).unwrap();
        assert_eq!(read_i64(dev, o, n), vec![-1, 0, 0, 0, 0, 0]);
    })
    .unwrap();
}

#[test]
fn the_device_checks_addresses_entries_and_sizes() {
    let f = private_state();
    with_emulator(&[Export::new(&f, "k")], |dev| {
        let p = dev.alloc_zeroed(16).unwrap();
        assert_eq!(p % 64, 0, "allocations are 64-byte aligned");
        dev.upload(p + 8, &[1; 8]).unwrap();
        let e = dev.upload(p + 9, &[1; 8]).unwrap_err();
        assert!(e.to_string().contains("not inside an allocation"), "{e}");
        let mut b = [0u8; 17];
        assert!(dev.download(p, &mut b).is_err());
        let e = dev.launch("nope", 1, 1, [p; 5]).unwrap_err();
        assert!(e.to_string().contains("no entry 'nope' (entries: k_prep, k_seg0)"), "{e}");
        let e = dev.launch("k_prep", 1, 1, [p, p, p, p, p + 8]).unwrap_err();
        assert!(e.to_string().contains("argument 4"), "{e}");
        assert!(dev.launch("k_prep", 0, 1, [p; 5]).is_err());
        dev.free(p);
        assert!(dev.upload(p, &[0]).is_err(), "freed memory is gone");
        dev.free(p);
        assert_eq!(dev.live_allocations(), 0);
        let e = dev.alloc_zeroed(usize::MAX).unwrap_err();
        assert!(e.to_string().contains("emulated allocation"), "{e}");
        // Left allocated on purpose: the device frees it when dropped.
        dev.alloc_zeroed(1).unwrap();
    })
    .unwrap();
}

#[test]
fn several_exports_share_one_emulator() {
    let (a, b) = (private_state(), gather());
    with_emulator(&[Export::new(&a, "a"), Export::new(&b, "b")], |dev| {
        assert_eq!(dev.entries(), ["a_prep", "a_seg0", "b_prep", "b_seg0"]);
    })
    .unwrap();
    let e = with_emulator(&[Export::new(&a, "x"), Export::new(&b, "x")], |_| ()).unwrap_err();
    assert!(e.to_string().contains("exported twice"), "{e}");
}

#[test]
fn float_math_matches_the_host() {
    // o[j] = x[j] % 0.75 + tanh(x[j]) in f32 (host libm in the emulation).
    let mut k = K::new("m");
    let (x, o) = (k.arg("x", Ty::F32), k.arg("o", Ty::F32));
    let n = k.dim("n");
    let j = k.var("j", Ty::I64);
    let f = k.body(vec![par(
        j,
        v(n),
        vec![st(
            o,
            v(j),
            bin(BinOp::Add, bin(BinOp::Rem, ld(x, v(j)), f32c(0.75)), crate::backend::llvm::tests::un(UnOp::Tanh, ld(x, v(j)))),
        )],
    )]);
    let xs: Vec<f32> = (0..9).map(|q| q as f32 * 0.37 - 1.5).collect();
    with_emulator(&[Export::new(&f, "k")], |dev| {
        let xb: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
        let xp = alloc_with(dev, &xb);
        let o = dev.alloc_zeroed(4 * xs.len()).unwrap();
        let args = arrays(dev, &[xp, o], &[xs.len() as i64], 0, 2);
        dev.launch("k_seg0", 1, 4, args).unwrap();
        let mut ob = vec![0u8; 4 * xs.len()];
        dev.download(o, &mut ob).unwrap();
        let got: Vec<f32> = ob.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let want: Vec<f32> = xs.iter().map(|x| x % 0.75 + x.tanh()).collect();
        assert_eq!(got, want);
    })
    .unwrap();
}

#[test]
fn half_and_bfloat_buffers_convert_as_on_the_cpu() {
    // o16[j] = x16[j] * 3 (f16), ob[j] = xb[j] * 3 (bf16): exact loads, round-to-nearest-even stores.
    let mut k = K::new("h");
    let (x16, xb) = (k.arg("x16", Ty::F16), k.arg("xb", Ty::BF16));
    let (o16, ob) = (k.arg("o16", Ty::F16), k.arg("ob", Ty::BF16));
    let n = k.dim("n");
    let j = k.var("j", Ty::I64);
    let f = k.body(vec![par(
        j,
        v(n),
        vec![st(o16, v(j), bin(BinOp::Mul, ld(x16, v(j)), f32c(3.0))), st(ob, v(j), bin(BinOp::Mul, ld(xb, v(j)), f32c(3.0)))],
    )]);
    let xs: Vec<f32> = vec![0.1, -2.5, 1e-6, 6e4, 30000.0, f32::NAN, -0.0, 1.0 / 3.0];
    let h: Vec<half::f16> = xs.iter().map(|&x| half::f16::from_f32(x)).collect();
    let b: Vec<half::bf16> = xs.iter().map(|&x| half::bf16::from_f32(x)).collect();
    with_emulator(&[Export::new(&f, "k")], |dev| {
        let hb: Vec<u8> = h.iter().flat_map(|x| x.to_le_bytes()).collect();
        let bb: Vec<u8> = b.iter().flat_map(|x| x.to_le_bytes()).collect();
        let (hp, bp) = (alloc_with(dev, &hb), alloc_with(dev, &bb));
        let (o1, o2) = (dev.alloc_zeroed(2 * xs.len()).unwrap(), dev.alloc_zeroed(2 * xs.len()).unwrap());
        let args = arrays(dev, &[hp, bp, o1, o2], &[xs.len() as i64], 0, 2);
        dev.launch("k_seg0", 2, 4, args).unwrap();
        let mut r1 = vec![0u8; 2 * xs.len()];
        let mut r2 = vec![0u8; 2 * xs.len()];
        dev.download(o1, &mut r1).unwrap();
        dev.download(o2, &mut r2).unwrap();
        for q in 0..xs.len() {
            let g16 = half::f16::from_le_bytes([r1[2 * q], r1[2 * q + 1]]);
            let gb = half::bf16::from_le_bytes([r2[2 * q], r2[2 * q + 1]]);
            let w16 = half::f16::from_f32(h[q].to_f32() * 3.0);
            let wb = half::bf16::from_f32(b[q].to_f32() * 3.0);
            assert!(g16 == w16 || (g16.is_nan() && w16.is_nan()), "f16 {}: {g16} vs {w16}", xs[q]);
            assert!(gb == wb || (gb.is_nan() && wb.is_nan()), "bf16 {}: {gb} vs {wb}", xs[q]);
        }
    })
    .unwrap();
}
