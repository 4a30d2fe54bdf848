//! The host symbols a JIT-compiled kernel links against, shared by every CPU JIT (LLVM's
//! MCJIT, Cranelift's JIT): `tfmc_parallel_for` (the runtime's thread pool), `tfmc_calloc` / `tfmc_malloc` /
//! `tfmc_free` (the runtime's heap buffers, `tfmc_runtime::heap`) and every C math
//! function a backend may call — the libm functions KIR's math lowers to, plus the libcalls
//! code generators emit for operations they cannot inline (`fmodf`, `sincosf`, `floorf`
//! without SSE4.1, ...). Each maps to a Rust function (std's, which call the process's libm;
//! `erf`/`exp10` from the `libm` crate), so JIT linking never depends on what the host binary
//! happens to export.

/// Signatures of mapped math functions.
#[derive(Clone, Copy)]
pub(crate) enum Sig {
    /// `float f(float)`.
    F32,
    /// `double f(double)`.
    F64,
    /// `float f(float, float)`.
    F32x2,
    /// `double f(double, double)`.
    F64x2,
    /// `void f(float, float *, float *)`.
    SinCosF32,
    /// `void f(double, double *, double *)`.
    SinCosF64,
}

macro_rules! math {
    ($($sym:literal $name:ident $sig:ident ($($a:ident: $t:ty),+) -> $r:ty $body:block)*) => {
        $(extern "C" fn $name($($a: $t),+) -> $r $body)*
        /// Every math symbol the JIT maps (an export may not take these names).
        pub(crate) const LIBM_NAMES: &[&str] = &[$($sym),*];
        /// Every mapped math symbol: its C name, signature and address.
        pub(crate) fn math_symbols() -> Vec<(&'static str, Sig, usize)> {
            vec![$(($sym, Sig::$sig, $name as *const () as usize)),*]
        }
    };
}

math! {
    "exp" m_exp F64 (x: f64) -> f64 { x.exp() }
    "expf" m_expf F32 (x: f32) -> f32 { x.exp() }
    "exp2" m_exp2 F64 (x: f64) -> f64 { x.exp2() }
    "exp2f" m_exp2f F32 (x: f32) -> f32 { x.exp2() }
    "exp10" m_exp10 F64 (x: f64) -> f64 { libm::exp10(x) }
    "exp10f" m_exp10f F32 (x: f32) -> f32 { libm::exp10f(x) }
    "log" m_log F64 (x: f64) -> f64 { x.ln() }
    "logf" m_logf F32 (x: f32) -> f32 { x.ln() }
    "log2" m_log2 F64 (x: f64) -> f64 { x.log2() }
    "log2f" m_log2f F32 (x: f32) -> f32 { x.log2() }
    "log10" m_log10 F64 (x: f64) -> f64 { x.log10() }
    "log10f" m_log10f F32 (x: f32) -> f32 { x.log10() }
    "sin" m_sin F64 (x: f64) -> f64 { x.sin() }
    "sinf" m_sinf F32 (x: f32) -> f32 { x.sin() }
    "cos" m_cos F64 (x: f64) -> f64 { x.cos() }
    "cosf" m_cosf F32 (x: f32) -> f32 { x.cos() }
    "tanh" m_tanh F64 (x: f64) -> f64 { x.tanh() }
    "tanhf" m_tanhf F32 (x: f32) -> f32 { x.tanh() }
    "log1p" m_log1p F64 (x: f64) -> f64 { x.ln_1p() }
    "log1pf" m_log1pf F32 (x: f32) -> f32 { x.ln_1p() }
    "expm1" m_expm1 F64 (x: f64) -> f64 { x.exp_m1() }
    "expm1f" m_expm1f F32 (x: f32) -> f32 { x.exp_m1() }
    "erf" m_erf F64 (x: f64) -> f64 { libm::erf(x) }
    "erff" m_erff F32 (x: f32) -> f32 { libm::erff(x) }
    "floor" m_floor F64 (x: f64) -> f64 { x.floor() }
    "floorf" m_floorf F32 (x: f32) -> f32 { x.floor() }
    "ceil" m_ceil F64 (x: f64) -> f64 { x.ceil() }
    "ceilf" m_ceilf F32 (x: f32) -> f32 { x.ceil() }
    "roundeven" m_roundeven F64 (x: f64) -> f64 { x.round_ties_even() }
    "roundevenf" m_roundevenf F32 (x: f32) -> f32 { x.round_ties_even() }
    "sqrt" m_sqrt F64 (x: f64) -> f64 { x.sqrt() }
    "sqrtf" m_sqrtf F32 (x: f32) -> f32 { x.sqrt() }
    "pow" m_pow F64x2 (x: f64, y: f64) -> f64 { x.powf(y) }
    "powf" m_powf F32x2 (x: f32, y: f32) -> f32 { x.powf(y) }
    "atan2" m_atan2 F64x2 (y: f64, x: f64) -> f64 { y.atan2(x) }
    "atan2f" m_atan2f F32x2 (y: f32, x: f32) -> f32 { y.atan2(x) }
    "fmod" m_fmod F64x2 (x: f64, y: f64) -> f64 { x % y }
    "fmodf" m_fmodf F32x2 (x: f32, y: f32) -> f32 { x % y }
    "sincos" m_sincos SinCosF64 (x: f64, s: *mut f64, c: *mut f64) -> () {
        // SAFETY: LLVM's sincos libcall passes two valid out-pointers.
        unsafe { (*s, *c) = x.sin_cos() }
    }
    "sincosf" m_sincosf SinCosF32 (x: f32, s: *mut f32, c: *mut f32) -> () {
        // SAFETY: as for sincos.
        unsafe { (*s, *c) = x.sin_cos() }
    }
}

/// The address of the runtime's `tfmc_parallel_for`, which outlined `Parallel` bodies run on.
pub(crate) fn parallel_for() -> usize {
    tfmc_runtime::parallel::tfmc_parallel_for as *const () as usize
}

/// The address of the runtime's `tfmc_calloc` (heap buffers, large ones cached across calls).
pub(crate) fn heap_calloc() -> usize {
    tfmc_runtime::heap::tfmc_calloc as *const () as usize
}

/// The address of the runtime's `tfmc_malloc` (heap buffers the kernel writes before reading).
pub(crate) fn heap_malloc() -> usize {
    tfmc_runtime::heap::tfmc_malloc as *const () as usize
}

/// The address of the runtime's `tfmc_free`.
pub(crate) fn heap_free() -> usize {
    tfmc_runtime::heap::tfmc_free as *const () as usize
}
