//! `tfmc-cuda-run`: runs a kernel of a tfmc PTX artifact on a CUDA GPU, with inputs from an
//! `.npz`, optionally comparing with a reference and timing repeated launches. It depends on
//! the runtime only (no compiler, no LLVM; `libcuda` is opened at run time), so it can be
//! carried to a GPU machine that has no Rust.
//!
//! Exit status: 0 success (and PASS), 1 a failed comparison or any error (file, manifest,
//! argument, kernel failure), 2 no usable CUDA device, 64 bad command line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tfmc_runtime::cuda::CudaArtifact;
use tfmc_runtime::{Scalar, Tensor, read_npz, write_npz};

const USAGE: &str = "\
usage: tfmc-cuda-run ARTIFACT.ptx [--kernel K] [--inputs IN.npz] [--param NAME=VALUE]...
                     [--out OUT.npz] [--expect REF.npz [--rtol R]] [--iters N] [--device D]

Runs kernel K of a tfmc PTX artifact on CUDA device D (default 0) and prints each output's
name, dtype and shape.
  --kernel K        the kernel (may be left out when the artifact has one)
  --inputs IN.npz   the kernel's inputs, by name
  --param N=V       a runtime param (true/false, an integer or a float); repeatable
  --out OUT.npz     write the outputs there
  --expect REF.npz  compare each output with the array of the same name: prints the max
                    abs difference and the max abs of the reference; PASS when the
                    difference is at most R * max(1, max abs of the reference)
  --rtol R          relative tolerance for --expect (default 1e-4)
  --iters N         then launch N more times with the inputs resident on the device and
                    print the median and min time per launch (host wall clock, input and
                    output copies excluded)
Exit status: 0 ok, 1 FAIL or error, 2 no CUDA device, 64 bad command line.";

/// `--rtol` when not given.
const DEFAULT_RTOL: f64 = 1e-4;

/// The command line.
#[derive(Debug)]
struct Args {
    artifact: PathBuf,
    kernel: Option<String>,
    inputs: Option<PathBuf>,
    params: BTreeMap<String, Scalar>,
    out: Option<PathBuf>,
    expect: Option<PathBuf>,
    rtol: Option<f64>,
    iters: usize,
    device: usize,
}

/// Why the run stopped: a message and the exit status.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure { message: format!("{}\n\n{USAGE}", message.into()), code: 64 }
    }

    fn error(message: impl std::fmt::Display) -> Failure {
        Failure { message: format!("error: {message}"), code: 1 }
    }
}

/// A param value as written on the command line.
fn parse_scalar(text: &str) -> Option<Scalar> {
    match text {
        "true" => Some(Scalar::B(true)),
        "false" => Some(Scalar::B(false)),
        _ => text.parse::<i64>().map(Scalar::I).or_else(|_| text.parse::<f64>().map(Scalar::F)).ok(),
    }
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, Failure> {
    let mut artifact = None;
    let mut args = Args {
        artifact: PathBuf::new(),
        kernel: None,
        inputs: None,
        params: BTreeMap::new(),
        out: None,
        expect: None,
        rtol: None,
        iters: 0,
        device: 0,
    };
    while let Some(arg) = argv.next() {
        let mut value = |name: &str| argv.next().ok_or_else(|| Failure::usage(format!("{name} needs a value")));
        match arg.as_str() {
            "-h" | "--help" => {
                return Err(Failure { message: USAGE.to_string(), code: 0 });
            }
            "--kernel" => args.kernel = Some(value("--kernel")?),
            "--inputs" => args.inputs = Some(value("--inputs")?.into()),
            "--out" => args.out = Some(value("--out")?.into()),
            "--expect" => args.expect = Some(value("--expect")?.into()),
            "--param" => {
                let p = value("--param")?;
                let Some((name, text)) = p.split_once('=') else {
                    return Err(Failure::usage(format!("--param '{p}' is not NAME=VALUE")));
                };
                let v = parse_scalar(text)
                    .ok_or_else(|| Failure::usage(format!("--param {name}: '{text}' is not true, false, an integer or a float")))?;
                args.params.insert(name.to_string(), v);
            }
            "--rtol" => {
                let t = value("--rtol")?;
                let rtol = t
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r >= 0.0)
                    .ok_or_else(|| Failure::usage(format!("--rtol '{t}' is not a non-negative number")))?;
                args.rtol = Some(rtol);
            }
            "--iters" => {
                let t = value("--iters")?;
                args.iters = t.parse().map_err(|_| Failure::usage(format!("--iters '{t}' is not a non-negative integer")))?;
            }
            "--device" => {
                let t = value("--device")?;
                args.device = t.parse().map_err(|_| Failure::usage(format!("--device '{t}' is not a device ordinal")))?;
            }
            flag if flag.starts_with('-') && flag != "-" => {
                return Err(Failure::usage(format!("unknown option '{flag}'")));
            }
            path => {
                if artifact.replace(PathBuf::from(path)).is_some() {
                    return Err(Failure::usage(format!("unexpected argument '{path}': only one artifact")));
                }
            }
        }
    }
    args.artifact = artifact.ok_or_else(|| Failure::usage("no ARTIFACT.ptx given"))?;
    if args.expect.is_none() && args.rtol.is_some() {
        return Err(Failure::usage("--rtol needs --expect"));
    }
    Ok(args)
}

