"""Test helper: encode hand-built BTF types (the corepy.btf.types model) into a raw BTF blob,
so rule tests run the real parser and container on tiny local/target pairs.

``build(*types)`` takes types in id order starting at 1 (their ``id`` fields are ignored)."""

from __future__ import annotations

import struct

from corepy.btf import BTF
from corepy.btf.types import (Array, Const, Enum, Enum64, Float, FuncProto, Fwd, Int, Kind, Ptr, Struct,
                              Type, Typedef, TypeTag, Union, Volatile)


def encode(types: list[Type]) -> bytes:
    strings = bytearray(b"\0")
    offsets: dict[str, int] = {"": 0}

    def s(name: str) -> int:
        if name not in offsets:
            offsets[name] = len(strings)
            strings.extend(name.encode() + b"\0")
        return offsets[name]

    out = bytearray()

    def head(t: Type, vlen: int, kflag: bool, size_or_type: int) -> None:
        info = (int(kflag) << 31) | (int(t.kind) << 24) | vlen
        out.extend(struct.pack("<III", s(t.name), info, size_or_type))

    for t in types:
        if isinstance(t, Int):
            head(t, 0, False, t.size)
            out.extend(struct.pack("<I", (int(t.encoding) << 24) | (t.bit_offset << 16) | (t.bits or t.size * 8)))
        elif isinstance(t, (Ptr, Typedef, Const, Volatile, TypeTag)):
            head(t, 0, False, t.type_id)
        elif isinstance(t, Array):
            head(t, 0, False, 0)
            out.extend(struct.pack("<III", t.type_id, t.index_type_id, t.nelems))
        elif isinstance(t, (Struct, Union)):
            head(t, len(t.members), t.kind_flag, t.size)
            for m in t.members:
                off = (m.bitfield_size << 24 | m.bit_offset) if t.kind_flag else m.bit_offset
                out.extend(struct.pack("<III", s(m.name), m.type_id, off))
        elif isinstance(t, Enum):
            head(t, len(t.values), t.signed, t.size)
            for v in t.values:
                out.extend(struct.pack("<II", s(v.name), v.value & 0xFFFFFFFF))
        elif isinstance(t, Enum64):
            head(t, len(t.values), t.signed, t.size)
            for v in t.values:
                u = v.value & 0xFFFFFFFFFFFFFFFF
                out.extend(struct.pack("<III", s(v.name), u & 0xFFFFFFFF, u >> 32))
        elif isinstance(t, Fwd):
            head(t, 0, t.union, 0)
        elif isinstance(t, FuncProto):
            head(t, len(t.params), False, t.return_type_id)
            for p in t.params:
                out.extend(struct.pack("<II", s(p.name), p.type_id))
        elif isinstance(t, Float):
            head(t, 0, False, t.size)
        else:
            raise TypeError(f"btfgen cannot encode {t.kind.name}")
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(out), len(out), len(strings))
    return hdr + bytes(out) + bytes(strings)


def build(*types: Type, source: str = "<btfgen>") -> BTF:
    return BTF.from_bytes(encode(list(types)), source=source)


__all__ = ["build", "encode", "Kind"]
