"""The BTF and .BTF.ext wire formats, declared once (:data:`DECLARATIONS`).

Every layout exists in both byte orders (:data:`LITTLE`, :data:`BIG`); a blob's
header magic tells which one applies. The fast scanners in :mod:`.spec` and
:mod:`.ext` take their record sizes and ``struct`` formats from here, so the
offsets live in one place; each layout's ``construct`` Struct is derived from the
same declaration when first asked for (tests decode through it).
"""

from __future__ import annotations

import struct

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


# Every layout, declared once: (field, type) in wire order. ``struct`` formats for the fast
# readers and writers and ``construct`` Structs (built on first use: importing construct is
# not free) both derive from this table.
_FIELD_TYPES = {"u8": "B", "u16": "H", "u32": "I", "s32": "i"}
DECLARATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "header": (("magic", "u16"), ("version", "u8"), ("flags", "u8"), ("hdr_len", "u32"), ("type_off", "u32"),
               ("type_len", "u32"), ("str_off", "u32"), ("str_len", "u32")),
    # name_off; info (see INFO_*); size (INT, ENUM*, STRUCT, UNION, DATASEC, FLOAT) or type id
    "btf_type": (("name_off", "u32"), ("info", "u32"), ("size_or_type", "u32")),
    "int_encoding": (("encoding", "u32"),),
    "array": (("type", "u32"), ("index_type", "u32"), ("nelems", "u32")),
    "member": (("name_off", "u32"), ("type", "u32"), ("offset", "u32")),
    "enum": (("name_off", "u32"), ("val", "s32")),
    "enum64": (("name_off", "u32"), ("val_lo32", "u32"), ("val_hi32", "u32")),
    "param": (("name_off", "u32"), ("type", "u32")),
    "var": (("linkage", "u32"),),
    "var_secinfo": (("type", "u32"), ("offset", "u32"), ("size", "u32")),
    "decl_tag": (("component_idx", "s32"),),
    "ext_header": (("magic", "u16"), ("version", "u8"), ("flags", "u8"), ("hdr_len", "u32"),
                   ("func_info_off", "u32"), ("func_info_len", "u32"), ("line_info_off", "u32"),
                   ("line_info_len", "u32")),
    # follows ext_header when hdr_len covers it (LLVM >= 10)
    "ext_core_header": (("core_relo_off", "u32"), ("core_relo_len", "u32")),
    # each .BTF.ext subsection: u32 record size, then repeated ext_info_sec + num_info records
    "ext_info_sec": (("sec_name_off", "u32"), ("num_info", "u32")),
    "func_info": (("insn_off", "u32"), ("type_id", "u32")),
    "line_info": (("insn_off", "u32"), ("file_name_off", "u32"), ("line_off", "u32"), ("line_col", "u32")),
    "core_relo": (("insn_off", "u32"), ("type_id", "u32"), ("access_str_off", "u32"), ("kind", "u32")),
}


class Layout:
    """One declared layout in one byte order: its ``struct`` form (:attr:`struct`, :meth:`sizeof`)
    at hand, its ``construct`` Struct (:attr:`construct`; ``parse``, ``build`` and every other
    construct attribute delegate to it) built on first use."""

    __slots__ = ("name", "fields", "big", "struct", "_construct")

    def __init__(self, name: str, fields: tuple[tuple[str, str], ...], big: bool):
        self.name = name
        self.fields = fields
        self.big = big
        self.struct = struct.Struct((">" if big else "<") + "".join(_FIELD_TYPES[t] for _, t in fields))
        self._construct = None

    def sizeof(self) -> int:
        return self.struct.size

    @property
    def construct(self):  # -> construct.Struct
        if self._construct is None:
            import construct as c

            end = "b" if self.big else "l"
            types = {"u8": c.Int8ub if self.big else c.Int8ul, "u16": getattr(c, "Int16u" + end),
                     "u32": getattr(c, "Int32u" + end), "s32": getattr(c, "Int32s" + end)}
            self._construct = c.Struct(*(name / types[t] for name, t in self.fields))
        return self._construct

    def __getattr__(self, attr: str):
        if attr.startswith("_"):  # (a slot not set yet: never recurse through construct)
            raise AttributeError(attr)
        return getattr(self.construct, attr)

    def __repr__(self) -> str:
        return f"<Layout {self.name} {self.struct.format}>"


class Layouts:
    """All BTF/.BTF.ext declarations for one byte order (one :class:`Layout` attribute per declaration)."""

    order: str
    """'little' or 'big'."""
    prefix: str
    """The ``struct`` module prefix: '<' or '>'."""
    header: Layout
    btf_type: Layout
    int_encoding: Layout
    array: Layout
    member: Layout
    enum: Layout
    enum64: Layout
    param: Layout
    var: Layout
    var_secinfo: Layout
    decl_tag: Layout
    ext_header: Layout
    ext_core_header: Layout
    ext_info_sec: Layout
    func_info: Layout
    line_info: Layout
    core_relo: Layout

    def __init__(self, order: str):
        self.order = order
        self.prefix = ">" if order == "big" else "<"
        for name, fields in DECLARATIONS.items():
            setattr(self, name, Layout(name, fields, order == "big"))

    def fmt(self, layout: Layout) -> struct.Struct:
        """The ``struct.Struct`` of a layout."""
        return layout.struct

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


LITTLE = Layouts("little")
BIG = Layouts("big")


def layouts_for_magic(data: bytes | memoryview) -> Layouts | None:
    """The layouts whose byte order reads ``data``'s first two bytes as the BTF magic, or None."""
    if len(data) < 2:
        return None
    if data[0] == 0x9F and data[1] == 0xEB:
        return LITTLE
    if data[0] == 0xEB and data[1] == 0x9F:
        return BIG
    return None
