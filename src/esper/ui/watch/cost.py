"""Measure what one new line of events.jsonl costs the dashboard (read, parse, fold into RunState).

    python -m esper.ui.watch.cost [EPOCHS]

writes a synthetic run of EPOCHS epoch_metrics events (each followed by a
controller decision, as `esper train` writes them) to a temporary file and
times following it from the start, the way `esper watch` loads a long run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from esper.telemetry import events as ev
from esper.ui.watch.follower import EVENTS_FILE_NAME, EventFollower
from esper.ui.watch.state import RunState

SLOT_IDS = ["r0c0", "r0c1", "r0c2"]


@dataclass(frozen=True)
class LineCost:
    lines: int
    bytes: int
    seconds: float
    polls: int

    @property
    def microseconds_per_line(self) -> float:
        return 1e6 * self.seconds / self.lines


def synthetic_run(epochs: int) -> list[ev.TelemetryEvent]:
    events: list[ev.TelemetryEvent] = [
        ev.RunStarted(
            epoch=0, task="mnist1d", controller="heuristic", seed=0, config={}, plan={}, versions={}, slots=SLOT_IDS,
            host_params=19498,
        )
    ]
    for epoch in range(1, epochs + 1):
        stage = "TRAINING" if epoch % 20 < 10 else "DORMANT"
        slots = {
            slot: ev.SlotSnapshot(
                stage=stage if slot == "r0c0" else "DORMANT",
                blueprint="conv_light" if stage != "DORMANT" and slot == "r0c0" else None,
                alpha=0.0,
                contribution=None,
                epochs_in_stage=epoch % 10,
            )
            for slot in SLOT_IDS
        }
        events.append(
            ev.EpochMetrics(
                epoch=epoch, train_loss=1.0 / epoch, train_accuracy=0.5, val_loss=1.1 / epoch, val_accuracy=0.5,
                host_params=19498, seed_params=0, total_params=19498, slots=slots,
            )
        )
        events.append(
            ev.ControllerDecision(
                epoch=epoch, controller="heuristic", op="WAIT", slot=None, blueprint=None, params={},
                executed=True, reason="host still improving",
            )
        )
    return events


def measure(epochs: int = 10_000) -> LineCost:
    """Follow a synthetic `epochs`-epoch run from its first byte; the time covers every poll."""
    with tempfile.TemporaryDirectory() as directory:
        run_dir = Path(directory)
        text = "".join(ev.event_to_json(event) + "\n" for event in synthetic_run(epochs))
        (run_dir / EVENTS_FILE_NAME).write_text(text, encoding="utf-8")
        follower = EventFollower(run_dir)
        state = RunState()
        polls = 0
        started = time.perf_counter()
        while True:
            result = follower.poll()
            polls += 1
            for line, event in result.events:
                state.apply(event, line)
            state.add_problems(result.problems)
            if not result.more:
                break
        seconds = time.perf_counter() - started
        if state.problem_count or len(state.epochs) != epochs:
            raise RuntimeError(f"cost: expected {epochs} clean epochs, read {len(state.epochs)}")
        return LineCost(lines=follower.line_number, bytes=len(text.encode()), seconds=seconds, polls=polls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("epochs", type=int, nargs="?", default=10_000)
    args = parser.parse_args()
    cost = measure(args.epochs)
    print(
        f"{cost.lines} lines ({cost.bytes / 1e6:.1f} MB) in {cost.seconds:.2f}s over {cost.polls} polls: "
        f"{cost.microseconds_per_line:.0f} µs per line"
    )


if __name__ == "__main__":
    main()
