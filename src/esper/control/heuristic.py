"""The hand-written reference controller: grow early, one seed at a time, keep what measures well.

Every epoch it looks at the live experimental seeds first (row-major slot
order; the first slot that wants to act wins) and only when none of them acts
and there is room for another experiment does it consider germinating. It
proposes only actions that `esper.control.legality` calls executable, so the
executor never refuses one. Its bookkeeping (penalties, rotation, last prune)
is updated when it *proposes* an action: the training loop executes what it
proposes, and a legal proposal always executes.

When to germinate (the budget rule, the default): as soon as the host has
trained `min_epoch_to_germinate` epochs, while at least
`min_epochs_left_to_germinate` epochs remain. Measured on mnist1d (seeds 0-2,
benchmarks/growth/README.md), a seed pays when it co-trains with the host for
most of the budget and does not when it arrives after a plateau; whether it
stays is decided by its measured counterfactual contribution in HOLDING, so a
seed that adds nothing is pruned. The older plateau rule (host stabilised and
validation accuracy flat) is kept behind `require_plateau`.
"""

from __future__ import annotations

import itertools
import math
from typing import Annotated

from pydantic import ConfigDict, Field

from esper.checkpoints.controller_state import CONTROLLER_WHERE, HeuristicState
from esper.checkpoints.errors import CheckpointError
from esper.checkpoints.strict import validate
from esper.contracts.actions import Op
from esper.contracts.alpha import AlphaAlgorithm
from esper.contracts.config import StrictConfig, int_enum
from esper.contracts.lifecycle import ADVANCE_TARGET
from esper.contracts.stages import SeedStage, is_active
from esper.control.baselines import check_blueprints, check_decide_args, check_limits
from esper.control.decision import Decision, EpochSignals
from esper.control.legality import (
    GrowthLimits,
    legal_alpha_targets,
    legal_blueprints,
    legal_slots,
    slot_allows,
)
from esper.model import MorphogeneticModel
from esper.seeds.gates import evaluate_gate
from esper.seeds.slot import SeedSlot

_FULL_ALPHA = 1.0
AlgorithmField = Annotated[AlphaAlgorithm, int_enum(AlphaAlgorithm)]


