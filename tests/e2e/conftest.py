"""Shared, session-scoped inputs of the end-to-end tests: task data files, configs, PPO agents.

Everything runs through `esper.cli.main.main([...])` in this process (no interpreter
start-up per command) and writes only under pytest's temporary directories.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from esper.cli.main import main
from esper.tasks.cifar10 import BATCHES_DIRNAME, TEST_FILE, TRAIN_FILES

from .support import CIFAR_PER_BATCH, PPO_CONFIG, ppo_args


def _write_cifar_batch(path: Path, data: np.ndarray, labels: list[int]) -> None:
    batch = {b"batch_label": b"generated", b"labels": labels, b"data": data, b"filenames": []}
    with path.open("wb") as handle:
        pickle.dump(batch, handle, protocol=2)


@pytest.fixture(scope="session")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """Per task, the TrainConfig fields that point it at its data (tasks without files: nothing)."""
    root = tmp_path_factory.mktemp("data")
    batches = root / BATCHES_DIRNAME
    batches.mkdir()
    rng = np.random.default_rng(0)
    for index, name in enumerate(TRAIN_FILES):
        data = rng.integers(0, 256, size=(CIFAR_PER_BATCH, 3072), dtype=np.uint8)
        _write_cifar_batch(batches / name, data, [(index + i) % 10 for i in range(CIFAR_PER_BATCH)])
    test = rng.integers(0, 256, size=(CIFAR_PER_BATCH, 3072), dtype=np.uint8)
    _write_cifar_batch(batches / TEST_FILE, test, [i % 10 for i in range(CIFAR_PER_BATCH)])
    corpus = root / "corpus.txt"
    corpus.write_text("def double(x):\n    return 2 * x  # twice\n" * 150, encoding="utf-8")
    return {"cifar10": {"data_dir": str(root)}, "text": {"text_file": str(corpus)}}


@pytest.fixture(scope="session")
def agent_for(
    tmp_path_factory: pytest.TempPathFactory, data_files: dict[str, dict[str, str]]
) -> Callable[[str], Path]:
    """task -> a PPO agent written by `esper ppo` for that task (its slots and blueprints), made once.

    The run's config file is `ppo.toml` next to the agent's directory."""
    agents: dict[str, Path] = {}

    def make(task: str) -> Path:
        if task not in agents:
            parent = tmp_path_factory.mktemp(f"ppo-{task}")
            out = parent / "agent"  # a directory that does not exist yet
            data = "\n".join(f'{key} = "{value}"' for key, value in data_files.get(task, {}).items())
            config = parent / "ppo.toml"
            config.write_text(PPO_CONFIG.format(data=data), encoding="utf-8")
            code = main([*ppo_args(task, str(config)), "--out", str(out)])
            assert code == 0, f"esper ppo --task {task} failed"
            agents[task] = out / "agent.pt"
        return agents[task]

    return make
