//! The GPU driver against a fake in-memory device: entries are Rust closures that emulate
//! small kernels following the launch protocol (host `Vec` memory, one thread at a time).

use std::collections::{BTreeMap, HashMap};

use super::*;
use crate::manifest::{DimSpec, FailKind, ParamSpec, ParamValue, TensorSpec};
use crate::tensor::DType;

/// One launch as an entry sees it.
#[derive(Clone, Copy, Debug)]
struct Launch {
    grid: u32,
    block: u32,
    args: [DevPtr; 5],
}

/// Host memory standing in for device memory: allocations by base address.
#[derive(Default)]
struct Memory {
    allocs: BTreeMap<DevPtr, Vec<u8>>,
    next: DevPtr,
}

impl Memory {
    /// The allocation holding `[ptr, ptr + len)` and the offset in it.
    fn locate(&self, ptr: DevPtr, len: usize) -> Option<(DevPtr, usize)> {
        let (&base, bytes) = self.allocs.range(..=ptr).next_back()?;
        let off = usize::try_from(ptr - base).ok()?;
        (off + len <= bytes.len()).then_some((base, off))
    }

    fn read(&self, ptr: DevPtr, len: usize) -> &[u8] {
        let (base, off) = self.locate(ptr, len).expect("read out of bounds");
        &self.allocs[&base][off..off + len]
    }

    fn write(&mut self, ptr: DevPtr, src: &[u8]) {
        let (base, off) = self.locate(ptr, src.len()).expect("write out of bounds");
        let a = self.allocs.get_mut(&base).expect("located");
        a[off..off + src.len()].copy_from_slice(src);
    }

    fn u64(&self, table: DevPtr, i: usize) -> u64 {
        u64::from_le_bytes(self.read(table + 8 * i as u64, 8).try_into().unwrap())
    }

    fn i64(&self, table: DevPtr, i: usize) -> i64 {
        self.u64(table, i) as i64
    }

    fn set_i64(&mut self, table: DevPtr, i: usize, v: i64) {
        self.write(table + 8 * i as u64, &v.to_le_bytes());
    }

    fn f32(&self, buf: DevPtr, i: usize) -> f32 {
        f32::from_le_bytes(self.read(buf + 4 * i as u64, 4).try_into().unwrap())
    }

    fn set_f32(&mut self, buf: DevPtr, i: usize, v: f32) {
        self.write(buf + 4 * i as u64, &v.to_le_bytes());
    }

    /// The CAS from 0 a failing thread does on `status[0]`.
    fn fail(&mut self, status: DevPtr, code: i64) {
        if self.i64(status, 0) == 0 {
            self.set_i64(status, 0, code);
        }
    }
}

/// Every iteration `it < n` a grid-stride loop over the launch's threads visits.
fn grid_stride(l: Launch, n: i64, mut body: impl FnMut(i64)) {
    let threads = i64::from(l.grid) * i64::from(l.block);
    for t in 0..threads {
        let mut it = t;
        while it < n {
            body(it);
            it += threads;
        }
    }
}

type Entry = Box<dyn FnMut(&mut Memory, Launch)>;

/// The fake device: memory, entries by name, and a log of what happened.
#[derive(Default)]
struct Fake {
    mem: Memory,
    entries: HashMap<String, Entry>,
    /// `(entry, grid, block)` of every launch, in order.
    launches: Vec<(String, u32, u32)>,
    /// Size of every allocation asked for.
    alloc_sizes: Vec<usize>,
    uploads: usize,
    /// Fail the allocation with this index (0-based), if set.
    fail_alloc: Option<usize>,
}

impl Fake {
    fn entry(mut self, name: &str, f: impl FnMut(&mut Memory, Launch) + 'static) -> Fake {
        self.entries.insert(name.to_string(), Box::new(f));
        self
    }
}

impl GpuDevice for Fake {
    fn alloc_zeroed(&mut self, bytes: usize) -> Result<DevPtr, RuntimeError> {
        if self.fail_alloc == Some(self.alloc_sizes.len()) {
            return Err(RuntimeError::DeviceOp { op: format!("allocation of {bytes} bytes"), reason: "out of memory".into() });
        }
        self.alloc_sizes.push(bytes);
        assert!(bytes >= 1, "the protocol allocates at least one byte");
        let ptr = 0x1000 + self.mem.next;
        self.mem.next += (bytes as u64).div_ceil(256) * 256 + 256;
        self.mem.allocs.insert(ptr, vec![0; bytes]);
        Ok(ptr)
    }

