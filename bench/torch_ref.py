#!/usr/bin/env python3
"""PyTorch reference timings for `tfmc bench` (fp32, CPU).

Usage:
    python3 bench/torch_ref.py '<json>'      # one request
    python3 bench/torch_ref.py < requests    # one request per stdin line, answered in turn
    python3 bench/torch_ref.py --example     # print an example request and exit

A request is one JSON object (on one line when given on stdin):
    {"threads": 2, "iters": 5, "budget_s": 10.0, "seed": 0,
     "shapes": [{"name": "sdpa-1k", "kind": "sdpa", "b": 1, "h": 8, "p": 1024, "m": 1024,
                 "e": 64, "w": 0}, ...]}
kind is one of sdpa | causal | window | decode | linear | gqa | alibi | softcap | paged (w: the
window for "window"; gqa and paged have h / 4 key/value heads).

Output: JSON Lines on stdout, flushed line by line. First {"torch": VERSION, "threads": N};
then per request one object per shape, in order: {"name": ..., "median_ms": ..., "iters": ...}
or {"name": ..., "error": ...}, then {"done": true}. `tfmc bench` keeps one process and sends
one shape per request right after timing it with tfmc, so both sides see the same machine
load.

Each shape: seeded uniform [-1, 1) inputs, one warm-up call, then the median of `iters` timed
calls (fewer when the warm-up says `iters` calls would exceed `budget_s`; at least one).
  sdpa, decode: F.scaled_dot_product_attention (decode is p = 1)
  causal:       F.scaled_dot_product_attention(is_causal=True)
  window:       F.scaled_dot_product_attention with an explicit boolean mask
                (True = attend: m <= p and p - m < w)
  linear:       causal linear attention, elu+1 feature map, in the explicit cumsum form:
                O_t = phi(Q_t) . cumsum(phi(K) V^T)_t / phi(Q_t) . cumsum(phi(K))_t
  gqa:          F.scaled_dot_product_attention(enable_gqa=True), h / 4 key/value heads
  alibi:        F.scaled_dot_product_attention with an explicit float bias (built once, not
                timed): -slope_h * (p - m) for m <= p, -inf above; slope_h = 2^(-8 (h+1) / H)
  softcap:      the eager formula: softmax(cap * tanh(Q K^T / sqrt(e) / cap)) V, cap = 30
  paged:        one decode step (q [b, h, e]) over b sequences of m tokens in shuffled pages of
                16 tokens: K/V gathered through the block table (kp[tbl]), keys masked by
                length, F.scaled_dot_product_attention(enable_gqa=True)
  v_NAME:       `tfmc bench --variants`: the eager ops of lib/'s kernel NAME, as written there
                (sdpa causal window alibi softcap gqa mqa l2 linear linear_causal retnet sigmoid
                sigmoid_causal diff softmax_one sink_causal sink_window flow graph pattention stick; pattention
                is X [b, p, e] against m parameter tokens Kp [m, e], Vp [m, f]); "f" gives
                V's head dim (default e); masks by torch.where(mask, S, -inf)
"""

import json
import math
import statistics
import sys
import time
import warnings

EXAMPLE = {
    "threads": 2,
    "iters": 5,
    "budget_s": 10.0,
    "seed": 0,
    "shapes": [{"name": "sdpa-512", "kind": "sdpa", "b": 1, "h": 8, "p": 512, "m": 512, "e": 64, "w": 0}],
}


def emit(obj):
    print(json.dumps(obj), flush=True)


