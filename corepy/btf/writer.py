"""Marshal BTF types back to a blob: the inverse of :class:`~corepy.btf.spec.BTF`.

:class:`BTFBuilder` holds an editable list of types and a string section.
Types keep the ``name_off`` they were parsed with when that offset still names
the same string, so ``BTFBuilder.from_btf(btf).build() == btf.raw_bytes()``
for blobs laid out as the kernel, pahole and clang write them (header, types,
strings); names of new or edited types are interned (deduplicated) at the end
of the string section. Type ids are positions: ``types[i]`` gets id
``start_id + i`` whatever its ``id`` field says, so later layers (sanitising,
loading) can replace types in place.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ..errors import BTFError
from . import format as fmt
from .spec import BTF
from .types import (
    Array, Const, Datasec, DeclTag, Enum, Enum64, Float, Func, FuncProto, Fwd, Int, Kind, Ptr, Restrict,
    Struct, Type, Typedef, TypeTag, Union, Var, Void, Volatile,
)

_REFS = (Ptr, Typedef, Volatile, Const, Restrict, TypeTag)
"""Kinds that are just a btf_type pointing at ``type_id``."""


class BTFBuilder:
    """An editable set of types plus a string section, marshalled by :meth:`build`."""

    def __init__(self, types: Iterable[Type] = (), *, byte_order: str = "little", base: BTF | None = None,
                 strings: bytes | None = None):
        """``strings`` is an existing string section to start from (keeps parsed ``name_off`` valid);
        for split BTF (``base`` given) offsets continue after the base's strings."""
        if byte_order not in ("little", "big"):
            raise ValueError(f"byte_order must be 'little' or 'big', not {byte_order!r}")
        self.byte_order = byte_order
        self.base = base
        self.types: list[Type] = list(types)
        """The types to write, in id order; edit freely."""
        self.start_id = len(base) if base is not None else 1
        self._str_base = base._str_total if base is not None else 0
        self._strings = bytearray(strings if strings else b"\0")
        if self._strings[-1:] != b"\0":
            raise BTFError("string section must end with NUL")
        self._interned: dict[bytes, int] | None = None
        self.flags = 0

    @classmethod
    def from_btf(cls, btf: BTF) -> BTFBuilder:
        """A builder holding every own type of ``btf``, its strings, byte order and base."""
        return cls(btf.types(), byte_order=btf.byte_order, base=btf.base, strings=btf.strings_bytes())

    def add(self, t: Type) -> int:
        """Append a type; returns the id it will have."""
        self.types.append(t)
        return self.start_id + len(self.types) - 1

    @property
    def next_id(self) -> int:
        """The id the next added type gets."""
        return self.start_id + len(self.types)

    # --- strings ----------------------------------------------------------
    def string(self, s: str) -> int:
        """The offset of ``s`` in the string section (base + own), adding it if absent."""
        if not s:
            return 0
        raw = s.encode()
        if self._interned is None:
            self._interned = {}
            off = 0
            for part in bytes(self._strings).split(b"\0")[:-1]:
                self._interned.setdefault(part, self._str_base + off)
                off += len(part) + 1
        off = self._interned.get(raw)
        if off is None and self.base is not None:
            candidates = self.base.ids_by_name(s)  # base type names are the likely hits
            for type_id in candidates:
                base_off = self.base[type_id].name_off
                if base_off >= 0 and self.base.string(base_off) == s:
                    off = base_off
                    break
        if off is None:
            off = self._str_base + len(self._strings)
            self._strings += raw + b"\0"
        self._interned[raw] = off
        return off

    def _name(self, name: str, name_off: int) -> int:
        """``name_off`` if it still names ``name``, else ``name`` interned."""
        if name_off >= 0:
            local = name_off - self._str_base
            if local >= 0:
                raw = name.encode()
                end = local + len(raw)
                if end < len(self._strings) and self._strings[end] == 0 and self._strings[local:end] == raw:
                    return name_off
            elif self.base is not None:
                try:
                    if self.base.string(name_off) == name:
                        return name_off
                except BTFError:
                    pass
        elif not name:
            return 0
        return self.string(name)

    # --- marshalling ------------------------------------------------------
    def build(self) -> bytes:
        """The BTF blob: header, type section, string section."""
        layouts = fmt.LITTLE if self.byte_order == "little" else fmt.BIG
        enc = _Encoder(layouts, self._name)
        out = bytearray()
        for i, t in enumerate(self.types):
            try:
                enc.encode(t, out)
            except BTFError as e:
                raise BTFError(f"cannot write type [{self.start_id + i}] ({type(t).__name__}): {e}") from None
            except (struct.error, OverflowError, ValueError, TypeError, AttributeError) as e:
                raise BTFError(f"cannot write type [{self.start_id + i}] ({type(t).__name__}): {e}") from None
        header = layouts.header.build(dict(
            magic=fmt.BTF_MAGIC, version=fmt.BTF_VERSION, flags=self.flags, hdr_len=layouts.header.sizeof(),
            type_off=0, type_len=len(out), str_off=len(out), str_len=len(self._strings),
        ))
        return header + bytes(out) + bytes(self._strings)