    fn free(&mut self, ptr: DevPtr) {
        assert!(self.mem.allocs.remove(&ptr).is_some(), "double free");
    }

    fn upload(&mut self, dst: DevPtr, src: &[u8]) -> Result<(), RuntimeError> {
        self.uploads += 1;
        self.mem.write(dst, src);
        Ok(())
    }

    fn download(&mut self, src: DevPtr, dst: &mut [u8]) -> Result<(), RuntimeError> {
        dst.copy_from_slice(self.mem.read(src, dst.len()));
        Ok(())
    }

    fn launch(&mut self, entry: &str, grid: u32, block: u32, args: [DevPtr; 5]) -> Result<(), RuntimeError> {
        self.launches.push((entry.to_string(), grid, block));
        let f = self
            .entries
            .get_mut(entry)
            .ok_or_else(|| RuntimeError::DeviceOp { op: format!("launch of '{entry}'"), reason: "no such entry".into() })?;
        f(&mut self.mem, Launch { grid, block, args });
        Ok(())
    }

    fn synchronize(&mut self) -> Result<(), RuntimeError> {
        Ok(())
    }
}

fn spec(name: &str, dtype: &str, shape: &[&str]) -> TensorSpec {
    TensorSpec { name: name.into(), dtype: dtype.into(), shape: shape.iter().map(|d| DimSpec::Dim(d.to_string())).collect() }
}

/// `add(A f32[N], B f32[N]) -> O f32[N]`, params `scale: f32`, `fail: bool`: one heap
/// buffer `T f32[N]`, segment 0 `T = A + B`, segment 1 `O = T * scale`; block 32.
fn add_kernel() -> KernelManifest {
    KernelManifest {
        name: "add".into(),
        symbol: "tfmc_add".into(),
        doc: String::new(),
        inputs: vec![spec("A", "f32", &["N"]), spec("B", "f32", &["N"])],
        outputs: vec![spec("O", "f32", &["N"])],
        dims: vec!["N".into()],
        params: vec![
            ParamSpec { name: "scale".into(), dtype: "f32".into(), default: ParamValue::Float(1.0) },
            ParamSpec { name: "fail".into(), dtype: "bool".into(), default: ParamValue::Bool(false) },
        ],
        sites: vec!["site zero".into(), "A[i] + B[i] at add.tfm:2:9".into()],
        gpu: Some(GpuLaunch { block: 32, heap_elem_bytes: vec![4], segments: 2 }),
    }
}

/// The fake device with `add`'s entries; `seen` collects the status slots at each segment.
fn add_device() -> Fake {
    Fake::default()
        .entry("tfmc_add_prep", |m, l| {
            let [_, dims, params, _, status] = l.args;
            let n = m.i64(dims, 0);
            if m.u64(params, 1) != 0 {
                m.set_i64(status, 0, 3 | 1 << 8);
                return;
            }
            m.set_i64(status, 1, n); // heap T
            m.set_i64(status, 2, n); // seg0
            m.set_i64(status, 3, n); // seg1
        })
        .entry("tfmc_add_seg0", |m, l| {
            let [bufs, dims, _, heap, status] = l.args;
            let (a, b, t) = (m.u64(bufs, 0), m.u64(bufs, 1), m.u64(heap, 0));
            grid_stride(l, m.i64(dims, 0), |i| {
                let i = i as usize;
                let x = m.f32(a, i) + m.f32(b, i);
                if x.is_nan() {
                    m.fail(status, i64::from(FailKind::Absent as u8) | 1 << 8);
                }
                m.set_f32(t, i, x);
            });
        })
        .entry("tfmc_add_seg1", |m, l| {
            let [bufs, dims, params, heap, _] = l.args;
            let (o, t) = (m.u64(bufs, 2), m.u64(heap, 0));
            let scale = f64::from_bits(m.u64(params, 0)) as f32;
            grid_stride(l, m.i64(dims, 0), |i| {
                let i = i as usize;
                let x = m.f32(t, i) * scale;
                m.set_f32(o, i, x);
            });
        })
}

