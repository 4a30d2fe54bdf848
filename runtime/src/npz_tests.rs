//! Unit tests for [`crate::npz`] (and through it the `npy` codec): round trips, corrupt input,
//! unsupported dtypes, atomicity, and a numpy cross-check when numpy is available.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;
use npyz::zip::{self, ZipWriter};

use super::*;
use crate::tensor::{DType, TensorData};

/// One tensor of every dtype with awkward values, plus 0-d and empty ones.
fn sample() -> BTreeMap<String, Tensor> {
    let floats = vec![0.0, -0.0, 1.5, -2.25, 1e-3, 65504.0, f64::INFINITY, f64::NEG_INFINITY];
    let mut m = BTreeMap::new();
    for d in [DType::F16, DType::BF16, DType::F32, DType::F64] {
        m.insert(format!("{d}"), Tensor::from_f64(d, vec![2, 4], floats.clone()).unwrap());
    }
    m.insert("f64_nan".into(), Tensor::from_f64(DType::F64, vec![1], vec![f64::NAN]).unwrap());
    let ints = vec![0, -1, i64::from(i32::MIN), i64::from(i32::MAX), 7, 42];
    m.insert("i32".into(), Tensor::new(DType::I32, vec![3, 2], TensorData::I(ints.clone())).unwrap());
    let mut longs = ints;
    longs.extend([i64::MIN, i64::MAX]);
    m.insert("i64".into(), Tensor::new(DType::I64, vec![8], TensorData::I(longs)).unwrap());
    let bools = vec![true, false, false, true];
    m.insert("bool".into(), Tensor::new(DType::Bool, vec![2, 1, 2], TensorData::B(bools)).unwrap());
    m.insert("scalar".into(), Tensor::from_f64(DType::F32, vec![], vec![3.25]).unwrap());
    m.insert("scalar_i".into(), Tensor::new(DType::I64, vec![], TensorData::I(vec![-9])).unwrap());
    for d in DType::ALL {
        m.insert(format!("empty_{d}"), Tensor::zeros(d, vec![0, 3]));
    }
    m
}

/// What reading back a written tensor gives: the same, except bf16 comes back as f32.
fn expected_after_round_trip(t: &Tensor) -> Tensor {
    match t.dtype() {
        DType::BF16 => Tensor::new(DType::F32, t.shape().to_vec(), t.data().clone()).unwrap(),
        _ => t.clone(),
    }
}

fn assert_same(got: &Tensor, want: &Tensor, name: &str) {
    assert_eq!(got.dtype(), want.dtype(), "{name}");
    assert_eq!(got.shape(), want.shape(), "{name}");
    assert_eq!(got.max_abs_diff(want), Some(0.0), "{name}: {got:?} vs {want:?}");
    // Bitwise, so -0.0 and NaN survive too.
    let bits = |t: &Tensor| t.to_f64_vec().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(got), bits(want), "{name}");
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Writes a zip archive with the given (member name, bytes) pairs.
fn write_zip(path: &Path, members: &[(&str, Vec<u8>)], method: zip::CompressionMethod) {
    let mut zip = ZipWriter::new(fs::File::create(path).unwrap());
    for (name, bytes) in members {
        zip.start_file(*name, zip::write::FileOptions::default().compression_method(method)).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// An `.npy` array of `T` written by npyz (so with npyz's header formatting).
fn npyz_bytes<T: npyz::AutoSerialize>(shape: &[u64], order: npyz::Order, items: Vec<T>) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = npyz::WriteOptions::<T>::new().default_dtype().shape(shape).order(order).writer(&mut buf).begin_nd().unwrap();
    w.extend(items).unwrap();
    w.finish().unwrap();
    buf.rewind().unwrap();
    buf.into_inner()
}

/// An `.npy` array with a hand-written header.
fn raw_npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(header.len() as u16).to_le_bytes());
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn npz_round_trip_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.npz");
    let tensors = sample();
    write_npz(&path, &tensors).unwrap();
    let back = read_npz(&path).unwrap();
    assert_eq!(back.keys().collect::<Vec<_>>(), tensors.keys().collect::<Vec<_>>());
    for (name, t) in &tensors {
        assert_same(&back[name], &expected_after_round_trip(t), name);
    }
    assert_eq!(entries(dir.path()), vec!["all.npz"], "no temporary files are left behind");
    // Same tensors, same bytes.
    let again = dir.path().join("again.npz");
    write_npz(&again, &tensors).unwrap();
    assert_eq!(fs::read(&path).unwrap(), fs::read(&again).unwrap());
}

