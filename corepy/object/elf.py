"""Read a BPF ELF relocatable object into plain data: sections, symbols, relocations.

pyelftools does the parsing (imported lazily); everything downstream sees only
the small records below, so malformed input fails here with an ObjectError.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field

from ..errors import ObjectError

__all__ = ["ElfSection", "ElfSymbol", "ElfReloc", "ElfObject", "read_elf"]

EM_BPF = 247
SHT_PROGBITS, SHT_SYMTAB, SHT_NOBITS, SHT_REL = 1, 2, 8, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHN_UNDEF, SHN_ABS, SHN_COMMON = 0, 0xFFF1, 0xFFF2
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION = 0, 1, 2, 3
STV_DEFAULT, STV_INTERNAL, STV_HIDDEN = 0, 1, 2
_REL_LE, _REL_BE = struct.Struct("<QQ"), struct.Struct(">QQ")  # Elf64_Rel: r_offset, r_info
R_BPF_64_64, R_BPF_64_ABS64, R_BPF_64_ABS32, R_BPF_64_NODYLD32, R_BPF_64_32 = 1, 2, 3, 4, 10


@dataclass(slots=True)
class ElfSection:
    index: int
    name: str
    type: int
    flags: int
    size: int
    data: bytes
    """Empty for SHT_NOBITS."""
    link: int = 0
    info: int = 0

    @property
    def is_code(self) -> bool:
        return self.type == SHT_PROGBITS and bool(self.flags & SHF_EXECINSTR) and self.size > 0


@dataclass(frozen=True, slots=True)
class ElfSymbol:
    index: int
    name: str
    value: int
    size: int
    type: int
    bind: int
    visibility: int
    shndx: int

    @property
    def is_extern(self) -> bool:
        """libbpf's ``sym_is_extern``: an undefined GLOBAL/WEAK NOTYPE symbol."""
        return self.shndx == SHN_UNDEF and self.bind in (STB_GLOBAL, STB_WEAK) and self.type == STT_NOTYPE


@dataclass(frozen=True, slots=True)
class ElfReloc:
    offset: int
    """Byte offset in the section being relocated."""
    symbol: ElfSymbol
    type: int


@dataclass
class ElfObject:
    path: str
    little_endian: bool
    sections: list[ElfSection]
    symbols: list[ElfSymbol]
    relocs: dict[int, list[ElfReloc]] = field(default_factory=dict)
    """Relocations keyed by the index of the section they apply to."""

    def section(self, name: str) -> ElfSection | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None


def _elf_error(path: str, what: str, exc: BaseException | None = None) -> ObjectError:
    detail = f": {exc}" if exc else ""
    return ObjectError(f"{what}{detail}", path=path)


