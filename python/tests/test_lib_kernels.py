"""Every lib/ kernel through tfmc.compile (LLVM and Cranelift JIT) and through tfmc.load of a
built artifact, on NumPy arrays and on torch tensors, against `tfmc run` (the reference
interpreter) on the same inputs."""

import numpy as np
import pytest

import tfmc
from conftest import HAVE_TORCH, LIB, LIB_KERNELS, assert_close, cli_reference, lib_ids, random_inputs

_compiled = {}
_artifacts = {}


def compiled(file, kernel, backend):
    key = (file, kernel, backend)
    if key not in _compiled:
        _compiled[key] = tfmc.compile(LIB / file, kernel=kernel, backend=backend)
    return _compiled[key]


def artifact(file, tmp_path_factory):
    if file not in _artifacts:
        out = tmp_path_factory.mktemp("artifacts") / f"lib{file[:-4]}.so"
        names = tfmc.build(LIB / file, out)
        a = tfmc.load(out)
        assert set(a.kernels) == set(names)
        _artifacts[file] = a
    return _artifacts[file]


def check(k, inputs, params, ref, kind):
    """Runs `k` on `inputs` as NumPy arrays or torch tensors and compares with `ref`."""
    names = [a.name for a in k.signature.inputs]
    if kind == "numpy":
        if any(a.dtype == "bf16" for a in k.signature.inputs + k.signature.outputs):
            with pytest.raises(TypeError, match="NumPy has no type"):
                k(*[inputs[n] for n in names], **params)
            return
        out = k(*[inputs[n] for n in names], **params)
        assert isinstance(out, np.ndarray)
        got = out
    else:
        import torch

        dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "i32": torch.int32}
        ts = [torch.from_numpy(inputs[n]).to(dt[a.dtype]) for n, a in zip(names, k.signature.inputs)]
        out = k(*ts, **params)
        assert isinstance(out, torch.Tensor) and out.dtype == dt[k.signature.outputs[0].dtype]
        got = out.float().numpy()
    o = k.signature.outputs[0]
    assert_close(f"{k.name} ({kind}) {o.name}", got, ref[o.name], o.dtype)


KINDS = ["numpy"] + (["torch"] if HAVE_TORCH else [])


@pytest.mark.parametrize("file,kernel,dims,params", LIB_KERNELS, ids=lib_ids())
def test_lib_kernel(file, kernel, dims, params, tmp_path, tmp_path_factory):
    k = compiled(file, kernel, "llvm")
    inputs = random_inputs(k, dims)
    ref = cli_reference(LIB / file, kernel, inputs, params, tmp_path)
    loaded = artifact(file, tmp_path_factory)[kernel]
    assert loaded.signature == k.signature
    for kind in KINDS:
        check(k, inputs, params, ref, kind)
        check(compiled(file, kernel, "cranelift"), inputs, params, ref, kind)
        check(loaded, inputs, params, ref, kind)
    if not HAVE_TORCH:
        print("SKIP: torch is not installed; lib kernels checked on NumPy only")
