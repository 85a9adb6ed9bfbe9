"""PyTorch checkpoint files (``torch.save``'s zip format) read and written without torch.

A ``.pth`` / ``.torch`` file is a zip archive: ``<root>/data.pkl`` pickles the object, and every
tensor's storage is a separate entry ``<root>/data/<key>`` of raw little-endian bytes. The pickle
names a storage by a persistent id ``("storage", <dtype class>, key, location, numel)`` and builds
each tensor with ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``.

``load`` turns such a file into nested dicts and lists of numpy arrays, refusing every other
global (the same allow-list idea as ``torch.load(weights_only=True)``), so TPU VMs and CI import
PyTorch checkpoints with no torch installed. ``save`` writes a dict of numpy arrays that
``torch.load`` reads back as tensors (tests/test_weights.py checks both directions against torch
where it is installed, and against files torch wrote, stored as fixtures, where it is not).
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from ssl_jax import paths

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_NAME_OF_DTYPE = {np.dtype(v): k for k, v in _STORAGE_DTYPES.items()}


class TorchFileError(ValueError):
    """The file is not a PyTorch checkpoint this reader understands."""


class _Storage:
    def __init__(self, dtype_name: str, data: bytes):
        if dtype_name not in _STORAGE_DTYPES:
            raise TorchFileError(f"unsupported tensor storage type {dtype_name!r}")
        self.array = np.frombuffer(
            data, dtype=np.dtype(_STORAGE_DTYPES[dtype_name]).newbyteorder("<")
        )


class _StorageType:
    def __init__(self, name: str):
        self.name = name


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *unused) -> np.ndarray:
    del unused  # requires_grad, backward hooks, metadata
    flat = storage.array
    itemsize = flat.dtype.itemsize
    if not size:
        return np.array(flat[offset], dtype=flat.dtype.newbyteorder("="))
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view, dtype=flat.dtype.newbyteorder("="))


def _rebuild_parameter(data: np.ndarray, *unused) -> np.ndarray:
    del unused
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, root: str):
        super().__init__(file, encoding="latin1")
        self.archive, self.root, self.storages = archive, root, {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise TorchFileError(
            f"it holds a {module}.{name} object; only tensors, numbers, strings and containers "
            "are read (a checkpoint of weights, not a pickled model)"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise TorchFileError(f"unexpected persistent id {pid!r}")
        storage_type, key = pid[1], str(pid[2])
        if key not in self.storages:
            entry = f"{self.root}/data/{key}"
            try:
                data = self.archive.read(entry)
            except KeyError:
                raise TorchFileError(f"the archive has no entry {entry}") from None
            self.storages[key] = _Storage(storage_type.name, data)
        return self.storages[key]


def load(path: str) -> Any:
    """The object saved in a ``torch.save`` zip file, its tensors as numpy arrays.

    Raises:
      TorchFileError: not a zip file of torch's format (a legacy pre-1.6 file, say), a truncated
        archive, or a pickle that needs other classes.
    """
    raw = paths.read_bytes(path)
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
        names = archive.namelist()
    except zipfile.BadZipFile as e:
        raise TorchFileError(
            f"{path} is not a PyTorch zip checkpoint ({e}); save it with torch.save from "
            "torch >= 1.6, or check the file is complete"
        ) from None
    pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
    if len(pickles) != 1:
        raise TorchFileError(f"{path} has no single data.pkl entry (entries: {names[:5]}...)")
    root = pickles[0][: -len("/data.pkl")] if "/" in pickles[0] else ""
    try:
        with archive.open(pickles[0]) as f:
            return _Unpickler(io.BytesIO(f.read()), archive, root).load()
    except TorchFileError as e:
        raise TorchFileError(f"{path}: {e}") from None
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise TorchFileError(f"{path} is damaged ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------
# Writing


class _Global:
    """A reference to a global by name, pickled as GLOBAL without importing its module."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle's save_reduce wants a callable; never called
        raise NotImplementedError


class _Tensor:
    def __init__(self, key: str, array: np.ndarray):
        self.key, self.array = key, array


class _Pickler(pickle._Pickler):  # the Python pickler: its save_global can be replaced
    dispatch = dict(pickle._Pickler.dispatch)

    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, _Tensor):
            storage = _Global("torch", _NAME_OF_DTYPE[obj.array.dtype])
            return ("storage", storage, obj.key, "cpu", obj.array.size)
        return None

    def save_global_ref(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_Global] = save_global_ref

    def save_tensor(self, obj: _TensorRef) -> None:
        # _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks)
        array = obj.tensor.array
        strides = tuple(s // array.itemsize for s in array.strides)
        self.save_reduce(
            _Global("torch._utils", "_rebuild_tensor_v2"),
            (obj.tensor, 0, tuple(array.shape), strides, False, collections.OrderedDict()),
            obj=obj,
        )

    def save_ordered_dict(self, obj: collections.OrderedDict) -> None:
        self.save_reduce(
            _Global("collections", "OrderedDict"), (), obj=obj, dictitems=iter(obj.items())
        )


class _TensorRef:
    def __init__(self, tensor: _Tensor):
        self.tensor = tensor


_Pickler.dispatch[_TensorRef] = _Pickler.save_tensor
_Pickler.dispatch[collections.OrderedDict] = _Pickler.save_ordered_dict


def save(state: Mapping[str, np.ndarray], path: str, root: str = "archive") -> None:
    """Writes ``{name: array}`` as a PyTorch state dict file (``torch.load`` gives tensors).

    Arrays are stored contiguous, in their own dtype (float32, int64, ...), on the CPU.
    """
    objects = collections.OrderedDict()
    tensors = []
    for i, (name, value) in enumerate(state.items()):
        array = np.ascontiguousarray(value)
        if array.dtype not in _NAME_OF_DTYPE:
            raise TypeError(f"{name}: dtype {array.dtype} has no PyTorch storage type")
        tensor = _Tensor(str(i), array.astype(array.dtype.newbyteorder("<"), copy=False))
        tensors.append(tensor)
        objects[name] = _TensorRef(tensor)
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=2).dump(objects)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{root}/data.pkl", buffer.getvalue())
        archive.writestr(f"{root}/byteorder", "little")
        for tensor in tensors:
            archive.writestr(f"{root}/data/{tensor.key}", tensor.array.tobytes())
        archive.writestr(f"{root}/version", "3\n")
    paths.write_bytes(path, out.getvalue())
