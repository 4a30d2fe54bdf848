//! Timing one shape on tfmc: compile once, seeded inputs, warm-up, median of calls.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};
use tfmc_runtime::call::{alloc_outputs, bind_dims, call_native};
use tfmc_runtime::native::NativeTensor;
use tfmc_runtime::{DType, Scalar};

use super::*;
use crate::driver::{CompileOptions, Target, prepare, with_jit};

/// One shape's tfmc measurement.
#[derive(Clone, Debug)]
pub struct TfmcResult {
    /// Median time of one call, ms.
    pub median_ms: f64,
    /// Timed calls.
    pub iters: usize,
    /// Lowering + optimization + scheduling + JIT code generation, seconds.
    pub compile_s: f64,
    /// Whether the output held NaN or infinity.
    pub non_finite: bool,
}

/// A seeded uniform `[-1, 1)` f32 tensor.
pub(super) fn random_tensor(shape: Vec<usize>, rng: &mut StdRng) -> Result<NativeTensor, String> {
    let mut t = NativeTensor::zeros(DType::F32, shape.clone()).map_err(|e| format!("cannot allocate a tensor of shape {shape:?}: {e}"))?;
    if let Some(data) = t.as_f32_mut() {
        data.iter_mut().for_each(|x| *x = rng.random::<f32>() * 2.0 - 1.0);
    }
    Ok(t)
}

/// `paged_decode`'s inputs for a [`Kind::Paged`] shape: `Q[b, h, e]`, a pool of `b · m / PAGE`
/// pages `Kp`/`Vp[page, PAGE, h / 4, e]` in shuffled order, the block table `Tbl[b, m / PAGE]`
/// naming them, and full lengths `Len[b] = m` (as `bench/torch_ref.py` makes them).
fn paged_inputs(shape: &Shape, rng: &mut StdRng) -> Result<Vec<NativeTensor>, String> {
    use rand::seq::SliceRandom;
    let mp = shape.m.div_ceil(super::PAGE);
    let nb = shape.b * mp;
    let q = random_tensor(vec![shape.b, shape.h, shape.e], rng)?;
    let kp = random_tensor(vec![nb, super::PAGE, shape.kv_heads(), shape.e], rng)?;
    let vp = random_tensor(vec![nb, super::PAGE, shape.kv_heads(), shape.e], rng)?;
    let mut pages: Vec<i32> =
        (0..nb).map(|p| i32::try_from(p).map_err(|_| format!("{nb} pages do not fit i32"))).collect::<Result<_, _>>()?;
    pages.shuffle(rng);
    let tbl = NativeTensor::from_vec(vec![shape.b, mp], pages).map_err(|e| e.to_string())?;
    let len = i32::try_from(shape.m).map_err(|_| format!("{} tokens do not fit i32", shape.m))?;
    let lens = NativeTensor::from_vec(vec![shape.b], vec![len; shape.b]).map_err(|e| e.to_string())?;
    Ok(vec![q, kp, vp, tbl, lens])
}

/// The median of `v` (the mean of the middle two for even lengths); 0 for none.
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// How many timed calls fit the budget after a warm-up of `warm` (at least one).
pub(super) fn calls_within_budget(iters: usize, warm: Duration) -> usize {
    let per = warm.as_secs_f64();
    let fit = if per > 0.0 { (BUDGET_S / per).floor() as usize } else { iters };
    iters.min(fit).max(1)
}

/// Compiles `shape`'s kernel with `backend` and times it (see the module docs).
pub fn bench_tfmc(shape: &Shape, iters: usize, lib: &Path, target: &Target) -> Result<TfmcResult, String> {
    let (file, kernel) = shape.kind.kernel();
    let path = lib.join(file);
    let program = crate::load(&path).map_err(|d| format!("{}: does not check:\n{d}", path.display()))?;
    let mut copts = CompileOptions::default();
    let mut params = BTreeMap::new();
    if shape.kind == Kind::Window {
        let w = i64::try_from(shape.w).map_err(|_| format!("window {} too large", shape.w))?;
        copts.params.insert("W".to_string(), Scalar::I(w));
        params.insert("W".to_string(), Scalar::I(w));
    }
    let mut rng = StdRng::seed_from_u64(SEED);
    let owned = if shape.kind == Kind::Paged {
        paged_inputs(shape, &mut rng)?
    } else {
        let q = random_tensor(vec![shape.b, shape.h, shape.p, shape.e], &mut rng)?;
        let k = random_tensor(vec![shape.b, shape.kv_heads(), shape.m, shape.e], &mut rng)?;
        let v = random_tensor(vec![shape.b, shape.kv_heads(), shape.m, shape.e], &mut rng)?;
        vec![q, k, v]
    };
    let start = Instant::now();
    let prepared = prepare(&program, kernel, &copts, target).map_err(|e| format!("{kernel}: {e}"))?;
    let manifest = &prepared.manifest;
    let symbol = manifest.symbol.clone();
    with_jit(target, std::slice::from_ref(&prepared), |lookup| -> Result<TfmcResult, String> {
        let compile_s = start.elapsed().as_secs_f64();
        let entry = lookup(&symbol).ok_or_else(|| format!("the JIT has no symbol '{symbol}'"))?;
        let inputs: Vec<&NativeTensor> = owned.iter().collect();
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        let dims = bind_dims(manifest, &shapes).map_err(|e| e.to_string())?;
        let mut outputs = alloc_outputs(manifest, &dims).map_err(|e| e.to_string())?;
        let mut call = || -> Result<Duration, String> {
            let t = Instant::now();
            // SAFETY: `entry` is the packed entry JIT-compiled from `prepared`, whose manifest
            // entry is `manifest`; `call_native` checks every buffer against it.
            unsafe { call_native(entry, manifest, &inputs, &mut outputs, &params) }.map_err(|e| e.to_string())?;
            Ok(t.elapsed())
        };
        let warm = call()?;
        let n = calls_within_budget(iters, warm);
        let times = (0..n).map(|_| call().map(|d| d.as_secs_f64() * 1e3)).collect::<Result<Vec<_>, _>>()?;
        let non_finite = outputs.iter().any(|o| o.as_f32().is_some_and(|d| d.iter().any(|x| !x.is_finite())));
        Ok(TfmcResult { median_ms: median(times), iters: n, compile_s, non_finite })
    })
    .map_err(|e| format!("{kernel}: {e}"))?
}
