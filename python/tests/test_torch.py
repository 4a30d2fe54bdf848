"""tfmc kernels as torch custom ops: in an nn.Module, under torch.compile without a graph
break, in torch.export, and through torch.library.opcheck."""

import numpy as np
import pytest

import tfmc
from conftest import LIB, needs_torch

pytestmark = needs_torch


@pytest.fixture(scope="module")
def ops():
    import tfmc.torch

    causal = tfmc.torch.register(tfmc.compile(LIB / "causal.tfm"), "tfmc_test::causal")
    window = tfmc.torch.register(tfmc.compile(LIB / "window.tfm"), "tfmc_test::window")
    return causal, window


def inputs(p=16, e=8):
    import torch

    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(2, 2, p, e, generator=g) for _ in range(3))


def test_op_matches_torch_sdpa(ops):
    import torch
    import torch.nn.functional as F

    causal, window = ops
    q, k, v = inputs()
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(causal(q, k, v), want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.ops.tfmc_test.causal(q, k, v), want, rtol=1e-4, atol=1e-5)
    # Params are op arguments with the kernel's default; W larger than P is plain causal.
    torch.testing.assert_close(window(q, k, v, 1000), want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(window(q, k, v, W=2), want)


def test_register_twice(ops):
    import tfmc.torch

    causal, _ = ops
    k = tfmc.torch._registered["tfmc_test::causal"][1]
    assert tfmc.torch.register(k, "tfmc_test::causal") is causal
    with pytest.raises(ValueError, match="already registered"):
        tfmc.torch.register(tfmc.compile(LIB / "sdpa.tfm"), "tfmc_test::causal")


def make_module(op):
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 8)

        def forward(self, q, k, v):
            o = op(self.proj(q).contiguous(), k, v)
            return torch.relu(o) + 1.0

    return Block().eval()


def test_module_under_torch_compile_equals_eager(ops):
    import torch
    import torch._dynamo

    causal, _ = ops
    m = make_module(causal)
    q, k, v = inputs()
    with torch.no_grad():
        eager = m(q, k, v)
        torch._dynamo.reset()
        compiled = torch.compile(m, fullgraph=True, backend="aot_eager")  # fullgraph: no graph break
        got = compiled(q, k, v)
        torch.testing.assert_close(got, eager)
        # Other sizes (dynamic shapes) too.
        q2, k2, v2 = inputs(p=24)
        torch.testing.assert_close(compiled(q2, k2, v2), m(q2, k2, v2))


def test_torch_export(ops):
    import torch

    causal, _ = ops
    m = make_module(causal)
    q, k, v = inputs()
    ep = torch.export.export(m, (q, k, v))
    assert any("tfmc_test.causal" in str(n.target) for n in ep.graph.nodes)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(q, k, v), m(q, k, v))


def test_opcheck(ops):
    import torch

    causal, window = ops
    q, k, v = inputs()
    torch.library.opcheck(causal, (q, k, v))
    torch.library.opcheck(window, (q, k, v), {"W": 3})
    # Different key and query lengths.
    torch.library.opcheck(causal, (q, torch.randn(2, 2, 20, 8), torch.randn(2, 2, 20, 8)))


def test_bf16_through_the_op():
    import torch

    import tfmc.torch

    op = tfmc.torch.register(tfmc.compile(LIB / "half.tfm", kernel="sdpa_bf16"), "tfmc_test::sdpa_bf16")
    q, k, v = (t.to(torch.bfloat16) for t in inputs())
    got = op(q, k, v)
    assert got.dtype == torch.bfloat16
    want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(got.float(), want, rtol=3e-2, atol=3e-2)
    np.testing.assert_equal(got.shape, (2, 2, 16, 8))
