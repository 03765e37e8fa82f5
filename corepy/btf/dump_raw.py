"""Raw BTF dump: one line per type (plus indented member lines), in exactly the
text of ``bpftool btf dump file FILE format raw`` so the two can be diffed."""

from __future__ import annotations

from collections.abc import Iterator

from .types import (
    Array, Const, Datasec, DeclTag, Enum, Enum64, Float, Func, FuncProto, Fwd, Int,
    IntEncoding, Kind, Linkage, Ptr, Restrict, Struct, Type, Typedef, TypeTag, Union, Var,
    Volatile,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

    from .spec import BTF

__all__ = ["dump_raw", "format_type", "write_raw"]

_INT_ENCODING = {
    IntEncoding.NONE: "(none)", IntEncoding.SIGNED: "SIGNED",
    IntEncoding.CHAR: "CHAR", IntEncoding.BOOL: "BOOL",
}
_LINKAGE = {Linkage.STATIC: "static", Linkage.GLOBAL: "global", Linkage.EXTERN: "extern"}


def _name(t: object) -> str:
    """bpftool's btf_str(): '(anon)' for name offset 0."""
    name: str = t.name  # type: ignore[attr-defined]
    return name if name or t.name_off > 0 else "(anon)"  # type: ignore[attr-defined]


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v


def _s64(v: int) -> int:
    v &= 0xFFFFFFFFFFFFFFFF
    return v - (1 << 64) if v >> 63 else v


def format_type(t: Type, btf: BTF | None = None) -> str:
    """The raw text of one type (several lines for types with members), without
    a trailing newline. ``btf`` lets DATASEC entries name their VARs."""
    head = f"[{t.id}] {t.kind.name} '{_name(t)}'"
    if isinstance(t, Int):
        enc = _INT_ENCODING.get(t.encoding, "UNKN")
        return f"{head} size={t.size} bits_offset={t.bit_offset} nr_bits={t.bits} encoding={enc}"
    if isinstance(t, (Ptr, Const, Volatile, Restrict, Typedef, TypeTag)):
        return f"{head} type_id={t.type_id}"
    if isinstance(t, Array):
        return f"{head} type_id={t.type_id} index_type_id={t.index_type_id} nr_elems={t.nelems}"
    if isinstance(t, (Struct, Union)):
        lines = [f"{head} size={t.size} vlen={len(t.members)}"]
        for m in t.members:
            line = f"\t'{_name(m)}' type_id={m.type_id} bits_offset={m.bit_offset}"
            if m.bitfield_size:
                line += f" bitfield_size={m.bitfield_size}"
            lines.append(line)
        return "\n".join(lines)
    if isinstance(t, Enum):
        lines = [f"{head} encoding={'SIGNED' if t.signed else 'UNSIGNED'} size={t.size} vlen={len(t.values)}"]
        for v in t.values:
            val = _s32(v.value) if t.signed else v.value & 0xFFFFFFFF
            lines.append(f"\t'{_name(v)}' val={val}")
        return "\n".join(lines)
    if isinstance(t, Enum64):
        lines = [f"{head} encoding={'SIGNED' if t.signed else 'UNSIGNED'} size={t.size} vlen={len(t.values)}"]
        for v in t.values:
            val = f"{_s64(v.value)}LL" if t.signed else f"{v.value & 0xFFFFFFFFFFFFFFFF}ULL"
            lines.append(f"\t'{_name(v)}' val={val}")
        return "\n".join(lines)
    if isinstance(t, Fwd):
        return f"{head} fwd_kind={'union' if t.union else 'struct'}"
    if isinstance(t, Func):
        return f"{head} type_id={t.type_id} linkage={_LINKAGE.get(t.linkage, '(unknown)')}"
    if isinstance(t, FuncProto):
        lines = [f"{head} ret_type_id={t.return_type_id} vlen={len(t.params)}"]
        lines.extend(f"\t'{_name(p)}' type_id={p.type_id}" for p in t.params)
        return "\n".join(lines)
    if isinstance(t, Var):
        return f"{head} type_id={t.type_id}, linkage={_LINKAGE.get(t.linkage, '(unknown)')}"
    if isinstance(t, Datasec):
        lines = [f"{head} size={t.size} vlen={len(t.vars)}"]
        count = len(btf) if btf is not None else 0
        for v in t.vars:
            line = f"\ttype_id={v.type_id} offset={v.offset} size={v.size}"
            if v.type_id < count:
                vt = btf[v.type_id]  # type: ignore[index]
                line += f" ({_kind_name(vt.kind)} '{_name(vt)}')"
            lines.append(line)
        return "\n".join(lines)
    if isinstance(t, Float):
        return f"{head} size={t.size}"
    if isinstance(t, DeclTag):
        return f"{head} type_id={t.type_id} component_idx={t.component_idx}"
    return head


def _kind_name(kind: Kind) -> str:
    return "UNKNOWN" if kind == Kind.UNKN else kind.name


def dump_raw(btf: BTF) -> Iterator[str]:
    """The raw dump of every type of ``btf`` (only the split types when it has a
    base, like ``bpftool -B``), one formatted type per item."""
    for t in btf.types():
        yield format_type(t, btf)


def write_raw(btf: BTF, out: TextIO) -> None:
    """Write :func:`dump_raw` to ``out``, newline-terminated like bpftool."""
    chunk: list[str] = []
    for text in dump_raw(btf):
        chunk.append(text)
        if len(chunk) >= 4096:
            out.write("\n".join(chunk) + "\n")
            chunk.clear()
    if chunk:
        out.write("\n".join(chunk) + "\n")
