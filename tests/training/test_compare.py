"""`esper compare` end to end on a tiny budget, and the widening rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esper.cli.main import main
from esper.training.widening import param_count, widened_overrides


def test_widened_host_matches_the_target_parameter_count() -> None:
    config = {"in_channels": 1, "num_classes": 10, "widths": [32, 64, 64], "spatial_dims": 1}
    base = param_count("cnn", config)
    overrides = widened_overrides("cnn", config, 2.0 * base)
    widened = param_count("cnn", {**config, **overrides})
    assert abs(widened - 2.0 * base) / (2.0 * base) < 0.05
    assert all(w >= b for w, b in zip(overrides["widths"], config["widths"], strict=True))


def test_compare_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compare", "--task", "mnist1d", "--seeds", "1", "--epochs", "2", "--max-batches-per-epoch", "2",
                 "--out", str(tmp_path), "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["variant"] for r in rows] == ["static", "heuristic", "random", "static-wide"]
    for row in rows:
        assert 0.0 <= row["test_accuracy_mean"] <= 1.0
        assert row["total_params_mean"] > 0 and len(row["per_seed"]) == 1
    assert json.loads((tmp_path / "compare.json").read_text()) == rows


def test_compare_rejects_bad_arguments() -> None:
    assert main(["compare", "--seeds", "0"]) == 2
    assert main(["compare", "--task", "nope"]) == 2
