"""On-disk cache of generated datasets: `.npz` arrays, written atomically, read without pickle.

The cache lives in `$ESPER_CACHE_DIR` if set, else `~/.cache/esper`. A file is
written to a temporary name in the same directory and moved into place with
`os.replace`, so a reader never sees half a file (even if two runs generate the
same data at once).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV_VAR = "ESPER_CACHE_DIR"


def default_cache_dir() -> Path:
    """`$ESPER_CACHE_DIR` if set (and non-empty), else `~/.cache/esper`."""
    configured = os.environ.get(CACHE_ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "esper"


def args_key(args: Mapping[str, Any]) -> str:
    """A short stable hash of JSON-serialisable generation arguments (names the cache file)."""
    try:
        text = json.dumps(dict(args), sort_keys=True, separators=(",", ":"))
    except TypeError as exc:
        raise ValueError(f"args_key: arguments must be JSON-serialisable primitives ({exc})") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write `arrays` to `path` (an `.npz`) atomically; parent directories are created."""
    if path.suffix != ".npz":
        raise ValueError(f"save_arrays: cache files end in .npz, got {path}")
    for name, array in arrays.items():
        if name == "allow_pickle":  # np.savez takes this keyword as its own flag, not as an array
            raise ValueError("save_arrays: 'allow_pickle' cannot name an array (np.savez reserves it)")
        if not isinstance(array, np.ndarray) or array.dtype == object:
            raise ValueError(
                f"save_arrays: {name!r} must be a numeric numpy array, got {type(array).__name__}"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    temp: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp", delete=False
        ) as handle:
            temp = Path(handle.name)
            np.savez(handle, allow_pickle=False, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        # After a successful replace the temp name is gone; otherwise drop the partial file.
        if temp is not None:
            temp.unlink(missing_ok=True)


def load_arrays(path: Path, expected: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read an `.npz` written by `save_arrays`; it must hold exactly the `expected` arrays."""
    # np.load treats a non-zip file as a raw array or a pickle: only accept an npz archive.
    if not zipfile.is_zipfile(path):
        raise ValueError(f"cache file {path} is unreadable (not an .npz archive); delete it to regenerate it")
    try:
        with np.load(path, allow_pickle=False) as archive:
            found = sorted(archive.files)
            arrays = {name: archive[name] for name in expected if name in found}
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        # ValueError: an object array, which would need pickle to load.
        raise ValueError(f"cache file {path} is unreadable ({exc}); delete it to regenerate it") from None
    if found != sorted(expected):
        raise ValueError(
            f"cache file {path}: expected arrays {sorted(expected)}, found {found}; "
            "delete the file to regenerate it"
        )
    return arrays
