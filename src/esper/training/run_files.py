"""The files of a run directory that Esper writes and owns.

`--overwrite` removes these and nothing else: any other file a user keeps in
the directory is left alone.
"""

from __future__ import annotations

CHECKPOINT_NAME = "checkpoint.pt"
EVENTS_NAME = "events.jsonl"
SUMMARY_NAME = "summary.json"
REPORT_NAME = "report.png"

RUN_FILE_NAMES: tuple[str, ...] = (EVENTS_NAME, CHECKPOINT_NAME, SUMMARY_NAME, REPORT_NAME)
