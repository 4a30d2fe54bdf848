//! Atomic file replacement: [`write_atomically`] writes into a fresh temporary file in the
//! target's directory and renames it over the target only once everything was written and
//! synced, so readers see either the old file or the complete new one, never a half-written
//! one. On any error the temporary file is removed and the target is left untouched.
//!
//! What "the target" is, for a path that already exists:
//! - a symlink is followed (to the end of its chain): the file it points to is replaced and
//!   the link stays, as `> link` in a shell does; a dangling link creates its target;
//! - a regular file keeps its permission bits (`rwx` for user, group, others; not setuid,
//!   setgid or sticky). Owner, ACLs and extra hard links are not carried over;
//! - a FIFO or a character device (`/dev/null`, a terminal) is not replaced: it is written to
//!   directly, after the whole content was produced into an unnamed temporary file (so a
//!   failing writer sends nothing). Atomicity means nothing for these; renaming over them
//!   would destroy a device node;
//! - anything else (a directory, a socket, a block device) is refused with an error.
//!
//! Temporary files are named `.<name>.<pid>.<n>.tmp`. One left behind by a process that was
//! killed is removed by the next write to the same path, once its process is gone (on Linux,
//! where `/proc` tells; elsewhere they are left alone).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary files of concurrent writers in one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Symlinks followed before giving up (Linux's limit).
const MAX_LINKS: usize = 40;

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

/// Creates `path` (or replaces what it names, see the module docs) with what `body` writes,
/// atomically.
pub(crate) fn write_atomically<E>(path: &Path, body: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>) -> Result<(), AtomicError<E>> {
    let target = follow_links(path).map_err(AtomicError::Io)?;
    match fs::metadata(&target) {
        Ok(m) if m.is_file() => replace(&target, Some(m.permissions()), body),
        Ok(m) if is_stream(&m) => write_stream(&target, body),
        Ok(_) => Err(AtomicError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file, FIFO or character device (a directory, socket or block device); refusing to replace it",
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => replace(&target, None, body),
        Err(e) => Err(AtomicError::Io(e)),
    }
}

/// Creates `path` (or replaces it) with `bytes`, atomically: readers see the old file or the
/// whole new one, and a failure leaves the target untouched and no temporary file. Symlinks,
/// permissions and special files are handled as the module docs say.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    write_atomically(path, |w| w.write_all(bytes)).map_err(|e| match e {
        AtomicError::Io(e) | AtomicError::Inner(e) => e,
    })
}

/// `path` with every symlink of its last component followed; the result is not a symlink (it
/// may not exist).
fn follow_links(path: &Path) -> io::Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let to = fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) if to.is_relative() => dir.join(to),
                    _ => to,
                };
            }
            Ok(_) => return Ok(p),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidInput, format!("more than {MAX_LINKS} levels of symbolic links")))
}

/// A FIFO or a character device: written to, never replaced.
#[cfg(unix)]
fn is_stream(m: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    m.file_type().is_fifo() || m.file_type().is_char_device()
}

#[cfg(not(unix))]
fn is_stream(_: &fs::Metadata) -> bool {
    false
}

/// The permission bits of `perms` that a replacement keeps (see the module docs).
#[cfg(unix)]
fn kept(perms: fs::Permissions) -> fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    fs::Permissions::from_mode(perms.mode() & 0o777)
}

#[cfg(not(unix))]
fn kept(perms: fs::Permissions) -> fs::Permissions {
    perms
}

/// Writes a temporary file beside `target` and renames it over `target`; `perms` are the
/// replaced file's, if there is one.
fn replace<E>(
    target: &Path,
    perms: Option<fs::Permissions>,
    body: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>,
) -> Result<(), AtomicError<E>> {
    let name =
        target.file_name().ok_or_else(|| AtomicError::Io(io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")))?;
    let name = name.to_string_lossy();
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    remove_stale_temps(dir, &name);
    let (file, tmp) = create_temp(dir, &name).map_err(AtomicError::Io)?;
    let mut guard = TempGuard(Some(tmp.clone()));
    if let Some(p) = perms {
        file.set_permissions(kept(p)).map_err(AtomicError::Io)?;
    }
    let mut w = BufWriter::new(file);
    body(&mut w).map_err(AtomicError::Inner)?;
    let file = w.into_inner().map_err(|e| AtomicError::Io(e.into_error()))?;
    file.sync_all().map_err(AtomicError::Io)?;
    drop(file);
    fs::rename(&tmp, target).map_err(AtomicError::Io)?;
    guard.0 = None;
    Ok(())
}

/// Produces the whole content into an unnamed temporary file (the body may seek), then copies
/// it into the FIFO or device `target`.
fn write_stream<E>(target: &Path, body: impl FnOnce(&mut BufWriter<File>) -> Result<(), E>) -> Result<(), AtomicError<E>> {
    let (file, tmp) = create_temp(&std::env::temp_dir(), "tfmc-stream").map_err(AtomicError::Io)?;
    // Unnamed from now on: nothing is left behind, whatever happens to this process.
    fs::remove_file(&tmp).map_err(AtomicError::Io)?;
    let mut w = BufWriter::new(file);
    body(&mut w).map_err(AtomicError::Inner)?;
    let mut file = w.into_inner().map_err(|e| AtomicError::Io(e.into_error()))?;
    file.rewind().map_err(AtomicError::Io)?;
    let mut dest = OpenOptions::new().write(true).open(target).map_err(AtomicError::Io)?;
    io::copy(&mut file, &mut dest).map_err(AtomicError::Io)?;
    Ok(())
}

/// Creates a new, uniquely named hidden file `.<name>.<pid>.<n>.tmp` in `dir`.
fn create_temp(dir: &Path, name: &str) -> io::Result<(File, PathBuf)> {
    let pid = std::process::id();
    let mut tries = 0;
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{pid}.{n}.tmp"));
        match OpenOptions::new().write(true).read(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((f, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The process id in `entry` if it is one of our temporary files for `name`
/// (`.<name>.<pid>.<n>.tmp`).
fn temp_owner(entry: &str, name: &str) -> Option<u32> {
    let rest = entry.strip_prefix('.')?.strip_prefix(name)?.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (pid, n) = rest.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if digits(pid) && digits(n) { pid.parse().ok() } else { None }
}

/// Whether process `pid` may still be running; `None` when this cannot be told.
fn process_alive(pid: u32) -> Option<bool> {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return None;
    }
    Some(proc.join(pid.to_string()).exists())
}

/// Removes the temporary files for `name` in `dir` that a process no longer running left
/// behind (killed before it could clean up). Best effort: errors are ignored.
fn remove_stale_temps(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    let me = std::process::id();
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(pid) = file_name.to_str().and_then(|f| temp_owner(f, name)) else { continue };
        let regular = e.file_type().is_ok_and(|t| t.is_file());
        if pid != me && regular && process_alive(pid) == Some(false) {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
#[path = "atomic_tests.rs"]
mod tests;
