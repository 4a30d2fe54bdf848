//! tfmc-build: compile `.tfm` files into tfmc CPU artifacts from a Cargo build script.
//!
//! A crate that ships attention kernels written in `.tfm` compiles them at build time with
//! this crate (a build-dependency) and loads them at run time with `tfmc-runtime` alone:
//!
//! ```text
//! # Cargo.toml
//! [dependencies]
//! tfmc-runtime = "0.1"
//!
//! [build-dependencies]
//! tfmc-build = "0.1"
//!
//! // build.rs
//! fn main() {
//!     // Paths are relative to the crate root (a build script's working directory).
//!     if let Err(e) = tfmc_build::compile("lib/sdpa.tfm") {
//!         panic!("{e}"); // shows tfmc's rendered diagnostics
//!     }
//!     // or, with options:
//!     tfmc_build::Build::new("lib/window.tfm")
//!         .param("W", 128)             // a `param` fixed at build time (the manifest default)
//!         .target_cpu("x86-64-v3")     // portable code instead of the build host's CPU
//!         .compile()
//!         .unwrap_or_else(|e| panic!("{e}"));
//! }
//!
//! // src/main.rs
//! use tfmc_runtime::Artifact;
//! let artifact = Artifact::open(env!("TFMC_ARTIFACT_SDPA"))?;
//! let sdpa = artifact.kernel("sdpa")?;
//! let mut outs = sdpa.alloc_outputs(&[&q, &k, &v])?;
//! sdpa.run_native(&[&q, &k, &v], &mut outs, &Default::default())?;
//! ```
//!
//! [`Build::compile`] (and [`compile`]):
//! 1. loads and checks the file and everything it `use`s (`tfmc::load_with_warnings`),
//!    printing `cargo::rerun-if-changed=` for each of those files (so editing any of them
//!    rebuilds the artifact, and nothing else does) and each warning as `cargo::warning=`;
//! 2. compiles every kernel of the program into `$OUT_DIR/lib<name>.so` plus the C header
//!    `$OUT_DIR/lib<name>.h` (`tfmc::driver::build` for an LLVM target, both written atomically; `<name>` is
//!    the file stem unless [`Build::name`] says otherwise);
//! 3. prints `cargo::rustc-env=TFMC_ARTIFACT_<NAME>=<path>` (`<NAME>` upper-cased, characters
//!    other than ASCII letters and digits as `_`), so the crate finds the artifact with
//!    `env!("TFMC_ARTIFACT_<NAME>")`, and returns the path.
//!
//! The artifact is a shared library for the build host (tfmc compiles for the host triple);
//! cross-compiling (`TARGET` ≠ `HOST`) is an error. By default the code uses the host CPU's
//! features, so an artifact built on one machine may be refused by `Artifact::open` on an
//! older one: name a baseline with [`Build::target_cpu`] for binaries that travel. The
//! artifact stays in `OUT_DIR` and `env!` bakes that absolute path into the binary: to ship
//! the binary elsewhere, ship the library too and open it by a run-time path.
//!
//! Errors are [`Error`]s whose `Display` is the text to show (for a program that does not
//! check, tfmc's rendered diagnostics): a build script should `panic!("{e}")`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tfmc::backend::llvm::TargetOptions;
use tfmc::driver::{CompileError, CompileOptions, Target};
pub use tfmc_runtime::Scalar;

/// Compiles `file` with default options: `Build::new(file).compile()` (see [`Build::compile`]).
pub fn compile(file: impl AsRef<Path>) -> Result<PathBuf, Error> {
    Build::new(file).compile()
}

/// A `.tfm` file to compile, with options (a builder).
#[derive(Clone, Debug)]
pub struct Build {
    file: PathBuf,
    name: Option<String>,
    out_dir: Option<PathBuf>,
    params: BTreeMap<String, Scalar>,
    target: TargetOptions,
    cargo_metadata: bool,
}

/// A value for a `param` ([`Build::param`]): Rust numbers and `bool`s, or a [`Scalar`].
pub trait ParamValue {
    /// The value as a [`Scalar`].
    fn into_scalar(self) -> Scalar;
}

