//! Manifest entries of prepared kernels and the artifact manifest of a target
//! (`tfmc_runtime::manifest`): what the runtime checks a call against, for the JIT, the AOT
//! shared library and the PTX artifact alike.

use std::collections::BTreeMap;

use tfmc_runtime::Scalar;
use tfmc_runtime::manifest::{DimSpec, KernelManifest, Manifest, ParamSpec, ParamValue, TensorSpec};

use super::{CompileError, Prepared, Target, cuda};
use crate::Program;
use crate::backend::llvm;
use crate::ir::{ProductDim, Size};
use crate::schedule::{ArgInfo, Scheduled};

/// The exported C symbol of kernel `name`.
pub fn symbol(name: &str) -> String {
    format!("tfmc_{name}")
}

fn spec(a: &ArgInfo, products: &[ProductDim]) -> TensorSpec {
    let dim = |s: &Size| match s {
        Size::Dim(d) => match products.iter().find(|p| &p.name == d) {
            Some(p) => {
                let scale = (p.scale != 1).then_some(DimSpec::Fixed(p.scale));
                DimSpec::Product(scale.into_iter().chain(p.factors.iter().map(|f| DimSpec::Dim(f.clone()))).collect())
            }
            None => DimSpec::Dim(d.clone()),
        },
        Size::Fixed(n) => DimSpec::Fixed(*n),
    };
    TensorSpec { name: a.name.clone(), dtype: a.dtype.name().to_string(), shape: a.shape.iter().map(dim).collect() }
}

/// The manifest entry of a scheduled kernel; `params` override the declared defaults.
pub(super) fn kernel_manifest(
    program: &Program,
    name: &str,
    s: &Scheduled,
    params: &BTreeMap<String, Scalar>,
) -> Result<KernelManifest, CompileError> {
    let doc = program.kernel(name).map(|(_, k)| k.docs.join("\n")).unwrap_or_default();
    let mut ps = Vec::new();
    for (id, pname, dtype) in &s.params {
        let declared = program.params.get(*id).and_then(|p| p.default).map(crate::semantics::ops::lit_scalar);
        let v = params
            .get(pname)
            .copied()
            .or(declared)
            .ok_or_else(|| CompileError::Param(format!("param '{pname}' has no value; pass --param {pname}=VALUE")))?;
        let default = if dtype.is_float() {
            ParamValue::Float(v.as_f64())
        } else if dtype.is_int() {
            match v {
                Scalar::I(i) => ParamValue::Int(i),
                _ => return Err(CompileError::Param(format!("param '{pname}' is {}; '{}' does not fit", dtype.name(), v.as_f64()))),
            }
        } else {
            ParamValue::Bool(v.as_bool())
        };
        ps.push(ParamSpec { name: pname.clone(), dtype: dtype.name().to_string(), default });
    }
    for given in params.keys() {
        if !program.params.iter().any(|p| &p.name == given) {
            let known: Vec<&str> = program.params.iter().map(|p| p.name.as_str()).collect();
            return Err(CompileError::Param(format!(
                "unknown param '{given}'; params: {}",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        }
    }
    Ok(KernelManifest {
        name: name.to_string(),
        symbol: symbol(name),
        doc,
        inputs: s.inputs.iter().map(|a| spec(a, &s.products)).collect(),
        outputs: s.outputs.iter().map(|a| spec(a, &s.products)).collect(),
        dims: s.dims.clone(),
        params: ps,
        sites: s.func.sites.clone(),
        gpu: None,
    })
}

/// The artifact manifest of `kernels` prepared for `target`: for an LLVM target the resolved
/// CPU (triple, CPU name, features), for a GPU target `{kind: "cuda", triple:
/// "nvptx64-nvidia-cuda", cpu: "sm_XY", features: ["ptxNN"]}`; a Cranelift target is this
/// machine as LLVM resolves it.
pub fn manifest(kernels: &[Prepared], target: &Target) -> Result<Manifest, CompileError> {
    let t = match target {
        Target::Llvm(o) => llvm::resolve_target(o)?,
        Target::Cranelift(_) => llvm::resolve_target(&Default::default())?,
        Target::Cuda(g) | Target::GpuEmu(g) => cuda::manifest_target(g)?,
    };
    Ok(Manifest {
        format: tfmc_runtime::manifest::FORMAT_NAME.to_string(),
        version: tfmc_runtime::manifest::FORMAT_VERSION,
        compiler_version: env!("CARGO_PKG_VERSION").to_string(),
        target: t,
        kernels: kernels.iter().map(|k| k.manifest.clone()).collect(),
    })
}
