"""Kernels, artifacts and signatures: the Python half of a call.

A call never copies a contiguous input of the right dtype: the kernel reads the caller's
NumPy array or torch tensor through its data pointer, and writes outputs that are allocated
once here (``numpy.empty`` / ``torch.empty``) and returned as they are. Everything the
native module is given is checked again there against the kernel's manifest (dtypes, ranks,
dims, alignment, overlap), so a wrong description is an exception, never a bad memory access.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np

from . import _tfmc

#: NumPy dtype of each tfmc dtype (bf16 only where a NumPy bfloat16 type, ml_dtypes', exists).
_NUMPY = {
    "f16": np.dtype(np.float16),
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "i32": np.dtype(np.int32),
    "i64": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
}
try:  # pragma: no cover - optional
    import ml_dtypes  # type: ignore

    _NUMPY["bf16"] = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    pass

_TORCH: Optional[Dict[str, Any]] = None


def _torch_dtypes() -> Dict[str, Any]:
    global _TORCH
    if _TORCH is None:
        import torch

        _TORCH = {
            "f16": torch.float16,
            "bf16": torch.bfloat16,
            "f32": torch.float32,
            "f64": torch.float64,
            "i32": torch.int32,
            "i64": torch.int64,
            "bool": torch.bool,
        }
    return _TORCH


@dataclass(frozen=True)
class Arg:
    """A tensor argument or output: its name, tfmc dtype (``f32``, ``bf16``, ...) and shape,
    each dimension a symbolic name (``"P"``) or a fixed size."""

    name: str
    dtype: str
    shape: Tuple[Union[str, int], ...]

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype}[{', '.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class Param:
    """A run-time param: its name, dtype and default (the value fixed at compile time, if any)."""

    name: str
    dtype: str
    default: Union[bool, int, float]

    def __str__(self) -> str:
        return f"{self.name}: {self.dtype} = {self.default!r}"


@dataclass(frozen=True)
class Signature:
    """What a kernel takes and returns, from its manifest."""

    name: str
    inputs: Tuple[Arg, ...]
    outputs: Tuple[Arg, ...]
    dims: Tuple[str, ...]
    params: Tuple[Param, ...]
    doc: str

    def __str__(self) -> str:
        ins = ", ".join(str(a) for a in self.inputs)
        outs = ", ".join(str(a) for a in self.outputs)
        ps = "".join(f"\n    param {p}" for p in self.params)
        return f"kernel {self.name}({ins}) -> ({outs}){ps}"


def _signature(m: Mapping[str, Any]) -> Signature:
    def arg(a: Mapping[str, Any]) -> Arg:
        return Arg(a["name"], a["dtype"], tuple(a["shape"]))

    return Signature(
        name=m["name"],
        inputs=tuple(arg(a) for a in m["inputs"]),
        outputs=tuple(arg(a) for a in m["outputs"]),
        dims=tuple(m["dims"]),
        params=tuple(Param(p["name"], p["dtype"], p["default"]) for p in m["params"]),
        doc=m.get("doc", ""),
    )


class Kernel:
    """A compiled kernel. Call it with its inputs in order and its params by keyword:
    ``O = kernel(Q, K, V, W=64)``. NumPy arrays in give NumPy arrays out; torch tensors in give
    torch tensors out (CPU). One output is returned as is, several as a tuple in declaration
    order. Inputs must be C-contiguous and of the kernel's exact dtypes (else ``TypeError`` /
    ``ValueError`` naming the argument); ``kernel.run(..., convert=True)`` converts instead."""

    __slots__ = (
        "_lib",
        "_index",
        "_names",
        "_out_dtypes",
        "_np_in",
        "_np_out",
        "_ranks",
        "_plan",
        "_nin",
        "_single",
        "_torch_in",
        "_torch_out",
        "signature",
        "name",
        "__weakref__",
    )

    def __init__(self, lib: "_tfmc.Library", index: int) -> None:
        m = json.loads(lib.kernel_manifest(index))
        self._lib = lib
        self._index = index
        self.signature = sig = _signature(m)
        self.name = sig.name
        self._names = tuple(a.name for a in sig.inputs)
        self._nin = len(sig.inputs)
        self._ranks = tuple(len(a.shape) for a in sig.inputs)
        self._np_in = tuple(_NUMPY.get(a.dtype) for a in sig.inputs)
        self._np_out = tuple(_NUMPY.get(a.dtype) for a in sig.outputs)
        self._out_dtypes = tuple(a.dtype for a in sig.outputs)
        self._single = len(sig.outputs) == 1
        self._torch_in = None
        self._torch_out = None
        # Each output dim: a fixed size, or (input, axis) of the first input that has it.
        where: Dict[str, Tuple[int, int]] = {}
        for i, a in enumerate(sig.inputs):
            for ax, d in enumerate(a.shape):
                if isinstance(d, str):
                    where.setdefault(d, (i, ax))
        plan = []
        for a in sig.outputs:
            dims = []
            for d in a.shape:
                if isinstance(d, str):
                    if d not in where:
                        raise _tfmc.TfmcError(f"kernel '{sig.name}': output '{a.name}' has dim '{d}' that no input gives")
                    dims.append(where[d])
                else:
                    dims.append(int(d))
            plan.append(tuple(dims))
        self._plan = tuple(plan)

    def __repr__(self) -> str:
        return f"<tfmc.Kernel {self.signature} ({self._lib.backend})>"

    @property
    def backend(self) -> str:
        """``llvm``, ``cranelift`` or ``cuda`` (compiled here), ``artifact`` or ``cuda-artifact``
        (loaded)."""
        return self._lib.backend

    @property
    def manifest(self) -> Dict[str, Any]:
        """The kernel's manifest entry (arguments, dims, params, failure sites)."""
        return json.loads(self._lib.kernel_manifest(self._index))

    def explain(self, dims: Optional[Mapping[str, int]] = None, **params: Any) -> str:
        """What ``tfmc explain`` prints: the cascade as written and as optimized, the rules
        that fired, work estimates at ``dims`` (default sizes elsewhere) and the CPU schedule.
        Only for kernels compiled from source (an artifact has no source)."""
        return self._lib.explain(self.name, dict(dims) if dims else None, params or None)

    def __call__(self, *tensors: Any, **params: Any) -> Any:
        return self._call(tensors, params, False)

    def run(self, *tensors: Any, params: Optional[Mapping[str, Any]] = None, convert: bool = False) -> Any:
        """Like calling the kernel; with ``convert=True``, inputs of another dtype, non-contiguous
        ones and other array-likes are converted (copied) instead of refused."""
        return self._call(tensors, dict(params) if params else {}, convert)

    # -- the call ----------------------------------------------------------------------------

    def _missing(self, n: int) -> TypeError:
        names = ", ".join(self._names)
        if n < self._nin:
            gone = ", ".join(f"'{x}'" for x in self._names[n:])
            return TypeError(f"kernel '{self.name}' takes {self._nin} inputs ({names}); missing {gone}")
        return TypeError(f"kernel '{self.name}' takes {self._nin} inputs ({names}), got {n}")

    def _call(self, tensors: Tuple[Any, ...], params: Dict[str, Any], convert: bool) -> Any:
        if len(tensors) != self._nin:
            raise self._missing(len(tensors))
        torch = sys.modules.get("torch")
        if torch is not None and self._nin and isinstance(tensors[0], torch.Tensor):
            return self._call_torch(torch, tensors, params, convert)
        return self._call_numpy(tensors, params, convert)

    def _bad(self, i: int, what: str) -> str:
        return f"input '{self._names[i]}' of kernel '{self.name}' {what}"

    def _call_numpy(self, tensors: Tuple[Any, ...], params: Dict[str, Any], convert: bool) -> Any:
        held = []  # converted arrays, alive for the call
        descs = []
        shapes = []
        ndarray = np.ndarray
        for i, a in enumerate(tensors):
            want = self._np_in[i]
            if want is None:
                raise TypeError(self._bad(i, f"is {self.signature.inputs[i].dtype}, which NumPy has no type for; pass torch tensors"))
            if type(a) is not ndarray:
                if not convert:
                    if not isinstance(a, ndarray):
                        raise TypeError(self._bad(i, f"must be a NumPy array or a torch tensor, got {type(a).__name__}"))
                else:
                    a = np.asarray(a)
            if a.dtype is not want and a.dtype != want:
                if not convert:
                    raise TypeError(
                        self._bad(i, f"must be {self.signature.inputs[i].dtype} (numpy.{want.name}), got {a.dtype}; "
                                  f"convert it with .astype(numpy.{want.name}) or call kernel.run(..., convert=True)")
                    )
                a = a.astype(want)
            if not a.flags.c_contiguous:
                if not convert:
                    raise ValueError(
                        self._bad(i, "is not C-contiguous (a view with strides); pass numpy.ascontiguousarray(x) "
                                  "or call kernel.run(..., convert=True)")
                    )
                a = np.ascontiguousarray(a)
            shape = a.shape
            if len(shape) != self._ranks[i]:
                raise ValueError(self._bad(i, f"must have type {self.signature.inputs[i]}, got a rank-{len(shape)} array of shape {shape}"))
            held.append(a)
            shapes.append(shape)
            descs.append((a.ctypes.data, shape, self.signature.inputs[i].dtype))
        outs = []
        odescs = []
        for j, plan in enumerate(self._plan):
            shape = tuple(d if d.__class__ is int else shapes[d[0]][d[1]] for d in plan)
            dt = self._np_out[j]
            if dt is None:
                raise TypeError(f"output '{self.signature.outputs[j].name}' of kernel '{self.name}' is "
                                f"{self._out_dtypes[j]}, which NumPy has no type for; pass torch tensors")
            o = np.empty(shape, dt)
            outs.append(o)
            odescs.append((o.ctypes.data, shape, self._out_dtypes[j]))
        self._lib.call(self._index, descs, odescs, params)
        return outs[0] if self._single else tuple(outs)

    def _call_torch(self, torch: Any, tensors: Tuple[Any, ...], params: Dict[str, Any], convert: bool) -> Any:
        if self._torch_in is None:
            t = _torch_dtypes()
            self._torch_in = tuple(t[a.dtype] for a in self.signature.inputs)
            self._torch_out = tuple(t[a.dtype] for a in self.signature.outputs)
        held = []
        descs = []
        shapes = []
        Tensor = torch.Tensor
        for i, a in enumerate(tensors):
            if not isinstance(a, Tensor):
                if not convert:
                    raise TypeError(self._bad(i, f"must be a torch tensor like the first input, got {type(a).__name__}"))
                a = torch.as_tensor(a)
            if a.device.type != "cpu":
                if not convert:
                    raise ValueError(self._bad(i, f"is on {a.device}; tfmc kernels take CPU tensors (the cuda backend copies them to the GPU)"))
                a = a.cpu()
            want = self._torch_in[i]
            if a.dtype is not want:
                if not convert:
                    raise TypeError(
                        self._bad(i, f"must be {self.signature.inputs[i].dtype} ({want}), got {a.dtype}; "
                                  f"convert it with .to({want}) or call kernel.run(..., convert=True)")
                    )
                a = a.to(want)
            if not a.is_contiguous():
                if not convert:
                    raise ValueError(self._bad(i, "is not contiguous; pass x.contiguous() or call kernel.run(..., convert=True)"))
                a = a.contiguous()
            shape = tuple(a.shape)
            if len(shape) != self._ranks[i]:
                raise ValueError(self._bad(i, f"must have type {self.signature.inputs[i]}, got a rank-{len(shape)} tensor of shape {shape}"))
            held.append(a)
            shapes.append(shape)
            descs.append((a.data_ptr(), shape, self.signature.inputs[i].dtype))
        outs = []
        odescs = []
        for j, plan in enumerate(self._plan):
            shape = tuple(d if d.__class__ is int else shapes[d[0]][d[1]] for d in plan)
            o = torch.empty(shape, dtype=self._torch_out[j])
            outs.append(o)
            odescs.append((o.data_ptr(), shape, self._out_dtypes[j]))
        self._lib.call(self._index, descs, odescs, params)
        return outs[0] if self._single else tuple(outs)


