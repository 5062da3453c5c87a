"""What growth gained on a task's default run: measured once with `esper frontier`, committed.

`esper train` prints this next to its own result so a user sees whether growth paid on the host
they just trained, without training the host a second time. The numbers are a measurement on
other seeds (named in the line), never a claim about the run that just finished; they are shown
only when the run used exactly the conditions they were measured under.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from esper.seeds.gates import GateConfig
from esper.training.config import TrainConfig


@dataclass(frozen=True)
class GrowthReference:
    """Mean ± sample std of the task's test metric over `seeds`, static host vs heuristic growth.

    metric "accuracy": percent, higher is better; "bits_per_char": lower is better.
    """

    metric: Literal["accuracy", "bits_per_char"]
    epochs: int
    seeds: str
    static_mean: float
    static_std: float
    grown_mean: float
    grown_std: float
    grown_params: int
    source: str


# esper frontier --task mnist1d --widths 0.25,0.5,1,2 --seeds 3 --seed-start 100 (the ×1 row);
# esper frontier --task text --widths 0.5,1 --static-widths 0.5625,0.625,1.125 --seeds 3
# --seed-start 100 (the ×1 row, the default corpus).
REFERENCES: dict[str, GrowthReference] = {
    "mnist1d": GrowthReference(
        metric="accuracy",
        epochs=25,
        seeds="100-102",
        static_mean=97.63,
        static_std=0.50,
        grown_mean=98.30,
        grown_std=0.26,
        grown_params=32_074,
        source="benchmarks/frontier/mnist1d",
    ),
    "text": GrowthReference(
        metric="bits_per_char",
        epochs=25,
        seeds="100-102",
        static_mean=2.453,
        static_std=0.121,
        grown_mean=2.438,
        grown_std=0.131,
        grown_params=254_913,
        source="benchmarks/frontier/text-default",
    ),
}


def _default_conditions(config: TrainConfig, reference: GrowthReference) -> bool:
    return (
        config.controller == "heuristic"
        and config.epochs in (None, reference.epochs)
        and not config.host_overrides
        and not config.heuristic
        and config.blueprints is None
        and config.gates == GateConfig(permissive=True)
        and config.max_batches_per_epoch is None
        and config.text_file is None  # measured on the default corpus
        and all(
            getattr(config, field) is None
            for field in ("batch_size", "host_lr", "seed_lr", "max_seeds", "seed_budget_ratio")
        )
    )


def reference_line(config: TrainConfig, summary: dict[str, Any]) -> str | None:
    """One line comparing with the committed measurement, or None when it does not apply."""
    reference = REFERENCES.get(config.task)
    if reference is None or not _default_conditions(config, reference):
        return None
    gain = reference.grown_mean - reference.static_mean
    if reference.metric == "accuracy":
        static = f"{reference.static_mean:.2f} ± {reference.static_std:.2f}%"
        grown = f"{reference.grown_mean:.2f} ± {reference.grown_std:.2f}%"
        change = f"{gain:+.2f} points"
    else:
        static = f"{reference.static_mean:.3f} ± {reference.static_std:.3f} bits/char"
        grown = f"{reference.grown_mean:.3f} ± {reference.grown_std:.3f} bits/char"
        change = f"{gain:+.3f} bits/char"
    # A gain smaller than either spread is not a gain one can claim: say so on the line.
    within = abs(gain) < max(reference.static_std, reference.grown_std)
    verdict = f"{change}, within the spread over seeds" if within else change
    # The run's own line gives its accuracy; on a character model the reference is in bits/char,
    # so the run's bits/char (its mean test loss in nats, over ln 2) goes beside it.
    own = "" if reference.metric == "accuracy" else f"this run {summary['test_loss'] / math.log(2):.3f} bits/char · "
    return (
        f"{own}seeds added {summary['seed_params']:,} parameters to the {summary['host_params']:,}-parameter host · "
        f"measured reference (seeds {reference.seeds}, {reference.source}): this host static {static}, "
        f"grown by the heuristic {grown} at {reference.grown_params:,} params ({verdict})"
    )
