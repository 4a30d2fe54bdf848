//! Command-line interface definitions and the implementation of each subcommand.
//!
//! Every failure is returned as the text to print on stderr (already rendered); nothing
//! is written to an output path unless the whole command succeeded (writes are atomic).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tfmc::backend::llvm::TargetOptions;
use tfmc::driver::{self, CompileOptions, Gpu, Target};
use tfmc_runtime::{Scalar, Tensor};

/// tfmc — a compiler for attention variants written as cascades of Einsums.
///
/// Write an attention variant in a few lines of `.tfm` (see docs/language.md), check it,
/// and run it on tensors stored in `.npz` files.
///
/// Examples:
///   tfmc check lib/*.tfm
///   tfmc inputs lib/sdpa.tfm --kernel sdpa --dims B=1,H=2,P=16,M=16,E=8,F=8 --out in.npz
///   tfmc run lib/sdpa.tfm --kernel sdpa --inputs in.npz --out out.npz
///   tfmc run lib/window.tfm --kernel window --inputs in.npz --param W=64 --out out.npz
///   tfmc explain lib/sdpa.tfm --kernel sdpa --dims P=4096,M=4096
///   tfmc run lib/sdpa.tfm --kernel sdpa --inputs in.npz --out out.npz --backend llvm
///   tfmc build lib/sdpa.tfm -o libsdpa.so        (also writes libsdpa.h)
///   tfmc build lib/sdpa.tfm --target cuda --sm 90 -o sdpa.ptx
///   tfmc run lib/sdpa.tfm --kernel sdpa --inputs in.npz --out out.npz --backend cuda
///   tfmc watch my_variant.tfm -k attn --dims B=1,H=2,P=64,M=64,E=16,F=16 --check
#[derive(Parser, Debug)]
#[command(name = "tfmc", version, verbatim_doc_comment)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check `.tfm` files: exit 0 when all are valid, else print diagnostics and exit 1.
    Check {
        /// Files to check (each with the files it `use`s).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        emit: EmitArgs,
    },
    /// Run one kernel on inputs from an `.npz` file and write its outputs to an `.npz` file.
    ///
    /// Inputs are matched to the kernel's arguments by name; symbolic dimensions are bound
    /// from their shapes. Outputs are written under the kernel's output names.
    Run {
        /// The `.tfm` file.
        file: PathBuf,
        /// Kernel to run.
        #[arg(long, short)]
        kernel: String,
        /// `.npz` file with one array per kernel argument.
        #[arg(long, short)]
        inputs: PathBuf,
        /// Where to write the outputs (`.npz`); written atomically.
        #[arg(long, short)]
        out: PathBuf,
        /// Set a param: `--param W=128` (repeatable).
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Execution backend: the f64 interpreter, or compiled code (LLVM or Cranelift JIT).
        #[arg(long, value_enum, default_value_t = Engine::Interp)]
        backend: Engine,
        #[command(flatten)]
        target: TargetArgs,
        /// Interpret the optimized cascade (fused, online softmax, filters as bounds: see
        /// `tfmc explain`) instead of the program as written; the results agree up to rounding.
        #[arg(long)]
        optimized: bool,
        /// With `--optimized`: split reductions over an index into chunks (`--split m=64`).
        #[arg(long, value_name = "INDEX=CHUNK", requires = "optimized")]
        split: Option<String>,
        #[command(flatten)]
        emit: EmitArgs,
    },
    /// Show what the optimizer does to a kernel: the cascade before and after, the rewrite
    /// rules that fired, passes over each reduced index (3 → 1 for softmax attention),
    /// estimated flops and bytes, and the e-graph statistics.
    Explain {
        /// The `.tfm` file.
        file: PathBuf,
        /// Kernel to explain.
        #[arg(long, short)]
        kernel: String,
        /// Sizes for the estimates: `--dims P=4096,M=4096,E=64` (others: B=1, H=8, P/M/T=4096,
        /// E/F=64, D=512, N=16, anything else 256).
        #[arg(long, value_name = "DIM=SIZE,...")]
        dims: Option<String>,
        /// Set a param for the estimates: `--param W=128` (repeatable; defaults otherwise).
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Split every reduction over an index into independent chunks, as for decode:
        /// `--split m=256` (the chunks combine with the online-softmax rescaling).
        #[arg(long, value_name = "INDEX=CHUNK")]
        split: Option<String>,
    },
    /// Compile every kernel of a file into a shared library with a C ABI, a C header beside
    /// it (`OUT` with extension `.h`) and an embedded manifest (kernels, arguments, dtypes,
    /// dims, params, target CPU features), for the runtime crate or C programs. Written
    /// atomically: a failed build leaves nothing.
    Build {
        /// The `.tfm` file.
        file: PathBuf,
        /// Output library (default: `lib<file stem>.so`, or `<file stem>.ptx` for `--target cuda`,
        /// in the current directory).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Fix a param's default at build time: `--param W=128` (repeatable; callers may
        /// still pass another value at run time).
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[command(flatten)]
        target: TargetArgs,
        /// What to build for: `llvm` (alias `cpu`: a shared library for this machine or
        /// `--target-cpu`) or `cuda` (a PTX artifact for `--sm`: PTX text with the manifest on
        /// its last line, loaded by the runtime's `CudaArtifact` or `tfmc-cuda-run`). With
        /// `--emit`, the target whose code is printed (`--emit=kir --target cuda` shows the
        /// GPU schedule).
        #[arg(long = "target", value_enum, default_value_t = Engine::Llvm)]
        build_target: Engine,
        /// Print a code-generation stage to stdout instead of writing the library: `kir`
        /// (the scheduled loop nests), `llvm` (optimized LLVM IR), `asm` (assembly), `clif`
        /// (Cranelift IR) or `ptx` (CUDA, for `--sm`).
        #[arg(long, value_enum)]
        emit: Option<CodeStage>,
        /// With `--emit`: only this kernel.
        #[arg(long, short)]
        kernel: Option<String>,
    },
    /// Benchmark the compiled kernels on the shapes of the design (sdpa, causal, window,
    /// decode, linear) side by side with PyTorch's scaled_dot_product_attention; with
    /// `--variants`, every attention-family lib kernel against PyTorch-eager code of the same
    /// formula.
    Bench {
        /// Only these shapes (comma-separated names, e.g. `sdpa-1k,decode-4k`).
        #[arg(long)]
        shapes: Option<String>,
        /// Timed runs per shape (the median is reported).
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// The PyTorch reference: run it if installed (`auto`), `skip` it, or `install` it
        /// with pip first.
        #[arg(long, value_enum, default_value_t = Torch::Auto)]
        torch: Torch,
        /// Threads for both sides (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Compare the JIT tiers instead: compile time of every lib kernel with LLVM O3 and
        /// Cranelift (median of 5), and run time of the shapes with each.
        #[arg(long)]
        tiers: bool,
        /// Time every attention-family lib kernel instead (one shape for all, see `--dims`)
        /// against the PyTorch-eager form of the same formula; `--shapes` picks rows by name.
        #[arg(long, conflicts_with = "tiers")]
        variants: bool,
        /// With `--variants`: sizes, `B=1,H=4,P=1024,M=1024,E=64,F=64` by default (any subset).
        #[arg(long, value_name = "DIM=SIZE,...")]
        dims: Option<String>,
        /// With `--variants`: seconds per row and side; a call that takes longer is stopped
        /// and the row marked `> budget`.
        #[arg(long, default_value_t = 10.0)]
        budget_s: f64,
        /// Internal: time one `--variants` row in this process and report on stdout.
        #[arg(long, hide = true)]
        variant_child: Option<String>,
    },
    /// The edit–run loop: compile and run a kernel, print a summary of its outputs (and the
    /// largest difference from a reference), then do it again every time the file (or a file
    /// it uses) is saved. Errors are printed and the loop goes on; Ctrl-C stops it.
    ///
    /// Example: tfmc watch my_variant.tfm -k attn --dims B=1,H=2,P=64,M=64,E=16,F=16 --check
    Watch {
        /// The `.tfm` file.
        file: PathBuf,
        /// Kernel to run.
        #[arg(long, short)]
        kernel: String,
        /// `.npz` file with the inputs (re-read every round).
        #[arg(long, short, conflicts_with_all = ["dims", "seed"], required_unless_present = "dims")]
        inputs: Option<PathBuf>,
        /// Random inputs of these sizes instead: `--dims B=1,H=2,P=64` (made from the kernel's
        /// signature every round, same seed).
        #[arg(long, value_name = "DIM=SIZE,...")]
        dims: Option<String>,
        /// Seed of the random inputs.
        #[arg(long)]
        seed: Option<u64>,
        /// Set a param: `--param W=128` (repeatable).
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Compare the outputs with the arrays of this `.npz` file (by name).
        #[arg(long, value_name = "REF.npz", conflicts_with = "check")]
        expect: Option<PathBuf>,
        /// Compare the outputs with the interpreter's on the same inputs.
        #[arg(long)]
        check: bool,
        /// Allowed difference, relative to the reference's largest magnitude (at least 1).
        #[arg(long, default_value_t = 2e-4)]
        rtol: f64,
        /// Execution backend (Cranelift compiles in milliseconds; `llvm` for the fastest code).
        #[arg(long, value_enum, default_value_t = Engine::Cranelift)]
        backend: Engine,
        #[command(flatten)]
        target: TargetArgs,
        /// Also write each round's outputs here (`.npz`, atomically).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Run one round and exit (status 1 if it failed): for scripts.
        #[arg(long)]
        once: bool,
    },
    /// Write random inputs for a kernel to an `.npz` file (for trying a kernel out).
    Inputs {
        /// The `.tfm` file.
        file: PathBuf,
        /// Kernel whose arguments to generate.
        #[arg(long, short)]
        kernel: String,
        /// Sizes of the symbolic dimensions: `--dims B=1,H=2,P=16`.
        #[arg(long, value_name = "DIM=SIZE,...")]
        dims: String,
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where to write the `.npz`.
        #[arg(long, short)]
        out: PathBuf,
    },
}

