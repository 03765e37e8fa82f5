"""Make an object's BTF loadable, as libbpf does before BPF_BTF_LOAD. Pure byte patching.

clang leaves DATASEC sizes and VAR offsets at zero and marks externs with
EXTERN linkage, which the kernel rejects. libbpf (``btf_fixup_datasec``,
``bpf_object__collect_externs``, ``add_dummy_ksym_var``) fixes that up; the
fields involved are fixed-size, so we patch them in place. The only layout
change is appending libbpf's ``dummy_ksym`` VAR when ``.ksyms`` holds kfuncs.
Kernel-feature sanitizing (older kernels without DATASEC, FLOAT, TYPE_TAG...)
is a loader concern and not done here.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from ..btf.types import Datasec, Func, FuncProto, Int, Kind, Linkage, Var
from ..errors import ObjectError
from .elf import STB_GLOBAL, STB_WEAK, STT_OBJECT, STV_HIDDEN, STV_INTERNAL, ElfObject

__all__ = ["prepare_btf", "dummy_ksym_needed"]

_HDR = "HBBIIIII"  # magic version flags hdr_len type_off type_len str_off str_len
_TYPE_HDR = 12  # name_off, info, size/type
_SECINFO = 12
DUMMY_KSYM = "dummy_ksym"


def dummy_ksym_needed(btf) -> bool:
    """True when ``.ksyms`` lists a FUNC (libbpf then adds a ``dummy_ksym`` VAR)."""
    sec = _datasec(btf, ".ksyms")
    return sec is not None and any(isinstance(btf[v.type_id], Func) for v in sec.vars)


def _datasec(btf, name: str) -> Datasec | None:
    found = btf.find(name, Kind.DATASEC)
    return found[0] if found else None


def find_int_id(btf) -> int:
    """libbpf's ``find_int_btf_id``: the first 32-bit INT."""
    for t in btf.types():
        if isinstance(t, Int) and t.bits == 32:
            return t.id
    return 0


class _Patcher:
    def __init__(self, raw: bytes, btf) -> None:
        self.buf = bytearray(raw)
        self.btf = btf
        self.o = "<" if btf.byte_order == "little" else ">"

    def ids_of_kind(self, kind: Kind) -> list[int]:
        """Ids of this blob's types of ``kind``, read from their info words (nothing decoded)."""
        btf, info, want = self.btf, struct.Struct(self.o + "I"), int(kind)
        return [i for i in range(btf.start_id, len(btf))
                if (info.unpack_from(self.buf, btf.type_offset(i) + 4)[0] >> 24) & 0x1F == want]

    def u32(self, off: int, value: int) -> None:
        struct.pack_into(self.o + "I", self.buf, off, value & 0xFFFFFFFF)

    def get_u32(self, off: int) -> int:
        return struct.unpack_from(self.o + "I", self.buf, off)[0]

    def set_linkage_func(self, type_id: int, linkage: int) -> None:
        off = self.btf.type_offset(type_id) + 4
        info = self.get_u32(off)
        self.u32(off, (info & ~0xFFFF) | linkage)

    def set_linkage_var(self, type_id: int, linkage: int) -> None:
        self.u32(self.btf.type_offset(type_id) + _TYPE_HDR, linkage)

    def set_type(self, type_id: int, target: int) -> None:
        self.u32(self.btf.type_offset(type_id) + 8, target)

    def write_datasec(self, sec: Datasec, size: int, entries: list[tuple[int, int, int]]) -> None:
        """Rewrite a DATASEC's size and (type, offset, size) entries, sorted by offset."""
        base = self.btf.type_offset(sec.id)
        self.u32(base + 8, size)
        entries = sorted(entries, key=lambda e: e[1])
        for i, (tid, off, sz) in enumerate(entries):
            p = base + _TYPE_HDR + i * _SECINFO
            self.u32(p, tid)
            self.u32(p + 4, off)
            self.u32(p + 8, sz)


