"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The data goes to a hidden temporary file in the target's directory, is
flushed and fsynced, then `os.replace`d onto the target (atomic on POSIX
within one file system), and the directory is fsynced so the rename itself
survives a crash. A writer killed half-way leaves the previous file intact
(and at worst a stray `.name.*.tmp` file beside it).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from esper.checkpoints.zip_crc import save_without_tensor_crcs
from esper.pause_points import pause_point

_CREATE_ATTEMPTS = 16


def _open_temp(target: Path) -> tuple[Path, int]:
    """Create a new temp file next to `target`; mode follows the umask like a normal file."""
    for _ in range(_CREATE_ATTEMPTS):
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            # Read-write: atomic_torch_save reads back what torch wrote (see zip_crc).
            fd = os.open(candidate, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        return candidate, fd
    raise FileExistsError(f"could not create a unique temporary file next to {target}")


def remove_stray_temps(target: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files a killed `atomic_write` to `target` left behind; return them.

    Only names this module creates (`.NAME.<12 hex digits>.tmp`) are touched.
    """
    target = Path(target)
    removed = []
    for candidate in target.parent.glob(f".{target.name}.*.tmp"):
        token = candidate.name[len(target.name) + 2 : -len(".tmp")]
        if len(token) == 12 and all(c in "0123456789abcdef" for c in token) and candidate.is_file():
            candidate.unlink()
            removed.append(candidate)
    return removed


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Call `write(file)` on a temporary file, then atomically move it onto `path`.

    `file` is a buffered binary file open for reading and writing, positioned at its (empty) start.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot write a file at {target}: it is a directory")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: directory {target.parent} does not exist")
    temp, fd = _open_temp(target)
    try:
        with os.fdopen(fd, "w+b") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        pause_point(f"{target.name}:before-rename")
        os.replace(temp, target)
    except BaseException:
        # Also on KeyboardInterrupt: never leave a temp file behind when we can help it.
        temp.unlink(missing_ok=True)
        raise
    pause_point(f"{target.name}:after-rename")
    _fsync_directory(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write `data` to `path` atomically."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    atomic_write(path, lambda handle: handle.write(data))


def atomic_torch_save(obj: object, path: str | os.PathLike[str]) -> None:
    """`torch.save(obj, path)` atomically (zip format, default pickle protocol).

    Tensor records carry no CRC-32 (see esper.checkpoints.zip_crc); every other record has its real one.
    """
    atomic_write(path, lambda handle: save_without_tensor_crcs(obj, handle))
