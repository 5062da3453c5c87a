"""The static pickle audit: verdicts match torch.load(weights_only=True), and nothing is executed."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import enum
import json
import os
import pathlib
import pickle
import struct
import subprocess
import sys
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.checkpoints.audit import AuditStatus, Severity, audit_file, render_rich, render_text
from esper.checkpoints.audit.pickle_scan import Call, DictNode, Node, Prim, Seq, global_name, scan_pickle
from esper.cli import audit_cmd


class Stage(enum.IntEnum):
    GERMINATED = 2
    TRAINING = 3


@dataclasses.dataclass
class Metrics:
    accuracy: float = 51.5
    measured_at: datetime.datetime = datetime.datetime(2025, 1, 2, 3, 4, 5)


@dataclasses.dataclass
class SeedStateLike:
    stage: Stage = Stage.TRAINING
    history: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque([(Stage.GERMINATED, datetime.datetime(2025, 1, 1))])
    )
    metrics: Metrics = dataclasses.field(default_factory=Metrics)


def _state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return dict(torch.nn.Linear(3, 2).state_dict())


def _seed_like() -> dict[str, Any]:
    """The shape of the reference checkpoint in seed 000, with its problems."""
    model = _state_dict()
    model["seed_slots.mid._extra_state"] = {
        "seed_state": SeedStateLike(),
        "alpha_schedule": torch.nn.Linear(1, 1),
        "isolate_gradients": True,
    }
    return {"model_state_dict": model, "config": {"lr": 0.01}}


_ALLOWED_EXTRAS: dict[str, Any] = {"counter": collections.Counter("aab"), "set": {1, 2}, "complex": 1 + 2j}
_ALLOWED_EXTRAS.update(bytes=b"\x00\xff", bytearray=bytearray(b"x"), tuple=(1, 2.5, None, True, -7, 2**70))
_ALLOWED_EXTRAS.update(dtype=torch.float16, device=torch.device("cpu"), size=torch.Size([2, 3]))
_ALLOWED_EXTRAS.update(parameter=torch.nn.Parameter(torch.ones(2)))

# name -> (object, torch.save keyword arguments, expected compatible)
CASES: dict[str, tuple[Any, dict[str, Any], bool]] = {
    "state_dict": (_state_dict(), {}, True),
    "ordered_state_dict": (torch.nn.Linear(3, 2).state_dict(), {}, True),
    "allowed_extras": (_ALLOWED_EXTRAS, {}, True),  # all on torch's own allowlist
    "legacy_state_dict": (_state_dict(), {"_use_new_zipfile_serialization": False}, True),
    "enum": ({"stage": Stage.TRAINING}, {}, False),
    "datetime": ({"when": datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)}, {}, False),
    "deque": ({"history": collections.deque([1, 2], maxlen=5)}, {}, False),
    "dataclass": ({"metrics": Metrics()}, {}, False),
    "module": ({"alpha_schedule": torch.nn.Linear(2, 2)}, {}, False),
    "numpy": ({"array": np.zeros(3), "scalar": np.float32(1.5)}, {}, False),
    "path": ({"where": pathlib.Path("/tmp/x")}, {}, False),
    "function_reference": ({"fn": len}, {}, False),
    "protocol_4": (_state_dict(), {"pickle_protocol": 4}, False),
    "legacy_enum": ({"stage": Stage.GERMINATED}, {"_use_new_zipfile_serialization": False}, False),
    "empty_bytes": ({"raw": b""}, {}, False),  # protocol 2 spells b"" as a call to bytes()
    "seed_like": (_seed_like(), {}, False),
}

_LOAD_EACH = """
import json, sys, torch
verdicts = {}
for path in sys.argv[1:]:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
        verdicts[path] = True
    except Exception:
        verdicts[path] = False
