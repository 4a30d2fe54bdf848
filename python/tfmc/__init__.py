"""tfmc from Python: compile attention variants written in ``.tfm`` and call them on NumPy
arrays and torch tensors without copies.

    import tfmc
    attn = tfmc.compile("lib/window.tfm", kernel="window")   # JIT for this CPU (LLVM)
    O = attn(Q, K, V, W=64)                                   # NumPy in, NumPy out; torch in, torch out
    print(attn.signature)                                     # args, dtypes, symbolic dims, params
    lib = tfmc.load("libsdpa.so")                             # an artifact from `tfmc build`
    op = tfmc.torch.register(attn, "tfmc::window")           # a torch custom op (torch.compile, export)

Errors: ``CompileError`` (a rejected program: the rendered diagnostic and its span),
``KernelError`` (a kernel that ran and failed), ``ArtifactError`` (a file the runtime refuses),
``DeviceError`` (no usable GPU); a call with a missing, mistyped or misshapen argument raises
``TypeError`` / ``ValueError`` naming it. All of them but the last two derive from ``TfmcError``.

Intermediate buffers of 1 MiB or more are cached between calls (``TFMC_HEAP_CACHE_MB``,
default 1024; 0 turns the cache off); ``tfmc.heap_trim()`` frees them.
"""

from ._tfmc import ArtifactError, CompileError, DeviceError, KernelError, TfmcError
from ._tfmc import __version__, heap_trim
from ._kernel import Arg, Artifact, Kernel, Param, Signature, build, compile, load

__all__ = [
    "Arg",
    "Artifact",
    "ArtifactError",
    "CompileError",
    "DeviceError",
    "Kernel",
    "KernelError",
    "Param",
    "Signature",
    "TfmcError",
    "build",
    "compile",
    "heap_trim",
    "load",
    "torch",
]


def __getattr__(name: str):
    # `tfmc.torch` imports torch only when it is used.
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'tfmc' has no attribute '{name}'")
