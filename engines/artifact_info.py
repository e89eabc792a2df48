"""What a model artifact describes (architecture, classes, size, normalisation), and
its checks, without torch: the server reads this to answer Infer and Predict, and a
worker loads the weights.

An artifact is a `torch.save` file (a zip whose `data.pkl` pickles a dict of builtins
and tensors; or, written with `_use_new_zipfile_serialization=False`, the same pickle
between a header and the tensors' data). `read_info` unpickles it with every global
replaced by an inert stand-in from a short allowlist (tensor rebuilders, storage types,
`OrderedDict`); anything else is refused, so a model file never runs code here either.
Tensor data is not read.
"""

from __future__ import annotations

import collections
import io
import math
import os
import pickle
import reprlib
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from engines.jobs import first_line

FORMAT = "tandem.model"
VERSION = 1

# data.pkl describes the tensors, it does not hold them: a few hundred bytes per tensor
# (about 100 KB for the largest torchvision model). The cap keeps a crafted file from
# filling the server's memory or keeping a thread busy for long.
MAX_PICKLE_BYTES = 4 * 1024 * 1024

# torch.serialization's marks: a zip's first bytes, and the legacy format's header.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

Triple = tuple[float, float, float]
T = TypeVar("T")


class ArtifactError(ValueError):
    """A file that is not a usable Tandem model artifact; the message reads as a sentence."""


@dataclass(frozen=True)
class ArtifactInfo:
    """An artifact's description: everything but its weights."""

    architecture: str
    classes: tuple[str, ...]
    image_size: int
    mean: Triple
    std: Triple
    epoch: int
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class ParsedArtifact:
    """A checked artifact dict: its description, and its tables as they were loaded."""

    info: ArtifactInfo
    state_dict: dict[str, Any]
    optimizer_state: dict[str, Any] | None


def check_file(path: str) -> None:
    """Raises ArtifactError unless `path` is an existing file."""
    if os.path.isdir(path):
        raise ArtifactError(f"model file {path} is a folder, not a file")
    if not os.path.exists(path):
        raise ArtifactError(f"model file {path} does not exist")


def unreadable(path: str, exc: BaseException) -> ArtifactError:
    """The one sentence for a file that cannot be unpickled, whatever the reason."""
    return ArtifactError(
        f"cannot load model file {path}: it is corrupt, not a PyTorch file, or holds "
        f"code rather than weights ({type(exc).__name__}: {first_line(exc)})"
    )


def _triple(raw: Any, name: str, path: str) -> Triple:
    if (
        not isinstance(raw, (list, tuple))
        or len(raw) != 3
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in raw)
    ):
        raise ArtifactError(f"model file {path} has an invalid {name}: expected 3 numbers")
    return (float(raw[0]), float(raw[1]), float(raw[2]))


def _damaged(path: str, what: str) -> ArtifactError:
    return ArtifactError(f"model file {path} is damaged: {what}")


def _field(raw: dict[Any, Any], key: str, kind: type[T], path: str) -> T:
    value = raw.get(key)
    if not isinstance(value, kind):
        raise _damaged(path, f"{key} is missing or not a {kind.__name__}")
    return value


def parse(raw: object, path: str, is_tensor: Callable[[object], bool]) -> ParsedArtifact:
    """Checks an unpickled artifact dict; `is_tensor` says what counts as a tensor
    (a real one in a worker, a stand-in in `read_info`)."""
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ArtifactError(
            f"{path} is not a Tandem model file (a bare state_dict or another tool's "
            "checkpoint cannot be used: it does not say which model and classes it is for)"
        )
    version = raw.get("version")
    if version != VERSION:
        raise ArtifactError(
            f"model file {path} has format version {reprlib.repr(version)}; "
            f"this Tandem reads version {VERSION}"
        )
    classes = _field(raw, "classes", list, path)
    if not classes or not all(isinstance(name, str) for name in classes):
        raise _damaged(path, "classes is not a list of names")
    image_size = _field(raw, "image_size", int, path)
    if image_size < 1:
        raise _damaged(path, f"image_size {image_size} is not a size")
    metrics = _field(raw, "metrics", dict, path)
    if not all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in metrics.items()):
        raise _damaged(path, "metrics is not a table of numbers")
    state_dict = _field(raw, "state_dict", dict, path)
    if not all(isinstance(k, str) and is_tensor(v) for k, v in state_dict.items()):
        raise _damaged(path, "state_dict is not a table of tensors")
    optimizer_state = raw.get("optimizer_state")
    if optimizer_state is not None and not isinstance(optimizer_state, dict):
        raise _damaged(path, "optimizer_state is not a table")
    info = ArtifactInfo(
        architecture=_field(raw, "architecture", str, path),
        classes=tuple(classes),
        image_size=image_size,
        mean=_triple(raw.get("mean"), "mean", path),
        std=_triple(raw.get("std"), "std", path),
        epoch=_field(raw, "epoch", int, path),
        metrics={key: float(value) for key, value in metrics.items()},
    )
    return ParsedArtifact(info, state_dict, optimizer_state)


class _Tensor:
    """Where a tensor was: its data stays in the zip, unread."""

    __slots__ = ()


