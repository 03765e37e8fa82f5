"""Where a uprobe goes: ELF symbol -> file offset, and bare library names -> paths.

Pure (reads files, makes no BPF syscalls). ``resolve_library("libc.so.6")`` looks
in ``/etc/ld.so.cache`` then the standard library directories; ``symbol_offset``
finds a function in ``.symtab``/``.dynsym`` and turns its virtual address into the
file offset the uprobe PMU wants, through the PT_LOAD segment containing it.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import struct

from ._records import record
from .errors import ObjectError

__all__ = ["UprobeTarget", "UsdtNote", "parse_uprobe_spec", "resolve_library", "resolve_binary",
           "symbol_offset", "file_offset", "function_offsets", "ld_so_cache", "usdt_notes"]

LD_SO_CACHE = "/etc/ld.so.cache"

# --- /etc/ld.so.cache (glibc elf/dl-cache.h), declared once -----------------
_OLD_MAGIC = b"ld.so-1.7.0"
_NEW_MAGIC = b"glibc-ld.so.cache1.1"
_OLD_HEADER = struct.Struct("<11sxI")  # magic[11], nlibs
_OLD_ENTRY = struct.Struct("<iII")  # flags, key, value
# magic+version[20], nlibs, len_strings, flags, pad[3], extension_offset, unused[3]
_NEW_HEADER = struct.Struct("<20sIIB3xI12x")
_NEW_ENTRY = struct.Struct("<iIIIQ")  # flags, key, value, osversion, hwcap
_FLAG_TYPE_MASK, _FLAG_ELF_LIBC6, _FLAG_REQUIRED_MASK = 0x00FF, 0x0003, 0xFF00
# the FLAG_*_LIB64 value each architecture's 64-bit libraries carry
_ARCH_FLAGS = {"x86_64": 0x0300, "aarch64": 0x0A00, "ppc64le": 0x0500, "s390x": 0x0400,
               "riscv64": 0x1000, "i686": 0x0000, "armv7l": 0x0900}

_STD_LIB_DIRS = ("/lib/{multiarch}", "/usr/lib/{multiarch}", "/lib64", "/usr/lib64", "/lib", "/usr/lib",
                 "/usr/local/lib")
_MULTIARCH = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "i686": "i386-linux-gnu",
              "armv7l": "arm-linux-gnueabihf", "ppc64le": "powerpc64le-linux-gnu",
              "s390x": "s390x-linux-gnu", "riscv64": "riscv64-linux-gnu"}


def _cstr(data: bytes, off: int) -> str:
    end = data.find(b"\0", off)
    return data[off:end if end >= 0 else len(data)].decode("utf-8", "replace")


@functools.cache
def ld_so_cache(path: str = LD_SO_CACHE, machine: str | None = None) -> dict[str, str]:
    """Library name -> path from glibc's ld.so.cache, entries for this architecture only
    (first entry wins, as ld.so does). Missing or unreadable cache -> {}."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    arch_flag = _ARCH_FLAGS.get(machine or platform.machine())
    base = 0
    if data.startswith(_OLD_MAGIC):  # old format, possibly followed by the new one
        (_, nlibs) = _OLD_HEADER.unpack_from(data)
        base = (_OLD_HEADER.size + nlibs * _OLD_ENTRY.size + 7) & ~7
    out: dict[str, str] = {}
    if data.startswith(_NEW_MAGIC, base) and len(data) >= base + _NEW_HEADER.size:
        _, nlibs, _, _, _ = _NEW_HEADER.unpack_from(data, base)
        # string offsets are relative to the new header in the new format
        for i in range(nlibs):
            at = base + _NEW_HEADER.size + i * _NEW_ENTRY.size
            if at + _NEW_ENTRY.size > len(data):
                break
            flags, key, value, _, _ = _NEW_ENTRY.unpack_from(data, at)
            if (flags & _FLAG_TYPE_MASK) != _FLAG_ELF_LIBC6:
                continue
            if arch_flag is not None and (flags & _FLAG_REQUIRED_MASK) != arch_flag:
                continue
            out.setdefault(_cstr(data, base + key), _cstr(data, base + value))
    elif data.startswith(_OLD_MAGIC):
        (_, nlibs) = _OLD_HEADER.unpack_from(data)
        strings = _OLD_HEADER.size + nlibs * _OLD_ENTRY.size
        for i in range(nlibs):
            flags, key, value = _OLD_ENTRY.unpack_from(data, _OLD_HEADER.size + i * _OLD_ENTRY.size)
            if arch_flag is None or (flags & _FLAG_REQUIRED_MASK) == arch_flag:
                out.setdefault(_cstr(data, strings + key), _cstr(data, strings + value))
    return out


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def resolve_library(name: str) -> str:
    """Path of a shared library given as a path or a bare name like ``libc.so.6`` / ``libc``.

    Bare names are looked up in ``LD_LIBRARY_PATH``, ``/etc/ld.so.cache`` and the
    standard library directories. Raises ObjectError naming where it looked."""
    if "/" in name:
        if not os.path.exists(name):
            raise ObjectError(f"uprobe target {name!r} does not exist")
        return name
    candidates = [name] if ".so" in name else [f"{name}.so", f"lib{name}.so"]
    multiarch = _MULTIARCH.get(platform.machine(), "")
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    cache = ld_so_cache()
    for cand in candidates:
        for d in dirs:
            if _is_elf(p := os.path.join(d, cand)):
                return p
        if cand in cache and _is_elf(cache[cand]):
            return cache[cand]
        for d in _STD_LIB_DIRS:
            if _is_elf(p := os.path.join(d.format(multiarch=multiarch), cand)):
                return p
    # "libc" -> any cached "libc.so.N"
    for key in sorted(cache):
        if any(key.startswith(c + ".") for c in candidates) and _is_elf(cache[key]):
            return cache[key]
    raise ObjectError(f"library {name!r} not found in LD_LIBRARY_PATH, {LD_SO_CACHE} or "
                      f"{', '.join(d.format(multiarch=multiarch) for d in _STD_LIB_DIRS)}")


