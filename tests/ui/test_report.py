"""report.png from synthetic event sequences (no training loop needed)."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from esper.telemetry.backends.jsonl import JsonlBackend
from esper.telemetry.events import (
    ContributionMeasured,
    EpochMetrics,
    GovernorAction,
    RunFinished,
    RunStarted,
    SeedStageChanged,
    SlotSnapshot,
    TelemetryEvent,
)
from esper.ui.report import build_figure, collect_timeline, render_report, render_report_from_file

SLOTS = ["r0c0", "r0c1", "r0c2"]
HOST_PARAMS = 20_000
BLUEPRINT_PARAMS = {"conv_light": 1_500, "conv_heavy": 6_000, "attention": 800}
ALPHA_STEP = 0.2  # alpha gained per epoch while BLENDING

# slot -> [(epoch the change is logged at, target stage, blueprint)]; logged after that epoch's metrics.
FOSSILIZE_PLAN = {
    "r0c1": [(3, "GERMINATED", "conv_light"), (4, "TRAINING", None), (7, "BLENDING", None),
             (12, "HOLDING", None), (15, "FOSSILIZED", None)],
}
PRUNE_PLAN = {
    "r0c0": [(2, "GERMINATED", "conv_heavy"), (3, "TRAINING", None), (6, "BLENDING", None),
             (9, "PRUNED", None), (10, "EMBARGOED", None), (14, "RESETTING", None), (15, "DORMANT", None),
             (16, "GERMINATED", "attention"), (17, "TRAINING", None)],
}


class _SlotState:
    def __init__(self) -> None:
        self.stage = "DORMANT"
        self.blueprint: str | None = None
        self.alpha = 0.0
        self.epochs_in_stage = 0

    def params(self) -> int:
        if self.blueprint is None or self.stage in ("DORMANT", "PRUNED", "EMBARGOED", "RESETTING"):
            return 0
        return BLUEPRINT_PARAMS[self.blueprint]


def synthetic_run(
    plan: dict[str, list[tuple[int, str, str | None]]],
    epochs: int = 20,
    rollback_at: int | None = None,
    finished: bool = True,
    controller: str = "heuristic",
) -> list[TelemetryEvent]:
    """A plausible run: metrics per epoch, lifecycle changes after them, alpha ramps while blending."""
    events: list[TelemetryEvent] = [
        RunStarted(epoch=-1, task="mnist1d", controller=controller, seed=7, config={"epochs": epochs},
                   plan={"epochs": epochs}, versions={"esper": "test"}, slots=SLOTS, host_params=HOST_PARAMS)
    ]
    states = {slot: _SlotState() for slot in SLOTS}
    for epoch in range(1, epochs + 1):
        for state in states.values():  # step_epoch: ramps and stage clocks
            state.epochs_in_stage += 1
            if state.stage == "BLENDING":
                state.alpha = min(1.0, round(state.alpha + ALPHA_STEP, 6))
        val = 0.3 + 0.6 * (1 - math.exp(-epoch / 5))
        train = min(1.0, val + 0.03)
        train_loss = 2.3 * math.exp(-epoch / 6)
        if epoch == rollback_at:
            events.append(GovernorAction(epoch=epoch, action="rollback", reason="loss is NaN", rollbacks=1,
                                         pruned_slots=[]))
            train, train_loss = math.nan, math.nan
        for slot, state in states.items():
            if state.alpha > 0:
                events.append(ContributionMeasured(epoch=epoch, slot=slot, contribution=1.5, velocity=0.4))
        seed_params = sum(state.params() for state in states.values())
        events.append(EpochMetrics(
            epoch=epoch, train_loss=train_loss, train_accuracy=train, val_loss=train_loss * 1.1,
            val_accuracy=val, host_params=HOST_PARAMS, seed_params=seed_params,
            total_params=HOST_PARAMS + seed_params,
            slots={slot: SlotSnapshot(stage=s.stage, blueprint=s.blueprint, alpha=s.alpha,
                                      contribution=1.5 if s.alpha > 0 else None,
                                      epochs_in_stage=s.epochs_in_stage)
                   for slot, s in states.items()},
        ))
        for slot, changes in plan.items():
            for at, target, blueprint in changes:
                if at != epoch:
                    continue
                state = states[slot]
                if blueprint is not None:
                    state.blueprint = blueprint
                events.append(SeedStageChanged(
                    epoch=epoch, slot=slot, blueprint=state.blueprint, from_stage=state.stage, to_stage=target,
                    reason="synthetic", alpha=state.alpha, seed_params=state.params(),
                ))
                state.stage, state.epochs_in_stage = target, 0
                if target in ("HOLDING", "FOSSILIZED"):
                    state.alpha = 1.0
                if target in ("PRUNED", "DORMANT"):
                    state.alpha = 0.0
                if target == "DORMANT":
                    state.blueprint = None
    if finished:
        events.append(RunFinished(epoch=epochs, summary={"test_accuracy": 0.9312, "wall_seconds": 12.5},
                                  reason="completed"))
    return events


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", header[16:24])


def test_grown_run_report_is_written_with_expected_size(tmp_path: Path) -> None:
    events = synthetic_run({**FOSSILIZE_PLAN, **PRUNE_PLAN})
    out = tmp_path / "report.png"
    render_report(events, out)
    # 13 in wide at 110 dpi; three slots give a 2.4 in swimlane under 3.4 + 2.3 in of curves.
    assert png_size(out) == (1430, 891)
    assert out.stat().st_size > 60_000  # a blank figure of this size is ~10 kB
    assert list(tmp_path.iterdir()) == [out]  # atomic write leaves no temporary file


def test_static_run_renders(tmp_path: Path) -> None:
    out = tmp_path / "static.png"
    render_report(synthetic_run({}, epochs=12, controller="static"), out)
    assert png_size(out) == (1430, 891)
    assert out.stat().st_size > 30_000


def test_rollback_and_unfinished_run_render(tmp_path: Path) -> None:
    out = tmp_path / "rollback.png"
    events = synthetic_run(PRUNE_PLAN, epochs=18, rollback_at=12, finished=False)
    render_report(events, out)
    assert png_size(out)[0] == 1430
    timeline = collect_timeline(events)
    assert [action.epoch for action in timeline.rollbacks] == [12]
    assert timeline.test_accuracy is None


def test_report_from_events_file_matches_in_memory_render(tmp_path: Path) -> None:
    events = synthetic_run({**FOSSILIZE_PLAN, **PRUNE_PLAN})
    backend = JsonlBackend(tmp_path / "events.jsonl")
    for event in events:
        backend.write(event)
    backend.close()
    render_report(events, tmp_path / "memory.png")
    render_report_from_file(tmp_path / "events.jsonl", tmp_path / "file.png")
    # Agg output is deterministic, so a faithful replay gives the same bytes.
    assert (tmp_path / "file.png").read_bytes() == (tmp_path / "memory.png").read_bytes()


def test_non_finite_metrics_read_back_from_strict_json_render_like_in_memory(tmp_path: Path) -> None:
    events = synthetic_run(PRUNE_PLAN, epochs=18, rollback_at=12, finished=False)
    events.append(RunFinished(epoch=18, summary={"test_accuracy": math.nan}, reason="completed"))
    backend = JsonlBackend(tmp_path / "events.jsonl")
    for event in events:
        backend.write(event)
    backend.close()
    text = (tmp_path / "events.jsonl").read_text()
    assert '"train_loss":"NaN"' in text and "NaN," not in text
    render_report(events, tmp_path / "memory.png")
    render_report_from_file(tmp_path / "events.jsonl", tmp_path / "file.png")
    assert (tmp_path / "file.png").read_bytes() == (tmp_path / "memory.png").read_bytes()


def test_timeline_keeps_last_metrics_of_a_repeated_epoch_and_sorts_slots() -> None:
    events = synthetic_run({}, epochs=4)
    repeated = events[2].model_copy(update={"val_accuracy": 0.123})
    assert isinstance(repeated, EpochMetrics)
    timeline = collect_timeline([*events, repeated])
    assert [m.epoch for m in timeline.epochs] == [1, 2, 3, 4]
    assert timeline.epochs[repeated.epoch - 1].val_accuracy == 0.123
    assert timeline.slots == SLOTS
    assert timeline.test_accuracy == pytest.approx(0.9312)


def test_missing_run_started_is_a_clear_error(tmp_path: Path) -> None:
    events = synthetic_run({}, epochs=3)[1:]
    with pytest.raises(ValueError, match="no run_started event"):
        render_report(events, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_no_epochs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no epoch_metrics event"):
        render_report(synthetic_run({}, epochs=3)[:1], tmp_path / "x.png")


def test_events_from_several_environments_are_refused(tmp_path: Path) -> None:
    events = synthetic_run({}, epochs=3)
    mixed = [*events, events[2].model_copy(update={"env": 1})]
    with pytest.raises(ValueError, match="several environments"):
        render_report(mixed, tmp_path / "x.png")


def test_non_numeric_test_accuracy_is_refused(tmp_path: Path) -> None:
    events = synthetic_run({}, epochs=3, finished=False)
    events.append(RunFinished(epoch=3, summary={"test_accuracy": "high"}, reason="completed"))
    with pytest.raises(ValueError, match=r"summary\.test_accuracy: expected a number, got 'high'"):
        render_report(events, tmp_path / "x.png")


def test_bad_output_path_and_non_events_are_refused(tmp_path: Path) -> None:
    events = synthetic_run({}, epochs=3)
    with pytest.raises(ValueError, match=r"expected a \.png file"):
        render_report(events, tmp_path / "report.jpg")
    with pytest.raises(TypeError, match=r"events\[1\] is a dict"):
        render_report([events[0], {"type": "epoch_metrics"}], tmp_path / "x.png")  # type: ignore[list-item]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_report(events, tmp_path / "missing-dir" / "x.png")


def test_blueprint_names_stay_inside_the_lanes_even_at_the_last_epoch() -> None:
    plan = {"r0c2": [(1, "GERMINATED", "conv_heavy")], "r0c1": [(12, "GERMINATED", "attention")]}
    figure = build_figure(collect_timeline(synthetic_run(plan, epochs=12)))
    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)
    lanes = figure.axes[2]
    box = lanes.get_window_extent(renderer)
    names = {text.get_text(): text.get_window_extent(renderer) for text in lanes.texts}
    assert sorted(names) == ["attention", "conv_heavy"]
    for name, extent in names.items():
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1, f"{name} label leaves the lanes"
    assert names["attention"].x1 <= lanes.transData.transform((12, 0))[0]  # drawn left of its start
