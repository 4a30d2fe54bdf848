//! Kernels compiled once per backend and kept: [`compiled`] prepares a kernel through the
//! driver (`driver::prepare`: lower, optimize with the case's split, schedule for the target)
//! and hands it to a worker thread that compiles it (`driver::with_jit` for LLVM and
//! Cranelift, `backend::nvptx::emu::with_emulator` for the GPU emulation) and then serves runs
//! (`tfmc_runtime::call::call`, `tfmc_runtime::gpu::run`) until the cache drops it. The JITs
//! are not `Send` and free their code when their closure returns; the worker keeps the closure
//! open, as `driver::LiveJit` does. Panics in preparing, compiling or running become error
//! texts starting with "panicked" (a crash in generated code still kills the process).

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use tfmc::driver::{CompileOptions, Prepared, Target};
use tfmc::hir::Program;
use tfmc_runtime::{Scalar, Tensor};

/// The backends under test, by name.
pub fn backends() -> [(&'static str, Target); 3] {
    [("llvm", Target::host_llvm()), ("cranelift", Target::cranelift()), ("gpu-emu", Target::gpu_emu())]
}

/// Outputs by name, or why the run failed (the error's text).
pub type Outputs = Result<BTreeMap<String, Tensor>, String>;

struct Request {
    inputs: BTreeMap<String, Tensor>,
    params: BTreeMap<String, Scalar>,
    reply: mpsc::Sender<Outputs>,
}

/// One kernel compiled for one backend, or why it could not be.
pub struct Compiled {
    worker: Result<Mutex<mpsc::Sender<Request>>, String>,
    /// The params the kernel's manifest lists.
    params: Vec<String>,
}

impl Compiled {
    /// Runs the kernel on `inputs` and `params`; a compile failure is this run's failure.
    pub fn run(&self, inputs: &BTreeMap<String, Tensor>, params: &BTreeMap<String, Scalar>) -> Outputs {
        let tx = self.worker.as_ref().map_err(Clone::clone)?;
        let (reply, answer) = mpsc::channel();
        // The interpreter ignores params the kernel does not use; the compiled kernel's
        // manifest lists only those it uses and rejects others.
        let params = params.iter().filter(|(k, _)| self.params.iter().any(|p| p == *k)).map(|(k, v)| (k.clone(), *v)).collect();
        let req = Request { inputs: inputs.clone(), params, reply };
        tx.lock().unwrap_or_else(|e| e.into_inner()).send(req).map_err(|_| "panicked: the worker is gone".to_string())?;
        answer.recv().unwrap_or_else(|_| Err("panicked: the worker stopped".to_string()))
    }

    /// Why the kernel did not compile, if it did not.
    pub fn compile_error(&self) -> Option<&str> {
        self.worker.as_ref().err().map(String::as_str)
    }
}

pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    let s = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
    format!("panicked: {}", s.unwrap_or_default())
}

/// Serves requests with `run` until the sender hangs up; a panicking run answers its panic.
fn serve(ready: &mpsc::Sender<Result<(), String>>, rx: &mpsc::Receiver<Request>, run: &mut dyn FnMut(&Request) -> Outputs) {
    let _ = ready.send(Ok(()));
    for req in rx {
        let out = catch_unwind(AssertUnwindSafe(|| run(&req))).unwrap_or_else(|p| Err(panic_text(&*p)));
        let _ = req.reply.send(out);
    }
}

/// Compiles `k` for `target` on a worker thread that keeps the code.
fn spawn(target: Target, k: Prepared) -> Compiled {
    let params = k.manifest.params.iter().map(|p| p.name.clone()).collect();
    let (tx, rx) = mpsc::channel::<Request>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let worker = std::thread::Builder::new().stack_size(64 << 20).spawn(move || {
        let done = catch_unwind(AssertUnwindSafe(|| match &target {
            Target::GpuEmu(_) => tfmc::backend::nvptx::emu::with_emulator(&[k.export()], |dev| {
                serve(&ready_tx, &rx, &mut |r| tfmc_runtime::gpu::run(dev, &k.manifest, &r.inputs, &r.params).map_err(|e| e.to_string()))
            })
            .map_err(|e| e.to_string()),
            _ => tfmc::driver::with_jit(&target, std::slice::from_ref(&k), |entry| match entry(&k.manifest.symbol) {
                // SAFETY: the entry was compiled from this manifest's kernel, with the packed ABI.
                Some(e) => serve(&ready_tx, &rx, &mut |r| {
                    unsafe { tfmc_runtime::call::call(e, &k.manifest, &r.inputs, &r.params) }.map_err(|e| e.to_string())
                }),
                None => {
                    let _ = ready_tx.send(Err(format!("the JIT has no symbol '{}'", k.manifest.symbol)));
                }
            })
            .map_err(|e| e.to_string()),
        }));
        let err = match done {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(p) => panic_text(&*p),
        };
        let _ = ready_tx.send(Err(err));
    });
    let worker = match worker {
        Ok(_) => match ready_rx.recv() {
            Ok(Ok(())) => Ok(Mutex::new(tx)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("panicked: the compile thread stopped".to_string()),
        },
        Err(e) => Err(format!("cannot start a worker: {e}")),
    };
    Compiled { worker, params }
}

/// Kernel `kernel` of `program` (the program's text is `text`) compiled for `target` with the
/// optimizer's options for the program and `split`, from the cache or compiled now.
pub fn compiled(text: &str, program: &Program, kernel: &str, split: &Option<(String, i64)>, target: &Target) -> Arc<Compiled> {
    type Cache = Mutex<HashMap<String, Arc<Compiled>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = format!("{}\u{0}{kernel}\u{0}{split:?}\u{0}{}", text, target.name());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return c.clone();
    }
    let opts = CompileOptions {
        optimize: Some(tfmc::optimize::Options { split: split.clone(), ..tfmc::optimize::Options::for_program(program) }),
        ..CompileOptions::default()
    };
    let c = match catch_unwind(AssertUnwindSafe(|| tfmc::driver::prepare(program, kernel, &opts, target))) {
        Ok(Ok(k)) => spawn(target.clone(), k),
        Ok(Err(e)) => Compiled { worker: Err(e.to_string()), params: Vec::new() },
        Err(p) => Compiled { worker: Err(panic_text(&*p)), params: Vec::new() },
    };
    let c = Arc::new(c);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    // Each entry holds a thread and its code: keep the cache small (lib kernels come back).
    if cache.len() >= 96 {
        cache.clear();
    }
    cache.insert(key, c.clone());
    c
}