class _Encoder:
    """Packs one type at a time with ``struct`` formats derived from the declarations."""

    def __init__(self, layouts: fmt.Layouts, name: object):
        self.name = name
        self.head = layouts.fmt(layouts.btf_type).pack
        self.u32 = layouts.fmt(layouts.int_encoding).pack
        self.array = layouts.fmt(layouts.array).pack
        self.member = layouts.fmt(layouts.member).pack
        self.enum = layouts.fmt(layouts.enum).pack
        self.enum64 = layouts.fmt(layouts.enum64).pack
        self.param = layouts.fmt(layouts.param).pack
        self.var = layouts.fmt(layouts.var).pack
        self.secinfo = layouts.fmt(layouts.var_secinfo).pack
        self.decl_tag = layouts.fmt(layouts.decl_tag).pack

    def encode(self, t: Type, out: bytearray) -> None:
        name = self.name
        info = fmt.info_word
        if isinstance(t, _REFS):
            out += self.head(name(t.name, t.name_off), info(t.kind, 0, getattr(t, "kind_flag", False)), t.type_id)
        elif isinstance(t, (Struct, Union)):
            _check_vlen(len(t.members))
            out += self.head(name(t.name, t.name_off), info(t.kind, len(t.members), t.kind_flag), t.size)
            for m in t.members:
                if t.kind_flag:
                    if m.bitfield_size > 0xFF or m.bit_offset > fmt.MEMBER_BIT_OFFSET_MASK:
                        raise BTFError(f"member {m.name!r}: bitfield size/offset too large for kind_flag encoding")
                    offset = m.bitfield_size << fmt.MEMBER_BITFIELD_SHIFT | m.bit_offset
                elif m.bitfield_size:
                    raise BTFError(f"member {m.name!r} is a bitfield but kind_flag is clear")
                else:
                    offset = m.bit_offset
                out += self.member(name(m.name, m.name_off), m.type_id, offset)
        elif isinstance(t, Func):
            out += self.head(name(t.name, t.name_off), info(Kind.FUNC, int(t.linkage), False), t.type_id)
        elif isinstance(t, FuncProto):
            _check_vlen(len(t.params))
            out += self.head(name(t.name, t.name_off), info(Kind.FUNC_PROTO, len(t.params), False),
                             t.return_type_id)
            for p in t.params:
                out += self.param(name(p.name, p.name_off), p.type_id)
        elif isinstance(t, Int):
            word = (int(t.encoding) << fmt.INT_ENCODING_SHIFT | t.bit_offset << fmt.INT_OFFSET_SHIFT | t.bits)
            if t.bits > fmt.INT_BITS_MASK or t.bit_offset > fmt.INT_OFFSET_MASK or int(t.encoding) > 0xF:
                raise BTFError("INT encoding/offset/bits out of range")
            out += self.head(name(t.name, t.name_off), info(Kind.INT, 0, False), t.size) + self.u32(word)
        elif isinstance(t, Array):
            out += self.head(name(t.name, t.name_off), info(Kind.ARRAY, 0, False), 0)
            out += self.array(t.type_id, t.index_type_id, t.nelems)
        elif isinstance(t, Enum):
            _check_vlen(len(t.values))
            out += self.head(name(t.name, t.name_off), info(Kind.ENUM, len(t.values), t.signed), t.size)
            for v in t.values:
                if not (-(1 << 31) <= v.value < (1 << 32)):
                    raise BTFError(f"enumerator {v.name!r} = {v.value} does not fit 32 bits")
                val = v.value - (1 << 32) if v.value >= 1 << 31 else v.value
                out += self.enum(name(v.name, v.name_off), val)
        elif isinstance(t, Enum64):
            _check_vlen(len(t.values))
            out += self.head(name(t.name, t.name_off), info(Kind.ENUM64, len(t.values), t.signed), t.size)
            for v in t.values:
                if not (-(1 << 63) <= v.value < (1 << 64)):
                    raise BTFError(f"enumerator {v.name!r} = {v.value} does not fit 64 bits")
                val = v.value & 0xFFFFFFFFFFFFFFFF
                out += self.enum64(name(v.name, v.name_off), val & 0xFFFFFFFF, val >> 32)
        elif isinstance(t, Fwd):
            out += self.head(name(t.name, t.name_off), info(Kind.FWD, 0, t.union), 0)
        elif isinstance(t, Var):
            out += self.head(name(t.name, t.name_off), info(Kind.VAR, 0, False), t.type_id)
            out += self.var(int(t.linkage))
        elif isinstance(t, Datasec):
            _check_vlen(len(t.vars))
            out += self.head(name(t.name, t.name_off), info(Kind.DATASEC, len(t.vars), False), t.size)
            for v in t.vars:
                out += self.secinfo(v.type_id, v.offset, v.size)
        elif isinstance(t, Float):
            out += self.head(name(t.name, t.name_off), info(Kind.FLOAT, 0, False), t.size)
        elif isinstance(t, DeclTag):
            out += self.head(name(t.name, t.name_off), info(Kind.DECL_TAG, 0, t.kind_flag), t.type_id)
            out += self.decl_tag(t.component_idx)
        elif isinstance(t, Void):
            raise BTFError("VOID (id 0) is implicit and cannot be written")
        else:
            raise BTFError(f"not a BTF type: {t!r}")


def _check_vlen(n: int) -> None:
    if n > fmt.INFO_VLEN_MASK:
        raise BTFError(f"{n} entries exceed the BTF vlen limit of {fmt.INFO_VLEN_MASK}")


def write_btf(types: Iterable[Type], *, byte_order: str = "little", base: BTF | None = None,
              strings: bytes | None = None) -> bytes:
    """Marshal ``types`` (ids from 1, or from ``len(base)``) into a BTF blob."""
    return BTFBuilder(types, byte_order=byte_order, base=base, strings=strings).build()
