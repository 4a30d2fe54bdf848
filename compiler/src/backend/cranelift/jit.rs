//! The host ISA and the JIT module. Owns [`Cx`] (the module-level translation state: the
//! `JITModule`, declared imports, entry ids, host capabilities), [`Jit`] and [`with_jit`].
//!
//! Every external symbol generated code calls is registered with the JIT by address, so
//! linking never depends on what the host process exports: `tfmc_parallel_for` (the runtime's
//! thread pool), `tfmc_calloc`/`tfmc_malloc`/`tfmc_free` (the runtime's heap buffers), every math
//! function of [`crate::backend::host::math_symbols`], and the libcalls Cranelift itself may
//! emit (`floorf`, `ceilf`, `truncf`, `fmaf`, `nearest` as `roundevenf`, and their `f64`
//! forms).
//!
//! Flags: `opt_level` from the options, `is_pic=false` and `use_colocated_libcalls=false`
//! (absolute calls to host functions), inline stack probes (parallel bodies hold tens of KiB
//! of stack buffers), Cranelift's internal verifier off: [`Cx::verify`] runs it explicitly in
//! debug builds and turns its report into an error.
//!
//! [`with_jit`] translates every function first, then compiles them to machine code on up to
//! `available_parallelism` threads (largest first: a kernel's parallel bodies are independent
//! functions; small modules stay on the calling thread), then defines the bytes in the module
//! in translation order and links.
//!
//! Invariant: the JIT's code lives exactly as long as its [`Cx`]; dropping it frees the code
//! (`free_memory`), so entries must not be called after [`with_jit`]'s closure returns.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{AbiParam, Function, Signature, Type};
use cranelift_codegen::isa::{OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{Context, ir};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, ModuleReloc, default_libcall_names};

use super::{CraneliftError, CraneliftOptions, Export, OptLevel, PackedFn, translate};
use crate::backend::host::{heap_calloc, heap_free, heap_malloc, math_symbols, parallel_for};

extern "C" fn m_truncf(x: f32) -> f32 {
    x.trunc()
}
extern "C" fn m_trunc(x: f64) -> f64 {
    x.trunc()
}
extern "C" fn m_fmaf(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}
extern "C" fn m_fma(a: f64, b: f64, c: f64) -> f64 {
    a.mul_add(b, c)
}

/// Compiled exports, valid inside [`with_jit`]'s closure.
pub struct Jit {
    packed: HashMap<String, PackedFn>,
}

impl Jit {
    /// The packed entry of export `symbol`.
    pub fn entry(&self, symbol: &str) -> Option<PackedFn> {
        self.packed.get(symbol).copied()
    }
}

