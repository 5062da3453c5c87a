"""Reading and writing checkpoint files: the only place that calls torch.save / torch.load.

Writing refuses anything `torch.load(weights_only=True)` could not read
back (only None, bool, int, float, str, list, dict with str keys and
tensors), stamps a header (format, schema version, versions, time) and
writes atomically. Reading uses `weights_only=True` only, checks the format
and upgrades old schema versions through the migration chain.

Reading memory-maps the tensor data (`mmap=True`) instead of copying it:
the tensors are private copy-on-write mappings, so writing to them never
changes the file, and the file's pages are read when first touched. Our
writers replace a checkpoint with a new file (atomic rename), which leaves
tensors mapped from the old one intact; overwriting a loaded file in place
(truncating it, e.g. a plain `torch.save` to the same path) would not.
"""

from __future__ import annotations

import os
import pickle
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

import esper
from esper.checkpoints.atomic import atomic_torch_save
from esper.checkpoints.errors import ROOT_LABEL, CheckpointError, join_path
from esper.checkpoints.migrations import VERSION_KEY, current_version, migrate

FORMAT_KEY = "format"
# Keys save_checkpoint adds at the top level; payloads may not use them.
HEADER_TYPES: dict[str, type] = {
    FORMAT_KEY: str,
    VERSION_KEY: int,
    "esper_version": str,
    "torch_version": str,
    "created_at": str,
}
HEADER_KEYS = frozenset(HEADER_TYPES)

_PRIMITIVES = (type(None), bool, int, float, str)
_TENSOR_TYPES = (torch.Tensor, torch.nn.Parameter)
_ALLOWED_WORDING = "None, bool, int, float, str, list, dict with str keys or torch.Tensor"

_UNPICKLER_MARKER = "WeightsUnpickler error:"
_ZIP_MAGIC = b"PK\x03\x04"
# What torch.load raises for files it cannot read (C++ reader errors arrive as RuntimeError).
_LOAD_ERRORS = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    ValueError,
    OSError,
    AssertionError,
    KeyError,
    TypeError,
    AttributeError,
    ImportError,
)


def check_primitive_tree(value: object, where: str = "") -> None:
    """Raise CheckpointError at the first value `torch.load(weights_only=True)` could not read back."""
    _check(value, (where,), set())


# The path is kept as parts and joined only for an error: a checkpoint has hundreds of values.
def _check(value: object, parts: tuple[str | int, ...], on_path: set[int]) -> None:
    kind = type(value)
    if kind in _PRIMITIVES or kind in _TENSOR_TYPES:
        return
    if kind is dict:
        _enter(value, parts, on_path)
        for key, item in value.items():  # type: ignore[attr-defined]  # `kind is dict` is not narrowed
            # int keys appear in optimizer state_dicts (parameter indices); both load under weights_only.
            if type(key) not in (str, int):
                raise CheckpointError.at(
                    join_path(*parts, repr(key)), f"dict key: expected str or int, got {type(key).__name__}"
                )
            _check(item, (*parts, str(key)), on_path)
        on_path.discard(id(value))
        return
    if kind is list:
        _enter(value, parts, on_path)
        for index, item in enumerate(value):  # type: ignore[arg-type]  # `kind is list` is not narrowed
            _check(item, (*parts, index), on_path)
        on_path.discard(id(value))
        return
    hint = " (use a list)" if kind is tuple else ""
    raise CheckpointError.at(join_path(*parts), f"expected {_ALLOWED_WORDING}, got {kind.__qualname__}{hint}")


def _enter(container: object, parts: tuple[str | int, ...], on_path: set[int]) -> None:
    if id(container) in on_path:
        raise CheckpointError.at(join_path(*parts), "container contains itself (reference cycle)")
    on_path.add(id(container))


def _header(format: str, schema_version: int) -> dict[str, Any]:
    return {
        FORMAT_KEY: format,
        VERSION_KEY: schema_version,
        "esper_version": str(esper.__version__),
        "torch_version": str(torch.__version__),  # TorchVersion is a str subclass: plain str pickles safely
        "created_at": datetime.now(UTC).isoformat(),
    }