/// Where a kernel runs (`--backend`) or what it is built for (`build --target`): the
/// interpreter, or one of the driver's targets ([`tfmc::driver::Target`]), completed by
/// [`TargetArgs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Engine {
    /// The f64 reference interpreter (the correctness oracle).
    Interp,
    /// Compiled code: LLVM for this machine's CPU or `--target-cpu` (fastest code; JIT, or a
    /// shared library with `tfmc build`).
    #[value(alias = "cpu")]
    Llvm,
    /// Compiled code: Cranelift, JIT-compiled for this machine (compiles in milliseconds).
    Cranelift,
    /// Compiled to PTX for `--sm`: run on CUDA device 0, or a PTX artifact with `tfmc build`.
    Cuda,
    /// The CUDA path's kernels and launch protocol emulated on this CPU, one GPU thread at a
    /// time (for checking GPU code without a GPU; slow).
    GpuEmu,
}

impl Engine {
    /// The driver's target, or `None` for the interpreter.
    fn target(self, args: &TargetArgs) -> Option<Target> {
        let gpu = Gpu { sm: args.sm, opt_level: args.opt_level, ..Gpu::default() };
        match self {
            Engine::Interp => None,
            Engine::Llvm => Some(Target::Llvm(TargetOptions { cpu: args.target_cpu.clone(), features: None, opt_level: args.opt_level })),
            Engine::Cranelift => Some(Target::cranelift()),
            Engine::Cuda => Some(Target::Cuda(gpu)),
            Engine::GpuEmu => Some(Target::GpuEmu(gpu)),
        }
    }
}

