"""Loading the releases' pickles without running their code.

AliceMind's PALM checkpoint is `torch.save({"model", "opt": argparse.Namespace, "optims": [Optimizer…]})`
and THUDM's Megatron files hold numpy RNG states: `torch.load(weights_only=True)` refuses both, and
`weights_only=False` would import and call whatever the pickle names. `safe_torch_load` unpickles with
an allow-list instead: tensors and their storages, numpy arrays, containers and `argparse.Namespace`
are built; any other global the pickle names becomes an inert `Placeholder` that records what it was
called with and runs nothing (so a `__reduce__` naming `os.system` yields a placeholder, not a shell).
"""

from __future__ import annotations

import argparse
import codecs
import collections
import pickle
import types
from pathlib import Path

import torch

from ..errors import CtxlmError


class Placeholder:
    """Stands for a class or function the allow-list does not build; keeps its name and arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder {self.qualified_name}>"


def _placeholder(module: str, name: str) -> type:
    return type(name, (Placeholder,), {"qualified_name": f"{module}.{name}", "__module__": "ctxlm.official.inert"})


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): codecs.encode,  # bytes under pickle protocol 2 (numpy arrays' raw data: RNG states)
    ("argparse", "Namespace"): argparse.Namespace,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
}
DTYPES = {name for name in dir(torch) if isinstance(getattr(torch, name, None), torch.dtype)}
NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


def _numpy(module: str, name: str):
    import numpy

    core = numpy._core if hasattr(numpy, "_core") else numpy.core  # numpy 2 deprecates numpy.core
    if name in ("_reconstruct", "scalar"):
        return getattr(core.multiarray, name)
    return getattr(numpy, name)


class SafeUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` whose globals come from the allow-list; anything else is a `Placeholder`."""

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and name in DTYPES:
            return getattr(torch, name)
        if (module, name) in NUMPY:
            return _numpy(module, name)
        if module.startswith("numpy") and name.endswith("DType"):  # numpy ≥ 1.25 dtype classes
            return _numpy("numpy", "dtype")
        return _placeholder(module, name)


safe_pickle_module = types.SimpleNamespace(
    Unpickler=SafeUnpickler, load=lambda f, **kw: SafeUnpickler(f, **kw).load(), __name__="ctxlm.official.safe_pickle"
)


def safe_torch_load(path: str | Path, *, mmap: bool = True):
    """`torch.load` of `path` on the CPU with the allow-list above; memory-mapped when the file is in
    torch's zip format (tensors are read from disk as they are used)."""
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", pickle_module=safe_pickle_module, weights_only=False, mmap=mmap)
    except RuntimeError as error:
        if mmap and "mmap" in str(error):  # the legacy (pre-zip) format cannot be memory-mapped
            return safe_torch_load(path, mmap=False)
        raise CtxlmError(f"{path}: cannot read ({str(error).splitlines()[0]})") from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise CtxlmError(f"{path}: cannot read ({error})") from None
