//! Reading and writing tensors as numpy `.npz` archives and `.npy` files.
//!
//! Owns [`read_npz`], [`write_npz`], [`read_npy`], [`write_npy`], [`as_declared_bf16`] and
//! [`IoError`].
//!
//! - Readers accept numpy `float16`, `float32`, `float64`, `int32`, `int64` and `bool` arrays in
//!   C order (either byte order, stored or deflated archive members); any other dtype, Fortran
//!   order, a corrupt or truncated file is an [`IoError`] naming the file (and the array), never
//!   a panic. `.npz` keys are the member names without their `.npy` suffix, as in `np.load`.
//! - Writers write each tensor in its own dtype, except `bf16`: numpy has no bfloat16, so a
//!   `bf16` tensor is written as `float32` (losslessly) and reads back as an `f32` tensor;
//!   [`as_declared_bf16`] turns such tensors back into `bf16` for a kernel that declares them
//!   so (every caller that feeds `.npz` inputs to a kernel applies it).
//!   Archives are uncompressed (like `np.savez`) with fixed member timestamps, so the same
//!   tensors always give the same bytes.
//! - Readers check each array's size against the memory available before reading or decoding
//!   it, and allocate fallibly ([`IoError::TooLarge`]).
//! - Writes are atomic: the data goes to a temporary file in the same directory that is renamed
//!   over the target only when complete; on error nothing is left behind and an existing target
//!   is untouched. Symlinks are written through, permissions kept, FIFOs and character devices
//!   written to directly (see `crate::atomic`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use npyz::zip::{self, ZipArchive, ZipWriter};

use crate::atomic::{AtomicError, write_atomically};
use crate::npy::{self, NpyError};
use crate::tensor::{Tensor, TensorError};

/// Errors from reading or writing `.npz`/`.npy` files. Every message names the file, and the
/// array where one is concerned.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file (or one array in it) could not be written or moved into place.
    #[error("cannot write {}: {source}", location(.path, .array.as_deref()))]
    Write {
        /// The file.
        path: PathBuf,
        /// The array being written, if the failure was inside one.
        array: Option<String>,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not a zip archive, or the archive is corrupt.
    #[error("{} is not a valid .npz archive: {reason}", .path.display())]
    NotNpz {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An archive member is not named `*.npy`.
    #[error("{}: member '{member}' is not a .npy array", .path.display())]
    NotAnArray {
        /// The archive.
        path: PathBuf,
        /// The member's name in the archive.
        member: String,
    },
    /// Two archive members give the same array name.
    #[error("{}: array '{name}' appears more than once", .path.display())]
    DuplicateArray {
        /// The archive.
        path: PathBuf,
        /// The repeated array name.
        name: String,
    },
    /// An array is corrupt or truncated.
    #[error("{}: {reason}", location(.path, .array.as_deref()))]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The array, inside an `.npz` archive.
        array: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// An array has a dtype tfmc does not handle.
    #[error(
        "{}: unsupported numpy dtype {numpy} (descr {descr}); supported: float16, float32, float64, int32, int64, bool",
        location(.path, .array.as_deref())
    )]
    UnsupportedDType {
        /// The file.
        path: PathBuf,
        /// The array, inside an `.npz` archive.
        array: Option<String>,
        /// numpy's name for the dtype (`uint8`, `complex128`, ...).
        numpy: String,
        /// The `descr` from the array header.
        descr: String,
    },
    /// An array is stored in Fortran order.
    #[error(
        "{}: fortran-order arrays are not supported; save a C-order copy (np.ascontiguousarray)",
        location(.path, .array.as_deref())
    )]
    FortranOrder {
        /// The file.
        path: PathBuf,
        /// The array, inside an `.npz` archive.
        array: Option<String>,
    },
    /// An array needs more memory than is available (checked before it is read or decoded).
    #[error("{}: {reason}", location(.path, .array.as_deref()))]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The array, inside an `.npz` archive.
        array: Option<String>,
        /// How much it needs and how much there is.
        reason: String,
    },
    /// A tensor to be written breaks the [`Tensor`] invariants (see [`Tensor::check`]).
    #[error("cannot write {}: {source}", location(.path, .array.as_deref()))]
    InvalidTensor {
        /// The file.
        path: PathBuf,
        /// The array, inside an `.npz` archive.
        array: Option<String>,
        /// What is wrong with it.
        source: TensorError,
    },
}