/// What `tfmc bench` does about PyTorch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Torch {
    /// Run the reference if `import torch` works.
    Auto,
    /// Do not run it.
    Skip,
    /// `pip install torch` first.
    Install,
}

/// Code-generation stages `tfmc build --emit` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CodeStage {
    /// The scheduled loop nests (KIR).
    Kir,
    /// LLVM IR after optimization.
    Llvm,
    /// Assembly for the target.
    Asm,
    /// Cranelift IR as translated (vector loops as f32x4).
    Clif,
    /// PTX for the GPU (`--sm`), with the GPU schedule.
    Ptx,
}

/// Target selection for compiled code.
#[derive(Args, Debug)]
struct TargetArgs {
    /// Target CPU (LLVM name, e.g. `x86-64-v3`, `znver4`); default: this machine's.
    #[arg(long)]
    target_cpu: Option<String>,
    /// LLVM optimization level 0..3.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(0..=3))]
    opt_level: u8,
    /// GPU architecture for CUDA code: `--sm 90` is sm_90 (H100/H200), 80 is sm_80 (A100).
    #[arg(long, default_value_t = tfmc::driver::DEFAULT_SM)]
    sm: u32,
}

#[derive(Args, Debug)]
struct EmitArgs {
    /// Print an intermediate stage to stdout: `ast` (the parsed syntax, re-printed in canonical
    /// form, one file after another), `checked` (the resolved, typed program: index ranges,
    /// explicit casts, and the filters each statement and reduction received), `ir` (each
    /// kernel lowered to a verified cascade of tensor definitions, calls inlined) or `dot` (the
    /// same cascades as graphviz digraphs: `tfmc check f.tfm --emit=dot | dot -Tsvg`).
    #[arg(long, value_enum)]
    emit: Option<Stage>,
}

