"""Grow a model inside your own PyTorch training loop.

    python docs/examples/grow_in_your_loop.py --epochs 16

The model, the data and the loop are ordinary PyTorch. Esper adds four things:
1. `esper.attach(...)` puts a seed slot after the named submodules;
2. the host optimizer is built from `model.host_parameters()` and one
   optimizer per seed from `model.seed_parameter_groups()`;
3. once per epoch `grower.end_epoch(...)` measures the seeds, asks the
   controller for one decision and carries it out;
4. when seeds appear or go, the seed optimizers are rebuilt.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn

import esper
from esper.adapters import Grower, export_attached
from esper.control import HeuristicConfig
from esper.seeds.gates import GateConfig


class Net(nn.Module):
    """Your model: a small 1-D CNN classifier (nothing Esper-specific in it)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv1d(1, 16, 5, padding=2), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv1d(16, 32, 5, padding=2, stride=2), nn.ReLU())
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(x)).mean(dim=-1))


def make_data(n: int, seed: int, classes: int = 4, length: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy waves whose frequency is the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    t = torch.linspace(0, 2 * math.pi, length)
    phase = torch.rand(n, 1, generator=g) * 2 * math.pi
    x = torch.sin((y[:, None] + 1).float() * t + phase) + 0.8 * torch.randn(n, length, generator=g)
    return x[:, None, :], y


def seed_optimizers(model: esper.AttachedModel, current: dict, lr: float) -> dict:
    """One AdamW per seed: keep the existing ones (and their state), add new seeds, drop pruned ones."""
    groups = model.seed_parameter_groups()
    return {
        slot: current[slot] if slot in current else torch.optim.AdamW(params, lr=lr) for slot, params in groups.items()
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--controller", default="heuristic", help="heuristic, random or static")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=1024, help="training examples")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    x_train, y_train = make_data(args.samples, seed=args.seed)
    x_val, y_val = make_data(256, seed=args.seed + 1)

    # 1. Your model, with a slot after block1 and after block2 (shapes probed from one batch).
    net = Net()
    model = esper.attach(
        net, slots=["block1", "block2"], example_input=x_train[:8], gates=GateConfig(permissive=True)
    )
    # The heuristic's defaults suit long runs; these let a short demo grow.
    heuristic = HeuristicConfig(
        min_epoch_to_germinate=2, min_epochs_left_to_germinate=6, plateau_epochs=1, stable_epochs=1,
        stable_rel_improvement=1.0, blend_tempo=2,
    )
    grower = Grower(model, args.controller, max_epochs=args.epochs, seed=args.seed, heuristic=heuristic)

    # 2. Optimizers from the parameter groups.
    host_optimizer = torch.optim.AdamW(model.host_parameters(), lr=3e-3)
    seeds: dict = {}

    for epoch in range(1, args.epochs + 1):
        model.train()
        total, correct = 0.0, 0
        for start in range(0, len(x_train), 64):
            xb, yb = x_train[start : start + 64], y_train[start : start + 64]
            host_optimizer.zero_grad()
            for optimizer in seeds.values():
                optimizer.zero_grad()
            # A seed in TRAINING learns beside the host; its proximal term keeps its step bounded.
            with model.recording_proximal() as proximal:
                logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            penalty = proximal.penalty()
            (loss if penalty is None else loss + penalty).backward()
            model.measure_gradients()
            host_optimizer.step()
            for optimizer in seeds.values():
                optimizer.step()
            total += float(loss.detach()) * len(yb)
            correct += int((logits.argmax(-1) == yb).sum())
        model.eval()
        with torch.no_grad():
            val_logits = model(x_val)
        val_loss = float(F.cross_entropy(val_logits, y_val))
        val_accuracy = float((val_logits.argmax(-1) == y_val).float().mean())

        # 3. Once per epoch: measure, decide, act.
        step = grower.end_epoch(
            train_loss=total / len(x_train),
            train_accuracy=correct / len(x_train),
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            measure_on=(x_val, y_val),
        )
        # 4. Seeds appeared or went: rebuild their optimizers.
        if step.seeds_changed:
            seeds = seed_optimizers(model, seeds, lr=3e-3)
        action = step.decision.op.name + (f" {step.decision.slot}" if step.decision.slot else "")
        print(
            f"epoch {epoch:2d}  val_acc {val_accuracy:.3f}  {action:<14} "
            f"stages {step.stages}  seed_params {model.param_counts().seeds}"
        )

    static = export_attached(model)  # your module again, fossilized seeds baked in
    summary = {
        "val_accuracy": val_accuracy,
        "seed_params": float(model.param_counts().seeds),
        "fossilized": float(sum(stage == "FOSSILIZED" for stage in step.stages.values())),
        "exported_params": float(sum(p.numel() for p in static.parameters())),
    }
    print("summary", " ".join(f"{k}={v:g}" for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    main()
