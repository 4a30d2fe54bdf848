//! Loading a compiled CPU artifact (a sealed ELF shared library) and running its kernels.
//!
//! [`Artifact::open`] checks, in this order, before any of the library's code runs: the
//! checksum trailer ([`crate::aot::unseal`]); that the payload is an ELF shared object for this
//! machine's architecture; the manifest section ([`SECTION`]): its `format` and `version`
//! (read before the rest of the JSON, so a future format is reported as a version mismatch,
//! not a parse error), its consistency ([`Manifest::validate`]), `target.kind == "cpu"`, the
//! triple's architecture, the CPU features ([`crate::features`]); that every kernel's
//! `{symbol}_packed` is a defined dynamic symbol. Only then is the library loaded
//! (`RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE`: a library whose thread pool has started can never
//! be unmapped) and the entries resolved.
//!
//! Trust: the checksum detects corruption, not tampering; loading a library runs its code, so
//! open only artifacts you trust (ones tfmc built). Given that, [`Kernel::run`] is safe: every
//! call is checked against the manifest ([`crate::call`]). The file must not be replaced while
//! it is being opened (it is read once, then loaded by path), and a library that stays loaded
//! under the same path is not reloaded by the dynamic loader: write new artifacts to new paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSymbol};

use crate::aot;
use crate::call::{self, PackedFn};
use crate::error::{ArtifactError, RuntimeError};
use crate::features;
use crate::manifest::{KernelManifest, Manifest, SECTION};
use crate::native::NativeTensor;
use crate::tensor::{Scalar, Tensor};

/// `tfmc_set_num_threads` of an artifact's C runtime.
type SetThreadsFn = unsafe extern "C" fn(i32);
/// `tfmc_get_num_threads` of an artifact's C runtime.
type GetThreadsFn = unsafe extern "C" fn() -> i32;

/// A loaded, validated CPU artifact.
pub struct Artifact {
    path: PathBuf,
    manifest: Manifest,
    /// `{symbol}_packed` of each kernel, in manifest order.
    entries: Vec<PackedFn>,
    set_threads: Option<SetThreadsFn>,
    get_threads: Option<GetThreadsFn>,
    /// Keeps the code above mapped; declared last so it is dropped last.
    _library: libloading::Library,
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact").field("path", &self.path).field("kernels", &self.kernel_names()).finish_non_exhaustive()
    }
}

/// One kernel of an [`Artifact`].
#[derive(Clone, Copy)]
pub struct Kernel<'a> {
    manifest: &'a KernelManifest,
    entry: PackedFn,
}

impl std::fmt::Debug for Kernel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").field("name", &self.manifest.name).finish_non_exhaustive()
    }
}

/// Reads and checks the manifest of a sealed artifact's bytes (trailer, ELF, section, format,
/// version, consistency) without checking the host or loading anything.
pub fn read_manifest(bytes: &[u8]) -> Result<Manifest, ArtifactError> {
    let payload = aot::unseal(bytes)?;
    let file = object::File::parse(payload).map_err(|e| ArtifactError::Elf(e.to_string()))?;
    manifest_of(&file)
}

/// The checked manifest in the ELF `file`.
fn manifest_of(file: &object::File<'_>) -> Result<Manifest, ArtifactError> {
    if file.format() != object::BinaryFormat::Elf {
        return Err(ArtifactError::Elf(format!("{:?} file, not ELF", file.format())));
    }
    let section = file.section_by_name(SECTION).ok_or(ArtifactError::NoManifest { section: SECTION })?;
    let data = section.data().map_err(|e| ArtifactError::Elf(format!("section '{SECTION}': {e}")))?;
    // A C string literal carries its NUL; padding may add more.
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let json = std::str::from_utf8(&data[..end]).map_err(|e| ArtifactError::InvalidManifest(format!("not utf-8: {e}")))?;
    // Format and version first: a later format may not fit this runtime's schema.
    Manifest::from_json_checked(json)
}

/// The `std::env::consts::ARCH` name of an ELF machine, if it is one of those.
fn elf_arch(a: object::Architecture) -> Option<&'static str> {
    use object::Architecture as A;
    Some(match a {
        A::X86_64 => "x86_64",
        A::I386 => "x86",
        A::Aarch64 => "aarch64",
        A::Arm => "arm",
        A::Riscv64 => "riscv64",
        A::PowerPc64 => "powerpc64",
        A::S390x => "s390x",
        A::LoongArch64 => "loongarch64",
        _ => return None,
    })
}

