"""`.BTF.ext`: func_info, line_info and CO-RE relocation records per ELF section.

INTERFACE CONTRACT: the records below are what the object layer and the CO-RE
engine consume. ``insn_off`` is in BYTES from the start of the ELF section, as
clang writes it (divide by 8 for an instruction index).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FuncInfo:
    insn_off: int
    type_id: int


@dataclass(frozen=True, slots=True)
class LineInfo:
    insn_off: int
    file_name: str
    line: str
    line_num: int
    line_col: int
    file_name_off: int = -1
    line_off: int = -1


@dataclass(frozen=True, slots=True)
class CoreRelo:
    """One bpf_core_relo: ``kind`` is a bpf_core_relo_kind value (0..12)."""

    insn_off: int
    type_id: int
    access_str: str
    kind: int
    access_str_off: int = -1


@dataclass
class BTFExt:
    """Parsed .BTF.ext, keyed by ELF section name (e.g. 'tracepoint/syscalls/sys_enter_write')."""

    func_info: dict[str, list[FuncInfo]] = field(default_factory=dict)
    line_info: dict[str, list[LineInfo]] = field(default_factory=dict)
    core_relos: dict[str, list[CoreRelo]] = field(default_factory=dict)
    func_info_rec_size: int = 8
    line_info_rec_size: int = 16
    core_relo_rec_size: int = 16

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, strings: "object") -> BTFExt:
        """Parse a .BTF.ext section; ``strings`` is the BTF whose string section names resolve in
        (anything with ``.string(off)``). Raises BTFError."""
        raise NotImplementedError
