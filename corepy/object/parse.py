"""Build an :class:`~corepy.object.spec.ObjectSpec` from a BPF ELF object, following libbpf's
``bpf_object__open`` rules (programs, subprograms, maps, global data, externs, relocations)."""

from __future__ import annotations

import mmap
import os

from ..asm.insn import CALL_INSN, LD_IMM64, PSEUDO_CALL, decode
from ..btf.ext import BTFExt
from ..btf.spec import BTF
from ..btf.types import (
    Array, Enum, Enum64, Func, FuncProto, Int, IntEncoding, Kind, Linkage, Ptr, Struct, Var,
)
from ..errors import BTFError, ObjectError
from ..syscalls.uapi import MapFlag, MapType, ProgFlag, ProgType
from .btf_prepare import DUMMY_KSYM, dummy_ksym_needed, prepare_btf
from .elf import (
    SHN_UNDEF, SHT_NOBITS, SHT_PROGBITS, STB_LOCAL, STT_FUNC, STT_SECTION, STV_HIDDEN, STV_INTERNAL,
    ElfObject, ElfSymbol, read_elf,
)
from .sections import SecFlag, parse_section
from .spec import (
    PIN_BY_NAME, PIN_NONE, ExternKind, ExternSpec, Function, KconfigType, MapSpec, ObjectSpec, ProgramSpec,
    Reloc, RelocKind, VariableSpec,
)

__all__ = ["parse_object", "internal_map_name", "object_name"]

OBJ_NAME_LEN = 16  # BPF_OBJ_NAME_LEN, including the NUL
MAP_IN_MAP = (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)
MAX_VALUE_SIZE = 1 << 30  # far above any kernel's limit; keeps corrupt sizes from allocating gigabytes


def object_name(path: str) -> str:
    """libbpf's default object name: the file's base name up to the first '.'."""
    return os.path.basename(path).split(".", 1)[0]


def internal_map_name(obj_name: str, real_name: str) -> str:
    """libbpf's ``internal_map_name``: ``<obj[:8]>.data``; ``.rodata.foo`` keeps no prefix."""
    sfx_len = max(7, len(real_name))
    pfx_len = 0 if "." in real_name[1:] else min(OBJ_NAME_LEN - sfx_len - 1, len(obj_name))
    name = (obj_name[:max(pfx_len, 0)] + real_name[:sfx_len])[:OBJ_NAME_LEN - 1]
    return "".join(c if c.isalnum() or c in "_." else "_" for c in name)


def parse_object(source: str | os.PathLike[str] | bytes, *, name: str | None = None,
                 path: str | None = None) -> ObjectSpec:
    """Parse a clang-built ``.bpf.o`` (a path or its bytes)."""
    elf = read_elf(source)
    path = path or elf.path
    if name is None:
        if isinstance(source, (bytes, bytearray, memoryview)):
            raise ObjectError("an object parsed from bytes needs a name", path=path)
        name = object_name(path)
    return _Parser(elf, path, name).run()


def _cstr(data: bytes) -> str:
    return data.split(b"\0", 1)[0].decode("utf-8", "replace")


