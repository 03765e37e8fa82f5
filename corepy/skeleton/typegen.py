"""Python text for BTF types: IntEnum classes and record classes (dataclass-compatible). Pure.

:class:`TypeSet` collects the types a module needs (records pull in the records they
contain) and writes them dependencies first; :func:`generate_records` makes a standalone
module of named types from any BTF (an object's, or the kernel's).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..btf.types import Enum, Enum64, Struct, Typedef, Union
from ..errors import BTFError
from .records import FieldPlan, Planner, RecordPlan, class_name, identifier

__all__ = ["TypeSet", "generate_records"]

RULE = 88
"""Width of the generated ``# --- section ---`` comment lines."""


def rule(title: str) -> str:
    return f"# --- {title} " + "-" * (RULE - len(title) - 7)


class TypeSet:
    """The enums and records of one generated module."""

    def __init__(self, btf: Any, source: str = "") -> None:
        self.btf = btf
        self.source = source
        self.planner = Planner(btf)
        self.roots: list[int] = []
        self.enums: dict[int, str] = {}
        """ENUM type id -> IntEnum class name."""

    def root(self, type_id: int, hint_name: str) -> str | None:
        """Plan the record ``type_id`` resolves to, if it is one; its class name."""
        if not type_id or not self.planner.is_record(type_id):
            return None
        plan = self.planner.record(type_id, hint_name)
        if plan.type_id not in self.roots:
            self.roots.append(plan.type_id)
        return plan.name

    def add(self, name: str | int) -> str:
        """A record (struct/union, or a typedef of one) or IntEnum for the type named ``name``
        (``event``, ``struct event``, ``enum color``) or of id ``name``; its class name."""
        if isinstance(name, int):
            t = self.btf[name]
            if isinstance(t, (Enum, Enum64)):
                return self._enum(t, t.name or f"enum{t.id}")
            record = self.root(name, t.name or f"anon{t.id}")
            if record is None:
                raise BTFError(f"type [{name}] ({type(t).__name__}) is not a struct, union or enum",
                               source=self.source)
            return record
        for prefix in ("struct ", "union ", "enum "):
            if name.startswith(prefix):
                name = name[len(prefix):].strip()
        candidates = self.btf.find(name)
        found = [t for t in candidates if isinstance(t, (Struct, Union))
                 or (isinstance(t, Typedef) and self.planner.is_record(t.id))]
        if found:
            return self.root(min(found, key=lambda t: (isinstance(t, Typedef), t.id)).id, name)  # type: ignore[return-value]
        enums = [t for t in candidates if isinstance(t, (Enum, Enum64))]
        if enums:
            return self._enum(enums[0], name)
        others = sorted({t.kind.name for t in candidates})
        what = f" (only {', '.join(others)})" if others else ""
        raise BTFError(f"no struct, union or enum named {name!r} in the BTF{what}; declare a variable of "
                       f"that type in the BPF program (e.g. `struct {name} *unused __attribute__((unused));`) "
                       "so clang emits it", source=self.source)

    def _enum(self, t: Enum | Enum64, name: str) -> str:
        if t.id not in self.enums:
            self.enums[t.id] = self.planner.unique(class_name(name))
        return self.enums[t.id]

    def ordered(self) -> list[RecordPlan]:
        """Every planned record, dependencies first, otherwise in the order first needed."""
        out: list[RecordPlan] = []
        seen: set[int] = set()

        def visit(tid: int) -> None:
            if tid in seen:
                return
            seen.add(tid)
            for dep in self.planner.plans[tid].deps:
                visit(dep)
            out.append(self.planner.plans[tid])

        for tid in [*self.roots, *self.planner.plans]:  # then records only hints name
            visit(tid)
        return out

    def names(self) -> list[str]:
        """Class names, in module order."""
        return [*self.enums.values(), *(p.name for p in self.ordered())]

    def imports(self) -> list[str]:
        lines = ["import builtins as _builtins"] if any(p.shadowed for p in self.planner.plans.values()) else []
        lines += ["import enum as _enum"] if self.enums else []
        lines += ["import struct as _struct"] if self.planner.plans else []
        return lines

    def runtime_imports(self) -> list[str]:
        """The corepy imports of the module: the runtime, and its record decorator when records are made."""
        lines = ["from corepy.skeleton import runtime as _rt"]
        plans = self.planner.plans.values()
        if plans:
            factory = any(f.shape.factory for p in plans for f in p.fields)
            lines.append("from corepy.skeleton.runtime import record as _record" + (", field as _field" if factory else ""))
        return lines

    def text(self) -> str:
        """The enum and record classes ('' if none)."""
        blocks = []
        if self.enums:
            blocks.append(rule("enums"))
            blocks += [self._enum_text(self.btf[i], name) for i, name in self.enums.items()]
        records = self.ordered()
        if records:
            blocks.append(rule("record types"))
            blocks += [_RecordWriter(plan).text() for plan in records]
        return "\n\n\n".join(blocks)

    @staticmethod
    def _enum_text(t: Enum | Enum64, name: str) -> str:
        lines = [f"class {name}(_enum.IntEnum):", f'    """``enum {t.name or "(anonymous)"}``."""', ""]
        used: set[str] = set()
        for v in t.values:
            member = identifier(v.name)
            if member.startswith("_") and member.endswith("_") or member in used:
                member = f"{member}_{len(used)}"
            used.add(member)
            lines.append(f"    {member} = {v.value}")
        return "\n".join(lines)


