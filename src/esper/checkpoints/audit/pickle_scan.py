"""Static reading of a pickle stream: a symbolic stack machine that never calls anything.

`pickletools.genops` decodes the opcodes; `scan_pickle` replays them on a
stack of placeholder nodes (primitives, containers, global references,
calls, persistent ids). Nothing named in the file is imported and nothing is
called. While replaying it records everything torch's weights_only loader
would refuse: opcodes it does not implement, globals outside its allowlist
and the operations it restricts (APPEND only on lists, SETITEM only on
dicts, BUILD only on tensors/allowed types, persistent ids only for storages).
The allowlist and the opcode set are read from torch itself at run time.
"""

from __future__ import annotations

import functools
import io
import pickletools
from dataclasses import dataclass, field
from typing import BinaryIO

import torch._utils
import torch._weights_only_unpickler as weights_only_unpickler
import torch.serialization


class ScanError(ValueError):
    """The byte stream is not a well-formed pickle."""


@dataclass(frozen=True)
class TorchFacts:
    """What torch's weights_only unpickler accepts, read from torch at run time."""

    supported_opcodes: frozenset[str]
    blocked_modules: frozenset[str]
    import_mapping: dict[str, str]
    name_mapping: dict[tuple[str, str], tuple[str, str]]

    def allowed_globals(self) -> frozenset[str]:
        # Not cached: users may add safe globals (torch.serialization.add_safe_globals) at any time.
        return frozenset(weights_only_unpickler._get_allowed_globals()) | frozenset(
            weights_only_unpickler._get_user_allowed_globals()
        )


@functools.cache
def torch_facts() -> TorchFacts:
    """The opcodes torch's restricted unpickler implements are exactly the ones it imports from pickle."""
    supported = frozenset(
        op.name
        for op in pickletools.opcodes
        if getattr(weights_only_unpickler, op.name, None) == op.code.encode("latin-1")
    )
    if not {"GLOBAL", "REDUCE", "STOP", "BINPERSID"} <= supported:
        raise RuntimeError(
            "cannot read the opcode set of torch._weights_only_unpickler: its layout changed in this torch"
            f" version ({torch.__version__}); the audit must be updated"
        )
    return TorchFacts(
        supported_opcodes=supported,
        blocked_modules=frozenset(weights_only_unpickler._blocklisted_modules),
        import_mapping=dict(torch._utils.IMPORT_MAPPING),
        name_mapping=dict(torch._utils.NAME_MAPPING),
    )


# ---------------------------------------------------------------- placeholder nodes


@dataclass(eq=False, kw_only=True)
class Node:
    offset: int  # byte offset of the opcode that made it
    states: list[Node] = field(default_factory=list)  # BUILD states applied to it
    extra: list[Node] = field(default_factory=list)  # items added by an operation its type does not support
    violation: str = ""  # why torch's weights_only loader refuses an operation on it


@dataclass(eq=False, kw_only=True)
class Prim(Node):
    value: object  # None, bool, int, float, str, bytes, bytearray


@dataclass(eq=False, kw_only=True)
class Seq(Node):
    kind: str  # list, tuple, set, frozenset
    items: list[Node] = field(default_factory=list)


@dataclass(eq=False, kw_only=True)
class DictNode(Node):
    pairs: list[tuple[Node, Node]] = field(default_factory=list)


@dataclass(eq=False, kw_only=True)
class GlobalRef(Node):
    qualified: str  # "module.name" after torch's py2 name mapping, or "<...>" when computed at load time
    allowed: bool


@dataclass(eq=False, kw_only=True)
class Call(Node):
    op: str  # REDUCE, NEWOBJ, NEWOBJ_EX, INST or OBJ
    func: Node
    args: Node
    kwargs: Node | None = None
    appends: list[Node] = field(default_factory=list)
    setitems: list[tuple[Node, Node]] = field(default_factory=list)


@dataclass(eq=False, kw_only=True)
class Persistent(Node):
    pid: Node


@dataclass(eq=False, kw_only=True)
class Opaque(Node):
    what: str