/// Compiles `exports` in memory and runs `f` with the compiled entries; the code is freed when
/// `f` returns.
pub fn with_jit<R>(exports: &[Export<'_>], opts: &CraneliftOptions, f: impl FnOnce(&Jit) -> R) -> Result<R, CraneliftError> {
    let mut cx = Cx::new(opts)?;
    let mut funcs = Vec::new();
    translate(&mut cx, exports, &mut |_, kernel, id, func| {
        funcs.push((kernel.to_string(), id, func));
        Ok(())
    })?;
    for c in compile_all(cx.module.isa(), funcs) {
        let c = c?;
        cx.module.define_function_bytes(c.id, c.align, &c.bytes, &c.relocs).map_err(|e| CraneliftError::Compile {
            kernel: c.kernel,
            function: c.name,
            message: e.to_string(),
        })?;
    }
    let module = &mut *cx.module;
    catch_unwind(AssertUnwindSafe(|| module.finalize_definitions().map_err(|e| e.to_string())))
        .map_err(|_| CraneliftError::Jit("linking panicked (an unresolved symbol?)".into()))?
        .map_err(CraneliftError::Jit)?;
    let mut packed = HashMap::new();
    for e in exports {
        let id = cx.entries.get(&e.symbol).ok_or_else(|| CraneliftError::Jit(format!("no entry '{}_packed'", e.symbol)))?;
        let p = cx.module.get_finalized_function(*id);
        // SAFETY: `{symbol}_packed` is generated with exactly PackedFn's signature (entry.rs)
        // in the host's C calling convention; the pointer is valid until `cx` is dropped.
        packed.insert(e.symbol.clone(), unsafe { std::mem::transmute::<*const u8, PackedFn>(p) });
    }
    let jit = Jit { packed };
    let r = f(&jit);
    drop(jit);
    drop(cx);
    Ok(r)
}

/// Module-level translation state (see the module docs).
pub(super) struct Cx {
    pub(super) module: ManuallyDrop<JITModule>,
    /// Vectorize loops (the option, and the host has the SIMD the vector code needs).
    pub(super) simd: bool,
    /// Contract `a * b + c` into `fma` (the host has FMA).
    pub(super) fma: bool,
    imports: HashMap<String, FuncId>,
    /// The packed entry of each export symbol.
    pub(super) entries: HashMap<String, FuncId>,
}

impl Drop for Cx {
    fn drop(&mut self) {
        // SAFETY: taken once, here; every entry is called only inside `with_jit`'s closure,
        // which has returned (or unwound) before the context is dropped.
        let module = unsafe { ManuallyDrop::take(&mut self.module) };
        // SAFETY: no function of the module is running (see above).
        unsafe { module.free_memory() };
    }
}

fn host_isa(opts: &CraneliftOptions) -> Result<OwnedTargetIsa, CraneliftError> {
    let mut flags = settings::builder();
    let level = match opts.opt_level {
        OptLevel::None => "none",
        OptLevel::Speed => "speed",
    };
    let set = [
        ("opt_level", level),
        ("use_colocated_libcalls", "false"),
        ("is_pic", "false"),
        ("enable_verifier", "false"),
        ("enable_probestack", "true"),
        ("probestack_strategy", "inline"),
    ];
    for (k, v) in set {
        flags.set(k, v).map_err(|e| CraneliftError::Host(format!("setting {k}={v}: {e}")))?;
    }
    let builder = cranelift_native::builder().map_err(|e| CraneliftError::Host(e.to_string()))?;
    builder.finish(settings::Flags::new(flags)).map_err(|e| CraneliftError::Host(e.to_string()))
}

impl Cx {
    pub(super) fn new(opts: &CraneliftOptions) -> Result<Cx, CraneliftError> {
        let isa = host_isa(opts)?;
        let has = |name: &str| isa.isa_flags().iter().any(|v| v.name == name && v.as_bool() == Some(true));
        let simd = opts.simd && has("has_sse41") && has("has_sse42");
        let fma = has("has_fma");
        let libcalls = default_libcall_names();
        let mut b = JITBuilder::with_isa(
            isa,
            Box::new(move |lc| match lc {
                ir::LibCall::NearestF32 => "roundevenf".to_string(),
                ir::LibCall::NearestF64 => "roundeven".to_string(),
                lc => libcalls(lc),
            }),
        );
        b.symbol("tfmc_parallel_for", parallel_for() as *const u8);
        b.symbol("tfmc_calloc", heap_calloc() as *const u8);
        b.symbol("tfmc_malloc", heap_malloc() as *const u8);
        b.symbol("tfmc_free", heap_free() as *const u8);
        b.symbol("truncf", m_truncf as *const u8);
        b.symbol("trunc", m_trunc as *const u8);
        b.symbol("fmaf", m_fmaf as *const u8);
        b.symbol("fma", m_fma as *const u8);
        for (name, _, addr) in math_symbols() {
            b.symbol(name, addr as *const u8);
        }
        Ok(Cx { module: ManuallyDrop::new(JITModule::new(b)), simd, fma, imports: HashMap::new(), entries: HashMap::new() })
    }

    /// A signature in the host's C calling convention.
    pub(super) fn signature(&self, params: &[Type], ret: Option<Type>) -> Signature {
        let mut sig = self.module.make_signature();
        sig.params.extend(params.iter().map(|&t| AbiParam::new(t)));
        sig.returns.extend(ret.map(AbiParam::new));
        sig
    }

    /// Declares (once) the external function `name` with this signature.
    pub(super) fn import(&mut self, name: &str, params: &[Type], ret: Option<Type>) -> Result<FuncId, CraneliftError> {
        if let Some(&id) = self.imports.get(name) {
            return Ok(id);
        }
        let sig = self.signature(params, ret);
        let id = self
            .module
            .declare_function(name, Linkage::Import, &sig)
            .map_err(|e| CraneliftError::Jit(format!("declaring '{name}': {e}")))?;
        self.imports.insert(name.to_string(), id);
        Ok(id)
    }

    /// Declares a function defined by this module.
    pub(super) fn declare(&mut self, name: &str, linkage: Linkage, sig: &Signature) -> Result<FuncId, CraneliftError> {
        self.module.declare_function(name, linkage, sig).map_err(|e| CraneliftError::Jit(format!("declaring '{name}': {e}")))
    }

    /// Runs Cranelift's verifier on `func` in debug builds (see [`verify`]).
    pub(super) fn verify(&self, kernel: &str, func: &Function) -> Result<(), CraneliftError> {
        verify(self.module.isa(), kernel, func)
    }
}

/// A function compiled to machine code, ready to define in the module.
struct Compiled {
    id: FuncId,
    kernel: String,
    name: String,
    align: u64,
    bytes: Vec<u8>,
    relocs: Vec<ModuleReloc>,
}

/// Runs Cranelift's verifier on `func` of `kernel` in debug builds (release builds trust
/// validated KIR and skip its cost).
fn verify(isa: &dyn TargetIsa, kernel: &str, func: &Function) -> Result<(), CraneliftError> {
    if !cfg!(debug_assertions) {
        return Ok(());
    }
    cranelift_codegen::verify_function(func, isa).map_err(|errors| CraneliftError::Verify {
        kernel: kernel.to_string(),
        function: func.name.to_string(),
        message: cranelift_codegen::print_errors::pretty_verifier_error(func, None, errors),
    })
}

/// Verifies (debug builds) and compiles function `id` of `kernel`.
fn compile_one(isa: &dyn TargetIsa, kernel: &str, id: FuncId, func: Function) -> Result<Compiled, CraneliftError> {
    verify(isa, kernel, &func)?;
    let name = func.name.to_string();
    let err = |message: String| CraneliftError::Compile { kernel: kernel.to_string(), function: name.clone(), message };
    let mut ctx = Context::for_function(func);
    let compiled = catch_unwind(AssertUnwindSafe(|| {
        ctx.compile(isa, &mut ControlPlane::default())
            .map(|c| (c.buffer.alignment, c.code_buffer().to_vec()))
            .map_err(|e| format!("{:?}", e.inner))
    }))
    .map_err(|_| err("code generation panicked".into()))?
    .map_err(err)?;
    let relocs = match ctx.compiled_code() {
        Some(c) => c.buffer.relocs().iter().map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, id)).collect(),
        None => return Err(err("no code after compiling".into())),
    };
    Ok(Compiled { id, kernel: kernel.to_string(), name, align: u64::from(compiled.0), bytes: compiled.1, relocs })
}

