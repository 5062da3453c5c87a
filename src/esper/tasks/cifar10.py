"""CIFAR-10 from a local copy of the "python version", read without running pickled code.

The batch files (`data_batch_1` .. `data_batch_5`, `test_batch`) are pickles of
a dict holding `b"data"` (N, 3072) uint8 and `b"labels"`. Plain `pickle.load`
would run whatever a tampered file asks for, so we read them with an unpickler
whose `find_class` hands out only what rebuilds a plain ndarray and refuses
every other global before anything runs.

Splits: the last tenth of the 50 000 training images (5000) is the validation
set; inputs are normalised with the training set's per-channel mean and std.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from esper.tasks.base import DataSplits, Task, TaskDefaults, TaskOptions

BATCHES_DIRNAME = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{index}" for index in range(1, 6))
TEST_FILE = "test_batch"
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
IMAGE_VALUES = 3 * 32 * 32
# Per-channel mean and std of the CIFAR-10 training images (RGB, in [0, 1]).
CHANNEL_MEAN = (0.4914, 0.4822, 0.4465)
CHANNEL_STD = (0.2470, 0.2435, 0.2616)
# One tenth of the training images (5000 of 50 000) is the validation set.
VALIDATION_FRACTION = 10


class UnsafePickleError(ValueError):
    """A batch file asked for something other than a plain numpy array: refused, nothing executed."""


def _latin1_encode(text: str, encoding: str) -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1").
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"_codecs.encode: only latin1 text is allowed, got encoding {encoding!r}")
    return text.encode("latin1")


# The ndarray rebuild function, whichever numpy module path holds it in this version.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals needed for dicts, lists, bytes and plain ndarrays."""

    def __init__(self, stream: io.BufferedIOBase, source: Path) -> None:
        # Batches written by Python 2 hold byte strings; keep them as bytes.
        super().__init__(stream, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise UnsafePickleError(
            f"{self._source}: refusing to load global {module}.{name}; a CIFAR-10 batch may only "
            "contain numpy arrays, lists, bytes and numbers (file is corrupt or tampered with)"
        )


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Safely read one batch file: (data uint8 (N, 3072), labels int64 (N,))."""
    with path.open("rb") as stream:
        try:
            batch = _ArrayOnlyUnpickler(stream, path).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: not a readable CIFAR-10 batch ({type(exc).__name__}: {exc})") from None
    return _check_batch(path, batch)


def _check_batch(path: Path, batch: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        found = sorted(map(repr, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"{path}: expected a dict with keys b'data' and b'labels', found {found}")
    data, labels = batch[b"data"], batch[b"labels"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != IMAGE_VALUES
    ):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: b'data' must be a uint8 array of shape (N, {IMAGE_VALUES}), found {found}")
    label_array = _labels_array(path, labels)
    if label_array.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but {label_array.shape[0]} labels")
    if label_array.size and (label_array.min() < 0 or label_array.max() >= NUM_CLASSES):
        raise ValueError(
            f"{path}: labels must lie in [0, {NUM_CLASSES}), found [{label_array.min()}, {label_array.max()}]"
        )
    return data, label_array


def _labels_array(path: Path, labels: Any) -> np.ndarray:
    if isinstance(labels, list):
        if not all(isinstance(label, int) and not isinstance(label, bool) for label in labels):
            raise ValueError(f"{path}: b'labels' must be a list of ints")
        return np.asarray(labels, dtype=np.int64).reshape(len(labels))
    if isinstance(labels, np.ndarray) and labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
        return labels.astype(np.int64)
    found = (
        f"{labels.dtype} array {labels.shape}" if isinstance(labels, np.ndarray) else type(labels).__name__
    )
    raise ValueError(f"{path}: b'labels' must be a list of ints or a 1-D integer array, found {found}")


def _missing_message(where: str, data_dir: Path | None) -> str:
    parent = "<dir>" if data_dir is None else str(data_dir)
    return (
        f"CIFAR-10 not found: {where}. Download the CIFAR-10 python version (cifar-10-python.tar.gz) "
        "from the CIFAR-10 page of the University of Toronto (https://www.cs.toronto.edu/~kriz/cifar.html), "
        f"extract it with `tar xzf cifar-10-python.tar.gz -C {parent}` so that "
        f"{parent}/{BATCHES_DIRNAME}/ holds {', '.join(TRAIN_FILES)} and {TEST_FILE}, "
        f"then pass --data-dir {parent} (or the {BATCHES_DIRNAME} directory itself)"
    )


def find_batches_dir(data_dir: Path | None) -> Path:
    """The directory holding the batch files: `data_dir` itself or its `cifar-10-batches-py` child."""
    if data_dir is None:
        raise ValueError(_missing_message("no data directory was given", None))
    if not data_dir.is_dir():
        raise ValueError(_missing_message(f"{data_dir} is not a directory", data_dir))
    candidates = [data_dir, data_dir / BATCHES_DIRNAME]
    for candidate in candidates:
        if (candidate / TRAIN_FILES[0]).is_file() or (candidate / TEST_FILE).is_file():
            missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (candidate / name).is_file()]
            if missing:
                raise ValueError(_missing_message(f"{candidate} lacks {', '.join(missing)}", data_dir))
            return candidate
    raise ValueError(
        _missing_message(
            f"neither {data_dir} nor {data_dir / BATCHES_DIRNAME} holds the batch files", data_dir
        )
    )


def _normalised(batches: list[np.ndarray]) -> Tensor:
    """uint8 (N, 3072) batches -> float32 (N, 3, 32, 32), normalised per channel; one batch at a time."""
    total = sum(batch.shape[0] for batch in batches)
    out = torch.empty((total, *IMAGE_SHAPE), dtype=torch.float32)
    mean = torch.tensor(CHANNEL_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CHANNEL_STD, dtype=torch.float32).view(1, 3, 1, 1)
    start = 0
    for batch in batches:
        images = torch.from_numpy(batch).view(-1, *IMAGE_SHAPE)
        chunk = out[start : start + images.shape[0]]
        chunk.copy_(images)
        chunk.div_(255.0).sub_(mean).div_(std)
        start += images.shape[0]
    return out


def load_cifar10(options: TaskOptions) -> DataSplits:
    """Train 45 000 / val 5000 / test 10 000 for the standard files; x float32 (N, 3, 32, 32)."""
    directory = find_batches_dir(options.data_dir)
    train = [read_batch(directory / name) for name in TRAIN_FILES]
    test_data, test_labels = read_batch(directory / TEST_FILE)
    x = _normalised([data for data, _ in train])
    y = torch.from_numpy(np.concatenate([labels for _, labels in train]))
    n_val = x.shape[0] // VALIDATION_FRACTION
    if n_val == 0:
        raise ValueError(
            f"{directory}: only {x.shape[0]} training images; need at least {VALIDATION_FRACTION}"
        )
    split = x.shape[0] - n_val
    return DataSplits(
        train=TensorDataset(x[:split], y[:split]),
        val=TensorDataset(x[split:], y[split:]),
        test=TensorDataset(_normalised([test_data]), torch.from_numpy(test_labels)),
        num_classes=NUM_CLASSES,
        kind="classification",
        description=f"CIFAR-10 from {directory}: 32x32 RGB images, 10 classes",
    )


def cifar10_task() -> Task:
    return Task(
        name="cifar10",
        description="CIFAR-10 (local python-version files, --data-dir) with a small 2-D CNN host",
        topology="cnn",
        host_kind="cnn",
        host_config={
            "in_channels": 3,
            "num_classes": NUM_CLASSES,
            "widths": [32, 64, 128],
            "spatial_dims": 2,
            "kernel_size": 3,
            "pool": True,
            "norm": "batch",
            "dropout": 0.0,
        },
        defaults=TaskDefaults(
            epochs=25,
            batch_size=128,
            host_lr=0.01,
            seed_lr=0.01,
            max_seeds=3,
            # 2x the host's 94.8k parameters: room for a conv_light seed in the 128-wide slot (147.8k).
            seed_budget_ratio=2.0,
        ),
        data_loader=load_cifar10,
        default_blueprints=("conv_light", "conv_heavy", "attention", "norm", "depthwise"),
    )
