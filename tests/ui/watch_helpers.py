"""Shared by the esper watch tests: tiny real runs and a headless driver for the app."""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from esper.training.config import TrainConfig
from esper.training.trainer import run_training

# The heuristic germinates at epoch 2 and judges fast, so 14 tiny epochs take one seed
# through every stage to FOSSILIZED (gates, contributions and stage changes all appear) and
# leave too few epochs for a second one.
HEURISTIC_FAST = {
    "min_epoch_to_germinate": 2,
    "min_epochs_left_to_germinate": 2,
    "stable_epochs": 1,
    "plateau_epochs": 1,
    "stable_rel_improvement": 1.0,
    "plateau_min_gain_points": 100.0,
}
TRAIN_EPOCHS = 14


def make_train_run(out: Path) -> dict[str, Any]:
    config = TrainConfig(
        task="mnist1d", epochs=TRAIN_EPOCHS, max_batches_per_epoch=5, heuristic=dict(HEURISTIC_FAST),
        # conv_light first, so the screens these tests read show the seed and numbers they expect.
        blueprints=["conv_light", "conv_heavy", "attention", "norm", "depthwise"],
    )
    return run_training(config, out_dir=out)


PPO_CONFIG_TOML = "[train]\nmax_batches_per_epoch = 1\n[policy]\nhidden = 16\nlstm_hidden = 16\nhead_hidden = 8\n"
PPO_ARGS = ["--task", "mnist1d-blind", "--envs", "2", "--rounds", "2", "--episode-length", "3", "--workers", "0",
            "--seed", "3", "--imitate", "0"]


def drive(app: Any, script: Callable[[Any, Any], Awaitable[None]], size: tuple[int, int] = (80, 24)) -> None:
    """Run `script(app, pilot)` against the app headless (pytest-asyncio is not a dependency)."""

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await script(app, pilot)

    asyncio.run(main())


async def wait_until(pilot: Any, condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        await pilot.pause(0.05)


def screen_text(app: Any) -> str:
    """What the terminal shows, as plain text rows (from textual's own SVG screenshot)."""
    svg = app.export_screenshot()
    rows: dict[float, list[tuple[float, str]]] = {}
    for match in _SVG_TEXT.finditer(svg):
        x, y, text = float(match["x"]), float(match["y"]), html.unescape(match["text"])
        rows.setdefault(y, []).append((x, text.replace("\xa0", " ")))
    lines = []
    for y in sorted(rows):
        line = ""
        for x, text in sorted(rows[y]):
            line = line.ljust(round(x / _CHAR_WIDTH)) + text
        lines.append(line)
    return "\n".join(lines)


_SVG_TEXT = re.compile(r'<text[^>]*x="(?P<x>[\d.]+)" y="(?P<y>[\d.]+)"[^>]*>(?P<text>.*?)</text>')
_CHAR_WIDTH = 12.2  # rich's SVG export: 0.61 x a 20px font per terminal column