/// `array 'x' in PATH`, or just `PATH`.
fn location(path: &Path, array: Option<&str>) -> String {
    match array {
        Some(a) => format!("array '{a}' in {}", path.display()),
        None => path.display().to_string(),
    }
}

/// Attaches the file and array names to a decoding error.
fn npy_error(path: &Path, array: Option<&str>, e: NpyError) -> IoError {
    let (path, array) = (path.to_path_buf(), array.map(str::to_string));
    match e {
        NpyError::Malformed(reason) => IoError::Malformed { path, array, reason },
        NpyError::Unsupported { numpy, descr } => IoError::UnsupportedDType { path, array, numpy, descr },
        NpyError::FortranOrder => IoError::FortranOrder { path, array },
        NpyError::TooLarge(reason) => IoError::TooLarge { path, array, reason },
    }
}

/// Reads every array of an `.npz` archive, keyed by name (the member name without `.npy`).
/// Each array's stored and decoded sizes are checked against the memory available
/// ([`crate::memory::available`]) before it is read: a small deflated file holding a huge array
/// is [`IoError::TooLarge`], not an abort.
pub fn read_npz(path: &Path) -> Result<BTreeMap<String, Tensor>, IoError> {
    read_npz_within(path, crate::memory::available())
}

/// [`read_npz`] with the memory limit given (`None`: unchecked, still allocated fallibly).
pub(crate) fn read_npz_within(path: &Path, limit: Option<u64>) -> Result<BTreeMap<String, Tensor>, IoError> {
    let file = File::open(path).map_err(|source| IoError::Read { path: path.into(), source })?;
    let not_npz = |e: zip::result::ZipError| IoError::NotNpz { path: path.into(), reason: e.to_string() };
    let mut archive = ZipArchive::new(BufReader::new(file)).map_err(not_npz)?;
    let mut out = BTreeMap::new();
    // Bytes the arrays decoded so far hold.
    let mut held = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(not_npz)?;
        if entry.is_dir() {
            continue;
        }
        let member = entry.name().to_string();
        let Some(name) = npyz::npz::array_name_from_file_name(&member).map(str::to_string) else {
            return Err(IoError::NotAnArray { path: path.into(), member });
        };
        let malformed = |reason: String| IoError::Malformed { path: path.into(), array: Some(name.clone()), reason };
        let too_large = |reason: String| IoError::TooLarge { path: path.into(), array: Some(name.clone()), reason };
        // Read at most one byte past the declared size, so a lying header cannot make us
        // allocate (or inflate) without bound.
        let declared = entry.size();
        let left = limit.map(|l| l.saturating_sub(held));
        crate::memory::check("reading the array", declared, left).map_err(too_large)?;
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(usize::try_from(declared).unwrap_or(usize::MAX))
            .map_err(|e| too_large(format!("cannot allocate {}: {e}", crate::memory::size(declared))))?;
        (&mut entry)
            .take(declared.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| malformed(format!("cannot unpack the archive member: {e}")))?;
        if bytes.len() as u64 != declared {
            return Err(malformed(format!("archive member holds {} bytes but its header declares {declared}", bytes.len())));
        }
        let tensor = npy::decode(&bytes, left.map(|l| l.saturating_sub(declared))).map_err(|e| npy_error(path, Some(&name), e))?;
        held = held.saturating_add((tensor.len() as u64).saturating_mul(if tensor.dtype() == crate::DType::Bool { 1 } else { 8 }));
        if out.insert(name.clone(), tensor).is_some() {
            return Err(IoError::DuplicateArray { path: path.into(), name });
        }
    }
    Ok(out)
}