/// Dumpable stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Stage {
    /// The syntax tree, as parsed (re-printed in canonical form).
    Ast,
    /// The checked program.
    Checked,
    /// Every kernel lowered to the IR (a cascade of tensor definitions), verified.
    Ir,
    /// The IR cascades as graphviz digraphs (one per kernel).
    Dot,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Check { files, emit } => {
            let mut failed = String::new();
            for f in &files {
                match check_one(f, emit.emit) {
                    Ok(()) => {}
                    Err(e) => failed.push_str(&e),
                }
            }
            if failed.is_empty() { Ok(()) } else { Err(failed) }
        }
        Command::Run { file, kernel, inputs, out, params, backend, target, optimized, split, emit } => {
            let program = load(&file, emit.emit)?;
            let params = parse_params(&params)?;
            let inputs = tfmc::inputs::read_inputs(&program, &kernel, &inputs).map_err(|e| format!("error: {e}\n"))?;
            let outputs = match backend {
                Engine::Interp if optimized => {
                    let lowered = tfmc::ir::lower::lower(&program, &kernel).map_err(|e| format!("error: {e}\n"))?;
                    let mut opts = tfmc::optimize::Options::for_program(&program);
                    opts.split = split.as_deref().map(parse_split).transpose()?;
                    if let Some((index, _)) = &opts.split {
                        tfmc::optimize::split::check_index(&lowered, index).map_err(|e| format!("error: {e}\n"))?;
                    }
                    let (c, _) = tfmc::optimize::optimize(&lowered, &opts).map_err(|e| format!("error: {e}\n"))?;
                    tfmc::ir::eval::run_cascade(&c, &program, &inputs, &params, false).map_err(|e| format!("error: {e}\n"))?
                }
                Engine::Interp => tfmc::interp::run(&program, &kernel, &inputs, &params).map_err(|e| format!("error: {e}\n"))?,
                compiled => {
                    let t = compiled.target(&target).expect("a compiled engine (the interpreter is matched above)");
                    driver::run(&program, &kernel, &inputs, &params, &CompileOptions::default(), &t)
                        .map_err(|e| format!("error: {e}\n"))?
                        .outputs
                }
            };
            tfmc_runtime::write_npz(&out, &outputs).map_err(|e| format!("error: {e}\n"))?;
            print_summary(&outputs, &out);
            Ok(())
        }
        Command::Explain { file, kernel, dims, params, split } => {
            let program = load(&file, None)?;
            let mut opts = tfmc::optimize::Options::for_program(&program);
            opts.split = split.as_deref().map(parse_split).transpose()?;
            if let Some(d) = dims {
                let given = parse_dims(&d)?;
                if let Some((_, k)) = program.kernel(&kernel) {
                    let known: Vec<&str> = k.dims.iter().map(|d| d.name.as_str()).collect();
                    if let Some(name) = given.keys().find(|n| !known.contains(&n.as_str())) {
                        return Err(format!("error: kernel '{kernel}' has no dimension '{name}'; its dimensions: {}\n", known.join(", ")));
                    }
                }
                for (k, v) in given {
                    // At most MAX_DIM (parse_dims), so it fits.
                    opts.dims.insert(k, v as i64);
                }
            }
            for (k, v) in parse_params(&params)? {
                let x = match v {
                    Scalar::F(x) => x,
                    Scalar::I(i) => i as f64,
                    Scalar::B(b) => f64::from(u8::from(b)),
                };
                opts.params.insert(k, x);
            }
            let text = tfmc::optimize::explain::explain(&program, &kernel, &opts).map_err(|e| format!("error: {e}\n"))?;
            out(&text);
            Ok(())
        }
        Command::Build { file, out: dest, params, target, build_target, emit, kernel } => {
            let program = load(&file, None)?;
            let opts = CompileOptions { params: parse_params(&params)?, ..Default::default() };
            let Some(t) = build_target.target(&target) else {
                return Err("error: the interpreter builds no artifact; use --target llvm or --target cuda\n".to_string());
            };
            if let Some(stage) = emit {
                return emit_code(&program, stage, kernel.as_deref(), &opts, &t, &target);
            }
            let stem = file.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "tfmc".to_string());
            let dest =
                dest.unwrap_or_else(|| PathBuf::from(if t.gpu().is_some() { format!("{stem}.ptx") } else { format!("lib{stem}.so") }));
            let kernels = driver::build(&program, &dest, &opts, &t).map_err(|e| format!("error: {e}\n"))?;
            match t.gpu() {
                Some(g) => {
                    for k in &kernels {
                        out(&format!(
                            "{} -> {}_prep, {} segment(s)\n",
                            k.manifest.name,
                            k.manifest.symbol,
                            k.manifest.gpu.as_ref().map_or(0, |g| g.segments)
                        ));
                    }
                    out(&format!("wrote {} (sm_{})\n", dest.display(), g.sm));
                }
                None => {
                    for k in &kernels {
                        out(&format!("{} -> {}\n", k.manifest.name, k.manifest.symbol));
                    }
                    out(&format!("wrote {} and {}\n", dest.display(), dest.with_extension("h").display()));
                }
            }
            Ok(())
        }
        Command::Bench { shapes, iters, torch, threads, tiers, variants, dims, budget_s, variant_child } => {
            let shapes: Option<Vec<String>> =
                shapes.map(|s| s.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect());
            if variants || variant_child.is_some() {
                let mut d = tfmc::bench::VariantDims::default();
                for (k, v) in parse_dims(dims.as_deref().unwrap_or(""))? {
                    let slot = match k.as_str() {
                        "B" => &mut d.b,
                        "H" => &mut d.h,
                        "P" => &mut d.p,
                        "M" => &mut d.m,
                        "E" => &mut d.e,
                        "F" => &mut d.f,
                        _ => return Err(format!("error: --dims {k}: a variants run has dims B, H, P, M, E, F\n")),
                    };
                    *slot = v;
                }
                let threads_n = threads.unwrap_or_else(tfmc::bench::default_threads);
                if let Some(name) = variant_child {
                    return tfmc::bench::variant_child_main(&name, &d, iters.max(1), budget_s, threads_n)
                        .map_err(|e| format!("error: {e}\n"));
                }
                let opts = tfmc::bench::VariantOptions {
                    only: shapes,
                    dims: d,
                    iters: iters.max(1),
                    budget_s,
                    torch: match torch {
                        Torch::Auto => tfmc::bench::TorchMode::Auto,
                        Torch::Skip => tfmc::bench::TorchMode::Skip,
                        Torch::Install => tfmc::bench::TorchMode::Install,
                    },
                    threads,
                    exe: std::env::current_exe().ok(),
                };
                out(&tfmc::bench::run_variants(&opts).map_err(|e| format!("error: {e}\n"))?);
                return Ok(());
            }
            let opts = tfmc::bench::BenchOptions {
                shapes,
                iters: iters.max(1),
                torch: match torch {
                    Torch::Auto => tfmc::bench::TorchMode::Auto,
                    Torch::Skip => tfmc::bench::TorchMode::Skip,
                    Torch::Install => tfmc::bench::TorchMode::Install,
                },
                threads,
            };
            let table =
                if tiers { tfmc::bench::run_tiers(&opts, 5) } else { tfmc::bench::run(&opts) }.map_err(|e| format!("error: {e}\n"))?;
            out(&table);
            Ok(())
        }
        Command::Watch { file, kernel, inputs, dims, seed, params, expect, check, rtol, backend, target, out: dest, once } => {
            let inputs = match (inputs, dims) {
                (Some(p), _) => tfmc::watch::InputSource::Npz(p),
                (None, Some(d)) => tfmc::watch::InputSource::Random { dims: parse_dims(&d)?, seed: seed.unwrap_or(0) },
                (None, None) => return Err("error: give --inputs FILE.npz or --dims DIM=SIZE,...\n".to_string()),
            };
            let cfg = tfmc::watch::WatchConfig {
                file,
                kernel,
                inputs,
                params: parse_params(&params)?,
                reference: match (expect, check) {
                    (Some(p), _) => Some(tfmc::watch::Reference::Npz(p)),
                    (None, true) => Some(tfmc::watch::Reference::Interpreter),
                    (None, false) => None,
                },
                rtol,
                target: backend.target(&target),
                options: CompileOptions::default(),
                out: dest,
            };
            if once {
                let r = tfmc::watch::round(&cfg);
                out(&r.report);
                return if r.ok { Ok(()) } else { Err(String::new()) };
            }
            tfmc::watch::watch(&cfg, out, None)
        }
        Command::Inputs { file, kernel, dims, seed, out } => {
            let program = load(&file, None)?;
            let dims = parse_dims(&dims)?;
            let tensors = crate_random_inputs(&program, &kernel, &dims, seed)?;
            tfmc_runtime::write_npz(&out, &tensors).map_err(|e| format!("error: {e}\n"))?;
            print_summary(&tensors, &out);
            Ok(())
        }
    }
}

