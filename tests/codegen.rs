//! Golden tests of the code generators' inputs and outputs for the standard library, so that a
//! change to the schedule or a backend shows up as a snapshot diff to review:
//! - `snapshots/kir_cpu`: the KIR of every `lib/` kernel on the CPU schedule;
//! - `snapshots/kir_sm80`, `snapshots/kir_sm90`: the KIR of every `lib/` kernel on the GPU
//!   schedule (block-parallel plans, tensor cores from sm_80);
//! - `snapshots/ptx`: the PTX of a few kernels (f32 block plan, tensor-core plan, generic plan,
//!   split-K decode) for sm_80 and sm_90;
//! - `snapshots/llvm`: the LLVM IR the CPU backend emits (unoptimized, for a fixed CPU so the
//!   text does not depend on the host) for a few kernels.
//!
//! Bless with `INSTA_UPDATE=always cargo test -p tfmc-conformance --test codegen`.

use std::path::{Path, PathBuf};

use tfmc::backend::llvm::TargetOptions;
use tfmc::driver::{self, CompileOptions, Stage, Target};

/// `lib/*.tfm`, sorted, relative to the repo root (made the working directory).
fn lib_files() -> Vec<PathBuf> {
    std::env::set_current_dir(tfmc_conformance::repo_root()).expect("repo root exists");
    let files = tfmc_conformance::tfm_files(Path::new("lib"));
    assert!(files.len() >= 12, "expected the whole standard library, found {files:?}");
    files
}

fn stem(path: &Path) -> String {
    path.file_stem().expect("file name").to_string_lossy().to_string()
}

/// The names of the kernels defined in `path` itself (not in a file it `use`s).
fn own_kernels(program: &tfmc::Program, path: &Path) -> Vec<String> {
    program.kernels.iter().filter(|k| program.sources.get(k.span.file).name == path.display().to_string()).map(|k| k.name.clone()).collect()
}

fn snapshot(folder: &str, name: &str, text: &str) {
    insta::with_settings!({snapshot_path => format!("snapshots/{folder}"), prepend_module_to_snapshot => false}, {
        insta::assert_snapshot!(name.to_string(), text);
    });
}

/// The KIR of every kernel of every `lib/` file for `target`, one snapshot per file.
fn kir_of_every_lib_kernel(folder: &str, target: &Target) {
    let mut n = 0;
    for path in lib_files() {
        let program = tfmc::load(&path).unwrap_or_else(|d| panic!("{} does not check:\n{d}", path.display()));
        let mut text = String::new();
        for name in own_kernels(&program, &path) {
            let k = driver::prepare(&program, &name, &CompileOptions::default(), target)
                .unwrap_or_else(|e| panic!("{}: {name}: {e}", path.display()));
            text.push_str(&format!("// {name}: {}\n{}\n", k.scheduled.plan.join("; "), k.scheduled.func));
            n += 1;
        }
        snapshot(folder, &stem(&path), &text);
    }
    assert!(n >= 17, "expected every lib kernel, scheduled {n}");
}

#[test]
fn kir_cpu() {
    kir_of_every_lib_kernel("kir_cpu", &Target::host_llvm());
}

#[test]
fn kir_sm80() {
    kir_of_every_lib_kernel("kir_sm80", &Target::cuda(80));
}

#[test]
fn kir_sm90() {
    kir_of_every_lib_kernel("kir_sm90", &Target::cuda(90));
}

/// Kernels whose PTX is pinned: the f32 block plan (sdpa, causal), the tensor-core plan
/// (half), the generic plan (linear), and decode-shaped split-K (gqa).
const PTX_FILES: &[&str] = &["sdpa", "causal", "half", "linear", "gqa"];

#[test]
fn ptx() {
    lib_files();
    for file in PTX_FILES {
        let program = tfmc_conformance::load_lib(&format!("{file}.tfm"));
        for sm in [80, 90] {
            let text = driver::emit(&program, None, &CompileOptions::default(), &Target::cuda(sm), Stage::Ptx)
                .unwrap_or_else(|e| panic!("{file} sm_{sm}: {e}"));
            snapshot("ptx", &format!("{file}_sm{sm}"), &text);
        }
    }
}

