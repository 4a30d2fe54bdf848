//! Helpers for the runtime's integration tests: manifests, C-string escaping, and building a
//! sealed fake artifact from hand-written C with the system `cc`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tfmc_runtime::aot;
use tfmc_runtime::manifest::{DimSpec, FORMAT_NAME, FORMAT_VERSION, KernelManifest, Manifest, ParamSpec, ParamValue, Target, TensorSpec};

/// A tensor spec from a dtype and dims (numbers are fixed sizes).
pub fn spec(name: &str, dtype: &str, shape: &[&str]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dtype: dtype.into(),
        shape: shape
            .iter()
            .map(|d| match d.parse::<i64>() {
                Ok(n) => DimSpec::Fixed(n),
                Err(_) => DimSpec::Dim((*d).into()),
            })
            .collect(),
    }
}

/// A param spec.
pub fn param(name: &str, dtype: &str, default: ParamValue) -> ParamSpec {
    ParamSpec { name: name.into(), dtype: dtype.into(), default }
}

/// A kernel manifest entry.
pub fn kernel(
    name: &str,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    dims: &[&str],
    params: Vec<ParamSpec>,
    sites: &[&str],
) -> KernelManifest {
    KernelManifest {
        name: name.into(),
        symbol: format!("tfmc_{name}"),
        doc: format!("Test kernel {name}."),
        inputs,
        outputs,
        dims: dims.iter().map(|d| d.to_string()).collect(),
        params,
        sites: sites.iter().map(|s| s.to_string()).collect(),
        gpu: None,
    }
}

/// `add(A f32[N], B f32[N]) -> O f32[N]`, params `fail: bool`, `scale: f32`.
pub fn add_kernel() -> KernelManifest {
    kernel(
        "add",
        vec![spec("A", "f32", &["N"]), spec("B", "f32", &["N"])],
        vec![spec("O", "f32", &["N"])],
        &["N"],
        vec![param("fail", "bool", ParamValue::Bool(false)), param("scale", "f32", ParamValue::Float(1.0))],
        &["site zero", "A[i] + B[i] at add.tfm:2:9"],
    )
}

/// `count(X i32[N]) -> C i32[N]`, param `nested: bool`: counts visits through the C pool.
pub fn count_kernel() -> KernelManifest {
    kernel(
        "count",
        vec![spec("X", "i32", &["N"])],
        vec![spec("C", "i32", &["N"])],
        &["N"],
        vec![param("nested", "bool", ParamValue::Bool(false))],
        &[],
    )
}

/// A manifest for this host with these kernels.
pub fn manifest(kernels: Vec<KernelManifest>) -> Manifest {
    Manifest {
        format: FORMAT_NAME.into(),
        version: FORMAT_VERSION,
        compiler_version: "test".into(),
        target: Target {
            kind: "cpu".into(),
            triple: format!("{}-unknown-linux-gnu", std::env::consts::ARCH),
            cpu: "generic".into(),
            features: vec![],
        },
        kernels,
    }
}

/// The kernels' C code (`tfmc_add_packed`, `tfmc_count_packed`).
pub const KERNELS_C: &str = r#"
#include <stdint.h>
#include <string.h>

void tfmc_parallel_for(void (*body)(void *ctx, int64_t lo, int64_t hi), void *ctx, int64_t n);

int32_t tfmc_add_packed(void *const *bufs, const int64_t *dims, const uint64_t *params) {
    const float *a = bufs[0], *b = bufs[1];
    float *o = bufs[2];
    int64_t fail;
    double scale;
    memcpy(&fail, &params[0], 8);
    memcpy(&scale, &params[1], 8);
    if (fail) {
        return 3 | 1 << 8;
    }
    for (int64_t i = 0; i < dims[0]; i++) {
        o[i] = (a[i] + b[i]) * (float)scale;
    }
    return 0;
}

struct count_ctx { int32_t *c; int64_t n; };

static void count_body(void *ctx, int64_t lo, int64_t hi) {
    struct count_ctx *k = ctx;
    for (int64_t i = lo; i < hi; i++) {
        __atomic_fetch_add(&k->c[i], 1, __ATOMIC_RELAXED);
    }
}

static void nested_body(void *ctx, int64_t lo, int64_t hi) {
    struct count_ctx *k = ctx;
    for (int64_t i = lo; i < hi; i++) {
        tfmc_parallel_for(count_body, ctx, k->n);
    }
}

int32_t tfmc_count_packed(void *const *bufs, const int64_t *dims, const uint64_t *params) {
    struct count_ctx k = { bufs[1], dims[0] };
    if (params[0]) {
        tfmc_parallel_for(nested_body, &k, dims[0]);
    } else {
        tfmc_parallel_for(count_body, &k, dims[0]);
    }
    return 0;
}
"#;

/// `s` as a C string literal.
pub fn c_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
            c => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:03o}"));
                }
            }
        }
    }
    out.push('"');
    out
}

/// The C definition of the manifest section holding `json`.
pub fn manifest_c(json: &str) -> String {
    format!(
        "__attribute__((section(\".tfmc_manifest\"), used))\n\
         static const char tfmc_manifest[] = {};\n",
        c_string(json)
    )
}

/// A directory kept for the whole test run.
pub fn dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path()
}

/// Runs `cc` on `args`, with a clear message if there is no C compiler.
pub fn cc(args: &[&str]) {
    let out = Command::new("cc")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("these tests need a C compiler: cannot run `cc` ({e}); install gcc or clang"));
    assert!(out.status.success(), "cc {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// Builds `name.so` from the kernels, the C runtime and (if given) a manifest section with
/// `json`, and seals it. `extra_c` is appended to the kernels' source.
pub fn build_lib(name: &str, json: Option<&str>, extra_c: &str) -> PathBuf {
    let d = dir();
    let rt = d.join("tfmc_rt.c");
    if !rt.exists() {
        std::fs::write(&rt, aot::C_RUNTIME_SOURCE).expect("write runtime");
    }
    let src = d.join(format!("{name}.c"));
    let mut code = String::from(KERNELS_C);
    code.push_str(extra_c);
    if let Some(json) = json {
        code.push_str(&manifest_c(json));
    }
    std::fs::write(&src, code).expect("write source");
    let lib = d.join(format!("{name}.so"));
    cc(&[
        "-std=c11",
        "-O2",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-shared",
        "-fPIC",
        "-pthread",
        "-o",
        lib.to_str().expect("utf-8 temp path"),
        src.to_str().expect("utf-8 temp path"),
        rt.to_str().expect("utf-8 temp path"),
        "-ldl",
    ]);
    aot::seal(&lib).expect("seal");
    lib
}

/// The standard test artifact (kernels `add` and `count`), built once.
pub fn good_lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let m = manifest(vec![add_kernel(), count_kernel()]);
        build_lib("good", Some(&m.to_json()), "")
    })
}

/// Writes `bytes` to a fresh file called `name` and returns its path.
pub fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir().join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}
