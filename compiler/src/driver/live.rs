//! JIT-compiled kernels that stay callable until dropped ([`LiveJit`]), for front doors that
//! keep compiled code between calls (the Python package) where [`with_jit`]'s closure scope
//! does not fit.
//!
//! The JIT (LLVM's execution engine or Cranelift's module, which borrow their contexts and
//! are not `Send`) never leaves the thread that made it: a thread of its own runs
//! [`with_jit`] and keeps its closure open until the [`LiveJit`] is dropped, then returns, so
//! the code is freed exactly as [`with_jit`] frees it. Only the packed entries (plain function
//! pointers) cross threads. Invariant: the entries are valid while the `LiveJit` lives; a
//! caller that hands them out must keep it alive for every call (an `Arc`).

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread::JoinHandle;

use tfmc_runtime::call::PackedFn;

use super::{CompileError, Prepared, Target, with_jit};

/// Stack of the thread that compiles and then owns the code (only touched pages are used).
const OWNER_STACK_BYTES: usize = 64 << 20;

/// Compiled kernels whose code lives until this is dropped.
pub struct LiveJit {
    /// The packed entry of each kernel, by C symbol.
    entries: BTreeMap<String, PackedFn>,
    /// Dropping it lets the owner thread return from [`with_jit`]'s closure.
    stop: Option<mpsc::Sender<()>>,
    owner: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LiveJit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveJit").field("symbols", &self.entries.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl LiveJit {
    /// JIT-compiles `kernels` for `target` (LLVM or Cranelift; others are
    /// [`CompileError::Unsupported`], as for [`with_jit`]) on a thread that keeps the code.
    pub fn compile(target: &Target, kernels: Vec<Prepared>) -> Result<LiveJit, CompileError> {
        let (ready_tx, ready_rx) = mpsc::channel::<Result<BTreeMap<String, PackedFn>, CompileError>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let target = target.clone();
        let owner = std::thread::Builder::new()
            .name("tfmc-jit".to_string())
            .stack_size(OWNER_STACK_BYTES)
            .spawn(move || {
                let done = with_jit(&target, &kernels, |entry| {
                    let mut map = BTreeMap::new();
                    for k in &kernels {
                        let Some(e) = entry(&k.manifest.symbol) else {
                            let _ = ready_tx.send(Err(CompileError::Internal(format!("the JIT has no symbol '{}'", k.manifest.symbol))));
                            return;
                        };
                        map.insert(k.manifest.symbol.clone(), e);
                    }
                    if ready_tx.send(Ok(map)).is_ok() {
                        // Keep the code until the handle is dropped (the sender then hangs up).
                        let _ = stop_rx.recv();
                    }
                });
                if let Err(e) = done {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| CompileError::Internal(format!("cannot start the JIT thread: {e}")))?;
        let mut live = LiveJit { entries: BTreeMap::new(), stop: Some(stop_tx), owner: Some(owner) };
        match ready_rx.recv() {
            Ok(Ok(entries)) => {
                live.entries = entries;
                Ok(live)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(CompileError::Internal("the JIT thread stopped without an answer (it panicked)".to_string())),
        }
    }

    /// The packed entry of the kernel with C symbol `symbol`; valid while `self` lives.
    pub fn entry(&self, symbol: &str) -> Option<PackedFn> {
        self.entries.get(symbol).copied()
    }
}

impl Drop for LiveJit {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(owner) = self.owner.take() {
            // A panic on the owner thread was already reported by `compile`.
            let _ = owner.join();
        }
    }
}