/// Checks everything about the ELF and manifest that concerns this machine and the exports.
fn check_host(file: &object::File<'_>, m: &Manifest) -> Result<(), ArtifactError> {
    if file.kind() != object::ObjectKind::Dynamic {
        return Err(ArtifactError::Elf(format!("a {:?} object, not a shared library", file.kind())));
    }
    let host = std::env::consts::ARCH;
    if elf_arch(file.architecture()) != Some(host) {
        return Err(ArtifactError::Arch { target: format!("{:?} (ELF machine)", file.architecture()), host });
    }
    if m.target.kind != "cpu" {
        return Err(ArtifactError::TargetKind { found: m.target.kind.clone() });
    }
    features::check_arch(&m.target.triple)?;
    features::check_features(&m.target.features)?;
    let exported: std::collections::BTreeSet<&str> =
        file.dynamic_symbols().filter(|s| !s.is_undefined()).filter_map(|s| s.name().ok()).collect();
    for k in &m.kernels {
        let symbol = format!("{}_packed", k.symbol);
        if !exported.contains(symbol.as_str()) {
            return Err(ArtifactError::MissingSymbol { kernel: k.name.clone(), symbol });
        }
    }
    Ok(())
}

/// The largest artifact file read (a shared library or a PTX artifact), in bytes. Larger
/// files, and files that are not regular (`/dev/zero`, a FIFO), are refused before they are
/// read whole.
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// Reads the artifact file at `path`: a regular file of at most [`MAX_ARTIFACT_BYTES`]
/// (checked while reading too, for a file that grows).
pub(crate) fn read_artifact(path: &Path) -> Result<Vec<u8>, ArtifactError> {
    use std::io::Read;
    let refuse = |why: String| ArtifactError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(refuse("not a regular file".to_string()));
    }
    let too_large = || refuse(format!("larger than {MAX_ARTIFACT_BYTES} bytes, the limit for an artifact"));
    if meta.len() > MAX_ARTIFACT_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(MAX_ARTIFACT_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_ARTIFACT_BYTES {
        return Err(too_large());
    }
    Ok(bytes)
}

impl Artifact {
    /// Opens, validates and loads the artifact at `path` (see the module docs for the checks).
    /// Every error is an [`ArtifactError::File`] naming `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Artifact, ArtifactError> {
        let path = path.as_ref();
        Artifact::open_inner(path).map_err(|e| e.in_file(path))
    }

    fn open_inner(path: &Path) -> Result<Artifact, ArtifactError> {
        let bytes = read_artifact(path)?;
        let payload = aot::unseal(&bytes)?;
        let file = object::File::parse(payload).map_err(|e| ArtifactError::Elf(e.to_string()))?;
        let manifest = manifest_of(&file)?;
        check_host(&file, &manifest)?;
        // dlopen searches the library path for names without a slash: pass an absolute one.
        let abs = std::path::absolute(path)?;
        let library = load(&abs)?;
        let mut entries = Vec::with_capacity(manifest.kernels.len());
        for k in &manifest.kernels {
            let symbol = format!("{}_packed", k.symbol);
            // SAFETY: the manifest declares `{symbol}_packed` a packed entry, whose C type is
            // `PackedFn` (the ABI in `manifest`); the pointer is used only while `library`
            // lives (it is stored next to it, and `Kernel` borrows the `Artifact`).
            let entry = unsafe { library.get::<PackedFn>(symbol.as_bytes()) }
                .map(|s| *s)
                .map_err(|_| ArtifactError::MissingSymbol { kernel: k.name.clone(), symbol: symbol.clone() })?;
            entries.push(entry);
        }
        // SAFETY: tfmc's C runtime defines these with exactly these C types; same lifetime
        // argument as above.
        let set_threads = unsafe { library.get::<SetThreadsFn>(b"tfmc_set_num_threads") }.ok().map(|s| *s);
        // SAFETY: as above.
        let get_threads = unsafe { library.get::<GetThreadsFn>(b"tfmc_get_num_threads") }.ok().map(|s| *s);
        Ok(Artifact { path: path.to_path_buf(), manifest, entries, set_threads, get_threads, _library: library })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The names of its kernels, in manifest order.
    pub fn kernel_names(&self) -> Vec<&str> {
        self.manifest.kernels.iter().map(|k| k.name.as_str()).collect()
    }

    /// The kernel called `name` (an error lists the kernels there are).
    pub fn kernel(&self, name: &str) -> Result<Kernel<'_>, ArtifactError> {
        self.manifest
            .kernels
            .iter()
            .zip(&self.entries)
            .find(|(k, _)| k.name == name)
            .map(|(manifest, &entry)| Kernel { manifest, entry })
            .ok_or_else(|| ArtifactError::UnknownKernel {
                kernel: name.to_string(),
                available: self.kernel_names().into_iter().map(String::from).collect(),
            })
    }

    /// Sets the size of the artifact's thread pool, caller included (`n <= 0`: the default,
    /// `TFMC_NUM_THREADS` or one per CPU). Returns false if the library has no C runtime
    /// exporting `tfmc_set_num_threads`. The pool belongs to the loaded library: every
    /// `Artifact` of the same file shares it.
    pub fn set_num_threads(&self, n: i32) -> bool {
        let Some(f) = self.set_threads else {
            return false;
        };
        // SAFETY: the C runtime's `tfmc_set_num_threads` accepts any value and is thread-safe.
        unsafe { f(n) };
        true
    }

    /// The size of the artifact's thread pool, if its library exports `tfmc_get_num_threads`.
    pub fn num_threads(&self) -> Option<i32> {
        // SAFETY: the C runtime's `tfmc_get_num_threads` takes nothing and is thread-safe.
        self.get_threads.map(|f| unsafe { f() })
    }
}