def save_checkpoint(
    payload: dict[str, Any], path: str | os.PathLike[str], *, format: str, schema_version: int
) -> None:
    """Write `payload` plus a header to `path` atomically; refuse anything not weights_only-loadable."""
    if type(payload) is not dict:
        raise TypeError(f"payload must be a dict, got {type(payload).__name__}")
    if type(format) is not str or not format:
        raise ValueError(f"format must be a non-empty str, got {format!r}")
    if type(schema_version) is not int:
        raise TypeError(f"schema_version must be int, got {type(schema_version).__name__}")
    expected_version = current_version(format)
    if schema_version != expected_version:
        raise ValueError(
            f"schema_version {schema_version} for {format!r}: only the current version"
            f" {expected_version} is written"
        )
    reserved = sorted(HEADER_KEYS & payload.keys())
    if reserved:
        raise CheckpointError.many((key, "reserved header key, set by save_checkpoint") for key in reserved)
    full = {**_header(format, schema_version), **payload}
    check_primitive_tree(full)
    atomic_torch_save(full, path)


def _load_reason(exc: BaseException) -> str:
    """The informative part of torch's error (its weights_only message is long and has ANSI codes)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    if _UNPICKLER_MARKER in text:
        text = text.split(_UNPICKLER_MARKER, 1)[1].strip()
    paragraphs = [part.strip() for part in text.split("\n\n") if part.strip()]
    # Skip torch's boilerplate paragraphs around the actual reason.
    boilerplate = ("Weights only load failed", "Check the documentation")
    useful = [part for part in paragraphs if not part.startswith(boilerplate)]
    chosen = (useful or paragraphs or [repr(exc)])[0]
    return chosen.splitlines()[0].split(" Please use", 1)[0].strip()[:300]


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """torch.load with weights_only=True; any failure becomes a CheckpointError naming the file."""
    file = Path(path)
    if not file.is_file():
        reason = "is a directory" if file.is_dir() else "no such file"
        raise CheckpointError(f"cannot read checkpoint: {reason}", file=file)
    try:
        data = torch.load(file, map_location="cpu", weights_only=True, mmap=_is_zip(file))
    except _LOAD_ERRORS as exc:
        raise CheckpointError(
            f"not loadable with torch.load(weights_only=True): {type(exc).__name__}: {_load_reason(exc)}"
            f" (run `esper audit {file}` to see why)",
            file=file,
        ) from exc
    if type(data) is not dict:
        raise CheckpointError.at(ROOT_LABEL, f"expected dict, got {type(data).__name__}", file=file)
    _check_header(data, file)
    return data


def _is_zip(file: Path) -> bool:
    """Whether `file` is a zip archive (torch.save's format, the only one torch can memory-map)."""
    try:
        with file.open("rb") as handle:
            return handle.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC
    except OSError:
        return False  # torch.load reports the real problem


def _check_header(data: dict[str, Any], file: Path) -> None:
    problems = []
    for key, kind in HEADER_TYPES.items():
        if key not in data:
            problems.append((key, "missing required key"))
        elif type(data[key]) is not kind:
            problems.append((key, f"expected {kind.__name__}, got {type(data[key]).__name__}"))
    if problems:
        raise CheckpointError.many(problems, file=file)


def peek_format(path: str | os.PathLike[str]) -> str:
    """The `format` recorded in a checkpoint file (read with weights_only=True)."""
    return _read(path)[FORMAT_KEY]


def load_checkpoint(path: str | os.PathLike[str], *, format: str) -> dict[str, Any]:
    """Load a checkpoint of `format`, upgraded to the current schema version.

    The returned dict still holds the header keys (see HEADER_KEYS / split_header).
    """
    data = _read(path)
    if data[FORMAT_KEY] != format:
        raise CheckpointError.at(
            FORMAT_KEY, f"expected format {format!r}, got {data[FORMAT_KEY]!r}", file=path
        )
    try:
        return migrate(data, format)
    except CheckpointError as exc:
        raise exc.with_file(path) from None


def split_header(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a loaded checkpoint into (header, payload)."""
    header = {key: value for key, value in data.items() if key in HEADER_KEYS}
    payload = {key: value for key, value in data.items() if key not in HEADER_KEYS}
    return header, payload
