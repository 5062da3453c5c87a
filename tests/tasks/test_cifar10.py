"""CIFAR-10: the python-version format read safely from a tiny generated copy."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from esper.tasks import TaskOptions, default_tasks
from esper.tasks.cifar10 import (
    BATCHES_DIRNAME,
    CHANNEL_MEAN,
    CHANNEL_STD,
    TEST_FILE,
    TRAIN_FILES,
    UnsafePickleError,
    find_batches_dir,
    load_cifar10,
    read_batch,
)

PER_BATCH = 8
TEST_IMAGES = 6


def _write_batch(path: Path, data: np.ndarray, labels: object) -> None:
    batch = {b"batch_label": b"testing batch", b"labels": labels, b"data": data, b"filenames": [b"x.png"]}
    with path.open("wb") as handle:
        pickle.dump(batch, handle, protocol=2)


@pytest.fixture()
def cifar_root(tmp_path: Path) -> Path:
    """tmp_path/cifar-10-batches-py with five tiny training batches and a test batch."""
    directory = tmp_path / BATCHES_DIRNAME
    directory.mkdir()
    rng = np.random.default_rng(0)
    for index, name in enumerate(TRAIN_FILES):
        data = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        labels = [(index * PER_BATCH + i) % 10 for i in range(PER_BATCH)]
        _write_batch(directory / name, data, labels)
    test_data = rng.integers(0, 256, size=(TEST_IMAGES, 3072), dtype=np.uint8)
    _write_batch(directory / TEST_FILE, test_data, np.arange(TEST_IMAGES, dtype=np.int64) % 10)
    return tmp_path


def _expected_image(row: np.ndarray) -> torch.Tensor:
    image = torch.from_numpy(row.astype(np.float32) / 255.0).view(3, 32, 32)
    mean = torch.tensor(CHANNEL_MEAN).view(3, 1, 1)
    std = torch.tensor(CHANNEL_STD).view(3, 1, 1)
    return (image - mean) / std


def test_tiny_cifar_loads_with_splits_and_normalisation(cifar_root: Path) -> None:
    splits = default_tasks().get("cifar10").load_data(TaskOptions(data_dir=cifar_root))
    total = PER_BATCH * len(TRAIN_FILES)
    assert splits.sizes() == {"train": total - total // 10, "val": total // 10, "test": TEST_IMAGES}
    x, y = splits.train.tensors
    assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32)
    assert y.dtype == torch.int64
    # Order is batch 1..5 concatenated; the validation set is the tail.
    all_labels = torch.cat([y, splits.val.tensors[1]])
    assert all_labels.tolist() == [i % 10 for i in range(total)]
    last_data, _ = read_batch(cifar_root / BATCHES_DIRNAME / TRAIN_FILES[-1])
    assert torch.allclose(splits.val.tensors[0][-1], _expected_image(last_data[-1]), atol=1e-5)
    test_data, test_labels = read_batch(cifar_root / BATCHES_DIRNAME / TEST_FILE)
    assert torch.allclose(splits.test.tensors[0][0], _expected_image(test_data[0]), atol=1e-5)
    assert splits.test.tensors[1].tolist() == test_labels.tolist()


def test_data_dir_may_be_the_batches_dir_itself(cifar_root: Path) -> None:
    from_parent = load_cifar10(TaskOptions(data_dir=cifar_root))
    from_itself = load_cifar10(TaskOptions(data_dir=cifar_root / BATCHES_DIRNAME))
    assert find_batches_dir(cifar_root) == find_batches_dir(cifar_root / BATCHES_DIRNAME)
    assert torch.equal(from_parent.train.tensors[0], from_itself.train.tensors[0])


def test_missing_data_says_what_to_download_and_which_flag(tmp_path: Path) -> None:
    for data_dir in (None, tmp_path, tmp_path / "absent"):
        with pytest.raises(ValueError) as info:
            load_cifar10(TaskOptions(data_dir=data_dir))
        message = str(info.value)
        assert "cifar-10-python.tar.gz" in message
        assert "University of Toronto" in message
        assert "--data-dir" in message


def test_a_missing_batch_file_is_named(cifar_root: Path) -> None:
    (cifar_root / BATCHES_DIRNAME / "data_batch_3").unlink()
    with pytest.raises(ValueError, match="lacks data_batch_3"):
        load_cifar10(TaskOptions(data_dir=cifar_root))


class _RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (self.command,))


def test_malicious_batch_is_refused_without_running(cifar_root: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({b"data": _RunsShell(f"touch {marker}"), b"labels": [0]}, protocol=2)
    (cifar_root / BATCHES_DIRNAME / "data_batch_1").write_bytes(payload)
    with pytest.raises(UnsafePickleError, match=r"refusing to load global (posix|os)\.system"):
        load_cifar10(TaskOptions(data_dir=cifar_root))
    assert not marker.exists()
    # Control: the payload is live, plain pickle would have run it.
    control = tmp_path / "control"
    pickle.loads(pickle.dumps({b"data": _RunsShell(f"touch {control}"), b"labels": [0]}, protocol=2))
    assert control.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.",
        b"\x80\x02cnumpy\nload\nX\x01\x00\x00\x00x\x85R.",
        b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x06\x00\x00\x00base64\x86R.",
    ],
    ids=["builtins.eval", "numpy.load", "codecs-non-latin1"],
)
def test_other_globals_are_refused(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "batch"
    path.write_bytes(payload)
    with pytest.raises(UnsafePickleError):
        read_batch(path)


def test_malformed_batches_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    _write_batch(path, np.zeros((2, 3072), np.uint8), [0])
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        read_batch(path)
    _write_batch(path, np.zeros((2, 100), np.uint8), [0, 1])
    with pytest.raises(ValueError, match=r"uint8 array of shape \(N, 3072\), found uint8 \(2, 100\)"):
        read_batch(path)
    _write_batch(path, np.zeros((1, 3072), np.uint8), [10])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        read_batch(path)
    with path.open("wb") as handle:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8)}, handle, protocol=2)
    with pytest.raises(ValueError, match="b'labels'"):
        read_batch(path)
    path.write_bytes(pickle.dumps({b"data": 1}, protocol=2)[:-3])
    with pytest.raises(ValueError, match="not a readable CIFAR-10 batch"):
        read_batch(path)


def test_cifar_host_builds_and_runs(cifar_root: Path) -> None:
    task = default_tasks().get("cifar10")
    splits = task.load_data(TaskOptions(data_dir=cifar_root))
    torch.manual_seed(0)
    host = task.build_host(splits)
    logits = host(splits.train.tensors[0][:4])
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    assert task.host_config["spatial_dims"] == 2 and task.topology == "cnn"


def test_batches_pickled_by_older_numpy_are_accepted(tmp_path: Path) -> None:
    # The official files name the rebuild function numpy.core.multiarray._reconstruct (numpy 1.x).
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    payload = pickle.dumps({b"data": data, b"labels": [3, 4]}, protocol=2)
    if b"numpy._core.multiarray" in payload:
        payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray\n_reconstruct" in payload
    path = tmp_path / "batch"
    path.write_bytes(payload)
    loaded, labels = read_batch(path)
    assert np.array_equal(loaded, data) and labels.tolist() == [3, 4]
