"""The same seed and config give the same run: summaries compared with committed references.

Refactors promise "no behaviour change"; this test holds them to it. Each case is a short
real run whose lifecycle path differs (a seed fossilized with strict gates, random growth on
the blind host, the transformer host, a static run). Decisions, stages, parameter counts and
epochs must match exactly; floats to 9 significant digits, so a different CPU's last-bit
rounding is not a behaviour change but a changed computation is.

After an intended change of behaviour, regenerate the references and commit them:
    ESPER_UPDATE_REFERENCE=1 pytest tests/reference
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.support import EAGER_CONFIG

from esper.training.config import TrainConfig
from esper.training.trainer import run_training

REFERENCE = Path(__file__).with_name("summaries.json")
TEXT_CORPUS = "def grow(model):\n    return model  # a seed starts as the identity\n" * 400


def _eager() -> dict[str, Any]:
    import tomllib

    return tomllib.loads(EAGER_CONFIG)


CASES: dict[str, dict[str, Any]] = {
    "mnist1d-eager-heuristic": {"task": "mnist1d", "controller": "heuristic", "epochs": 7, **_eager()},
    "mnist1d-blind-random": {
        "task": "mnist1d-blind", "controller": "random", "epochs": 8, "seed": 3, "max_batches_per_epoch": 3,
    },
    "text-eager-heuristic": {"task": "text", "controller": "heuristic", "epochs": 7, **_eager()},
    "mnist1d-static": {"task": "mnist1d", "controller": "static", "epochs": 3, "max_batches_per_epoch": 4},
}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return value if not math.isfinite(value) else float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items() if k not in ("wall_seconds", "versions")}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def summary_of(fields: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The rounded summary of a real run of `fields` (a text case trains on TEXT_CORPUS)."""
    fields = dict(fields)
    if fields["task"] == "text":
        corpus = tmp_path / "corpus.txt"
        corpus.write_text(TEXT_CORPUS, encoding="utf-8")
        fields["text_file"] = str(corpus)
    summary = run_training(TrainConfig(**fields), out_dir=tmp_path / "run")
    summary = _rounded(json.loads(json.dumps(summary)))
    summary["config"].pop("text_file", None)
    summary["plan"].pop("text_file", None)
    return summary


def check_against_reference(reference: Path, name: str, summary: dict[str, Any]) -> None:
    """`summary` equals the one stored under `name` (or, with ESPER_UPDATE_REFERENCE=1, is stored)."""
    if os.environ.get("ESPER_UPDATE_REFERENCE") == "1":
        stored = json.loads(reference.read_text(encoding="utf-8")) if reference.is_file() else {}
        stored[name] = summary
        reference.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return
    assert summary == json.loads(reference.read_text(encoding="utf-8"))[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_run_matches_its_reference(name: str, tmp_path: Path) -> None:
    check_against_reference(REFERENCE, name, summary_of(CASES[name], tmp_path))