class _StorageType:
    """A storage class named in a tensor's persistent id (`torch.FloatStorage`)."""

    __slots__ = ()


_TENSOR = _Tensor()
_STORAGE_TYPE = _StorageType()


def _rebuild_tensor(*_args: object) -> _Tensor:
    return _TENSOR


# Opcodes a torch.save header never needs: sets and text-protocol memo indices are the
# only ways, besides dict keys, to make the unpickler hash values chosen by the file.
_REFUSED_OPCODES = tuple(
    op[0] for op in (pickle.EMPTY_SET, pickle.ADDITEMS, pickle.FROZENSET, pickle.PUT, pickle.GET)
)
# Dict keys a torch.save header holds: names, and small ints (an optimizer's parameter
# indices). Both hash without collisions that a file could arrange (str hashes are
# salted per process; distinct ints below 2**60 hash apart), so no dict it builds can
# be made to take quadratic time.
_MAX_INT_KEY = 2**60


def _check_keys(keys: list[Any]) -> None:
    for key in keys:
        if type(key) is str or (type(key) is int and -_MAX_INT_KEY < key < _MAX_INT_KEY):
            continue
        raise pickle.UnpicklingError(
            f"a model file's tables are keyed by names or small numbers, not {reprlib.repr(key)}"
        )


def _refused(unpickler: Any) -> None:
    raise pickle.UnpicklingError("a model file holds no sets and no text-protocol memo")


_BASE_DISPATCH: dict[int, Callable[[Any], None]] = pickle._Unpickler.dispatch


def _keys_checked(opcode: bytes, keys: Callable[[list[Any]], list[Any]]) -> Callable[[Any], None]:
    """The base unpickler's handling of `opcode`, once the keys it will insert pass."""
    base = _BASE_DISPATCH[opcode[0]]

    def load(unpickler: Any) -> None:
        _check_keys(keys(unpickler.stack))
        base(unpickler)

    return load


class _HeaderUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, so that reading a file in a thread never holds the GIL
    for long (the C one runs a whole opcode, however big, without letting go), with
    every dict's keys checked and the opcodes a header never needs refused."""

    dispatch = {
        **_BASE_DISPATCH,
        # The stack holds the items since the last mark (SETITEMS, DICT: key, value, ...).
        pickle.SETITEM[0]: _keys_checked(pickle.SETITEM, lambda stack: [stack[-2]]),
        pickle.SETITEMS[0]: _keys_checked(pickle.SETITEMS, lambda stack: stack[0::2]),
        pickle.DICT[0]: _keys_checked(pickle.DICT, lambda stack: stack[0::2]),
        **dict.fromkeys(_REFUSED_OPCODES, _refused),
    }

    # The only globals a torch.save of tensors and builtins names, each answered with an
    # inert stand-in (torch is never imported). Names, not modules: `torch._utils` holds
    # a family of `_rebuild_*` functions that grows between torch versions.
    def find_class(self, module: str, name: str) -> Any:
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name.startswith("_rebuild_"):
            return _rebuild_tensor
        if module in ("torch", "torch.storage") and name.endswith("Storage"):
            return _STORAGE_TYPE
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a model file")

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage type, key, location, size): where the data is; never read.
        if isinstance(pid, tuple) and pid and pid[0] == "storage":
            return None
        raise pickle.UnpicklingError("a model file names only storages by persistent id")


def _zip_pickle(path: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        # torch.save writes `<name>/data.pkl` beside `<name>/data/<key>` records.
        names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(names) != 1:
            raise pickle.UnpicklingError("the zip holds no single data.pkl record")
        with archive.open(names[0]) as record:
            data = record.read(MAX_PICKLE_BYTES + 1)
    if len(data) > MAX_PICKLE_BYTES:
        raise pickle.UnpicklingError(f"data.pkl is over {MAX_PICKLE_BYTES} bytes")
    return data


def _load_raw(path: str) -> object:
    with open(path, "rb") as file:
        if file.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC:
            return _HeaderUnpickler(io.BytesIO(_zip_pickle(path))).load()
        file.seek(0)
        head = file.read(MAX_PICKLE_BYTES)
    # The legacy format: pickles of the magic number, the protocol and the system's
    # sizes, then the object; the tensors' data follows and is not read.
    stream = io.BytesIO(head)
    if _HeaderUnpickler(stream).load() != _LEGACY_MAGIC:
        raise pickle.UnpicklingError("not a PyTorch file (no magic number)")
    if _HeaderUnpickler(stream).load() != _LEGACY_PROTOCOL:
        raise pickle.UnpicklingError("an unknown PyTorch file protocol")
    _HeaderUnpickler(stream).load()
    return _HeaderUnpickler(stream).load()


def read_info(path: str) -> ArtifactInfo:
    """The description of the artifact at `path`, checked as a worker would check it
    (without loading tensors, so weights that do not fit show only in the worker).

    Raises ArtifactError for a missing, corrupt or foreign file, and for any file that
    would need to import or run code to load.
    """
    check_file(path)
    try:
        raw = _load_raw(path)
        return parse(raw, path, lambda value: isinstance(value, _Tensor)).info
    except ArtifactError:
        raise
    except Exception as exc:  # numbers too big to convert, nesting too deep, ...
        raise unreadable(path, exc) from None
