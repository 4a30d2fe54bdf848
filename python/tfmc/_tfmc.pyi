"""Type stubs of the native module ``tfmc._tfmc`` (PyO3). Use the ``tfmc`` package's API."""

from typing import Dict, List, Optional, Sequence, Tuple, Union

__version__: str

class TfmcError(Exception): ...

class CompileError(TfmcError):
    text: str
    message: Optional[str]
    file: Optional[str]
    line: Optional[int]
    column: Optional[int]
    span: Optional[Tuple[int, int]]

class KernelError(TfmcError): ...
class ArtifactError(TfmcError): ...
class DeviceError(TfmcError): ...

_Desc = Tuple[int, Sequence[int], str]
_Scalar = Union[bool, int, float]

class Library:
    @property
    def kernels(self) -> List[str]: ...
    @property
    def manifest(self) -> str: ...
    @property
    def backend(self) -> str: ...
    @property
    def path(self) -> Optional[str]: ...
    def kernel_manifest(self, index: int) -> str: ...
    def call(self, index: int, inputs: Sequence[_Desc], outputs: Sequence[_Desc], params: Optional[Dict[str, _Scalar]] = None) -> None: ...
    def explain(self, name: str, dims: Optional[Dict[str, int]] = None, params: Optional[Dict[str, _Scalar]] = None) -> str: ...

def compile(
    source: str,
    is_path: bool,
    kernel: Optional[str] = None,
    backend: str = "llvm",
    params: Optional[Dict[str, _Scalar]] = None,
    sm: Optional[int] = None,
) -> Library: ...
def load(path: str) -> Library: ...
def heap_trim() -> None: ...
def build(
    source: str,
    is_path: bool,
    out: str,
    backend: str = "llvm",
    params: Optional[Dict[str, _Scalar]] = None,
    sm: Optional[int] = None,
) -> List[str]: ...