fn f32_tensor(v: &[f64]) -> Tensor {
    Tensor::from_f64(DType::F32, vec![v.len()], v.to_vec()).unwrap()
}

fn add_inputs(a: &[f64], b: &[f64]) -> BTreeMap<String, Tensor> {
    BTreeMap::from([("A".into(), f32_tensor(a)), ("B".into(), f32_tensor(b))])
}

fn launched(dev: &Fake) -> Vec<(&str, u32, u32)> {
    dev.launches.iter().map(|(e, g, b)| (e.as_str(), *g, *b)).collect()
}

#[test]
fn runs_segments_through_a_heap_buffer() {
    let mut dev = add_device();
    let a: Vec<f64> = (0..70).map(|i| i as f64).collect();
    let b: Vec<f64> = (0..70).map(|i| 0.5 * i as f64).collect();
    let params = BTreeMap::from([("scale".to_string(), Scalar::F(2.0))]);
    let out = run(&mut dev, &add_kernel(), &add_inputs(&a, &b), &params).unwrap();
    let expected: Vec<f64> = (0..70).map(|i| 3.0 * i as f64).collect();
    assert_eq!(out.keys().collect::<Vec<_>>(), ["O"]);
    assert_eq!(out["O"].shape(), [70]);
    assert_eq!(out["O"].to_f64_vec(), expected);
    // ceil(70 / 32) = 3 blocks of 32 threads.
    assert_eq!(launched(&dev), [("tfmc_add_prep", 1, 1), ("tfmc_add_seg0", 3, 32), ("tfmc_add_seg1", 3, 32)]);
    // The heap buffer: 70 f32; status: 1 + 1 heap + 2 segments slots.
    assert!(dev.alloc_sizes.contains(&280));
    assert!(dev.alloc_sizes.contains(&32));
    assert!(dev.mem.allocs.is_empty(), "everything freed");
}

#[test]
fn prep_failure_names_the_site_and_launches_no_segment() {
    let mut dev = add_device();
    let params = BTreeMap::from([("fail".to_string(), Scalar::B(true))]);
    let err = run(&mut dev, &add_kernel(), &add_inputs(&[1.0], &[2.0]), &params).unwrap_err();
    assert!(matches!(&err, RuntimeError::Kernel { kind: FailKind::Overflow, site, .. } if site == "A[i] + B[i] at add.tfm:2:9"), "{err}");
    assert_eq!(err.to_string(), "kernel 'add' failed: integer overflow at A[i] + B[i] at add.tfm:2:9");
    assert_eq!(launched(&dev), [("tfmc_add_prep", 1, 1)]);
    assert!(dev.mem.allocs.is_empty());
}

#[test]
fn segment_failure_is_reported_after_the_launch() {
    let mut dev = add_device();
    let a = [1.0, f64::NAN, 3.0];
    let err = run(&mut dev, &add_kernel(), &add_inputs(&a, &[0.0; 3]), &BTreeMap::new()).unwrap_err();
    assert!(matches!(&err, RuntimeError::Kernel { kind: FailKind::Absent, .. }), "{err}");
    assert_eq!(dev.launches.len(), 3, "segments run to the end, then the code is read");
    assert!(dev.mem.allocs.is_empty());
}

#[test]
fn empty_tensors_launch_no_segment() {
    let mut dev = add_device();
    let out = run(&mut dev, &add_kernel(), &add_inputs(&[], &[]), &BTreeMap::new()).unwrap();
    assert_eq!(out["O"].shape(), [0]);
    assert!(out["O"].is_empty());
    assert_eq!(launched(&dev), [("tfmc_add_prep", 1, 1)]);
    assert!(dev.alloc_sizes.iter().all(|&b| b >= 1));
    assert!(dev.mem.allocs.is_empty());
}