class HeuristicConfig(StrictConfig):
    """Thresholds of the heuristic, each a documented config value."""

    # Field docstrings become field descriptions (shown by config errors and help).
    model_config = ConfigDict(**StrictConfig.model_config, use_attribute_docstrings=True)

    min_epoch_to_germinate: int = Field(default=1, ge=0)
    """Germinate only once `signals.epoch >= min_epoch_to_germinate`. One epoch: the host has seen
    the data once, so a seed's straight-through signal is about the task rather than about the
    random initialisation, and the seed still gets almost the whole budget to co-train (measured on
    mnist1d: growing from epoch 2 gave +3.5 points over the static host, growing after a plateau
    never happened in 25 epochs)."""
    min_epochs_left_to_germinate: int = Field(default=15, ge=0)
    """Do not germinate when fewer epochs remain. A seed needs about 10 epochs (G1, 3 TRAINING
    epochs, the 5-epoch blend ramp, HOLDING) to be judged, and then about 5 more for the model to
    settle after its fossilization or prune. With 10, a second seed judged 3 epochs before the end
    cost accuracy (mnist1d 8/16/16, seeds 0-2: 93.3 ± 1.0% with 10, 95.7 ± 1.5% with 15)."""
    require_plateau: bool = False
    """True: germinate only once the host is stabilised and its validation accuracy is on a plateau
    (the older rule, `stable_*` and `plateau_*` below). False (default): the budget rule alone
    (epoch and epochs-left bounds). On mnist1d the plateau rule never fired in a 25-epoch run, and
    a seed germinated late has no budget left to pay."""
    rotate_blueprints: bool = False
    """True: each germination takes the next blueprint in the list (round robin). False (default):
    always the first allowed, unpenalised blueprint of the list, so the list is an order of
    preference and a pruned blueprint's penalty moves the choice on. On mnist1d rotating from
    conv_light through the list gave 94.8% where conv_heavy alone gave 96.2% (8/16/16 host)."""
    min_epochs_since_prune: int = Field(default=5, ge=0)
    """Epochs that must pass after a prune this controller proposed before it germinates again."""
    stable_epochs: int = Field(default=3, ge=1)
    """The host counts as stabilised once this many consecutive epochs had a non-rising training
    loss with a relative improvement below `stable_rel_improvement` (latched: once seen, it stays).
    Training loss, not validation loss: on small validation sets the latter is too noisy to ever
    fall monotonically for three epochs."""
    stable_rise_tolerance: float = Field(default=0.01, ge=0.0, allow_inf_nan=False)
    """A relative rise of the training loss up to this much still counts as "non-rising" (SGD noise)."""
    stable_rel_improvement: float = Field(default=0.03, ge=0.0, allow_inf_nan=False)
    """Relative val-loss drop per epoch, (previous - current) / previous, that still counts as stable."""
    plateau_epochs: int = Field(default=3, ge=1)
    """Germinate only after this many epochs without the best validation accuracy rising by
    `plateau_min_gain_points`."""
    plateau_min_gain_points: float = Field(default=0.5, allow_inf_nan=False)
    """Rise of the best validation accuracy (accuracy points) that ends a plateau."""
    prune_penalty: float = Field(default=2.0, ge=0.0, allow_inf_nan=False)
    """Added to a blueprint's penalty each time a seed of it is pruned."""
    penalty_decay: float = Field(default=0.5, gt=0.0, le=1.0)
    """Every penalty is multiplied by this once per epoch (0.5: halved every epoch). With the default
    decay, penalty and `min_epochs_since_prune`, one prune alone never reaches the skip threshold:
    only prunes in quick succession (or a slower decay) make a blueprint skipped."""
    penalty_skip_threshold: float = Field(default=3.0, gt=0.0, allow_inf_nan=False)
    """A blueprint is skipped in the rotation while its penalty is at least this."""
    max_live_experiments: int = Field(default=1, ge=1)
    """Experimental seeds (GERMINATED..HOLDING) alive at once; one at a time keeps each seed's
    measured contribution its own."""
    blend_tempo: int = Field(default=5, ge=0)
    """Epochs the alpha ramp takes once a seed starts BLENDING. Measured on mnist1d (8/16/16 host,
    conv_heavy seeds from epoch 2, seeds 0-2): ramp 5 95.9 ± 1.2%, ramp 1 96.2 ± 1.0%, the same
    within the spread; 5 is also one of the learned controller's action choices (3, 5, 8)."""
    alpha_algorithm: AlgorithmField = AlphaAlgorithm.ADD
    """How germinated seeds are blended in."""
    stall_epochs: int = Field(default=5, ge=1)
    """A GERMINATED or TRAINING seed this many epochs in its stage is checked for a stall."""
    stall_min_improvement_points: float = Field(default=-2.0, allow_inf_nan=False)
    """A GERMINATED or TRAINING seed at least `stall_epochs` in its stage is pruned when the accuracy
    gained since its stage started is below this (points)."""
    fossilize_min_contribution_points: float = Field(default=0.5, allow_inf_nan=False)
    """HOLDING: fossilize when the measured contribution is above this (points), prune otherwise.
    A fossilize the G5 gate would refuse is not proposed: the seed waits in HOLDING instead."""
    prune_if_total_improvement_below: float = Field(default=0.0, allow_inf_nan=False)
    """HOLDING: prune a seed whose contribution is positive while the model's accuracy since the
    seed's germination changed by less than this (points): the model leans on it without gaining."""
    holding_min_epochs: int = Field(default=1, ge=1)
    """Epochs in HOLDING (contribution measured at full alpha) before the seed is judged."""


def relative_drop(previous: float, current: float) -> float:
    """(previous - current) / |previous|; 0 for a zero previous loss that did not change."""
    if previous == 0.0:
        return 0.0 if current == 0.0 else math.inf
    return (previous - current) / abs(previous)


