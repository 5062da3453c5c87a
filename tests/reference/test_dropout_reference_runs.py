"""Runs whose models draw in every training step (dropout) keep the draws they made before RunStream.

The summaries in dropout_summaries.json were written by the esper that lent the run's
generator to torch's global one for each step; the run's own stream must give the same
runs: the same dropout masks, so the same losses, decisions and seeds. One case per way a
host drops out: the CNN's head dropout (nn.Dropout) and the GPT's dropout, which includes
attention dropout inside scaled_dot_product_attention.

After an intended change of behaviour, regenerate and commit them:
    ESPER_UPDATE_REFERENCE=1 pytest tests/reference/test_dropout_reference_runs.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from tests.reference.test_reference_runs import TEXT_CORPUS, _eager, _rounded

from esper.training.config import TrainConfig
from esper.training.trainer import run_training

REFERENCE = Path(__file__).with_name("dropout_summaries.json")

CASES: dict[str, dict[str, Any]] = {
    "mnist1d-dropout-eager-heuristic": {
        "task": "mnist1d", "controller": "heuristic", "epochs": 7, **_eager(),
        "max_batches_per_epoch": 4, "host_overrides": {"dropout": 0.3},
    },
    "text-dropout-eager-heuristic": {
        "task": "text", "controller": "heuristic", "epochs": 7, **_eager(),
        "max_batches_per_epoch": 3, "host_overrides": {"dropout": 0.2},
    },
}  # fmt: skip


def _summary(name: str, tmp_path: Path) -> dict[str, Any]:
    fields = dict(CASES[name])
    if fields["task"] == "text":
        corpus = tmp_path / "corpus.txt"
        corpus.write_text(TEXT_CORPUS, encoding="utf-8")
        fields["text_file"] = str(corpus)
    summary = _rounded(json.loads(json.dumps(run_training(TrainConfig(**fields), out_dir=tmp_path / "run"))))
    summary["config"].pop("text_file", None)
    summary["plan"].pop("text_file", None)
    return summary


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_dropout_run_matches_its_reference(name: str, tmp_path: Path) -> None:
    summary = _summary(name, tmp_path)
    if os.environ.get("ESPER_UPDATE_REFERENCE") == "1":
        stored = json.loads(REFERENCE.read_text(encoding="utf-8")) if REFERENCE.is_file() else {}
        stored[name] = summary
        REFERENCE.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        return
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))[name]
    assert summary == reference
