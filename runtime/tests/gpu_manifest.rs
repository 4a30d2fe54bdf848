//! The GPU parts of the manifest: the optional `gpu` launch info (absent from CPU manifests)
//! and the PTX artifact's manifest line (`ptx_with_manifest` / `manifest_from_ptx`).

mod common;

use common::*;
use tfmc_runtime::ArtifactError;
use tfmc_runtime::manifest::{GpuLaunch, Manifest, PTX_CHECKSUM_PREFIX, PTX_MANIFEST_PREFIX, manifest_from_ptx, ptx_with_manifest};

const PTX: &str = ".version 8.0\n.target sm_90\n.address_size 64\n";

/// `add` and `count` as a cuda manifest.
fn cuda_manifest() -> Manifest {
    let mut m = manifest(vec![add_kernel(), count_kernel()]);
    m.target.kind = "cuda".into();
    m.target.triple = "nvptx64-nvidia-cuda".into();
    m.target.cpu = "sm_90".into();
    m.target.features = vec!["ptx80".into()];
    for (k, heap) in m.kernels.iter_mut().zip([vec![4, 8], vec![]]) {
        k.gpu = Some(GpuLaunch { block: 256, heap_elem_bytes: heap, segments: 2 });
    }
    m.kernels[0].doc = "Adds.\n//@tfmc-manifest {} is not a line of its own".into();
    m
}

#[test]
fn cpu_manifests_have_no_gpu_key() {
    let m = manifest(vec![add_kernel()]);
    let json = m.to_json();
    assert!(!json.contains("gpu"), "{json}");
    let back = Manifest::from_json_checked(&json).unwrap();
    assert_eq!(back, m);
    assert!(back.kernels[0].gpu.is_none());
}

