#!/usr/bin/env python3
"""tfmc on a CUDA GPU against PyTorch, side by side (issue 6's device check).

Run on the GPU machine (PyTorch with CUDA, NumPy; no Rust needed) after
`bench/gpu/prepare.sh OUT` built the bundle here:

    python3 bench/gpu/bench.py --bundle OUT [--iters 20] [--cases sdpa,causal_bf16]
                               [--shape B,H,P,M,E] [--md table.md]

For every case it writes seeded inputs to OUT/in_<case>.npz, runs the tfmc kernel with
`OUT/tfmc-cuda-run` (median of --iters launches, host wall clock per launch: includes the
launch protocol's prep kernel and status read-back), checks its output against a float32
PyTorch reference computed from the same (rounded) inputs, and times PyTorch's
`scaled_dot_product_attention` (flash backend for f16/bf16) and compiled `flex_attention`
with CUDA events. Speedups are torch ms / tfmc ms (> 1: tfmc is faster).

Without PyTorch the torch columns are empty and outputs are not checked; without a CUDA
device the runner exits 2 and so does this script.
"""

import argparse
import math
import os
import re
import subprocess
import sys

import numpy as np

# (case, ptx file, kernel, input dtype, params, mask kind, decode)
CASES = [
    ("sdpa", "sdpa", "sdpa", "f32", {}, "none", False),
    ("causal", "causal", "causal", "f32", {}, "causal", False),
    ("window", "window", "window", "f32", {"W": 256}, "window", False),
    ("alibi", "alibi", "alibi", "f32", {}, "alibi", False),
    ("softcap", "softcap", "softcap", "f32", {"cap": 30.0}, "softcap", False),
    ("sdpa_bf16", "half", "sdpa_bf16", "bf16", {}, "none", False),
    ("causal_bf16", "half", "causal_bf16", "bf16", {}, "causal", False),
    ("sdpa_f16", "half", "sdpa_f16", "f16", {}, "none", False),
    ("decode_bf16", "half", "sdpa_bf16", "bf16", {}, "none", True),
]

# Output tolerance relative to max(1, max |reference|): f32 math, or the input format's
# precision on the tensor-core path (docs/language.md).
RTOL = {"f32": 2e-4, "f16": 3e-3, "bf16": 2e-2}


def torch_or_none():
    try:
        import torch  # noqa: F401

        return torch
    except ImportError:
        return None


def inputs(case, dtype, b, h, p, m, e, seed, torch):
    """Q, K, V as float32 arrays holding values of the kernel's input format."""
    rng = np.random.default_rng(seed)
    q, k, v = (rng.uniform(-1, 1, size=s).astype(np.float32) for s in [(b, h, p, e), (b, h, m, e), (b, h, m, e)])
    if dtype == "f16":
        q, k, v = (x.astype(np.float16).astype(np.float32) for x in (q, k, v))
    elif dtype == "bf16":
        if torch is None:
            raise SystemExit("bf16 cases need PyTorch for the rounding (or use --cases without bf16)")
        q, k, v = (torch.from_numpy(x).bfloat16().float().numpy() for x in (q, k, v))
    return q, k, v


def save_inputs(path, dtype, q, k, v):
    # numpy has no bfloat16: bf16 inputs go as float32 (the runner rounds them, exactly here).
    store = (lambda x: x.astype(np.float16)) if dtype == "f16" else (lambda x: x)
    np.savez(path, Q=store(q), K=store(k), V=store(v))


def run_tfmc(bundle, ptx, kernel, params, inp, out, iters):
    cmd = [os.path.join(bundle, "tfmc-cuda-run"), os.path.join(bundle, ptx + ".ptx"), "--kernel", kernel,
           "--inputs", inp, "--out", out, "--iters", str(iters)]
    for n, val in params.items():
        cmd += ["--param", f"{n}={val}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode == 2:
        sys.stderr.write(r.stderr)
        raise SystemExit(2)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    t = re.search(r"median ([0-9.]+) ms", r.stdout)
    return float(t.group(1)) if t else float("nan"), r.stdout


def slopes(h, torch, dev):
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / h) for i in range(h)], device=dev, dtype=torch.float32)


def reference(torch, kind, params, q, k, v):
    """float32 attention, in chunks of heads (the logits of one chunk fit in memory)."""
    dev = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    b, h, p, e = q.shape
    m = k.shape[2]
    out = np.empty((b, h, p, v.shape[3]), dtype=np.float32)
    pi = torch.arange(p, device=dev).view(p, 1)
    mi = torch.arange(m, device=dev).view(1, m)
    sl = slopes(h, torch, dev)
    for bi in range(b):
        for h0 in range(0, h, 4):
            h1 = min(h, h0 + 4)
            Q, K, V = (torch.from_numpy(x[bi, h0:h1]).to(dev) for x in (q, k, v))
            s = Q @ K.transpose(-1, -2) / math.sqrt(e)
            keep = torch.ones(p, m, dtype=torch.bool, device=dev)
            if kind in ("causal", "window", "alibi"):
                keep &= mi <= pi
            if kind == "window":
                keep &= (pi - mi) < params["W"]
            if kind == "alibi":
                s = s - sl[h0:h1].view(-1, 1, 1) * (pi - mi).float()
            if kind == "softcap":
                s = params["cap"] * torch.tanh(s / params["cap"])
            s = s.masked_fill(~keep, float("-inf"))
            w = torch.softmax(s, dim=-1).nan_to_num(0.0)  # a fully masked row is 0 (as tfmc)
            out[bi, h0:h1] = (w @ V).cpu().numpy()
    return out


