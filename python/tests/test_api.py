"""The Python API: signatures, explain, params, zero-copy calls, errors, threads."""

import threading

import numpy as np
import pytest

import tfmc
from conftest import LIB, needs_torch

GATHER = "kernel g(X: f32[N], I: i32[M]) -> (Y: f32[M]) {\n    Y[m] = X[I[m]] * 2.0\n}\n"
BAD = "kernel bad(Q: f32[B, H, P, E]) -> (O: f32[B, H, P]) {\n    O[b, h, p] = Q[b, h, p, e] * 2.0\n}\n"
TWO = (
    "kernel two(X: f32[N]) -> (Y: f32[N], Z: f32[N]) {\n"
    "    Y[n] = X[n] + 1.0\n"
    "    Z[n] = X[n] * 3.0\n"
    "}\n"
)


@pytest.fixture(scope="module")
def sdpa():
    return tfmc.compile(LIB / "sdpa.tfm")


@pytest.fixture(scope="module")
def window():
    return tfmc.compile(str(LIB / "window.tfm"), kernel="window")


def qkv(p=8, m=8, e=4, f=4, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((1, 2, p, e)).astype(dtype),
        rng.standard_normal((1, 2, m, e)).astype(dtype),
        rng.standard_normal((1, 2, m, f)).astype(dtype),
    )


def numpy_sdpa(q, k, v):
    s = np.einsum("bhpe,bhme->bhpm", q, k) / np.sqrt(q.shape[-1])
    s = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhpm,bhmf->bhpf", s / s.sum(-1, keepdims=True), v)


def test_signature_and_repr(sdpa, window):
    s = sdpa.signature
    assert s.name == "sdpa" and [a.name for a in s.inputs] == ["Q", "K", "V"]
    assert s.inputs[0].dtype == "f32" and s.inputs[0].shape == ("B", "H", "P", "E")
    assert [o.name for o in s.outputs] == ["O"] and set(s.dims) == set("BHPEMF")
    assert s.doc
    assert str(s).startswith("kernel sdpa(Q: f32[B, H, P, E]")
    w = window.signature.params
    assert [(p.name, p.dtype, p.default) for p in w] == [("W", "i64", 256)]
    assert "sdpa" in repr(sdpa) and sdpa.backend == "llvm"


def test_source_text_and_multiple_outputs():
    k = tfmc.compile(TWO, backend="cranelift")
    y, z = k(np.arange(4, dtype=np.float32))
    assert y.tolist() == [1, 2, 3, 4] and z.tolist() == [0, 3, 6, 9]


def test_kernel_choice_is_required_when_ambiguous():
    with pytest.raises(ValueError, match="pass kernel=NAME"):
        tfmc.compile(LIB / "gqa.tfm")
    with pytest.raises(ValueError, match="no kernel 'nope'.*gqa"):
        tfmc.compile(LIB / "gqa.tfm", kernel="nope")


def test_results_and_params(sdpa, window):
    q, k, v = qkv()
    np.testing.assert_allclose(sdpa(q, k, v), numpy_sdpa(q, k, v), rtol=1e-4, atol=1e-5)
    # W = 1: every row attends to itself only, so O = V.
    np.testing.assert_allclose(window(q, k, v, W=1), v, rtol=1e-5, atol=1e-6)
    assert not np.allclose(window(q, k, v, W=1), window(q, k, v))
    # A compile-time param becomes the default.
    w1 = tfmc.compile(LIB / "window.tfm", params={"W": 1})
    assert w1.signature.params[0].default == 1
    np.testing.assert_allclose(w1(q, k, v), v, rtol=1e-5, atol=1e-6)


def test_explain(sdpa):
    text = sdpa.explain(dims={"P": 4096, "M": 4096})
    assert "schedule" in text and "osm" in text or "online" in text