print(json.dumps(verdicts))
"""


def _weights_only_verdicts(paths: list[Path]) -> dict[str, bool]:
    """torch.load(weights_only=True) of each file, in a fresh interpreter (never in this process)."""
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_EACH, *map(str, paths)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("audit_cases")
    paths = {}
    for name, (obj, kwargs, _) in CASES.items():
        paths[name] = directory / f"{name}.pt"
        torch.save(obj, paths[name], **kwargs)
    plain = directory / "plain_pickle.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    paths["plain_pickle"] = plain
    return paths


def test_verdicts_match_real_weights_only_load(files: dict[str, Path]) -> None:
    real = _weights_only_verdicts(list(files.values()))
    for name, path in files.items():
        report = audit_file(path)
        expected = CASES[name][2] if name in CASES else False
        assert real[str(path)] is expected, f"{name}: the case itself is not what the test assumes"
        assert report.compatible is expected, f"{name}: audit says {report.status}, torch says {expected}"
        assert (report.issues == []) is expected, name
        assert not report.unsafe, name


@pytest.mark.parametrize(
    ("name", "path", "kind", "suggestion"),
    [
        ("enum", "root['stage']", "enum", "convert to int (enum.value)"),
        ("datetime", "root['when']", "datetime", "ISO 8601"),
        ("deque", "root['history']", "collection", "convert to list"),
        ("dataclass", "root['metrics']", "object", "dataclasses.asdict / to_dict()"),
        ("dataclass", "root['metrics'].measured_at", "datetime", "ISO 8601"),
        ("module", "root['alpha_schedule']", "nn.Module", "CRITICAL: store its state_dict plus a config"),
        ("numpy", "root['array']", "numpy", "torch.Tensor"),
        ("numpy", "root['scalar']", "numpy", "int/float"),
        ("path", "root['where']", "path", "convert to str"),
        ("function_reference", "root['fn']", "reference", "qualified name"),
        ("protocol_4", "<pickle stream>", "opcode", "pickle_protocol=2"),
        ("legacy_enum", "root['stage']", "enum", "enum.value"),
        ("plain_pickle", "<file>", "container", "torch.save"),
        ("empty_bytes", "root['raw']", "bytes", "uint8 tensor"),
    ],
)
def test_each_problem_is_classified(
    files: dict[str, Path], name: str, path: str, kind: str, suggestion: str
) -> None:
    issues = {issue.path_in_tree: issue for issue in audit_file(files[name]).issues}
    assert path in issues, sorted(issues)
    assert issues[path].kind == kind
    assert suggestion in issues[path].suggestion
    assert issues[path].severity is Severity.INCOMPATIBLE


def test_reference_style_report_paths(files: dict[str, Path]) -> None:
    report = audit_file(files["seed_like"])
    slot = "root['model_state_dict']['seed_slots.mid._extra_state']"
    found = {issue.path_in_tree: (issue.kind, issue.qualified_name) for issue in report.issues}
    here = f"{__name__}"
    assert found == {
        f"{slot}['seed_state']": ("object", f"{here}.SeedStateLike"),
        f"{slot}['seed_state'].stage": ("enum", f"{here}.Stage"),
        f"{slot}['seed_state'].history": ("collection", "collections.deque"),
        f"{slot}['seed_state'].history[0][0]": ("enum", f"{here}.Stage"),  # a different member: its own node
        f"{slot}['seed_state'].history[0][1]": ("datetime", "datetime.datetime"),
        f"{slot}['seed_state'].metrics": ("object", f"{here}.Metrics"),
        f"{slot}['seed_state'].metrics.measured_at": ("datetime", "datetime.datetime"),
        f"{slot}['alpha_schedule']": ("nn.Module", "torch.nn.modules.linear.Linear"),
    }
    assert report.top_level == {"model_state_dict": "dict[3 keys]", "config": "dict[1 keys]"}
    text = render_text(report)
    assert "INCOMPATIBLE: 8 issues" in text
    assert f"* {slot}['seed_state'].stage: Enum {here}.Stage(3) -> convert to int (enum.value)" in text


def test_shared_objects_are_reported_at_every_place(tmp_path: Path) -> None:
    path = tmp_path / "shared.pt"
    torch.save({"a": Stage.TRAINING, "b": [Stage.TRAINING]}, path)  # pickle memoizes the member
    paths = [issue.path_in_tree for issue in audit_file(path).issues]
    assert paths == ["root['a']", "root['b'][0]"]


def test_top_level_summary_describes_tensors(files: dict[str, Path]) -> None:
    report = audit_file(files["state_dict"])
    assert report.status is AuditStatus.COMPATIBLE
    tensors = {"weight": "Tensor[2, 3]", "bias": "Tensor[2]"}
    assert report.top_level == tensors
    assert audit_file(files["ordered_state_dict"]).top_level == tensors
    extras = audit_file(files["allowed_extras"]).top_level
    assert extras["bytes"] == "bytes" and extras["parameter"] == "Parameter[2]"
    assert extras["dtype"] == "torch.float16" and extras["tuple"] == "tuple[6 items]"


# ---------------------------------------------------------------- the symbolic machine itself


def _materialize(node: Node) -> object:
    """Rebuild plain data from placeholder nodes (only the few calls plain data needs)."""
    if isinstance(node, Prim):
        return node.value
    if isinstance(node, DictNode):
        return {_materialize(key): _materialize(value) for key, value in node.pairs}
    if isinstance(node, Seq):
        kinds = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}
        return kinds[node.kind](_materialize(item) for item in node.items)
    assert isinstance(node, Call) and isinstance(node.args, Seq), node
    args = [_materialize(arg) for arg in node.args.items]
    builders = {
        "_codecs.encode": lambda text, codec: text.encode(codec),
        "builtins.frozenset": frozenset,
        "builtins.bytes": bytes,  # b"" in protocols 0-2
    }
    return builders[global_name(node)](*args)  # type: ignore[operator]


_PLAIN = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=5),
        st.binary(max_size=4),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(st.text(max_size=4), children, max_size=3),
        st.frozensets(st.integers(-3, 3), max_size=3),
    ),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None)
@given(value=_PLAIN, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_symbolic_replay_rebuilds_plain_data(value: object, protocol: int) -> None:
    """Every protocol's opcodes are replayed faithfully: the placeholder tree is the data."""
    rebuilt = _materialize(scan_pickle(pickle.dumps(value, protocol=protocol)).root)
    assert repr(rebuilt) == repr(value)


