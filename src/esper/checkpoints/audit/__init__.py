"""The checkpoint audit: would `torch.load(weights_only=True)` read this file, and if not, why?

`audit_file` replays any `.pt` file's pickle symbolically (`pickle_scan`: nothing imported, nothing
called; for a zip only `data.pkl` is read), then explains each object weights_only refuses, with its
path (`root['model']['x'].stage`) and a conversion: enums to ints, datetimes to ISO strings,
deques to lists, dataclasses to dicts, modules to state_dict + config. Code-running calls are unsafe.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from torch.serialization import PROTOCOL_VERSION

from esper.checkpoints.audit.pickle_scan import (
    ROOT,
    Call,
    DictNode,
    GlobalRef,
    Node,
    Opaque,
    Persistent,
    PickleScan,
    Prim,
    ScanError,
    Seq,
    global_name,
    scan_pickle,
    scan_stream,
    storage_keys,
    torch_facts,
)
from esper.checkpoints.audit.report import (
    KNOWN_TYPES,
    NUMPY_RNG_PREFIX,
    RECONSTRUCTORS,
    UNSAFE_FIX,
    AuditIssue,
    AuditReport,
    AuditStatus,
    Severity,
    describe_node,
    is_dangerous,
    key_label,
    os_alias,
    preview,
    render_rich,
    render_text,
    summarize,
)

__all__ = [
    "AuditIssue",
    "AuditReport",
    "AuditStatus",
    "Severity",
    "audit_file",
    "describe_node",
    "find_issues",
    "render_rich",
    "render_text",
    "summarize",
]

_RESAVE = "re-save it with torch.save"
_INCOMPATIBLE = Severity.INCOMPATIBLE
_PLAIN_PICKLED_STORAGE = "torch.storage._load_from_bytes"
_MAX_NESTING = 3  # plain-pickled storages embed whole legacy checkpoints; bound the recursion


def _file_issue(text: str, fix: str = _RESAVE, path: str = "<file>") -> AuditIssue:
    """A finding about the container rather than an object inside it."""
    return AuditIssue(path, "container", "", text, fix, _INCOMPATIBLE)


@dataclass(frozen=True)
class _Verdict:
    kind: str
    description: str
    suggestion: str
    severity: Severity
    look_inside: bool  # report ordinary problems inside it too (unsafe ones are always reported)
    attributes: bool = False  # its BUILD state is an attribute dict: paths become `.name`


def _unsafe_call(qualified: str, call: Call) -> _Verdict:
    text = f"loading this file would call {qualified}({preview(call.args)}){os_alias(qualified)}"
    return _Verdict("unsafe_call", text, UNSAFE_FIX, Severity.UNSAFE, True)


def _module_state(states: list[Node]) -> bool:
    for state in states:
        dicts = state.items if isinstance(state, Seq) and state.kind == "tuple" else [state]
        for candidate in dicts:
            pairs = candidate.pairs if isinstance(candidate, DictNode) else []
            keys = {key.value for key, _ in pairs if isinstance(key, Prim)}
            if "_parameters" in keys or "_modules" in keys:
                return True
    return False


def _classify(call: Call, qualified: str) -> _Verdict:
    """What a refused call builds, from the pickle structure alone, and how to store it instead."""
    if is_dangerous(qualified):
        return _unsafe_call(qualified, call)
    creates_object = call.op != "REDUCE"
    args = call.args.items if isinstance(call.args, Seq) else []
    if qualified in RECONSTRUCTORS and args and isinstance(args[0], GlobalRef):
        qualified, creates_object = args[0].qualified, True
        if is_dangerous(qualified):
            return _unsafe_call(qualified, call)
    if qualified in KNOWN_TYPES:
        kind, label, suggestion, inside = KNOWN_TYPES[qualified]
        return _Verdict(kind, f"{label} {qualified}", suggestion, _INCOMPATIBLE, inside)
    if qualified.startswith(NUMPY_RNG_PREFIX):
        fix = "store rng.bit_generator.state (a dict) instead"
        return _Verdict("numpy", f"numpy random generator {qualified}", fix, _INCOMPATIBLE, False)
    if _module_state(call.states):
        text = f"nn.Module {qualified}"
        fix = "CRITICAL: store its state_dict plus a config, not the module"
        return _Verdict("nn.Module", text, fix, _INCOMPATIBLE, False)
    if creates_object:
        fix = "convert to dict (dataclasses.asdict / to_dict())"
        text = f"dataclass or object {qualified}"
        return _Verdict("object", text, fix, _INCOMPATIBLE, True, attributes=bool(call.states))
    if not qualified.rpartition(".")[2][:1].isupper():  # a function, not a class: arbitrary code
        return _unsafe_call(qualified, call)
    if qualified.startswith("builtins."):
        return _Verdict("exception", f"exception {qualified}", "convert to str", _INCOMPATIBLE, False)
    plain = not (call.states or call.appends or call.setitems)
    if plain and len(args) == 1 and isinstance(args[0], Prim):
        value = args[0].value
        target = "int" if type(value) is int else type(value).__name__
        text = f"Enum {qualified}({value!r})"
        return _Verdict("enum", text, f"convert to {target} (enum.value)", _INCOMPATIBLE, False)
    fix = "convert to a dict or list of primitives (e.g. namedtuple._asdict())"
    return _Verdict("object", f"object built by calling {qualified}(...)", fix, _INCOMPATIBLE, True)


_Todo = tuple[Node, str, bool]  # node, its path, report ordinary (not only unsafe) findings


class _Walker:
    """Walks the placeholder tree in document order and collects issues (each node once)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.issues: list[AuditIssue] = []
        self.visited: set[int] = set()
        self.found: dict[int, AuditIssue] = {}  # node -> its own finding, repeated where it is shared

    def walk(self, root: Node, path: str) -> None:
        todo: list[_Todo] = [(root, path, True)]
        while todo:
            node, where, report_all = todo.pop()
            if id(node) in self.visited:
                # pickle memoizes shared objects (an enum member used twice): every place needs the fix
                if id(node) in self.found and report_all:
                    self.issues.append(replace(self.found[id(node)], path_in_tree=where))
                continue
            self.visited.add(id(node))
            before = len(self.issues)
            children = self._visit(node, where, report_all)
            if len(self.issues) > before and self.issues[before].path_in_tree == where:
                self.found[id(node)] = self.issues[before]
            if node.violation and report_all and len(self.issues) == before:
                fix = "rebuild it from plain dicts and lists (a normal torch.save never writes this)"
                name = global_name(node) or ""
                self._add(True, AuditIssue(where, "structure", name, node.violation, fix, _INCOMPATIBLE))
            if not isinstance(node, Call):  # a call's states are walked by _visit_call
                children += [(state, f"{where}<state>", report_all) for state in node.states]
            children += [(item, f"{where}<extra {i}>", report_all) for i, item in enumerate(node.extra)]
            todo.extend(reversed(children))

    def _add(self, report_all: bool, issue: AuditIssue) -> None:
        # Inside an object already reported (a numpy array, a module), only unsafe findings add information.
        if report_all or issue.severity is Severity.UNSAFE:
            self.issues.append(issue)

    def _visit(self, node: Node, path: str, report_all: bool) -> list[_Todo]:
        if isinstance(node, Call):
            return self._visit_call(node, path, report_all)
        if isinstance(node, Seq):
            return [(item, f"{path}[{i}]", report_all) for i, item in enumerate(node.items)]
        if isinstance(node, DictNode):
            return self._pairs(node.pairs, path, report_all)
        if isinstance(node, Persistent):
            return [(node.pid, f"{path}<persistent id>", report_all)]
        if isinstance(node, Opaque):
            self._add(report_all, AuditIssue(path, "opaque", "", node.what, "store it inline", _INCOMPATIBLE))
        if isinstance(node, GlobalRef) and not node.allowed:
            sev = Severity.UNSAFE if is_dangerous(node.qualified) else _INCOMPATIBLE
            fix = UNSAFE_FIX if sev is Severity.UNSAFE else "store its qualified name as a str"
            text = f"reference to class or function {node.qualified}{os_alias(node.qualified)}"
            self._add(report_all, AuditIssue(path, "reference", node.qualified, text, fix, sev))
        return []

    def _pairs(self, pairs: list[tuple[Node, Node]], path: str, report_all: bool) -> list[_Todo]:
        children: list[_Todo] = []
        for key, value in pairs:
            if not isinstance(key, Prim):
                children.append((key, f"{path}<key {key_label(key)}>", report_all))
            children.append((value, f"{path}[{key_label(key)}]", report_all))
        return children

    def _visit_call(self, call: Call, path: str, report_all: bool) -> list[_Todo]:
        func = call.func
        inside = report_all
        attributes = False
        if not isinstance(func, GlobalRef):
            text = f"loading this file would call a callable computed while unpickling: {preview(func)}"
            self._add(True, AuditIssue(path, "unsafe_call", "", text, UNSAFE_FIX, Severity.UNSAFE))
            children = [(func, f"{path}<callable>", report_all)]
        else:
            self.visited.add(id(func))  # the call's own finding covers its global
            children = []
            if func.qualified == _PLAIN_PICKLED_STORAGE:
                self._plain_pickled_storage(call, path, report_all)
            elif not func.allowed:
                verdict = _classify(call, func.qualified)
                text, fix, sev = verdict.description, verdict.suggestion, verdict.severity
                self._add(report_all, AuditIssue(path, verdict.kind, func.qualified, text, fix, sev))
                inside, attributes = report_all and verdict.look_inside, verdict.attributes
        if isinstance(call.args, Seq):
            children += [(arg, f"{path}<arg {i}>", inside) for i, arg in enumerate(call.args.items)]
        else:
            children.append((call.args, f"{path}<args>", inside))
        if call.kwargs is not None:
            children.append((call.kwargs, f"{path}<kwargs>", inside))
        children += [(item, f"{path}[{i}]", inside) for i, item in enumerate(call.appends)]
        children += self._pairs(call.setitems, path, inside)
        for state in call.states:
            children += self._state(state, path, inside, attributes)
        return children

    def _state(self, state: Node, path: str, inside: bool, attributes: bool) -> list[_Todo]:
        parts = state.items if attributes and isinstance(state, Seq) and state.kind == "tuple" else [state]
        if not attributes or not all(isinstance(part, DictNode | Prim) for part in parts):
            return [(state, f"{path}<state>", inside)]
        children: list[_Todo] = []
        self.visited.add(id(state))
        for part in parts:
            self.visited.add(id(part))
            for key, value in part.pairs if isinstance(part, DictNode) else []:
                label = f".{key.value}" if isinstance(key, Prim) and isinstance(key.value, str) else "<attr>"
                children.append((value, f"{path}{label}", inside))
        return children

    def _plain_pickled_storage(self, call: Call, path: str, report_all: bool) -> None:
        """pickle.dumps(tensor) embeds a legacy torch file that is unpickled *without* weights_only."""
        payload = _embedded_bytes(call)
        nested = [] if payload is None else _nested_issues(payload, f"{path}<embedded>", self.depth + 1)
        unsafe = [issue for issue in nested if issue.severity is Severity.UNSAFE]
        sev = Severity.UNSAFE if payload is None or unsafe else _INCOMPATIBLE
        text = f"tensor storage pickled with plain pickle ({_PLAIN_PICKLED_STORAGE})"
        fix, name = "save tensors with torch.save, not pickle", _PLAIN_PICKLED_STORAGE
        self._add(report_all, AuditIssue(path, "plain_pickled_tensor", name, text, fix, sev))
        self.issues += unsafe


