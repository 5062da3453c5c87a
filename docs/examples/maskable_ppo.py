"""Train sb3-contrib's MaskablePPO on esper.growth_rl.GrowthEnv, and compare it with `esper ppo` on the same budget.

    python docs/examples/maskable_ppo.py --timesteps 256 --out runs/maskable
    python docs/examples/maskable_ppo.py --timesteps 256 --compare --out runs/maskable   # also runs `esper ppo`

Both agents see the same runs (task, episode length, batches per epoch,
reward) and the same number of environment steps (host epochs). Each is then
evaluated greedily on the same held-out run seeds (10000, 10001, ...), beside
the heuristic and the static (never grows) controllers; the table gives the
mean episode return and the mean final validation accuracy. Results go to
OUT/compare.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from esper.growth_rl.gym_env import GymGrowthEnv

import esper.growth_rl

Act = Callable[[GymGrowthEnv, np.ndarray], np.ndarray]


def make_env(args: argparse.Namespace, seed: int) -> GymGrowthEnv:
    return esper.growth_rl.GrowthEnv(
        task=args.task, episode_length=args.episode_length, seed=seed, max_batches_per_epoch=args.max_batches
    )


def evaluate(env: GymGrowthEnv, act: Act, seeds: list[int]) -> dict[str, float]:
    """Greedy episodes on `seeds`: mean return, mean final validation accuracy, refused actions."""
    returns, accuracies, refused = [], [], 0
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        terminated = False
        while not terminated:
            obs, _, terminated, _, info = env.step(act(env, obs))
            refused += not info["action_admitted"]
        returns.append(info["episode_return"])
        accuracies.append(info["final_val_accuracy"])
    return {
        "mean_return": float(np.mean(returns)),
        "mean_final_val_accuracy": float(np.mean(accuracies)),
        "refused_actions": float(refused),
    }


def controller(spec: str) -> Act:
    """Any esper controller ("heuristic", "static", "policy:PATH") acting inside the gym env."""

    def act(env: GymGrowthEnv, _obs: np.ndarray) -> np.ndarray:
        return np.array(env.run_env.expert_action(spec).as_tuple(), dtype=np.int64)

    return act


def run_esper_ppo(args: argparse.Namespace, out: Path) -> tuple[Path, float]:
    """`esper ppo` with the same budget: envs x rounds x episode_length = --timesteps, pure PPO (no imitation)."""
    envs = args.esper_envs
    rounds = max(1, args.timesteps // (envs * args.episode_length))
    config = out / "esper_ppo_config.json"
    config.write_text(json.dumps({"train": {"max_batches_per_epoch": args.max_batches}}))
    command = [
        sys.executable, "-m", "esper", "ppo", "--task", args.task, "--envs", str(envs), "--rounds", str(rounds),
        "--episode-length", str(args.episode_length), "--workers", "0", "--imitate", "0", "--seed", str(args.seed),
        "--config", str(config), "--out", str(out / "esper_ppo"), "--no-progress",
    ]  # fmt: skip
    print("running:", " ".join(command[1:]))
    start = time.perf_counter()
    subprocess.run(command, check=True, timeout=3600)
    return out / "esper_ppo" / "agent.pt", time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    from sb3_contrib import MaskablePPO

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="mnist1d")
    parser.add_argument("--timesteps", type=int, default=256, help="environment steps (host epochs) of training")
    parser.add_argument("--episode-length", type=int, default=8)
    parser.add_argument("--max-batches", type=int, default=2, help="training batches per host epoch")
    parser.add_argument("--n-steps", type=int, default=32, help="MaskablePPO rollout length per update")
    parser.add_argument("--esper-envs", type=int, default=4, help="environments per `esper ppo` round")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-seeds", type=int, default=5)
    parser.add_argument("--compare", action="store_true", help="also train `esper ppo` and evaluate it")
    parser.add_argument("--out", type=Path, default=Path("runs/maskable_ppo"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    env = make_env(args, args.seed)
    agent = MaskablePPO(
        "MlpPolicy", env, n_steps=args.n_steps, batch_size=args.n_steps, n_epochs=4, seed=args.seed, device="cpu"
    )
    start = time.perf_counter()
    agent.learn(total_timesteps=args.timesteps)
    seconds = {"maskable_ppo": time.perf_counter() - start}
    agent.save(args.out / "maskable_ppo.zip")

    def maskable(env: GymGrowthEnv, obs: np.ndarray) -> np.ndarray:
        action, _ = agent.predict(obs, action_masks=env.action_masks(), deterministic=True)
        return np.asarray(action, dtype=np.int64)

    agents: dict[str, Act] = {"maskable_ppo": maskable}
    if args.compare:
        path, seconds["esper_ppo"] = run_esper_ppo(args, args.out)
        agents["esper_ppo"] = controller(f"policy:{path}")
    agents["heuristic"] = controller("heuristic")
    agents["static"] = controller("static")

    seeds = [10_000 + i for i in range(args.eval_seeds)]
    eval_env = make_env(args, seeds[0])
    results = {name: evaluate(eval_env, act, seeds) for name, act in agents.items()}
    for name, row in results.items():
        row["train_seconds"] = seconds.get(name, 0.0)  # controllers that are not trained: 0
    print(f"{'agent':<14}{'mean return':>12}{'final val acc':>15}{'refused':>9}{'train s':>9}")
    for name, row in results.items():
        print(
            f"{name:<14}{row['mean_return']:>12.3f}{row['mean_final_val_accuracy']:>15.4f}"
            f"{row['refused_actions']:>9.0f}{row['train_seconds']:>9.1f}"
        )
    record = {"args": vars(args) | {"out": str(args.out)}, "results": results}
    (args.out / "compare.json").write_text(json.dumps(record, indent=2))
    return results


if __name__ == "__main__":
    main()
