"""Static host widened to the learned policy's parameter count, on evaluate's held-out seeds.

Usage: .venv/bin/python benchmarks/ppo_mnist1d_blind/static_wide.py 35274
(prints each run, then the JSON kept in static_wide.json).
"""
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from esper.tasks import default_tasks
from esper.training.compare import widened_overrides
from esper.training.config import TrainConfig
from esper.training.trainer import run_training

torch.set_num_threads(1)
target = float(sys.argv[1])
task = default_tasks().get("mnist1d-blind")
overrides = widened_overrides(task.host_kind, task.host_config, target)
rows = []
for seed in range(10000, 10005):
    with tempfile.TemporaryDirectory() as out:
        s = run_training(TrainConfig(task="mnist1d-blind", controller="static", seed=seed, host_overrides=overrides),
                         out_dir=Path(out), render=False)
    rows.append({"seed": seed, "test_accuracy": s["test_accuracy"], "total_params": s["total_params"]})
    print(rows[-1], flush=True)
acc = [r["test_accuracy"] * 100 for r in rows]
print(json.dumps({"host_overrides": overrides, "test_accuracy_mean": statistics.fmean(acc),
                  "test_accuracy_std": statistics.stdev(acc), "runs": rows}, indent=1))
