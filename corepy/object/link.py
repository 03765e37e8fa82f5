"""Link one program: append its subprograms, fix calls, carry func/line info, apply CO-RE
results and data/extern relocations — libbpf's ``bpf_object__relocate`` for one main program.

The result holds no file descriptors: :class:`MapRef` entries tell the loader which
``ld_imm64`` gets which map's fd in ``imm`` (``src_reg`` and value offsets are already set).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from .._records import field, record, replace
from ..asm.insn import (
    CALL_INSN, PSEUDO_BTF_ID, PSEUDO_CALL, PSEUDO_FUNC, PSEUDO_KFUNC_CALL, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, Insn,
)
from ..btf.ext import FuncInfo, LineInfo
from ..errors import ObjectError, RelocationError
from .spec import ExternKind, Function, ObjectSpec, ProgramSpec, RelocKind

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .core import CoreRecord
    from .externs import ResolvedExterns

__all__ = ["MapRef", "LinkedProgram", "link", "POISON_CALL_KFUNC_BASE", "FUNC_INFO", "LINE_INFO"]

FUNC_INFO = struct.Struct("<II")
"""``struct bpf_func_info``: insn_off, type_id."""
LINE_INFO = struct.Struct("<IIII")
"""``struct bpf_line_info``: insn_off, file_name_off, line_off, line_num << 10 | line_col."""

POISON_CALL_KFUNC_BASE = 2002000000
"""libbpf's immediate for calls of unresolved weak kfuncs: ``call unknown#2002000000+extern index``."""


@record(frozen=True, slots=True)
class MapRef:
    """``insns[insn]`` is an ld_imm64 that needs ``map``'s fd in its ``imm``."""

    insn: int
    map: str
    """Name of the :class:`~corepy.object.spec.MapSpec` (key of ``ObjectSpec.maps``)."""
    kind: str
    """``"fd"`` (BPF_PSEUDO_MAP_FD) or ``"value"`` (BPF_PSEUDO_MAP_VALUE)."""
    offset: int = 0
    """Byte offset into the map value (``"value"`` only; already written in ``insns[insn+1].imm``)."""


@record
class LinkedProgram:
    """Instructions ready for BPF_PROG_LOAD once map fds are patched in (see :meth:`patched`)."""

    name: str
    insns: list[Insn]
    func_info: list[FuncInfo]
    """``insn_off`` here is an INSTRUCTION index into :attr:`insns` (what the kernel wants)."""
    line_info: list[LineInfo]
    """``insn_off`` is an instruction index, as for :attr:`func_info`."""
    map_refs: list[MapRef]
    layout: list[tuple[str, int]] = field(default_factory=list)
    """(function name, first instruction index) of the program and each appended subprogram."""
    core: list[CoreRecord] = field(default_factory=list)
    """The CO-RE records applied, with ``insn`` still function-relative."""
    poisoned_kfuncs: list[tuple[int, str]] = field(default_factory=list)
    """(insn index, extern name) of calls to unresolved weak kfuncs."""

    def func_info_bytes(self) -> bytes:
        """:attr:`func_info` packed for BPF_PROG_LOAD (record size ``FUNC_INFO.size``)."""
        return b"".join(FUNC_INFO.pack(r.insn_off, r.type_id) for r in self.func_info)

    def line_info_bytes(self) -> bytes:
        """:attr:`line_info` packed for BPF_PROG_LOAD (record size ``LINE_INFO.size``); string
        offsets refer to the object's BTF."""
        return b"".join(LINE_INFO.pack(r.insn_off, r.file_name_off, r.line_off, (r.line_num << 10) | r.line_col)
                        for r in self.line_info)

    def patched(self, map_fds: dict[str, int]) -> list[Insn]:
        """A copy of :attr:`insns` with each :class:`MapRef` given its map's fd."""
        out = [i.copy() for i in self.insns]
        for ref in self.map_refs:
            try:
                out[ref.insn].imm = map_fds[ref.map]
            except KeyError:
                raise ObjectError(f"program {self.name!r}: no fd for map {ref.map!r}") from None
        return out


def link(obj: ObjectSpec, program: ProgramSpec | str, *, core: Sequence[CoreRecord] | None = None,
         externs: ResolvedExterns | None = None) -> LinkedProgram:
    """Link ``program`` of ``obj``. ``core``: records from :func:`relocate_core` (without them
    CO-RE relocations stay as compiled); ``externs``: from :func:`resolve_externs`, required when
    the program (or a subprogram it calls) uses externs."""
    prog = obj.program(program) if isinstance(program, str) else program
    return _Linker(obj, prog, core or (), externs).run()


