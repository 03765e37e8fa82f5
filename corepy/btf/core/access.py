"""CO-RE access specs: parsing a relocation's access string (``0:1:3``) against a BTF
(libbpf ``bpf_core_parse_spec``) and printing a spec as libbpf's debug log does
(``bpf_core_format_spec``).

A spec has two views of the same path. ``raw`` is the access string, one index per
level (including anonymous struct/union members); ``accessors`` keeps only the
meaningful points: the initial pointer index, named fields and array indices.
"""

from __future__ import annotations

import re

from ..._records import field, record
from ...errors import BTFError, RelocationError
from ..types import COMPOSITE, Array, Enum, Enum64, Kind, Struct, Type, Union
from .kinds import ReloKind

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..ext import CoreRelo
    from ..spec import BTF

SPEC_MAX_LEN = 64
"""libbpf's BPF_CORE_SPEC_MAX_LEN: deepest access path."""

_KIND_STR = {
    Kind.UNKN: "void", Kind.INT: "int", Kind.PTR: "ptr", Kind.ARRAY: "array", Kind.STRUCT: "struct",
    Kind.UNION: "union", Kind.ENUM: "enum", Kind.FWD: "fwd", Kind.TYPEDEF: "typedef",
    Kind.VOLATILE: "volatile", Kind.CONST: "const", Kind.RESTRICT: "restrict", Kind.FUNC: "func",
    Kind.FUNC_PROTO: "func_proto", Kind.VAR: "var", Kind.DATASEC: "datasec", Kind.FLOAT: "float",
    Kind.DECL_TAG: "decl_tag", Kind.TYPE_TAG: "type_tag", Kind.ENUM64: "enum64",
}
_INDEX = re.compile(r"\s*([+-]?)([0-9]+)", re.ASCII)
"""One index as libbpf's ``sscanf("%d")`` reads it: ASCII blanks, a sign, ASCII digits."""
_INDEX_MAX = 2**31 - 1


def kind_str(t: Type) -> str:
    """libbpf's ``btf_kind_str``: ``struct``, ``enum64``, ``func_proto``..."""
    return _KIND_STR.get(t.kind, "unknown")


@record(slots=True)
class Accessor:
    """One high-level step: a named member (``type_id`` is its struct/union) or an
    array/pointer index (``name`` None, ``type_id`` is the element type)."""

    type_id: int
    idx: int
    name: str | None = None


@record(slots=True)
class CoreSpec:
    """A relocation's access path resolved in one BTF (local or a target candidate)."""

    btf: BTF
    root_type_id: int
    kind: ReloKind
    accessors: list[Accessor] = field(default_factory=list)
    raw: list[int] = field(default_factory=list)
    bit_offset: int = 0


def members_of(t: Type) -> tuple:
    return t.members if isinstance(t, COMPOSITE) else ()


def parse_spec(btf: BTF, relo: CoreRelo) -> CoreSpec:
    """Parse ``relo.access_str`` against ``btf`` from ``relo.type_id`` (libbpf
    ``bpf_core_parse_spec``); RelocationError saying what is wrong."""
    kind = ReloKind(relo.kind)
    text = relo.access_str
    if not text or text[0] == ":":
        raise RelocationError(f"access string {text!r} is empty or starts with ':'")
    spec = CoreSpec(btf, relo.type_id, kind)
    if kind.is_type:
        if text != "0":
            raise RelocationError(f"type-based relocation has access string {text!r}, expected '0'")
        return spec
    pos = 0
    while pos < len(text):
        if text[pos] == ":":
            pos += 1
        m = _INDEX.match(text, pos)
        if m is None:
            raise RelocationError(f"malformed access string {text!r} at character {pos}")
        if len(spec.raw) == SPEC_MAX_LEN:
            raise RelocationError(f"access string {text!r} is deeper than {SPEC_MAX_LEN} levels")
        sign, digits = m.groups()
        if len(digits) > 10 or int(digits) > _INDEX_MAX:
            raise RelocationError(f"access string {text!r} has an index out of range at character {pos}")
        if sign == "-" and int(digits):
            raise RelocationError(f"access string {text!r} has a negative index")
        value = int(digits)
        spec.raw.append(value)
        pos = m.end()

    try:
        return _resolve(btf, relo, spec, text)
    except BTFError as e:
        raise RelocationError(f"access string {text!r}: {e}") from None


