"""`esper bench --suite distributed` produces both metrics with the machine's load recorded."""

from __future__ import annotations

import pytest

from esper.bench.distributed_scaling import SCALING_GOAL, USEFUL_SHARE_GOAL, distributed_scaling
from esper.bench.timing import BenchSettings, TimingPlan


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_distributed_suite_shape() -> None:
    result = distributed_scaling(BenchSettings(plan=TimingPlan(warmup=0, rounds=1, min_sample_ms=0.0), tiny=True))
    assert set(result) == {"ddp_train_speedup", "ddp_ppo_speedup", "ppo_useful_share"}
    assert result["ddp_train_speedup"]["goal"] == SCALING_GOAL
    assert result["ppo_useful_share"]["goal"] == USEFUL_SHARE_GOAL
    for metric in result.values():
        assert metric["value"] > 0
        (case,) = metric["cases"].values()
        assert "load average" in case["description"]
    share = result["ppo_useful_share"]["value"]
    assert 0 < share < 1  # host training is a part of the round, never more than all of it