#[test]
fn npy_round_trip_every_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for (name, t) in sample() {
        let path = dir.path().join(format!("{name}.npy"));
        write_npy(&path, &t).unwrap();
        assert_same(&read_npy(&path).unwrap(), &expected_after_round_trip(&t), &name);
    }
    assert!(entries(dir.path()).iter().all(|e| e.ends_with(".npy") && !e.starts_with('.')));
}

#[test]
fn empty_archive_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.npz");
    write_npz(&path, &BTreeMap::new()).unwrap();
    assert!(read_npz(&path).unwrap().is_empty());
}

#[test]
fn reads_npyz_written_big_endian_and_deflated_members() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deflated.npz");
    let le = npyz_bytes::<f32>(&[3], npyz::Order::C, vec![1.0, 2.0, 3.0]);
    let be = raw_npy("{'descr': '>i4', 'fortran_order': False, 'shape': (2,), }\n", &[0, 0, 1, 0, 255, 255, 255, 254]);
    write_zip(&path, &[("a.npy", le), ("b.npy", be)], zip::CompressionMethod::Deflated);
    let m = read_npz(&path).unwrap();
    assert_eq!(m["a"].to_f64_vec(), vec![1.0, 2.0, 3.0]);
    assert_eq!((m["b"].dtype(), m["b"].data()), (DType::I32, &TensorData::I(vec![256, -2])));
}

#[test]
fn missing_and_non_npz_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.npz");
    let err = read_npz(&missing).unwrap_err();
    assert!(matches!(err, IoError::Read { .. }));
    assert!(err.to_string().starts_with(&format!("cannot read {}: ", missing.display())), "{err}");
    let text = dir.path().join("text.npz");
    fs::write(&text, "this is not a zip archive\n").unwrap();
    let err = read_npz(&text).unwrap_err();
    assert!(matches!(err, IoError::NotNpz { .. }), "{err}");
    assert!(err.to_string().starts_with(&format!("{} is not a valid .npz archive: ", text.display())), "{err}");
    let err = read_npy(&text).unwrap_err();
    assert_eq!(err.to_string(), format!("{}: not a .npy array (bad magic bytes)", text.display()));
    let odd = dir.path().join("odd.npz");
    write_zip(&odd, &[("notes.txt", b"hi".to_vec())], zip::CompressionMethod::Stored);
    let err = read_npz(&odd).unwrap_err();
    assert_eq!(err.to_string(), format!("{}: member 'notes.txt' is not a .npy array", odd.display()));
}

#[test]
fn truncated_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.npz");
    write_npz(&path, &sample()).unwrap();
    let full = fs::read(&path).unwrap();
    let cut = dir.path().join("cut.npz");
    for len in (0..full.len()).step_by(37).chain([full.len() - 1]) {
        fs::write(&cut, &full[..len]).unwrap();
        let err = read_npz(&cut).unwrap_err();
        assert!(err.to_string().contains(&cut.display().to_string()), "{err}");
    }
    // A stored member whose array data is cut short (the zip itself intact).
    let mut npy = npyz_bytes::<f64>(&[4], npyz::Order::C, vec![1.0; 4]);
    npy.truncate(npy.len() - 5);
    write_zip(&cut, &[("x.npy", npy.clone())], zip::CompressionMethod::Stored);
    let err = read_npz(&cut).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("array 'x' in {}: array data is truncated: shape [4] of f64 needs 32 bytes, found 27", cut.display())
    );
    let cut_npy = dir.path().join("cut.npy");
    fs::write(&cut_npy, &npy).unwrap();
    assert!(matches!(read_npy(&cut_npy), Err(IoError::Malformed { array: None, .. })));
}

#[test]
fn corrupted_archives_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.npz");
    let mut small = BTreeMap::new();
    small.insert("x".to_string(), Tensor::from_f64(DType::F32, vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap());
    small.insert("m".to_string(), Tensor::new(DType::Bool, vec![3], TensorData::B(vec![true; 3])).unwrap());
    write_npz(&path, &small).unwrap();
    let full = fs::read(&path).unwrap();
    let bad = dir.path().join("bad.npz");
    // Deterministic pseudo-random byte flips (xorshift), one to three per trial.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..400 {
        let mut bytes = full.clone();
        for _ in 0..=next() % 3 {
            let i = (next() % bytes.len() as u64) as usize;
            bytes[i] = next() as u8;
        }
        fs::write(&bad, &bytes).unwrap();
        // Either a clean error or (when the flip hit something harmless) a result.
        let _ = read_npz(&bad);
        let _ = read_npy(&bad);
    }
}