/// Writes `tensors` as an uncompressed `.npz` archive (member `NAME.npy` per entry), atomically.
/// `bf16` tensors are written as `float32`.
pub fn write_npz(path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<(), IoError> {
    let write_err = |array: Option<&str>, source: io::Error| IoError::Write { path: path.into(), array: array.map(str::to_string), source };
    for (name, t) in tensors {
        t.check().map_err(|source| IoError::InvalidTensor { path: path.into(), array: Some(name.clone()), source })?;
    }
    let result = write_atomically(path, |w| {
        let mut zip = ZipWriter::new(Latch::new(w));
        for (name, t) in tensors {
            let bytes = (t.len() as u64).saturating_mul(t.dtype().size_bytes() as u64);
            let options = zip::write::FileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .last_modified_time(zip::DateTime::default())
                .large_file(bytes >= u64::from(u32::MAX) - (1 << 20));
            let member = npyz::npz::file_name_from_array_name(name);
            zip.start_file(member, options).map_err(|e| write_err(Some(name), io::Error::other(e)))?;
            npy::encode(&mut zip, t).map_err(|e| write_err(Some(name), e))?;
        }
        zip.finish().map_err(|e| write_err(None, io::Error::other(e)))?;
        Ok(())
    });
    result.map_err(|e| match e {
        AtomicError::Io(source) => write_err(None, source),
        AtomicError::Inner(e) => e,
    })
}

/// A writer that, once an operation failed, accepts everything and writes nothing (keeping a
/// consistent position): `ZipWriter` finishes the archive when dropped and prints "ZipWriter
/// drop failed" to stderr when that fails, which after a first error (a full disk) it always
/// would. The first error is what [`write_npz`] reports, and the temporary file is removed
/// anyway.
struct Latch<W> {
    inner: W,
    failed: bool,
    /// The position, and the largest position reached (the end).
    pos: u64,
    end: u64,
}

impl<W> Latch<W> {
    fn new(inner: W) -> Latch<W> {
        Latch { inner, failed: false, pos: 0, end: 0 }
    }

    /// Records a result: the new position, or the failure.
    fn track<T>(&mut self, r: io::Result<T>, pos: impl FnOnce(&T, u64) -> u64) -> io::Result<T> {
        match &r {
            Ok(v) => {
                self.pos = pos(v, self.pos);
                self.end = self.end.max(self.pos);
            }
            Err(_) => self.failed = true,
        }
        r
    }
}

impl<W: io::Write> io::Write for Latch<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return self.track(Ok(buf.len()), |n, p| p.saturating_add(*n as u64));
        }
        let r = self.inner.write(buf);
        self.track(r, |n, p| p.saturating_add(*n as u64))
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.failed {
            return Ok(());
        }
        let r = self.inner.flush();
        self.track(r, |_, p| p)
    }
}

impl<W: io::Seek> io::Seek for Latch<W> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        if self.failed {
            let (base, d) = match to {
                io::SeekFrom::Start(n) => (n, 0),
                io::SeekFrom::Current(d) => (self.pos, d),
                io::SeekFrom::End(d) => (self.end, d),
            };
            let pos = base.saturating_add_signed(d);
            return self.track(Ok(pos), |p, _| *p);
        }
        let r = self.inner.seek(to);
        self.track(r, |p, _| *p)
    }
}

/// Reads one `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor, IoError> {
    let read = |source| IoError::Read { path: path.into(), source };
    let len = std::fs::metadata(path).map_err(read)?.len();
    crate::memory::check("reading the file", len, crate::memory::available()).map_err(|reason| IoError::TooLarge {
        path: path.into(),
        array: None,
        reason,
    })?;
    let bytes = std::fs::read(path).map_err(|source| IoError::Read { path: path.into(), source })?;
    let limit = crate::memory::available().map(|l| l.saturating_sub(bytes.len() as u64));
    npy::decode(&bytes, limit).map_err(|e| npy_error(path, None, e))
}

/// Writes one `.npy` file, atomically; `bf16` is written as `float32`.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), IoError> {
    t.check().map_err(|source| IoError::InvalidTensor { path: path.into(), array: None, source })?;
    write_atomically(path, |w| npy::encode(w, t)).map_err(|e| {
        let source = match e {
            AtomicError::Io(e) | AtomicError::Inner(e) => e,
        };
        IoError::Write { path: path.into(), array: None, source }
    })
}

#[cfg(test)]
#[path = "npz_tests.rs"]
mod tests;

/// Converts every `f32` tensor of `inputs` whose name `declared` maps to `bf16` into a `bf16`
/// tensor (round to nearest even; exact for tensors this module wrote from `bf16`): the
/// `.npz` convention for the format numpy lacks. Other tensors are left as they are (a dtype
/// mismatch is the caller's error to report).
pub fn as_declared_bf16(inputs: &mut BTreeMap<String, Tensor>, declared: impl Fn(&str) -> Option<crate::DType>) {
    for (name, t) in inputs.iter_mut() {
        if t.dtype() == crate::DType::F32 && declared(name) == Some(crate::DType::BF16) {
            // An f32 tensor converts to bf16 whatever its values (rounding), so this cannot
            // fail; keep the original on the impossible error.
            if let Ok(b) = Tensor::from_f64(crate::DType::BF16, t.shape().to_vec(), t.to_f64_vec()) {
                *t = b;
            }
        }
    }
}