class _Linker:
    def __init__(self, obj: ObjectSpec, prog: ProgramSpec, core: Sequence[CoreRecord],
                 externs: ResolvedExterns | None) -> None:
        self.obj, self.prog, self.externs = obj, prog, externs
        self.core: dict[tuple[str, int], list[CoreRecord]] = {}
        self.sec_index = {f.section: f.sec_index for f in obj.functions}
        for r in core:
            self.core.setdefault((r.section, r.program), []).append(r)
        self.order: list[Function] = []
        self.start: dict[int, int] = {}  # id(function) -> first index in the linked program
        self.insns: list[Insn] = []
        self.map_refs: list[MapRef] = []
        self.func_info: list[FuncInfo] | None = []
        self.line_info: list[LineInfo] | None = []
        self.applied: list[CoreRecord] = []
        self.poisoned: list[tuple[int, str]] = []

    def err(self, message: str) -> RelocationError:
        return RelocationError(f"prog {self.prog.name!r}: {message}")

    def run(self) -> LinkedProgram:
        main = self.prog.function
        self.append(main)
        self.reloc_code(main)
        return LinkedProgram(self.prog.name, self.insns, self.func_info or [], self.line_info or [],
                             self.map_refs, [(f.name, self.start[id(f)]) for f in self.order], self.applied,
                             self.poisoned)

    # --- code layout ------------------------------------------------------------
    def append(self, f: Function) -> None:
        """Copy ``f`` (CO-RE and data relocations applied) to the end of the program."""
        base = len(self.insns)
        self.start[id(f)] = base
        self.order.append(f)
        code = [i.copy() for i in f.insns]
        from ..btf.core import patch_insn

        for rec in self.core.get((f.section, f.name), ()):
            try:
                patch_insn(code, rec.insn, rec.relo, rec.result)
            except RelocationError as e:
                raise self.err(f"relo #{rec.index} in {f.name!r}: {e}") from None
            self.applied.append(rec)
        for i, r in f.relocs.items():
            self.reloc_data(f, code, i, r, base)
        self.insns.extend(code)
        self.ext_info(f, base)

    def reloc_code(self, f: Function) -> None:
        """libbpf's ``bpf_object__reloc_code``: append callees on first use, depth first, fix imm."""
        base = self.start[id(f)]
        for i, insn in enumerate(f.insns):
            r = f.relocs.get(i)
            is_call = insn.code == CALL_INSN and insn.src == PSEUDO_CALL
            is_func_addr = insn.is_ld_imm64 and (
                insn.src == PSEUDO_FUNC or (r is not None and r.kind is RelocKind.SUBPROG_ADDR))
            if not is_call and not is_func_addr:
                continue
            if r is not None and r.kind is RelocKind.EXTERN_CALL:
                continue
            if r is not None and r.kind not in (RelocKind.CALL, RelocKind.SUBPROG_ADDR):
                raise self.err(f"{f.name}: unexpected relocation {r.kind.value} for call insn #{i}")
            if r is not None:
                sec = self.sec_index.get(r.target, -1)
                if r.kind is RelocKind.CALL:
                    target = r.sym_off // 8 + insn.imm + 1
                else:
                    target = (r.sym_off + insn.imm) // 8
            elif is_func_addr:
                raise self.err(f"{f.name}: missing subprog address relocation for insn #{i}")
            else:
                sec, target = f.sec_index, f.offset + i + insn.imm + 1
            sub = self.obj.function_at(sec, target)
            if sub is None or sub.offset != target:
                raise self.err(f"{f.name}: insn #{i} calls instruction {target} of section "
                               f"{r.target if r else f.section!r}, which starts no function")
            if id(sub) not in self.start:
                self.append(sub)
                self.reloc_code(sub)
            self.insns[base + i].imm = self.start[id(sub)] - (base + i) - 1

    # --- .BTF.ext ----------------------------------------------------------------
    def ext_info(self, f: Function, base: int) -> None:
        """libbpf's ``reloc_prog_func_and_line_info``: records move to program instruction indices;
        without the main program's records, none are kept."""
        for attr in ("func_info", "line_info"):
            out = getattr(self, attr)
            if out is None:
                continue
            records = getattr(f, attr)
            if not records:
                if out:
                    raise self.err(f"missing .BTF.ext {attr.replace('_', ' ')} for subprogram {f.name!r}")
                setattr(self, attr, None)
                continue
            out.extend(replace(r, insn_off=r.insn_off // 8 - f.offset + base) for r in records)

    # --- data and extern relocations ------------------------------------------
    def reloc_data(self, f: Function, code: list[Insn], i: int, r, base: int) -> None:
        insn = code[i]
        kind = r.kind
        if kind is RelocKind.CALL:
            return  # reloc_code fixes the offset
        if kind is RelocKind.SUBPROG_ADDR:
            insn.src = PSEUDO_FUNC  # clang leaves src 0: marking callbacks is libbpf's job
            return
        if kind is RelocKind.MAP:
            insn.src, insn.imm = PSEUDO_MAP_FD, 0
            self.map_refs.append(MapRef(base + i, r.target, "fd"))
            return
        if kind is RelocKind.DATA:
            off = insn.imm + r.sym_off
            self._map_value(code, i, base, r.target, off)
            return
        ext = self.obj.externs.get(r.target)
        if ext is None:
            raise self.err(f"{f.name}: insn #{i}: unknown extern {r.target!r}")
        if self.externs is None:
            raise self.err(f"uses extern {ext.name!r}: call resolve_externs() and pass externs=")
        val = self.externs[ext.name]
        if kind is RelocKind.EXTERN_CALL:
            if val.resolved:
                insn.src, insn.imm, insn.off = PSEUDO_KFUNC_CALL, val.btf_id, 0
            else:
                code[i] = Insn(CALL_INSN, 0, 0, 0, POISON_CALL_KFUNC_BASE + ext.index)
                self.poisoned.append((base + i, ext.name))
            return
        if ext.kind is ExternKind.KCONFIG:
            self._map_value(code, i, base, ".kconfig", ext.offset)
        elif not ext.typeless and val.resolved and val.btf_id:
            insn.src, insn.imm = PSEUDO_BTF_ID, val.btf_id
            code[i + 1].imm = 0  # BTF object fd: 0 = vmlinux
        else:
            addr = int(val.value or 0) & 0xFFFFFFFFFFFFFFFF
            insn.imm = _s32(addr & 0xFFFFFFFF)
            code[i + 1].imm = _s32(addr >> 32)

    def _map_value(self, code: list[Insn], i: int, base: int, map_name: str, off: int) -> None:
        if i + 1 >= len(code):
            raise self.err(f"ld_imm64 at insn #{i} is truncated")
        code[i].src, code[i].imm = PSEUDO_MAP_VALUE, 0
        code[i + 1].imm = _s32(off)
        self.map_refs.append(MapRef(base + i, map_name, "value", off))


def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v