def resolve_binary(name: str) -> str:
    """A uprobe target path: a path as is, a library name through :func:`resolve_library`,
    else an executable found on ``PATH``."""
    if "/" in name:
        return resolve_library(name)
    if ".so" in name:
        return resolve_library(name)
    import shutil

    found = shutil.which(name)
    if found:
        return found
    return resolve_library(name)


_STT_FUNCS = ("STT_FUNC", "STT_GNU_IFUNC")


def symbol_offset(path: str, symbol: str) -> int:
    """File offset of function ``symbol`` in the ELF file ``path``.

    Looks in ``.symtab`` then ``.dynsym`` (GLOBAL beats WEAK beats LOCAL; ``name@VERSION``
    matches ``name``). Raises ObjectError if the file is not ELF, the symbol is missing
    or ambiguous, or its address lies in no PT_LOAD segment."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            vaddr = _find_function(elf, symbol, path)
            if elf["e_type"] == "ET_REL":
                raise ObjectError("cannot uprobe a relocatable object", path=path)
            for seg in elf.iter_segments():
                if seg["p_type"] != "PT_LOAD":
                    continue
                start = seg["p_vaddr"]
                if start <= vaddr < start + seg["p_memsz"]:
                    return vaddr - start + seg["p_offset"]
    except ELFError as e:
        raise ObjectError(f"not a readable ELF file: {e}", path=path) from None
    except OSError as e:
        raise ObjectError(f"cannot read uprobe target: {e.strerror}", path=path) from None
    raise ObjectError(f"symbol {symbol!r} at {vaddr:#x} lies in no PT_LOAD segment", path=path)


_BIND_RANK = {"STB_GLOBAL": 0, "STB_WEAK": 1, "STB_LOCAL": 2}


def function_offsets(path: str, pattern: str) -> dict[str, int]:
    """File offsets of every function whose name matches the glob ``pattern`` (``corepy_*``),
    from ``.symtab`` if the file has one, else ``.dynsym``. ObjectError if none matches."""
    import fnmatch

    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            segments = [(s["p_vaddr"], s["p_memsz"], s["p_offset"]) for s in elf.iter_segments()
                        if s["p_type"] == "PT_LOAD"]
            table = elf.get_section_by_name(".symtab") or elf.get_section_by_name(".dynsym")
            found: dict[str, int] = {}
            if table is not None and hasattr(table, "iter_symbols"):
                for sym in table.iter_symbols():
                    name = sym.name.split("@", 1)[0]
                    if (not name or sym["st_info"]["type"] not in _STT_FUNCS or sym["st_shndx"] == "SHN_UNDEF"
                            or not sym["st_value"] or not fnmatch.fnmatchcase(name, pattern)):
                        continue
                    found.setdefault(name, _file_offset(segments, sym["st_value"], path))
    except ELFError as e:
        raise ObjectError(f"not a readable ELF file: {e}", path=path) from None
    except OSError as e:
        raise ObjectError(f"cannot read uprobe target: {e.strerror}", path=path) from None
    if not found:
        raise ObjectError(f"no function matches {pattern!r}", path=path)
    return found


def _find_function(elf, symbol: str, path: str) -> int:
    for section_name in (".symtab", ".dynsym"):
        table = elf.get_section_by_name(section_name)
        if table is None or not hasattr(table, "iter_symbols"):
            continue
        best: tuple[int, int] | None = None  # (rank, address)
        for sym in table.iter_symbols():
            name = sym.name
            if name != symbol and not (name.startswith(symbol) and name[len(symbol)] == "@"):
                continue
            if sym["st_info"]["type"] not in _STT_FUNCS or sym["st_shndx"] == "SHN_UNDEF":
                continue
            if not sym["st_value"]:
                continue
            rank = _BIND_RANK.get(sym["st_info"]["bind"], 3)
            addr = sym["st_value"]
            if best is None or rank < best[0]:
                best = (rank, addr)
            elif rank == best[0] and addr != best[1]:
                raise ObjectError(f"symbol {symbol!r} is ambiguous: {best[1]:#x} and {addr:#x} "
                                  f"in {section_name}", path=path)
        if best is not None:
            return best[1]
    raise ObjectError(f"function {symbol!r} not found in .symtab or .dynsym", path=path)


@record(frozen=True, slots=True)
class UprobeTarget:
    """A parsed ``uprobe/`` attach spec: ``binary:function+offset`` (function may be empty:
    ``binary:0x1234`` means a raw file offset)."""

    binary: str
    function: str | None
    offset: int = 0


_SPEC = re.compile(r"^(?P<binary>[^:]+):(?P<func>[A-Za-z0-9_.@$]*)(?:\+(?P<off>(?:0x)?[0-9a-fA-F]+))?$")


def parse_uprobe_spec(spec: str) -> UprobeTarget:
    """Parse libbpf's ``path:func[+offset]`` (``path:0x1234`` = raw offset)."""
    m = _SPEC.match(spec)
    if not m:
        raise ObjectError(f"uprobe target {spec!r} is not 'binary:function[+offset]'")
    func, off = m["func"], m["off"]
    offset = int(off, 0) if off else 0
    if func and re.fullmatch(r"0x[0-9a-fA-F]+|[0-9]+", func) and not off:
        return UprobeTarget(m["binary"], None, int(func, 0))
    return UprobeTarget(m["binary"], func or None, offset)


