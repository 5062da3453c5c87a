"""`esper bench --suite distributed` produces every metric with the machine's load recorded."""

from __future__ import annotations

import pytest

from esper.bench.distributed_scaling import (
    SCALING_GOAL,
    USEFUL_SHARE_GOAL,
    ceiling_worker,
    distributed_scaling,
    ppo_env_ceiling_worker,
    train_config,
)
from esper.bench.timing import BenchSettings, TimingPlan
from esper.training.config import TrainConfig

METRICS = {
    "ddp_train_speedup",
    "ddp_train_speedup_vs_2_threads",
    "ddp_train_speedup_end_to_end",
    "ddp_ppo_speedup",
    "ddp_ppo_speedup_vs_2_threads",
    "ddp_ppo_speedup_end_to_end",
    "parallel_ceiling",
    "ppo_env_ceiling",
    "ppo_useful_share",
}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_distributed_suite_shape() -> None:
    result = distributed_scaling(BenchSettings(plan=TimingPlan(warmup=0, rounds=1, min_sample_ms=0.0), tiny=True))
    assert set(result) == METRICS
    assert result["ddp_train_speedup"]["goal"] == SCALING_GOAL
    assert result["ddp_ppo_speedup"]["goal"] == SCALING_GOAL
    assert result["ppo_useful_share"]["goal"] == USEFUL_SHARE_GOAL
    for name in METRICS - {"ddp_train_speedup", "ddp_ppo_speedup", "ppo_useful_share"}:
        assert result[name]["goal"] is None, name  # reported beside the goals, not judged
    for name, metric in result.items():
        assert metric["value"] > 0, name
        (case,) = metric["cases"].values()
        assert "load average" in case["description"], name
    assert "1 process x 2 threads" in result["ddp_train_speedup_vs_2_threads"]["cases"]["mnist1d-tiny"]["description"]
    # The whole command takes longer than the run inside it, on 1 and on 2 processes.
    for prefix, case in (("ddp_train", "mnist1d-tiny"), ("ddp_ppo", "mnist1d-blind-4-envs")):
        own = result[f"{prefix}_speedup"]["cases"][case]
        whole = result[f"{prefix}_speedup_end_to_end"]["cases"][case]
        assert whole["plain_ms"] > own["plain_ms"] and whole["ours_ms"] > own["ours_ms"], prefix
    share = result["ppo_useful_share"]["value"]
    assert 0 < share < 1  # host training is a part of the round, never more than all of it


def test_the_training_workload_is_a_valid_wide_run() -> None:
    for threads in (1, 2):
        config = TrainConfig.model_validate(train_config(tiny=False, threads=threads))
        assert config.threads == threads
        assert config.host_overrides == {"widths": [128, 256, 256]}
        assert config.batch_size == 512 and config.max_batches_per_epoch is None  # full epochs
        assert config.batch_size % 2 == 0  # splits across 2 ranks


def test_ceiling_worker_waits_for_go_and_reports_its_span(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("go\n"))
    ceiling_worker(2, tiny=True)
    ready, span = capsys.readouterr().out.splitlines()
    assert ready == "ready"
    start, end = (float(v) for v in span.split())
    assert end > start


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ppo_env_ceiling_worker_steps_its_share_after_go(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("go\n"))
    ppo_env_ceiling_worker(2, 2, tiny=True)  # the second half of the 4 environments
    ready, span = capsys.readouterr().out.splitlines()
    assert ready == "ready"
    start, end = (float(v) for v in span.split())
    assert end > start