def _embedded_bytes(call: Call) -> bytes | None:
    args = call.args.items if isinstance(call.args, Seq) else []
    if len(args) != 1:
        return None
    arg = args[0]
    if isinstance(arg, Prim) and isinstance(arg.value, bytes):
        return arg.value
    if global_name(arg) == "_codecs.encode" and isinstance(arg, Call) and isinstance(arg.args, Seq):
        parts = arg.args.items
        if len(parts) == 2 and all(isinstance(part, Prim) and isinstance(part.value, str) for part in parts):
            # Ignored below: all() above does not narrow: both are Prims.
            return str(parts[0].value).encode(str(parts[1].value))  # type: ignore[attr-defined]
    return None


def find_issues(scan: PickleScan, root_path: str = "root", depth: int = 0) -> list[AuditIssue]:
    """Every object in one scanned pickle that weights_only refuses, in document order."""
    issues = []
    for name, offsets in scan.unsupported.items():
        text = f"pickle opcode {name} ({len(offsets)}x, first at byte {offsets[0]}) is not implemented by"
        text += " torch's weights_only unpickler"
        fix = "save with torch.save's default pickle_protocol=2"
        issues.append(AuditIssue("<pickle stream>", "opcode", name, text, fix, _INCOMPATIBLE))
    walker = _Walker(depth)
    walker.walk(scan.root, root_path)
    # Objects built then dropped (POP) still run code while loading. Calls first, so that a global
    # used as a callable is reported with its call rather than as a bare reference.
    dropped = [node for node in scan.nodes if isinstance(node, Call | Opaque) or node.violation]
    for node in dropped + [node for node in scan.nodes if isinstance(node, GlobalRef)]:
        if id(node) not in walker.visited:
            walker.walk(node, f"<not reachable from root, built at byte {node.offset}>")
    return issues + walker.issues


