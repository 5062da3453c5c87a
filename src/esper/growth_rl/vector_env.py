"""VectorGrowthEnv: K growth environments stepped in worker processes (rl.ppo's VectorEnv).

Environments are split into contiguous blocks over `n_workers` spawned
processes, each running torch on one thread and loading its dataset once;
a step sends every worker its block's actions before waiting for any, so the
workers train their epochs in parallel. `n_workers=0` steps everything in
this process (tests, debugging).

Env k's episode e uses seed base_seed + e * K + k, and every env owns its RNG
state, so results do not depend on how environments are spread over workers.
Episodes end together (fixed length) and auto-reset: at done, the returned
obs/masks are the next episode's first. Telemetry events of the types in
`event_types` travel back to the parent and are passed to `emit` in env order.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from esper.distributed.group import local_scope
from esper.growth_rl.environment import EnvConfig, GrowthEnv
from esper.growth_rl.masks import masks_from_arrays, masks_to_arrays
from esper.growth_rl.observations import ObservationLayout
from esper.rl.distributions import ActionMasks
from esper.tasks import DataSplits, TaskOptions
from esper.telemetry import events as ev
from esper.training.plan import lookup_task

Emit = Callable[[ev.TelemetryEvent], None]
DEFAULT_EVENT_TYPES: frozenset[str] = frozenset({"reward_computed", "governor_action"})


class EnvWorkerError(RuntimeError):
    """An environment raised inside a worker; the message carries its traceback."""


def episode_seed(base_seed: int, episode: int, n_envs: int, env_index: int) -> int:
    return base_seed + episode * n_envs + env_index


@dataclass
class _Result:
    env_index: int
    obs: np.ndarray
    masks: dict[str, np.ndarray]
    reward: float
    done: bool
    info: dict[str, Any]
    events: list[str]  # JSON lines


class _EnvGroup:
    """The environments of one worker (or of this process when n_workers == 0)."""

    def __init__(
        self,
        configs: dict[int, EnvConfig],
        n_envs: int,
        base_seed: int,
        event_types: frozenset[str],
        env_offset: int = 0,
    ) -> None:
        self.n_envs = n_envs
        self.base_seed = base_seed
        # Under torchrun a rank runs envs offset..offset+K-1 of n_envs; seeds and tags use the global index.
        self.env_offset = env_offset
        self.event_types = event_types
        self.pending: dict[int, list[str]] = {k: [] for k in configs}
        self.episode: dict[int, int] = {k: 0 for k in configs}
        splits_cache: dict[tuple[str, str | None, str | None, int], DataSplits] = {}
        self.envs: dict[int, GrowthEnv] = {}
        for k, config in configs.items():
            train = config.train
            key = (train.task, train.data_dir, train.text_file, train.seed)
            if key not in splits_cache:
                options = TaskOptions(
                    data_dir=None if train.data_dir is None else Path(train.data_dir),
                    text_file=None if train.text_file is None else Path(train.text_file),
                    seed=train.seed,
                )
                splits_cache[key] = lookup_task(train.task).load_data(options)
            self.envs[k] = GrowthEnv(
                config, splits=splits_cache[key], emit=self._collector(k), env_index=k + env_offset
            )

    def _collector(self, k: int) -> Emit:
        def collect(event: ev.TelemetryEvent) -> None:
            if event.type in self.event_types:
                self.pending[k].append(ev.event_to_json(event))

        return collect

    def _drain(self, k: int) -> list[str]:
        events, self.pending[k] = self.pending[k], []
        return events

    def layout(self, _payload: None) -> dict[int, tuple[tuple[str, ...], tuple[str, ...]]]:
        out = {}
        for k, env in self.envs.items():
            if env.layout is None:
                raise ValueError(f"environment {k}: layout is known only after reset")
            out[k] = (env.layout.slot_ids, env.layout.blueprints)
        return out

    def reset(self, episode: int) -> list[_Result]:
        results = []
        for k, env in self.envs.items():
            self.episode[k] = episode
            obs, masks = env.reset(episode_seed(self.base_seed, episode, self.n_envs, k + self.env_offset))
            results.append(_Result(k, obs.numpy(), masks_to_arrays(masks), 0.0, False, {}, self._drain(k)))
        return results

    def expert(self, spec: str) -> dict[int, list[int]]:
        return {k: list(env.expert_action(spec).as_tuple()) for k, env in self.envs.items()}

    def step(self, actions: dict[int, list[int]]) -> list[_Result]:
        if set(actions) != set(self.envs):
            raise ValueError(f"step: expected actions for envs {sorted(self.envs)}, got {sorted(actions)}")
        results = []
        for k, env in self.envs.items():
            obs, reward, done, info, masks = env.step(actions[k])
            if done:
                self.episode[k] += 1
                obs, masks = env.reset(
                    episode_seed(self.base_seed, self.episode[k], self.n_envs, k + self.env_offset)
                )
            results.append(_Result(k, obs.numpy(), masks_to_arrays(masks), reward, done, info, self._drain(k)))
        return results


def _worker_main(
    conn: Connection,
    configs: dict[int, EnvConfig],
    n_envs: int,
    base_seed: int,
    event_types: frozenset[str],
    env_offset: int = 0,
) -> None:
    torch.set_num_threads(1)
    # Ctrl-C reaches the whole process group: the parent handles it and shuts the workers down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        group = _EnvGroup(configs, n_envs, base_seed, event_types, env_offset)
    except Exception:  # report any setup failure to the parent instead of dying silently
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ok", None))
    while True:
        command, payload = conn.recv()
        if command == "close":
            conn.send(("ok", None))
            return
        try:
            result = getattr(group, command)(payload)
        except Exception:  # the parent re-raises it as EnvWorkerError with this traceback
            conn.send(("error", traceback.format_exc()))
            continue
        conn.send(("ok", result))


class VectorGrowthEnv:
    """K GrowthEnvs behind rl.ppo's VectorEnv protocol."""

    def __init__(
        self,
        configs: Sequence[EnvConfig],
        n_workers: int,
        *,
        base_seed: int = 0,
        event_types: frozenset[str] = DEFAULT_EVENT_TYPES,
        emit: Emit | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:
        """`shard` = (offset, total): these envs are envs offset.. of `total` (one rank's share under
        torchrun); their episode seeds and event tags are those of the global index."""
        if not configs:
            raise ValueError("VectorGrowthEnv: expected at least one EnvConfig")
        for index, config in enumerate(configs):
            if not isinstance(config, EnvConfig):
                raise ValueError(f"VectorGrowthEnv configs[{index}]: expected EnvConfig, got {type(config).__name__}")
        lengths = {config.episode_length for config in configs}
        if len(lengths) != 1:
            raise ValueError(f"VectorGrowthEnv: every env needs the same episode_length, got {sorted(lengths)}")
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 0:
            raise ValueError(f"VectorGrowthEnv n_workers: expected an int >= 0, got {n_workers!r}")
        if isinstance(base_seed, bool) or not isinstance(base_seed, int) or base_seed < 0:
            raise ValueError(f"VectorGrowthEnv base_seed: expected an int >= 0, got {base_seed!r}")
        self.n_envs = len(configs)
        self.episode_length = lengths.pop()
        self.n_workers = min(n_workers, self.n_envs)
        self._emit = emit
        self.layout: ObservationLayout | None = None
        self.last_infos: list[dict[str, Any]] = [{} for _ in range(self.n_envs)]
        self.completed: list[dict[str, Any]] = []  # infos of finished episodes, drained by the caller
        self._local: _EnvGroup | None = None
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        indexed = dict(enumerate(configs))
        offset, total = shard if shard is not None else (0, self.n_envs)
        if self.n_workers == 0:
            self._local = _EnvGroup(indexed, total, base_seed, event_types, offset)
            return
        context = mp.get_context("spawn")
        blocks = np.array_split(np.arange(self.n_envs), self.n_workers)
        try:
            for block in blocks:
                parent, child = context.Pipe()
                share = {int(k): indexed[int(k)] for k in block}
                proc = context.Process(
                    target=_worker_main, args=(child, share, total, base_seed, event_types, offset), daemon=True
                )
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
            for worker, conn in enumerate(self._conns):
                self._receive(worker, conn)
        except BaseException:
            self.close()
            raise

    # -------------------------------------------------------------- plumbing
    def _receive(self, worker: int, conn: Connection) -> Any:
        try:
            status, payload = conn.recv()
        except EOFError as error:
            raise EnvWorkerError(f"environment worker {worker} exited unexpectedly") from error
        if status == "error":
            raise EnvWorkerError(f"environment worker {worker} failed:\n{payload}")
        return payload

    def _call(self, command: str, payloads: list[Any]) -> list[Any]:
        """Send every worker its payload first, then collect the answers (so workers run in parallel)."""
        if self._local is not None:
            # The environments' runs are this rank's own, even under torchrun (decentralised PPO).
            with local_scope():
                return [getattr(self._local, command)(payloads[0])]
        for conn, payload in zip(self._conns, payloads, strict=True):
            conn.send((command, payload))
        return [self._receive(worker, conn) for worker, conn in enumerate(self._conns)]

    def _blocks(self) -> int:
        return 1 if self._local is not None else len(self._conns)

    def _gather(self, groups: list[list[_Result]]) -> tuple[Tensor, Tensor, Tensor, ActionMasks]:
        results = sorted((r for group in groups for r in group), key=lambda r: r.env_index)
        if [r.env_index for r in results] != list(range(self.n_envs)):
            raise EnvWorkerError(f"workers answered for envs {[r.env_index for r in results]}")
        for result in results:
            for line in result.events:
                if self._emit is not None:
                    self._emit(ev.parse_event(line))
            self.last_infos[result.env_index] = result.info
            if result.done:
                self.completed.append({"env": result.env_index, **result.info})
        obs = torch.from_numpy(np.stack([r.obs for r in results])).float()
        reward = torch.tensor([r.reward for r in results], dtype=torch.float32)
        done = torch.tensor([r.done for r in results], dtype=torch.bool)
        masks = ActionMasks.stack([masks_from_arrays(r.masks) for r in results])
        return obs, reward, done, masks

    # -------------------------------------------------------------- API
    def reset(self, episode: int = 0) -> tuple[Tensor, ActionMasks]:
        """Start episode `episode` in every env; returns raw obs (K, D) and masks."""
        if isinstance(episode, bool) or not isinstance(episode, int) or episode < 0:
            raise ValueError(f"VectorGrowthEnv.reset episode: expected an int >= 0, got {episode!r}")
        obs, _, _, masks = self._gather(self._call("reset", [episode] * self._blocks()))
        layouts = {}
        for group in self._call("layout", [None] * self._blocks()):
            layouts.update(group)
        distinct = set(layouts.values())
        if len(distinct) != 1:
            raise ValueError(f"VectorGrowthEnv: environments have different slot/blueprint layouts: {distinct}")
        slot_ids, blueprints = distinct.pop()
        self.layout = ObservationLayout(slot_ids, blueprints)
        return obs, masks

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, ActionMasks]:
        if tuple(actions.shape[:1]) != (self.n_envs,) or actions.dim() != 2:
            raise ValueError(f"VectorGrowthEnv.step: expected actions (K={self.n_envs}, 8), got {tuple(actions.shape)}")
        rows = {k: [int(v) for v in row] for k, row in enumerate(actions.tolist())}
        if self._local is not None:
            payloads = [rows]
        else:
            blocks = np.array_split(np.arange(self.n_envs), len(self._conns))
            payloads = [{int(k): rows[int(k)] for k in block} for block in blocks]
        return self._gather(self._call("step", payloads))

    @contextmanager
    def muted(self) -> Iterator[None]:
        """Drop the environments' telemetry events for a while (e.g. an expert's demonstrations)."""
        emit, self._emit = self._emit, None
        try:
            yield
        finally:
            self._emit = emit

    def expert_actions(self, spec: str) -> Tensor:
        """(K, 8): what controller `spec` would do in each env now (see GrowthEnv.expert_action)."""
        rows: dict[int, list[int]] = {}
        for group in self._call("expert", [spec] * self._blocks()):
            rows.update(group)
        if sorted(rows) != list(range(self.n_envs)):
            raise EnvWorkerError(f"workers answered expert actions for envs {sorted(rows)}")
        return torch.tensor([rows[k] for k in range(self.n_envs)], dtype=torch.long)

    def drain_completed(self) -> list[dict[str, Any]]:
        done, self.completed = self.completed, []
        return done

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("close", None))
                conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass  # the worker is already gone: nothing left to close
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []

    def __enter__(self) -> VectorGrowthEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
