//! Shared helpers for the conformance tests: loading `lib/` files, running the interpreter on
//! f64 data, seeded random inputs, and tolerance checks that report the worst element.

pub mod paged;
pub mod reference;

use std::collections::BTreeMap;
use std::path::PathBuf;

use rand::Rng;
use rand::rngs::StdRng;
use reference::Nd;
use tfmc_runtime::{DType, Scalar, Tensor, TensorData};

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds a shared library (and its C header) for this machine with the host's LLVM target:
/// what `tfmc build` does.
pub fn build(
    program: &tfmc::Program,
    out: &std::path::Path,
    opts: &tfmc::driver::CompileOptions,
) -> Result<Vec<tfmc::driver::Prepared>, tfmc::driver::CompileError> {
    tfmc::driver::build(program, out, opts, &tfmc::driver::Target::host_llvm())
}

/// The `.tfm` files directly in `dir`, sorted (none if `dir` cannot be read).
pub fn tfm_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|x| x == "tfm"));
    v.sort();
    v
}

/// The file's text with every `use "x"` line replaced by the text of `x` (once per file,
/// tracked in `seen`), so a derived program does not depend on the working directory.
pub fn inline_uses(path: &std::path::Path, seen: &mut Vec<PathBuf>) -> String {
    let Ok(text) = std::fs::read_to_string(path) else { return String::new() };
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut out = String::new();
    for line in text.lines() {
        let used = line.trim().strip_prefix("use \"").and_then(|r| r.strip_suffix('"'));
        // Only regular files are inlined: a `use` of a device (tests/check has `use "/dev/zero"`)
        // stays as written, for the compiler to refuse, instead of being read forever here.
        let regular = |p: &PathBuf| std::fs::metadata(p).is_ok_and(|m| m.is_file());
        match used.map(|u| dir.join(u)).and_then(|p| std::fs::canonicalize(p).ok()).filter(regular) {
            Some(p) if seen.contains(&p) => {}
            Some(p) => {
                seen.push(p.clone());
                out.push_str(&inline_uses(&p, seen));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Path of a file of the standard library (`lib/` at the workspace root).
pub fn lib_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("lib").join(file)
}

/// Loads (parses, resolves `use`, checks) a `lib/` file; panics with the rendered diagnostics.
pub fn load_lib(file: &str) -> tfmc::Program {
    let path = lib_path(file);
    match tfmc::load(&path) {
        Ok(program) => program,
        Err(diags) => panic!("{} does not check:\n{diags}", path.display()),
    }
}

/// Named kernel inputs, built fluently.
#[derive(Default)]
pub struct Inputs(pub BTreeMap<String, Tensor>);

impl Inputs {
    pub fn new() -> Inputs {
        Inputs::default()
    }

    /// Adds an f32 tensor (the data should be f32-representable, see [`rand_nd`]).
    pub fn f32(mut self, name: &str, x: &Nd) -> Inputs {
        self.0.insert(name.to_string(), f32_tensor(x));
        self
    }

    /// Adds a float tensor of `dtype` holding the values of `x` rounded to it (see
    /// [`rounded`] for the values the kernel sees).
    pub fn float(mut self, name: &str, dtype: DType, x: &Nd) -> Inputs {
        let t = Tensor::from_f64(dtype, x.shape.clone(), x.data.clone()).expect("float tensor");
        self.0.insert(name.to_string(), t);
        self
    }

    /// Adds a bool tensor: true where `x` is nonzero.
    pub fn bool(mut self, name: &str, x: &Nd) -> Inputs {
        let data = TensorData::B(x.data.iter().map(|&a| a != 0.0).collect());
        self.0.insert(name.to_string(), Tensor::new(DType::Bool, x.shape.clone(), data).expect("bool tensor"));
        self
    }

    /// Adds a rank-1 i32 tensor.
    pub fn i32(mut self, name: &str, data: &[i32]) -> Inputs {
        self.0.insert(name.to_string(), i32_tensor(data));
        self
    }

    /// Adds an i32 tensor of `shape` (row-major `data`).
    pub fn i32_shaped(mut self, name: &str, shape: &[usize], data: &[i32]) -> Inputs {
        let t = Tensor::new(DType::I32, shape.to_vec(), TensorData::I(data.iter().map(|&x| x.into()).collect())).expect("i32 tensor");
        self.0.insert(name.to_string(), t);
        self
    }
}

/// An f32 tensor holding the values of `x`.
pub fn f32_tensor(x: &Nd) -> Tensor {
    Tensor::from_f64(DType::F32, x.shape.clone(), x.data.clone()).expect("f32 tensor")
}

/// `x` rounded to the float `dtype` (as [`Inputs::float`] stores it).
pub fn rounded(x: &Nd, dtype: DType) -> Nd {
    let t = Tensor::from_f64(dtype, x.shape.clone(), x.data.clone()).expect("float tensor");
    Nd::new(&x.shape, t.to_f64_vec())
}

/// A rank-1 i32 tensor.
pub fn i32_tensor(data: &[i32]) -> Tensor {
    Tensor::new(DType::I32, vec![data.len()], TensorData::I(data.iter().map(|&x| x.into()).collect())).expect("i32 tensor")
}

/// An i64 parameter value.
pub fn param_i64(v: i64) -> Scalar {
    Scalar::I(v)
}

/// An f32 parameter value.
pub fn param_f32(v: f32) -> Scalar {
    Scalar::F(f64::from(v))
}

/// Runs `kernel` of `program` in the interpreter (`run_exact`: unrounded f64 outputs); panics
/// with the error on failure.
pub fn run(program: &tfmc::Program, kernel: &str, inputs: &Inputs, params: &[(&str, Scalar)]) -> BTreeMap<String, Tensor> {
    let params: BTreeMap<String, Scalar> = params.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    match tfmc::interp::run_exact(program, kernel, &inputs.0, &params) {
        Ok(outputs) => outputs,
        Err(e) => panic!("interpreting kernel `{kernel}` failed: {e}"),
    }
}

/// Runs `kernel` and returns its output `out` as an f64 array (shape included).
pub fn run_out(program: &tfmc::Program, kernel: &str, inputs: &Inputs, params: &[(&str, Scalar)], out: &str) -> Nd {
    let outputs = run(program, kernel, inputs, params);
    let t = outputs.get(out).unwrap_or_else(|| panic!("kernel `{kernel}` has no output `{out}`; got {:?}", outputs.keys()));
    Nd::new(t.shape(), t.to_f64_vec())
}

/// Uniform random values in `[lo, hi)`, rounded to f32 so that the interpreter (which receives
/// f32 tensors) and the f64 reference see exactly the same inputs.
pub fn rand_nd(rng: &mut StdRng, shape: &[usize], lo: f64, hi: f64) -> Nd {
    let n = shape.iter().product();
    let data = (0..n).map(|_| rng.random_range(lo..hi) as f32 as f64).collect();
    Nd::new(shape, data)
}

/// `f` applied elementwise, each result rounded to f32 (inputs must stay f32-representable so
/// that the interpreter and the reference see the same values).
pub fn map_f32(x: &Nd, f: impl Fn(f64) -> f64) -> Nd {
    Nd::new(&x.shape, x.data.iter().map(|&a| f(a) as f32 as f64).collect())
}

/// The multi-index of a row-major offset.
pub fn unravel(shape: &[usize], mut flat: usize) -> Vec<usize> {
    let mut ix = vec![0; shape.len()];
    for (i, &n) in shape.iter().enumerate().rev() {
        ix[i] = flat % n.max(1);
        flat /= n.max(1);
    }
    ix
}

/// Unit roundoff of f32 (half an ulp, relative): `|round_f32(x) - x| <= F32_ROUNDOFF * |x|`.
pub const F32_ROUNDOFF: f64 = 1.0 / (1u64 << 24) as f64;

/// A tolerance: element i of `got` may differ from `want` by
/// `rtol * max(|want_i|, max_j |want_j|) + roundoff * |want_i|`.
///
/// `rtol` bounds the computation error, relative to the magnitude of the whole expected tensor
/// (so that elements which cancel to ~0 are not held to an impossible standard); `roundoff`
/// admits the rounding of each element to its storage dtype (an f32 output is rounded when it
/// is stored in its tensor, however precisely it was computed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tol {
    pub rtol: f64,
    pub roundoff: f64,
}

impl Tol {
    /// Bit-for-bit equality.
    pub const EXACT: Tol = Tol { rtol: 0.0, roundoff: 0.0 };

    /// `rtol` plus the rounding of f32 results: one rounding against an f64 reference, two when
    /// two rounded outputs are compared with each other (hence 2 × [`F32_ROUNDOFF`]).
    pub const fn f32_out(rtol: f64) -> Tol {
        Tol { rtol, roundoff: 2.0 * F32_ROUNDOFF }
    }

    /// Only `rtol` (no storage rounding), e.g. for f64 results.
    pub const fn rel(rtol: f64) -> Tol {
        Tol { rtol, roundoff: 0.0 }
    }
}

impl std::fmt::Display for Tol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rtol {:e} + roundoff {:e}", self.rtol, self.roundoff)
    }
}

