"""Run checkpoints are read as strictly as model checkpoints: each reported defect, by path.

The cases the old loader let through or crashed on: a float epoch and a str
rollback counter (coerced), a missing RNG entry (KeyError), a bad RNG tensor
(RuntimeError), an unknown top-level key (ignored), a bad config (pydantic's
own error). A refused state leaves the GrowthRun it was loaded into untouched.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from esper.checkpoints import CheckpointError
from esper.contracts.actions import Op
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.committed_events import CommittedEvents
from esper.control.decision import Decision
from esper.training.config import TrainConfig
from esper.training.growth_run import GrowthRun
from esper.training.run_io import load_run, save_run

CONFIG = TrainConfig(task="mnist1d", epochs=3, max_batches_per_epoch=2, seed=2, controller="static")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], GrowthRun, Path]:
    directory = tmp_path_factory.mktemp("run")
    run = GrowthRun(CONFIG)
    run.train_epoch()
    slot = run.model.slot_ids()[0]
    germinate = Decision(Op.GERMINATE, slot=slot, blueprint="norm", alpha_algorithm=AlphaAlgorithm.GATE, reason="t")
    assert run.apply(germinate, "test").executed
    run.train_epoch()
    path = directory / "checkpoint.pt"
    save_run(
        path,
        config=CONFIG.model_dump(mode="json"),
        model=run.model,
        run_state=run.state_dict(),
        controller={},
        wall_seconds=2.0,
        events=CommittedEvents(bytes=0, lines=0, sha256=hashlib.sha256().hexdigest()),
    )
    return torch.load(path, weights_only=True), run, directory


def tampered(saved: Any, edit: Callable[[dict[str, Any]], None]) -> Path:
    payload, _, directory = saved
    data = copy.deepcopy(payload)
    edit(data)
    path = directory / "tampered.pt"
    torch.save(data, path)
    return path


def resume(path: Path, splits: Any) -> GrowthRun:
    checkpoint = load_run(path)
    run = GrowthRun(TrainConfig.model_validate(checkpoint.config), model=checkpoint.model, splits=splits)
    run.load_state_dict(checkpoint.run_state)
    return run


def test_an_untouched_run_checkpoint_resumes(saved: Any) -> None:
    _, run, _ = saved
    resumed = resume(tampered(saved, lambda d: None), run.splits)
    assert resumed.epoch == 2 and resumed.history == run.history
    assert set(resumed.optimizers.seeds) == set(run.optimizers.seeds) != set()


def _cuda_state(*, offset: int, seed: int = 5) -> torch.Tensor:
    """A CUDA generator state as torch lays it out: the seed, then the offset, 8 little-endian bytes each."""
    raw = seed.to_bytes(8, "little") + offset.to_bytes(8, "little", signed=True)
    return torch.tensor(list(raw), dtype=torch.uint8)


def test_a_cuda_generator_state_is_kept_through_save_and_resume(saved: Any) -> None:
    """Written on a GPU machine, resumed here (no CUDA needed): the state waits for the run's CUDA generator."""
    _, run, _ = saved
    state = _cuda_state(offset=40)
    resumed = resume(tampered(saved, _set(("run", "rng", "cuda"), state)), run.splits)
    assert torch.equal(resumed.generators.state_dict()["cuda"], state)
    assert resume(tampered(saved, lambda d: None), run.splits).generators.state_dict()["cuda"] is None


def _as_version_2(data: dict[str, Any]) -> None:
    """What esper wrote before the run had a CUDA generator of its own."""
    del data["run"]["rng"]["cuda"]
    data["schema_version"] = 2


def test_a_version_2_checkpoint_resumes_without_a_cuda_state(saved: Any) -> None:
    _, run, _ = saved
    resumed = resume(tampered(saved, _as_version_2), run.splits)
    assert resumed.epoch == 2 and resumed.generators.state_dict()["cuda"] is None
    assert torch.equal(resumed.generators.state_dict()["torch"], run.generators.state_dict()["torch"])


def test_a_version_2_checkpoint_with_a_cuda_state_is_refused(saved: Any) -> None:
    def edit(data: dict[str, Any]) -> None:
        _as_version_2(data)
        data["run"]["rng"]["cuda"] = _cuda_state(offset=0)

    path = tampered(saved, edit)
    with pytest.raises(CheckpointError, match=r"run > rng > cuda: unknown key \(version 2 has no CUDA"):
        load_run(path)


