"""Random lifecycle action sequences through a MorphogeneticModel (hypothesis state machine).

Properties checked after every step:
- every transition observed is in VALID_TRANSITIONS and continues from the last stage seen;
- a refused action (LifecycleError or a failed gate) leaves the whole state untouched;
- a pruned slot is DORMANT again exactly SLOT_FREE_AFTER_PRUNE_TICKS step_epoch ticks later;
- the model's output is the bare host's (bitwise) whenever no seed runs in forward, or
  every running seed is in TRAINING (straight-through) or blends at alpha 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from torch import Tensor

from esper.blueprints import default_registry
from esper.contracts import SLOT_FREE_AFTER_PRUNE_TICKS, VALID_TRANSITIONS
from esper.contracts.alpha import ALPHA_RAMP_STEPS, ALPHA_TARGETS, AlphaAlgorithm, AlphaCurve
from esper.contracts.gates import GateResult
from esper.contracts.stages import SeedStage, is_active, is_failure, seed_runs_in_forward
from esper.hosts import CNNHost, CNNHostConfig
from esper.model import MorphogeneticModel
from esper.seeds import GateConfig, LifecycleError, SeedSlot

S = SeedStage
SLOT_IDS = ("r0c0", "r0c1", "r0c2")
CNN_BLUEPRINTS = tuple(default_registry().names("cnn"))

# 0.6 is not an allowed target and a steepness <= 0 is invalid: both must be refused cleanly.
targets = st.sampled_from((*ALPHA_TARGETS, 1.0, 1.0, 0.6))  # full strength is what G3 needs
steepness = st.sampled_from((12.0, 6.0, 0.0))
curves = st.sampled_from(tuple(AlphaCurve))



@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # Tiny tensors: a second intra-op thread only adds spin-wait (badly so on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Action names, repeated to weight them (ticks and advances are what reach the deep stages).
ACTIONS = (
    *("step_epoch", "advance") * 5,
    *("germinate", "record_accuracy", "train_and_measure", "record_contribution") * 2,
    "set_alpha_target",
    "prune",
    "fossilize",
)

Snapshot = tuple[list[tuple[object, ...]], dict[str, tuple[Tensor, bool]], dict[str, Tensor]]


class LifecycleMachine(RuleBasedStateMachine):
    model: MorphogeneticModel

    @initialize(permissive=st.booleans())
    def build(self, permissive: bool) -> None:
        torch.manual_seed(0)
        host = CNNHost(CNNHostConfig(in_channels=1, num_classes=3, widths=[4, 8, 8], spatial_dims=1))
        self.model = MorphogeneticModel(host, gates=GateConfig(permissive=permissive))
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(4, 1, 16, generator=g)
        self.y = torch.randint(0, 3, (4,), generator=g)
        self.accuracy = 0.5
        self.perturb_seed = 0
        self.last_stage = {sid: S.DORMANT for sid in SLOT_IDS}
        self.bad_transitions: list[tuple[str, SeedStage, SeedStage]] = []
        self.ticks_since_prune: dict[str, int] = {}
        for slot in self.model.slots():
            slot.stage_listeners.append(self._on_transition)

    # -------------------------------------------------------------- helpers
    def _on_transition(self, slot: SeedSlot, source: SeedStage, target: SeedStage, reason: str) -> None:
        sid = slot.slot_id
        if target not in VALID_TRANSITIONS[source] or source != self.last_stage[sid]:
            self.bad_transitions.append((sid, source, target))
        self.last_stage[sid] = target
        if target == S.PRUNED:
            self.ticks_since_prune[sid] = 0

    def _snapshot(self) -> Snapshot:
        per_slot = [
            (
                slot.stage,
                None if slot.state is None else slot.state.model_dump(),
                slot.alpha.to_dict(),
                slot.pending_prune_reason,
                slot.tick,
                slot.seed is None,
                slot.blend_gate is None,
                slot.alpha.blend,
                slot.alpha.forced,
            )
            for slot in self.model.slots()
        ]
        params = {n: (p.detach().clone(), p.requires_grad) for n, p in self.model.named_parameters()}
        buffers = {n: b.clone() for n, b in self.model.named_buffers()}
        return per_slot, params, buffers

    def _assert_unchanged(self, before: Snapshot, what: str) -> None:
        after = self._snapshot()
        assert after[0] == before[0], f"refused {what} changed slot state"
        assert after[1].keys() == before[1].keys(), f"refused {what} changed the parameter set"
        for name, (value, flag) in before[1].items():
            assert torch.equal(after[1][name][0], value) and after[1][name][1] == flag, f"{what}: {name}"
        assert after[2].keys() == before[2].keys()
        for name, value in before[2].items():
            assert torch.equal(after[2][name], value), f"refused {what} changed buffer {name}"

    def _attempt(self, what: str, action: Callable[[], object]) -> object:
        before = self._snapshot()
        try:
            result = action()
        except LifecycleError:
            self._assert_unchanged(before, what)
            return None
        if isinstance(result, GateResult) and not result.passed:
            self._assert_unchanged(before, what)
        return result

    def _pick(self, data: st.DataObject, occupied: bool) -> str:
        """Mostly a slot the action can apply to (with / without a seed); sometimes any slot."""
        fitting = [s.slot_id for s in self.model.slots() if (s.state is not None) == occupied]
        pool = fitting if fitting and data.draw(st.integers(0, 3), label="fitting") else list(SLOT_IDS)
        return data.draw(st.sampled_from(pool), label="slot")

    # ------------------------------------------------------------- actions
    # The do_* methods are the actions; the rules below only choose their arguments.
    def do_germinate(
        self, sid: str, blueprint: str, algorithm: AlphaAlgorithm, tempo: int, alpha_target: float
    ) -> None:
        result = self._attempt(
            "germinate",
            lambda: self.model.germinate(
                sid, blueprint, alpha_algorithm=algorithm, blend_steps=tempo, alpha_target=alpha_target
            ),
        )
        if result is not None:
            # Seeds are the identity at birth; move them so the output invariants mean something.
            self.perturb_seed += 1
            g = torch.Generator().manual_seed(self.perturb_seed)
            with torch.no_grad():
                for p in self.model.slot(sid).seed_parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.3)

    def do_advance(self, sid: str) -> None:
        self._attempt("advance", lambda: self.model.advance(sid))

    def do_fossilize(self, sid: str) -> None:
        self._attempt("fossilize", lambda: self.model.fossilize(sid))

    def do_prune(self, sid: str, steps: int, curve: AlphaCurve, steep: float) -> None:
        self._attempt(
            "prune", lambda: self.model.prune(sid, "test", steps=steps, curve=curve, steepness=steep)
        )

    def do_set_alpha_target(
        self, sid: str, value: float, steps: int, curve: AlphaCurve, steep: float
    ) -> None:
        self._attempt(
            "set_alpha_target",
            lambda: self.model.set_alpha_target(sid, value, steps=steps, curve=curve, steepness=steep),
        )

    def do_step_epoch(self) -> None:
        cooling = list(self.ticks_since_prune)
        self.model.step_epoch()
        for sid in cooling:
            self.ticks_since_prune[sid] += 1
            ticks = self.ticks_since_prune[sid]
            slot = self.model.slot(sid)
            if ticks < SLOT_FREE_AFTER_PRUNE_TICKS:
                assert is_failure(slot.stage) and not slot.is_free, (sid, ticks, slot.stage)
            else:
                assert ticks == SLOT_FREE_AFTER_PRUNE_TICKS and slot.is_free, (sid, ticks, slot.stage)
                del self.ticks_since_prune[sid]

    def do_record_accuracy(self, delta: float) -> None:
        self.accuracy = min(1.0, max(0.0, self.accuracy + delta))
        for slot in self.model.slots():
            slot.record_accuracy(self.accuracy)

    def do_record_contribution(self, sid: str, value: float) -> None:
        slot = self.model.slot(sid)
        if slot.stage == SeedStage.TRAINING:  # what a TRAINING seed is measured by: its projected gain
            self._attempt("record_projected_contribution", lambda: slot.record_projected_contribution(value))
        else:
            self._attempt("record_contribution", lambda: slot.record_contribution(value))

    def do_train_and_measure(self, sid: str, host_norm: float | None) -> None:
        self.model.train()
        F.cross_entropy(self.model(self.x), self.y).backward()
        self.model.measure_gradients()
        # A chosen host norm lets the ratio land on either side of G2's threshold.
        self.model.slot(sid).measure_gradients(host_norm)
        self.model.zero_grad(set_to_none=True)

    # ---------------------------------------------------------------- rules
    # One rule draws the action: a weighted choice keeps sequences long enough to
    # reach HOLDING and FOSSILIZED (separate rules get switched off at random by
    # hypothesis' swarm testing, which starves the deep stages).
    @rule(data=st.data(), op=st.sampled_from(ACTIONS))
    def act(self, data: st.DataObject, op: str) -> None:
        if op == "germinate":
            self.do_germinate(
                self._pick(data, occupied=False),
                # Two invalid names (a transformer blueprint, an unknown one) among the valid ones.
                data.draw(st.sampled_from((*CNN_BLUEPRINTS, "lora", "missing")), label="blueprint"),
                data.draw(st.sampled_from(tuple(AlphaAlgorithm)), label="algorithm"),
                data.draw(st.sampled_from(ALPHA_RAMP_STEPS), label="tempo"),
                data.draw(targets, label="alpha_target"),
            )
        elif op == "advance":
            self.do_advance(self._pick(data, occupied=True))
        elif op == "fossilize":
            self.do_fossilize(self._pick(data, occupied=True))
        elif op == "prune":
            self.do_prune(
                self._pick(data, occupied=True),
                data.draw(st.sampled_from((0, 3, 5)), label="steps"),
                data.draw(curves, label="curve"),
                data.draw(steepness, label="steepness"),
            )
        elif op == "set_alpha_target":
            self.do_set_alpha_target(
                self._pick(data, occupied=True),
                data.draw(targets, label="target"),
                data.draw(st.sampled_from((0, 3, 5)), label="steps"),
                data.draw(curves, label="curve"),
                data.draw(steepness, label="steepness"),
            )
        elif op == "step_epoch":
            self.do_step_epoch()
        elif op == "record_accuracy":
            self.do_record_accuracy(data.draw(st.sampled_from((-0.02, 0.0, 0.01, 0.03)), label="delta"))
        elif op == "record_contribution":
            value = data.draw(st.sampled_from((-1.0, 0.0, 0.5, 1.0, 2.5)), label="contribution")
            self.do_record_contribution(self._pick(data, occupied=True), value)
        else:
            assert op == "train_and_measure", op
            host_norm = data.draw(st.sampled_from((None, 1e-3, 10.0)), label="host_norm")
            self.do_train_and_measure(self._pick(data, occupied=True), host_norm)

    # ----------------------------------------------------------- invariants
    @invariant()
    def invariants(self) -> None:
        if hasattr(self, "model"):  # invariants also run before the initialize rule
            self.check_all()

    def check_all(self) -> None:
        self.check_transitions()
        self.check_slot_consistency()
        self.check_host_output()

    def check_transitions(self) -> None:
        assert not self.bad_transitions, self.bad_transitions
        for slot in self.model.slots():
            assert slot.stage == self.last_stage[slot.slot_id]

    def check_slot_consistency(self) -> None:
        for slot in self.model.slots():
            stage = slot.stage
            assert stage != S.UNKNOWN and (slot.state is None) == (stage == S.DORMANT)
            has_seed = is_active(stage) or stage == S.FOSSILIZED
            assert (slot.seed is not None) == has_seed, (slot.slot_id, stage)
            gated = slot.state is not None and slot.state.alpha_algorithm == AlphaAlgorithm.GATE
            assert (slot.blend_gate is not None) == (has_seed and gated)
            alpha = slot.alpha.alpha
            assert 0.0 <= alpha <= 1.0
            if stage in (S.GERMINATED, S.TRAINING) or not has_seed:
                assert alpha == 0.0, (stage, alpha)
            if stage == S.FOSSILIZED or (stage == S.HOLDING and slot.pending_prune_reason is None):
                assert alpha == 1.0, (stage, alpha)
            frozen = slot.pending_prune_reason is not None
            assert all(p.requires_grad != frozen for p in slot.seed_parameters())

    def check_host_output(self) -> None:
        running = [s for s in self.model.slots() if seed_runs_in_forward(s.stage)]
        if not all(s.stage == S.TRAINING or s.alpha.alpha == 0.0 for s in running):
            return
        self.model.eval()
        with torch.no_grad():
            assert torch.equal(self.model(self.x), self.model.host(self.x))
        self.model.train()


TestLifecycleStateMachine = LifecycleMachine.TestCase
TestLifecycleStateMachine.settings = settings(
    max_examples=40,
    stateful_step_count=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_scripted_run_reaches_every_stage() -> None:
    """The same machine driven by hand through every stage, so each property is exercised."""
    m = LifecycleMachine()
    m.build(permissive=False)
    steps: list[Callable[[], None]] = [
        lambda: m.do_germinate("r0c1", "conv_light", AlphaAlgorithm.GATE, 3, 1.0),
        lambda: m.do_germinate("r0c0", "attention", AlphaAlgorithm.MULTIPLY, 0, 0.7),
        lambda: m.do_record_accuracy(0.0),
        lambda: m.do_advance("r0c1"),
        lambda: m.do_advance("r0c0"),
        lambda: m.do_advance("r0c1"),  # G2 refused: nothing measured yet
        *[m.do_step_epoch] * 3,
        lambda: m.do_record_accuracy(0.03),
        lambda: m.do_record_contribution("r0c1", 2.5),  # projected gains (both seeds are TRAINING)
        lambda: m.do_record_contribution("r0c0", 1.0),
        lambda: m.do_train_and_measure("r0c1", 1e-3),
        lambda: m.do_train_and_measure("r0c0", 1e-3),
        lambda: m.do_advance("r0c1"),
        lambda: m.do_advance("r0c0"),
        lambda: m.do_prune("r0c0", 3, AlphaCurve.LINEAR, 0.0),  # refused: bad steepness
        lambda: m.do_prune("r0c0", 3, AlphaCurve.LINEAR, 12.0),
        lambda: m.do_set_alpha_target("r0c1", 0.6, 3, AlphaCurve.LINEAR, 12.0),  # refused: bad target
        *[m.do_step_epoch] * 3,
        lambda: m.do_set_alpha_target("r0c1", 0.5, 3, AlphaCurve.LINEAR, 0.0),  # refused: bad steepness
        lambda: m.do_advance("r0c1"),  # HOLDING
        lambda: m.do_set_alpha_target("r0c1", 0.7, 0, AlphaCurve.LINEAR, 12.0),  # back to BLENDING
        lambda: m.do_set_alpha_target("r0c1", 1.0, 3, AlphaCurve.SIGMOID, 6.0),
        *[m.do_step_epoch] * 3,
        lambda: m.do_advance("r0c1"),  # HOLDING again
        lambda: m.do_record_contribution("r0c1", 0.5),
        lambda: m.do_fossilize("r0c1"),  # refused: contribution below 1 pt
        lambda: m.do_record_contribution("r0c1", 2.5),
        lambda: m.do_fossilize("r0c1"),
        *[m.do_step_epoch] * SLOT_FREE_AFTER_PRUNE_TICKS,
        lambda: m.do_germinate("r0c0", "norm", AlphaAlgorithm.ADD, 3, 1.0),
    ]
    for step in steps:
        step()
        m.check_all()
    model = m.model
    assert model.slot("r0c1").stage == S.FOSSILIZED
    assert model.slot("r0c0").stage == S.GERMINATED
    history = [r.stage for r in model.slot("r0c1").state.history]  # type: ignore[union-attr]
    assert history == [S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.BLENDING, S.HOLDING, S.FOSSILIZED]
    assert not m.ticks_since_prune  # r0c0's cooldown finished exactly on time
