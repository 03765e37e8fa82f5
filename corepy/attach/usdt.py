"""USDT probes for programs built with libbpf's ``<bpf/usdt.bpf.h>`` (``SEC("usdt/...")``).

As libbpf does: find the probe sites in the target's ``.note.stapsdt``, turn each site's
argument string (``-4@-8(%rbp)``) into an argument spec, store the specs in the object's
``__bpf_usdt_specs`` map, and attach a uprobe (with the semaphore as its reference
counter) per site whose BPF cookie is the spec's index. Needs BPF cookies (kernel 5.15+).
"""

from __future__ import annotations

import ctypes
import os
import platform
import re
import struct
import threading

from .._records import record
from ..errors import NotSupportedError, ObjectError
from ..links import Link, LinkInfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..programs import Program

__all__ = ["UsdtArgSpec", "UsdtSpec", "UsdtLink", "parse_usdt_args", "attach_usdt", "SPECS_MAP"]

SPECS_MAP = "__bpf_usdt_specs"
MAX_ARGS = 12  # BPF_USDT_MAX_ARG_CNT
ARG_CONST, ARG_REG, ARG_REG_DEREF = 0, 1, 2  # enum __bpf_usdt_arg_type


class UsdtArgSpec(ctypes.Structure):
    """``struct __bpf_usdt_arg_spec`` (usdt.bpf.h)."""

    _fields_ = [("val_off", ctypes.c_uint64), ("arg_type", ctypes.c_int32), ("reg_off", ctypes.c_int16),
                ("arg_signed", ctypes.c_bool), ("arg_bitshift", ctypes.c_int8)]


class UsdtSpec(ctypes.Structure):
    """``struct __bpf_usdt_spec`` (usdt.bpf.h): the value type of ``__bpf_usdt_specs``."""

    _fields_ = [("args", UsdtArgSpec * MAX_ARGS), ("usdt_cookie", ctypes.c_uint64), ("arg_cnt", ctypes.c_int16)]


@record(frozen=True, slots=True)
class Arg:
    """One parsed USDT argument: ``kind`` ARG_CONST/ARG_REG/ARG_REG_DEREF, ``register`` the
    kernel ``struct pt_regs`` member, ``offset`` the constant or dereference offset."""

    size: int
    signed: bool
    kind: int
    register: str | None
    offset: int


# x86-64 register names (all widths) -> struct pt_regs member
_X86_REGS = {}
for _full, _names in {"ip": "rip eip", "sp": "rsp esp sp spl", "bp": "rbp ebp bp bpl", "ax": "rax eax ax al",
                      "bx": "rbx ebx bx bl", "cx": "rcx ecx cx cl", "dx": "rdx edx dx dl",
                      "si": "rsi esi si sil", "di": "rdi edi di dil"}.items():
    for _n in _names.split():
        _X86_REGS[_n] = _full
for _i in range(8, 16):
    for _n in (f"r{_i}", f"r{_i}d", f"r{_i}w", f"r{_i}b"):
        _X86_REGS[_n] = f"r{_i}"

_X86_ARG = [  # libbpf's sscanf formats for x86-64, in its order
    (re.compile(r"^(-?\d+)@(-?\d+)\(%(\w+)\)$"), ARG_REG_DEREF),
    (re.compile(r"^(-?\d+)@\(%(\w+)\)$"), ARG_REG_DEREF),
    (re.compile(r"^(-?\d+)@%(\w+)$"), ARG_REG),
    (re.compile(r"^(-?\d+)@\$(-?\d+)$"), ARG_CONST),
]
_ARM64_ARG = [
    (re.compile(r"^(-?\d+)@\[\s*(\w+)\s*,\s*(-?\d+)\s*\]$"), ARG_REG_DEREF),
    (re.compile(r"^(-?\d+)@\[\s*(\w+)\s*\]$"), ARG_REG_DEREF),
    (re.compile(r"^(-?\d+)@(-?\d+)$"), ARG_CONST),
    (re.compile(r"^(-?\d+)@(\w+)$"), ARG_REG),
]