def _resolve(btf: BTF, relo: CoreRelo, spec: CoreSpec, text: str) -> CoreSpec:
    t = btf.skip_mods_and_typedefs(relo.type_id)
    type_id = t.id
    idx = spec.raw[0]
    spec.accessors.append(Accessor(type_id, idx))
    if spec.kind.is_enumval:
        if not isinstance(t, (Enum, Enum64)) or len(spec.raw) > 1 or idx >= len(t.values):
            raise RelocationError(f"enum value relocation: access string {text!r} does not name an "
                                  f"enumerator of {kind_str(t)} [{type_id}]")
        spec.accessors[0].name = t.values[idx].name
        return spec
    if not spec.kind.is_field:
        raise RelocationError(f"relocation kind {int(spec.kind)} takes no access string")

    spec.bit_offset = idx * btf.resolve_size(type_id) * 8
    for level in range(1, len(spec.raw)):
        t = btf.skip_mods_and_typedefs(type_id)
        type_id = t.id
        idx = spec.raw[level]
        if isinstance(t, (Struct, Union)):
            if idx >= len(t.members):
                raise RelocationError(f"access string {text!r}: member #{idx} of {kind_str(t)} "
                                      f"{t.name or '<anon>'} [{type_id}] does not exist "
                                      f"(it has {len(t.members)})")
            m = t.members[idx]
            spec.bit_offset += m.bit_offset
            if m.name:
                spec.accessors.append(Accessor(type_id, idx, m.name))
            type_id = m.type_id
        elif isinstance(t, Array):
            elem = btf.skip_mods_and_typedefs(t.type_id)
            if not is_flex_array(btf, spec.accessors[-1], t) and idx >= t.nelems:
                raise RelocationError(f"access string {text!r}: index {idx} out of bounds of "
                                      f"array [{type_id}] of {t.nelems}")
            type_id = elem.id
            spec.accessors.append(Accessor(type_id, idx))
            spec.bit_offset += idx * btf.resolve_size(type_id) * 8
        else:
            raise RelocationError(f"access string {text!r} (at index {level}) reaches type [{type_id}] "
                                  f"of unexpected kind {kind_str(t)}")
    return spec


def is_flex_array(btf: BTF, parent: Accessor, arr: Array) -> bool:
    """A zero-length array that is the last member of its struct (libbpf ``is_flex_arr``)."""
    if parent.name is None or arr.nelems > 0:
        return False
    return parent.idx == len(members_of(btf[parent.type_id])) - 1


def format_spec(spec: CoreSpec) -> str:
    """The spec as libbpf's debug log prints it, without the leading ``<kind>``:
    ``[7] struct task_struct.real_parent (0:57 @ offset 1464)``."""
    btf = spec.btf
    t = btf[spec.root_type_id]
    out = [f"[{spec.root_type_id}] {kind_str(t)} {t.name or '<anon>'}"]
    if spec.kind.is_enumval:
        e = btf.skip_mods_and_typedefs(spec.root_type_id)
        if isinstance(e, (Enum, Enum64)) and e.values:
            v = e.values[spec.raw[0] if spec.raw else 0]
            out.append(f"::{v.name} = {enum_display_value(e, v.value)}")
    elif spec.kind.is_field:
        for i, acc in enumerate(spec.accessors):
            if acc.name is not None:
                out.append(f".{acc.name}")
            elif i > 0 or acc.idx > 0:
                out.append(f"[{acc.idx}]")
        out.append(" (" + ":".join(map(str, spec.raw)))
        byte, bit = divmod(spec.bit_offset, 8)
        out.append(f" @ offset {byte}.{bit})" if bit else f" @ offset {byte})")
    return "".join(out)


def enum_display_value(e: Enum | Enum64, value: int) -> int:
    """An enumerator as libbpf prints it: signed or unsigned per the enum's kind_flag, 32 or 64 bits."""
    bits = 32 if isinstance(e, Enum) else 64
    value &= (1 << bits) - 1
    if e.signed and value >> (bits - 1):
        value -= 1 << bits
    return value


def enum_relo_value(e: Enum | Enum64, value: int) -> int:
    """An enumerator's relocated value as libbpf computes it (a u64): a 32-bit ENUM value is
    sign-extended from 32 bits whatever the enum's signedness; ENUM64 is taken as is."""
    if isinstance(e, Enum):
        value &= 0xFFFFFFFF
        if value >> 31:
            value -= 1 << 32
    return value & 0xFFFFFFFFFFFFFFFF