def test_zero_copy_numpy(sdpa):
    """The kernel is handed the caller's buffers, and the outputs it writes are returned."""
    q, k, v = qkv()
    seen = {}

    class Spy:
        def __init__(self, lib):
            self.lib = lib

        def call(self, index, ins, outs, params):
            seen["ins"], seen["outs"] = [d[0] for d in ins], [d[0] for d in outs]
            return self.lib.call(index, ins, outs, params)

    k2 = tfmc.Kernel(sdpa._lib, 0)
    k2._lib = Spy(sdpa._lib)
    o = k2(q, k, v)
    assert seen["ins"] == [a.ctypes.data for a in (q, k, v)]
    assert seen["outs"] == [o.ctypes.data]
    # A contiguous view into a larger buffer is read in place, not copied.
    big = np.zeros((3, 2, 8, 4), np.float32)
    big[1] = q[0]
    view = big[1:2]
    assert view.flags.c_contiguous and view.ctypes.data != big.ctypes.data
    k2(view, k, v)
    assert seen["ins"][0] == view.ctypes.data
    np.testing.assert_allclose(sdpa(view, k, v), sdpa(q, k, v))
    # Mutating the input after the first call changes the next result: no cached copy.
    before = sdpa(q, k, v)
    q *= 2
    assert not np.allclose(before, sdpa(q, k, v))


@needs_torch
def test_zero_copy_torch(sdpa):
    import torch

    q, k, v = (torch.from_numpy(a) for a in qkv())
    seen = {}

    class Spy:
        def __init__(self, lib):
            self.lib = lib

        def call(self, index, ins, outs, params):
            seen["ins"], seen["outs"] = [d[0] for d in ins], [d[0] for d in outs]
            return self.lib.call(index, ins, outs, params)

    k2 = tfmc.Kernel(sdpa._lib, 0)
    k2._lib = Spy(sdpa._lib)
    o = k2(q, k, v)
    assert isinstance(o, torch.Tensor)
    assert seen["ins"] == [t.data_ptr() for t in (q, k, v)] and seen["outs"] == [o.data_ptr()]


def test_compile_error_has_the_diagnostic():
    with pytest.raises(tfmc.CompileError) as e:
        tfmc.compile(BAD)
    err = e.value
    assert "error: index 'e' is not bound here" in str(err)
    assert "not bound by this statement" in err.text and "hint:" in err.text
    assert err.message == "index 'e' is not bound here"
    assert (err.file, err.line, err.column) == ("<string>", 2, 29)
    assert BAD[err.span[0] : err.span[1]] == "e"
    assert isinstance(err, tfmc.TfmcError)
    with pytest.raises(tfmc.CompileError, match="cannot read|no such file|not found"):
        tfmc.compile("/nonexistent/x.tfm")


def test_argument_errors_name_the_argument(sdpa):
    q, k, v = qkv()
    with pytest.raises(TypeError, match="missing 'V'"):
        sdpa(q, k)
    with pytest.raises(TypeError, match="input 'K'.*must be f32.*float64"):
        sdpa(q, k.astype(np.float64), v)
    with pytest.raises(ValueError, match="input 'V'.*rank-3"):
        sdpa(q, k, v[0])
    with pytest.raises(ValueError, match="input 'K'.*dimension 3 \\(E\\) is 5"):
        sdpa(q, np.zeros((1, 2, 8, 5), np.float32), v)
    with pytest.raises(ValueError, match="input 'Q'.*not C-contiguous"):
        sdpa(np.asfortranarray(q), k, v)
    with pytest.raises(TypeError, match="input 'Q'.*NumPy array or a torch tensor, got list"):
        sdpa(q.tolist(), k, v)
    with pytest.raises(TypeError, match="no param 'W'"):
        sdpa(q, k, v, W=3)
    window = tfmc.compile(LIB / "window.tfm")
    with pytest.raises(TypeError, match="param 'W'.*i64.*1.5"):
        window(q, k, v, W=1.5)
    # Opting in converts instead.
    got = sdpa.run(np.asfortranarray(q).astype(np.float64), k.tolist(), v, convert=True)
    np.testing.assert_allclose(got, sdpa(q, k, v), rtol=1e-6)