def _nested_issues(payload: bytes, path: str, depth: int) -> list[AuditIssue]:
    if depth > _MAX_NESTING:
        text = "plain-pickled data nested too deeply to audit"
        return [AuditIssue(path, "nesting", "", text, UNSAFE_FIX, Severity.UNSAFE)]
    try:
        return _legacy_pickles(io.BytesIO(payload), path, depth)[0]
    except ScanError as exc:
        text = f"embedded data is not a pickle: {exc}"
        return [AuditIssue(path, "unreadable", "", text, UNSAFE_FIX, Severity.UNSAFE)]


_Stream = tuple[list[AuditIssue], Node, str, int | None]  # issues, root, container, pickle protocol


def _legacy_pickles(stream: BinaryIO, root_path: str, depth: int) -> _Stream:
    """Issues, root node, container and protocol of a legacy torch stream (or a plain pickle)."""
    container, scans = scan_stream(stream)
    issues = []
    if container == "pickle":
        issues.append(_file_issue("plain pickle, not written by torch.save: torch.load rejects it"))
    for label, scan in scans:
        issues += find_issues(scan, root_path if label == ROOT else label, depth)
    by_label = dict(scans)
    version = by_label["<protocol version>"].root if container == "legacy" else None
    if version is not None and not (isinstance(version, Prim) and version.value == PROTOCOL_VERSION):
        text = f"legacy protocol version {preview(version)} is not {PROTOCOL_VERSION}"
        issues.append(_file_issue(text, path="<protocol version>"))
    return issues, by_label[ROOT].root, container, by_label[ROOT].protocol


