"""Call overhead of the Python path vs Rust on a small kernel (the same artifact).

    .venv/bin/python python/bench/overhead.py      # after ./setup.sh (tfmc installed)

Builds lib/sdpa.tfm into an artifact, then prints the median time of one call at a tiny size
(B=H=1, P=M=1, E=F=4: the kernel itself takes well under a microsecond) from Rust
(`call_overhead` example: `Kernel::run_native`, outputs allocated per call) and from Python
(NumPy in/out, torch in/out if installed; `tfmc.load`ed and `tfmc.compile`d kernels).
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import tfmc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = 20000


def median_us(f, n=N):
    for _ in range(200):
        f()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e6


def main():
    shape = (1, 1, 1, 4)
    with tempfile.TemporaryDirectory() as d:
        so = os.path.join(d, "libsdpa.so")
        tfmc.build(os.path.join(ROOT, "lib/sdpa.tfm"), so)
        rust = subprocess.run(
            ["cargo", "run", "-q", "--release", "-p", "tfmc-python", "--example", "call_overhead", "--", so, "sdpa", str(N)]
            + ["x".join(map(str, shape))] * 3,
            cwd=ROOT, capture_output=True, text=True,
        )
        if rust.returncode != 0:
            sys.exit(f"the Rust side failed:\n{rust.stderr}")
        rust_us = float(rust.stdout.strip())
        k = tfmc.load(so)["sdpa"]
        q, kk, v = (np.full(shape, 0.1, np.float32) for _ in range(3))
        rows = [("Rust: Kernel::run_native", rust_us), ("Python: tfmc.load, NumPy", median_us(lambda: k(q, kk, v)))]
        jit = tfmc.compile(os.path.join(ROOT, "lib/sdpa.tfm"))
        rows.append(("Python: tfmc.compile (LLVM JIT), NumPy", median_us(lambda: jit(q, kk, v))))
        try:
            import torch

            tq, tk, tv = (torch.from_numpy(a) for a in (q, kk, v))
            rows.append(("Python: tfmc.load, torch", median_us(lambda: k(tq, tk, tv))))
            op = tfmc.torch.register(k, "tfmc_bench::sdpa")
            rows.append(("Python: torch custom op", median_us(lambda: op(tq, tk, tv))))
        except ImportError:
            pass
        print(f"median time per call, sdpa at {shape} (N={N}):")
        for name, us in rows:
            extra = "" if name.startswith("Rust") else f"  (+{us - rust_us:.1f} us over Rust)"
            print(f"  {name:42s} {us:7.2f} us{extra}")


if __name__ == "__main__":
    main()
