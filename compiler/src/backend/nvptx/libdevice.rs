//! CUDA's libdevice (`libdevice.10.bc`): the device math library (`__nv_expf`, `__nv_tanh`,
//! ...) that the lowering calls for every function NVPTX has no instruction for (see
//! `backend::llvm::expr`). Owns finding the file and linking it into a module.
//!
//! Search order ([`find`]): the env var `TFMC_LIBDEVICE` (a file path; used as given, so a
//! wrong path is an error rather than a silent fallback); then
//! `<dir>/.venv/lib/python3*/site-packages/nvidia/cuda_nvcc/nvvm/libdevice/libdevice.10.bc`
//! (the `nvidia-cuda-nvcc-cu12` wheel `./setup.sh` installs) for the current directory and
//! each ancestor of the current executable; then `/usr/local/cuda/nvvm/libdevice/libdevice.10.bc`.
//!
//! Linking ([`link`]): the bitcode is parsed into the module's context, given the module's
//! triple and data layout, linked in, and every definition except the kernel entries is made
//! internal, so the optimizer inlines what is called and drops the rest. libdevice's
//! `__nvvm_reflect` queries are folded by NVPTX's `NVVMReflect` pass in the O3 pipeline
//! (`__CUDA_FTZ` = 0: no flush to zero, IEEE semantics as KIR requires).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use inkwell::context::Context;
use inkwell::module::{Linkage, Module};

use super::NvptxError;

/// The env var naming libdevice explicitly.
pub const ENV: &str = "TFMC_LIBDEVICE";

const WHEEL_TAIL: &str = "site-packages/nvidia/cuda_nvcc/nvvm/libdevice/libdevice.10.bc";
const SYSTEM: &str = "/usr/local/cuda/nvvm/libdevice/libdevice.10.bc";

/// The `.venv` candidates under `dir` (one per `python3*` directory).
fn venv_candidates(dir: &Path) -> Vec<PathBuf> {
    let lib = dir.join(".venv").join("lib");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&lib)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
                .map(|e| e.path().join(WHEEL_TAIL))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    if v.is_empty() {
        // Named in the error message even when no python3* directory exists.
        v.push(lib.join("python3*").join(WHEEL_TAIL));
    }
    v
}

/// Every path [`find`] tries, in order (after the env var).
pub fn candidates() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        dirs.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for d in dirs {
        if seen.insert(d.clone()) {
            out.extend(venv_candidates(&d));
        }
    }
    out.push(PathBuf::from(SYSTEM));
    out
}

/// The libdevice file to use, or every place that was looked at.
pub fn find() -> Result<PathBuf, Vec<PathBuf>> {
    if let Some(p) = std::env::var_os(ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() { Ok(p) } else { Err(vec![p]) };
    }
    let tried = candidates();
    tried.iter().find(|p| p.is_file()).cloned().ok_or(tried)
}

/// Links libdevice (at `path`) into `module` and internalizes every definition not in `keep`.
pub(crate) fn link<'ctx>(cx: &'ctx Context, module: &Module<'ctx>, path: &Path, keep: &HashSet<String>) -> Result<(), NvptxError> {
    let load_err = |message: String| NvptxError::LibdeviceLoad { path: path.to_path_buf(), message };
    let lib = Module::parse_bitcode_from_path(path, cx).map_err(|e| load_err(e.to_string()))?;
    lib.set_triple(&module.get_triple());
    lib.set_data_layout(&module.get_data_layout());
    module.link_in_module(lib).map_err(|e| load_err(format!("linking failed: {e}")))?;
    let mut f = module.get_first_function();
    while let Some(func) = f {
        let name = func.get_name().to_string_lossy();
        if func.count_basic_blocks() > 0 && !keep.contains(name.as_ref()) {
            func.set_linkage(Linkage::Internal);
        }
        f = func.get_next_function();
    }
    let mut g = module.get_first_global();
    while let Some(global) = g {
        if !global.is_declaration() && !global.get_name().to_string_lossy().starts_with("llvm.") {
            global.set_linkage(Linkage::Internal);
        }
        g = global.get_next_global();
    }
    Ok(())
}
