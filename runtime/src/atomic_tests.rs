//! Tests of [`super::write_atomically`]: replacement, failure, symlinks, permissions, special
//! files and stale temporary files.

use super::*;
use std::io::Write;

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), io::Error> {
    write_file_atomically(path, bytes)
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

#[cfg(unix)]
#[test]
fn writes_through_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::create_dir(dir.join("real")).unwrap();
    fs::write(dir.join("real/data.bin"), b"old").unwrap();
    // A relative link to a relative link to the file.
    std::os::unix::fs::symlink("real/data.bin", dir.join("hop")).unwrap();
    std::os::unix::fs::symlink("hop", dir.join("link")).unwrap();
    write(&dir.join("link"), b"new").unwrap();
    assert!(fs::symlink_metadata(dir.join("link")).unwrap().file_type().is_symlink(), "the link stays a link");
    assert_eq!(fs::read(dir.join("real/data.bin")).unwrap(), b"new");
    assert_eq!(entries(&dir.join("real")), ["data.bin"]);
    // A dangling link creates its target.
    std::os::unix::fs::symlink(dir.join("real/fresh.bin"), dir.join("dangling")).unwrap();
    write(&dir.join("dangling"), b"x").unwrap();
    assert_eq!(fs::read(dir.join("real/fresh.bin")).unwrap(), b"x");
    // A loop is an error, not a hang.
    std::os::unix::fs::symlink("loop-b", dir.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", dir.join("loop-b")).unwrap();
    let e = write(&dir.join("loop-a"), b"x").unwrap_err();
    assert!(e.to_string().contains("levels of symbolic links"), "{e}");
}

#[cfg(unix)]
#[test]
fn keeps_the_permission_bits() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("secret.npz");
    fs::write(&path, b"old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    write(&path, b"new").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o600);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o751)).unwrap();
    write(&path, b"newer").unwrap();
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o751);
}

#[cfg(unix)]
#[test]
fn writes_into_a_fifo_without_replacing_it() {
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIP: mkfifo is not available");
        return;
    }
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).unwrap())
    };
    // A seeking writer (as the .npz writer is) works too: the content is produced first.
    write_atomically::<io::Error>(&fifo, |w| {
        w.write_all(b"xxxx-tail")?;
        w.rewind()?;
        w.write_all(b"head")
    })
    .ok()
    .unwrap();
    assert_eq!(reader.join().unwrap(), b"head-tail");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "still a FIFO");
    assert_eq!(entries(tmp.path()), ["pipe"]);
    // A failing body sends nothing (and does not even open the FIFO, which would block).
    let r = write_atomically(&fifo, |_| Err("boom"));
    assert!(matches!(r, Err(AtomicError::Inner("boom"))));
}

#[test]
fn refuses_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    fs::create_dir(&d).unwrap();
    let e = write(&d, b"x").unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert!(d.is_dir());
    assert!(entries(&d).is_empty());
}

#[test]
fn temp_names_are_recognized() {
    assert_eq!(temp_owner(".out.npz.123.4.tmp", "out.npz"), Some(123));
    assert_eq!(temp_owner(".out.npz.123.4.tmp", "out"), None);
    assert_eq!(temp_owner(".out.npz.12x.4.tmp", "out.npz"), None);
    assert_eq!(temp_owner(".out.npz.123.tmp", "out.npz"), None);
    assert_eq!(temp_owner("out.npz.123.4.tmp", "out.npz"), None);
}

#[cfg(target_os = "linux")]
#[test]
fn removes_stale_temps_of_dead_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A process that has exited; its id is not reused this quickly in practice.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let alive = std::os::unix::process::parent_id();
    let me = std::process::id();
    for name in [format!(".out.npz.{dead}.0.tmp"), format!(".out.npz.{alive}.0.tmp"), format!(".out.npz.{me}.999999.tmp")] {
        fs::write(dir.join(name), b"partial").unwrap();
    }
    fs::write(dir.join(format!(".other.npz.{dead}.0.tmp")), b"not ours to clean now").unwrap();
    write(&dir.join("out.npz"), b"done").unwrap();
    let want =
        vec![format!(".other.npz.{dead}.0.tmp"), format!(".out.npz.{alive}.0.tmp"), format!(".out.npz.{me}.999999.tmp"), "out.npz".into()];
    let mut want = want;
    want.sort();
    assert_eq!(entries(dir), want);
}
