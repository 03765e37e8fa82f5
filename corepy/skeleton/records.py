"""Plan Python record classes for BTF structs and unions. Pure.

A :class:`RecordPlan` says how one STRUCT/UNION becomes a generated dataclass whose
``from_bytes``/``to_bytes`` run on a ``struct`` format computed from the BTF layout
(padding as ``x``, little or big endian as the BTF says). Values follow
:mod:`corepy.btf.codec` exactly, so a record decodes to what the codec gives:
ints (``bool`` for BTF bools), enums and pointers as ``int``, floats as ``float``,
``char[N]`` as ``str`` (printable, NUL-terminated) else ``bytes``, other byte arrays as
``bytes``, arrays as ``list``, nested structs/unions as their own record class,
anonymous members named ``_anon<index>`` (``__x`` members ``_x``: no name mangling), bitfields
as ints.

Each type maps onto a run of ``struct`` values through a :class:`_Shape`: a format, the
number of values it unpacks to, and Python expressions turning those values into the
field (``decode``) and back (``encode``).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import field

from .._records import record
from ..btf.types import (
    Array, Datasec, Enum, Enum64, Float, Int, IntEncoding, Ptr, Struct, Union, Var,
)
from ..errors import BTFError

__all__ = ["FieldPlan", "RecordPlan", "Planner", "class_name", "identifier", "member_name"]

_INT_FMT = {1: "b", 2: "h", 4: "i", 8: "q"}
_FLOAT_FMT = {2: "e", 4: "f", 8: "d"}
_RECORD_ATTRS = {"SIZE", "from_bytes", "to_bytes"}
"""Names generated record classes use themselves."""
_HINT_BUILTINS = {"bool", "bytes", "bytearray", "float", "int", "list", "memoryview", "str"}


def identifier(name: str) -> str:
    """``name`` as a Python identifier: other characters become ``_``; keywords get a ``_`` suffix."""
    ident = re.sub(r"\W", "_", name, flags=re.ASCII) or "_"
    if ident[0].isdigit():
        ident = "_" + ident
    return ident + "_" if keyword.iskeyword(ident) else ident


def member_name(name: str) -> str:
    """A struct member's attribute: :func:`identifier`, and ``__x`` becomes ``_x`` (Python would
    mangle a leading double underscore in the class body: ``__reserved`` -> ``_reserved``)."""
    ident = identifier(name)
    if ident.startswith("__") and not ident.endswith("__"):
        ident = "_" + ident.lstrip("_")
    return ident


def class_name(name: str) -> str:
    """``trace_event_raw`` -> ``TraceEventRaw`` (a valid identifier)."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    out = "".join(p[:1].upper() + p[1:] for p in parts) or "Anon"
    return "_" + out if out[0].isdigit() else out


@record
class _Shape:
    """How one BTF type maps onto ``count`` consecutive ``struct`` values."""

    fmt: str
    count: int
    hint: str
    default: str
    """Python expression of the zero value (what the codec decodes from zero bytes)."""
    factory: bool = False
    """The default is mutable: a dataclass ``default_factory``."""
    post: str | None = None
    """Template for one value -> field, ``{v}`` the value; None: the value as is."""
    pre: str | None = None
    """Template for field -> one value, ``{x}`` the field; None: as is."""
    elem: _Shape | None = None
    """For arrays of non-flat elements: the element's shape (``count`` = nelems * elem.count)."""
    nelems: int = 0

    def decode(self, v: str, idx: str, depth: int = 0) -> str:
        """Expression of the field from ``v[idx:idx+count]``."""
        if self.elem is None:
            item = f"{v}[{idx}]"
            return self.post.format(v=item) if self.post else item
        e = self.elem
        if e.elem is None and e.post is None and e.count == 1:
            return f"list({v}[{idx}:{idx} + {self.count}])" if idx != "0" else f"list({v}[:{self.count}])"
        k = f"_k{depth}"
        inner = e.decode(v, f"{idx} + {k} * {e.count}" if e.count != 1 else f"{idx} + {k}", depth + 1)
        return f"[{inner} for {k} in range({self.nelems})]"

    def encode(self, x: str, depth: int = 0) -> str:
        """Expression of the ``count`` values of field ``x``: one expression, or a starred iterable."""
        if self.elem is None:
            return self.pre.format(x=x) if self.pre else x
        e = self.elem
        k = f"_e{depth}"
        items = f"_rt.items({x}, {self.nelems}, {e.default}, {self.hint!r})"
        if e.elem is None and e.count == 1 and e.pre is None:
            return f"*{items}"
        inner = e.encode(k, depth + 1)
        if inner.startswith("*"):
            return f"*[_y for {k} in {items} for _y in {inner[1:]}]"
        return f"*[{inner} for {k} in {items}]"


