"""Lab notebook for the text task: why growth loses (tuning seeds 0 and 1 only; never seeds >= 100).

Usage: python benchmarks/growth/text_lab.py NAME CONFIG.toml [--seeds 0,1] [extra esper train args]
Runs `esper train --config CONFIG --seed S` once per seed, ONE at a time with one torch thread,
under runs/textwhy/NAME-sS, then prints per run: test bits/char, per-char accuracy, parameters and
every lifecycle event (epoch, slot, blueprint, stage, the contribution a judgement used), and
appends the same as one JSON line to benchmarks/growth/text-why-runs.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("text-why-runs.jsonl")


def lifecycle(events: list[dict]) -> list[str]:
    """One short string per seed stage change: e<epoch> <slot> <blueprint> <from>-><to> (reason)."""
    lines = []
    last_contribution: dict[str, float] = {}
    for event in events:
        if event["type"] == "contribution_measured":
            last_contribution[event["slot"]] = event["contribution"]
        if event["type"] != "seed_stage_changed" or event["to_stage"] in ("EMBARGOED", "RESETTING", "DORMANT"):
            continue
        slot = event["slot"]
        note = ""
        if event["to_stage"] in ("FOSSILIZED", "PRUNED") and slot in last_contribution:
            note = f" c={last_contribution[slot]:+.2f}pt"
        lines.append(f"e{event['epoch']} {slot} {event['blueprint']} {event['to_stage']}{note}")
    return lines


def final_contributions(events: list[dict]) -> dict[str, float]:
    """The last measured contribution of each slot (points of per-character accuracy)."""
    found: dict[str, float] = {}
    for event in events:
        if event["type"] == "contribution_measured":
            found[event["slot"]] = round(event["contribution"], 3)
    return found


def run_one(name: str, config: Path, seed: int, extra: list[str]) -> dict:
    out = Path("runs/textwhy") / f"{name}-s{seed}"
    cmd = [sys.executable, "-m", "esper", "train", "--config", str(config), "--seed", str(seed),
           "--out", str(out), "--overwrite", "--no-progress", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    subprocess.run(cmd, check=True, timeout=1800, env=env, stdout=subprocess.DEVNULL)
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    finished = events[-1]["summary"]
    return {
        "name": name,
        "config": str(config),
        "extra_args": extra,
        "experiment_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("ESPER_EXPERIMENT_")},
        "seed": seed,
        "bits_per_char": round(finished["test_loss"] / math.log(2), 4),
        "test_accuracy": round(100 * finished["test_accuracy"], 2),
        "host_params": summary["host_params"],
        "seed_params": summary["seed_params"],
        "total_params": summary["total_params"],
        "lifecycle": lifecycle(events),
        "final_contributions": final_contributions(events),
        "wall_seconds": round(finished["wall_seconds"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("config", type=Path)
    parser.add_argument("--seeds", default="0,1")
    args, extra = parser.parse_known_args()  # anything else goes to `esper train` (e.g. --epochs 50)
    for seed in (int(s) for s in args.seeds.split(",")):
        if seed >= 100:
            raise SystemExit("text_lab: seeds >= 100 are held out; tune on seeds below 100")
        result = run_one(args.name, args.config, seed, extra)
        with RESULTS.open("a", encoding="utf-8") as file:
            file.write(json.dumps(result) + "\n")
        print(f"{args.name} s{seed}: {result['bits_per_char']:.4f} bits/char, {result['test_accuracy']:.2f}%, "
              f"params {result['total_params']} (+{result['seed_params']}), {result['wall_seconds']}s")
        for line in result["lifecycle"]:
            print("   ", line)
        if result["final_contributions"]:
            print("    last contributions:", result["final_contributions"])


if __name__ == "__main__":
    main()