class Artifact:
    """Kernels loaded from an artifact (``tfmc.load``) or compiled together (``tfmc.compile``
    of several kernels). ``artifact.kernels`` lists them; ``artifact["sdpa"]`` or
    ``artifact.sdpa`` is one."""

    def __init__(self, lib: "_tfmc.Library") -> None:
        self._lib = lib
        self._kernels = {name: Kernel(lib, i) for i, name in enumerate(lib.kernels)}

    @property
    def kernels(self) -> Dict[str, Kernel]:
        """The kernels by name, in manifest order."""
        return dict(self._kernels)

    @property
    def path(self) -> Optional[str]:
        """The file it was loaded from."""
        return self._lib.path

    @property
    def manifest(self) -> Dict[str, Any]:
        """The artifact's manifest: format version, compiler version, target, kernels."""
        return json.loads(self._lib.manifest)

    def __getitem__(self, name: str) -> Kernel:
        try:
            return self._kernels[name]
        except KeyError:
            raise KeyError(f"no kernel '{name}'; the artifact has: {', '.join(self._kernels)}") from None

    def __getattr__(self, name: str) -> Kernel:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._kernels[name]
        except KeyError:
            raise AttributeError(f"no kernel '{name}'; the artifact has: {', '.join(self._kernels)}") from None

    def __iter__(self):
        return iter(self._kernels.values())

    def __len__(self) -> int:
        return len(self._kernels)

    def __repr__(self) -> str:
        return f"<tfmc.Artifact {self.path or '(in memory)'}: {', '.join(self._kernels)}>"