impl ParamValue for Scalar {
    fn into_scalar(self) -> Scalar {
        self
    }
}
impl ParamValue for f64 {
    fn into_scalar(self) -> Scalar {
        Scalar::F(self)
    }
}
impl ParamValue for f32 {
    fn into_scalar(self) -> Scalar {
        Scalar::F(f64::from(self))
    }
}
impl ParamValue for i64 {
    fn into_scalar(self) -> Scalar {
        Scalar::I(self)
    }
}
impl ParamValue for i32 {
    fn into_scalar(self) -> Scalar {
        Scalar::I(i64::from(self))
    }
}
impl ParamValue for bool {
    fn into_scalar(self) -> Scalar {
        Scalar::B(self)
    }
}

/// Why a `.tfm` file could not be compiled. `Display` gives the full text to show.
#[derive(Debug)]
pub enum Error {
    /// The program (or a file it uses) does not load or check: tfmc's diagnostics.
    Check {
        /// The entry file, as given.
        file: PathBuf,
        /// The diagnostics, with their sources.
        diagnostics: tfmc::Diagnostics,
    },
    /// Compiling a checked program failed (e.g. an unknown or ill-typed param, an unknown CPU).
    Compile {
        /// The entry file, as given.
        file: PathBuf,
        /// What went wrong (boxed: it is large).
        error: Box<CompileError>,
    },
    /// The build environment or the options do not fit (no `OUT_DIR`, cross-compiling, a
    /// bad or duplicate artifact name).
    Config(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Check { file, diagnostics } => {
                write!(f, "tfmc-build: '{}' does not check:\n\n{}", file.display(), diagnostics.render().trim_end())
            }
            Error::Compile { file, error } => write!(f, "tfmc-build: cannot compile '{}': {error}", file.display()),
            Error::Config(m) => write!(f, "tfmc-build: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Check { diagnostics, .. } => Some(diagnostics),
            Error::Compile { error, .. } => Some(&**error),
            Error::Config(_) => None,
        }
    }
}

/// Environment-variable names already given out in this process (one build script), so two
/// artifacts cannot silently share `TFMC_ARTIFACT_<NAME>`.
static USED_NAMES: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

impl Build {
    /// Compiles `file` (relative paths resolve against the working directory, which in a build
    /// script is the crate root).
    pub fn new(file: impl AsRef<Path>) -> Build {
        Build {
            file: file.as_ref().to_path_buf(),
            name: None,
            out_dir: None,
            params: BTreeMap::new(),
            target: TargetOptions::default(),
            cargo_metadata: true,
        }
    }

    /// Fixes `param name` to `value` at build time: it becomes the manifest's default (callers
    /// may still pass another value at run time). An unknown name is an error at
    /// [`compile`](Build::compile).
    pub fn param(mut self, name: impl Into<String>, value: impl ParamValue) -> Build {
        self.params.insert(name.into(), value.into_scalar());
        self
    }

    /// The LLVM CPU to compile for (`x86-64-v3`, `znver4`, ...); default: the build host's CPU
    /// and features.
    pub fn target_cpu(mut self, cpu: impl Into<String>) -> Build {
        self.target.cpu = Some(cpu.into());
        self
    }

    /// LLVM target features (`+avx2,-avx512f`); default: the host's features when no CPU is
    /// named, else what the CPU implies.
    pub fn target_features(mut self, features: impl Into<String>) -> Build {
        self.target.features = Some(features.into());
        self
    }

    /// LLVM optimization level, 0..=3 (default 3).
    pub fn opt_level(mut self, level: u8) -> Build {
        self.target.opt_level = level;
        self
    }

    /// The artifact's name: the library is `lib<name>.so` and the environment variable
    /// `TFMC_ARTIFACT_<NAME>`. Default: the file stem. ASCII letters, digits, `_` and `-` only.
    pub fn name(mut self, name: impl Into<String>) -> Build {
        self.name = Some(name.into());
        self
    }