/// Prints a code-generation stage of every kernel (or one) of `program` for target `t`:
/// `kir` of `t`'s schedule; `llvm`/`asm` of an LLVM target; `ptx` always for CUDA (`--sm`) and
/// `clif` always for Cranelift, whatever `--target` says (each stage has one backend).
fn emit_code(
    program: &tfmc::Program,
    stage: CodeStage,
    only: Option<&str>,
    opts: &CompileOptions,
    t: &Target,
    args: &TargetArgs,
) -> Result<(), String> {
    let (stage, t) = match stage {
        CodeStage::Kir => (driver::Stage::Kir, t.clone()),
        CodeStage::Llvm => (driver::Stage::Llvm, t.clone()),
        CodeStage::Asm => (driver::Stage::Asm, t.clone()),
        CodeStage::Clif => (driver::Stage::Clif, Target::cranelift()),
        CodeStage::Ptx => (driver::Stage::Ptx, Engine::Cuda.target(args).expect("cuda is a compiled target")),
    };
    // An unknown `--kernel` fails in `prepare`, naming the program's kernels.
    out(&driver::emit(program, only, opts, &t, stage).map_err(|e| format!("error: {e}\n"))?);
    Ok(())
}

fn check_one(path: &Path, emit: Option<Stage>) -> Result<(), String> {
    load(path, emit).map(|_| ())
}

