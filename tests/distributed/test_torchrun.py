"""`torchrun ... -m esper train` as a user types it: several processes, two "nodes", a failing
rank, and resuming across world sizes. Every subprocess is bounded by a timeout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import esper
from esper.training.run_io import load_run

from .configs import free_port, write_config

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
HERE = Path(__file__).parent


def _env() -> dict[str, str]:
    # The esper under test, whatever the subprocess's working directory (PYTHONPATH may be relative).
    source = str(Path(esper.__file__).resolve().parents[1])
    path = os.pathsep.join([source, *filter(None, [os.environ.get("PYTHONPATH")])])
    # A short collective timeout bounds any wait on a rank that is gone.
    return {**os.environ, "PYTHONPATH": path, "ESPER_DIST_TIMEOUT": "30", "OMP_NUM_THREADS": "1"}


def _standalone(nproc: int, *args: str) -> list[str]:
    return [*TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", *args]


def _run(command: list[str], cwd: Path, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _stages(run_dir: Path) -> list[tuple[int, str, str]]:
    lines = (run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines]
    return [(e["epoch"], e["slot"], e["to_stage"]) for e in events if e["type"] == "seed_stage_changed"]


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_two_nodes_on_one_machine(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.json", epochs=4)
    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                *TORCHRUN,
                "--nnodes=2",
                f"--node-rank={node}",
                "--nproc-per-node=1",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                "--rdzv-id=esper-test",
                "--max-restarts=0",
                "-m",
                "esper",
                "train",
                "--config",
                str(config),
                "--out",
                "run",
                "--no-progress",
            ],
            cwd=tmp_path,
            env=_env(),
            # Files, not pipes: a node blocked on a full pipe would stall the other in a collective.
            stdout=(tmp_path / f"node{node}.out").open("w"),
            stderr=(tmp_path / f"node{node}.err").open("w"),
        )
        for node in range(2)
    ]
    try:
        for node in nodes:
            node.wait(timeout=170)
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    outputs = [((tmp_path / f"node{n}.out").read_text(), (tmp_path / f"node{n}.err").read_text()) for n in range(2)]
    assert [n.returncode for n in nodes] == [0, 0], outputs
    run = tmp_path / "run"
    assert (run / "summary.json").is_file() and (run / "checkpoint.pt").is_file()
    # One writer: every event once (a second writer would duplicate run_started).
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert sum(e["type"] == "run_started" for e in events) == 1
    assert [e["epoch"] for e in events if e["type"] == "epoch_metrics"] == [1, 2, 3, 4]
    assert [stage for _, _, stage in _stages(run)][:2] == ["GERMINATED", "TRAINING"], _stages(run)
    # Exactly one of the two nodes printed the outcome.
    assert sum("test accuracy" in out for out, _ in outputs) == 1


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_a_raising_rank_ends_the_job(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.json", epochs=6)
    started = time.monotonic()
    result = _run(
        _standalone(
            2, str(HERE / "raising_rank.py"), "train", "--config", str(config), "--out", "run", "--no-progress"
        ),
        cwd=tmp_path,
        timeout=170,
    )
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "esper train: rank 1 failed: RuntimeError: injected failure on rank 1" in result.stderr
    assert elapsed < 120, f"the job took {elapsed:.0f}s to end"
    # Rank 0 committed the epochs before the failure: the run resumes.
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert load_run(tmp_path / "run" / "checkpoint.pt").run_state["epoch"] == 2


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_resume_across_world_sizes(tmp_path: Path) -> None:
    """Saved by 2 ranks, resumed by 1; saved by 1, resumed by 2: both finish with the same lifecycle history."""
    config = write_config(tmp_path / "config.json", epochs=5)
    two = _run(
        _standalone(
            2, "-m", "esper", "train", "--config", str(config), "--out", "a", "--stop-after", "3", "--no-progress"
        ),
        cwd=tmp_path,
    )
    assert two.returncode == 0, two.stderr
    one = _run(
        [sys.executable, "-m", "esper", "train", "--resume", "a/checkpoint.pt", "--no-progress"], cwd=tmp_path
    )
    assert one.returncode == 0, one.stderr
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["finish_reason"] == "completed"
    events = [json.loads(line) for line in (tmp_path / "a" / "events.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in events if e["type"] == "epoch_metrics"] == [1, 2, 3, 4, 5]

    single = _run(
        [sys.executable, "-m", "esper", "train", "--config", str(config), "--out", "b", "--stop-after", "2",
         "--no-progress"],
        cwd=tmp_path,
    )
    assert single.returncode == 0, single.stderr
    shutil.copy(tmp_path / "b" / "checkpoint.pt", tmp_path / "b-at-2.pt")
    resumed = _run(_standalone(2, "-m", "esper", "train", "--resume", "b/checkpoint.pt", "--no-progress"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    final = load_run(tmp_path / "b" / "checkpoint.pt")
    assert final.run_state["epoch"] == 5
    assert all(torch.isfinite(t).all() for t in final.model.state_dict().values() if t.is_floating_point())
    assert [e["epoch"] for e in (json.loads(x) for x in (tmp_path / "b" / "events.jsonl").read_text().splitlines())
            if e["type"] == "epoch_metrics"] == [1, 2, 3, 4, 5]


PPO_CONFIG = """envs = 2
rounds = 2
episode_length = 3
workers = 0
[train]
max_batches_per_epoch = 2
[ppo]
n_minibatches = 1
[imitation]
rounds = 1
"""


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_distributed_ppo_rank_zero_writes_everything(tmp_path: Path) -> None:
    (tmp_path / "ppo.toml").write_text(PPO_CONFIG, encoding="utf-8")
    result = _run(
        _standalone(2, "-m", "esper", "ppo", "--config", "ppo.toml", "--out", "agent", "--no-progress"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("2 rounds done") == 1  # rank 0 alone reports
    events = [json.loads(line) for line in (tmp_path / "agent" / "events.jsonl").read_text().splitlines()]
    # Each rank ran one of the two environments; rank 0 wrote both environments' events.
    assert {e["env"] for e in events if e["type"] == "reward_computed"} == {0, 1}
    assert sum(e["type"] == "ppo_update" for e in events) == 2
    # The imitation summary counts both ranks' expert episodes, not rank 0's alone.
    imitation = [e for e in events if e["type"] == "imitation_update"]
    assert imitation and all(e["metrics"]["episodes"] == 2.0 for e in imitation)
    # The environments' host models are each rank's own runs, not one DDP job across the ranks.
    curves = {
        env: [e["val_accuracy"] for e in events if e["type"] == "epoch_metrics" and e["env"] == env] for env in (0, 1)
    }
    assert curves[0] and curves[1] and curves[0] != curves[1]
    assert sorted(p.name for p in (tmp_path / "agent").iterdir()) == ["agent.pt", "events.jsonl", "learning.png"]
    # The agent resumes on one process.
    more = _run(
        [sys.executable, "-m", "esper", "ppo", "--resume", "agent/agent.pt", "--config", "ppo.toml", "--rounds", "3",
         "--no-progress"],
        cwd=tmp_path,
    )
    assert more.returncode == 0, more.stderr[-2000:]
    assert "3 rounds done" in more.stdout
