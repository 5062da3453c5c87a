"""The one error type for malformed, unreadable or incompatible checkpoints.

Every message names the exact place inside the checkpoint, written as keys
joined by " > " (`seed_slots.r0c1 > seed_state > metrics > x: expected float
or None, got str`), so a user can find the bad value without a debugger.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from esper.contracts.validation import PATH_SEPARATOR, join_path

__all__ = ["PATH_SEPARATOR", "CheckpointError", "join_path"]

ROOT_LABEL = "<root>"


class CheckpointError(ValueError):
    """A checkpoint is malformed, unreadable or incompatible with this version of esper.

    `problems` holds one line per problem, each starting with its path inside
    the checkpoint; `file` is the checkpoint file when known.
    """

    def __init__(self, problems: str | Sequence[str], *, file: str | os.PathLike[str] | None = None) -> None:
        # A single str is one problem (never split into characters).
        self.problems: tuple[str, ...] = (problems,) if isinstance(problems, str) else tuple(problems)
        if not self.problems:
            raise ValueError("CheckpointError needs at least one problem")
        self.file: str | None = None if file is None else os.fspath(file)
        super().__init__(self._render())

    @classmethod
    def at(cls, where: str, problem: str, *, file: str | os.PathLike[str] | None = None) -> CheckpointError:
        """One problem at one path (`where` empty means the top level)."""
        return cls([f"{where or ROOT_LABEL}: {problem}"], file=file)

    @classmethod
    def many(
        cls, problems: Iterable[tuple[str, str]], *, file: str | os.PathLike[str] | None = None
    ) -> CheckpointError:
        """Several (path, problem) pairs reported together as one error."""
        return cls([f"{where or ROOT_LABEL}: {problem}" for where, problem in problems], file=file)

    def with_file(self, file: str | os.PathLike[str]) -> CheckpointError:
        """The same problems, attributed to `file` (used when the caller knows the path)."""
        return CheckpointError(self.problems, file=file)

    def _render(self) -> str:
        prefix = f"checkpoint {self.file}: " if self.file is not None else ""
        if len(self.problems) == 1:
            return prefix + self.problems[0]
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        return f"{prefix}{len(self.problems)} problems:\n{lines}"
