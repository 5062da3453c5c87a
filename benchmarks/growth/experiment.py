"""Lab-notebook experiments for growth on mnist1d (seeds 0-2 only; never tune on seeds >= 100).

Usage: python benchmarks/growth/experiment.py NAME CONFIG.toml [--seeds 0,1,2] [--controller heuristic]
Runs `esper train` once per seed (2 at a time, one torch thread each) under runs/growth-lab/NAME,
then prints test accuracy (mean ± std), parameters, and each run's seed events.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run_one(name: str, config: Path, seed: int, controller: str, epochs: int | None) -> dict:
    out = Path("runs/growth-lab") / name / f"s{seed}"
    cmd = [sys.executable, "-m", "esper", "train", "--config", str(config), "--seed", str(seed),
           "--controller", controller, "--out", str(out), "--overwrite", "--no-progress"]
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, timeout=900, env=env, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("config", type=Path)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--controller", default="heuristic")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with ThreadPoolExecutor(2) as pool:
        summaries = list(pool.map(lambda s: run_one(args.name, args.config, s, args.controller, args.epochs), seeds))
    accs = []
    for seed, summary in zip(seeds, summaries, strict=True):
        acc = summary["test_accuracy"]
        accs.append(100 * acc)
        kept = {k: summary[k] for k in summary if "param" in k or "seed" in k}
        print(seed, f"{100 * acc:.1f}", json.dumps(kept)[:400])
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"{args.name}: {statistics.mean(accs):.2f} ± {std:.2f}  ({', '.join(f'{a:.1f}' for a in accs)})")


if __name__ == "__main__":
    main()