    /// Where to write the library and header; default: `$OUT_DIR`.
    pub fn out_dir(mut self, dir: impl AsRef<Path>) -> Build {
        self.out_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Whether to print `cargo::` directives (rerun-if-changed, warnings, rustc-env) and check
    /// `TARGET` = `HOST`; default `true`. Turn off when calling from outside a build script.
    pub fn cargo_metadata(mut self, on: bool) -> Build {
        self.cargo_metadata = on;
        self
    }

    /// The artifact's name ([`Build::name`] or the file stem), checked.
    fn artifact_name(&self) -> Result<String, Error> {
        let name = match &self.name {
            Some(n) => n.clone(),
            None => self.file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(Error::Config(format!(
                "artifact name '{name}' (from '{}') must be non-empty ASCII letters, digits, '_' or '-'; set one with .name(..)",
                self.file.display()
            )));
        }
        Ok(name)
    }

    /// Loads, checks and compiles the file; returns the path of the shared library (its C
    /// header is beside it, with extension `.h`). See the crate docs for the directives
    /// printed.
    pub fn compile(&self) -> Result<PathBuf, Error> {
        let mut directives = Vec::new();
        let r = self.compile_to(&mut directives);
        if self.cargo_metadata {
            let mut out = std::io::stdout().lock();
            for d in &directives {
                let _ = writeln!(out, "cargo::{d}");
            }
        }
        r
    }

    /// [`Build::compile`], collecting the `cargo::` directives (without the prefix) in
    /// `directives` instead of printing them.
    fn compile_to(&self, directives: &mut Vec<String>) -> Result<PathBuf, Error> {
        if self.cargo_metadata
            && let (Ok(target), Ok(host)) = (std::env::var("TARGET"), std::env::var("HOST"))
            && target != host
        {
            return Err(Error::Config(format!(
                "cannot compile '{}' for target '{target}': tfmc builds artifacts for the build host ('{host}') only",
                self.file.display()
            )));
        }
        let name = self.artifact_name()?;
        let var = env_var_name(&name);
        if self.cargo_metadata && used_names().contains(&var) {
            return Err(Error::Config(format!(
                "two artifacts named '{name}' ({var}) in one build script; give one another name with .name(..)"
            )));
        }
        let out_dir = match &self.out_dir {
            Some(d) => d.clone(),
            None => match std::env::var_os("OUT_DIR") {
                Some(d) => PathBuf::from(d),
                None => {
                    return Err(Error::Config("OUT_DIR is not set: call tfmc-build from a build script, or set .out_dir(..)".to_string()));
                }
            },
        };

        // Every file of the program, for rerun-if-changed (also when it does not check, so
        // the failing build reruns once any of them is fixed).
        let loaded = tfmc::load::load_files(&self.file);
        let sources = match &loaded {
            Ok(l) => &l.sources,
            Err(d) => &d.sources,
        };
        let before = directives.len();
        for (_, f) in sources.files() {
            if let Some(p) = &f.path {
                directives.push(format!("rerun-if-changed={}", p.display()));
            }
        }
        if directives.len() == before {
            // It could not even be read: rerun once it exists.
            directives.push(format!("rerun-if-changed={}", self.file.display()));
        }
        let loaded = loaded.map_err(|diagnostics| Error::Check { file: self.file.clone(), diagnostics })?;

        let (program, warnings) =
            tfmc::load_with_warnings(&self.file).map_err(|diagnostics| Error::Check { file: self.file.clone(), diagnostics })?;
        if !warnings.is_empty() {
            // Rendered against the sources read above: the same files, loaded the same way
            // (a span that no longer fits falls back to the bare message).
            let text = tfmc::Diagnostics { items: warnings, sources: loaded.sources }.render();
            directives.extend(text.lines().map(|l| format!("warning={l}")));
        }

        if let Err(error) = std::fs::create_dir_all(&out_dir) {
            return Err(Error::Config(format!("cannot create '{}': {error}", out_dir.display())));
        }
        let out = out_dir.join(format!("lib{name}.so"));
        let opts = CompileOptions { params: self.params.clone(), ..CompileOptions::default() };
        tfmc::driver::build(&program, &out, &opts, &Target::Llvm(self.target.clone()))
            .map_err(|error| Error::Compile { file: self.file.clone(), error: Box::new(error) })?;
        if self.cargo_metadata {
            used_names().insert(var.clone());
        }
        directives.push(format!("rustc-env={var}={}", out.display()));
        Ok(out)
    }
}

/// The environment-variable names given out so far in this process (one build script).
fn used_names() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    USED_NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `TFMC_ARTIFACT_` + `name` upper-cased, characters other than ASCII letters and digits as `_`.
pub fn env_var_name(name: &str) -> String {
    let upper: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("TFMC_ARTIFACT_{upper}")
}

#[cfg(test)]
mod tests;
