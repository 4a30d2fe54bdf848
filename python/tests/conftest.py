"""Shared fixtures of the tfmc Python tests: the repository root, the `tfmc` CLI (for
reference results), random inputs for every lib/ kernel, and whether torch is present."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(os.environ.get("TFMC_ROOT", Path(__file__).resolve().parents[2]))
LIB = ROOT / "lib"

try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_TORCH = False

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="SKIP: torch is not installed in this Python (./setup.sh installs it)")

ATT = dict(B=1, H=2, P=8, M=8, E=4, F=4)
SEQ = dict(B=1, H=2, T=8, E=4, F=4)

# Every lib/ kernel: (file, kernel, dims, params). Dims are small so the reference interpreter
# is quick; window's W is below P so the mask matters.
LIB_KERNELS = [
    ("alibi.tfm", "alibi", ATT, {}),
    ("causal.tfm", "causal", ATT, {}),
    ("gqa.tfm", "gqa", dict(B=1, H=4, G=2, P=8, M=8, E=4, F=4), {}),
    ("gqa.tfm", "mqa", ATT, {}),
    ("half.tfm", "sdpa_bf16", ATT, {}),
    ("half.tfm", "causal_bf16", ATT, {}),
    ("half.tfm", "sdpa_f16", ATT, {}),
    ("l2.tfm", "l2_attention", ATT, {}),
    ("linear.tfm", "linear", ATT, {}),
    ("linear.tfm", "linear_causal", ATT, {}),
    ("linear.tfm", "linear_causal_scan", SEQ, {}),
    ("mamba.tfm", "selective_scan", dict(B=1, T=8, D=4, N=3), {}),
    ("model.tfm", "rmsnorm", dict(B=1, T=4, D=8), {}),
    ("model.tfm", "block", dict(B=1, T=4, D=8, H=2, E=4), {}),
    ("retnet.tfm", "retention_parallel", ATT, {}),
    ("retnet.tfm", "retention_recurrent", SEQ, {}),
    ("sdpa.tfm", "sdpa", ATT, {}),
    ("softcap.tfm", "softcap", ATT, {"cap": 5.0}),
    ("varlen.tfm", "varlen_causal", dict(T=8, H=2, E=4, F=4, S1=3), {}),
    ("window.tfm", "window", ATT, {"W": 3}),
]

# Relative tolerance (scaled by the reference's magnitude) per output dtype.
RTOL = {"f32": 1e-4, "f64": 1e-9, "f16": 2e-2, "bf16": 4e-2}


def lib_ids():
    return [f"{f}:{k}" for f, k, _, _ in LIB_KERNELS]


def tfmc_bin():
    """The `tfmc` CLI: $TFMC_BIN, else target/{debug,release}/tfmc, else `tfmc` on PATH."""
    env = os.environ.get("TFMC_BIN")
    if env and Path(env).is_file():
        return env
    for p in (ROOT / "target" / "debug" / "tfmc", ROOT / "target" / "release" / "tfmc"):
        if p.is_file():
            return str(p)
    return shutil.which("tfmc")


def random_inputs(kernel, dims, seed=0):
    """Seeded inputs for a kernel's signature at `dims` (floats in [-1, 1]; varlen offsets
    valid; retention's decay in (0, 1)). bf16 inputs are float32 values rounded to bf16."""
    rng = np.random.default_rng(seed)
    out = {}
    for a in kernel.signature.inputs:
        shape = tuple(d if isinstance(d, int) else dims[d] for d in a.shape)
        if a.name == "Off":
            out[a.name] = np.array([0, 3, dims["T"]], dtype=np.int32)
        elif a.name == "Gamma":
            out[a.name] = rng.uniform(0.5, 0.95, shape).astype(np.float32)
        elif a.dtype == "bf16":
            x = rng.uniform(-1, 1, shape).astype(np.float32)
            out[a.name] = (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
        else:
            out[a.name] = rng.uniform(-1, 1, shape).astype({"f32": np.float32, "f64": np.float64, "f16": np.float16}[a.dtype])
    return out


def cli_reference(path, kernel, inputs, params, tmp_path):
    """Outputs of `tfmc run` (the reference interpreter) on the same inputs, by name."""
    exe = tfmc_bin()
    if exe is None:
        pytest.skip("SKIP: no tfmc CLI (build it: cargo build -p tfmc, or set TFMC_BIN)")
    inp = tmp_path / "in.npz"
    out = tmp_path / "out.npz"
    np.savez(inp, **inputs)
    cmd = [exe, "run", str(path), "--kernel", kernel, "--inputs", str(inp), "--out", str(out)]
    for k, v in params.items():
        cmd += ["--param", f"{k}={v}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stderr}"
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def assert_close(name, got, want, dtype):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    scale = max(1.0, float(np.abs(want).max(initial=0.0)))
    err = float(np.abs(got - want).max(initial=0.0))
    assert err <= RTOL.get(dtype, 1e-4) * scale, f"{name}: max |diff| {err:.3g} (scale {scale:.3g})"
