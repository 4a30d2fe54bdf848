//! The GPU attention plan (`schedule::attention::gpu`) on the lib's attention kernels through
//! the emulated launch protocol (blocks of 32 threads) against the interpreter: sizes of 1,
//! rows not a multiple of the block, keys not a multiple of the key tile.

use std::collections::BTreeMap;

use crate::driver::{CompileOptions, Gpu, Target};

/// The GPU emulation with blocks of 32 threads (one warp: fast to emulate).
fn emu32() -> Target {
    Target::GpuEmu(Gpu { threads: 32, ..Gpu::default() })
}

fn lib(file: &str) -> crate::Program {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lib").join(file);
    crate::load(&path).unwrap_or_else(|e| panic!("{file}: {e:?}"))
}

#[test]
fn lib_attention_kernels_on_the_gpu_plan_match_the_interpreter() {
    let opts = CompileOptions::default();
    let target = emu32();
    let mut planned = 0;
    for (file, kernel) in [
        ("sdpa.tfm", None),
        ("causal.tfm", None),
        ("window.tfm", None),
        ("alibi.tfm", None),
        ("softcap.tfm", None),
        ("gqa.tfm", None),
        ("varlen.tfm", None),
    ] {
        let program = lib(file);
        for k in &program.kernels {
            if kernel.is_some_and(|n: &str| n != k.name) {
                continue;
            }
            let prepared = crate::driver::prepare(&program, &k.name, &opts, &target).unwrap();
            if crate::schedule::kir::gpu::block_threads(&prepared.scheduled.func.body).is_some() {
                planned += 1;
            }
            for (seed, (p, m)) in [(1usize, 1usize), (33, 17), (5, 40), (40, 3)].into_iter().enumerate() {
                let d: BTreeMap<String, usize> = k
                    .dims
                    .iter()
                    .map(|dim| {
                        let v = match dim.name.as_str() {
                            "P" | "T" => p,
                            "M" => m,
                            "B" => 1,
                            "H" => 2,
                            _ => 3,
                        };
                        (dim.name.clone(), v)
                    })
                    .collect();
                let inputs = crate::inputs::random_inputs(&program, &k.name, &d, seed as u64).unwrap();
                let params = BTreeMap::new();
                let want = crate::interp::run_exact(&program, &k.name, &inputs, &params);
                let got = crate::driver::run(&program, &k.name, &inputs, &params, &opts, &target).map(|r| r.outputs);
                let at = format!("{file}/{} dims {d:?}", k.name);
                match (want, got) {
                    (Ok(want), Ok(got)) => {
                        for (name, w) in &want {
                            let (g, w) = (got[name].to_f64_vec(), w.to_f64_vec());
                            let scale = w.iter().fold(1.0f64, |a, x| if x.is_finite() { a.max(x.abs()) } else { a });
                            for (i, (a, b)) in g.iter().zip(&w).enumerate() {
                                let ok = (a.is_nan() && b.is_nan()) || (a - b).abs() <= 2e-4 * scale;
                                assert!(ok, "{at}: {name}[{i}] = {a}, interpreter {b}");
                            }
                        }
                    }
                    (Err(_), Err(_)) => {}
                    (w, g) => panic!("{at}: interpreter {:?} vs gpu {:?}", w.err(), g.err().map(|e| e.to_string())),
                }
            }
        }
    }
    assert!(planned >= 5, "only {planned} kernels got the GPU attention plan");
}

