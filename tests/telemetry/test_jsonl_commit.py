"""JsonlBackend.commit / rewind: the committed prefix of events.jsonl, and cutting back to it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.contracts.committed_events import CommittedEvents
from esper.telemetry.backends.jsonl import EventsMismatchError, JsonlBackend
from esper.telemetry.events import BackendFailed


def _event(index: int) -> BackendFailed:
    return BackendFailed(epoch=index, backend="b", error=f"e{index}")


def test_commit_describes_exactly_the_bytes_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    backend = JsonlBackend(path)
    empty = backend.commit()
    assert (empty.bytes, empty.lines, empty.sha256) == (0, 0, hashlib.sha256().hexdigest())
    for index in range(3):
        backend.write(_event(index))
    committed = backend.commit()
    data = path.read_bytes()
    assert committed == CommittedEvents(bytes=len(data), lines=3, sha256=hashlib.sha256(data).hexdigest())
    backend.close()


def test_rewind_cuts_the_uncommitted_tail_and_writing_continues_after_it(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    backend = JsonlBackend(path)
    backend.write(_event(0))
    committed = backend.commit()
    prefix = path.read_bytes()
    backend.write(_event(1))
    backend.close()
    with open(path, "ab") as handle:
        handle.write(b'{"half a line')  # a kill mid-write
    size = path.stat().st_size
    reopened = JsonlBackend(path)
    assert path.stat().st_size == size  # opening changes nothing: the resume might still be refused
    assert reopened.rewind(committed) == size - len(prefix)
    assert path.read_bytes() == prefix
    reopened.write(_event(2))
    after = reopened.commit()
    reopened.close()
    data = path.read_bytes()
    assert data.startswith(prefix) and after.lines == 2 and after.sha256 == hashlib.sha256(data).hexdigest()


def test_a_half_written_last_line_is_cut_before_the_next_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    backend = JsonlBackend(path)
    backend.write(_event(0))
    backend.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"type":"backend_fa')
    reopened = JsonlBackend(path)
    reopened.write(_event(1))
    committed = reopened.commit()
    reopened.close()
    data = path.read_bytes()
    assert data.startswith(whole) and data.count(b"\n") == 2 == committed.lines
    assert committed.bytes == len(data)


def test_rewind_refuses_a_file_shorter_than_the_committed_prefix(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    backend = JsonlBackend(path)
    backend.write(_event(0))
    committed = backend.commit()
    backend.close()
    path.write_bytes(b"")
    reopened = JsonlBackend(path)
    with pytest.raises(EventsMismatchError, match=rf"{path}: holds 0 bytes but the checkpoint committed"):
        reopened.rewind(committed)
    reopened.close()


def test_rewind_refuses_a_prefix_that_differs(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    backend = JsonlBackend(path)
    backend.write(_event(0))
    backend.write(_event(1))
    committed = backend.commit()
    backend.close()
    path.write_bytes(path.read_bytes().replace(b'"e1"', b'"E1"'))
    reopened = JsonlBackend(path)
    with pytest.raises(EventsMismatchError, match=rf"{path}: its first \d+ bytes differ"):
        reopened.rewind(committed)
    assert b'"E1"' in path.read_bytes()  # refused: nothing was cut
    reopened.close()


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(commit_after=st.integers(0, 5), extra=st.integers(0, 5))
def test_rewind_to_any_commit_leaves_exactly_that_prefix(
    tmp_path_factory: pytest.TempPathFactory, commit_after: int, extra: int
) -> None:
    path = tmp_path_factory.mktemp("jsonl") / "events.jsonl"
    backend = JsonlBackend(path)
    for index in range(commit_after):
        backend.write(_event(index))
    committed = backend.commit()
    prefix = path.read_bytes()
    for index in range(extra):
        backend.write(_event(100 + index))
    backend.rewind(committed)
    assert backend.commit() == committed
    backend.close()
    assert path.read_bytes() == prefix


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"bytes": -1, "lines": 0}, "greater than or equal to 0"),
        ({"bytes": 3, "lines": 4}, "4 lines cannot fill 3 bytes"),
        ({"bytes": 3, "lines": 0}, "0 lines cannot fill 3 bytes"),
        ({"bytes": 0, "lines": 0, "sha256": "ABC"}, "should match pattern"),
        ({"bytes": True, "lines": 0}, "valid integer"),
    ],
)
def test_committed_events_rejects_states_that_cannot_happen(fields: dict, problem: str) -> None:
    values = {"sha256": "0" * 64, **fields}
    with pytest.raises(ValueError, match=problem):
        CommittedEvents(**values)