/// The worst element of a failed [`compare`].
#[derive(Clone, Debug)]
pub struct Mismatch {
    /// Flat index of the worst element (largest error relative to its tolerance).
    pub index: usize,
    pub got: f64,
    pub want: f64,
    /// How many times its tolerance the worst error is.
    pub ratio: f64,
    /// Number of elements beyond tolerance, and in total.
    pub failures: usize,
    pub len: usize,
    /// The tolerance scale: `max_j |want_j|`.
    pub magnitude: f64,
    pub tol: Tol,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} elements differ beyond {} (magnitude {:e}); worst at flat index {}: \
             got {:e}, want {:e}, |diff| {:e} = {:.3e} × tolerance",
            self.failures,
            self.len,
            self.tol,
            self.magnitude,
            self.index,
            self.got,
            self.want,
            (self.got - self.want).abs(),
            self.ratio
        )
    }
}

/// Elementwise check of `got` against `want` within `tol` (see [`Tol`]). A non-finite `got`
/// fails unless it equals `want`. Returns the worst element when any fails.
pub fn compare(got: &[f64], want: &[f64], tol: Tol) -> Option<Mismatch> {
    assert_eq!(got.len(), want.len(), "got {} elements, want {}", got.len(), want.len());
    let magnitude = want.iter().fold(0.0f64, |a, w| a.max(w.abs()));
    let (mut worst, mut worst_ratio, mut failures) = (0, -1.0f64, 0);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let allowed = tol.rtol * w.abs().max(magnitude) + tol.roundoff * w.abs();
        let diff = (g - w).abs();
        let ratio = if g == w {
            0.0
        } else if !g.is_finite() || diff.is_nan() || allowed == 0.0 {
            f64::INFINITY
        } else {
            diff / allowed
        };
        if ratio > 1.0 {
            failures += 1;
        }
        if ratio > worst_ratio {
            (worst, worst_ratio) = (i, ratio);
        }
    }
    (failures > 0).then(|| Mismatch {
        index: worst,
        got: got[worst],
        want: want[worst],
        ratio: worst_ratio,
        failures,
        len: got.len(),
        magnitude,
        tol,
    })
}

