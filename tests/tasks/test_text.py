"""Character-level text task: corpus selection, vocabulary, windows and splits."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.tasks import DataSplits, TaskOptions, default_tasks
from esper.tasks.text import (
    BLOCK_SIZE,
    _stdlib_sources,
    encode,
    load_text,
    minimum_length,
    stdlib_corpus,
    text_splits,
)

SAMPLE = "".join(f"def line_{i}(x):\n    return x * {i} + 'é'\n" for i in range(120))


def _decode(tokens: torch.Tensor, vocab: tuple[str, ...]) -> str:
    return "".join(vocab[int(token)] for token in tokens.reshape(-1))


@pytest.fixture()
def sample_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(SAMPLE, encoding="utf-8")
    return path


def test_text_file_corpus_windows_and_splits(sample_file: Path) -> None:
    splits = load_text(TaskOptions(text_file=sample_file))
    assert splits.kind == "language_model"
    assert splits.vocab == tuple(sorted(set(SAMPLE))) and splits.num_classes == len(splits.vocab)
    train_end, val_end = len(SAMPLE) * 90 // 100, len(SAMPLE) * 95 // 100
    parts = {"train": SAMPLE[:train_end], "val": SAMPLE[train_end:val_end], "test": SAMPLE[val_end:]}
    for name, part in parts.items():
        x, y = getattr(splits, name).tensors
        count = (len(part) - 1) // BLOCK_SIZE
        assert x.shape == y.shape == (count, BLOCK_SIZE)
        assert x.dtype == y.dtype == torch.int64
        # Windows are consecutive slices of this split's text; targets are shifted by one.
        assert _decode(x, splits.vocab) == part[: count * BLOCK_SIZE]
        assert _decode(y, splits.vocab) == part[1 : count * BLOCK_SIZE + 1]
    assert str(sample_file) in splits.description


def test_text_loading_is_deterministic(sample_file: Path) -> None:
    first = load_text(TaskOptions(text_file=sample_file))
    second = load_text(TaskOptions(text_file=sample_file, seed=5))
    for split in ("train", "val", "test"):
        for a, b in zip(getattr(first, split).tensors, getattr(second, split).tensors, strict=True):
            assert torch.equal(a, b)


def test_missing_undecodable_or_short_text_files_are_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(ValueError, match=rf"--text-file {missing} does not exist"):
        load_text(TaskOptions(text_file=missing))
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 ".encode("latin-1") * 500)
    with pytest.raises(ValueError, match="is not valid UTF-8"):
        load_text(TaskOptions(text_file=latin))
    short = tmp_path / "short.txt"
    short.write_text("abc" * 100, encoding="utf-8")
    with pytest.raises(ValueError, match="300 characters is too short; need at least 1291"):
        load_text(TaskOptions(text_file=short))


def test_encode_refuses_unknown_characters() -> None:
    vocab = ("a", "b", "c")
    assert encode("cab", vocab).tolist() == [2, 0, 1]
    for text in ("abd", "abZ", "ab\U0001f600"):
        with pytest.raises(ValueError, match="outside the vocabulary"):
            encode(text, vocab)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet=st.sampled_from("ab\n é€\U0001f600"), min_size=101, max_size=400), st.integers(1, 4))
def test_windows_decode_back_to_the_corpus(text: str, block_size: int) -> None:
    if len(set(text)) < 2:
        text = text[:-1] + ("a" if text[-1] != "a" else "b")
    splits = text_splits(text, "hypothesis", block_size=block_size)
    train_end = len(text) * 90 // 100
    x, y = splits.train.tensors
    count = (train_end - 1) // block_size
    assert x.shape == (count, block_size)
    assert _decode(x, splits.vocab) == text[: count * block_size]
    assert _decode(y, splits.vocab) == text[1 : count * block_size + 1]
    assert len(splits.val) >= 1 and len(splits.test) >= 1


def test_stdlib_corpus_is_deterministic_and_skips_tests() -> None:
    text, source = stdlib_corpus(max_chars=30_000)
    again, _ = stdlib_corpus(max_chars=30_000)
    assert len(text) == 30_000 and text == again
    assert "standard library" in source
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = []
    for path in _stdlib_sources(root):
        paths.append(path.relative_to(root))
        if len(paths) == 400:
            break
    assert paths, "the stdlib walk found no .py files"
    for rel in paths:
        assert rel.suffix == ".py" and not rel.name.startswith("test_")
        assert not {"test", "tests", "site-packages", "__pycache__"} & set(rel.parts)
    # The corpus starts with the first file of the walk.
    assert text.startswith((root / paths[0]).read_text(encoding="utf-8")[:1000])


def test_stdlib_default_splits() -> None:
    splits = load_text(TaskOptions(), max_chars=20_000)
    assert splits.vocab is not None and splits.num_classes == len(splits.vocab)
    assert splits.sizes() == {"train": (18_000 - 1) // 64, "val": (1000 - 1) // 64, "test": (1000 - 1) // 64}
    assert "20000 characters" in splits.description


def test_text_task_defaults_and_host(sample_file: Path) -> None:
    task = default_tasks().get("text")
    assert task.topology == "transformer" and task.host_kind == "gpt"
    assert task.defaults.optimizer == "adamw" and task.defaults.host_lr == 3e-3
    with pytest.raises(ValueError, match="call build_host\\(splits\\)"):
        task.build_host()
    splits: DataSplits = task.load_data(TaskOptions(text_file=sample_file))
    assert task.host_config_for(splits)["vocab_size"] == len(set(SAMPLE))
    torch.manual_seed(0)
    host = task.build_host(splits)
    x = splits.train.tensors[0][:3]
    logits = host(x)
    assert logits.shape == (3, BLOCK_SIZE, splits.num_classes) and torch.isfinite(logits).all()
    assert len(host.slot_ids()) == task.host_config["n_layers"] // task.host_config["layers_per_segment"]


@pytest.mark.parametrize("block_size", [1, 4, 64])
def test_minimum_length_is_exact(block_size: int) -> None:
    minimum = minimum_length(block_size)
    text = ("ab" * minimum)[:minimum]
    splits = text_splits(text, "boundary", block_size=block_size)
    assert min(splits.sizes().values()) == 1
    with pytest.raises(ValueError, match="too short"):
        text_splits(text[:-1], "boundary", block_size=block_size)


def test_text_defaults_leave_the_heuristic_a_window_to_germinate() -> None:
    from esper.control.heuristic import HeuristicConfig

    defaults = default_tasks().get("text").defaults
    # The same 400 optimizer steps as 10 epochs of 40 batches, cut into epochs short enough
    # for a seed's lifecycle (counted in epochs) to fit the run.
    assert defaults.epochs * defaults.max_batches_per_epoch == 400
    heuristic = HeuristicConfig()
    last_epoch_to_germinate = defaults.epochs - heuristic.min_epochs_left_to_germinate
    assert last_epoch_to_germinate >= heuristic.min_epoch_to_germinate
