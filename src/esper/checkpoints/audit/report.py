"""What the checkpoint audit found and the words it uses.

The findings as data (for JSON) and as text (for people), plus the catalogue
the audit classifies with: globals whose loading runs code, and known data
types with the conversion that makes them weights_only-safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from esper.checkpoints.audit.pickle_scan import (
    Call,
    DictNode,
    GlobalRef,
    Node,
    Opaque,
    Persistent,
    Prim,
    Seq,
    global_name,
    torch_facts,
)


class Severity(StrEnum):
    """How bad one finding (or a whole file) is."""

    OK = "ok"
    INCOMPATIBLE = "incompatible"  # torch.load(weights_only=True) refuses it; data only, no code runs
    UNSAFE = "unsafe"  # full unpickling would call code that can do anything


class AuditStatus(StrEnum):
    """The verdict on one file."""

    COMPATIBLE = "compatible"  # torch.load(weights_only=True) reads it
    INCOMPATIBLE = "incompatible"  # readable by the audit, refused by weights_only
    UNREADABLE = "unreadable"  # missing, corrupt, or not a pickle/torch file at all


@dataclass(frozen=True)
class AuditIssue:
    """One object in the pickle that weights_only would refuse, and how to fix it."""

    path_in_tree: str  # e.g. root['model']['slot._extra_state']['seed_state'].stage
    kind: str  # enum, datetime, collection, numpy, object, nn.Module, unsafe_call, ...
    qualified_name: str  # the global involved, e.g. esper.x.SeedStage (or an opcode name)
    description: str  # what it is, e.g. "Enum esper.x.SeedStage(3)"
    suggestion: str  # e.g. "convert to int (enum.value)"
    severity: Severity

    def to_dict(self) -> dict[str, str]:
        return {
            "path_in_tree": self.path_in_tree,
            "kind": self.kind,
            "qualified_name": self.qualified_name,
            "description": self.description,
            "suggestion": self.suggestion,
            "severity": self.severity.value,
        }


@dataclass(frozen=True)
class AuditReport:
    """The audit of one file."""

    path: str
    status: AuditStatus
    container: str  # "zip", "legacy", "pickle", "torchscript", "tar" or "unknown"
    issues: list[AuditIssue] = field(default_factory=list)
    top_level: dict[str, str] = field(default_factory=dict)  # key -> "dict[26 keys]", "Tensor[3, 4]"...
    reason: str = ""  # why the file is unreadable (empty otherwise)
    pickle_protocol: int | None = None

    @property
    def unsafe(self) -> bool:
        return any(issue.severity is Severity.UNSAFE for issue in self.issues)

    @property
    def compatible(self) -> bool:
        return self.status is AuditStatus.COMPATIBLE

    @property
    def severity(self) -> Severity:
        if self.unsafe:
            return Severity.UNSAFE
        return Severity.OK if self.compatible else Severity.INCOMPATIBLE

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status.value,
            "unsafe": self.unsafe,
            "severity": self.severity.value,
            "container": self.container,
            "pickle_protocol": self.pickle_protocol,
            "reason": self.reason,
            "top_level": dict(self.top_level),
            "issues": [issue.to_dict() for issue in self.issues],
        }


def _verdict_line(report: AuditReport) -> str:
    if report.status is AuditStatus.UNREADABLE:
        return f"UNREADABLE: {report.reason}"
    if report.compatible:
        return "COMPATIBLE: torch.load(weights_only=True) reads this file"
    count = len(report.issues)
    noun = "issue" if count == 1 else "issues"
    if report.unsafe:
        return f"UNSAFE: {count} {noun}; loading this file without weights_only would run code"
    return f"INCOMPATIBLE: {count} {noun}; torch.load(weights_only=True) refuses this file"


def _issue_line(issue: AuditIssue) -> str:
    marker = "!" if issue.severity is Severity.UNSAFE else "*"
    return f"{marker} {issue.path_in_tree}: {issue.description} -> {issue.suggestion}"


def render_text(report: AuditReport) -> str:
    """Plain-text block for one file: verdict, top-level structure, issues."""
    lines = [f"{report.path} [{report.container}]", f"  {_verdict_line(report)}"]
    if report.top_level:
        lines.append("  top level:")
        lines += [f"    {key}: {description}" for key, description in report.top_level.items()]
    if report.issues:
        lines.append("  issues:")
        lines += [f"    {_issue_line(issue)}" for issue in report.issues]
    return "\n".join(lines)


_STYLES = {Severity.OK: "bold green", Severity.INCOMPATIBLE: "bold yellow", Severity.UNSAFE: "bold red"}


def render_rich(report: AuditReport) -> RenderableType:
    """The same block with colours. Text objects, not markup: paths contain [brackets]."""
    style = "bold magenta" if report.status is AuditStatus.UNREADABLE else _STYLES[report.severity]
    parts: list[RenderableType] = [
        Text.assemble((report.path, "bold"), f" [{report.container}]"),
        Text.assemble("  ", (_verdict_line(report), style)),
    ]
    if report.top_level:
        parts.append(Text("  top level:", style="dim"))
        parts += [Text(f"    {key}: {description}") for key, description in report.top_level.items()]
    if report.issues:
        parts.append(Text("  issues:", style="dim"))
        for issue in report.issues:
            style = _STYLES[issue.severity].removeprefix("bold ")
            parts.append(Text(f"    {_issue_line(issue)}", style=style))
    return Group(*parts)


# ---------------------------------------------------------------- describing placeholder nodes


def preview(node: Node, limit: int = 200, depth: int = 0) -> str:
    """Short rendering of call arguments: 'touch /tmp/x', b'...', os.system, {...}."""
    if isinstance(node, Prim):
        text = repr(node.value)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    if isinstance(node, Seq) and node.kind == "tuple" and depth == 0:
        return ", ".join(preview(item, limit, 1) for item in node.items)
    if isinstance(node, GlobalRef):
        return node.qualified
    if isinstance(node, Call):
        return f"{global_name(node) or '<computed callable>'}(...)"
    return "{...}" if isinstance(node, DictNode) else "[...]"


def _describe_call(call: Call) -> str:
    name = global_name(call) or "<computed callable>"
    if name == "collections.OrderedDict":
        return f"OrderedDict[{len(call.setitems)} keys]"
    if name == "_codecs.encode":  # how protocol 2 spells bytes
        return "bytes"
    if name in KNOWN_TYPES:
        return KNOWN_TYPES[name][1]  # "numpy array", "datetime", ...
    if not name.startswith("torch._utils._rebuild"):
        function = call.op == "REDUCE" and not name.rpartition(".")[2][:1].isupper()
        return f"result of {name}(...)" if function else name.removeprefix("builtins.")
    args = call.args.items if isinstance(call.args, Seq) else []
    if "parameter" in name and args:
        return "Parameter" + describe_node(args[0]).removeprefix("Tensor")
    size = args[2] if len(args) > 2 else None
    if isinstance(size, Seq) and all(isinstance(item, Prim) for item in size.items):
        return "Tensor[" + ", ".join(repr(item.value) for item in size.items if isinstance(item, Prim)) + "]"
    return "Tensor"


def describe_node(node: Node) -> str:
    """Short type description: dict[26 keys], Tensor[3, 4], esper.x.SeedState..."""
    if isinstance(node, Prim):
        return "None" if node.value is None else type(node.value).__name__
    if isinstance(node, Seq):
        return f"{node.kind}[{len(node.items)} items]"
    if isinstance(node, DictNode):
        return f"dict[{len(node.pairs)} keys]"
    if isinstance(node, GlobalRef):  # allowed ones are dtypes and the like: the name says it all
        return node.qualified if node.allowed else f"reference to {node.qualified}"
    if isinstance(node, Call):
        return _describe_call(node)
    return "storage" if isinstance(node, Persistent) else node.what if isinstance(node, Opaque) else "?"


def key_label(key: Node) -> str:
    """A dict key as it appears in a tree path: ['name'], [3], [<tuple[2 items]>]."""
    return repr(key.value) if isinstance(key, Prim) else f"<{describe_node(key)}>"


def summarize(root: Node) -> dict[str, str]:
    """`key: description` for the root dict (or `<root>: description` for anything else)."""
    if isinstance(root, DictNode):
        pairs = root.pairs
    elif isinstance(root, Call) and global_name(root) == "collections.OrderedDict":
        pairs = root.setitems
    else:
        return {"<root>": describe_node(root)}
    labels = [str(key.value) if isinstance(key, Prim) else key_label(key) for key, _ in pairs]
    return {label: describe_node(value) for label, (_, value) in zip(labels, pairs, strict=True)}


# ---------------------------------------------------------------- catalogue of findings

# Loading runs code from these modules, whatever the name: never data.
DANGEROUS_MODULES = frozenset(
    {"os", "posix", "nt", "sys", "subprocess", "shutil", "socket", "pty", "runpy", "importlib", "ctypes"}
    | {"code", "codeop", "webbrowser", "multiprocessing", "pickle", "_pickle", "marshal", "shelve", "dill"}
    | {"cloudpickle", "types", "threading", "_thread", "signal", "asyncio", "urllib", "http", "ftplib"}
    | {"smtplib", "ssl", "platform", "pdb", "bdb", "timeit", "trace", "profile", "cProfile", "io", "_io"}
)
_DANGEROUS_BUILTINS = frozenset(
    {"eval", "exec", "compile", "__import__", "open", "getattr", "setattr", "delattr", "globals", "locals"}
    | {"vars", "input", "breakpoint", "exit", "quit", "help", "type", "super", "classmethod", "staticmethod"}
)
DANGEROUS_QUALIFIED = frozenset(
    {"operator.attrgetter", "operator.methodcaller", "functools.partial", "functools.reduce"}
    | {f"builtins.{name}" for name in _DANGEROUS_BUILTINS}
)
UNSAFE_FIX = "do not load it without weights_only; rebuild the checkpoint from trusted code, primitives only"

_ISO = "convert to ISO 8601 string (.isoformat())"
_ARRAY = "convert to torch.Tensor (torch.from_numpy) or list (.tolist())"
_SCALAR = "convert to int/float (.item())"
# qualified name -> (kind, label, suggestion, also report ordinary problems inside it)
KNOWN_TYPES: dict[str, tuple[str, str, str, bool]] = {
    "datetime.datetime": ("datetime", "datetime", _ISO, False),
    "datetime.date": ("datetime", "date", _ISO, False),
    "datetime.time": ("datetime", "time", _ISO, False),
    "datetime.timezone": ("datetime", "timezone", "store UTC times as ISO 8601 strings", False),
    "datetime.timedelta": ("datetime", "timedelta", "convert to float seconds (.total_seconds())", False),
    "collections.deque": ("collection", "deque", "convert to list", True),
    "collections.defaultdict": ("collection", "defaultdict", "convert to dict", True),
    "collections.UserDict": ("collection", "UserDict", "convert to dict", True),
    "collections.UserList": ("collection", "UserList", "convert to list", True),
    "collections.ChainMap": ("collection", "ChainMap", "convert to dict", True),
    "builtins.frozenset": ("collection", "frozenset", "convert to list", True),
    "builtins.range": ("collection", "range", "convert to list", False),
    "builtins.slice": ("collection", "slice", "convert to a [start, stop, step] list", False),
    "numpy.dtype": ("numpy", "numpy dtype", "store the dtype name as str", False),
    "decimal.Decimal": ("number", "Decimal", "convert to float or str", False),
    "fractions.Fraction": ("number", "Fraction", "convert to float", False),
    "uuid.UUID": ("uuid", "UUID", "convert to str", False),
}
for _core in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x spell the module differently
    KNOWN_TYPES[f"{_core}.multiarray._reconstruct"] = ("numpy", "numpy array", _ARRAY, False)
    KNOWN_TYPES[f"{_core}.multiarray.scalar"] = ("numpy", "numpy scalar", _SCALAR, False)
for _path in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"):
    KNOWN_TYPES[f"pathlib.{_path}"] = ("path", "path", "convert to str", False)
for _type in ("int", "float", "str", "bool", "list", "dict", "tuple"):  # subclasses of builtins
    KNOWN_TYPES[f"builtins.{_type}"] = ("object", f"{_type} built by a call", f"store a plain {_type}", True)
# protocol 2 pickles b"" as a call to bytes(), which weights_only refuses
KNOWN_TYPES["builtins.bytes"] = ("bytes", "bytes built by a call", "store a str or a uint8 tensor", False)
# Protocol 0/1 (and __getnewargs__) spellings of "make an instance of args[0]".
RECONSTRUCTORS = frozenset({"copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__"})
NUMPY_RNG_PREFIX = "numpy.random._pickle."


def is_dangerous(qualified: str) -> bool:
    """True if referencing or calling this global means running code, never rebuilding data."""
    module = qualified.rpartition(".")[0]
    if qualified.startswith("<") or module in torch_facts().blocked_modules:
        return True  # a callable computed at load time, or a module torch never allows
    return module.split(".", 1)[0] in DANGEROUS_MODULES or qualified in DANGEROUS_QUALIFIED


def os_alias(qualified: str) -> str:
    """pickle names os.system by its real home (posix/nt); say which os function that is."""
    module, _, name = qualified.rpartition(".")
    return f" (that is os.{name})" if module in ("posix", "nt") else ""