/// Below this many instructions in all, a module compiles on the calling thread (starting
/// threads would cost more than it saves).
const PARALLEL_INSTS: usize = 4000;

/// Compiles `funcs` on up to `available_parallelism` threads, largest first (on the calling
/// thread when small); the results are in `funcs`' order.
fn compile_all(isa: &dyn TargetIsa, funcs: Vec<(String, FuncId, Function)>) -> Vec<Result<Compiled, CraneliftError>> {
    let insts: usize = funcs.iter().map(|f| f.2.dfg.num_insts()).sum();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(funcs.len());
    if workers <= 1 || insts < PARALLEL_INSTS {
        return funcs.into_iter().map(|(k, id, f)| compile_one(isa, &k, id, f)).collect();
    }
    let n = funcs.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(funcs[i].2.dfg.num_insts()));
    let jobs: Vec<Mutex<Option<(String, FuncId, Function)>>> = funcs.into_iter().map(|f| Mutex::new(Some(f))).collect();
    let results: Vec<Mutex<Option<Result<Compiled, CraneliftError>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = order.get(k) else { break };
                    // Each job is taken once: `order` is a permutation.
                    let job = jobs[i].lock().ok().and_then(|mut j| j.take());
                    if let Some((kernel, id, func)) = job {
                        let r = compile_one(isa, &kernel, id, func);
                        if let Ok(mut slot) = results[i].lock() {
                            *slot = Some(r);
                        }
                    }
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err(CraneliftError::Jit("a compile worker stopped before finishing its function".into())))
        })
        .collect()
}