def _audit_zip(path: str, archive: zipfile.ZipFile) -> AuditReport:
    names = archive.namelist()
    if not names or "/" not in names[0]:
        return _unreadable(path, "zip archive not written by torch.save (records not in one folder)", "zip")
    prefix = names[0].split("/", 1)[0]
    if f"{prefix}/constants.pkl" in names:
        text = "TorchScript archive: torch.load(weights_only=True) refuses TorchScript"
        fix = "save model.state_dict() with torch.save instead (or use torch.jit.load on trusted files)"
        return AuditReport(path, AuditStatus.INCOMPATIBLE, "torchscript", [_file_issue(text, fix)])
    data_name = f"{prefix}/data.pkl"
    if data_name not in names:
        return _unreadable(path, f"zip archive without {data_name}: not a torch.save checkpoint", "zip")
    if f"{prefix}/version" not in names and f"{prefix}/.data/version" not in names:
        return _unreadable(path, f"zip archive without {prefix}/version: not a torch.save checkpoint", "zip")
    scan = scan_pickle(archive.read(data_name))  # only this record is read, never the tensor data
    missing = sorted(key for key in storage_keys(scan) if f"{prefix}/data/{key}" not in names)
    if missing:
        return _unreadable(path, f"tensor data records missing (truncated archive?): {missing[:5]}", "zip")
    issues = find_issues(scan)
    status = AuditStatus.INCOMPATIBLE if issues else AuditStatus.COMPATIBLE
    return AuditReport(path, status, "zip", issues, summarize(scan.root), pickle_protocol=scan.protocol)


def _unreadable(path: str, reason: str, container: str = "unknown") -> AuditReport:
    return AuditReport(path, AuditStatus.UNREADABLE, container, reason=reason)


def audit_file(path: str | os.PathLike[str]) -> AuditReport:
    """Audit one file without executing any of its pickled code."""
    name, file = os.fspath(path), Path(path)
    if not file.is_file():
        return _unreadable(name, "is a directory" if file.is_dir() else "no such file")
    torch_facts()  # fail loudly here if torch's layout changed, not as an "unreadable" file
    try:
        with file.open("rb") as handle:
            if handle.read(4) == b"PK\x03\x04":
                handle.seek(0)
                with zipfile.ZipFile(handle) as archive:
                    return _audit_zip(name, archive)
            handle.seek(0)
            try:
                with tarfile.open(fileobj=handle, mode="r:"):
                    text = "legacy .tar checkpoint: torch.load(weights_only=True) refuses this format"
                    return AuditReport(name, AuditStatus.INCOMPATIBLE, "tar", [_file_issue(text)])
            except tarfile.TarError:
                handle.seek(0)
            issues, root, container, protocol = _legacy_pickles(handle, "root", 0)
    except ScanError as exc:
        return _unreadable(name, f"not a torch checkpoint or pickle: {exc}")
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        return _unreadable(name, f"cannot read: {type(exc).__name__}: {exc}")
    status = AuditStatus.INCOMPATIBLE if issues else AuditStatus.COMPATIBLE
    return AuditReport(name, status, container, issues, summarize(root), pickle_protocol=protocol)
