"""Recurrent actor-critic over the factored action space.

obs -> Linear+LayerNorm+ReLU -> LSTM -> LayerNorm -> 8 actor heads + critic.
Sampling is conditional: op first, then the slot from the slots valid for that
op, then the blueprint from those valid in that slot, then the plain heads
(alpha_target, under SET_ALPHA_TARGET, from the targets valid in that slot).
Heads not credited for the chosen op (HEAD_CREDIT) are still sampled, so the
action is complete, but add nothing to log-prob, entropy or the gradient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn

from esper.contracts.actions import HEAD_INDEX, HEADS, ActionSpace
from esper.rl.distributions import (
    ActionMasks,
    MaskedCategorical,
    credit_matrix,
    effective_mask,
    head_mask,
)
from esper.rl.normalizers import check_state_keys

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (1, B, lstm_hidden)


class ActResult(NamedTuple):
    actions: Tensor  # (B, 8) int64, HEADS order
    log_prob: Tensor  # (B,) sum over credited heads
    value: Tensor  # (B,)
    state: LSTMState  # state after this step
    head_entropy: dict[str, Tensor]  # normalised entropy per head (B,), 0 where not credited


class EvaluateResult(NamedTuple):
    log_prob: Tensor  # (B, T) sum over credited heads
    entropy: Tensor  # (B, T) sum over credited heads of normalised entropy
    value: Tensor  # (B, T)
    head_log_probs: dict[str, Tensor]  # (B, T) per head, 0 where not credited


def _mlp_head(n_in: int, n_hidden: int, n_out: int, out_gain: float) -> nn.Sequential:
    first, last = nn.Linear(n_in, n_hidden), nn.Linear(n_hidden, n_out)
    nn.init.orthogonal_(first.weight, gain=math.sqrt(2.0))
    nn.init.orthogonal_(last.weight, gain=out_gain)
    return nn.Sequential(first, nn.ReLU(), last)


class RecurrentActorCritic(nn.Module):
    _credit: Tensor  # registered as a buffer in __init__

    def __init__(
        self,
        obs_dim: int,
        action_space: ActionSpace,
        hidden: int = 128,
        lstm_hidden: int = 128,
        head_hidden: int = 64,
    ) -> None:
        super().__init__()
        for name, value in (("obs_dim", obs_dim), ("hidden", hidden), ("lstm_hidden", lstm_hidden)):
            if value < 1:
                raise ValueError(f"RecurrentActorCritic.{name}: expected >= 1, got {value}")
        if head_hidden < 1:
            raise ValueError(f"RecurrentActorCritic.head_hidden: expected >= 1, got {head_hidden}")
        self.obs_dim = obs_dim
        self.action_space = action_space
        self.hidden = hidden
        self.lstm_hidden = lstm_hidden
        self.head_hidden = head_hidden
        self.head_sizes = action_space.head_sizes()

        encoder_in = nn.Linear(obs_dim, hidden)
        self.encoder = nn.Sequential(encoder_in, nn.LayerNorm(hidden), nn.ReLU())
        nn.init.orthogonal_(encoder_in.weight, gain=math.sqrt(2.0))
        self.lstm = nn.LSTM(hidden, lstm_hidden, batch_first=True)
        for name, param in self.lstm.named_parameters():
            if name.startswith("weight"):
                nn.init.orthogonal_(param, gain=1.0)
        self.lstm_norm = nn.LayerNorm(lstm_hidden)
        self.actor_heads = nn.ModuleDict(
            {name: _mlp_head(lstm_hidden, head_hidden, self.head_sizes[name], 0.01) for name in HEADS}
        )
        self.critic = _mlp_head(lstm_hidden, head_hidden, 1, 1.0)
        for name, param in self.named_parameters():
            # LayerNorm weights stay 1; every bias starts at 0.
            if name.endswith("bias"):
                nn.init.zeros_(param)
        self.register_buffer("_credit", credit_matrix(), persistent=False)

    # ---- state -------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device  # the first layer's weight

    def initial_state(self, batch: int) -> LSTMState:
        zeros = torch.zeros(1, batch, self.lstm_hidden, device=self.device)
        return zeros, zeros.clone()

    @staticmethod
    def reset_state(state: LSTMState, dones: Tensor) -> LSTMState:
        """Zero the recurrent state of envs whose episode just ended (dones (B,) bool)."""
        keep = (~dones).to(state[0].dtype).reshape(1, -1, 1)
        return state[0] * keep, state[1] * keep

    def _step(self, obs: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """One time step: obs (B, D) -> features (B, lstm_hidden)."""
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"policy: obs expected shape (B, {self.obs_dim}), got {tuple(obs.shape)}")
        out, new_state = self.lstm(self.encoder(obs).unsqueeze(1), state)
        return self.lstm_norm(out.squeeze(1)), new_state

    # ---- acting ------------------------------------------------------------
    @torch.no_grad()
    def act(
        self,
        obs: Tensor,
        state: LSTMState,
        masks: ActionMasks,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> ActResult:
        """Choose one action per row. obs (B, D) must already be normalised."""
        masks.validate(self.action_space)
        if tuple(masks.batch_shape) != (obs.shape[0],):
            raise ValueError(
                f"policy.act: masks batch {tuple(masks.batch_shape)} != obs batch {obs.shape[0]}"
            )
        features, new_state = self._step(obs, state)
        rows = torch.arange(obs.shape[0], device=obs.device)
        chosen: dict[str, Tensor] = {}
        log_prob = torch.zeros(obs.shape[0], device=obs.device)
        head_entropy: dict[str, Tensor] = {}
        credit = torch.ones(obs.shape[0], len(HEADS), dtype=torch.bool, device=obs.device)
        for name in HEADS:
            raw_mask = head_mask(masks, name, rows, chosen)
            credited = credit[:, HEAD_INDEX[name]]
            dist = MaskedCategorical(self.actor_heads[name](features), effective_mask(raw_mask, credited))
            choice = dist.mode() if deterministic else dist.sample(generator)
            chosen[name] = choice
            if name == "op":
                credit = self._credit[choice]
            weight = credit[:, HEAD_INDEX[name]].to(log_prob.dtype)
            log_prob = log_prob + dist.log_prob(choice) * weight
            head_entropy[name] = dist.normalized_entropy() * weight
        actions = torch.stack([chosen[name] for name in HEADS], dim=1)
        value = self.critic(features).squeeze(-1)
        return ActResult(actions, log_prob, value, new_state, head_entropy)

    @torch.no_grad()
    def value(self, obs: Tensor, state: LSTMState) -> Tensor:
        """Critic estimate (B,) for normalised obs (B, D), without keeping the new state."""
        features, _ = self._step(obs, state)
        return self.critic(features).squeeze(-1)

    # ---- learning ----------------------------------------------------------
    def evaluate(
        self,
        obs: Tensor,
        state0: LSTMState,
        actions: Tensor,
        masks: ActionMasks,
        dones: Tensor,
    ) -> EvaluateResult:
        """Replay sequences obs (B, T, D) from state0 and score the stored actions (B, T, 8).

        dones (B, T) has the buffer's meaning: dones[:, t] ended the episode
        after step t, so the state is reset before step t + 1, exactly as the
        rollout loop did with `reset_state`.
        """
        if obs.dim() != 3:
            raise ValueError(f"policy.evaluate: obs expected shape (B, T, D), got {tuple(obs.shape)}")
        batch, steps = obs.shape[:2]
        if tuple(actions.shape) != (batch, steps, len(HEADS)):
            raise ValueError(
                f"policy.evaluate: actions expected shape {(batch, steps, len(HEADS))}, "
                f"got {tuple(actions.shape)}"
            )
        if tuple(dones.shape) != (batch, steps) or dones.dtype != torch.bool:
            raise ValueError(
                f"policy.evaluate: dones expected bool (B, T)={(batch, steps)}, got {dones.shape}"
            )
        if tuple(masks.batch_shape) != (batch, steps):
            raise ValueError(f"policy.evaluate: masks batch {tuple(masks.batch_shape)} != {(batch, steps)}")
        state = state0
        per_step = []
        for t in range(steps):
            if t > 0:
                state = self.reset_state(state, dones[:, t - 1])
            features, state = self._step(obs[:, t], state)
            per_step.append(features)
        features = torch.stack(per_step, dim=1).reshape(batch * steps, -1)
        flat_actions = actions.reshape(batch * steps, len(HEADS)).long()
        flat_masks = masks.flatten_batch()
        rows = torch.arange(batch * steps, device=obs.device)
        credit = self._credit[flat_actions[:, HEAD_INDEX["op"]]]
        stored = {name: flat_actions[:, HEAD_INDEX[name]] for name in HEADS}

        log_prob = torch.zeros(batch * steps, device=obs.device)
        entropy = torch.zeros(batch * steps, device=obs.device)
        head_log_probs: dict[str, Tensor] = {}
        for name in HEADS:
            raw_mask = head_mask(flat_masks, name, rows, stored)
            credited = credit[:, HEAD_INDEX[name]]
            dist = MaskedCategorical(self.actor_heads[name](features), effective_mask(raw_mask, credited))
            # where() rather than a 0 weight: 0 * (a huge negative log-prob) could still be NaN.
            head_lp = torch.where(credited, dist.log_prob(flat_actions[:, HEAD_INDEX[name]]), 0.0)
            log_prob = log_prob + head_lp
            entropy = entropy + torch.where(credited, dist.normalized_entropy(), 0.0)
            head_log_probs[name] = head_lp.reshape(batch, steps)
        value = self.critic(features).squeeze(-1)
        return EvaluateResult(
            log_prob.reshape(batch, steps),
            entropy.reshape(batch, steps),
            value.reshape(batch, steps),
            head_log_probs,
        )

    # ---- description -------------------------------------------------------
    def architecture(self) -> dict[str, object]:
        """Constructor arguments as primitives, enough to rebuild this network for a checkpoint."""
        return {
            "obs_dim": self.obs_dim,
            "n_slots": self.action_space.n_slots,
            "n_blueprints": self.action_space.n_blueprints,
            "head_sizes": dict(self.head_sizes),
            "hidden": self.hidden,
            "lstm_hidden": self.lstm_hidden,
            "head_hidden": self.head_hidden,
        }

    @classmethod
    def from_architecture(cls, arch: Mapping[str, object]) -> RecurrentActorCritic:
        keys = ("obs_dim", "n_slots", "n_blueprints", "head_sizes", "hidden", "lstm_hidden", "head_hidden")
        check_state_keys(arch, keys, "RecurrentActorCritic.architecture")
        ints = {}
        for key in keys:
            if key == "head_sizes":
                continue
            value = arch[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"RecurrentActorCritic.architecture: '{key}' expected int, got {value!r}")
            ints[key] = value
        space = ActionSpace(ints["n_slots"], ints["n_blueprints"])
        if arch["head_sizes"] != space.head_sizes():
            raise ValueError(
                f"RecurrentActorCritic.architecture: 'head_sizes' {arch['head_sizes']!r} does not match "
                f"this version's action space {space.head_sizes()}"
            )
        return cls(ints["obs_dim"], space, ints["hidden"], ints["lstm_hidden"], ints["head_hidden"])