#[test]
fn unsupported_dtypes_and_fortran_order_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.npz");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bytes", npyz_bytes::<u8>(&[3], npyz::Order::C, vec![1, 2, 3]), "unsupported numpy dtype uint8 (descr '|u1')"),
        ("small", npyz_bytes::<i16>(&[1], npyz::Order::C, vec![1]), "unsupported numpy dtype int16 (descr '<i2')"),
        (
            "cplx",
            raw_npy("{'descr': '<c16', 'fortran_order': False, 'shape': (1,), }", &[0; 16]),
            "unsupported numpy dtype complex128 (descr '<c16')",
        ),
        (
            "rec",
            raw_npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", &[0; 4]),
            "unsupported numpy dtype structured (descr [('a', '<f4')])",
        ),
        ("fort", npyz_bytes::<f32>(&[2, 2], npyz::Order::Fortran, vec![1.0; 4]), "fortran-order arrays are not supported"),
    ];
    for (name, bytes, want) in cases {
        write_zip(&path, &[(&format!("{name}.npy"), bytes.clone())], zip::CompressionMethod::Stored);
        let msg = read_npz(&path).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("array '{name}' in {}: ", path.display())), "{msg}");
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
        let npy = dir.path().join(format!("{name}.npy"));
        fs::write(&npy, &bytes).unwrap();
        let msg = read_npy(&npy).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("{}: ", npy.display())) && msg.contains(want), "{msg}");
    }
}

#[test]
fn failed_writes_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.npz");
    let mut good = BTreeMap::new();
    good.insert("a".to_string(), Tensor::zeros(DType::F32, vec![2]));
    write_npz(&path, &good).unwrap();
    let before = fs::read(&path).unwrap();
    // A tensor broken through data_mut is refused before anything is written.
    let mut broken = Tensor::zeros(DType::F32, vec![3]);
    *broken.data_mut() = TensorData::F(vec![1.0]);
    let mut bad = good.clone();
    bad.insert("b".to_string(), broken.clone());
    let err = write_npz(&path, &bad).unwrap_err();
    assert_eq!(err.to_string(), format!("cannot write array 'b' in {}: tensor of shape [3] needs 3 elements, got 1", path.display()));
    assert!(write_npy(&dir.path().join("b.npy"), &broken).is_err());
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(entries(dir.path()), vec!["out.npz"]);
    // A directory that does not exist.
    let nowhere = dir.path().join("no/such/out.npz");
    let err = write_npz(&nowhere, &good).unwrap_err();
    assert!(err.to_string().starts_with(&format!("cannot write {}: ", nowhere.display())), "{err}");
    assert!(matches!(write_npy(&nowhere, &good["a"]), Err(IoError::Write { .. })));
    // Overwriting works and is atomic (the target is replaced).
    good.insert("c".to_string(), Tensor::zeros(DType::I64, vec![1]));
    write_npz(&path, &good).unwrap();
    assert_eq!(read_npz(&path).unwrap().len(), 2);
    assert_eq!(entries(dir.path()), vec!["out.npz"]);
}

/// A Python with numpy: the project's `.venv` (made by `setup.sh`) or `python3`.
fn numpy_python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    [venv, PathBuf::from("python3")]
        .into_iter()
        .find(|py| std::process::Command::new(py).args(["-c", "import numpy"]).output().is_ok_and(|o| o.status.success()))
}