@needs_torch
def test_torch_argument_errors(sdpa):
    import torch

    q, k, v = (torch.from_numpy(a) for a in qkv())
    with pytest.raises(TypeError, match="input 'V'.*torch.float32.*torch.float64"):
        sdpa(q, k, v.double())
    with pytest.raises(ValueError, match="input 'K'.*not contiguous"):
        sdpa(q, k.transpose(2, 3), v)
    with pytest.raises(TypeError, match="input 'K'.*torch tensor"):
        sdpa(q, k.numpy(), v)
    got = sdpa.run(q, k.transpose(2, 3).contiguous().transpose(2, 3), v.double(), convert=True)
    torch.testing.assert_close(got, sdpa(q, k, v))


def test_failing_kernel_raises_kernel_error():
    g = tfmc.compile(GATHER)
    x = np.arange(4, dtype=np.float32)
    assert g(x, np.array([3, 0], np.int32)).tolist() == [6.0, 0.0]
    with pytest.raises(tfmc.KernelError, match="kernel 'g' failed: .*out of range"):
        g(x, np.array([1, 7], np.int32))
    # The process is fine afterwards.
    assert g(x, np.array([2], np.int32)).tolist() == [4.0]


def test_load_and_corrupt_artifact(tmp_path):
    out = tmp_path / "libsdpa.so"
    assert tfmc.build(LIB / "sdpa.tfm", out) == ("sdpa",)
    assert (tmp_path / "libsdpa.h").is_file()
    a = tfmc.load(out)
    assert list(a.kernels) == ["sdpa"] and a.path == str(out) and a.manifest["version"] >= 1
    q, k, v = qkv()
    np.testing.assert_allclose(a.sdpa(q, k, v), numpy_sdpa(q, k, v), rtol=1e-4, atol=1e-5)
    with pytest.raises(KeyError, match="no kernel 'x'"):
        a["x"]
    with pytest.raises(tfmc.TfmcError, match="no source"):
        a.sdpa.explain()
    bad = tmp_path / "libbad.so"
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(tfmc.ArtifactError, match="checksum mismatch"):
        tfmc.load(bad)
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not an artifact")
    with pytest.raises(tfmc.ArtifactError, match="not a tfmc artifact|trailer"):
        tfmc.load(junk)
    with pytest.raises(tfmc.ArtifactError, match="cannot read"):
        tfmc.load(tmp_path / "missing.so")


def test_cuda_backend_without_a_device_says_so():
    try:
        k = tfmc.compile(LIB / "sdpa.tfm", backend="cuda")
    except tfmc.DeviceError as e:
        assert "no CUDA device" in str(e)
        print("SKIP: no CUDA device; the cuda backend raised DeviceError as it should")
        return
    q, k_, v = qkv()
    np.testing.assert_allclose(k(q, k_, v), numpy_sdpa(q, k_, v), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("backend", ["llvm", "cranelift"])
def test_threads_share_one_kernel(backend):
    k = tfmc.compile(LIB / "causal.tfm", backend=backend)
    inputs = [qkv(p=32, m=32, e=8, f=8, seed=s) for s in range(8)]
    want = [k(*x) for x in inputs]
    errors = []

    def work(i):
        try:
            for _ in range(20):
                got = k(*inputs[i])
                if not np.array_equal(got, want[i]):
                    errors.append(f"thread {i}: wrong result")
        except Exception as e:  # noqa: BLE001
            errors.append(f"thread {i}: {e!r}")

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


def test_kernel_outlives_everything_else():
    k = tfmc.compile(GATHER)
    import gc

    gc.collect()
    assert k(np.ones(2, np.float32), np.zeros(3, np.int32)).tolist() == [2.0, 2.0, 2.0]
    del k
    gc.collect()


def test_heap_trim_frees_the_cache_and_calls_still_work(sdpa):
    """A kernel whose intermediates are cached (K transposed: 1.4 MB here) runs the same after
    the cache is emptied."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 4, 1100, 64), dtype=np.float32) for _ in range(3))
    before = sdpa(q, k, v)
    tfmc.heap_trim()
    after = sdpa(q, k, v)
    np.testing.assert_array_equal(before, after)
