"""The per-run hub, the four backends, the backend factory and replay of events.jsonl."""

from __future__ import annotations

import io
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from esper.telemetry import events as ev
from esper.telemetry.backends import BACKEND_NAMES, build_backends
from esper.telemetry.backends.console import ConsoleBackend
from esper.telemetry.backends.jsonl import EVENTS_FILE_NAME, JsonlBackend
from esper.telemetry.backends.tensorboard import TensorBoardBackend, event_scalars
from esper.telemetry.backends.wandb import WandbBackend
from esper.telemetry.hub import TelemetryHub
from esper.telemetry.replay import read_events


class Sink:
    """A backend that records events; raises on write number `fail_at` and on close if asked."""

    def __init__(self, name: str = "sink", fail_at: int = 0, fail_on_close: bool = False) -> None:
        self.name, self.fail_at, self.fail_on_close = name, fail_at, fail_on_close
        self.events: list[ev.TelemetryEvent] = []
        self.calls = self.closed = 0

    def write(self, event: ev.TelemetryEvent) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError("disk full")
        self.events.append(event)

    def close(self) -> None:
        self.closed += 1
        if self.fail_on_close:
            raise OSError("cannot close")


def _failed(epoch: int = 0) -> ev.BackendFailed:
    return ev.BackendFailed(epoch=epoch, backend="probe", error="none")


_SLOTS = {
    "r0c0": ev.SlotSnapshot(
        stage="BLENDING", blueprint="norm", alpha=0.5, contribution=1.5, epochs_in_stage=1
    ),
    "r0c1": ev.SlotSnapshot(stage="DORMANT", blueprint=None, alpha=0.0, contribution=None, epochs_in_stage=0),
}


_COUNTS = {"train_accuracy": 70.0, "val_accuracy": 68.0, "host_params": 1000, "seed_params": 40}


def _metrics(epoch: int, env: int | None = None, loss: float = 0.5) -> ev.EpochMetrics:
    losses = {"train_loss": loss, "val_loss": loss + 0.1, "lr": 0.01, "total_params": 1040}
    return ev.EpochMetrics(epoch=epoch, env=env, slots=_SLOTS, **losses, **_COUNTS)


# ---------------------------------------------------------------- hub


def test_hub_stamps_run_id_only_when_missing() -> None:
    sink = Sink()
    hub = TelemetryHub([sink], run_id="run-1")
    hub.emit(_failed())
    hub.emit(ev.BackendFailed(epoch=1, run_id="other", backend="b", error="e"))
    assert [event.run_id for event in sink.events] == ["run-1", "other"]


def test_empty_hub_accepts_events() -> None:
    with TelemetryHub([]) as hub:
        hub.emit(_failed())
    assert hub.failures == [] and hub.closed


def test_failing_backend_is_isolated_and_reported_to_the_others() -> None:
    before, broken, after = Sink("before"), Sink("broken", fail_at=2), Sink("after")
    hub = TelemetryHub([before, broken, after], run_id="r")
    for epoch in range(4):
        hub.emit(_metrics(epoch))  # training keeps going: emit never raises for a backend
    assert [event.epoch for event in broken.events] == [0]
    assert broken.calls == 2  # never called again after failing
    assert hub.backends == (before, after)
    [failure] = hub.failures
    assert (failure.backend, failure.during, failure.event_type) == ("broken", "write", "epoch_metrics")
    assert failure.error == "OSError: disk full"
    for sink in (before, after):
        seen = [(event.type, event.epoch) for event in sink.events]
        assert seen == [("epoch_metrics", 0), ("epoch_metrics", 1), ("backend_failed", 1)] + [
            ("epoch_metrics", epoch) for epoch in (2, 3)
        ]
    notice = after.events[2]
    assert isinstance(notice, ev.BackendFailed)
    assert (notice.backend, notice.error, notice.run_id) == ("broken", "OSError: disk full", "r")


def test_failure_while_reporting_a_failure_is_also_isolated() -> None:
    # `second` fails on the backend_failed notice about `first`.
    first, second, healthy = Sink("first", fail_at=1), Sink("second", fail_at=2), Sink("healthy")
    hub = TelemetryHub([first, second, healthy])
    hub.emit(_failed(epoch=5))
    assert [failure.backend for failure in hub.failures] == ["first", "second"]
    assert [(event.type, event.epoch) for event in healthy.events] == [("backend_failed", 5)] * 3
    assert [event.backend for event in healthy.events[1:]] == ["first", "second"]  # type: ignore[attr-defined]
    assert hub.backends == (healthy,)


