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

from pathlib import Path
from typing import Any

import pytest
from tests.reference.test_reference_runs import _eager, check_against_reference, summary_of

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


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_dropout_run_matches_its_reference(name: str, tmp_path: Path) -> None:
    check_against_reference(REFERENCE, name, summary_of(CASES[name], tmp_path))
