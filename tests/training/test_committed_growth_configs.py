"""The configs committed with the evidence still load, so the commands that quote them rerun.

`benchmarks/frontier/configs/*.toml` are growth configs (`esper frontier --growth-config`,
`--variant`); the files below it (`textwhy/`) are whole run configs (`esper train --config`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from esper.training.config import TrainConfig, read_config_file
from esper.training.frontier import check_growth_config
from esper.training.plan import resolve_plan

ROOT = Path(__file__).parents[2] / "benchmarks" / "frontier" / "configs"
GROWTH_CONFIGS = sorted(ROOT.glob("*.toml"))
RUN_CONFIGS = sorted(path for path in ROOT.rglob("*.toml") if path.parent != ROOT)


def test_the_evidence_configs_are_found() -> None:
    assert {"text-rotate.toml", "text-fast.toml", "full-host-gradient.toml"} <= {p.name for p in GROWTH_CONFIGS}
    assert len(RUN_CONFIGS) >= 10


@pytest.mark.parametrize("path", GROWTH_CONFIGS, ids=lambda path: path.name)
def test_a_committed_growth_config_is_accepted(path: Path) -> None:
    values = read_config_file(path)
    assert check_growth_config(values, str(path)) == values


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda path: path.name)
def test_a_committed_run_config_resolves_to_a_plan(path: Path) -> None:
    plan = resolve_plan(TrainConfig.model_validate(read_config_file(path)))
    assert plan.task == "text"