def test_only_exceptions_are_absorbed_not_interrupts() -> None:
    class Interrupting(Sink):
        def write(self, event: ev.TelemetryEvent) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        TelemetryHub([Interrupting()]).emit(_failed())


def test_close_is_robust_idempotent_and_closes_failed_backends() -> None:
    writer, closer, healthy = Sink("writer", fail_at=1), Sink("closer", fail_on_close=True), Sink()
    with TelemetryHub([writer, closer, healthy]) as hub:
        hub.emit(_failed())
    hub.close()
    assert (writer.closed, closer.closed, healthy.closed) == (1, 1, 1)
    assert [(failure.backend, failure.during) for failure in hub.failures] == [
        ("writer", "write"),
        ("closer", "close"),
    ]
    assert hub.backends == ()
    with pytest.raises(RuntimeError, match="hub is closed"):
        hub.emit(_failed())


def test_hub_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match=r"backends\[1\]"):
        TelemetryHub([Sink(), object()])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="run_id"):
        TelemetryHub([], run_id=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a TelemetryEvent"):
        TelemetryHub([]).emit({"type": "backend_failed"})  # type: ignore[arg-type]


def test_two_hubs_are_independent() -> None:
    first_sink, second_sink = Sink(), Sink("second", fail_at=1)
    first, second = TelemetryHub([first_sink], run_id="a"), TelemetryHub([second_sink], run_id="b")
    first.emit(_failed(1))
    second.emit(_failed(2))
    second.close()
    first.emit(_failed(3))
    assert [(event.epoch, event.run_id) for event in first_sink.events] == [(1, "a"), (3, "a")]
    assert first.failures == [] and len(second.failures) == 1
    assert not first.closed and second.closed


# ---------------------------------------------------------------- jsonl and replay


def test_jsonl_flushes_every_line_and_appends_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "run" / EVENTS_FILE_NAME
    backend = JsonlBackend(path)
    backend.write(_metrics(0))
    assert [event.epoch for event in read_events(path)] == [0]  # readable before close: flushed
    backend.close()
    backend.close()
    with pytest.raises(RuntimeError, match="write after close"):
        backend.write(_metrics(1))
    resumed = JsonlBackend(path)
    resumed.write(_metrics(1))
    resumed.close()
    assert [event.epoch for event in read_events(path)] == [0, 1]


@pytest.mark.parametrize(
    ("before", "kept"),
    [
        ([ev.event_to_json(_failed(0)) + "\n", '{"type": "epoch_met'], [0]),
        (["x" * 10_000], []),  # longer than one backwards read chunk, no newline at all
    ],
)
def test_jsonl_resume_drops_a_crash_fragment(tmp_path: Path, before: list[str], kept: list[int]) -> None:
    path = tmp_path / EVENTS_FILE_NAME
    path.write_text("".join(before), encoding="utf-8")
    backend = JsonlBackend(path)
    backend.write(_failed(9))
    backend.close()
    assert [event.epoch for event in read_events(path)] == [*kept, 9]


def test_hub_to_jsonl_to_replay_round_trip(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE_NAME
    events: list[ev.TelemetryEvent] = [_metrics(epoch, env=epoch % 2) for epoch in range(3)]
    events.append(ev.RewardComputed(epoch=2, total=0.5, components={"pbrs": 0.5, "naïve ✓\u2028": 0.0}))
    with TelemetryHub([JsonlBackend(path)], run_id="replay") as hub:
        for event in events:
            hub.emit(event)
    assert read_events(path) == [event.model_copy(update={"run_id": "replay"}) for event in events]


# ---------------------------------------------------------------- console


def _console_backend(verbose: bool = False) -> tuple[ConsoleBackend, io.StringIO]:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=300, color_system=None)
    return ConsoleBackend(console=console, verbose=verbose), buffer


_DECISION = {"epoch": 7, "controller": "heuristic", "slot": "r0c1", "blueprint": "attention", "params": {}}


def test_console_prints_lifecycle_governor_and_executed_decisions() -> None:
    backend, buffer = _console_backend()
    change = {"epoch": 4, "env": 1, "slot": "r0c0", "blueprint": "norm", "alpha": 0.0, "seed_params": 10}
    change |= {"from_stage": "TRAINING", "to_stage": "BLENDING", "reason": "G2 passed [bold]ok[/bold]"}
    backend.write(ev.SeedStageChanged(**change))
    backend.write(
        ev.GovernorAction(epoch=6, action="rollback", reason="NaN", rollbacks=1, pruned_slots=["r0c0"])
    )
    for op, executed in (("GERMINATE", True), ("PRUNE", False), ("WAIT", True)):
        backend.write(ev.ControllerDecision(op=op, executed=executed, reason="plateau", **_DECISION))
    backend.write(_metrics(7))
    backend.write(ev.RunFinished(epoch=9, summary={}, reason="max epochs"))
    assert buffer.getvalue().splitlines() == [
        "[env 1 · epoch 4] r0c0 norm TRAINING → BLENDING  G2 passed [bold]ok[/bold]",
        "[epoch 6] governor rollback (rollbacks 1) pruned r0c0: NaN",
        "[epoch 7] heuristic GERMINATE r0c1 attention  plateau",
        "[epoch 9] run finished: max epochs",
    ]


def test_console_shows_failed_gates_only_when_verbose() -> None:
    gate = {"epoch": 3, "slot": "r0c0", "gate": "G2", "target_stage": "BLENDING", "score": 0.25}
    gate |= {"checks_passed": [], "checks_failed": ["improvement"], "message": "too small"}
    (quiet, quiet_buffer), (loud, loud_buffer) = _console_backend(), _console_backend(verbose=True)
    for backend in (quiet, loud):
        backend.write(ev.GateEvaluated(passed=False, **gate))
        backend.write(ev.GateEvaluated(passed=True, **gate))
    assert quiet_buffer.getvalue() == ""
    assert loud_buffer.getvalue().splitlines() == [
        "[epoch 3] r0c0 gate G2 failed for BLENDING (score 0.25; failed: improvement) too small"
    ]
    with pytest.raises(TypeError, match="rich Console"):
        ConsoleBackend(console=io.StringIO())  # type: ignore[arg-type]


# ---------------------------------------------------------------- tensorboard


def test_event_scalars_tags_and_steps() -> None:
    point = event_scalars(_metrics(3, env=2))
    assert point is not None and (point.step_name, point.step) == ("epoch", 3)
    assert point.values["env2/loss/train"] == 0.5
    assert point.values["env2/slot/r0c0/alpha"] == 0.5
    assert point.values["env2/slot/r0c0/contribution"] == 1.5
    assert "env2/slot/r0c1/contribution" not in point.values  # unmeasured stays absent, not 0
    ppo = event_scalars(ev.PpoUpdate(epoch=24, round=7, metrics={"approx_kl": 0.01}))
    assert ppo is not None and (ppo.step_name, ppo.step) == ("ppo_round", 7)
    assert ppo.values == {"ppo/approx_kl": 0.01}
    assert event_scalars(_failed()) is None


def test_tensorboard_writes_readable_scalars(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logdir = tmp_path / "tb"
    with TelemetryHub([TensorBoardBackend(logdir)]) as hub:
        for epoch in range(3):
            hub.emit(_metrics(epoch, loss=1.0 / (epoch + 1)))
        hub.emit(ev.RewardComputed(epoch=2, total=0.75, components={"rent": -0.25}))
        hub.emit(ev.PpoUpdate(epoch=2, round=1, metrics={"entropy": 1.5}))
    files = list(logdir.glob("events.out.tfevents.*"))
    assert len(files) == 1 and files[0].stat().st_size > 0
    accumulator = EventAccumulator(str(logdir))
    accumulator.Reload()

    def read(tag: str) -> list[tuple[int, float]]:
        return [(scalar.step, scalar.value) for scalar in accumulator.Scalars(tag)]

    assert read("loss/train") == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert read("reward/rent") == [(2, -0.25)]
    assert read("ppo/entropy") == [(1, 1.5)]
    assert read("slot/r0c0/alpha") == [(0, 0.5), (1, 0.5), (2, 0.5)]


def test_tensorboard_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    expected = "TensorBoard backend needs the 'tensorboard' extra: pip install 'esper[tensorboard]'"
    with pytest.raises(RuntimeError) as caught:
        TensorBoardBackend(tmp_path / "tb")
    assert str(caught.value) == expected


# ---------------------------------------------------------------- wandb


def _fake_wandb(calls: dict[str, Any]) -> types.ModuleType:
    """Stands in for the `wandb` module, recording what the backend asks of it in `calls`."""
    calls.update(init=[], log=[], config={}, summary={}, finish=0)

    def finish() -> None:
        calls["finish"] += 1

    def init(**kwargs: Any) -> types.SimpleNamespace:
        calls["init"].append(kwargs)
        return types.SimpleNamespace(
            log=calls["log"].append,
            config=types.SimpleNamespace(update=calls["config"].update),
            summary=types.SimpleNamespace(update=calls["summary"].update),
            finish=finish,
        )

    module = types.ModuleType("wandb")
    module.init = init  # type: ignore[attr-defined]
    return module


def test_wandb_missing_extra_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(RuntimeError) as caught:
        WandbBackend("esper", tmp_path)
    assert str(caught.value) == "W&B backend needs the 'wandb' extra: pip install 'esper[wandb]'"
    with pytest.raises(ValueError, match="mode"):
        WandbBackend("esper", tmp_path, mode="cloud")


def test_wandb_logs_config_scalars_and_summary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: dict[str, Any] = {}
    monkeypatch.setitem(sys.modules, "wandb", _fake_wandb(calls))
    run_dir = tmp_path / "run-7"
    with TelemetryHub([WandbBackend("esper-test", run_dir)]) as hub:
        start = {
            "epoch": -1,
            "task": "mnist1d",
            "controller": "heuristic",
            "seed": 7,
            "config": {"epochs": 3},
            "plan": {"epochs": 3},
        }
        hub.emit(ev.RunStarted(versions={"esper": "0.1.0"}, slots=["r0c0"], host_params=1000, **start))
        hub.emit(_metrics(0))
        hub.emit(_failed())  # nothing to plot
        hub.emit(ev.PpoUpdate(epoch=0, round=2, metrics={"value_loss": 0.3}))
        hub.emit(ev.RunFinished(epoch=0, summary={"final_val_accuracy": 68.0}, reason="done"))
    assert hub.failures == []
    assert calls["init"] == [
        {"project": "esper-test", "dir": str(run_dir), "mode": "offline", "name": "run-7"}
    ]
    assert calls["config"]["seed"] == 7 and calls["config"]["config"] == {"epochs": 3}
    first_row, second_row = calls["log"]
    assert first_row["epoch"] == 0 and first_row["accuracy/val"] == 68.0
    assert second_row == {"ppo/value_loss": 0.3, "ppo_round": 2}
    assert calls["summary"] == {"finish_reason": "done", "final_val_accuracy": 68.0}
    assert calls["finish"] == 1


# ---------------------------------------------------------------- factory


def test_build_backends_in_order(tmp_path: Path) -> None:
    backends = build_backends(["jsonl", "console", "tensorboard"], tmp_path)
    assert [backend.name for backend in backends] == ["jsonl", "console", "tensorboard"]
    for backend in backends:
        backend.close()
    assert (tmp_path / EVENTS_FILE_NAME).exists() and (tmp_path / "tensorboard").is_dir()


def test_build_backends_rejects_unknown_and_repeated_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown name 'prometheus'") as caught:
        build_backends(["jsonl", "prometheus"], tmp_path)
    assert all(name in str(caught.value) for name in BACKEND_NAMES)
    with pytest.raises(ValueError, match=r"more than once: \['jsonl'\]"):
        build_backends(["jsonl", "jsonl"], tmp_path)
    assert not (tmp_path / EVENTS_FILE_NAME).exists()  # validated before building anything


def test_build_backends_closes_what_it_built_when_one_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    closed: list[str] = []
    real_close = JsonlBackend.close

    def recording_close(self: JsonlBackend) -> None:
        closed.append(self.name)
        real_close(self)

    monkeypatch.setattr(JsonlBackend, "close", recording_close)
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(RuntimeError, match="wandb"):
        build_backends(["jsonl", "wandb"], tmp_path)
    assert closed == ["jsonl"]