def cuda_time(torch, fn, iters):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        a, z = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        z.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(z))
    times.sort()
    return times[len(times) // 2]


def time_torch(torch, kind, dtype, params, q, k, v, iters):
    """(sdpa ms, flex ms); None where the variant has no such form."""
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    dev = "cuda"
    tdt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    Q, K, V = (torch.from_numpy(x).to(dev, tdt) for x in (q, k, v))
    b, h, p, _ = q.shape
    m = k.shape[2]
    t_sdpa = None
    if kind in ("none", "causal"):
        causal = kind == "causal"
        if dtype == "f32":
            t_sdpa = cuda_time(torch, lambda: sdpa(Q, K, V, is_causal=causal), iters)
        else:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                t_sdpa = cuda_time(torch, lambda: sdpa(Q, K, V, is_causal=causal), iters)
    elif kind in ("window", "alibi"):
        pi = torch.arange(p, device=dev).view(p, 1)
        mi = torch.arange(m, device=dev).view(1, m)
        if kind == "window":
            mask = (mi <= pi) & ((pi - mi) < params["W"])
        else:
            bias = -slopes(h, torch, dev).view(h, 1, 1) * (pi - mi).float()
            mask = bias.masked_fill(~(mi <= pi), float("-inf")).to(tdt).unsqueeze(0)
        t_sdpa = cuda_time(torch, lambda: sdpa(Q, K, V, attn_mask=mask), iters)
    t_flex = None
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        flex = torch.compile(flex_attention)
        block_mask, score_mod = None, None
        sl = slopes(h, torch, dev)
        if kind in ("causal", "alibi"):
            block_mask = create_block_mask(lambda b_, h_, qi, ki: qi >= ki, None, None, p, m, device=dev)
        if kind == "window":
            w = params["W"]
            block_mask = create_block_mask(lambda b_, h_, qi, ki: (qi >= ki) & (qi - ki < w), None, None, p, m, device=dev)
        if kind == "alibi":
            score_mod = lambda s, b_, h_, qi, ki: s - sl[h_] * (qi - ki)  # noqa: E731
        if kind == "softcap":
            cap = params["cap"]
            score_mod = lambda s, b_, h_, qi, ki: cap * torch.tanh(s / cap)  # noqa: E731
        t_flex = cuda_time(torch, lambda: flex(Q, K, V, score_mod=score_mod, block_mask=block_mask), iters)
    except Exception as ex:  # flex_attention missing or failing for this case: report, go on
        sys.stderr.write(f"flex_attention ({kind}, {dtype}): {ex}\n")
    return t_sdpa, t_flex


def fmt(x, spec="{:.3f}"):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else spec.format(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, help="the folder bench/gpu/prepare.sh wrote")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--cases", help="comma-separated subset of: " + ",".join(c[0] for c in CASES))
    ap.add_argument("--shape", default="4,16,4096,4096,128", help="B,H,P,M,E for prefill (default 4,16,4096,4096,128)")
    ap.add_argument("--decode", default="4,16,1,32768,128", help="B,H,P,M,E for the decode case")
    ap.add_argument("--md", help="also write the table as Markdown here")
    a = ap.parse_args()
    torch = torch_or_none()
    if torch is not None and not torch.cuda.is_available():
        torch = None
    wanted = set(a.cases.split(",")) if a.cases else None
    rows = []
    for name, ptx, kernel, dtype, params, kind, decode in CASES:
        if wanted and name not in wanted:
            continue
        b, h, p, m, e = (int(x) for x in (a.decode if decode else a.shape).split(","))
        q, k, v = inputs(name, dtype, b, h, p, m, e, seed=len(rows) + 1, torch=torch)
        inp = os.path.join(a.bundle, f"in_{name}.npz")
        out = os.path.join(a.bundle, f"out_{name}.npz")
        save_inputs(inp, dtype, q, k, v)
        t_tfmc, _ = run_tfmc(a.bundle, ptx, kernel, params, inp, out, a.iters)
        got = np.load(out)["O"].astype(np.float32)
        err, verdict, t_sdpa, t_flex = None, "unchecked", None, None
        if torch is not None:
            want = reference(torch, kind, params, q, k, v)
            err = float(np.nanmax(np.abs(got - want))) if got.size else 0.0
            scale = max(1.0, float(np.abs(want).max()) if want.size else 0.0)
            verdict = "PASS" if err <= RTOL[dtype] * scale and np.isfinite(got).all() else "FAIL"
            t_sdpa, t_flex = time_torch(torch, kind, dtype, params, q, k, v, a.iters)
        rows.append((name, dtype, f"{b}x{h}x{p}x{m}x{e}", t_tfmc, t_sdpa, t_flex, err, verdict))
        print(f"{name}: tfmc {fmt(t_tfmc)} ms, sdpa {fmt(t_sdpa)} ms, flex {fmt(t_flex)} ms, max err {fmt(err, '{:.2e}')} {verdict}", flush=True)
    head = ["case", "dtype", "BxHxPxMxE", "tfmc ms", "sdpa ms", "flex ms", "sdpa/tfmc", "flex/tfmc", "max err", "check"]
    table = [head]
    for name, dtype, shape, tt, ts, tf, err, verdict in rows:
        ratio = lambda t: None if t is None or not tt or math.isnan(tt) else t / tt  # noqa: E731
        table.append([name, dtype, shape, fmt(tt), fmt(ts), fmt(tf), fmt(ratio(ts), "{:.2f}x"), fmt(ratio(tf), "{:.2f}x"), fmt(err, "{:.2e}"), verdict])
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    for r in table:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    if a.md:
        with open(a.md, "w") as f:
            f.write("| " + " | ".join(head) + " |\n|" + "---|" * len(head) + "\n")
            for r in table[1:]:
                f.write("| " + " | ".join(r) + " |\n")
    return 0 if all(r[-1] != "FAIL" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