def make_fn(torch, shape, gen):
    """The inputs of one shape and a zero-argument function running the reference on them."""
    F = torch.nn.functional
    b, h, p, m, e = (int(shape[k]) for k in ("b", "h", "p", "m", "e"))
    kind = shape["kind"]

    def rand(*dims):
        return torch.rand(*dims, generator=gen, dtype=torch.float32) * 2.0 - 1.0

    kvh = max(1, h // 4) if kind in ("gqa", "paged") else h
    if kind == "paged":
        return paged_fn(torch, b, h, kvh, m, e, rand, gen)
    q, k, v = rand(b, h, p, e), rand(b, kvh, m, e), rand(b, kvh, m, e)
    if kind == "gqa":
        return lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    if kind == "alibi":
        slope = torch.tensor([2.0 ** (-8.0 * (i + 1) / h) for i in range(h)]).view(1, h, 1, 1)
        dist = (torch.arange(p).unsqueeze(1) - torch.arange(m).unsqueeze(0)).float()
        bias = torch.where(dist >= 0, -slope * dist, torch.tensor(float("-inf")))
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    if kind == "softcap":
        cap = 30.0

        def softcap():
            s = torch.matmul(q, k.transpose(-1, -2)) / (e**0.5)
            s = cap * torch.tanh(s / cap)
            return torch.matmul(torch.softmax(s, dim=-1), v)

        return softcap
    if kind in ("sdpa", "decode"):
        return lambda: F.scaled_dot_product_attention(q, k, v)
    if kind == "causal":
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if kind == "window":
        w = int(shape["w"])
        pi = torch.arange(p).unsqueeze(1)
        mi = torch.arange(m).unsqueeze(0)
        mask = (mi <= pi) & (pi - mi < w)
        return lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    if kind == "linear":
        if p != m:
            raise ValueError("linear needs p == m")

        def linear():
            qf = F.elu(q) + 1.0
            kf = F.elu(k) + 1.0
            kv = torch.cumsum(kf.unsqueeze(-1) * v.unsqueeze(-2), dim=2)  # [b, h, t, e, f]
            z = torch.cumsum(kf, dim=2)  # [b, h, t, e]
            num = torch.einsum("bhte,bhtef->bhtf", qf, kv)
            den = torch.einsum("bhte,bhte->bht", qf, z)
            return num / den.unsqueeze(-1)

        return linear
    if kind.startswith("v_"):
        return variant_fn(torch, kind, shape, rand)
    raise ValueError(f"unknown kind '{kind}'")


PAGE = 16


def paged_fn(torch, b, h, kvh, m, e, rand, gen):
    """One decode step over a paged KV cache, as a PyTorch user writes it without a custom
    kernel: gather each sequence's pages through its block table, mask keys at or past its
    length, and call SDPA with grouped kv heads."""
    F = torch.nn.functional
    mp = (m + PAGE - 1) // PAGE
    nb = b * mp
    q = rand(b, h, e)
    kp, vp = rand(nb, PAGE, kvh, e), rand(nb, PAGE, kvh, e)
    tbl = torch.randperm(nb, generator=gen).view(b, mp)
    lens = torch.full((b,), m)

    def paged():
        k = kp[tbl].reshape(b, mp * PAGE, kvh, e).transpose(1, 2)
        v = vp[tbl].reshape(b, mp * PAGE, kvh, e).transpose(1, 2)
        mask = (torch.arange(mp * PAGE) < lens.unsqueeze(1)).view(b, 1, 1, mp * PAGE)
        return F.scaled_dot_product_attention(q.unsqueeze(2), k, v, attn_mask=mask, enable_gqa=True).squeeze(2)

    return paged


def variant_fn(torch, kind, shape, rand):
    """`tfmc bench --variants`: the eager formula of each lib/ kernel (fp32, as written there)."""
    F = torch.nn.functional
    b, h, p, m, e = (int(shape[k]) for k in ("b", "h", "p", "m", "e"))
    f = int(shape.get("f", e))
    scale = e**-0.5
    name = kind[2:]
    kvh = max(1, h // 4) if name == "gqa" else h
    if name == "pattention":
        x, kp, vp = rand(b, p, e), rand(m, e), rand(m, f)

        def pattention():
            a = torch.matmul(x, kp.t())
            return torch.matmul(F.gelu(a / torch.linalg.vector_norm(a, dim=-1, keepdim=True) * math.sqrt(m)), vp)

        return pattention
    if name == "diff":
        q1, q2, k1, k2, v = rand(b, h, p, e), rand(b, h, p, e), rand(b, h, m, e), rand(b, h, m, e), rand(b, h, m, f)
    elif name == "mqa":
        q, k, v = rand(b, h, p, e), rand(b, m, e).unsqueeze(1), rand(b, m, f).unsqueeze(1)
    else:
        q, k, v = rand(b, h, p, e), rand(b, kvh, m, e), rand(b, kvh, m, f)
    pi, mi = torch.arange(p).unsqueeze(1), torch.arange(m).unsqueeze(0)
    causal = mi <= pi
    neg_inf = torch.tensor(float("-inf"))

    def logits(qq, kk):
        return torch.matmul(qq, kk.transpose(-1, -2)) * scale

    def softmax_av(s, vv):
        return torch.matmul(torch.softmax(s, dim=-1), vv)

    if name in ("sdpa", "mqa"):
        return lambda: softmax_av(logits(q, k), v)
    if name == "gqa":
        g = h // kvh
        return lambda: softmax_av(logits(q, k.repeat_interleave(g, dim=1)), v.repeat_interleave(g, dim=1))
    if name == "causal":
        return lambda: softmax_av(torch.where(causal, logits(q, k), neg_inf), v)
    if name == "window":
        band = causal & (pi - mi < 256)
        return lambda: softmax_av(torch.where(band, logits(q, k), neg_inf), v)
    if name == "alibi":
        slope = torch.tensor([2.0 ** (-8.0 * (i + 1) / h) for i in range(h)]).view(1, h, 1, 1)
        dist = (pi - mi).float()
        return lambda: softmax_av(torch.where(causal, logits(q, k) - slope * dist, neg_inf), v)
    if name == "softcap":
        return lambda: softmax_av(30.0 * torch.tanh(logits(q, k) / 30.0), v)
    if name == "l2":
        return lambda: softmax_av(-torch.cdist(q, k).square() * scale, v)
    if name in ("linear", "linear_causal"):

        def linear():
            a = torch.matmul(F.elu(q) + 1.0, (F.elu(k) + 1.0).transpose(-1, -2))
            if name == "linear_causal":
                a = a * causal
            return torch.matmul(a, v) / a.sum(-1, keepdim=True)

        return linear
    if name == "retnet":
        gamma = torch.tensor([1.0 - 2.0 ** (-5 - i) for i in range(h)]).view(1, h, 1, 1)
        decay = torch.where(causal, gamma ** (pi - mi).clamp(min=0).float(), torch.tensor(0.0))
        return lambda: torch.matmul(torch.matmul(q, k.transpose(-1, -2)) * decay, v)
    if name in ("sigmoid", "sigmoid_causal"):
        bias = -math.log(m)

        def sigmoid_attention():
            a = torch.sigmoid(logits(q, k) + bias)
            if name == "sigmoid_causal":
                a = a * causal
            return torch.matmul(a, v)

        return sigmoid_attention
    if name == "diff":
        lam = 0.8
        return lambda: torch.matmul(torch.softmax(logits(q1, k1), -1) - lam * torch.softmax(logits(q2, k2), -1), v)
    if name in ("softmax_one", "sink_causal", "sink_window"):
        sink = torch.zeros(h) if name == "softmax_one" else rand(h)
        mask = None if name == "softmax_one" else (causal if name == "sink_causal" else causal & (pi - mi < 128))

        def sink_attention():
            s = logits(q, k)
            if mask is not None:
                s = torch.where(mask, s, neg_inf)
            g = s.amax(-1, keepdim=True)
            n = torch.exp(s - g)
            d = torch.exp(sink.view(1, h, 1, 1) - g) + n.sum(-1, keepdim=True)
            return torch.matmul(n, v) / d

        return sink_attention
    if name == "flow":

        def flow():
            qf, kf = torch.sigmoid(q), torch.sigmoid(k)
            inflow = torch.einsum("bhpe,bhe->bhp", qf, kf.sum(2))
            outflow = torch.einsum("bhme,bhe->bhm", kf, qf.sum(2))
            in_c = torch.einsum("bhpe,bhe->bhp", qf, (kf / outflow.unsqueeze(-1)).sum(2))
            out_c = torch.einsum("bhme,bhe->bhm", kf, (qf / inflow.unsqueeze(-1)).sum(2))
            vc = v * (torch.softmax(out_c, dim=-1) * m).unsqueeze(-1)
            kv = torch.einsum("bhme,bhmf->bhef", kf, vc)
            gate = torch.sigmoid(in_c * (p / m)).unsqueeze(-1)
            return gate * torch.einsum("bhpe,bhef->bhpf", qf, kv) / inflow.unsqueeze(-1)

        return flow
    if name == "stick":
        strict = mi < pi

        def stick():
            # The paper's log-space form: log A = logsigmoid(S) + sum_{m<k<p} log(1 - sigmoid(S_k)),
            # the sum over the keys between as a reversed cumulative sum.
            s = logits(q, k)
            log_left = torch.where(strict, F.logsigmoid(-s), torch.tensor(0.0))
            after = torch.flip(torch.cumsum(torch.flip(log_left, [-1]), -1), [-1]) - log_left
            a = torch.where(strict, torch.exp(F.logsigmoid(s) + after), torch.tensor(0.0))
            return torch.matmul(a, v)

        return stick
    if name == "graph":
        adj = (torch.rand(b, 1, p, m) < 0.5)
        return lambda: softmax_av(torch.where(adj, logits(q, k), neg_inf), v)
    raise ValueError(f"unknown kind '{kind}'")


def bench(torch, shape, iters, budget_s, gen):
    fn = make_fn(torch, shape, gen)
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = fn()
        warm = time.perf_counter() - t0
        if not bool(torch.isfinite(out).all()):
            print(f"torch_ref: {shape['name']}: non-finite output", file=sys.stderr)
        n = max(1, min(iters, int(budget_s / warm) if warm > 0 else iters))
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, n


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--example":
        print(json.dumps(EXAMPLE))
        return 0
    texts = [sys.argv[1]] if len(sys.argv) > 1 else sys.stdin
    # torch warns at import when NumPy is absent; NumPy is not needed here.
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    try:
        import torch
    except ImportError:
        print("torch_ref: PyTorch is not installed", file=sys.stderr)
        return 3
    emit({"torch": torch.__version__, "threads": torch.get_num_threads()})
    status = 0
    for text in texts:
        if not text.strip():
            continue
        try:
            req = json.loads(text)
        except json.JSONDecodeError as e:
            print(f"torch_ref: a request is not JSON: {e}", file=sys.stderr)
            emit({"done": True})
            status = 2
            continue
        torch.set_num_threads(int(req.get("threads", 2)))
        iters = int(req.get("iters", 5))
        budget_s = float(req.get("budget_s", 10.0))
        gen = torch.Generator().manual_seed(int(req.get("seed", 0)))
        for shape in req.get("shapes", []):
            name = str(shape.get("name", "?"))
            try:
                ms, n = bench(torch, shape, iters, budget_s, gen)
                emit({"name": name, "median_ms": ms, "iters": n})
            except Exception as e:  # one failing shape must not lose the others
                emit({"name": name, "error": f"{type(e).__name__}: {e}"})
        emit({"done": True})
    return status


if __name__ == "__main__":
    sys.exit(main())