#[test]
fn checks_arguments_as_the_cpu_path_does() {
    let k = add_kernel();
    let mut dev = add_device();
    let only_a = BTreeMap::from([("A".to_string(), f32_tensor(&[1.0]))]);
    let err = run(&mut dev, &k, &only_a, &BTreeMap::new()).unwrap_err();
    assert_eq!(err.to_string(), "kernel 'add' needs input 'B' of type f32[N]");
    let err = run(&mut dev, &k, &add_inputs(&[1.0, 2.0], &[1.0]), &BTreeMap::new()).unwrap_err();
    assert!(matches!(err, RuntimeError::DimMismatch { .. }), "{err}");
    let params = BTreeMap::from([("scale".to_string(), Scalar::B(true))]);
    let err = run(&mut dev, &k, &add_inputs(&[1.0], &[1.0]), &params).unwrap_err();
    assert!(matches!(err, RuntimeError::ParamType { .. }), "{err}");
    let mut cpu_only = k.clone();
    cpu_only.gpu = None;
    let err = run(&mut dev, &cpu_only, &add_inputs(&[1.0], &[1.0]), &BTreeMap::new()).unwrap_err();
    assert!(matches!(err, RuntimeError::NotGpuKernel { .. }), "{err}");
    let mut bad = k;
    bad.gpu = Some(GpuLaunch { block: 0, heap_elem_bytes: vec![], segments: 0 });
    let err = run(&mut dev, &bad, &add_inputs(&[1.0], &[1.0]), &BTreeMap::new()).unwrap_err();
    assert!(matches!(err, RuntimeError::BadManifest { .. }), "{err}");
    assert!(dev.launches.is_empty() && dev.alloc_sizes.is_empty());
}

/// A kernel whose prep writes `status` slots given by the test, and whose segment does
/// nothing: for the protocol checks.
fn scripted(slots: Vec<i64>, heap: Vec<u32>, segments: u32) -> (KernelManifest, Fake) {
    let mut k = add_kernel();
    k.name = "scripted".into();
    k.symbol = "tfmc_s".into();
    k.gpu = Some(GpuLaunch { block: 256, heap_elem_bytes: heap, segments });
    let dev = Fake::default()
        .entry("tfmc_s_prep", move |m, l| {
            for (i, &v) in slots.iter().enumerate() {
                m.set_i64(l.args[4], i, v);
            }
        })
        .entry("tfmc_s_seg0", |_, _| {})
        .entry("tfmc_s_seg1", |_, _| {});
    (k, dev)
}

fn run_scripted(k: &KernelManifest, dev: &mut Fake) -> Result<BTreeMap<String, Tensor>, RuntimeError> {
    run(dev, k, &add_inputs(&[1.0], &[2.0]), &BTreeMap::new())
}

#[test]
fn grid_is_capped_and_zero_counts_are_skipped() {
    let (k, mut dev) = scripted(vec![0, 1 << 40, 0], vec![], 2);
    run_scripted(&k, &mut dev).unwrap();
    assert_eq!(launched(&dev), [("tfmc_s_prep", 1, 1), ("tfmc_s_seg0", MAX_GRID, 256)]);
    let (k, mut dev) = scripted(vec![0, 0, 257], vec![], 2);
    run_scripted(&k, &mut dev).unwrap();
    assert_eq!(launched(&dev), [("tfmc_s_prep", 1, 1), ("tfmc_s_seg1", 2, 256)]);
}

#[test]
fn bad_device_values_are_protocol_errors() {
    let cases: [(Vec<i64>, Vec<u32>, u32, &str); 5] = [
        (vec![0, -1], vec![4], 0, "heap buffer 0 has -1 elements of 4 bytes (status[1])"),
        (vec![0, i64::MAX / 4], vec![8], 0, "heap buffer 0 has"),
        (vec![0, 5, -3], vec![2], 1, "segment 0 has iteration count -3 (status[2])"),
        (vec![1 << 40], vec![], 0, "status[0] holds 1099511627776"),
        (vec![-(1 << 40)], vec![], 0, "not a 32-bit failure code"),
    ];
    for (slots, heap, segments, text) in cases {
        let (k, mut dev) = scripted(slots, heap, segments);
        let err = run_scripted(&k, &mut dev).unwrap_err();
        assert!(matches!(err, RuntimeError::GpuProtocol { .. }), "{err}");
        assert!(err.to_string().contains(text), "{err}");
        assert!(err.to_string().starts_with("kernel 'scripted' broke the GPU launch protocol: "), "{err}");
        assert!(dev.mem.allocs.is_empty());
        // No huge allocation was attempted.
        assert!(dev.alloc_sizes.iter().all(|&b| b < 1 << 20));
    }
}