/// Kernels whose LLVM IR is pinned (before LLVM's optimizations, so the snapshot shows what
/// the backend emits): a linear-scan kernel and sdpa (the attention plan's tile products as
/// AVX-512 vector code). Causal and half-precision kernels are pinned at the KIR and PTX level.
const LLVM_FILES: &[&str] = &["sdpa", "linear"];

#[test]
fn llvm_ir() {
    lib_files();
    // Explicit features, so the vector width (and the text) does not depend on the host.
    let features = Some("+avx512f,+avx512vl,+avx512bw,+avx512dq,+avx2,+avx,+fma,+f16c".to_string());
    let target = Target::Llvm(TargetOptions { cpu: Some("x86-64-v4".to_string()), features, opt_level: 0 });
    for file in LLVM_FILES {
        let program = tfmc_conformance::load_lib(&format!("{file}.tfm"));
        let text = driver::emit(&program, None, &CompileOptions::default(), &target, Stage::Llvm).unwrap_or_else(|e| panic!("{file}: {e}"));
        snapshot("llvm", file, &text);
    }
}

/// No `lib/` kernel converts a float to an integer with saturation on the CPU: `fptosi.sat`
/// has no vector instruction on x86, so one in an inner loop scalarizes it (the inline `exp`
/// used one per logit). Checked on the optimized IR for an AVX2 CPU.
#[test]
fn no_saturating_float_to_int_conversion_in_lib_kernels() {
    let target = Target::Llvm(TargetOptions { cpu: Some("x86-64-v3".to_string()), features: None, opt_level: 3 });
    for path in lib_files() {
        let program = tfmc::load(&path).unwrap_or_else(|d| panic!("{} does not check:\n{d}", path.display()));
        let ir = driver::emit(&program, None, &CompileOptions::default(), &target, Stage::Llvm)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let lines: Vec<&str> = ir.lines().filter(|l| l.contains("fptosi.sat")).take(3).collect();
        assert!(lines.is_empty(), "{}: saturating conversions in the LLVM IR:\n{}", path.display(), lines.join("\n"));
    }
}

/// The products of sdpa's attention plan keep their tiles in registers: in sdpa's AVX-512
/// assembly every basic block holding a tile product's `k` step (a dozen or more `zmm` FMAs:
/// the `Q·Kᵀ` and `P·V` inner loops) stores nothing to the stack.
#[test]
fn sdpa_product_loops_have_no_stack_stores() {
    let target = Target::Llvm(TargetOptions { cpu: Some("x86-64-v4".to_string()), features: None, opt_level: 3 });
    let program = tfmc_conformance::load_lib("sdpa.tfm");
    let asm = driver::emit(&program, None, &CompileOptions::default(), &target, Stage::Asm).unwrap_or_else(|e| panic!("sdpa: {e}"));
    let mut blocks: Vec<Vec<&str>> = vec![Vec::new()];
    for line in asm.lines().map(str::trim) {
        // A label (`.LBB3_7:`) starts a basic block; so does the line after a branch.
        if line.ends_with(':') && !line.starts_with('#') {
            blocks.push(Vec::new());
        } else if !line.is_empty() && !line.starts_with('#') && !line.starts_with('.') {
            let last = blocks.len() - 1;
            blocks[last].push(line);
            if line.starts_with('j') {
                blocks.push(Vec::new());
            }
        }
    }
    let fma = |l: &&str| l.starts_with("vfmadd") && l.contains("zmm");
    let product_blocks: Vec<&Vec<&str>> = blocks.iter().filter(|b| b.iter().filter(|l| fma(l)).count() >= 12).collect();
    assert!(product_blocks.len() >= 2, "sdpa: fewer than two tile-product loops in the assembly");
    for b in product_blocks {
        let spills: Vec<&&str> = b.iter().filter(|l| l.starts_with("vmov") && (l.ends_with("(%rsp)") || l.ends_with("(%rbp)"))).collect();
        assert!(spills.is_empty(), "sdpa: stack stores in a tile-product loop: {spills:?}\n{}", b.join("\n"));
    }
}
