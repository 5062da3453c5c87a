"""Small modules with one job each: no module of the package grows past 500 lines.

A file that long usually holds two concerns; the limit makes the split happen when the
second one arrives instead of after it has spread.
"""

from __future__ import annotations

from pathlib import Path

import esper

MAX_LINES = 500
PACKAGE = Path(esper.__file__).resolve().parent


def test_every_module_is_at_most_500_lines() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 100, f"expected the whole package under {PACKAGE}, found {len(modules)} modules"
    too_long = {
        str(path.relative_to(PACKAGE)): count
        for path in modules
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines (split them): {too_long}"