/// Panics unless `got` matches `want` within relative tolerance `rtol` scaled by the magnitude
/// of `want` (see [`Tol`]), naming the worst index.
pub fn assert_close(name: &str, got: &[f64], want: &[f64], rtol: f64) {
    if let Some(m) = compare(got, want, Tol::rel(rtol)) {
        panic!("{name}: {m}");
    }
}

/// Like [`assert_close`] on arrays with a full [`Tol`]: also checks the shape and names the
/// worst multi-index.
pub fn assert_nd_close(name: &str, got: &Nd, want: &Nd, tol: Tol) {
    assert_eq!(got.shape, want.shape, "{name}: output shape");
    if let Some(m) = compare(&got.data, &want.data, tol) {
        panic!("{name}: {m}\n  worst multi-index {:?} of shape {:?}", unravel(&got.shape, m.index), got.shape);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_scales_by_magnitude_and_names_the_worst() {
        let tol = Tol::rel(1e-9);
        assert!(compare(&[1.0, 1e-12], &[1.0, 0.0], tol).is_none());
        let m = compare(&[1.0, 2.0, 3.1, 4.0], &[1.0, 2.0, 3.0, 4.0 + 1e-12], tol).unwrap();
        assert_eq!((m.index, m.failures, m.len), (2, 1, 4));
        let m = compare(&[0.0, f64::NAN], &[0.0, 1.0], Tol::rel(1.0)).unwrap();
        assert_eq!(m.index, 1);
        assert!(compare(&[f64::INFINITY], &[f64::INFINITY], Tol::EXACT).is_none());
        assert!(compare(&[1.0 + 1e-12], &[1.0], Tol::EXACT).is_some());
        // An f32-rounded result of an exact computation passes f32_out.
        let x = 1.0 / 3.0;
        assert!(compare(&[x as f32 as f64], &[x], Tol::f32_out(1e-9)).is_none());
        assert!(compare(&[x as f32 as f64], &[x], Tol::rel(1e-9)).is_some());
        assert_eq!(unravel(&[2, 3, 4], 23), vec![1, 2, 3]);
    }
}