@record
class FieldPlan:
    """One member of a record."""

    name: str
    shape: _Shape
    offset: int
    """Byte offset (of the containing bytes for a bitfield)."""
    bit_shift: int = 0
    bits: int = 0
    """Bitfield width; 0 for a plain member."""
    signed: bool = False
    boolean: bool = False


@record
class RecordPlan:
    """One generated class: a BTF STRUCT or UNION."""

    type_id: int
    c_name: str
    """``struct event``, ``union anon`` ... for the docstring."""
    name: str
    """Python class name."""
    size: int
    union: bool
    fields: list[FieldPlan]
    byte_order: str
    deps: list[int] = field(default_factory=list)
    """Type ids of record classes this one refers to (generated first)."""

    @property
    def shadowed(self) -> set[str]:
        """Builtins the class body's annotations name that a member hides (``bytes``, ``int``...)."""
        return {f.name for f in self.fields} & _HINT_BUILTINS

    def formats(self) -> list[tuple[str, list[FieldPlan]]]:
        """``struct`` formats with the fields each one unpacks: one for a struct (every
        non-bitfield member, padding as ``x``), one per member for a union."""
        order = ">" if self.byte_order == "big" else "<"
        plain = [f for f in self.fields if not f.bits]
        groups = [[f] for f in plain] if self.union else [sorted(plain, key=lambda f: f.offset)]
        out = []
        for group in groups:
            fmt, pos = [], 0
            for f in group:
                if f.offset < pos:
                    raise BTFError(f"{self.c_name}: member {f.name!r} overlaps the previous one")
                fmt.append(_pad(f.offset - pos) + f.shape.fmt)
                pos = f.offset + _fmt_size(f.shape.fmt)
            if pos > self.size:
                raise BTFError(f"{self.c_name}: members end at byte {pos}, past its size {self.size}")
            tail = "" if self.union else _pad(self.size - pos)
            out.append((order + "".join(fmt) + tail, group))
        return out


def _pad(n: int) -> str:
    return "" if n <= 0 else ("x" if n == 1 else f"{n}x")


def _fmt_size(fmt: str) -> int:
    import struct

    return struct.calcsize("<" + fmt)


