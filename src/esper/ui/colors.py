"""Stage colours: the one place the report and the live display take them from.

The report (matplotlib) and the terminal (rich) share one hex palette so a
stage looks the same in `report.png` and in `esper train`. Grey stages get a
mid grey in the terminal: the report's light grey would vanish on a light
terminal background.
"""

from __future__ import annotations

from esper.contracts.stages import SeedStage

STAGE_COLORS: dict[SeedStage, str] = {
    SeedStage.UNKNOWN: "#f4f4f4",
    SeedStage.DORMANT: "#e3e3e3",  # light grey
    SeedStage.GERMINATED: "#a6cee3",  # light blue
    SeedStage.TRAINING: "#1f78b4",  # blue
    SeedStage.BLENDING: "#8e44ad",  # purple
    SeedStage.HOLDING: "#f39c12",  # orange
    SeedStage.FOSSILIZED: "#2ca02c",  # green
    SeedStage.PRUNED: "#d62728",  # red
    SeedStage.EMBARGOED: "#a8325e",  # dark pink / red
    SeedStage.RESETTING: "#9e9e9e",  # grey
}

# Stages where nothing interesting happens: drawn quietly in the terminal.
_QUIET_TERMINAL_STYLE = "grey50"
_QUIET_STAGES = frozenset({SeedStage.UNKNOWN, SeedStage.DORMANT, SeedStage.RESETTING})

# Markers and lines for events that are not stages.
ROLLBACK_COLOR = "#333333"
TRAIN_COLOR = "#7f8c8d"
VAL_COLOR = "#1f3b73"
TEST_COLOR = "#c0392b"
HOST_PARAMS_COLOR = "#9fb3c8"
SEED_PARAMS_COLOR = STAGE_COLORS[SeedStage.FOSSILIZED]
TOTAL_PARAMS_COLOR = "#1b2631"


def _as_stage(stage: SeedStage | str) -> SeedStage:
    if isinstance(stage, SeedStage):
        return stage
    if isinstance(stage, str) and stage in SeedStage.__members__:
        return SeedStage[stage]
    raise ValueError(
        f"stage colour: expected a SeedStage or one of {list(SeedStage.__members__)}, got {stage!r}"
    )


def stage_color(stage: SeedStage | str) -> str:
    """Hex colour (for matplotlib) of a stage given as a SeedStage or its name."""
    return STAGE_COLORS[_as_stage(stage)]


def stage_style(stage: SeedStage | str) -> str:
    """rich style of a stage given as a SeedStage or its name."""
    resolved = _as_stage(stage)
    if resolved in _QUIET_STAGES:
        return _QUIET_TERMINAL_STYLE
    return f"bold {STAGE_COLORS[resolved]}"
