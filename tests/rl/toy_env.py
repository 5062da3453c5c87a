"""A tiny synthetic lifecycle environment with Esper's factored action space and exact masks.

Two slots, three blueprints, episodes of 6 steps. Each episode draws a
context (which blueprint is the good one), shown in the observation, so no
fixed action sequence can score well: the policy must read its input. Each slot
moves through a
miniature lifecycle (DORMANT -> GERMINATED -> TRAINING -> BLENDING -> HOLDING
-> FOSSILIZED, or PRUNED to EMBARGOED for the rest of the episode). Rewards:
  +1 GERMINATE the good blueprint into slot 0 at step 0,
  +1 ADVANCE of slot 0 while it holds the good blueprint (three advances reach HOLDING),
  +2 FOSSILIZE of slot 0 while it holds the good blueprint,
  0 for everything else.
The optimal episode is therefore: germinate(slot 0, good blueprint), advance x3,
fossilize, then anything: return 1 + 3 + 2 = 6 (see `optimal_return`). Actions
that break the masks raise, so a training run doubles as a mask-respect check.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from esper.contracts.actions import HEAD_INDEX, ActionSpace, Op
from esper.contracts.stages import SeedStage
from esper.rl.distributions import ActionMasks

N_SLOTS = 2
N_BLUEPRINTS = 3
EPISODE_LEN = 6
GOOD_SLOT = 0
ACTION_SPACE = ActionSpace(N_SLOTS, N_BLUEPRINTS)

STAGES: tuple[SeedStage, ...] = (
    SeedStage.DORMANT,
    SeedStage.GERMINATED,
    SeedStage.TRAINING,
    SeedStage.BLENDING,
    SeedStage.HOLDING,
    SeedStage.FOSSILIZED,
    SeedStage.EMBARGOED,
)
ADVANCE_NEXT = {
    SeedStage.GERMINATED: SeedStage.TRAINING,
    SeedStage.TRAINING: SeedStage.BLENDING,
    SeedStage.BLENDING: SeedStage.HOLDING,
}
ACTIVE = (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING)
NO_BLUEPRINT = -1
OBS_DIM = EPISODE_LEN + N_BLUEPRINTS + N_SLOTS * len(STAGES) + N_SLOTS * (N_BLUEPRINTS + 1)


@dataclass(frozen=True)
class ToyState:
    good_blueprint: int
    t: int
    stages: tuple[SeedStage, ...]
    blueprints: tuple[int, ...]

    @staticmethod
    def initial(good_blueprint: int) -> ToyState:
        return ToyState(good_blueprint, 0, (SeedStage.DORMANT,) * N_SLOTS, (NO_BLUEPRINT,) * N_SLOTS)

    def next(self, stages: tuple[SeedStage, ...], blueprints: tuple[int, ...]) -> ToyState:
        return ToyState(self.good_blueprint, self.t + 1, stages, blueprints)


def valid_slots(state: ToyState, op: Op) -> list[bool]:
    """Slots in which `op` can be carried out (empty for WAIT, which needs no slot)."""
    rules = {
        Op.WAIT: (),
        Op.GERMINATE: (SeedStage.DORMANT,),
        Op.SET_ALPHA_TARGET: (SeedStage.BLENDING, SeedStage.HOLDING),
        Op.PRUNE: ACTIVE,
        Op.FOSSILIZE: (SeedStage.HOLDING,),
        Op.ADVANCE: tuple(ADVANCE_NEXT),
    }
    return [stage in rules[op] for stage in state.stages]


def valid_blueprints(state: ToyState, slot: int) -> list[bool]:
    """Empty slots take any blueprint except blueprint 0 in slot 1 (a conditional mask to respect)."""
    if state.stages[slot] != SeedStage.DORMANT:
        return [False] * N_BLUEPRINTS
    return [not (slot == 1 and bp == 0) for bp in range(N_BLUEPRINTS)]


# alpha_target 0 (0.5) is never allowed here: exercises a partially masked plain head.
ALPHA_TARGET_VALID = (False, True, True)


def masks_for(state: ToyState) -> dict[str, list]:
    slot_by_op = [valid_slots(state, op) for op in Op]
    op = [True if o == Op.WAIT else any(slot_by_op[o]) for o in Op]
    sizes = ACTION_SPACE.head_sizes()
    return {
        "op": op,
        "slot_by_op": slot_by_op,
        "blueprint_by_slot": [valid_blueprints(state, s) for s in range(N_SLOTS)],
        "style": [True] * sizes["style"],
        "tempo": [True] * sizes["tempo"],
        "alpha_target": list(ALPHA_TARGET_VALID),
        "alpha_speed": [True] * sizes["alpha_speed"],
        "alpha_curve": [True] * sizes["alpha_curve"],
    }


def transition(state: ToyState, action: list[int]) -> tuple[ToyState, float]:
    """Apply one action (HEADS order); raises if it breaks the masks."""
    op = Op(action[HEAD_INDEX["op"]])
    slot = action[HEAD_INDEX["slot"]]
    masks = masks_for(state)
    if not masks["op"][op]:
        raise ValueError(f"toy env: op {op.name} is masked at {state}")
    if op == Op.WAIT:
        return state.next(state.stages, state.blueprints), 0.0
    if not masks["slot_by_op"][op][slot]:
        raise ValueError(f"toy env: slot {slot} is masked for {op.name} at {state}")
    if (
        op in (Op.GERMINATE, Op.SET_ALPHA_TARGET)
        and not masks["alpha_target"][action[HEAD_INDEX["alpha_target"]]]
    ):
        raise ValueError(f"toy env: alpha_target {action[HEAD_INDEX['alpha_target']]} is masked")
    stages, blueprints = list(state.stages), list(state.blueprints)
    good = slot == GOOD_SLOT and blueprints[slot] == state.good_blueprint
    reward = 0.0
    if op == Op.GERMINATE:
        blueprint = action[HEAD_INDEX["blueprint"]]
        if not masks["blueprint_by_slot"][slot][blueprint]:
            raise ValueError(f"toy env: blueprint {blueprint} is masked in slot {slot}")
        stages[slot], blueprints[slot] = SeedStage.GERMINATED, blueprint
        reward = 1.0 if (state.t == 0 and slot == GOOD_SLOT and blueprint == state.good_blueprint) else 0.0
    elif op == Op.ADVANCE:
        stages[slot] = ADVANCE_NEXT[stages[slot]]
        reward = 1.0 if good else 0.0
    elif op == Op.FOSSILIZE:
        stages[slot] = SeedStage.FOSSILIZED
        reward = 2.0 if good else 0.0
    elif op == Op.PRUNE:
        stages[slot], blueprints[slot] = SeedStage.EMBARGOED, NO_BLUEPRINT
    return state.next(tuple(stages), tuple(blueprints)), reward


def observe(state: ToyState) -> list[float]:
    obs = [0.0] * OBS_DIM
    obs[min(state.t, EPISODE_LEN - 1)] = 1.0
    obs[EPISODE_LEN + state.good_blueprint] = 1.0
    offset = EPISODE_LEN + N_BLUEPRINTS
    for s in range(N_SLOTS):
        obs[offset + STAGES.index(state.stages[s])] = 1.0
        offset += len(STAGES)
    for s in range(N_SLOTS):
        obs[offset + state.blueprints[s] + 1] = 1.0
        offset += N_BLUEPRINTS + 1
    return obs


def optimal_return(good_blueprint: int) -> float:
    """Best achievable episode return, by exhaustive search over the (small) reachable state space."""
    memo: dict[ToyState, float] = {}

    def best(state: ToyState) -> float:
        if state.t == EPISODE_LEN:
            return 0.0
        if state in memo:
            return memo[state]
        masks = masks_for(state)
        value = best(transition(state, [Op.WAIT, 0, 0, 0, 0, 1, 0, 0])[0])
        for op in Op:
            if op == Op.WAIT or not masks["op"][op]:
                continue
            for slot in range(N_SLOTS):
                if not masks["slot_by_op"][op][slot]:
                    continue
                for bp in range(N_BLUEPRINTS) if op == Op.GERMINATE else (0,):
                    if op == Op.GERMINATE and not masks["blueprint_by_slot"][slot][bp]:
                        continue
                    nxt, reward = transition(state, [op, slot, bp, 0, 0, 1, 0, 0])
                    value = max(value, reward + best(nxt))
        memo[state] = value
        return value

    return best(ToyState.initial(good_blueprint))


class ToyVecEnv:
    """N independent copies, auto-resetting; implements esper.rl.ppo.VectorEnv.

    Each new episode draws its good blueprint from a seeded generator, unless
    `contexts` fixes it per env (for evaluation over every context).
    """

    def __init__(self, n_envs: int, seed: int = 0, contexts: list[int] | None = None) -> None:
        if contexts is not None and len(contexts) != n_envs:
            raise ValueError(f"ToyVecEnv: contexts expected {n_envs} entries, got {len(contexts)}")
        self.n_envs = n_envs
        self.contexts = contexts
        self.generator = torch.Generator().manual_seed(seed)
        self.states = [self._new_episode(i) for i in range(n_envs)]

    def _new_episode(self, env: int) -> ToyState:
        if self.contexts is not None:
            return ToyState.initial(self.contexts[env])
        return ToyState.initial(int(torch.randint(N_BLUEPRINTS, (1,), generator=self.generator)))

    def reset(self) -> tuple[Tensor, ActionMasks]:
        self.states = [self._new_episode(i) for i in range(self.n_envs)]
        return self._observe()

    def _observe(self) -> tuple[Tensor, ActionMasks]:
        obs = torch.tensor([observe(s) for s in self.states], dtype=torch.float32)
        per_env = [masks_for(s) for s in self.states]
        masks = ActionMasks(
            **{k: torch.tensor([m[k] for m in per_env], dtype=torch.bool) for k in per_env[0]}
        )
        return obs, masks

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor, ActionMasks]:
        rewards, dones = [], []
        for i, row in enumerate(actions.tolist()):
            nxt, reward = transition(self.states[i], row)
            done = nxt.t == EPISODE_LEN
            self.states[i] = self._new_episode(i) if done else nxt
            rewards.append(reward)
            dones.append(done)
        obs, masks = self._observe()
        return obs, torch.tensor(rewards), torch.tensor(dones), masks


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread: these tensors are tiny, and on a loaded 2-core machine
    (or under pytest-xdist) intra-op threads contend and make every op ~20x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