def _register(name: str, machine: str) -> str:
    if machine == "x86_64":
        reg = _X86_REGS.get(name)
    elif machine == "aarch64":
        reg = name if name in ("sp", "pc") else (f"regs[{name[1:]}]" if re.fullmatch(r"x([0-9]|[12][0-9]|30)", name)
                                                else None)
    else:
        raise NotSupportedError(f"USDT arguments on {machine}", "only x86_64 and aarch64 are implemented")
    if reg is None:
        raise ObjectError(f"unknown register {name!r} in USDT argument")
    return reg


def parse_usdt_args(text: str, machine: str | None = None) -> list[Arg]:
    """Parse a ``.note.stapsdt`` argument string (``"-4@%eax 8@-16(%rbp) 4@$3"``)."""
    machine = machine or platform.machine()
    table = _X86_ARG if machine == "x86_64" else _ARM64_ARG
    args: list[Arg] = []
    for item in text.split() if machine == "x86_64" else re.findall(r"-?\d+@(?:\[[^\]]*\]|\S+)", text):
        for pattern, kind in table:
            m = pattern.match(item)
            if m:
                break
        else:
            raise ObjectError(f"unrecognized USDT argument {item!r} in {text!r}")
        size = int(m.group(1))
        if abs(size) not in (1, 2, 4, 8):
            raise ObjectError(f"USDT argument {item!r} has unsupported size {size}")
        if kind == ARG_CONST:
            register, offset = None, int(m.group(2))
        elif machine == "x86_64":
            register = _register(m.groups()[-1], machine)
            offset = int(m.group(2)) if m.lastindex == 3 else 0
        else:
            register = _register(m.group(2), machine)
            offset = int(m.group(3)) if m.lastindex == 3 else 0
        args.append(Arg(abs(size), size < 0, kind, register, offset))
    if len(args) > MAX_ARGS:
        raise ObjectError(f"USDT probe has {len(args)} arguments (usdt.bpf.h handles {MAX_ARGS})")
    return args


def _pt_regs_offsets() -> dict[str, int]:
    """Byte offset of each ``struct pt_regs`` member in the running kernel (from its BTF)."""
    from ..btf import BTF
    from ..btf.types import Kind

    kernel = BTF.kernel()
    regs = kernel.find_one("pt_regs", Kind.STRUCT)
    out = {}
    for m in regs.members:
        out[m.name] = m.bit_offset // 8
        target = kernel.skip_mods_and_typedefs(m.type_id)
        if target.kind == Kind.ARRAY:  # aarch64: u64 regs[31]
            for i in range(target.nelems):
                out[f"{m.name}[{i}]"] = m.bit_offset // 8 + 8 * i
    return out


def build_spec(args: list[Arg], cookie: int) -> UsdtSpec:
    """The ``__bpf_usdt_spec`` value for one probe site's arguments."""
    offsets = _pt_regs_offsets()
    spec = UsdtSpec(usdt_cookie=cookie & (2**64 - 1), arg_cnt=len(args))
    for slot, arg in zip(spec.args, args):
        slot.arg_type = arg.kind
        slot.val_off = arg.offset & (2**64 - 1)
        if arg.register is not None:
            try:
                slot.reg_off = offsets[arg.register]
            except KeyError:
                raise ObjectError(f"the kernel's struct pt_regs has no {arg.register!r}") from None
        slot.arg_signed = arg.signed
        slot.arg_bitshift = 64 - 8 * arg.size
    return spec


class _SpecIds:
    """Free slots of each ``__bpf_usdt_specs`` map (by kernel map id), shared by its programs."""

    def __init__(self) -> None:
        self._used: dict[int, set[int]] = {}
        self._lock = threading.Lock()

    def take(self, map_id: int, capacity: int) -> int:
        with self._lock:
            used = self._used.setdefault(map_id, set())
            for i in range(capacity):
                if i not in used:
                    used.add(i)
                    return i
        raise ObjectError(f"all {capacity} USDT spec slots are in use (raise BPF_USDT_MAX_SPEC_CNT)")

    def free(self, map_id: int, ids: list[int]) -> None:
        with self._lock:
            self._used.get(map_id, set()).difference_update(ids)