/// `[2, 3]`.
fn shape_text(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// The largest `|x|` of a tensor (NaNs ignored; 0 when empty).
fn max_abs(t: &Tensor) -> f64 {
    t.to_f64_vec().iter().map(|x| x.abs()).fold(0.0, f64::max)
}

/// Compares every output with the reference of the same name; true when all pass.
fn compare(outputs: &BTreeMap<String, Tensor>, reference: &BTreeMap<String, Tensor>, rtol: f64) -> bool {
    let mut all = true;
    for (name, out) in outputs {
        let verdict = match reference.get(name) {
            None => "FAIL (no array of this name in the reference)".to_string(),
            Some(r) => match out.max_abs_diff(r) {
                None => format!("FAIL (shape {} but the reference has {})", shape_text(out.shape()), shape_text(r.shape())),
                Some(diff) => {
                    let scale = max_abs(r);
                    let tol = rtol * scale.max(1.0);
                    let ok = diff <= tol;
                    format!("max abs diff {diff:.3e}, max abs ref {scale:.3e}, tolerance {tol:.3e}: {}", if ok { "PASS" } else { "FAIL" })
                }
            },
        };
        all &= verdict.ends_with("PASS");
        println!("compare {name}: {verdict}");
    }
    all
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn run(args: Args) -> Result<bool, Failure> {
    let mut artifact = CudaArtifact::open_on(&args.artifact, args.device)
        .map_err(|e| Failure { code: if e.is_no_device() { 2 } else { 1 }, message: format!("error: {e}") })?;
    let device = artifact.device();
    println!(
        "device {}: {} (compute capability {}.{})",
        device.ordinal(),
        device.name(),
        device.compute_capability().0,
        device.compute_capability().1
    );
    let name = match &args.kernel {
        Some(k) => k.clone(),
        None => match artifact.kernel_names().as_slice() {
            [only] => only.to_string(),
            names => {
                return Err(Failure::usage(format!("--kernel is needed: the artifact has {}", names.join(", "))));
            }
        },
    };
    let mut inputs = match &args.inputs {
        Some(path) => read_npz(path).map_err(Failure::error)?,
        None => BTreeMap::new(),
    };
    let reference = match &args.expect {
        Some(path) => Some(read_npz(path).map_err(Failure::error)?),
        None => None,
    };
    let kernel = artifact.kernel(&name).map_err(Failure::error)?;
    let specs = &kernel.manifest().inputs;
    tfmc_runtime::as_declared_bf16(&mut inputs, |n| specs.iter().find(|s| s.name == n).and_then(|s| tfmc_runtime::DType::parse(&s.dtype)));
    let mut prepared = kernel.prepare(&inputs, &args.params).map_err(Failure::error)?;
    prepared.launch().map_err(Failure::error)?;
    let outputs = prepared.outputs().map_err(Failure::error)?;
    for (name, t) in &outputs {
        println!("output {name}: {} {}", t.dtype(), shape_text(t.shape()));
    }
    if let Some(path) = &args.out {
        write_npz(path, &outputs).map_err(Failure::error)?;
        println!("wrote {}", path.display());
    }
    let rtol = args.rtol.unwrap_or(DEFAULT_RTOL);
    let pass = reference.is_none_or(|r| compare(&outputs, &r, rtol));
    if args.iters > 0 {
        let mut times = prepared.time(args.iters).map_err(Failure::error)?;
        times.sort();
        // `time(iters)` returns `iters > 0` durations: both indices are in range.
        let median = times[times.len() / 2];
        println!("{} launches: median {:.4} ms, min {:.4} ms", times.len(), ms(median), ms(times[0]));
    }
    Ok(pass)
}

fn main() -> ExitCode {
    let result = parse_args(std::env::args().skip(1)).and_then(run);
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(f) => {
            if f.code == 0 {
                println!("{}", f.message);
            } else {
                eprintln!("tfmc-cuda-run: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}
