//! Ahead-of-time artifacts: a sealed shared library holding the exports' machine code, the C
//! runtime (`tfmc_runtime::aot::C_RUNTIME_SOURCE`: the thread pool behind
//! `tfmc_parallel_for`) and the manifest JSON (global `tfmc_manifest` in section
//! `tfmc_runtime::manifest::SECTION`, its length in `tfmc_manifest_len: u64`).
//!
//! Steps: PIC object from LLVM → `cc -shared -fPIC -O2 -pthread -Wl,-Bsymbolic kernels.o
//! tfmc_rt.c -lm -lpthread` → `tfmc_runtime::aot::seal` → `tfmc_runtime::write_file_atomically`
//! onto `out`. `-Bsymbolic` binds the kernels' calls to `tfmc_parallel_for` (and the typed
//! wrappers' calls to the packed entries) to this library's own definitions, even when several
//! artifacts, each with its own pool, are loaded into one process. The build happens in a
//! temporary directory of the system's; the library is then written like every other output
//! (atomically, through symlinks, keeping an existing file's permissions, never replacing a
//! device), so on any failure nothing is left at `out` (an existing file there is only replaced
//! by a complete artifact).

use std::path::Path;
use std::process::Command;

use inkwell::context::Context;
use inkwell::module::Linkage;
use inkwell::targets::{FileType, RelocMode};

use super::{Export, LlvmError, TargetOptions, build_module, target};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LlvmError + '_ {
    move |source| LlvmError::Io { path: path.to_path_buf(), source }
}

/// Writes a shared library with `exports`, the C runtime and `manifest_json` to `out`
/// atomically (see the module docs).
pub fn build_shared_library(exports: &[Export<'_>], manifest_json: &str, opts: &TargetOptions, out: &Path) -> Result<(), LlvmError> {
    let (target, features) = target::resolve(opts)?;
    let tm = target::machine(&target, &features, opts.opt_level, RelocMode::PIC)?;
    let cx = Context::create();
    let module = build_module(&cx, exports, &target, &features, &tm, opts.opt_level)?;

    let bytes = manifest_json.as_bytes();
    let data = cx.const_string(bytes, false);
    let g = module.add_global(data.get_type(), None, "tfmc_manifest");
    g.set_initializer(&data);
    g.set_constant(true);
    g.set_linkage(Linkage::External);
    g.set_section(Some(tfmc_runtime::manifest::SECTION));
    g.set_alignment(1);
    let i64t = cx.i64_type();
    let len = module.add_global(i64t, None, "tfmc_manifest_len");
    len.set_initializer(&i64t.const_int(bytes.len() as u64, false));
    len.set_constant(true);
    len.set_linkage(Linkage::External);
    module.verify().map_err(|e| LlvmError::Verify(e.to_string()))?;

    let tmp = tempfile::Builder::new().prefix("tfmc-build-").tempdir().map_err(io(&std::env::temp_dir()))?;
    let obj = tmp.path().join("kernels.o");
    tm.write_to_file(&module, FileType::Object, &obj).map_err(|e| LlvmError::Codegen(e.to_string()))?;
    let rt = tmp.path().join("tfmc_rt.c");
    std::fs::write(&rt, tfmc_runtime::aot::C_RUNTIME_SOURCE).map_err(io(&rt))?;
    let lib = tmp.path().join("artifact.so");
    let output = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-pthread", "-Wl,-Bsymbolic", "-o"])
        .arg(&lib)
        .arg(&obj)
        .arg(&rt)
        .args(["-lm", "-lpthread"])
        .output()
        .map_err(|e| LlvmError::Cc(format!("could not run it: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(LlvmError::Cc(format!("{} ({})", stderr.trim(), output.status)));
    }
    tfmc_runtime::aot::seal(&lib).map_err(io(&lib))?;
    let bytes = std::fs::read(&lib).map_err(io(&lib))?;
    tfmc_runtime::write_file_atomically(out, &bytes).map_err(io(out))?;
    Ok(())
}