# ---------------------------------------------------------------- malicious files: reported, never run


@dataclasses.dataclass
class _Calls:
    """Unpickling this calls `func(arg)`: the classic malicious pickle."""

    func: Any
    arg: str

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, (self.arg,))


def _malicious_files(tmp_path: Path, marker: Path) -> dict[str, Path]:
    system = _Calls(os.system, f"touch {marker}")
    files = {name: tmp_path / name for name in ("system.pt", "exec.pt", "system2.pkl", "system5.pkl")}
    torch.save({"weights": torch.ones(2), "payload": system}, files["system.pt"])
    torch.save({"payload": [_Calls(exec, f"open({str(marker)!r}, 'w').close()")]}, files["exec.pt"])
    files["system2.pkl"].write_bytes(pickle.dumps({"payload": system}, protocol=2))
    files["system5.pkl"].write_bytes(pickle.dumps({"payload": system}, protocol=5))
    return files


def test_malicious_files_are_unsafe_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    files = _malicious_files(tmp_path, marker)
    for name, path in files.items():
        report = audit_file(path)
        assert report.unsafe and report.status is AuditStatus.INCOMPATIBLE, name
        unsafe = [issue for issue in report.issues if issue.severity is Severity.UNSAFE]
        assert len(unsafe) == 1, name
        if "system" in name:
            assert unsafe[0].qualified_name in ("posix.system", "os.system")
            assert f"would call posix.system('touch {marker}') (that is os.system)" in unsafe[0].description
        else:
            assert unsafe[0].qualified_name == "builtins.exec"
            assert unsafe[0].path_in_tree == "root['payload'][0]"
        assert report.to_dict()["severity"] == "unsafe"
    assert not marker.exists()
    assert not any(_weights_only_verdicts(list(files.values())).values())  # torch refuses them too
    assert not marker.exists()


