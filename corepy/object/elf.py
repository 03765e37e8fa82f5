"""Read a BPF ELF relocatable object into plain data: sections, symbols, relocations.

The ELF64 structures are declared once below (:class:`Layout`) and read with ``struct``:
a loader needs the section table, the symbol table and the relocations of code and
``.maps``, which is a few hundred microseconds of work (pyelftools, for all it does well,
costs ~25 ms to import). Everything downstream sees only the small records below, so
malformed input fails here with an ObjectError naming what is wrong.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections import namedtuple

from .._records import record
from ..errors import ObjectError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ElfSection", "ElfSymbol", "ElfReloc", "ElfObject", "read_elf"]

EM_BPF = 247
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_NOBITS, SHT_REL = 1, 2, 3, 8, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHN_UNDEF, SHN_ABS, SHN_COMMON = 0, 0xFFF1, 0xFFF2
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION = 0, 1, 2, 3
STV_DEFAULT, STV_INTERNAL, STV_HIDDEN = 0, 1, 2
SHF_COMPRESSED = 0x800
SHN_LORESERVE, SHN_XINDEX = 0xFF00, 0xFFFF
ELFCOMPRESS_ZLIB = 1
MAX_DECOMPRESSED = 1 << 28  # no BPF object section comes near; keeps a corrupt header from allocating GBs
R_BPF_64_64, R_BPF_64_ABS64, R_BPF_64_ABS32, R_BPF_64_NODYLD32, R_BPF_64_32 = 1, 2, 3, 4, 10


@record(frozen=True, slots=True)
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


@record(frozen=True, slots=True)
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


@record(frozen=True, slots=True)
class ElfReloc:
    offset: int
    """Byte offset in the section being relocated."""
    symbol: ElfSymbol
    type: int


@record(frozen=True, slots=True)
class ElfObject:
    path: str
    little_endian: bool
    sections: list[ElfSection]
    symbols: list[ElfSymbol]
    relocs: dict[int, list[ElfReloc]]
    """Relocations keyed by the index of the section they apply to."""

    def section(self, name: str) -> ElfSection | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None


class Layout:
    """One ELF64 structure declared once: ``name:code`` pairs (``struct`` codes, ``x`` = padding);
    read in either byte order into a named tuple of the fields."""

    def __init__(self, name: str, fields: str) -> None:
        pairs = [f.split(":") for f in fields.split()]
        code = "".join(c for _, c in pairs)
        self.name = name
        self.record: Any = namedtuple(name, [n for n, c in pairs if not c.endswith("x")])  # type: ignore[misc]
        self.le, self.be = struct.Struct("<" + code), struct.Struct(">" + code)
        self.size = self.le.size

    def order(self, little: bool) -> struct.Struct:
        return self.le if little else self.be


# e_ident is read first (EI_CLASS, EI_DATA decide the rest); all other layouts follow it.
IDENT = Layout("e_ident", "magic:4s ei_class:B ei_data:B ei_version:B ei_osabi:B ei_abiversion:B pad:7x")
EHDR = Layout("Elf64_Ehdr", "e_type:H e_machine:H e_version:I e_entry:Q e_phoff:Q e_shoff:Q e_flags:I "
                            "e_ehsize:H e_phentsize:H e_phnum:H e_shentsize:H e_shnum:H e_shstrndx:H")
SHDR = Layout("Elf64_Shdr", "sh_name:I sh_type:I sh_flags:Q sh_addr:Q sh_offset:Q sh_size:Q sh_link:I "
                            "sh_info:I sh_addralign:Q sh_entsize:Q")
SYM = Layout("Elf64_Sym", "st_name:I st_info:B st_other:B st_shndx:H st_value:Q st_size:Q")
REL = Layout("Elf64_Rel", "r_offset:Q r_info:Q")
CHDR = Layout("Elf64_Chdr", "ch_type:I ch_reserved:I ch_size:Q ch_addralign:Q")
ELFCLASS64, ELFDATA2LSB, ELFDATA2MSB, ET_REL = 2, 1, 2, 1


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
    return _Reader(path, data).read()


class _Reader:
    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self.data = data

    def err(self, what: str) -> ObjectError:
        return _elf_error(self.path, what)

    def malformed(self, what: str) -> ObjectError:
        return _elf_error(self.path, f"malformed ELF: {what}")

    def unpack(self, layout: Layout, offset: int, what: str = "") -> Any:
        if offset + layout.size > len(self.data):
            raise self.malformed(f"truncated: {what or layout.name} at {offset:#x} needs {layout.size} bytes, "
                           f"the file has {len(self.data)}")
        return layout.record._make(self.st[layout.name].unpack_from(self.data, offset))

    def read(self) -> ElfObject:
        data = self.data
        if len(data) < IDENT.size:
            raise self.malformed(f"truncated: {len(data)} bytes is shorter than the ELF identification")
        ident = IDENT.record._make(IDENT.le.unpack_from(data))
        ei_class, ei_data = ident.ei_class, ident.ei_data
        if ei_data not in (ELFDATA2LSB, ELFDATA2MSB):
            raise self.malformed(f"unknown data encoding EI_DATA={ei_data}")
        self.little = little = ei_data == ELFDATA2LSB
        self.st = {lay.name: lay.order(little) for lay in (EHDR, SHDR, SYM, REL, CHDR)}
        if ei_class != ELFCLASS64:
            e_machine = struct.unpack_from("<H" if little else ">H", data, 18)[0] if len(data) >= 20 else -1
            if e_machine != EM_BPF:
                raise self.err(f"not a BPF object (e_machine {e_machine})")
            raise self.err("not a 64-bit ELF")
        ehdr = self.unpack(EHDR, IDENT.size, "the ELF header")
        if ehdr.e_machine != EM_BPF:
            raise self.err(f"not a BPF object (e_machine {ehdr.e_machine})")
        if ehdr.e_type != ET_REL:
            raise self.err(f"not a relocatable object (e_type {ehdr.e_type}); give the clang -c output")
        self.headers = self.section_headers(ehdr.e_shoff, ehdr.e_shentsize, ehdr.e_shnum, ehdr.e_shstrndx)
        sections = self.sections(self.headers)
        symbols = self.symbols(sections)
        relocs = self.relocations(sections, symbols)
        return ElfObject(self.path, little, sections, symbols, relocs)

    def section_headers(self, shoff: int, shentsize: int, shnum: int, shstrndx: int) -> list[Any]:
        if shoff == 0:
            return []
        if shentsize != SHDR.size:
            raise self.malformed(f"section header size {shentsize}, expected {SHDR.size}")
        first = self.unpack(SHDR, shoff, "section header 0")
        if shnum == 0:  # extended numbering: the count lives in section 0's sh_size
            shnum = first.sh_size
        if shstrndx == SHN_XINDEX:  # and the name table's index in its sh_link
            shstrndx = first.sh_link
        if shoff + shnum * SHDR.size > len(self.data):
            raise self.malformed(f"truncated: {shnum} section headers at {shoff:#x} end past the file "
                           f"({len(self.data)} bytes)")
        headers = list(map(SHDR.record._make, self.st[SHDR.name].iter_unpack(
            self.data[shoff:shoff + shnum * SHDR.size])))
        if not 0 <= shstrndx < shnum:
            raise self.malformed(f"section name table index {shstrndx} of {shnum} sections")
        self.shstrtab = self.raw_data(headers[shstrndx], "the section name table")
        return headers

    def raw_data(self, header: Any, what: str) -> bytes:
        if header.sh_type in (0, SHT_NOBITS):
            return b""
        offset, size = header.sh_offset, header.sh_size
        end = offset + size
        if end > len(self.data):
            have = max(0, len(self.data) - offset)
            raise self.malformed(f"section {what!r} is truncated ({have} of {size} bytes)")
        return self.data[offset:end]

    def name(self, table: bytes, offset: int, what: str) -> str:
        if offset >= len(table) and offset:
            raise self.malformed(f"{what} name offset {offset} is past its string table "
                           f"({len(table)} bytes)")
        end = table.find(b"\0", offset)
        return table[offset:end if end >= 0 else len(table)].decode("utf-8", "replace")

    def sections(self, headers: list[Any]) -> list[ElfSection]:
        sections = []
        for i, h in enumerate(headers):
            name = self.name(self.shstrtab, h.sh_name, f"section {i}")
            data, size = self.raw_data(h, name), h.sh_size
            if h.sh_flags & SHF_COMPRESSED and h.sh_type not in (0, SHT_NOBITS):
                data = self.decompress(name, data)
                size = len(data)
            sections.append(ElfSection(i, name, h.sh_type, h.sh_flags, size, data, h.sh_link, h.sh_info))
        return sections

    def decompress(self, name: str, data: bytes) -> bytes:
        """SHF_COMPRESSED data (``clang -gz``); debug sections, which loaders ignore, stay as they are."""
        if name.startswith(".debug") or name.startswith(".rel.debug"):
            return data
        if len(data) < CHDR.size:
            raise self.malformed(f"section {name!r} is compressed but shorter than its compression header")
        chdr = CHDR.record._make(self.st[CHDR.name].unpack_from(data))
        if chdr.ch_type != ELFCOMPRESS_ZLIB:
            raise self.malformed(f"section {name!r}: unsupported compression type {chdr.ch_type}")
        ch_size = chdr.ch_size
        if ch_size > MAX_DECOMPRESSED:
            raise self.malformed(f"section {name!r}: claims {ch_size} bytes uncompressed (limit {MAX_DECOMPRESSED})")
        try:
            out = zlib.decompressobj().decompress(data[CHDR.size:], ch_size)
        except zlib.error as e:
            raise self.malformed(f"section {name!r}: bad zlib data ({e})") from None
        if len(out) != ch_size:
            raise self.malformed(f"section {name!r}: decompressed to {len(out)} bytes, its header says {ch_size}")
        return out

    def symbols(self, sections: list[ElfSection]) -> list[ElfSymbol]:
        tables = [s for s in sections if s.type == SHT_SYMTAB]
        if not tables:
            raise self.err("no symbol table (was the object stripped?)")
        if len(tables) > 1:
            raise self.err("more than one symbol table")
        symtab = tables[0]
        if not 0 <= symtab.link < len(sections) or sections[symtab.link].type != SHT_STRTAB:
            raise self.malformed(f"symbol table's string table (section index {symtab.link}) is not an SHT_STRTAB")
        strtab = sections[symtab.link].data
        self.check_entries(symtab, SYM)
        out = []
        name = self.name
        for i, (st_name, st_info, st_other, st_shndx, st_value, st_size) in enumerate(
                self.st[SYM.name].iter_unpack(symtab.data)):  # SYM's fields, in order
            out.append(ElfSymbol(i, name(strtab, st_name, f"symbol {i}") if st_name else "", st_value, st_size,
                                 st_info & 0xF, st_info >> 4, st_other & 0x3, st_shndx))
        return out

    def check_entries(self, sec: ElfSection, layout: Layout) -> None:
        entsize = self.headers[sec.index].sh_entsize
        if entsize != layout.size:
            raise self.malformed(f"section {sec.name!r}: entry size {entsize}, expected {layout.size} ({layout.name})")
        if len(sec.data) % layout.size:
            raise self.malformed(f"section {sec.name!r}: size {len(sec.data)} is not a multiple of {layout.size} "
                           f"({layout.name})")

    def relocations(self, sections: list[ElfSection], symbols: list[ElfSymbol]) -> dict[int, list[ElfReloc]]:
        relocs: dict[int, list[ElfReloc]] = {}
        rel = self.st[REL.name]
        for sec in sections:
            if sec.type != SHT_REL:
                continue
            target = sec.info
            if not 0 < target < len(sections):
                raise self.malformed(f"relocation section {sec.name!r} targets bad section index {target}")
            if not (sections[target].flags & SHF_EXECINSTR or sections[target].name == ".maps"):
                continue  # debug info and BTF relocations are a linker's business, not a loader's
            self.check_entries(sec, REL)
            out = relocs.setdefault(target, [])
            for r_offset, r_info in rel.iter_unpack(sec.data):  # REL's fields
                sym_idx, r_type = r_info >> 32, r_info & 0xFFFFFFFF
                if sym_idx >= len(symbols):
                    raise self.malformed(f"relocation in {sec.name!r} at {r_offset:#x} names symbol "
                                   f"#{sym_idx} of {len(symbols)}")
                out.append(ElfReloc(r_offset, symbols[sym_idx], r_type))
        return relocs