/// Decode shapes (one or a few rows against hundreds of keys) take the split-K path: the
/// block parallel writes partials and the combine merges them. Checked against the
/// interpreter with ordinary, ±1e4 and fully masked (`W = 0`) logits.
#[test]
fn split_k_decode_matches_the_interpreter() {
    let opts = CompileOptions::default();
    let target = emu32();
    type Params<'a> = &'a [(&'a str, i64)];
    let cases: [(&str, &str, Params<'_>); 5] = [
        ("sdpa.tfm", "sdpa", &[]),
        ("causal.tfm", "causal", &[]),
        ("window.tfm", "window", &[("W", 40)]),
        ("window.tfm", "window", &[("W", 0)]),
        ("alibi.tfm", "alibi", &[]),
    ];
    for (file, kernel, params) in cases {
        let program = lib(file);
        let prepared = crate::driver::prepare(&program, kernel, &opts, &target).unwrap();
        let combine = prepared.scheduled.func.vars.iter().any(|v| v.name.ends_with(".combine"));
        assert!(combine, "{file}/{kernel}: no split-K combine in the schedule");
        let shapes = [(1usize, 300usize, 1.0f64), (3, 257, 1.0), (1, 100, 1e4), (2, 33, 1.0)];
        let dims: Vec<[(&str, usize); 6]> =
            shapes.iter().map(|&(p, m, _)| [("P", p), ("M", m), ("B", 1), ("H", 2), ("E", 5), ("F", 5)]).collect();
        let cases: Vec<Case<'_>> = dims.iter().zip(shapes).enumerate().map(|(i, (d, s))| (&d[..], 7 + i as u64, s.2)).collect();
        run_cases(&program, &prepared, file, kernel, params, &cases, 2e-4);
    }
}

/// One run of [`run_cases`]: dims, seed, the factor Q is scaled by.
type Case<'a> = (&'a [(&'a str, usize)], u64, f64);

/// Builds `prepared` (kernel `kernel` of `program`, GPU-prepared) once for the emulation and
/// runs it on seeded random inputs for every case (dims, seed, Q scaled by a factor) with
/// `params`; compares each with the interpreter within `tol` of the output's magnitude.
fn run_cases(
    program: &crate::Program,
    prepared: &crate::driver::Prepared,
    file: &str,
    kernel: &str,
    params: &[(&str, i64)],
    cases: &[Case<'_>],
    tol: f64,
) {
    let k = program.kernels.iter().find(|k| k.name == kernel).unwrap();
    let params: BTreeMap<String, tfmc_runtime::Scalar> = params.iter().map(|(n, v)| (n.to_string(), tfmc_runtime::Scalar::I(*v))).collect();
    let ex = [crate::backend::Export::new(&prepared.scheduled.func, prepared.manifest.symbol.clone())];
    super::emu::with_emulator(&ex, |dev| {
        for &(dims, seed, scale) in cases {
            let d: BTreeMap<String, usize> =
                k.free_dims().map(|dim| (dim.name.clone(), dims.iter().find(|(n, _)| *n == dim.name).map_or(2, |x| x.1))).collect();
            let mut inputs = crate::inputs::random_inputs(program, kernel, &d, seed).unwrap();
            if scale != 1.0 {
                let q = inputs.get_mut("Q").unwrap();
                let v: Vec<f64> = q.to_f64_vec().iter().map(|x| x * scale).collect();
                *q = tfmc_runtime::Tensor::from_f64(q.dtype(), q.shape().to_vec(), v).unwrap();
            }
            let at = format!("{file}/{kernel} {params:?} dims {d:?} x{scale}");
            let want = crate::interp::run_exact(program, kernel, &inputs, &params).unwrap_or_else(|e| panic!("{at}: {e:?}"));
            let got = tfmc_runtime::gpu::run(dev, &prepared.manifest, &inputs, &params).unwrap_or_else(|e| panic!("{at}: {e}"));
            for (name, w) in &want {
                let (g, w) = (got[name].to_f64_vec(), w.to_f64_vec());
                let mag = w.iter().fold(1e-30f64, |a, x| if x.is_finite() { a.max(x.abs()) } else { a });
                for (i, (a, b)) in g.iter().zip(&w).enumerate() {
                    let ok = (a.is_nan() && b.is_nan()) || (a - b).abs() <= tol * mag;
                    assert!(ok, "{at}: {name}[{i}] = {a}, interpreter {b}");
                }
            }
        }
    })
    .unwrap();
}

/// `lib/<file>` with every kernel's `f32` inputs declared as `fmt` instead (outputs stay f32).
fn lib_in(file: &str, fmt: &str) -> crate::Program {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lib").join(file);
    let text: String = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| match l.split_once("->") {
            Some((ins, outs)) if l.starts_with("kernel") => format!("{}->{outs}\n", ins.replace("f32[", &format!("{fmt}["))),
            _ => format!("{l}\n"),
        })
        .collect();
    let l = crate::load::load_text(file, &text).unwrap_or_else(|e| panic!("{file}: {e:?}"));
    crate::check::check_program(l.sources, &l.files).unwrap_or_else(|e| panic!("{file} in {fmt}: {e:?}")).0
}

/// The lib's attention kernels with f16 and with bf16 tensors take the tensor-core plan
/// (`schedule::attention::tc`, `Stmt::Mma`) and match the interpreter within the format's
/// precision (the softmax weights are rounded to it before `P·V`): odd sizes, rows and keys
/// not multiples of the tiles, `E`/`F` not multiples of 16/8, the specialized head sizes
/// (64, 128: block parallels of their own after the bounds), decode (split-K), ±1e4 logits
/// and fully masked rows.
#[test]
fn half_attention_on_tensor_cores_matches_the_interpreter() {
    let opts = CompileOptions::default();
    let target = emu32();
    for (fmt, tol) in [("f16", 3e-3), ("bf16", 2e-2)] {
        for (file, kernel, params) in [
            ("sdpa.tfm", "sdpa", &[][..]),
            ("causal.tfm", "causal", &[]),
            ("window.tfm", "window", &[("W", 9)][..]),
            ("window.tfm", "window", &[("W", 0)][..]),
            ("alibi.tfm", "alibi", &[]),
            ("softcap.tfm", "softcap", &[]),
        ] {
            let program = lib_in(file, fmt);
            let prepared = crate::driver::prepare(&program, kernel, &opts, &target).unwrap();
            assert!(crate::schedule::kir::gpu::has_mma(&prepared.scheduled.func.body), "{file}/{kernel} in {fmt}: no tensor-core plan");
            // The head sizes with block parallels of their own only where the kernel is sdpa
            // (the emulation of their wide tiles is slow).
            let mut shapes = vec![
                (1usize, 1usize, 3usize, 5usize, 1.0f64),
                (33, 17, 20, 12, 1.0),
                (5, 70, 16, 8, 1.0),
                (40, 3, 7, 9, 1.0),
                (17, 33, 12, 16, 1e4),
            ];
            if kernel == "sdpa" {
                shapes.extend([(20, 40, 64, 64, 1.0), (3, 20, 128, 128, 1.0)]);
            }
            let dims: Vec<[(&str, usize); 6]> =
                shapes.iter().map(|&(p, m, ed, fd, _)| [("P", p), ("M", m), ("E", ed), ("F", fd), ("B", 1), ("H", 2)]).collect();
            let cases: Vec<Case<'_>> = dims.iter().zip(&shapes).enumerate().map(|(i, (d, s))| (&d[..], 11 + i as u64, s.4)).collect();
            run_cases(&program, &prepared, file, kernel, params, &cases, tol);
        }
    }
}
