"""TEST-ONLY: where each BPF function sits in its ELF section, read with pyelftools, so the
differential tests can name the program and instruction index of a CO-RE relocation the way
libbpf's log does. (corepy itself gets this from its object layer.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

from corepy.asm.insn import Insn, decode


@dataclass
class Function:
    name: str
    start: int   # instruction index in the section
    insns: list[Insn]


class Programs:
    def __init__(self, by_section: dict[str, list[Function]]):
        self.by_section = by_section

    def locate(self, section: str, insn_off: int) -> tuple[str, int, list[Insn]]:
        """(function name, index within it, its instruction list) of byte ``insn_off`` of ``section``."""
        idx = insn_off // 8
        for f in self.by_section[section]:
            if f.start <= idx < f.start + len(f.insns):
                return f.name, idx - f.start, f.insns
        raise LookupError(f"no function at insn #{idx} of {section}")


def program_insns(path: Path) -> Programs:
    by_section: dict[str, list[Function]] = {}
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        symtab = elf.get_section_by_name(".symtab")
        for sym in symtab.iter_symbols():
            if sym["st_info"]["type"] != "STT_FUNC" or not isinstance(sym["st_shndx"], int):
                continue
            sec = elf.get_section(sym["st_shndx"])
            data = sec.data()[sym["st_value"]: sym["st_value"] + sym["st_size"]]
            by_section.setdefault(sec.name, []).append(Function(sym.name, sym["st_value"] // 8, decode(data)))
    return Programs(by_section)