def _source(path_or_source: Union[str, "os.PathLike[str]"]) -> Tuple[str, bool]:
    """(text or path, is_path): a path-like object, or a string naming an existing file or
    ending in ``.tfm`` without a newline, is a path; any other string is source text."""
    if isinstance(path_or_source, os.PathLike):
        return os.fspath(path_or_source), True
    if not isinstance(path_or_source, str):
        raise TypeError(f"expected a path or .tfm source text, got {type(path_or_source).__name__}")
    s = path_or_source
    if "\n" not in s and (s.endswith(".tfm") or os.path.isfile(s)):
        return s, True
    return s, False


def _backend(backend: str) -> str:
    if backend not in ("llvm", "cranelift", "cuda"):
        raise ValueError(f"unknown backend '{backend}'; backends: llvm, cranelift, cuda")
    return backend


def compile(
    path_or_source: Union[str, "os.PathLike[str]"],
    kernel: Optional[str] = None,
    backend: str = "llvm",
    params: Optional[Mapping[str, Any]] = None,
    sm: Optional[int] = None,
) -> Kernel:
    """Compiles one kernel of a ``.tfm`` program (a path, or the source text itself) in this
    process and returns it ready to call. ``kernel`` may be left out when the program has one.
    ``backend``: ``"llvm"`` (optimized machine code for this CPU, JIT), ``"cranelift"``
    (compiles in milliseconds, slower code) or ``"cuda"`` (PTX for ``sm_{sm}``, run on CUDA
    device 0; inputs are copied to the GPU and back). ``params`` fix param values at compile
    time (they become the defaults; keyword params of a call still override them). A rejected
    program raises ``CompileError`` with the diagnostic."""
    text, is_path = _source(path_or_source)
    lib = _tfmc.compile(text, is_path, kernel, _backend(backend), dict(params) if params else None, sm)
    return Kernel(lib, 0)


def load(path: Union[str, "os.PathLike[str]"]) -> Artifact:
    """Opens an artifact built by ``tfmc build`` (or ``tfmc.build``): a CPU shared library, or a
    ``.ptx`` artifact run on CUDA device 0. The runtime checks the file first (checksum,
    manifest version, CPU features); a bad one raises ``ArtifactError``."""
    return Artifact(_tfmc.load(os.fspath(path)))


def build(
    path_or_source: Union[str, "os.PathLike[str]"],
    out: Union[str, "os.PathLike[str]"],
    backend: str = "llvm",
    params: Optional[Mapping[str, Any]] = None,
    sm: Optional[int] = None,
) -> Tuple[str, ...]:
    """Builds every kernel of a program into an artifact at ``out`` (``tfmc build``): a shared
    library plus its C header for ``"llvm"``, PTX for ``"cuda"``. Returns the kernel names."""
    text, is_path = _source(path_or_source)
    if backend not in ("llvm", "cuda"):
        raise ValueError(f"backend '{backend}' builds no artifact; use llvm or cuda")
    return tuple(_tfmc.build(text, is_path, os.fspath(out), backend, dict(params) if params else None, sm))