@dataclass
class PickleScan:
    root: Node
    nodes: list[Node]  # every node created, in stream order
    unsupported: dict[str, list[int]]  # opcode name -> offsets where torch's loader would stop
    protocol: int | None


def global_name(call: Node) -> str | None:
    """The qualified name a call invokes, if it is a plain global reference."""
    if isinstance(call, Call) and isinstance(call.func, GlobalRef):
        return call.func.qualified
    return None


def covered(node: Node) -> bool:
    """True if the node is made by a refused global (that finding already explains the failure)."""
    return isinstance(node, Call) and isinstance(node.func, GlobalRef) and not node.func.allowed


_PRIMITIVE_OPS = frozenset(
    {
        *("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"),
        *("STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"),
        *("UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"),
    }
)
_CONSTANTS = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_EMPTY = {"EMPTY_LIST": "list", "EMPTY_TUPLE": "tuple", "EMPTY_SET": "set"}
_FROM_MARK = {"LIST": "list", "TUPLE": "tuple", "FROZENSET": "frozenset"}
_FIXED_TUPLES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_DICT_TYPES = frozenset({"collections.OrderedDict", "collections.Counter"})
_NOT_BUILDABLE = frozenset({"_codecs.encode"})  # allowed, but returns bytes


class _Machine:
    def __init__(self, facts: TorchFacts, allowed: frozenset[str]) -> None:
        self.facts, self.allowed = facts, allowed
        self.stack: list[Node] = []
        self.metastack: list[list[Node]] = []
        self.memo: dict[int, Node] = {}
        self.nodes: list[Node] = []
        self.unsupported: dict[str, list[int]] = {}
        self.protocol: int | None = None
        self.pos = 0
        self.op = ""

    def fail(self, why: str) -> ScanError:
        return ScanError(f"malformed pickle at byte {self.pos} ({self.op}): {why}")

    def push(self, node: Node) -> None:
        self.nodes.append(node)
        self.stack.append(node)

    def pop(self) -> Node:
        if not self.stack:
            raise self.fail("stack underflow")
        return self.stack.pop()

    def top(self) -> Node:
        if not self.stack:
            raise self.fail("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[Node]:
        if not self.metastack:
            raise self.fail("no MARK to pop to")
        items, self.stack = self.stack, self.metastack.pop()
        return items

    def violate(self, node: Node, why: str) -> None:
        if not covered(node) and not node.violation:
            node.violation = why

    def make_global(self, module: str, name: str) -> GlobalRef:
        if (module, name) in self.facts.name_mapping:
            module, name = self.facts.name_mapping[(module, name)]
        elif module in self.facts.import_mapping:
            module = self.facts.import_mapping[module]
        qualified = f"{module}.{name}"
        ok = module not in self.facts.blocked_modules and qualified in self.allowed
        return GlobalRef(offset=self.pos, qualified=qualified, allowed=ok)

    def run(self, stream: BinaryIO) -> PickleScan:
        try:
            for opcode, arg, pos in pickletools.genops(stream):
                if pos is None:  # genops gives offsets only for streams with tell(), as every stream here has
                    raise self.fail("the stream cannot report byte offsets")
                self.pos, self.op = pos, opcode.name
                if opcode.name not in self.facts.supported_opcodes:
                    self.unsupported.setdefault(opcode.name, []).append(pos)
                if opcode.name == "STOP":
                    return PickleScan(self.pop(), self.nodes, self.unsupported, self.protocol)
                self.step(opcode.name, arg)
        except (ValueError, UnicodeDecodeError) as exc:
            if isinstance(exc, ScanError):
                raise
            raise ScanError(f"malformed pickle near byte {self.pos}: {exc}") from None
        raise self.fail("stream ended before STOP")

    def step(self, name: str, arg: object) -> None:
        # One branch per opcode family; mirrors pickle's own load_* methods without calling anything.
        if name in _PRIMITIVE_OPS:
            self.push(Prim(offset=self.pos, value=arg))
        elif name in _CONSTANTS:
            self.push(Prim(offset=self.pos, value=_CONSTANTS[name]))
        elif name in _EMPTY:
            self.push(Seq(offset=self.pos, kind=_EMPTY[name]))
        elif name == "EMPTY_DICT":
            self.push(DictNode(offset=self.pos))
        elif name in _FROM_MARK:
            self.push(Seq(offset=self.pos, kind=_FROM_MARK[name], items=self.pop_mark()))
        elif name in _FIXED_TUPLES:
            items = [self.pop() for _ in range(_FIXED_TUPLES[name])][::-1]
            self.push(Seq(offset=self.pos, kind="tuple", items=items))
        elif name == "DICT":
            items = self.pop_mark()
            if len(items) % 2:
                raise self.fail("odd number of items for DICT")
            self.push(DictNode(offset=self.pos, pairs=list(zip(items[::2], items[1::2], strict=True))))
        elif name in ("APPEND", "APPENDS", "ADDITEMS"):
            items = [self.pop()] if name == "APPEND" else self.pop_mark()
            self.append(self.top(), items, name)
        elif name in ("SETITEM", "SETITEMS"):
            items = self.pop_mark() if name == "SETITEMS" else [self.pop(), self.pop()][::-1]
            if len(items) % 2:
                raise self.fail("odd number of items for SETITEMS")
            self.setitems(self.top(), list(zip(items[::2], items[1::2], strict=True)))
        elif name == "MARK":
            self.metastack.append(self.stack)
            self.stack = []
        elif name == "POP":
            if self.stack:
                self.stack.pop()
            else:
                self.pop_mark()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            self.stack.append(self.top())
        elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            # Ignored below: pickletools types opcode arguments as object; PUT's is an int.
            self.memo[len(self.memo) if name == "MEMOIZE" else int(arg)] = self.top()  # type: ignore[call-overload]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise self.fail(f"memo key {arg!r} was never stored")
            self.stack.append(self.memo[arg])
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            ref = self.make_global(module, attr)
            self.nodes.append(ref)
            if name == "GLOBAL":
                self.stack.append(ref)
            else:
                args: Node = Seq(offset=self.pos, kind="tuple", items=self.pop_mark())
                self.push(Call(offset=self.pos, op="INST", func=ref, args=args))
        elif name == "STACK_GLOBAL":
            attr_node, module_node = self.pop(), self.pop()
            if isinstance(module_node, Prim) and isinstance(attr_node, Prim) and isinstance(module_node.value, str):
                self.push(self.make_global(module_node.value, str(attr_node.value)))
            else:
                self.push(GlobalRef(offset=self.pos, qualified="<name computed at load time>", allowed=False))
        elif name in ("EXT1", "EXT2", "EXT4"):
            self.push(GlobalRef(offset=self.pos, qualified=f"<copyreg extension code {arg}>", allowed=False))
        elif name in ("REDUCE", "NEWOBJ"):
            args = self.pop()
            self.push(Call(offset=self.pos, op=name, func=self.pop(), args=args))
        elif name == "NEWOBJ_EX":
            kwargs, args = self.pop(), self.pop()
            self.push(Call(offset=self.pos, op=name, func=self.pop(), args=args, kwargs=kwargs))
        elif name == "OBJ":
            items = self.pop_mark()
            if not items:
                raise self.fail("OBJ without a class")
            args = Seq(offset=self.pos, kind="tuple", items=items[1:])
            self.push(Call(offset=self.pos, op="OBJ", func=items[0], args=args))
        elif name == "BUILD":
            state = self.pop()
            self.build(self.top(), state)
        elif name in ("PERSID", "BINPERSID"):
            pid = Prim(offset=self.pos, value=arg) if name == "PERSID" else self.pop()
            node = Persistent(offset=self.pos, pid=pid)
            self.push(node)
            if not _storage_pid(pid):
                node.violation = "persistent id is not a tensor storage reference"
        elif name == "NEXT_BUFFER":
            self.push(Opaque(offset=self.pos, what="out-of-band pickle buffer"))
        elif name == "PROTO":
            # Ignored below: pickletools types opcode arguments as object; PROTO's is an int.
            self.protocol = int(arg)  # type: ignore[call-overload]
        elif name not in ("FRAME", "READONLY_BUFFER"):
            raise self.fail(f"opcode {name} is not handled by the audit")

    def append(self, target: Node, items: list[Node], op: str) -> None:
        if isinstance(target, Seq) and (target.kind == "list" or (op == "ADDITEMS" and target.kind == "set")):
            target.items.extend(items)
            return
        if isinstance(target, Call):
            target.appends.extend(items)
        else:
            target.extra.extend(items)
        self.violate(target, f"{op} on something that is not a list")

    def setitems(self, target: Node, pairs: list[tuple[Node, Node]]) -> None:
        if isinstance(target, DictNode):
            target.pairs.extend(pairs)
            return
        if isinstance(target, Call):
            target.setitems.extend(pairs)
            name = global_name(target)
            if name in _DICT_TYPES and isinstance(target.func, GlobalRef) and target.func.allowed:
                return
        else:
            target.extra.extend(node for pair in pairs for node in pair)
        self.violate(target, "SETITEM on something that is not a dict, OrderedDict or Counter")

    def build(self, target: Node, state: Node) -> None:
        target.states.append(state)
        name = global_name(target)
        ok = isinstance(target, Call) and isinstance(target.func, GlobalRef) and target.func.allowed
        if not ok or name in _NOT_BUILDABLE:
            self.violate(target, "BUILD (object state) on something that is not a tensor or an allowed type")


def _storage_pid(pid: Node) -> bool:
    if isinstance(pid, Prim):
        return type(pid.value) is int
    if isinstance(pid, Seq) and pid.kind == "tuple" and pid.items and isinstance(pid.items[0], Prim):
        return pid.items[0].value in ("storage", b"storage")
    return False


def scan_pickle(source: bytes | BinaryIO, facts: TorchFacts | None = None) -> PickleScan:
    """Replay one pickle (up to its STOP) symbolically. Reads `source` only up to that STOP."""
    facts = facts or torch_facts()
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    return _Machine(facts, facts.allowed_globals()).run(stream)


ROOT = "root"
_LEGACY_LABELS = ("<protocol version>", "<sys info>", ROOT, "<storage keys>")


class _Bounded:
    """A read-only view that never asks the OS for more than the file holds.

    A crafted length field (BINUNICODE8 of 2**62 bytes) must not make `read` allocate that much.
    """

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream, self.size = stream, size

    def read(self, count: int = -1) -> bytes:
        left = max(self.size - self.stream.tell(), 0)
        return self.stream.read(left if count < 0 else min(count, left))

    def readline(self) -> bytes:
        return self.stream.readline(max(self.size - self.stream.tell(), 0))

    def tell(self) -> int:
        return self.stream.tell()


def scan_stream(stream: BinaryIO) -> tuple[str, list[tuple[str, PickleScan]]]:
    """A non-zip file: torch's legacy format (five pickles in a row, then raw tensor data) or one pickle.

    Returns ("legacy", [(label, scan), ...]) or ("pickle", [(ROOT, scan)]); the tensor data is never read.
    """
    start = stream.tell()
    size = stream.seek(0, io.SEEK_END)
    stream.seek(start)
    stream = _Bounded(stream, size)  # type: ignore[assignment]  # it has the read, readline and tell that genops uses
    first = scan_pickle(stream)
    if not (isinstance(first.root, Prim) and first.root.value == torch.serialization.MAGIC_NUMBER):
        return "pickle", [(ROOT, first)]
    return "legacy", [("<magic number>", first)] + [(label, scan_pickle(stream)) for label in _LEGACY_LABELS]


def storage_keys(scan: PickleScan) -> set[str]:
    """Keys of the tensor storages a scanned pickle refers to (zip records `data/<key>`)."""
    keys = set()
    for node in scan.nodes:
        if isinstance(node, Persistent) and isinstance(node.pid, Seq) and len(node.pid.items) > 2:
            key = node.pid.items[2]
            if isinstance(key, Prim):
                keys.add(str(key.value))
    return keys