def prepare_btf(raw: bytes, btf, elf: ElfObject, kconfig_offsets: Mapping[str, int],
                hidden_funcs: set[str]) -> bytes:
    """The loadable form of ``raw`` (whose parse is ``btf``).

    ``kconfig_offsets``: kconfig extern name -> offset in the ``.kconfig`` map;
    ``hidden_funcs``: names of global functions with hidden visibility (loaded as static)."""
    p = _Patcher(raw, btf)
    section_sizes = {s.name: s.size for s in elf.sections}
    var_syms = {}
    for s in elf.symbols:
        if s.type == STT_OBJECT and s.bind in (STB_GLOBAL, STB_WEAK) and s.name not in var_syms:
            var_syms[s.name] = s
    for type_id in p.ids_of_kind(Kind.DATASEC):
        t = btf[type_id]
        if t.name not in (".kconfig", ".ksyms"):
            _fix_datasec(p, t, section_sizes, var_syms, elf.path)
    kcfg = _datasec(btf, ".kconfig")
    if kcfg is not None:
        entries = []
        for v in kcfg.vars:
            name = btf[v.type_id].name
            if name not in kconfig_offsets:
                raise ObjectError(f"failed to find extern definition for BTF var {name!r}", path=elf.path)
            p.set_linkage_var(v.type_id, 1)  # BTF_VAR_GLOBAL_ALLOCATED
            entries.append((v.type_id, kconfig_offsets[name], v.size))
        size = max((off + sz for _, off, sz in entries), default=0)
        p.write_datasec(kcfg, size, entries)
    for name in hidden_funcs:
        for f in btf.find(name, Kind.FUNC):
            p.set_linkage_func(f.id, int(Linkage.STATIC))
    ksyms = _datasec(btf, ".ksyms")
    if ksyms is not None:
        return _fix_ksyms(p, ksyms)
    return bytes(p.buf)


def _fix_datasec(p: _Patcher, t: Datasec, section_sizes: dict, var_syms: dict, path: str) -> None:
    btf = p.btf
    size = t.size
    fix_offsets = size == 0
    if fix_offsets:
        size = section_sizes.get(t.name, 0)
        if not size:
            raise ObjectError(f"DATASEC {t.name!r}: failed to determine size from ELF", path=path)
    entries = []
    for v in t.vars:
        var = btf[v.type_id]
        off = v.offset
        if isinstance(var, Var) and var.linkage not in (Linkage.STATIC, Linkage.EXTERN):
            sym = var_syms.get(var.name)
            if sym is None:
                raise ObjectError(f"DATASEC {t.name!r}: failed to find ELF symbol for VAR {var.name!r}", path=path)
            if fix_offsets:
                off = sym.value
            if sym.visibility in (STV_HIDDEN, STV_INTERNAL):
                p.set_linkage_var(var.id, int(Linkage.STATIC))
        elif not isinstance(var, Var):
            raise ObjectError(f"DATASEC {t.name!r}: unexpected non-VAR type [{v.type_id}]", path=path)
        entries.append((v.type_id, off, v.size))
    p.write_datasec(t, size, entries)


def _fix_ksyms(p: _Patcher, sec: Datasec) -> bytes:
    btf = p.btf
    int_id = find_int_id(btf)
    has_func = any(isinstance(btf[v.type_id], Func) for v in sec.vars)
    dummy_id = len(btf) if has_func else 0
    dummy_name_off = 0
    if has_func:
        dummy_name_off = _string_section_len(p)
    entries = []
    for i, v in enumerate(sec.vars):
        t = btf[v.type_id]
        if isinstance(t, Func):
            proto = btf[t.type_id]
            if isinstance(proto, FuncProto):
                base = btf.type_offset(proto.id) + _TYPE_HDR
                for j, prm in enumerate(proto.params):
                    if prm.type_id and not prm.name:
                        p.u32(base + 8 * j, dummy_name_off)
            p.set_linkage_func(t.id, int(Linkage.GLOBAL))
            entries.append((dummy_id, 4 * i, 4))
        else:
            p.set_linkage_var(t.id, 1)  # BTF_VAR_GLOBAL_ALLOCATED
            p.set_type(t.id, int_id)
            entries.append((v.type_id, 4 * i, 4))
    p.write_datasec(sec, 4 * len(sec.vars), entries)
    if not has_func:
        return bytes(p.buf)
    return _append_var(p, DUMMY_KSYM, int_id)


def _string_section_len(p: _Patcher) -> int:
    return struct.unpack_from(p.o + _HDR, p.buf, 0)[7]


def _append_var(p: _Patcher, name: str, type_id: int) -> bytes:
    """Append ``VAR name: type_id`` (GLOBAL_ALLOCATED) after the last type and its name to the strings."""
    o = p.o
    magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(o + _HDR, p.buf, 0)
    buf = bytes(p.buf)
    types = buf[hdr_len + type_off:hdr_len + type_off + type_len]
    strings = buf[hdr_len + str_off:hdr_len + str_off + str_len]
    var = struct.pack(o + "IIII", str_len, (int(Kind.VAR) << 24), type_id, 1)
    types += var
    strings += name.encode() + b"\0"
    header = struct.pack(o + _HDR, magic, version, flags, hdr_len, 0, len(types), len(types), len(strings))
    return header + buf[struct.calcsize(o + _HDR):hdr_len] + types + strings
