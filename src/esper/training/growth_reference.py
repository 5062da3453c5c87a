"""What growth gained on a task's default run: measured once with `esper frontier`, committed.

`esper train` prints this next to its own result so a user sees whether growth paid on the host
they just trained, without training the host a second time. The numbers are a measurement on
other seeds (named in the line), never a claim about the run that just finished; they are shown
only when the run used exactly the conditions they were measured under.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esper.seeds.gates import GateConfig
from esper.training.config import TrainConfig


@dataclass(frozen=True)
class GrowthReference:
    """Mean ± sample std of test accuracy (percent) over `seeds`, static host vs heuristic growth."""

    epochs: int
    seeds: str
    static_mean: float
    static_std: float
    grown_mean: float
    grown_std: float
    grown_params: int
    source: str


# esper frontier --task mnist1d --widths 0.25,0.5,1,2 --seeds 3 --seed-start 100 (the ×1 row).
REFERENCES: dict[str, GrowthReference] = {
    "mnist1d": GrowthReference(
        epochs=25,
        seeds="100-102",
        static_mean=97.63,
        static_std=0.50,
        grown_mean=98.30,
        grown_std=0.26,
        grown_params=32_074,
        source="benchmarks/frontier/mnist1d",
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
    # A gain smaller than either spread is not a gain one can claim: say so on the line.
    within = abs(gain) < max(reference.static_std, reference.grown_std)
    verdict = f"{gain:+.2f} points, within the spread over seeds" if within else f"{gain:+.2f} points"
    return (
        f"seeds added {summary['seed_params']:,} parameters to the {summary['host_params']:,}-parameter host · "
        f"measured reference (seeds {reference.seeds}, {reference.source}): this host static "
        f"{reference.static_mean:.2f} ± {reference.static_std:.2f}%, grown by the heuristic "
        f"{reference.grown_mean:.2f} ± {reference.grown_std:.2f}% at {reference.grown_params:,} params "
        f"({verdict})"
    )
