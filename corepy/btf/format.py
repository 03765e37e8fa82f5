"""The BTF and .BTF.ext wire formats, declared once with ``construct``.

Every layout exists in both byte orders (:data:`LITTLE`, :data:`BIG`); a blob's
header magic tells which one applies. The fast scanners in :mod:`.spec` and
:mod:`.ext` take their record sizes and ``struct`` formats from here, so the
offsets live in one place.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import construct as c

from .types import Kind

BTF_MAGIC = 0xEB9F
BTF_VERSION = 1

# btf_type.info bits: vlen 0-15, kind 24-28, kind_flag 31
INFO_VLEN_MASK = 0xFFFF
INFO_KIND_SHIFT = 24
INFO_KIND_MASK = 0x1F
INFO_KIND_FLAG_SHIFT = 31

# btf_member.offset when the parent's kind_flag is set: bitfield_size << 24 | bit_offset
MEMBER_BITFIELD_SHIFT = 24
MEMBER_BIT_OFFSET_MASK = 0xFFFFFF

# INT encoding word: encoding 24-27, offset 16-23, bits 0-7
INT_ENCODING_SHIFT = 24
INT_ENCODING_MASK = 0x0F
INT_OFFSET_SHIFT = 16
INT_OFFSET_MASK = 0xFF
INT_BITS_MASK = 0xFF

# line_info.line_col: line number << 10 | column
LINE_NUM_SHIFT = 10
LINE_COL_MASK = 0x3FF


def info_word(kind: int, vlen: int, kind_flag: bool) -> int:
    """Pack a btf_type.info word."""
    return (int(kind_flag) << INFO_KIND_FLAG_SHIFT) | ((kind & INFO_KIND_MASK) << INFO_KIND_SHIFT) | (
        vlen & INFO_VLEN_MASK
    )


@dataclass(frozen=True)
class Layouts:
    """All BTF/.BTF.ext declarations for one byte order."""

    order: str
    """'little' or 'big'."""
    prefix: str
    """The ``struct`` module prefix: '<' or '>'."""
    header: c.Struct
    btf_type: c.Struct
    int_encoding: c.Struct
    array: c.Struct
    member: c.Struct
    enum: c.Struct
    enum64: c.Struct
    param: c.Struct
    var: c.Struct
    var_secinfo: c.Struct
    decl_tag: c.Struct
    ext_header: c.Struct
    ext_core_header: c.Struct
    ext_info_sec: c.Struct
    func_info: c.Struct
    line_info: c.Struct
    core_relo: c.Struct

    def fmt(self, layout: c.Struct) -> struct.Struct:
        """A ``struct.Struct`` equivalent of a flat layout made of u32/s32 fields."""
        s = struct.Struct(self.prefix + "".join(sub.subcon.fmtstr[1:] for sub in layout.subcons))
        assert s.size == layout.sizeof()
        return s

    def trailing_size(self, kind: int, vlen: int) -> int:
        """Bytes of records following a btf_type of this kind and vlen."""
        fixed, per = self.trailing[kind]
        return fixed + per * vlen

    @property
    def trailing(self) -> dict[int, tuple[int, int]]:
        """kind -> (fixed bytes, bytes per vlen entry) after the btf_type."""
        return {
            Kind.INT: (self.int_encoding.sizeof(), 0),
            Kind.PTR: (0, 0),
            Kind.ARRAY: (self.array.sizeof(), 0),
            Kind.STRUCT: (0, self.member.sizeof()),
            Kind.UNION: (0, self.member.sizeof()),
            Kind.ENUM: (0, self.enum.sizeof()),
            Kind.FWD: (0, 0),
            Kind.TYPEDEF: (0, 0),
            Kind.VOLATILE: (0, 0),
            Kind.CONST: (0, 0),
            Kind.RESTRICT: (0, 0),
            Kind.FUNC: (0, 0),
            Kind.FUNC_PROTO: (0, self.param.sizeof()),
            Kind.VAR: (self.var.sizeof(), 0),
            Kind.DATASEC: (0, self.var_secinfo.sizeof()),
            Kind.FLOAT: (0, 0),
            Kind.DECL_TAG: (self.decl_tag.sizeof(), 0),
            Kind.TYPE_TAG: (0, 0),
            Kind.ENUM64: (0, self.enum64.sizeof()),
        }


def _layouts(order: str) -> Layouts:
    big = order == "big"
    u8 = c.Int8ub if big else c.Int8ul
    u16 = c.Int16ub if big else c.Int16ul
    u32 = c.Int32ub if big else c.Int32ul
    s32 = c.Int32sb if big else c.Int32sl
    return Layouts(
        order=order,
        prefix=">" if big else "<",
        header=c.Struct(
            "magic" / u16,
            "version" / u8,
            "flags" / u8,
            "hdr_len" / u32,
            "type_off" / u32,
            "type_len" / u32,
            "str_off" / u32,
            "str_len" / u32,
        ),
        # name_off; info (see INFO_*); size (INT, ENUM*, STRUCT, UNION, DATASEC, FLOAT) or type id
        btf_type=c.Struct("name_off" / u32, "info" / u32, "size_or_type" / u32),
        int_encoding=c.Struct("encoding" / u32),
        array=c.Struct("type" / u32, "index_type" / u32, "nelems" / u32),
        member=c.Struct("name_off" / u32, "type" / u32, "offset" / u32),
        enum=c.Struct("name_off" / u32, "val" / s32),
        enum64=c.Struct("name_off" / u32, "val_lo32" / u32, "val_hi32" / u32),
        param=c.Struct("name_off" / u32, "type" / u32),
        var=c.Struct("linkage" / u32),
        var_secinfo=c.Struct("type" / u32, "offset" / u32, "size" / u32),
        decl_tag=c.Struct("component_idx" / s32),
        ext_header=c.Struct(
            "magic" / u16,
            "version" / u8,
            "flags" / u8,
            "hdr_len" / u32,
            "func_info_off" / u32,
            "func_info_len" / u32,
            "line_info_off" / u32,
            "line_info_len" / u32,
        ),
        # follows ext_header when hdr_len covers it (LLVM >= 10)
        ext_core_header=c.Struct("core_relo_off" / u32, "core_relo_len" / u32),
        # each .BTF.ext subsection: u32 record size, then repeated ext_info_sec + num_info records
        ext_info_sec=c.Struct("sec_name_off" / u32, "num_info" / u32),
        func_info=c.Struct("insn_off" / u32, "type_id" / u32),
        line_info=c.Struct("insn_off" / u32, "file_name_off" / u32, "line_off" / u32, "line_col" / u32),
        core_relo=c.Struct("insn_off" / u32, "type_id" / u32, "access_str_off" / u32, "kind" / u32),
    )


LITTLE = _layouts("little")
BIG = _layouts("big")


def layouts_for_magic(data: bytes | memoryview) -> Layouts | None:
    """The layouts whose byte order reads ``data``'s first two bytes as the BTF magic, or None."""
    if len(data) < 2:
        return None
    if data[0] == 0x9F and data[1] == 0xEB:
        return LITTLE
    if data[0] == 0xEB and data[1] == 0x9F:
        return BIG
    return None