#[test]
fn numpy_cross_check() {
    let Some(py) = numpy_python() else {
        println!("SKIP: numpy not available");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let theirs = dir.path().join("theirs.npz");
    write_npz(&ours, &sample()).unwrap();
    let script = r#"
import sys, numpy as np
m = np.load(sys.argv[1])
assert m['f16'].dtype == np.float16 and m['bf16'].dtype == np.float32 and m['bool'].dtype == np.bool_
assert m['i32'].dtype == np.int32 and m['i64'].dtype == np.int64 and m['f64'].shape == (2, 4)
assert m['scalar'].shape == () and m['scalar'] == 3.25 and m['empty_f32'].shape == (0, 3)
assert list(m['i64'][-2:]) == [np.iinfo(np.int64).min, np.iinfo(np.int64).max]
assert m['bool'].tolist() == [[[True, False]], [[False, True]]]
x = np.arange(6, dtype='>f8').reshape(2, 3) / 7
np.savez_compressed(sys.argv[2], x=x, h=x.astype(np.float16), i=np.arange(4, dtype=np.int32),
                    b=np.array([True, False]), s=np.float64(2.5), e=np.zeros((0, 3), np.int64))
"#;
    let status = std::process::Command::new(&py).args(["-c", script]).arg(&ours).arg(&theirs).status().unwrap();
    assert!(status.success(), "numpy rejected our archive");
    let m = read_npz(&theirs).unwrap();
    let x: Vec<f64> = (0..6).map(|i| f64::from(i) / 7.0).collect();
    assert_eq!(m["x"].to_f64_vec(), x);
    assert_eq!(m["x"].shape(), &[2, 3]);
    assert_eq!(m["h"], Tensor::from_f64(DType::F16, vec![2, 3], x).unwrap());
    assert_eq!(m["i"].data(), &TensorData::I(vec![0, 1, 2, 3]));
    assert_eq!(m["b"].data(), &TensorData::B(vec![true, false]));
    assert_eq!((m["s"].shape(), m["s"].to_f64_vec()), (&[][..], vec![2.5]));
    assert_eq!((m["e"].dtype(), m["e"].shape()), (DType::I64, &[0, 3][..]));
}

/// A small deflated archive holding a large array is refused before it is inflated or
/// decoded when it does not fit in the memory available, naming the array.
#[test]
fn arrays_larger_than_memory_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.npz");
    // 2^21 f32 zeros: 8 MiB stored, 16 MiB decoded, a few KiB deflated.
    let n = 1usize << 21;
    let mut npy = raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2097152,), }", &[]);
    npy.resize(npy.len() + 4 * n, 0);
    write_zip(&path, &[("X.npy", npy)], zip::CompressionMethod::Deflated);
    assert!(fs::metadata(&path).unwrap().len() < 1 << 20);
    let msg = |limit: u64| read_npz_within(&path, Some(limit)).unwrap_err().to_string();
    let stored = msg(4 << 20);
    assert!(stored.contains("array 'X' in") && stored.contains("needs 8.0 MiB of memory, more than the 4.0 MiB available"), "{stored}");
    let decoded = msg(20 << 20);
    assert!(decoded.contains("array 'X' in") && decoded.contains("needs 16 MiB of memory, more than the 12 MiB available"), "{decoded}");
    assert!(matches!(read_npz_within(&path, Some(20 << 20)), Err(IoError::TooLarge { .. })));
    // With room for both it reads.
    assert_eq!(read_npz_within(&path, Some(25 << 20)).unwrap()["X"].len(), n);
    // Arrays already read count against the limit.
    let two = dir.path().join("two.npz");
    let mut small = raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (262144,), }", &[]);
    small.resize(small.len() + 4 * 262144, 0);
    write_zip(&two, &[("A.npy", small.clone()), ("B.npy", small)], zip::CompressionMethod::Deflated);
    assert!(read_npz_within(&two, Some(6 << 20)).is_ok());
    let second = read_npz_within(&two, Some(4 << 20)).unwrap_err().to_string();
    assert!(second.contains("array 'B' in"), "{second}");
}

/// A failing write reports the real error only: no "ZipWriter drop failed" on stderr (checked
/// through the latch that swallows what the archive writer does after a failure).
#[test]
fn the_latch_stops_after_the_first_error() {
    struct Full(usize);
    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0 < buf.len() {
                return Err(std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Seek for Full {
        fn seek(&mut self, _: std::io::SeekFrom) -> std::io::Result<u64> {
            Ok(0)
        }
    }
    let mut latch = Latch::new(Full(4));
    assert_eq!(latch.write(b"abc").unwrap(), 3);
    assert!(latch.write(b"defg").is_err());
    // Everything after the first error succeeds without effect, so dropping a ZipWriter over
    // it finishes quietly.
    assert_eq!(latch.write(b"xyz").unwrap(), 3);
    assert!(latch.flush().is_ok());
    assert_eq!(latch.stream_position().unwrap(), 6);
    assert_eq!(latch.seek(std::io::SeekFrom::Start(1)).unwrap(), 1);
    assert_eq!(latch.seek(std::io::SeekFrom::End(-1)).unwrap(), 5);
    assert_eq!(latch.inner.0, 1);
    // A ZipWriter dropped after a failed write finishes into the latch without complaint.
    let mut zip = ZipWriter::new(Latch::new(Full(100)));
    zip.start_file("a.npy", zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored)).unwrap();
    assert!(zip.write_all(&[0; 400]).is_err());
    drop(zip);
}