def read_elf(source: str | os.PathLike[str] | bytes) -> ElfObject:
    """Parse an ELF file (path or bytes) into an :class:`ElfObject`; ObjectError on anything malformed."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        path, data = "<bytes>", bytes(source)
    else:
        path = os.fspath(source)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ObjectError(f"cannot read object file: {e.strerror}", path=path) from None
    if data[:4] != b"\x7fELF":
        raise _elf_error(path, "not an ELF file (bad magic)")
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        return _read(path, ELFFile(io.BytesIO(data)))
    except ObjectError:
        raise
    except (ELFError, ValueError, KeyError, IndexError, AssertionError, EOFError, OSError, OverflowError,
            TypeError, MemoryError, zlib.error) as e:
        raise _elf_error(path, "malformed ELF", e) from None
    except Exception as e:  # construct's StreamError and friends from pyelftools
        if type(e).__module__.startswith(("construct", "elftools")):
            raise _elf_error(path, "malformed ELF", e) from None
        raise


def _read(path: str, elf) -> ElfObject:
    if elf["e_machine"] not in ("EM_BPF", EM_BPF):
        raise _elf_error(path, f"not a BPF object (e_machine {elf['e_machine']})")
    if elf.elfclass != 64:
        raise _elf_error(path, "not a 64-bit ELF")
    if elf["e_type"] not in ("ET_REL",):
        raise _elf_error(path, f"not a relocatable object (e_type {elf['e_type']}); give the clang -c output")
    sections: list[ElfSection] = []
    symtab = None
    for i in range(elf.num_sections()):
        s = elf.get_section(i)
        h = s.header
        sh_type = _num(h["sh_type"], _SHT)
        nobits = sh_type == SHT_NOBITS
        data = b"" if nobits or sh_type == 0 else s.data()
        if not nobits and len(data) != h["sh_size"]:
            raise _elf_error(path, f"section {s.name!r} is truncated ({len(data)} of {h['sh_size']} bytes)")
        sections.append(ElfSection(i, s.name, sh_type, h["sh_flags"], h["sh_size"], data,
                                   h["sh_link"], h["sh_info"]))
        if sh_type == SHT_SYMTAB:
            if symtab is not None:
                raise _elf_error(path, "more than one symbol table")
            symtab = s
    if symtab is None:
        raise _elf_error(path, "no symbol table (was the object stripped?)")
    symbols = []
    for i, sym in enumerate(symtab.iter_symbols()):
        e = sym.entry
        info = e["st_info"]
        shndx = e["st_shndx"]
        shndx = {"SHN_UNDEF": SHN_UNDEF, "SHN_ABS": SHN_ABS, "SHN_COMMON": SHN_COMMON}.get(shndx, shndx)
        if not isinstance(shndx, int):
            shndx = 0xFFFF
        symbols.append(ElfSymbol(i, sym.name, e["st_value"], e["st_size"], _num(info["type"], _STT),
                                 _num(info["bind"], _STB), _num(e["st_other"]["visibility"], _STV), shndx))
    relocs: dict[int, list[ElfReloc]] = {}
    rel = _REL_LE if elf.little_endian else _REL_BE
    for sec in sections:
        if sec.type != SHT_REL:
            continue
        target = sec.info
        if not 0 < target < len(sections):
            raise _elf_error(path, f"relocation section {sec.name!r} targets bad section index {target}")
        if not (sections[target].flags & SHF_EXECINSTR or sections[target].name == ".maps"):
            continue  # debug info and BTF relocations are a linker's business, not a loader's
        if len(sec.data) % rel.size:
            raise _elf_error(path, f"relocation section {sec.name!r} size {len(sec.data)} is not a multiple of "
                             f"{rel.size}")
        out = relocs.setdefault(target, [])
        for r_offset, r_info in rel.iter_unpack(sec.data):
            sym_idx, r_type = r_info >> 32, r_info & 0xFFFFFFFF
            if sym_idx >= len(symbols):
                raise _elf_error(path, f"relocation in {sec.name!r} at {r_offset:#x} names symbol "
                                 f"#{sym_idx} of {len(symbols)}")
            out.append(ElfReloc(r_offset, symbols[sym_idx], r_type))
    return ElfObject(path, elf.little_endian, sections, symbols, relocs)


_SHT = {"SHT_NULL": 0, "SHT_PROGBITS": 1, "SHT_SYMTAB": 2, "SHT_STRTAB": 3, "SHT_RELA": 4, "SHT_NOBITS": 8,
        "SHT_REL": 9}
_STT = {"STT_NOTYPE": 0, "STT_OBJECT": 1, "STT_FUNC": 2, "STT_SECTION": 3, "STT_FILE": 4}
_STB = {"STB_LOCAL": 0, "STB_GLOBAL": 1, "STB_WEAK": 2}
_STV = {"STV_DEFAULT": 0, "STV_INTERNAL": 1, "STV_HIDDEN": 2, "STV_PROTECTED": 3}


def _num(value: object, names: dict[str, int]) -> int:
    """pyelftools gives enum names as strings when it knows them, ints otherwise."""
    if isinstance(value, int):
        return value
    return names.get(str(value), -1)