def _set(path: tuple[str | int, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        target = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return edit


def _delete(path: tuple[str | int, ...]) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        target = data
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_set(("run", "epoch"), 13.7), "run > epoch: expected int, got float"),
        (_set(("run", "epoch"), -1), "run > epoch: expected a value >= 0, got -1"),
        (_set(("run", "governor", "rollbacks"), "0"), "run > governor > rollbacks: expected int, got str"),
        (_set(("run", "governor", "rollbacks"), 9), "run > governor > rollbacks: expected <= 4"),
        (_delete(("run", "rng", "numpy")), "run > rng > numpy: missing required key"),
        (_set(("run", "rng", "torch"), torch.zeros(7, dtype=torch.uint8)), "run > rng > torch: expected a torch.uint8"),
        (_set(("run", "rng", "torch"), torch.zeros(5056)), "run > rng > torch: expected a torch.uint8"),
        (_set(("run", "rng", "numpy", 0), "PCG64"), "run > rng > numpy > [0]: expected 'MT19937'"),
        (_set(("run", "rng", "numpy", 2), 700), "run > rng > numpy > [2]: expected an int in [0, 624]"),
        (_set(("run", "rng", "python", 0), 2), "run > rng > python > [0]: expected 3"),
        (_delete(("run", "rng", "cuda")), "run > rng > cuda: missing required key"),
        (_set(("run", "rng", "cuda"), torch.zeros(16)), "run > rng > cuda: expected a torch.uint8 tensor of shape"),
        (_set(("run", "rng", "cuda"), _cuda_state(offset=0)[:8]), "run > rng > cuda: expected a torch.uint8"),
        (_set(("run", "rng", "cuda"), _cuda_state(offset=6)), "run > rng > cuda: expected a generator offset >= 0"),
        (_set(("run", "rng", "cuda"), _cuda_state(offset=-4)), "run > rng > cuda: expected a generator offset >= 0"),
        (_set(("run", "rng", "cuda"), [1, 2]), "run > rng > cuda"),
        (_set(("surprise",), 1), "surprise: unknown key"),
        (_set(("config", "epochs"), "three"), "config > epochs: expected int or None, got str"),
        (_delete(("config", "grad_clip")), "config > grad_clip: missing required key"),
        (_set(("config", "task"), "nope"), "config > task: unknown task 'nope'"),
        (_set(("config", "blueprints"), ["nope"]), "config > blueprints > [0]: unknown blueprint 'nope'"),
        (_set(("config", "heuristic"), {"plateau_epochs": "x"}), "config > heuristic > plateau_epochs"),
        (_set(("controller",), {"x": 1}), "controller > x: unknown key"),
        (_set(("wall_seconds",), -1.0), "wall_seconds: expected a finite float >= 0"),
        (_set(("run", "history", "val_loss"), [0.5]), "run > history > val_loss: expected 2 values"),
        (_set(("run", "history", "val_accuracy"), [0.5, 1.5]), "run > history > val_accuracy > [1]"),
        (_set(("run", "governor", "snapshot_epoch"), 9), "run > governor > snapshot_epoch: expected <= 2"),
        (_set(("run", "governor", "divergence_streak"), 3), "run > governor > divergence_streak: expected < 3"),
        (_set(("run", "governor", "loss_history"), [float("nan")]), "run > governor > loss_history > [0]"),
    ],
)
def test_each_defect_is_one_checkpoint_error_naming_its_path(saved: Any, edit: Any, expected: str) -> None:
    _, run, _ = saved
    path = tampered(saved, edit)
    with pytest.raises(CheckpointError) as info:
        resume(path, run.splits)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def _drop_first_snapshot_tensor(data: dict[str, Any]) -> None:
    snapshot = data["run"]["governor"]["snapshot"]
    del snapshot[next(iter(snapshot))]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_delete(("run", "optimizers", "seeds", "r0c0")), "run > optimizers > seeds > r0c0: missing required key"),
        (_set(("run", "optimizers", "seeds", "r9c9"), {"state": {}, "param_groups": []}), "seeds > r9c9: unknown key"),
        (
            _set(("run", "optimizers", "host", "param_groups", 0, "momentum"), -0.5),
            "run > optimizers > host > param_groups > [0] > momentum: expected a finite number >= 0",
        ),
        (
            _set(("run", "optimizers", "host", "param_groups", 0, "maximize"), True),
            "run > optimizers > host > param_groups > [0] > maximize: expected False",
        ),
        (_drop_first_snapshot_tensor, "run > governor > snapshot > host."),
        (_set(("model", "seed_slots", "r0c1", "tick"), 5), "model > seed_slots.r0c1 > tick: expected 2"),
    ],
)
def test_what_needs_the_model_is_checked_before_anything_changes(saved: Any, edit: Any, expected: str) -> None:
    """The optimizer, snapshot and tick checks run in load_state_dict: a refusal leaves the run as it was."""
    _, run, _ = saved
    path = tampered(saved, edit)
    try:
        checkpoint = load_run(path)
    except CheckpointError as error:  # some are caught earlier, by the model's own checks
        assert expected in str(error) or "seed_slots.r0c1" in str(error)
        return
    target = GrowthRun(TrainConfig.model_validate(checkpoint.config), model=checkpoint.model, splits=run.splits)
    before = (target.epoch, copy.deepcopy(target.history), target.governor.state_dict(), target.generators.state_dict())
    host_state = copy.deepcopy(target.optimizers.host.state_dict())
    with pytest.raises(CheckpointError) as info:
        target.load_state_dict(checkpoint.run_state)
    assert expected in str(info.value)
    assert (target.epoch, target.history) == before[:2]
    after = target.governor.state_dict()
    assert after["rollbacks"] == before[2]["rollbacks"] and after["snapshot_epoch"] == before[2]["snapshot_epoch"]
    assert after["snapshot"].keys() == before[2]["snapshot"].keys()
    assert all(torch.equal(after["snapshot"][k], v) for k, v in before[2]["snapshot"].items())
    rng = target.generators.state_dict()
    assert torch.equal(rng["torch"], before[3]["torch"]) and rng["python"] == before[3]["python"]
    assert torch.equal(rng["numpy"][1], before[3]["numpy"][1])
    assert target.optimizers.host.state_dict()["state"] == host_state["state"] == {}