def generate_records(btf: Any, names: Sequence[str | int], *, source: str = "") -> str:
    """A standalone module of IntEnum and record classes for the named types of ``btf``
    (names like ``event``/``struct event``/``enum color``, or type ids), and the records
    they contain. Deterministic; BTFError for names that are not there."""
    types = TypeSet(btf, source)
    for name in names:
        types.add(name)
    header = [f"# Generated by `corepy skeleton` from {_text(source or 'BTF')}: DO NOT EDIT.",
              f'"""Record types of {_text(source or "BTF")}."""', "", "from __future__ import annotations", "",
              *types.imports(), *([""] if types.imports() else []), *types.runtime_imports(), "",
              "TYPE_CHECKING = False",
              "if TYPE_CHECKING:", "    from typing import ClassVar", "",
              f"__all__ = {types.names()!r}"]
    return "\n".join(header) + "\n\n\n" + types.text() + "\n"


def _text(s: str) -> str:
    """``s`` safe inside a generated comment or docstring (escapes, no quotes or newlines)."""
    return s.encode("unicode_escape").decode().replace('"', "'")


class _RecordWriter:
    """The text of one record dataclass."""

    def __init__(self, plan: RecordPlan) -> None:
        self.plan = plan
        self.formats = plan.formats()

    def text(self) -> str:
        p = self.plan
        kind = ("union; to_bytes writes the members not equal to zero in order, each whole" if p.union
                else "")
        lines = ["@_record(slots=True)", f"class {p.name}:",
                 f'    """``{p.c_name}`` ({p.size} bytes{"; " + kind if kind else ""})."""', ""]
        for f in p.fields:
            s = f.shape
            default = f"_field(default_factory=lambda: {s.default})" if s.factory and not s.default.endswith("()") \
                else (f"_field(default_factory={s.default[:-2]})" if s.factory else s.default)
            hint = "bool" if f.boolean else s.hint
            lines.append(f"    {f.name}: {self._q(hint)} = {default}")
        lines += ["", f"    SIZE: ClassVar[{self._q('int')}] = {p.size}"]
        for i, (fmt, _) in enumerate(self.formats):
            lines.append(f"    {self._st(i)}: ClassVar[_struct.Struct] = _struct.Struct({fmt!r})")
        lines += ["", "    @classmethod",
                  f"    def from_bytes(cls, data: {self._q('bytes | bytearray | memoryview')}, offset: {self._q('int')} = 0)"
                  f" -> {p.name}:",
                  '        """Decode ``SIZE`` bytes at ``offset``."""',
                  "        try:"]
        values: dict[str, str] = {}
        for i, (_, group) in enumerate(self.formats):
            var = self._v(i)
            target = f"{var} = " if group else ""  # no values: still checks the length
            lines.append(f"            {target}cls.{self._st(i)}.unpack_from(data, offset)")
            idx = 0
            for f in group:
                values[f.name] = f.shape.decode(var, str(idx))
                idx += f.shape.count
        if p.union and not self.formats:
            lines.append("            pass")
        lines += ["        except _struct.error:",
                  f"            raise _rt.short_buffer({p.name!r}, cls.SIZE, data, offset) from None"]
        for f in p.fields:
            if f.bits:
                get = f"_rt.get_bits(data, offset + {f.offset}, {f.bit_shift}, {f.bits}, {f.signed})"
                values[f.name] = f"bool({get})" if f.boolean else get
        args = ", ".join(values[f.name] for f in p.fields)
        if len(args) > 80:
            args = "\n            " + ",\n            ".join(values[f.name] for f in p.fields) + ",\n        "
        lines.append(f"        return cls({args})")
        lines += ["", f"    def to_bytes(self) -> {self._q('bytes')}:", '        """The ``SIZE`` bytes of this value."""',
                  "        try:"]
        bitfields = [f for f in p.fields if f.bits]
        if p.union:
            lines.append("            buf = bytearray(self.SIZE)")
            for i, (_, group) in enumerate(self.formats):
                f = group[0]
                lines.append(f"            if self.{f.name} != {f.shape.default}:")
                lines.append(f"                self.{self._st(i)}.pack_into(buf, 0, {self._pack_args(group, ' ' * 16)})")
        else:
            packed = f"self.{self._st(0)}.pack({self._pack_args(self.formats[0][1], ' ' * 12)})"
            lines.append(f"            buf = bytearray({packed})" if bitfields else f"            return {packed}")
        for f in bitfields:
            lines.append(f"            _rt.set_bits(buf, {f.offset}, {f.bit_shift}, {f.bits}, {f.signed}, "
                         f"self.{f.name}, {f.name!r})")
        if p.union or bitfields:
            lines.append("            return bytes(buf)")
        lines += ["        except (_struct.error, TypeError, ValueError) as e:",
                  f"            raise _rt.encode_error({p.name!r}, e) from None"]
        return "\n".join(lines)

    def _q(self, hint: str) -> str:
        """``hint`` with builtins a member hides in the class body qualified (``_builtins.bytes``)."""
        shadowed = self.plan.shadowed
        if not shadowed:
            return hint
        return re.sub(r"\b(" + "|".join(sorted(shadowed)) + r")\b", r"_builtins.\1", hint)

    @staticmethod
    def _st(i: int) -> str:
        return "_layout" if i == 0 else f"_layout{i}"

    @staticmethod
    def _v(i: int) -> str:
        return "v" if i == 0 else f"v{i}"

    @staticmethod
    def _pack_args(group: list[FieldPlan], indent: str) -> str:
        args = [f.shape.encode(f"self.{f.name}") for f in group]
        text = ", ".join(args)
        if len(text) <= 60:
            return text
        return "\n" + "".join(f"{indent}    {a},\n" for a in args) + indent