class _Parser:
    def __init__(self, elf: ElfObject, path: str, name: str) -> None:
        self.elf = elf
        self.path = path
        self.name = name
        self.order = "little" if elf.little_endian else "big"
        self.by_index = {s.index: s for s in elf.sections}

    def err(self, message: str, section: str | None = None) -> ObjectError:
        return ObjectError(message, path=self.path, section=section)

    # --- top level ------------------------------------------------------------
    def run(self) -> ObjectSpec:
        elf = self.elf
        license_ = _cstr(elf.section("license").data) if elf.section("license") else ""
        version = 0
        vsec = elf.section("version")
        if vsec is not None:
            if len(vsec.data) != 4:
                raise self.err(f"invalid kver section size {len(vsec.data)}", "version")
            version = int.from_bytes(vsec.data, self.order)
        for unsupported in (".struct_ops", ".struct_ops.link"):
            if elf.section(unsupported) is not None:
                raise self.err(f"struct_ops maps (section {unsupported!r}) are not supported", unsupported)
        if any(s.name.startswith(".addr_space.") for s in elf.sections):
            raise self.err("BPF arena (.addr_space.*) globals are not supported")
        if elf.section("maps") is not None and elf.section("maps").size:
            raise self.err("legacy map definitions in 'maps' section are not supported; "
                           "use BTF-defined maps in SEC(\".maps\")", "maps")

        functions = self.functions()
        btf, ext = self.btf(functions)
        self.attach_ext_info(functions, ext)
        maps = self.maps(btf)
        externs = self.externs
        obj = ObjectSpec(self.name, self.path, btf, {}, maps, {}, {e.name: e for e in externs}, functions,
                         license_, version, self.prepared)
        self.relocations(obj)
        self.map_slots(obj)
        obj.programs = self.programs(functions, license_, version)
        self.check_slots(obj)
        obj.variables = self.variables(obj)
        return obj

    # --- code -----------------------------------------------------------------
    def functions(self) -> list[Function]:
        out: list[Function] = []
        for sec in self.elf.sections:
            if not sec.is_code:
                continue
            syms = sorted((s for s in self.elf.symbols if s.type == STT_FUNC and s.shndx == sec.index),
                          key=lambda s: s.value)
            for s in syms:
                if s.value % 8 or s.size % 8 or s.value + s.size > sec.size:
                    raise self.err(f"function {s.name!r} at {s.value:#x}+{s.size:#x} does not fit the section "
                                   f"({sec.size:#x} bytes) on 8-byte instruction boundaries", sec.name)
                if not s.size:
                    continue
                insns = decode(sec.data[s.value:s.value + s.size], self.order)
                is_program = sec.name != ".text" and s.bind != STB_LOCAL
                out.append(Function(s.name, sec.name, sec.index, s.value // 8, insns, is_program=is_program,
                                    hidden=s.visibility in (STV_HIDDEN, STV_INTERNAL) and s.bind != STB_LOCAL))
        return out

    def programs(self, functions: list[Function], license_: str, version: int) -> dict[str, ProgramSpec]:
        programs: dict[str, ProgramSpec] = {}
        for f in functions:
            if not f.is_program:
                continue
            if f.name in programs:
                raise self.err(f"duplicate program name {f.name!r}", f.section)
            try:
                sec = parse_section(f.section)
                prog_type, attach, attach_to = sec.prog_type, sec.expected_attach_type, sec.attach_to
                flags, autoload = sec.flags, sec.autoload
            except ObjectError:  # unknown SEC(): type left UNSPEC for the user to set, as libbpf does
                bare = f.section.lstrip("?")
                prog_type, attach, attach_to, flags = ProgType.UNSPEC, None, None, SecFlag.NONE
                autoload = not f.section.startswith("?")
                sec = None
            programs[f.name] = ProgramSpec(
                f.name, sec.name if sec else bare, prog_type, attach, attach_to,
                sleepable=bool(flags & SecFlag.SLEEPABLE), autoload=autoload, license=license_,
                kern_version=version, section_flags=flags, function=f,
                prog_flags=int(ProgFlag.XDP_HAS_FRAGS) if flags & SecFlag.XDP_FRAGS else 0)
        return programs

    # --- BTF ------------------------------------------------------------------
    def btf(self, functions: list[Function]) -> tuple[BTF | None, BTFExt | None]:
        self.externs: list[ExternSpec] = []
        self.prepared: bytes | None = None
        sec = self.elf.section(".BTF")
        if sec is None:
            if any(s.is_extern for s in self.elf.symbols if s.name):
                raise self.err("externs need BTF: the object has no .BTF section (build with clang -g)")
            return None, None
        raw = sec.data
        btf0 = BTF.from_bytes(raw, source=f"{self.path}:.BTF")
        ext_sec = self.elf.section(".BTF.ext")
        ext = BTFExt.from_bytes(ext_sec.data, btf0, source=f"{self.path}:.BTF.ext") if ext_sec else None
        dummy = len(btf0) if dummy_ksym_needed(btf0) else 0
        self.externs = self.collect_externs(btf0)
        kcfg = {e.name: e.offset for e in self.externs if e.kind is ExternKind.KCONFIG}
        hidden = {f.name for f in functions if f.hidden}
        self.prepared = prepare_btf(raw, btf0, self.elf, kcfg, hidden)
        btf = BTF.from_bytes(self.prepared, source=f"{self.path}:.BTF")
        if dummy and not (isinstance(btf[dummy], Var) and btf[dummy].name == DUMMY_KSYM):
            raise self.err("internal error: dummy ksym var misplaced")
        btf.ext = ext
        return btf, ext

    def attach_ext_info(self, functions: list[Function], ext: BTFExt | None) -> None:
        if ext is None:
            return
        by_sec: dict[str, list[Function]] = {}
        for f in functions:
            by_sec.setdefault(f.section, []).append(f)

        def owner(sec: str, byte_off: int) -> Function | None:
            idx = byte_off // 8
            for f in by_sec.get(sec, ()):
                if f.offset <= idx < f.offset + len(f.insns):
                    return f
            return None

        for attr, table in (("func_info", ext.func_info), ("line_info", ext.line_info),
                            ("core_relos", ext.core_relos)):
            for sec, records in table.items():
                if sec not in by_sec:
                    if attr == "core_relos" and records:
                        raise self.err(f".BTF.ext has CO-RE relocations for unknown section {sec!r}")
                    continue
                for r in records:
                    f = owner(sec, r.insn_off)
                    if f is not None:  # records of eliminated weak functions are ignored, as libbpf does
                        getattr(f, attr).append(r)

    # --- externs --------------------------------------------------------------
    def collect_externs(self, btf: BTF) -> list[ExternSpec]:
        """libbpf's ``bpf_object__collect_externs``: sorted, kconfig offsets assigned."""
        out: list[ExternSpec] = []
        self.kconfig_size = 0
        externs = [sym for sym in self.elf.symbols if sym.is_extern and sym.name]
        if not externs:
            return out
        ext_types: dict[str, tuple[int, str]] = {}
        sections = sorted(btf.find(".kconfig", Kind.DATASEC) + btf.find(".ksyms", Kind.DATASEC), key=lambda t: t.id)
        for t in sections:
            for v in t.vars:  # type: ignore[union-attr]
                ext_types.setdefault(btf[v.type_id].name, (v.type_id, t.name))
        for sym in externs:
            found = ext_types.get(sym.name)
            if found is None:
                t = next((t for t in btf.find(sym.name) if isinstance(t, (Var, Func))), None)
                if t is None:
                    raise self.err(f"failed to find BTF for extern {sym.name!r}")
                raise self.err(f"extern {sym.name!r} is in no .kconfig/.ksyms section "
                               "(declare it with __kconfig or __ksym)")
            btf_id, sec_name = found
            t = btf[btf_id]
            weak = sym.bind == 2
            if sec_name == ".kconfig":
                if isinstance(t, Func):
                    raise self.err(f"extern function {t.name} is unsupported under .kconfig section")
                try:
                    size = btf.resolve_size(t.type_id)
                    align = btf.alignment(t.type_id)
                except BTFError as e:
                    raise self.err(f"extern (kcfg) {t.name!r}: {e}") from None
                ktype, signed = _kcfg_type(btf, t.type_id)
                if ktype is KconfigType.UNKNOWN:
                    raise self.err(f"extern (kcfg) {t.name!r}: type is unsupported")
                out.append(ExternSpec(t.name, ExternKind.KCONFIG, weak, btf_id,
                                      btf.skip_mods_and_typedefs(t.type_id).id, size, align, ktype, signed))
            else:
                if isinstance(t, Func):
                    out.append(ExternSpec(t.name, ExternKind.KSYM, weak, btf_id,
                                          btf.skip_mods_and_typedefs(t.type_id).id, is_func=True))
                else:
                    target = btf.skip_mods_and_typedefs(t.type_id)
                    out.append(ExternSpec(t.name, ExternKind.KSYM, weak, btf_id, target.id))
        out.sort(key=lambda e: (0 if e.kind is ExternKind.KCONFIG else 1,
                                -e.align if e.kind is ExternKind.KCONFIG else 0,
                                e.size if e.kind is ExternKind.KCONFIG else 0, e.name))
        off = 0
        for i, e in enumerate(out):
            e.index = i
            if e.kind is ExternKind.KCONFIG:
                e.offset = -(-off // e.align) * e.align
                off = e.offset + e.size
        self.kconfig_size = off
        return out

    # --- maps -----------------------------------------------------------------
    def maps(self, btf: BTF | None) -> dict[str, MapSpec]:
        maps: dict[str, MapSpec] = {}
        sec = self.elf.section(".maps")
        if sec is not None:
            if btf is None:
                raise self.err("BTF-defined maps need BTF: the object has no .BTF section", ".maps")
            found = btf.find(".maps", Kind.DATASEC)
            if not found:
                raise self.err("DATASEC '.maps' not found in BTF", ".maps")
            for v in found[0].vars:
                m = self.btf_map(btf, btf[v.type_id], v.offset, v.size)
                maps[m.name] = m
        for s in self.elf.sections:
            kind = _data_kind(s)
            if kind is None or not s.size:
                continue
            maps[s.name] = self.data_map(btf, s.name, kind, s.size, s.data)
        if any(e.kind is ExternKind.KCONFIG for e in self.externs):
            maps[".kconfig"] = self.data_map(btf, ".kconfig", "kconfig", self.kconfig_size, b"")
        return maps

    def data_map(self, btf: BTF | None, sec_name: str, kind: str, size: int, data: bytes) -> MapSpec:
        value_type_id = 0
        mmapable = False
        if btf is not None:
            found = btf.find(sec_name, Kind.DATASEC)
            if found:
                value_type_id = found[0].id
                mmapable = any(isinstance(btf[v.type_id], Var) and btf[v.type_id].linkage != Linkage.STATIC
                               for v in found[0].vars)
        flags = MapFlag.RDONLY_PROG if kind in ("rodata", "kconfig") else MapFlag(0)
        if mmapable:
            flags |= MapFlag.MMAPABLE
        if size > MAX_VALUE_SIZE:
            raise self.err(f"section {sec_name!r} of {size} bytes is too big for a map value", sec_name)
        init = bytearray(data) if kind in ("data", "rodata") else bytearray(size)
        return MapSpec(sec_name, MapType.ARRAY, 4, size, 1, int(flags), value_type_id=value_type_id, data=init,
                       kernel_name=internal_map_name(self.name, sec_name), section=sec_name, internal=True)

    def btf_map(self, btf: BTF, var, offset: int, size: int) -> MapSpec:
        if not isinstance(var, Var):
            raise self.err(f"DATASEC .maps entry [{var.id}] is a {var.kind.name}, not a VAR", ".maps")
        name = var.name
        if var.linkage not in (Linkage.GLOBAL, Linkage.STATIC):
            raise self.err(f"map {name!r}: unsupported map linkage {var.linkage.name}", ".maps")
        d = btf.skip_mods_and_typedefs(var.type_id)
        if not isinstance(d, Struct):
            raise self.err(f"map {name!r}: unexpected def kind {d.kind.name}", ".maps")
        if d.size > size:
            raise self.err(f"map {name!r}: invalid def size", ".maps")
        m = self.map_def(btf, name, d, inner=False)
        m.section, m.section_offset = ".maps", offset
        m.kernel_name = _kernel_map_name(name)
        return m

    def map_def(self, btf: BTF, name: str, d: Struct, inner: bool) -> MapSpec:
        """libbpf's ``parse_btf_map_def`` (strict mode: unknown members are errors)."""
        m = MapSpec(name, MapType.UNSPEC, 0, 0, 0)
        m_type = None
        for i, mem in enumerate(d.members):
            field = mem.name
            if field == "type":
                m_type = self.map_int(btf, name, mem)
            elif field == "max_entries":
                m.max_entries = self.map_int(btf, name, mem)
            elif field == "map_flags":
                m.flags = self.map_int(btf, name, mem)
            elif field == "numa_node":
                m.numa_node = self.map_int(btf, name, mem)
            elif field in ("key_size", "value_size"):
                sz = self.map_int(btf, name, mem)
                self._set_size(m, name, field, sz)
            elif field in ("key", "value"):
                t = btf[mem.type_id]
                if not isinstance(t, Ptr):
                    raise self.err(f"map {name!r}: {field} spec is not PTR: {t.kind.name}", ".maps")
                try:
                    sz = btf.resolve_size(t.type_id)
                except BTFError as e:
                    raise self.err(f"map {name!r}: can't determine {field} size for type [{t.type_id}]: {e}",
                                   ".maps") from None
                self._set_size(m, name, f"{field}_size", sz)
                setattr(m, f"{field}_type_id", t.type_id)
            elif field == "values":
                is_mim = m_type in MAP_IN_MAP
                is_prog_array = m_type == MapType.PROG_ARRAY
                desc = "map-in-map inner" if is_mim else "prog-array value"
                if inner:
                    raise self.err(f"map {name!r}: multi-level inner maps not supported", ".maps")
                if i != len(d.members) - 1:
                    raise self.err(f"map {name!r}: '{field}' member should be last", ".maps")
                if not is_mim and not is_prog_array:
                    raise self.err(f"map {name!r}: should be map-in-map or prog-array", ".maps")
                if m.value_size and m.value_size != 4:
                    raise self.err(f"map {name!r}: conflicting value size {m.value_size} != 4", ".maps")
                m.value_size = 4
                t = btf[mem.type_id]
                if not isinstance(t, Array):
                    raise self.err(f"map {name!r}: {desc} type isn't an array", ".maps")
                if t.nelems:
                    raise self.err(f"map {name!r}: {desc} array length must be 0", ".maps")
                t = btf.skip_mods_and_typedefs(t.type_id)
                if not isinstance(t, Ptr):
                    raise self.err(f"map {name!r}: {desc} def is of unexpected kind {t.kind.name}", ".maps")
                t = btf.skip_mods_and_typedefs(t.type_id)
                if is_prog_array:
                    if not isinstance(t, FuncProto):
                        raise self.err(f"map {name!r}: prog-array value def is of unexpected kind "
                                       f"{t.kind.name}", ".maps")
                    continue
                if not isinstance(t, Struct):
                    raise self.err(f"map {name!r}: map-in-map inner def is of unexpected kind {t.kind.name}",
                                   ".maps")
                m.inner = self.map_def(btf, f"{name}.inner", t, inner=True)
                m.inner.kernel_name = _kernel_map_name(m.inner.name)
            elif field == "pinning":
                if inner:
                    raise self.err(f"map {name!r}: inner def can't be pinned", ".maps")
                val = self.map_int(btf, name, mem)
                if val not in (PIN_NONE, PIN_BY_NAME):
                    raise self.err(f"map {name!r}: invalid pinning value {val}", ".maps")
                m.pinning = val
            elif field == "map_extra":
                m.map_extra = self.map_int(btf, name, mem, wide=True)
            else:
                raise self.err(f"map {name!r}: unknown field {field!r}", ".maps")
        if not m_type:
            raise self.err(f"map {name!r}: map type isn't specified", ".maps")
        try:
            m.type = MapType(m_type)
        except ValueError:
            m.type = m_type  # a map type newer than our table: pass the number through
        if m.type in (MapType.RINGBUF, MapType.USER_RINGBUF):
            m.max_entries = _adjust_ringbuf_size(m.max_entries)
        return m

    @staticmethod
    def _set_size(m: MapSpec, name: str, attr: str, sz: int) -> None:
        cur = getattr(m, attr)
        if cur and cur != sz:
            raise ObjectError(f"map {name!r}: conflicting {attr.replace('_', ' ')} {cur} != {sz}", section=".maps")
        setattr(m, attr, sz)

    def map_int(self, btf: BTF, map_name: str, mem, wide: bool = False) -> int:
        """``__uint(name, val)`` is ``int (*name)[val]``; ``__ulong`` a pointer to an enum of ``val``."""
        t = btf.skip_mods_and_typedefs(mem.type_id)
        if not isinstance(t, Ptr):
            raise self.err(f"map {map_name!r}: attr {mem.name!r}: expected PTR, got {t.kind.name}", ".maps")
        arr = btf.skip_mods_and_typedefs(t.type_id)
        if isinstance(arr, Array):
            return arr.nelems
        if wide and isinstance(arr, (Enum, Enum64)) and len(arr.values) == 1:
            return arr.values[0].value & 0xFFFFFFFFFFFFFFFF
        raise self.err(f"map {map_name!r}: attr {mem.name!r}: type [{t.type_id}] is {arr.kind.name}, "
                       "not an ARRAY", ".maps")

    def map_slots(self, obj: ObjectSpec) -> None:
        """``.rel.maps``: initial values of map-in-map and prog-array slots (libbpf's
        ``bpf_object__collect_map_relos``); prog-array targets are checked in :meth:`check_slots`."""
        self.prog_slots: dict[tuple[str, int], ElfSymbol] = {}
        sec = self.elf.section(".maps")
        relocs = self.elf.relocs.get(sec.index, []) if sec is not None else []
        if not relocs:
            return
        btf = obj.btf
        secinfos = {btf[v.type_id].name: v for v in btf.find(".maps", Kind.DATASEC)[0].vars}
        btf_maps = [(m, secinfos[m.name]) for m in obj.maps.values() if m.section == ".maps"]
        for i, r in enumerate(relocs):
            name = r.symbol.name
            hit = next(((m, vi) for m, vi in btf_maps if vi.offset <= r.offset and r.offset + 8 <= vi.offset + vi.size),
                       None)
            if hit is None:
                raise self.err(f".maps relo #{i}: cannot find map {name!r} at offset {r.offset}", ".maps")
            m, vi = hit
            if m.type in MAP_IN_MAP:
                if r.symbol.shndx != sec.index:
                    raise self.err(f".maps relo #{i}: {name!r} isn't a BTF-defined map", ".maps")
                if m.type == MapType.HASH_OF_MAPS and m.key_size != 4:
                    raise self.err(f".maps relo #{i}: hash-of-maps {m.name!r} should have key size 4", ".maps")
                if name not in obj.maps:
                    raise self.err(f".maps relo #{i}: {name!r} isn't a valid map reference", ".maps")
            elif m.type != MapType.PROG_ARRAY:
                raise self.err(f".maps relo #{i}: map {m.name!r} of type {m.type!r} takes no initial values",
                               ".maps")
            d = btf.skip_mods_and_typedefs(btf[vi.type_id].type_id)
            last = d.members[-1] if isinstance(d, Struct) and d.members else None
            if last is None or last.name != "values":
                raise self.err(f".maps relo #{i}: map {m.name!r} has no trailing 'values' member", ".maps")
            moff = r.offset - vi.offset - last.bit_offset // 8
            if moff < 0 or moff % 8:
                raise self.err(f".maps relo #{i}: bad slot offset {moff} in map {m.name!r}", ".maps")
            m.values[moff // 8] = name
            if m.type == MapType.PROG_ARRAY:
                self.prog_slots[(m.name, moff // 8)] = r.symbol

    def check_slots(self, obj: ObjectSpec) -> None:
        for (map_name, slot), sym in self.prog_slots.items():
            p = obj.programs.get(sym.name)
            if p is None:
                raise self.err(f".maps: {sym.name!r} in prog-array {map_name!r} isn't a valid program reference",
                               ".maps")
            if p.function.sec_index != sym.shndx or p.function.offset * 8 != sym.value:
                raise self.err(f".maps: {sym.name!r} in prog-array {map_name!r} isn't an entry-point program",
                               ".maps")

    # --- relocations ----------------------------------------------------------
    def relocations(self, obj: ObjectSpec) -> None:
        code_secs = {f.sec_index for f in obj.functions}
        maps_shndx = self.elf.section(".maps").index if self.elf.section(".maps") else -1
        data_maps = {self.elf.section(m.section).index: m for m in obj.maps.values()
                     if m.internal and m.name != ".kconfig"}
        map_at = {m.section_offset: m for m in obj.maps.values() if m.section == ".maps"}
        for sec_index in sorted(code_secs):
            sec = self.by_index[sec_index]
            for r in self.elf.relocs.get(sec_index, ()):
                if r.offset % 8:
                    raise self.err(f"relocation at {r.offset:#x} is not on an instruction boundary", sec.name)
                idx = r.offset // 8
                f = obj.function_at(sec_index, idx)
                if f is None:
                    continue  # instruction of an eliminated weak subprogram, as libbpf skips
                i = idx - f.offset
                insn = f.insns[i]
                sym = r.symbol
                where = f"{f.name}: insn #{i}"
                if insn.code not in (CALL_INSN, LD_IMM64):
                    raise self.err(f"{where}: invalid relocation against {sym.name!r} for instruction code "
                                   f"{insn.code:#x}", sec.name)
                if sym.is_extern:
                    if sym.name not in obj.externs:
                        raise self.err(f"{where}: extern relocation failed to find extern {sym.name!r}", sec.name)
                    kind = RelocKind.EXTERN_CALL if insn.code == CALL_INSN else RelocKind.EXTERN_LD64
                    f.relocs[i] = Reloc(kind, i, sym.name, sym.name)
                    continue
                if insn.code == CALL_INSN:
                    if insn.src != PSEUDO_CALL:
                        raise self.err(f"{where}: incorrect bpf_call opcode (src {insn.src})", sec.name)
                    if sym.shndx not in code_secs:
                        raise self.err(f"{where}: bad call relocation against {sym.name!r} in section "
                                       f"{self._sec_name(sym.shndx)!r}", sec.name)
                    if sym.value % 8:
                        raise self.err(f"{where}: bad call relocation against {sym.name!r} at offset {sym.value}",
                                       sec.name)
                    f.relocs[i] = Reloc(RelocKind.CALL, i, sym.name, self.by_index[sym.shndx].name, sym.value)
                    continue
                if sym.shndx == SHN_UNDEF or sym.shndx >= 0xFF00:
                    raise self.err(f"{where}: invalid relocation against {sym.name!r} in special section "
                                   f"{sym.shndx:#x}; forgot to initialize global var?", sec.name)
                if sym.shndx in code_secs and (
                        (sym.bind == STB_LOCAL and sym.type == STT_SECTION) or sym.type == STT_FUNC):
                    if sym.value % 8 or insn.imm % 8:
                        raise self.err(f"{where}: bad subprog address relocation against {sym.name!r} at "
                                       f"offset {sym.value}+{insn.imm}", sec.name)
                    f.relocs[i] = Reloc(RelocKind.SUBPROG_ADDR, i, sym.name, self.by_index[sym.shndx].name,
                                        sym.value)
                    continue
                if sym.shndx == maps_shndx:
                    m = map_at.get(sym.value)
                    if m is None:
                        raise self.err(f"{where}: map relocation failed to find map for section '.maps', "
                                       f"offset {sym.value}", sec.name)
                    f.relocs[i] = Reloc(RelocKind.MAP, i, sym.name, m.name)
                    continue
                m = data_maps.get(sym.shndx)
                if m is None:
                    raise self.err(f"{where}: bad data relocation against {sym.name!r} in section "
                                   f"{self._sec_name(sym.shndx)!r}", sec.name)
                f.relocs[i] = Reloc(RelocKind.DATA, i, sym.name, m.name, sym.value)

    def _sec_name(self, shndx: int) -> str:
        s = self.by_index.get(shndx)
        return s.name if s else f"#{shndx}"

    # --- variables ------------------------------------------------------------
    def variables(self, obj: ObjectSpec) -> dict[str, VariableSpec]:
        out: dict[str, VariableSpec] = {}
        btf = obj.btf
        if btf is None:
            return out
        for m in obj.maps.values():
            if not m.internal or m.name == ".kconfig" or not m.value_type_id:
                continue
            sec = btf[m.value_type_id]
            for v in sec.vars:
                var = btf[v.type_id]
                if not isinstance(var, Var) or not var.name:
                    continue
                name = var.name if var.name not in out else f"{m.name}:{var.name}"
                out[name] = VariableSpec(var.name, m.name, v.offset, v.size, var.type_id, int(var.linkage), obj)
        return out


def _kernel_map_name(name: str) -> str:
    return name[:OBJ_NAME_LEN - 1]


def _data_kind(s) -> str | None:
    """libbpf's data section classes: ``.data*``, ``.rodata*`` (PROGBITS), ``.bss*`` (NOBITS)."""
    n = s.name
    if s.type == SHT_PROGBITS and not s.is_code:
        if n == ".data" or n.startswith(".data."):
            return "data"
        if n == ".rodata" or n.startswith(".rodata."):
            return "rodata"
    if s.type == SHT_NOBITS and (n == ".bss" or n.startswith(".bss.")):
        return "bss"
    return None


def _kcfg_type(btf: BTF, type_id: int) -> tuple[KconfigType, bool]:
    """libbpf's ``find_kcfg_type``: (kind, signed)."""
    t = btf.skip_mods_and_typedefs(type_id)
    if isinstance(t, Int):
        if t.encoding & IntEncoding.BOOL:
            return (KconfigType.BOOL if t.size == 1 else KconfigType.UNKNOWN), False
        if t.size == 1:
            return KconfigType.CHAR, t.signed
        if t.size not in (2, 4, 8):
            return KconfigType.UNKNOWN, False
        return KconfigType.INT, t.signed
    if isinstance(t, Enum):
        ok = t.size == 4 and t.name == "libbpf_tristate"
        return (KconfigType.TRISTATE if ok else KconfigType.UNKNOWN), False
    if isinstance(t, Enum64):
        return (KconfigType.TRISTATE if t.name == "libbpf_tristate" else KconfigType.UNKNOWN), False
    if isinstance(t, Array):
        if t.nelems and _kcfg_type(btf, t.type_id)[0] is KconfigType.CHAR:
            return KconfigType.CHAR_ARR, False
    return KconfigType.UNKNOWN, False


def _adjust_ringbuf_size(size: int) -> int:
    """libbpf's ``adjust_ringbuf_sz``: round up to a power-of-2 multiple of the page size."""
    page = mmap.PAGESIZE
    if size == 0:
        return 0
    if size % page == 0 and ((size // page) & (size // page - 1)) == 0:
        return size
    mul = 1
    while mul * page <= 0xFFFFFFFF:
        if mul * page > size:
            return mul * page
        mul <<= 1
    return size