def host_stabilised(train_losses: tuple[float, ...], config: HeuristicConfig) -> bool:
    """True once some run of `stable_epochs` consecutive epochs was stable (see HeuristicConfig)."""
    streak = 0
    for previous, current in itertools.pairwise(train_losses):
        stable = (
            current <= previous * (1.0 + config.stable_rise_tolerance)
            and relative_drop(previous, current) < config.stable_rel_improvement
        )
        streak = streak + 1 if stable else 0
        if streak >= config.stable_epochs:
            return True
    return False


def plateau_length(val_accuracies: tuple[float, ...], config: HeuristicConfig) -> int:
    """Epochs since the best validation accuracy last rose by at least the plateau threshold.

    Compared with the best so far, not the previous epoch: on a small validation
    set accuracy jitters by a few points, so epoch-to-epoch gains come and go by
    chance and a plateau of "consecutive small gains" is rarely seen.
    """
    if not val_accuracies:
        return 0
    best = val_accuracies[0]
    length = 0
    for accuracy in val_accuracies[1:]:
        if 100.0 * (accuracy - best) >= config.plateau_min_gain_points:
            best = accuracy
            length = 0
        else:
            length += 1
    return length


class HeuristicController:
    """Hand-written growth policy, driven by measured contributions (rules: docs/growth.md)."""

    name = "heuristic"

    def __init__(self, config: HeuristicConfig, blueprints: list[str], limits: GrowthLimits) -> None:
        if not isinstance(config, HeuristicConfig):
            raise ValueError(f"heuristic config: expected HeuristicConfig, got {type(config).__name__}")
        check_blueprints(blueprints)
        check_limits(limits)
        self.config = config
        self.blueprints = list(blueprints)
        self.limits = limits
        self.penalties: dict[str, float] = dict.fromkeys(self.blueprints, 0.0)
        self.rotation_index = 0
        self.last_prune_epoch: int | None = None
        self.last_decay_epoch: int | None = None
        self.germinations = 0
        self.prunes = 0
        self.fossilizations = 0

    # ------------------------------------------------------------ deciding
    def decide(self, signals: EpochSignals, model: object) -> Decision:
        check_decide_args(signals, model)
        assert isinstance(model, MorphogeneticModel)
        self._decay_penalties(signals.epoch)
        waiting: list[str] = []
        live = [slot for slot in model.slots() if is_active(slot.stage)]
        for slot in live:
            decision = self._manage(slot, signals, model)
            if decision.op != Op.WAIT:
                return decision
            waiting.append(decision.reason)
        if len(live) >= self.config.max_live_experiments:
            return _wait("; ".join(waiting))
        germinate = self._germination(signals, model)
        if germinate.op == Op.WAIT and waiting:
            return _wait("; ".join([*waiting, germinate.reason]))
        return germinate

    def _manage(self, slot: SeedSlot, signals: EpochSignals, model: MorphogeneticModel) -> Decision:
        """What one live experimental seed needs this epoch (WAIT if nothing)."""
        state = slot.state
        assert state is not None  # is_active implies a seed
        sid, stage, metrics = slot.slot_id, state.stage, state.metrics
        if slot.pending_prune_reason is not None:
            return _wait(f"{sid}: scheduled prune in progress")
        if stage in (SeedStage.GERMINATED, SeedStage.TRAINING):
            gain = metrics.improvement_points()
            if (
                metrics.epochs_in_stage >= self.config.stall_epochs
                and gain is not None
                and gain < self.config.stall_min_improvement_points
            ):
                return self._prune(slot, signals, f"stalled in {stage.name}: {gain:+.2f} pt after "
                                   f"{metrics.epochs_in_stage} epochs")
            return self._advance(slot, model)
        if stage == SeedStage.BLENDING:
            # A partial target (set by someone else) would never pass G3: ramp on to full.
            if slot.alpha.target != _FULL_ALPHA and _FULL_ALPHA in legal_alpha_targets(slot):
                return Decision(
                    Op.SET_ALPHA_TARGET,
                    slot=sid,
                    alpha_target=_FULL_ALPHA,
                    alpha_steps=self.config.blend_tempo,
                    reason=f"{sid}: blend rests at alpha {slot.alpha.alpha:.2f}; ramp to full",
                )
            return self._advance(slot, model)
        return self._judge_holding(slot, signals, model)

    def _advance(self, slot: SeedSlot, model: MorphogeneticModel) -> Decision:
        sid = slot.slot_id
        if slot_allows(model, sid, Op.ADVANCE, self.blueprints, self.limits):
            return Decision(Op.ADVANCE, slot=sid, reason=f"{sid}: {slot.stage.name} gate passes, advance")
        state = slot.state
        assert state is not None
        target = ADVANCE_TARGET[state.stage]
        gate = evaluate_gate(target, state, slot.alpha, slot.gate_config)
        return _wait(f"{sid}: {state.stage.name} waits for {gate.gate.name} ({gate.message})")

    def _judge_holding(self, slot: SeedSlot, signals: EpochSignals, model: MorphogeneticModel) -> Decision:
        state = slot.state
        assert state is not None and state.stage == SeedStage.HOLDING
        sid, metrics = slot.slot_id, state.metrics
        if metrics.epochs_in_stage < self.config.holding_min_epochs:
            held = f"{metrics.epochs_in_stage}/{self.config.holding_min_epochs}"
            return _wait(f"{sid}: HOLDING {held} epochs before judging")
        contribution = metrics.counterfactual_contribution
        if contribution is None:
            return _wait(f"{sid}: HOLDING, contribution not measured yet")
        total = metrics.total_improvement_points()
        if contribution > 0.0 and total is not None and total < self.config.prune_if_total_improvement_below:
            return self._prune(slot, signals, f"contribution {contribution:+.2f} pt but accuracy since "
                               f"germination {total:+.2f} pt")
        if contribution <= self.config.fossilize_min_contribution_points:
            return self._prune(slot, signals, f"contribution {contribution:+.2f} pt <= "
                               f"{self.config.fossilize_min_contribution_points} pt")
        if slot_allows(model, sid, Op.FOSSILIZE, self.blueprints, self.limits):
            self.fossilizations += 1
            why = f"{sid}: contribution {contribution:+.2f} pt: fossilize"
            return Decision(Op.FOSSILIZE, slot=sid, reason=why)
        gate = evaluate_gate(SeedStage.FOSSILIZED, state, slot.alpha, slot.gate_config)
        return _wait(f"{sid}: contribution {contribution:+.2f} pt but G5 refuses ({gate.message})")

    def _prune(self, slot: SeedSlot, signals: EpochSignals, why: str) -> Decision:
        state = slot.state
        assert state is not None
        self.last_prune_epoch = signals.epoch
        if state.blueprint in self.penalties:  # a seed planted by someone else may use another blueprint
            self.penalties[state.blueprint] += self.config.prune_penalty
        self.prunes += 1
        return Decision(Op.PRUNE, slot=slot.slot_id, alpha_steps=0, reason=f"{slot.slot_id}: prune: {why}")

    def _germination(self, signals: EpochSignals, model: MorphogeneticModel) -> Decision:
        cfg, epoch = self.config, signals.epoch
        if epoch < cfg.min_epoch_to_germinate:
            return _wait(f"too early to germinate (epoch {epoch} < {cfg.min_epoch_to_germinate})")
        left = signals.max_epochs - epoch
        if left < cfg.min_epochs_left_to_germinate:
            return _wait(f"too late to germinate ({left} epochs left < {cfg.min_epochs_left_to_germinate})")
        if self.last_prune_epoch is not None and epoch - self.last_prune_epoch < cfg.min_epochs_since_prune:
            since = epoch - self.last_prune_epoch
            return _wait(f"{since}/{cfg.min_epochs_since_prune} epochs since the last prune")
        if cfg.require_plateau:
            if not host_stabilised(signals.train_loss_history, cfg):
                return _wait("host not stabilised (training loss still falling fast, or rising)")
            plateau = plateau_length(signals.val_accuracy_history, cfg)
            if plateau < cfg.plateau_epochs:
                return _wait(f"no plateau ({plateau}/{cfg.plateau_epochs} epochs)")
            why = f"plateau of {plateau} epochs"
        else:
            why = f"{left} epochs left (>= {cfg.min_epochs_left_to_germinate}): budget to grow"
        algorithm = cfg.alpha_algorithm
        for sid in legal_slots(model, Op.GERMINATE, self.blueprints, self.limits, algorithm):
            allowed = set(legal_blueprints(model, sid, self.blueprints, self.limits, algorithm))
            start = self.rotation_index if cfg.rotate_blueprints else 0
            for offset in range(len(self.blueprints)):
                position = (start + offset) % len(self.blueprints)
                blueprint = self.blueprints[position]
                if blueprint in allowed and self.penalties[blueprint] < cfg.penalty_skip_threshold:
                    self.rotation_index = (position + 1) % len(self.blueprints)
                    self.germinations += 1
                    return Decision(
                        Op.GERMINATE, slot=sid, blueprint=blueprint, alpha_algorithm=cfg.alpha_algorithm,
                        blend_steps=cfg.blend_tempo, alpha_target=_FULL_ALPHA,
                        reason=f"{why}: germinate {blueprint} in {sid}",
                    )
        return _wait(f"{why}, but no free slot with an unpenalised blueprint within the limits")

    def _decay_penalties(self, epoch: int) -> None:
        """Decay once per elapsed epoch (a repeated epoch decays nothing)."""
        if self.last_decay_epoch is not None and epoch > self.last_decay_epoch:
            factor = self.config.penalty_decay ** (epoch - self.last_decay_epoch)
            self.penalties = {bp: value * factor for bp, value in self.penalties.items()}
        if self.last_decay_epoch is None or epoch > self.last_decay_epoch:
            self.last_decay_epoch = epoch

    # ------------------------------------------------------------ resuming
    def state_dict(self) -> dict[str, object]:
        return {
            "penalties": {bp: float(v) for bp, v in self.penalties.items()},
            "rotation_index": self.rotation_index,
            "last_prune_epoch": self.last_prune_epoch,
            "last_decay_epoch": self.last_decay_epoch,
            "germinations": self.germinations,
            "prunes": self.prunes,
            "fossilizations": self.fossilizations,
        }

    def load_state_dict(self, state: object) -> None:
        """Strict: the stored schema, then one penalty per blueprint; raises CheckpointError, changing nothing."""
        validated = validate(HeuristicState, state, CONTROLLER_WHERE)
        problems = []
        if set(validated.penalties) != set(self.blueprints):
            found, expected = sorted(validated.penalties), sorted(self.blueprints)
            problems.append(
                (f"{CONTROLLER_WHERE} > penalties", f"expected one entry per blueprint {expected}, got {found}")
            )
        if validated.rotation_index >= len(self.blueprints):
            problems.append(
                (
                    f"{CONTROLLER_WHERE} > rotation_index",
                    f"expected < {len(self.blueprints)} (the blueprint count), got {validated.rotation_index}",
                )
            )
        if problems:
            raise CheckpointError.many(problems)
        self.penalties = {bp: validated.penalties[bp] for bp in self.blueprints}
        self.rotation_index = validated.rotation_index
        self.last_prune_epoch, self.last_decay_epoch = validated.last_prune_epoch, validated.last_decay_epoch
        self.germinations, self.prunes = validated.germinations, validated.prunes
        self.fossilizations = validated.fossilizations


def _wait(reason: str) -> Decision:
    # WAIT names no slot (fields that don't apply keep their defaults); the reason does.
    return Decision(Op.WAIT, reason=reason)
