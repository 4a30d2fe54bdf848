"""tfmc kernels as PyTorch custom operators.

    op = tfmc.torch.register(tfmc.compile("lib/causal.tfm"), "tfmc::causal")
    O = op(Q, K, V)                    # or torch.ops.tfmc.causal(Q, K, V)

``register`` makes a ``torch.library.custom_op`` whose schema is the kernel's signature
(tensors in, tensors out, params as keyword-able scalars with their defaults) and whose fake
(meta) implementation gives the outputs' shapes and dtypes from the manifest, so the op works
inside an ``nn.Module``, under ``torch.compile`` without a graph break, and in
``torch.export``. The real implementation runs the tfmc kernel on CPU tensors (made contiguous
first); it has no autograd formula (use it for inference, or under ``torch.no_grad()``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from ._kernel import Kernel

_PARAM_TYPES = {"f16": "float", "bf16": "float", "f32": "float", "f64": "float", "i32": "int", "i64": "int", "bool": "bool"}

#: Ops registered in this process, by name (registering a name twice is an error in torch).
_registered: Dict[str, Any] = {}


def _schema_fn(kernel: Kernel) -> Any:
    """A Python function with the kernel's signature, annotated for torch's schema inference."""
    sig = kernel.signature
    names = [a.name for a in sig.inputs] + [p.name for p in sig.params]
    if len(set(names)) != len(names):
        raise ValueError(f"kernel '{sig.name}': an input and a param share a name; cannot make an op of it")
    args = [f"{a.name}: torch.Tensor" for a in sig.inputs]
    args += [f"{p.name}: {_PARAM_TYPES[p.dtype]} = {p.default!r}" for p in sig.params]
    if len(sig.outputs) == 1:
        ret = "torch.Tensor"
    else:
        ret = "Tuple[" + ", ".join("torch.Tensor" for _ in sig.outputs) + "]"
    call_ins = ", ".join(f"{a.name}.contiguous()" for a in sig.inputs)
    call_ps = ", ".join(f"{p.name!r}: {p.name}" for p in sig.params)
    src = (
        f"def {sig.name}({', '.join(args)}) -> {ret}:\n"
        f"    return _run({call_ins}, params={{{call_ps}}})\n"
    )
    scope: Dict[str, Any] = {"torch": torch, "Tuple": __import__("typing").Tuple, "_run": kernel.run}
    exec(src, scope)  # noqa: S102 - the text is built from identifiers of a checked program
    fn = scope[sig.name]
    fn.__doc__ = sig.doc or None
    return fn


def _fake_fn(kernel: Kernel) -> Any:
    sig = kernel.signature
    dtypes = [getattr(torch, _TORCH_NAMES[o.dtype]) for o in sig.outputs]
    plan = kernel._plan  # each output dim: a fixed size or (input, axis)
    n = len(sig.inputs)

    def fake(*args: Any, **_params: Any) -> Any:
        ins = args[:n]
        outs: List[torch.Tensor] = []
        for j, p in enumerate(plan):
            shape = [d if isinstance(d, int) else ins[d[0]].shape[d[1]] for d in p]
            outs.append(ins[0].new_empty(shape, dtype=dtypes[j]))
        return outs[0] if len(outs) == 1 else tuple(outs)

    return fake


_TORCH_NAMES = {"f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64", "i32": "int32", "i64": "int64", "bool": "bool"}


def register(kernel: Kernel, name: Optional[str] = None) -> Any:
    """Registers ``kernel`` as the custom op ``name`` (``"namespace::op"``, default
    ``"tfmc::<kernel name>"``) and returns it (callable; also ``torch.ops.<namespace>.<op>``).
    Registering the same name again returns the op registered first if it wraps the same
    kernel, and raises ``ValueError`` otherwise."""
    name = name or f"tfmc::{kernel.name}"
    if "::" not in name:
        raise ValueError(f"op name '{name}' must be 'namespace::name'")
    if name in _registered:
        op, k = _registered[name]
        if k is kernel:
            return op
        raise ValueError(f"the op '{name}' is already registered (for another kernel); pick another name")
    op = torch.library.custom_op(name, _schema_fn(kernel), mutates_args=(), device_types="cpu")
    op.register_fake(_fake_fn(kernel))
    _registered[name] = (op, kernel)
    return op
