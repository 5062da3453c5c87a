"""The committed prefix of a run's events.jsonl, as recorded in its run checkpoint.

A run checkpoint is the commit point of an epoch: just before it is written,
events.jsonl is flushed and fsynced and its length, line count and SHA-256
are stored in the checkpoint. On resume, anything after that prefix belongs to
an epoch that was never committed and is cut off; a file shorter than the
prefix, or whose prefix differs, is not this run's history.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

SHA256_PATTERN = r"^[0-9a-f]{64}$"


class CommittedEvents(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    bytes: Annotated[int, Field(ge=0)]
    lines: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=SHA256_PATTERN)]  # of the first `bytes` bytes, lowercase hex

    @model_validator(mode="after")
    def _lines_fit(self) -> CommittedEvents:
        # Every committed line ends with a newline, so there are at least as many bytes as lines
        # and an empty prefix has no lines.
        if self.lines > self.bytes or (self.bytes > 0 and self.lines == 0):
            raise ValueError(f"{self.lines} lines cannot fill {self.bytes} bytes of complete JSON lines")
        return self
