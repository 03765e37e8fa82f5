"""`.BTF.ext`: func_info, line_info and CO-RE relocation records per ELF section.

INTERFACE CONTRACT: the records below are what the object layer and the CO-RE
engine consume. ``insn_off`` is in BYTES from the start of the ELF section, as
clang writes it (divide by 8 for an instruction index).
"""

from __future__ import annotations

import struct

from .._records import field, record
from ..errors import BTFError
from . import format as fmt

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


@record(frozen=True, slots=True)
class FuncInfo:
    """A bpf_func_info record: the function starting at ``insn_off`` (bytes) has FUNC ``type_id``."""

    insn_off: int
    type_id: int


@record(frozen=True, slots=True)
class LineInfo:
    """A bpf_line_info record: the source line of the instruction at ``insn_off`` (bytes)."""

    insn_off: int
    file_name: str
    line: str
    line_num: int
    line_col: int
    file_name_off: int = -1
    line_off: int = -1


@record(frozen=True, slots=True)
class CoreRelo:
    """One bpf_core_relo: ``kind`` is a bpf_core_relo_kind value (0..12)."""

    insn_off: int
    type_id: int
    access_str: str
    kind: int
    access_str_off: int = -1


@record
class BTFExt:
    """Parsed .BTF.ext, keyed by ELF section name (e.g. 'tracepoint/syscalls/sys_enter_write')."""

    func_info: dict[str, list[FuncInfo]] = field(default_factory=dict)
    line_info: dict[str, list[LineInfo]] = field(default_factory=dict)
    core_relos: dict[str, list[CoreRelo]] = field(default_factory=dict)
    func_info_rec_size: int = 8
    line_info_rec_size: int = 16
    core_relo_rec_size: int = 16

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, strings: "object", *, source: str = "<.BTF.ext>") -> BTFExt:
        """Parse a .BTF.ext section; ``strings`` is the BTF whose string section names resolve in
        (anything with ``.string(off)``). Raises BTFError."""
        return _Parser(memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data),
                       strings, source).parse()


class _Parser:
    def __init__(self, buf: memoryview, strings: Any, source: str):
        self.buf = buf
        self.strings = strings
        self.source = source

    def err(self, message: str, offset: int | None = None) -> BTFError:
        return BTFError(message, offset=offset, source=self.source)

    def string(self, offset: int, where: int) -> str:
        try:
            return self.strings.string(offset)
        except BTFError as e:
            raise self.err(f"bad string offset {offset}: {e}", where) from None

    def parse(self) -> BTFExt:
        buf = self.buf
        layouts = fmt.layouts_for_magic(buf)
        if layouts is None:
            raise self.err("not .BTF.ext: bad magic", 0)
        header = layouts.fmt(layouts.ext_header)
        core_header = layouts.fmt(layouts.ext_core_header)
        if len(buf) < header.size:
            raise self.err(f"truncated .BTF.ext header: {len(buf)} bytes, need {header.size}", 0)
        _magic, version, _flags, hdr_len, fi_off, fi_len, li_off, li_len = header.unpack_from(buf, 0)
        if version != fmt.BTF_VERSION:
            raise self.err(f"unsupported .BTF.ext version {version}", 2)
        if hdr_len < header.size or hdr_len > len(buf):
            raise self.err(f"bad .BTF.ext header length {hdr_len} (section is {len(buf)} bytes)", 4)
        cr_off = cr_len = 0
        if hdr_len >= header.size + core_header.size:
            cr_off, cr_len = core_header.unpack_from(buf, header.size)
        ext = BTFExt()
        fi = layouts.fmt(layouts.func_info)
        li = layouts.fmt(layouts.line_info)
        cr = layouts.fmt(layouts.core_relo)
        ext.func_info_rec_size, ext.func_info = self.subsection(
            "func_info", hdr_len, fi_off, fi_len, fi, layouts,
            lambda rec, at: FuncInfo(rec[0], rec[1]))
        ext.line_info_rec_size, ext.line_info = self.subsection(
            "line_info", hdr_len, li_off, li_len, li, layouts,
            lambda rec, at: LineInfo(rec[0], self.string(rec[1], at), self.string(rec[2], at),
                                     rec[3] >> fmt.LINE_NUM_SHIFT, rec[3] & fmt.LINE_COL_MASK, rec[1], rec[2]))
        ext.core_relo_rec_size, ext.core_relos = self.subsection(
            "core_relo", hdr_len, cr_off, cr_len, cr, layouts,
            lambda rec, at: CoreRelo(rec[0], rec[1], self.string(rec[2], at), rec[3], rec[2]))
        return ext

    def subsection(self, what: str, hdr_len: int, off: int, length: int, record: struct.Struct,
                   layouts: fmt.Layouts, make: Any) -> tuple[int, dict[str, list[Any]]]:
        """Parse one subsection: u32 record size, then {sec_name_off, num_info, records...}*."""
        out: dict[str, list[Any]] = {}
        if length == 0:
            return record.size, out
        buf = self.buf
        start = hdr_len + off
        end = start + length
        if end > len(buf):
            raise self.err(f"{what} [{off}, +{length}) runs past the end of the section ({len(buf)} bytes)", 4)
        u32 = struct.Struct(layouts.prefix + "I")
        sec = layouts.fmt(layouts.ext_info_sec)
        if length < u32.size:
            raise self.err(f"{what}: no record size", start)
        (rec_size,) = u32.unpack_from(buf, start)
        if rec_size < record.size or rec_size % 4:
            raise self.err(f"{what}: record size {rec_size} is smaller than {record.size} or unaligned", start)
        p = start + u32.size
        while p < end:
            if p + sec.size > end:
                raise self.err(f"{what}: truncated section header", p)
            name_off, num = sec.unpack_from(buf, p)
            name = self.string(name_off, p)
            if num == 0:
                raise self.err(f"{what}: section {name!r} has no records", p)
            p += sec.size
            if p + num * rec_size > end:
                raise self.err(f"{what}: {num} records of {rec_size} bytes for {name!r} run past the end", p)
            records = out.setdefault(name, [])
            for _ in range(num):
                records.append(make(record.unpack_from(buf, p), p))
                p += rec_size
        return rec_size, out