#[test]
fn failure_codes_map_as_on_the_cpu() {
    // An unsigned 32-bit code (site 2^23 + 1) and an unknown kind.
    let (k, mut dev) = scripted(vec![i64::from(u32::MAX)], vec![], 0);
    let err = run_scripted(&k, &mut dev).unwrap_err();
    assert!(matches!(err, RuntimeError::UnknownFailure { code: -1, .. }), "{err}");
    let (k, mut dev) = scripted(vec![5 | 7 << 8], vec![], 0);
    let err = run_scripted(&k, &mut dev).unwrap_err();
    assert!(matches!(&err, RuntimeError::Kernel { kind: FailKind::OutOfMemory, site, .. } if site == "a buffer allocation"), "{err}");
}

#[test]
fn device_errors_name_the_kernel_and_free_everything() {
    // Fail each allocation in turn: inputs, output, the bufs/dims/params/heap tables,
    // status, the heap buffer.
    for i in 0..9 {
        let mut dev = add_device();
        dev.fail_alloc = Some(i);
        let err = run(&mut dev, &add_kernel(), &add_inputs(&[1.0], &[2.0]), &BTreeMap::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("kernel 'add' on the GPU: allocation of {} bytes failed: out of memory", [4, 4, 4, 24, 8, 16, 8, 32, 4][i])
        );
        assert!(dev.mem.allocs.is_empty(), "allocation {i}");
    }
    // A missing entry.
    let mut dev = add_device();
    dev.entries.remove("tfmc_add_seg1");
    let err = run(&mut dev, &add_kernel(), &add_inputs(&[1.0], &[2.0]), &BTreeMap::new()).unwrap_err();
    assert_eq!(err.to_string(), "kernel 'add' on the GPU: launch of 'tfmc_add_seg1' failed: no such entry");
    assert!(dev.mem.allocs.is_empty());
}

#[test]
fn prepared_relaunches_with_resident_inputs() {
    // seg1 adds into O (reads it): correct only if O is zeroed before every launch.
    let mut dev = add_device().entry("tfmc_add_seg1", |m, l| {
        let [bufs, dims, _, heap, _] = l.args;
        let (o, t) = (m.u64(bufs, 2), m.u64(heap, 0));
        grid_stride(l, m.i64(dims, 0), |i| {
            let i = i as usize;
            let x = m.f32(o, i) + m.f32(t, i);
            m.set_f32(o, i, x);
        });
    });
    let k = add_kernel();
    let inputs = add_inputs(&[1.0, 2.0], &[10.0, 20.0]);
    let mut p = Prepared::new(&mut dev, &k, &inputs, &BTreeMap::new()).unwrap();
    assert_eq!(p.manifest().name, "add");
    let times = p.time(3).unwrap();
    assert_eq!(times.len(), 3);
    p.launch().unwrap();
    let out = p.outputs().unwrap();
    assert_eq!(out["O"].to_f64_vec(), [11.0, 22.0]);
    drop(p);
    assert_eq!(dev.launches.len(), 4 * 3);
    // Inputs, the three tables: uploaded once; the heap table once per launch; status and
    // O zeroed (by upload, the default `fill_zero`) before launches 2 to 4.
    assert_eq!(dev.uploads, 2 + 3 + 4 + 3 * 2);
    assert!(dev.mem.allocs.is_empty());
}

#[test]
fn sm_versions() {
    assert_eq!(sm_version("sm_90"), Some((9, 0)));
    assert_eq!(sm_version("sm_90a"), Some((9, 0)));
    assert_eq!(sm_version("sm_86"), Some((8, 6)));
    assert_eq!(sm_version("sm_120"), Some((12, 0)));
    assert_eq!(sm_version("sm_9"), None);
    assert_eq!(sm_version("compute_90"), None);
    assert_eq!(sm_version("sm_x0"), None);
    assert_eq!(prep_entry("tfmc_k"), "tfmc_k_prep");
    assert_eq!(segment_entry("tfmc_k", 3), "tfmc_k_seg3");
}
