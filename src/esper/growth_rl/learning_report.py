"""learning.png: how a PPO run went, round by round (returns, accuracy, entropy, action mix)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from esper.contracts.actions import Op


def _series(history: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(row[key]) for row in history]


def render_learning(history: Sequence[dict[str, Any]], path: Path, title: str = "esper ppo") -> None:
    """Four panels over rounds; `history` rows come from training.RoundStats.to_dict()."""
    if not history:
        raise ValueError("render_learning: the history is empty (no round finished)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = _series(history, "round")
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    fig.suptitle(title)
    ax = axes[0][0]
    ax.plot(rounds, _series(history, "mean_return"), marker="o", ms=3)
    ax.set_title("mean episode return")
    ax = axes[0][1]
    ax.plot(rounds, [100.0 * v for v in _series(history, "mean_final_val_accuracy")], marker="o", ms=3)
    ax.set_title("mean final val accuracy (%)")
    ax = axes[1][0]
    ax.plot(rounds, _series(history, "entropy"), label="entropy (normalised)", marker="o", ms=3)
    kl = [v if math.isfinite(v) else math.nan for v in _series(history, "approx_kl")]
    twin = ax.twinx()
    twin.plot(rounds, kl, color="tab:red", alpha=0.6, label="approx KL")
    twin.set_ylabel("approx KL", color="tab:red")
    ax.set_title("policy entropy and KL")
    ax = axes[1][1]
    names = [op.name for op in Op]
    shares = [[float(row["action_mix"][name]) for row in history] for name in names]
    ax.stackplot(rounds, shares, labels=names)
    ax.set_ylim(0, 1)
    ax.set_title("action mix (share of steps)")
    # Outside the axes: the stacked shares fill the whole plot area.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    for row in axes:
        for axis in row:
            axis.set_xlabel("round")
            axis.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(temp, dpi=110)
    plt.close(fig)
    temp.replace(path)