/// `RTLD_NODELETE` (libloading does not export it): glibc/musl/BSD value, Apple's value.
#[cfg(all(unix, not(target_vendor = "apple")))]
const RTLD_NODELETE: std::ffi::c_int = 0x1000;
#[cfg(target_vendor = "apple")]
const RTLD_NODELETE: std::ffi::c_int = 0x80;

/// `dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE)`: unresolved symbols fail here, not
/// mid-kernel; the library is never unmapped, because its thread pool's workers keep running
/// its code after the last `Artifact` is dropped (the C runtime also pins itself).
#[cfg(unix)]
fn load(path: &Path) -> Result<libloading::Library, ArtifactError> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: loading runs the library's initialisers; the artifact passed every check above
    // and is trusted (see the module docs).
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) }
        .map(Into::into)
        .map_err(|e| ArtifactError::Load(e.to_string()))
}

/// Loads the library at `path`.
#[cfg(not(unix))]
fn load(path: &Path) -> Result<libloading::Library, ArtifactError> {
    // SAFETY: as in the unix version.
    unsafe { libloading::Library::new(path) }.map_err(|e| ArtifactError::Load(e.to_string()))
}

impl<'a> Kernel<'a> {
    /// Its manifest entry.
    pub fn manifest(&self) -> &'a KernelManifest {
        self.manifest
    }

    /// Its name.
    pub fn name(&self) -> &'a str {
        &self.manifest.name
    }

    /// Runs it with inputs and outputs by name ([`call::call`]): every input exactly once,
    /// with its exact dtype; params not given take their defaults.
    pub fn run(
        &self,
        inputs: &BTreeMap<String, Tensor>,
        params: &BTreeMap<String, Scalar>,
    ) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
        // SAFETY: `entry` is this kernel's packed entry, resolved from the validated artifact
        // that `self` borrows (so it is still loaded); see the module docs on trust.
        unsafe { call::call(self.entry, self.manifest, inputs, params) }
    }

    /// Runs it on ABI-format buffers ([`call::call_native`]); `outputs` must have the dtypes
    /// and shapes the inputs' dims give ([`Kernel::alloc_outputs`] makes them).
    pub fn run_native(
        &self,
        inputs: &[&NativeTensor],
        outputs: &mut [NativeTensor],
        params: &BTreeMap<String, Scalar>,
    ) -> Result<(), RuntimeError> {
        // SAFETY: as in `run`.
        unsafe { call::call_native(self.entry, self.manifest, inputs, outputs, params) }
    }

    /// Runs it on caller-owned buffers without copying them ([`call::call_raw`]'s checks).
    ///
    /// # Safety
    /// As [`call::call_raw`] for the buffers (the entry is this kernel's).
    pub unsafe fn run_raw(
        &self,
        inputs: &[call::RawTensor],
        outputs: &[call::RawTensor],
        params: &BTreeMap<String, Scalar>,
    ) -> Result<(), RuntimeError> {
        // SAFETY: the entry as in `run`; the buffers are forwarded from the caller.
        unsafe { call::call_raw(self.entry, self.manifest, inputs, outputs, params) }
    }

    /// Zero-filled output buffers for these inputs (checked as a call would check them).
    pub fn alloc_outputs(&self, inputs: &[&NativeTensor]) -> Result<Vec<NativeTensor>, RuntimeError> {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        let dims = call::bind_dims(self.manifest, &shapes)?;
        call::alloc_outputs(self.manifest, &dims)
    }
}