class Planner:
    """Builds :class:`RecordPlan` s for types of one BTF, naming classes uniquely."""

    def __init__(self, btf) -> None:
        self.btf = btf
        self.plans: dict[int, RecordPlan] = {}
        self._taken: set[str] = set()
        self._busy: set[int] = set()

    def resolve(self, type_id: int):
        """The type behind a VAR, modifiers and typedefs."""
        t = self.btf[type_id]
        return self.btf.skip_mods_and_typedefs(t.type_id if isinstance(t, Var) else type_id)

    def is_record(self, type_id: int) -> bool:
        return isinstance(self.resolve(type_id), (Struct, Union))

    def record(self, type_id: int, hint_name: str = "") -> RecordPlan:
        """The plan of the STRUCT/UNION ``type_id`` resolves to; ``hint_name`` names an anonymous one."""
        t = self.resolve(type_id)
        if not isinstance(t, (Struct, Union)):
            raise BTFError(f"type [{type_id}] is {type(t).__name__} {t.name!r}, not a struct or union")
        plan = self.plans.get(t.id)
        if plan is not None:
            return plan
        if t.id in self._busy:
            raise BTFError(f"{_c_name(t)} contains itself")
        self._busy.add(t.id)
        try:
            plan = self._plan(t, hint_name)
        finally:
            self._busy.discard(t.id)
        self.plans[t.id] = plan
        return plan

    def unique(self, name: str) -> str:
        """``name``, or ``name2``, ``name3``... if taken; then taken."""
        base, n = name, 2
        while name in self._taken:
            name = f"{base}{n}"
            n += 1
        self._taken.add(name)
        return name

    def reserve(self, name: str) -> None:
        """Keep ``name`` from being given to a record class."""
        self._taken.add(name)

    def _plan(self, t: Struct | Union, hint_name: str) -> RecordPlan:
        name = self.unique(class_name(t.name or hint_name or f"anon{t.id}"))
        plan = RecordPlan(t.id, _c_name(t), name, t.size, isinstance(t, Union), [], self.btf.byte_order)
        names: set[str] = set()
        for i, m in enumerate(t.members):
            fname = member_name(m.name) if m.name else f"_anon{i}"
            if fname in names or fname in _RECORD_ATTRS or fname.startswith("_layout"):
                raise BTFError(f"{plan.c_name}: member name {fname!r} is not usable as a Python attribute")
            names.add(fname)
            mt = self.resolve(m.type_id)
            shape = self.shape(m.type_id, f"{name}_{fname.lstrip('_')}", plan)
            bits, bit_off = m.bitfield_size, m.bit_offset
            if not bits and isinstance(mt, Int) and (mt.bit_offset or (mt.bits and mt.bits != mt.size * 8)):
                bits, bit_off = mt.bits, m.bit_offset + mt.bit_offset  # pre-kind_flag bitfield encoding
            if bits:
                if plan.byte_order == "big":
                    raise BTFError(f"{plan.c_name}.{fname}: big-endian bitfields are not supported")
                if not isinstance(mt, (Int, Enum, Enum64)):
                    raise BTFError(f"{plan.c_name}.{fname}: bitfield of {type(mt).__name__}")
                boolean = isinstance(mt, Int) and bool(mt.encoding & IntEncoding.BOOL)
                plan.fields.append(FieldPlan(fname, shape, bit_off // 8, bit_off % 8, bits,
                                             bool(getattr(mt, "signed", False)), boolean))
            else:
                if bit_off % 8:
                    raise BTFError(f"{plan.c_name}.{fname}: member at bit offset {bit_off} is not byte aligned")
                plan.fields.append(FieldPlan(fname, shape, bit_off // 8))
        return plan

    def shape(self, type_id: int, hint_name: str, owner: RecordPlan | None = None) -> _Shape:
        """The shape of ``type_id``; records it refers to are planned (and listed in ``owner.deps``)."""
        t = self.resolve(type_id)
        if isinstance(t, Int):
            if t.encoding & IntEncoding.BOOL and t.size == 1:
                return _Shape("?", 1, "bool", "False", pre="bool({x})")
            if t.size in _INT_FMT:
                c = _INT_FMT[t.size]
                return _Shape(c if t.signed else c.upper(), 1, "int", "0")
            signed = t.signed
            return _Shape(f"{t.size}s", 1, "int", "0",
                          post=f"int.from_bytes({{v}}, {self._order!r}, signed={signed})",
                          pre=f"_rt.int_bytes({{x}}, {t.size}, {self._order!r}, {signed})")
        if isinstance(t, (Enum, Enum64)):
            code = _INT_FMT.get(t.size)
            if code is None:
                raise BTFError(f"enum {t.name or '[%d]' % t.id} has unsupported size {t.size}")
            return _Shape(code if t.signed else code.upper(), 1, "int", "0")
        if isinstance(t, Float):
            if t.size in _FLOAT_FMT:
                return _Shape(_FLOAT_FMT[t.size], 1, "float", "0.0", pre="float({x})")
            return self._octets(t.size)
        if isinstance(t, Ptr):
            return _Shape("Q" if self.btf.pointer_size == 8 else "I", 1, "int", "0")
        if isinstance(t, Array):
            elem_t = self.resolve(t.type_id)
            n = t.nelems
            if isinstance(elem_t, Int) and elem_t.size == 1 and not elem_t.encoding & IntEncoding.BOOL:
                if elem_t.encoding & IntEncoding.CHAR or elem_t.name == "char":
                    return _Shape(f"{n}s", 1, "str | bytes", "''", post="_rt.chars({v})",
                                  pre=f"_rt.chars_in({{x}}, {n})")
                return self._octets(n)
            elem = self.shape(t.type_id, hint_name, owner)
            if elem.count == 1 and elem.elem is None and len(elem.fmt) == 1:
                fmt = f"{n}{elem.fmt}" if n else ""
            else:
                fmt = elem.fmt * n
            return _Shape(fmt, elem.count * n, f"list[{elem.hint}]", f"[{elem.default} for _ in range({n})]"
                          if elem.factory else f"[{elem.default}] * {n}", factory=True, elem=elem, nelems=n)
        if isinstance(t, (Struct, Union)):
            plan = self.record(t.id, hint_name)
            if owner is not None and plan.type_id not in owner.deps:
                owner.deps.append(plan.type_id)
            return _Shape(f"{t.size}s", 1, plan.name, f"{plan.name}()", factory=True,
                          post=f"{plan.name}.from_bytes({{v}})", pre=f"_rt.record_bytes({{x}}, {plan.name})")
        if isinstance(t, Datasec):
            raise BTFError(f"DATASEC {t.name!r} is not a record type")
        raise BTFError(f"type [{type_id}] ({type(t).__name__} {t.name!r}) has no value encoding")

    @property
    def _order(self) -> str:
        return "big" if self.btf.byte_order == "big" else "little"

    @staticmethod
    def _octets(n: int) -> _Shape:
        zero = repr(bytes(n)) if n <= 8 else f"b'\\0' * {n}"  # no names: members may shadow builtins
        return _Shape(f"{n}s", 1, "bytes", zero, pre=f"_rt.octets_in({{x}}, {n})")


def _c_name(t: Struct | Union) -> str:
    kind = "union" if isinstance(t, Union) else "struct"
    return f"{kind} {t.name}" if t.name else f"anonymous {kind} [{t.id}]"