def file_offset(target: UprobeTarget) -> tuple[str, int]:
    """(resolved path, file offset) of a :class:`UprobeTarget`."""
    path = resolve_binary(target.binary)
    if target.function is None:
        return path, target.offset
    return path, symbol_offset(path, target.function) + target.offset



# --- USDT probes (.note.stapsdt) -------------------------------------------------

@record(frozen=True, slots=True)
class UsdtNote:
    """One USDT probe site from ``.note.stapsdt``: ``ip_offset``/``sema_offset`` are file
    offsets (what a uprobe and its reference counter take); ``sema_offset`` 0 = no semaphore."""

    provider: str
    name: str
    args: str
    address: int
    ip_offset: int
    semaphore: int
    sema_offset: int


_STAPSDT_ADDRS = {32: struct.Struct("<III"), 64: struct.Struct("<QQQ")}


def usdt_notes(path: str, provider: str | None = None, name: str | None = None) -> list[UsdtNote]:
    """USDT probe sites of the ELF file ``path`` (optionally only ``provider``/``name``), with
    addresses adjusted for prelinking through ``.stapsdt.base`` as libbpf does."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if not elf.little_endian:
                raise ObjectError("big-endian USDT notes are not supported", path=path)
            notes = elf.get_section_by_name(".note.stapsdt")
            if notes is None:
                return []
            base_sec = elf.get_section_by_name(".stapsdt.base")
            segments = [(s["p_vaddr"], s["p_memsz"], s["p_offset"]) for s in elf.iter_segments()
                        if s["p_type"] == "PT_LOAD"]
            addrs = _STAPSDT_ADDRS[elf.elfclass]
            out = []
            for note in notes.iter_notes():
                if note["n_name"] != "stapsdt":
                    continue
                desc = note["n_descdata"]
                if isinstance(desc, str):
                    desc = desc.encode("latin-1")
                if len(desc) < addrs.size:
                    raise ObjectError("truncated .note.stapsdt entry", path=path, section=".note.stapsdt")
                ip, base, sema = addrs.unpack_from(desc)
                texts = desc[addrs.size:].split(b"\0")
                if len(texts) < 3:
                    raise ObjectError("malformed .note.stapsdt entry", path=path, section=".note.stapsdt")
                prov, probe, args = (t.decode("utf-8", "replace") for t in texts[:3])
                if (provider is not None and prov != provider) or (name is not None and probe != name):
                    continue
                if base_sec is not None and base:
                    ip += base_sec["sh_addr"] - base
                out.append(UsdtNote(prov, probe, args, ip, _file_offset(segments, ip, path),
                                    sema, _file_offset(segments, sema, path) if sema else 0))
            return out
    except ELFError as e:
        raise ObjectError(f"not a readable ELF file: {e}", path=path) from None
    except OSError as e:
        raise ObjectError(f"cannot read USDT target: {e.strerror}", path=path) from None


def _file_offset(segments: list[tuple[int, int, int]], vaddr: int, path: str) -> int:
    for start, size, offset in segments:
        if start <= vaddr < start + size:
            return vaddr - start + offset
    raise ObjectError(f"address {vaddr:#x} lies in no PT_LOAD segment", path=path)