def _raw_pickle(*ops: bytes) -> bytes:
    return b"\x80\x02" + b"".join(ops) + b"."


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def test_calls_hidden_from_the_tree_are_still_found(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # os.system("touch marker") is called, its result popped, and an innocent {} returned.
    hidden = _raw_pickle(b"cposix\nsystem\n", _unicode(f"touch {marker}"), b"\x85R0}")
    # getattr(str, "join") computes a callable at load time, which is then called.
    get_join = (b"c__builtin__\ngetattr\n", b"c__builtin__\nstr\n", _unicode("join"), b"\x86R")
    dynamic = _raw_pickle(*get_join, _unicode("-"), b"]", _unicode("a"), b"a\x86R")
    (tmp_path / "hidden.pkl").write_bytes(hidden)
    (tmp_path / "dynamic.pkl").write_bytes(dynamic)
    hidden_report = audit_file(tmp_path / "hidden.pkl")
    assert hidden_report.unsafe and hidden_report.top_level == {}  # the root is an innocent empty dict
    [issue] = [issue for issue in hidden_report.issues if issue.severity is Severity.UNSAFE]
    assert issue.path_in_tree.startswith("<not reachable from root")
    assert issue.qualified_name == "posix.system"
    dynamic_report = audit_file(tmp_path / "dynamic.pkl")
    unsafe = {issue.qualified_name for issue in dynamic_report.issues if issue.severity is Severity.UNSAFE}
    assert unsafe == {"", "builtins.getattr"}  # the computed call, and getattr itself
    assert any("computed while unpickling" in issue.description for issue in dynamic_report.issues)
    assert not marker.exists()


def test_modules_named_in_the_file_are_never_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "imported"
    module_dir = tmp_path / "mods"
    module_dir.mkdir()
    source = f"open({str(marker)!r}, 'w').close()\nclass Thing: pass\n"
    (module_dir / "audit_canary_mod.py").write_text(source)
    monkeypatch.syspath_prepend(str(module_dir))
    path = tmp_path / "canary.pkl"
    path.write_bytes(_raw_pickle(b"caudit_canary_mod\nThing\n", b")\x81}b"))
    report = audit_file(path)
    objects = [issue.qualified_name for issue in report.issues if issue.kind == "object"]
    assert objects == ["audit_canary_mod.Thing"]
    assert "audit_canary_mod" not in sys.modules and not marker.exists()


# ---------------------------------------------------------------- unreadable files and cost


def test_unreadable_files_are_reported_cleanly(tmp_path: Path, files: dict[str, Path]) -> None:
    assert audit_file(tmp_path / "missing.pt").reason == "no such file"
    assert audit_file(tmp_path).status is AuditStatus.UNREADABLE
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02}q\x00(")  # a pickle cut short
    report = audit_file(garbage)
    assert report.status is AuditStatus.UNREADABLE and "malformed pickle" in report.reason
    lying = tmp_path / "lying_length.pkl"  # claims a 2**62-byte string: must not try to read that much
    lying.write_bytes(b"\x80\x04\x8d" + struct.pack("<Q", 2**62) + b"abc")
    assert "only 3 remain" in audit_file(lying).reason
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(files["state_dict"].read_bytes()[:300])
    assert audit_file(truncated).status is AuditStatus.UNREADABLE
    missing_storage = tmp_path / "missing_storage.pt"
    with zipfile.ZipFile(files["state_dict"]) as source, zipfile.ZipFile(missing_storage, "w") as target:
        for info in source.infolist():
            if not info.filename.endswith("/data/0"):
                target.writestr(info, source.read(info.filename))
    report = audit_file(missing_storage)
    assert report.status is AuditStatus.UNREADABLE and "tensor data records missing" in report.reason


def test_only_data_pkl_is_read_from_a_large_zip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.pt"
    torch.save({"weights": torch.zeros(8_000_000), "bias": torch.zeros(3)}, path)  # 32 MB of tensor data
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def recording_open(self: zipfile.ZipFile, name: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(name if isinstance(name, str) else name.filename)
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", recording_open)
    report = audit_file(path)
    assert report.compatible and report.top_level["weights"] == "Tensor[8000000]"
    assert opened == ["big/data.pkl"]


def test_plain_pickled_tensor_is_incompatible_not_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pkl"
    path.write_bytes(pickle.dumps({"t": torch.ones(2)}, protocol=2))
    report = audit_file(path)
    kinds = {issue.kind for issue in report.issues}
    assert "plain_pickled_tensor" in kinds and not report.unsafe


# ---------------------------------------------------------------- CLI


def _run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="esper")
    audit_cmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", *argv])
    return int(args.func(args))


def test_cli_exit_codes_and_output(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_cli(str(files["state_dict"]), str(files["legacy_state_dict"])) == 0
    assert "COMPATIBLE" in capsys.readouterr().out
    assert _run_cli(str(files["state_dict"]), str(files["enum"])) == 1
    out = capsys.readouterr().out
    assert "INCOMPATIBLE: 1 issue" in out and "root['stage']" in out
    assert _run_cli(str(files["enum"]), str(files["state_dict"].with_name("nope.pt"))) == 2
    assert "UNREADABLE: no such file" in capsys.readouterr().out
    assert _run_cli() == 2
    assert "at least one PATH is required" in capsys.readouterr().err
    assert _run_cli("--json", str(files["state_dict"]), str(files["module"])) == 1
    reports = json.loads(capsys.readouterr().out)
    assert [report["status"] for report in reports] == ["compatible", "incompatible"]
    assert reports[1]["issues"][0]["kind"] == "nn.Module"


def test_cli_self_test_is_delegated(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[bool] = []
    fake = types.ModuleType("esper.checkpoints.self_test")
    fake.run_self_test = lambda json_output: calls.append(json_output) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "esper.checkpoints.self_test", fake)
    assert _run_cli("--self-test") == 0
    assert _run_cli("--self-test", "--json") == 0
    assert calls == [False, True]
    assert _run_cli("--self-test", "x.pt") == 2
    assert "not both" in capsys.readouterr().err


def test_rich_renderer_keeps_brackets(files: dict[str, Path]) -> None:
    from rich.console import Console

    console = Console(width=200, record=True, color_system=None)
    console.print(render_rich(audit_file(files["enum"])))
    assert "root['stage']" in console.export_text()  # [..] survives: Text objects, not markup