#[test]
fn ptx_round_trip() {
    let m = cuda_manifest();
    let text = ptx_with_manifest(PTX, &m);
    assert!(text.starts_with(PTX));
    let lines: Vec<&str> = text.lines().collect();
    let last = lines[lines.len() - 2];
    assert!(last.starts_with(PTX_MANIFEST_PREFIX) && text.ends_with('\n'));
    assert!(lines[lines.len() - 1].starts_with(PTX_CHECKSUM_PREFIX));
    assert_eq!(text.lines().count(), PTX.lines().count() + 2);
    assert!(last.contains(r#""gpu":{"block":256,"heap_elem_bytes":[4,8],"segments":2}"#));
    assert_eq!(manifest_from_ptx(&text).unwrap(), m);
    // A PTX text without a final newline still gets the manifest on a line of its own.
    let text = ptx_with_manifest(PTX.trim_end(), &m);
    assert_eq!(manifest_from_ptx(&text).unwrap(), m);
    assert_eq!(text.lines().count(), PTX.lines().count() + 2);
}

/// A PTX artifact whose PTX or manifest changed after it was written (a flipped byte, a cut
/// or missing checksum line) is refused: CudaArtifact and tfmc-cuda-run read it through
/// `manifest_from_ptx` before anything reaches the device.
#[test]
fn corrupted_ptx_artifacts_are_refused() {
    let m = cuda_manifest();
    let text = ptx_with_manifest(PTX, &m);
    assert_eq!(manifest_from_ptx(&text).unwrap(), m);
    // One changed byte in the PTX.
    let flipped = text.replacen("sm_90\n", "sm_80\n", 1);
    assert_ne!(flipped, text);
    let e = manifest_from_ptx(&flipped).unwrap_err();
    assert!(matches!(e, ArtifactError::Checksum { .. }), "{e}");
    assert!(e.to_string().contains("checksum mismatch") && e.to_string().contains("corrupted"), "{e}");
    // A PTX line cut out.
    let cut: String = text.lines().filter(|l| !l.starts_with(".address_size")).map(|l| format!("{l}\n")).collect();
    assert_ne!(cut, text);
    assert!(matches!(manifest_from_ptx(&cut), Err(ArtifactError::Checksum { .. })));
    // No checksum line (cut off at the end), or a malformed one.
    let truncated = &text[..text.find(PTX_CHECKSUM_PREFIX).unwrap()];
    let e = manifest_from_ptx(truncated).unwrap_err();
    assert!(e.to_string().contains("the last line is not '//@tfmc-crc32 XXXXXXXX'"), "{e}");
    let bad = format!("{truncated}{PTX_CHECKSUM_PREFIX}xyz\n");
    assert!(matches!(manifest_from_ptx(&bad), Err(ArtifactError::InvalidManifest(_))));
    // Without the final newline it still reads.
    assert_eq!(manifest_from_ptx(text.trim_end()).unwrap(), m);
}

/// ptxas and the driver reject non-ASCII bytes anywhere: the manifest line is ASCII (JSON
/// escapes), and reads back with the original characters (including outside the BMP).
#[test]
fn ptx_manifest_line_is_ascii() {
    let mut m = cuda_manifest();
    m.kernels[0].doc = "O = softmax(Q Kᵀ) V — 𝔼[x]".to_string();
    let text = ptx_with_manifest(PTX, &m);
    assert!(text.is_ascii(), "{text}");
    assert!(text.contains(r"K\u1d40"), "{text}");
    assert_eq!(manifest_from_ptx(&text).unwrap(), m);
}

#[test]
fn ptx_manifest_errors() {
    let m = cuda_manifest();
    let root = |text: &str| manifest_from_ptx(text).unwrap_err();
    let e = root(PTX);
    assert!(matches!(e, ArtifactError::NoPtxManifest { .. }));
    assert_eq!(e.to_string(), "no '//@tfmc-manifest' line: not a tfmc PTX artifact");
    let twice = ptx_with_manifest(&ptx_with_manifest(PTX, &m), &m);
    assert!(root(&twice).to_string().contains("more than one"));

    let mut cpu = m.clone();
    cpu.target.kind = "cpu".into();
    let e = root(&ptx_with_manifest(PTX, &cpu));
    assert_eq!(e.to_string(), "built for target kind 'cpu', expected a 'cuda' artifact");

    let mut no_gpu = m.clone();
    no_gpu.kernels[1].gpu = None;
    let e = root(&ptx_with_manifest(PTX, &no_gpu));
    assert_eq!(e.to_string(), "invalid manifest: kernel 'count' has no 'gpu' launch info");

    let mut bad = m.clone();
    bad.kernels[0].gpu.as_mut().unwrap().heap_elem_bytes = vec![3];
    let e = root(&ptx_with_manifest(PTX, &bad));
    assert_eq!(e.to_string(), "invalid manifest: kernel 'add': gpu heap buffer 0 has element size 3 bytes (not 1, 2, 4 or 8)");
    bad.kernels[0].gpu.as_mut().unwrap().heap_elem_bytes = vec![];
    bad.kernels[0].gpu.as_mut().unwrap().block = 2048;
    assert!(root(&ptx_with_manifest(PTX, &bad)).to_string().contains("gpu block size 2048 is not between 1 and 1024"));
    bad.kernels[0].gpu.as_mut().unwrap().block = 32;
    bad.kernels[0].gpu.as_mut().unwrap().segments = u32::MAX;
    assert!(root(&ptx_with_manifest(PTX, &bad)).to_string().contains("4294967295 gpu segments (at most 65536)"));

    // Format and version are read before the schema.
    let future = format!("{PTX}{PTX_MANIFEST_PREFIX}{{\"format\":\"tfmc-artifact\",\"version\":2}}\n");
    assert!(matches!(root(&future), ArtifactError::Version { found: 2, .. }));
    let other = format!("{PTX}{PTX_MANIFEST_PREFIX}{{\"format\":\"other\"}}\n");
    assert!(matches!(root(&other), ArtifactError::Format { .. }));
    let broken = format!("{PTX}{PTX_MANIFEST_PREFIX}{{\"format\":\n");
    assert!(matches!(root(&broken), ArtifactError::Json(_)));
}
