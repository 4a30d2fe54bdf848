//! Example: run a kernel compiled at build time, with `tfmc-runtime` as the only dependency.
//!
//! `build.rs` compiled `lib/sdpa.tfm` into a shared library (tfmc-build) and exported its path
//! as `TFMC_ARTIFACT_SDPA`. Here we open it (`Artifact::open` checks the checksum, manifest
//! and CPU features before loading), list its kernels, run `sdpa` on seeded random Q/K/V and
//! check the output against a plain Rust softmax attention. Exit 0 if the largest absolute
//! difference is at most 1e-4, else 1.

use std::collections::BTreeMap;
use std::process::ExitCode;

use tfmc_runtime::manifest::{DimSpec, TensorSpec};
use tfmc_runtime::{Artifact, NativeTensor};

/// Largest accepted |kernel - reference|.
const TOL: f64 = 1e-4;

/// Dims of the example: batch, heads, queries, keys, head size, value size.
const B: usize = 2;
const H: usize = 2;
const P: usize = 5;
const M: usize = 7;
const E: usize = 8;
const F: usize = 4;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the example; `Ok(false)` when the result does not match the reference.
fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let artifact = Artifact::open(env!("TFMC_ARTIFACT_SDPA"))?;
    let m = artifact.manifest();
    println!("artifact: {}", artifact.path().display());
    println!("built by tfmc {} for {} ({})", m.compiler_version, m.target.triple, m.target.cpu);
    println!("kernels: {}", artifact.kernel_names().join(", "));
    for k in &m.kernels {
        let sig = |ts: &[TensorSpec]| ts.iter().map(spec).collect::<Vec<_>>().join(", ");
        println!("  {}({}) -> ({})", k.name, sig(&k.inputs), sig(&k.outputs));
    }

    let sdpa = artifact.kernel("sdpa")?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let q = rng.tensor(vec![B, H, P, E])?;
    let k = rng.tensor(vec![B, H, M, E])?;
    let v = rng.tensor(vec![B, H, M, F])?;
    let inputs = [&q, &k, &v];
    let mut outputs = sdpa.alloc_outputs(&inputs)?;
    sdpa.run_native(&inputs, &mut outputs, &BTreeMap::new())?;

    let o = outputs[0].as_f32().ok_or("output O is not f32")?;
    let checksum: f64 = o.iter().map(|&x| f64::from(x)).sum();
    println!("output O: shape {:?}, checksum {checksum:.6}", outputs[0].shape());

    let want = reference(q.as_f32().unwrap(), k.as_f32().unwrap(), v.as_f32().unwrap());
    let diff = o.iter().zip(&want).map(|(&g, &w)| (f64::from(g) - w).abs()).fold(0.0, f64::max);
    println!("max abs diff vs reference: {diff:.3e}");
    if diff <= TOL {
        println!("OK");
        Ok(true)
    } else {
        println!("MISMATCH (tolerance {TOL:e})");
        Ok(false)
    }
}

/// `Q: f32[B, H, P, E]` in the manifest's terms.
fn spec(t: &TensorSpec) -> String {
    // `DimSpec` prints as written: `B`, `64`, `MP * PS`.
    let dims: Vec<String> = t.shape.iter().map(DimSpec::to_string).collect();
    format!("{}: {}[{}]", t.name, t.dtype, dims.join(", "))
}

/// Softmax attention in f64, row by row: O = softmax(Q Kᵀ / sqrt(E)) V.
fn reference(q: &[f32], k: &[f32], v: &[f32]) -> Vec<f64> {
    let mut o = vec![0.0; B * H * P * F];
    let scale = 1.0 / (E as f64).sqrt();
    for bh in 0..B * H {
        for p in 0..P {
            let qrow = &q[(bh * P + p) * E..][..E];
            let s: Vec<f64> = (0..M)
                .map(|m| {
                    let krow = &k[(bh * M + m) * E..][..E];
                    qrow.iter().zip(krow).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>() * scale
                })
                .collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = s.iter().map(|&x| (x - max).exp()).collect();
            let total: f64 = w.iter().sum();
            for f in 0..F {
                let acc: f64 = (0..M).map(|m| w[m] * f64::from(v[(bh * M + m) * F + f])).sum();
                o[(bh * P + p) * F + f] = acc / total;
            }
        }
    }
    o
}

/// A small seeded generator (xorshift64*), so the example needs no `rand`.
struct Rng(u64);

impl Rng {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40; // 24 random bits
        bits as f32 / (1u32 << 23) as f32 - 1.0
    }

    /// A tensor of uniform values.
    fn tensor(&mut self, shape: Vec<usize>) -> Result<NativeTensor, tfmc_runtime::TensorError> {
        let n = shape.iter().product();
        let data = (0..n).map(|_| self.next()).collect();
        NativeTensor::from_f32(shape, data)
    }
}