/// Loads and checks a file, printing warnings and the requested dump.
fn load(path: &Path, emit: Option<Stage>) -> Result<tfmc::Program, String> {
    if emit == Some(Stage::Ast) {
        let l = tfmc::load::load_files(path).map_err(|d| d.render())?;
        for (id, f) in &l.files {
            out(&format!("// {}\n{}", l.sources.get(*id).name, tfm_dsl::print::print_file(f)));
        }
    }
    let (program, warnings) = tfmc::load_with_warnings(path).map_err(|d| d.render())?;
    if !warnings.is_empty() {
        eprint!("{}", tfm_dsl::diagnostic::render_all(&warnings, &program.sources));
    }
    match emit {
        Some(Stage::Checked) => out(&tfmc::hir::print::print_program(&program)),
        Some(stage @ (Stage::Ir | Stage::Dot)) => out(&emit_ir(&program, stage)?),
        _ => {}
    }
    Ok(program)
}

/// Every kernel of `program` lowered and verified, as text (`Ir`) or graphviz (`Dot`).
/// Printed only when all kernels lower, so a failure leaves stdout empty.
fn emit_ir(program: &tfmc::Program, stage: Stage) -> Result<String, String> {
    let mut out = String::new();
    for k in &program.kernels {
        let c = tfmc::ir::lower::lower(program, &k.name).map_err(|e| format!("error: {e}\n"))?;
        tfmc::ir::verify::verify(&c).map_err(|e| format!("error: {e}\n"))?;
        out.push_str(&match stage {
            Stage::Dot => tfmc::ir::dot::to_dot(&c),
            _ => tfmc::ir::print::print_cascade(&c),
        });
    }
    Ok(out)
}

fn parse_params(list: &[String]) -> Result<BTreeMap<String, Scalar>, String> {
    let mut out = BTreeMap::new();
    for item in list {
        let Some((name, value)) = item.split_once('=') else {
            return Err(format!("error: malformed --param '{item}': expected NAME=VALUE, e.g. --param W=128\n"));
        };
        let v = value.trim();
        let scalar = if let Ok(i) = v.parse::<i64>() {
            Scalar::I(i)
        } else if let Ok(f) = v.parse::<f64>() {
            // `1e400` parses as infinity: a number beyond f64 is out of range (write `inf`).
            if f.is_infinite() && !v.trim_start_matches(['-', '+']).to_ascii_lowercase().starts_with("inf") {
                return Err(format!("error: --param {name}: '{v}' is out of range for f64 (write inf for infinity)\n"));
            }
            Scalar::F(f)
        } else if let Ok(b) = v.parse::<bool>() {
            Scalar::B(b)
        } else {
            return Err(format!("error: --param {name}: '{v}' is not a number or bool\n"));
        };
        out.insert(name.trim().to_string(), scalar);
    }
    Ok(out)
}

