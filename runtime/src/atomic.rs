//! Atomic file replacement: [`write_atomically`] writes into a fresh temporary file in the
//! target's directory and renames it over the target only once everything was written and
//! synced, so readers see either the old file or the complete new one, never a half-written
//! one. On any error the temporary file is removed and the target is left untouched.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of concurrent writers in one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Failure of [`write_atomically`]: an I/O error of its own, or the writer's error `E`.
pub(crate) enum AtomicError<E> {
    Io(io::Error),
    Inner(E),
}

/// Deletes the temporary file unless disarmed.
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// Creates `path` (or replaces it) with what `body` writes, atomically.
pub(crate) fn write_atomically<E>(path: &Path, body: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>) -> Result<(), AtomicError<E>> {
    let name =
        path.file_name().ok_or_else(|| AtomicError::Io(io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (file, tmp) = create_temp(dir, &name.to_string_lossy()).map_err(AtomicError::Io)?;
    let mut guard = TempGuard(Some(tmp.clone()));
    let mut w = BufWriter::new(file);
    body(&mut w).map_err(AtomicError::Inner)?;
    let file = w.into_inner().map_err(|e| AtomicError::Io(e.into_error()))?;
    file.sync_all().map_err(AtomicError::Io)?;
    drop(file);
    fs::rename(&tmp, path).map_err(AtomicError::Io)?;
    guard.0 = None;
    Ok(())
}

/// Creates `path` (or replaces it) with `bytes`, atomically: readers see the old file or the
/// whole new one, and a failure leaves the target untouched and no temporary file.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    write_atomically(path, |w| w.write_all(bytes)).map_err(|e| match e {
        AtomicError::Io(e) | AtomicError::Inner(e) => e,
    })
}

/// Creates a new, uniquely named hidden file `.<name>.<pid>.<n>.tmp` in `dir`.
fn create_temp(dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
    let pid = std::process::id();
    let mut tries = 0;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{pid}.{n}.tmp"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_or_keeps_the_target() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("a.bin");
        write_atomically::<()>(&path, |w| w.write_all(b"one").map_err(|_| ())).ok().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        // A failing body leaves the old contents and no temporary file.
        let r = write_atomically(&path, |w| {
            w.write_all(b"partial").unwrap();
            Err("boom")
        });
        assert!(matches!(r, Err(AtomicError::Inner("boom"))));
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(entries(dir), vec!["a.bin"]);
        // A missing directory is an I/O error.
        let r = write_atomically::<()>(&dir.join("no/such/dir/x"), |_| Ok(()));
        assert!(matches!(r, Err(AtomicError::Io(_))));
    }
}