SPEC_IDS = _SpecIds()


class UsdtLink(Link):
    """All uprobe links of one USDT attachment (one per probe site); closing it detaches
    them all and frees their spec slots."""

    def __init__(self, links: list[Link], *, program: Program, target: str, map_id: int, spec_ids: list[int]):
        super().__init__(None, program=program, target=target)
        self.links = links
        self._map_id, self._spec_ids = map_id, spec_ids

    @property
    def fd(self) -> int:
        raise NotSupportedError("one fd for a USDT attachment", f"it is {len(self.links)} uprobe links: see .links")

    @property
    def closed(self) -> bool:
        return not self.links

    def close(self) -> None:
        links, self.links = self.links, []
        for link in links:
            link.close()
        if links:
            SPEC_IDS.free(self._map_id, self._spec_ids)

    def detach(self) -> None:
        self.close()

    def update(self, program: Program, *, expected: Program | None = None) -> None:
        raise NotSupportedError("BPF_LINK_UPDATE of USDT attachments", "perf_event links cannot be updated")

    def pin(self, path: str) -> None:
        raise NotSupportedError("pinning USDT attachments", "pin each of .links instead")

    def info(self) -> LinkInfo:
        return self.links[0].info()


def attach_usdt(program: Program, binary: str, provider: str, name: str, *, pid: int = -1,
                cookie: int = 0) -> UsdtLink:
    """Attach a ``usdt.bpf.h`` program to every site of USDT probe ``provider:name`` in
    ``binary`` (a path, an executable on PATH, or a library name); ``cookie`` is what
    ``bpf_usdt_cookie()`` returns in the program."""
    from ..syscalls import features
    from ..syscalls.maps import map_update_elem
    from ..syscalls.objects import map_info
    from ..uprobe import resolve_binary, usdt_notes
    from .probes import attach_uprobe_offset

    specs = program.usdt_specs
    if specs is None:
        raise ObjectError(f"program {program.name!r} does not use {SPECS_MAP!r}: build it with <bpf/usdt.bpf.h> "
                          "and BPF_USDT()")
    if not features.has_bpf_cookie():
        raise NotSupportedError("BPF cookies (needed for USDT)", features.feature_reason("bpf_cookie"))
    path = os.path.realpath(resolve_binary(binary))
    notes = usdt_notes(path, provider, name)
    if not notes:
        raise ObjectError(f"no USDT probe {provider}:{name} in .note.stapsdt", path=path)
    info = map_info(specs)
    if info.value_size != ctypes.sizeof(UsdtSpec):
        raise ObjectError(f"{SPECS_MAP} values are {info.value_size} bytes, not the {ctypes.sizeof(UsdtSpec)} of "
                          "the usdt.bpf.h layout corepy knows")
    links: list[Link] = []
    ids: list[int] = []
    by_args: dict[str, int] = {}
    try:
        for note in notes:
            spec_id = by_args.get(note.args)
            if spec_id is None:
                spec_id = SPEC_IDS.take(info.id, info.max_entries)
                ids.append(spec_id)
                by_args[note.args] = spec_id
                spec = build_spec(parse_usdt_args(note.args), cookie)
                map_update_elem(specs, struct.pack("<i", spec_id), bytes(spec))
            links.append(attach_uprobe_offset(program, path, note.ip_offset, pid=pid, cookie=spec_id,
                                              ref_ctr_offset=note.sema_offset,
                                              what=f"usdt {provider}:{name} @ {note.ip_offset:#x}"))
    except BaseException:
        for link in links:
            link.close()
        SPEC_IDS.free(info.id, ids)
        raise
    return UsdtLink(links, program=program, target=f"usdt {path}:{provider}:{name} ({len(links)} sites)",
                    map_id=info.id, spec_ids=ids)