/// `INDEX=CHUNK` with `1 <= CHUNK <= 2^40` (a chunk longer than any dim splits nothing, and
/// the split's bound arithmetic stays far from overflow).
fn parse_split(spec: &str) -> Result<(String, i64), String> {
    let bad = || format!("error: malformed --split '{spec}': expected INDEX=CHUNK with CHUNK between 1 and 2^40, e.g. --split m=256\n");
    let (i, n) = spec.split_once('=').ok_or_else(bad)?;
    let n: i64 = n.trim().parse().map_err(|_| bad())?;
    if !(1..=tfmc::bind::MAX_DIM).contains(&n) || i.trim().is_empty() {
        return Err(bad());
    }
    Ok((i.trim().to_string(), n))
}

/// `DIM=SIZE,...`: each dim once, each size at most 2^40 (the largest dimension).
fn parse_dims(spec: &str) -> Result<BTreeMap<String, usize>, String> {
    let mut out = BTreeMap::new();
    for part in spec.split(',').filter(|s| !s.trim().is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(format!("error: malformed --dims entry '{part}': expected DIM=SIZE\n"));
        };
        let k = k.trim();
        let n: usize = v.trim().parse().map_err(|_| format!("error: --dims {k}: '{v}' is not a size\n"))?;
        if n > tfmc::bind::MAX_DIM as usize {
            return Err(format!("error: --dims {k}: {n} is larger than 2^40, the largest size of a dimension\n"));
        }
        if out.insert(k.to_string(), n).is_some() {
            return Err(format!("error: --dims {k} is given twice\n"));
        }
    }
    Ok(out)
}

fn crate_random_inputs(
    program: &tfmc::Program,
    kernel: &str,
    dims: &BTreeMap<String, usize>,
    seed: u64,
) -> Result<BTreeMap<String, Tensor>, String> {
    tfmc::inputs::random_inputs(program, kernel, dims, seed).map_err(|e| format!("error: {e}\n"))
}

fn print_summary(tensors: &BTreeMap<String, Tensor>, path: &Path) {
    for (name, t) in tensors {
        out(&format!("{name}: {}{:?} ({})\n", t.dtype(), t.shape(), value_range(&t.to_f64_vec())));
    }
    out(&format!("wrote {}\n", path.display()));
}

/// `min …, max …` of the values that are not NaN, then how many are NaN and how many infinite
/// (`min -1e0, max inf; 2 NaN, 1 inf`); `all 6 NaN`; `empty`. A NaN never hides.
fn value_range(v: &[f64]) -> String {
    let nans = v.iter().filter(|x| x.is_nan()).count();
    let infs = v.iter().filter(|x| x.is_infinite()).count();
    if v.is_empty() {
        return "empty".to_string();
    }
    if nans == v.len() {
        return format!("all {nans} NaN");
    }
    let (lo, hi) = v.iter().filter(|x| !x.is_nan()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
    let mut s = format!("min {lo:.6e}, max {hi:.6e}");
    let counts: Vec<String> =
        [(nans, "NaN"), (infs, "inf")].iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!("{n} {what}")).collect();
    if !counts.is_empty() {
        s.push_str("; ");
        s.push_str(&counts.join(", "));
    }
    s
}

/// Writes `text` to stdout. A closed pipe (`tfmc ... | head`) ends the program quietly, as
/// for other Unix tools, instead of panicking like `print!`.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::value_range;

    #[test]
    fn nan_and_inf_are_counted() {
        assert_eq!(value_range(&[]), "empty");
        assert_eq!(value_range(&[f64::NAN; 3]), "all 3 NaN");
        assert_eq!(value_range(&[1.0, f64::NAN, -2.0]), "min -2.000000e0, max 1.000000e0; 1 NaN");
        assert_eq!(value_range(&[f64::INFINITY, 0.5, f64::NAN]), "min 5.000000e-1, max inf; 1 NaN, 1 inf");
        assert_eq!(value_range(&[0.25]), "min 2.500000e-1, max 2.500000e-1");
    }
}
