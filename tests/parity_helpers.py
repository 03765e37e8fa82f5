"""TEST-ONLY: what a load left in the kernel, from libbpf (tests/oracle/load_oracle.c) and from
corepy, in one comparable form: each program's xlated instructions with map references
replaced by the map's name, its bpf_prog_info essentials, and the maps by name."""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

ORACLE_SRC = Path(__file__).parent / "oracle" / "load_oracle.c"

LD_IMM64 = 0x18
PSEUDO_MAP_FD, PSEUDO_MAP_VALUE = 1, 2


@dataclass(frozen=True)
class MapFacts:
    """A map as ``bpf_map_info`` reports it (without its per-load id)."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    extra: int
    btf_key_type_id: int
    btf_value_type_id: int
    data: bytes | None = field(default=None, repr=False)
    """element 0 of a global data map (one-element ARRAY named <obj>.<section>), None for others"""


@dataclass
class ProgFacts:
    """A loaded program: its info essentials and xlated code, map references by name."""

    name: str
    type: int
    nr_func_info: int
    nr_line_info: int
    gpl_compatible: int
    attach_btf_id: int
    tag: str
    """bpf_prog_info.tag: a hash of the instructions as loaded (before the verifier), map fds zeroed"""
    subprog_tags: str
    func_info: bytes = field(repr=False)
    line_info: bytes = field(repr=False)
    btf: bytes | None = field(repr=False)
    """the raw BTF the program was loaded with (the object's, as the loader prepared it)"""
    insns: list[tuple] = field(repr=False)
    maps_used: list[str] = field(default_factory=list)
    loaded: bytes = field(default=b"", repr=False)
    """the instructions given to BPF_PROG_LOAD (libbpf's side only: the kernel does not return them)"""


@dataclass
class LoadFacts:
    """Everything one load of an object left in the kernel, or why it failed."""

    error: str | None = None
    maps: dict[str, MapFacts] = field(default_factory=dict)
    programs: dict[str, ProgFacts] = field(default_factory=dict)


def elf_programs(path: Path) -> dict[str, str]:
    """program name -> its ELF section ('?' kept): the global functions outside .text."""
    progs: dict[str, str] = {}
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            if sym["st_info"]["type"] != "STT_FUNC" or sym["st_info"]["bind"] != "STB_GLOBAL" \
                    or not isinstance(sym["st_shndx"], int):
                continue
            sec = elf.get_section(sym["st_shndx"]).name
            if sec != ".text":
                progs[sym.name] = sec
    return progs


def normalise(xlated: bytes, map_names: dict[int, str]) -> list[tuple]:
    """(code, dst, src, off, imm) per instruction, the imm of map-referencing ld_imm64s (which
    the kernel reports as the map's id) replaced by ("map", name) of that side's map."""
    out: list[tuple] = []
    for code, regs, off, imm in struct.iter_unpack("<BBhi", xlated):
        dst, src = regs & 0xF, regs >> 4
        ref: object = imm
        if code == LD_IMM64 and src in (PSEUDO_MAP_FD, PSEUDO_MAP_VALUE):
            ref = ("map", map_names.get(imm & 0xFFFFFFFF, f"<unknown map id {imm & 0xFFFFFFFF}>"))
        out.append((code, dst, src, off, ref))
    return out


EXTRA_SRC = r"""
// SPDX-License-Identifier: GPL-2.0
/* What the fixture objects do not load on this kernel: kfunc calls (and a weak kfunc the
 * kernel lacks), kconfig externs (strong, weak, absent), tp_btf, a global subprogram, a
 * bpf_loop callback, bpf_printk's string, a tail call, a .rodata filter. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

extern int LINUX_KERNEL_VERSION __kconfig;
extern int CONFIG_HZ __kconfig __weak;
extern bool CONFIG_BPF_SYSCALL __kconfig __weak;
extern int CONFIG_COREPY_ABSENT __kconfig __weak;
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;
extern void bpf_corepy_absent_kfunc(void) __ksym __weak;

__u64 out[8];
const volatile __u32 filter_pid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} jumps SEC(".maps");

static int loop_cb(__u32 i, void *ctx)
{
	out[1] += i;
	return 0;
}

__noinline int global_helper(int x)
{
	return x * 3;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(on_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct task_struct *t;

	if (filter_pid && next->pid != filter_pid)
		return 0;
	out[0] = LINUX_KERNEL_VERSION + CONFIG_HZ + CONFIG_BPF_SYSCALL + CONFIG_COREPY_ABSENT;
	bpf_loop(4, loop_cb, NULL, 0);
	t = bpf_task_from_pid(next->pid);
	if (t) {
		out[2] = t->tgid;
		bpf_task_release(t);
	}
	bpf_rcu_read_lock();
	out[3] = prev->pid;
	bpf_rcu_read_unlock();
	if (bpf_corepy_absent_kfunc)
		bpf_corepy_absent_kfunc();
	bpf_printk("switch %d", next->pid);
	out[4] = global_helper(next->pid);
	return 0;
}

SEC("raw_tp/sys_enter")
int tail_entry(void *ctx)
{
	bpf_tail_call(ctx, &jumps, 0);
	out[5] = bpf_core_type_exists(struct task_struct);
	return 0;
}
"""
EXTRA_PROGRAMS = ["on_switch", "tail_entry"]


def kernel_tag(insns: bytes, algorithm: str) -> str:
    """bpf_prog_info.tag of a program loaded as ``insns``: the first 8 bytes of the hash of the
    instructions with map-referencing ld_imm64 immediates (both halves) zeroed (the kernel's
    bpf_prog_calc_tag(); ``algorithm`` "sha1" before Linux 6.18, "sha256" since)."""
    out = bytearray(insns)
    was_ld_map = False
    for i, (code, regs, off, _imm) in enumerate(struct.iter_unpack("<BBhi", insns)):
        if not was_ld_map and code == LD_IMM64 and regs >> 4 in (PSEUDO_MAP_FD, PSEUDO_MAP_VALUE):
            was_ld_map = True
        elif was_ld_map and code == 0 and regs == 0 and off == 0:
            was_ld_map = False
        else:
            was_ld_map = False
            continue
        out[8 * i + 4:8 * i + 8] = bytes(4)
    return hashlib.new(algorithm, out).digest()[:8].hex()


CALL, PSEUDO_KFUNC_CALL = 0x85, 2
POISON_CALL_KFUNC_BASE = 2002000000
"""libbpf >= 1.2 writes an unresolved weak kfunc call as a helper call with this imm + the extern's index."""


def unresolved_weak_kfunc_calls(insns: bytes) -> list[int]:
    """Indices of the calls libbpf 1.1 left for unresolved weak kfuncs (kfunc call, imm 0)."""
    return [i for i, (code, regs, off, imm) in enumerate(struct.iter_unpack("<BBhi", insns))
            if code == CALL and regs >> 4 == PSEUDO_KFUNC_CALL and imm == 0 and off == 0]


def poison_kfunc_call(insns: bytes, index: int, extern_index: int) -> bytes:
    """``insns`` with call ``index`` poisoned the way libbpf >= 1.2 (poison_kfunc_call()) does."""
    out = bytearray(insns)
    struct.pack_into("<BBhi", out, 8 * index, CALL, 0, 0, POISON_CALL_KFUNC_BASE + extern_index)
    return bytes(out)


def build_extra_object(tmp_path_factory) -> Path:
    """EXTRA_SRC compiled with clang-19 against a vmlinux.h bpftool dumps from the running kernel."""
    clang, bpftool = shutil.which("clang-19"), shutil.which("bpftool")
    if clang is None or bpftool is None or not Path("/usr/include/bpf/bpf_helpers.h").exists():
        pytest.skip("the extra parity object needs clang-19, bpftool and libbpf-dev (scripts/setup-system.sh)")
    out = tmp_path_factory.mktemp("parity_extra")
    with open(out / "vmlinux.h", "w") as fh:
        subprocess.run([bpftool, "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"],
                       stdout=fh, check=True)
    (out / "parity_extra.bpf.c").write_text(EXTRA_SRC.lstrip())
    subprocess.run([clang, "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", f"-I{out}", "-I/usr/include/bpf",
                    "-Wall", "-Werror", "-c", str(out / "parity_extra.bpf.c"), "-o", str(out / "parity_extra.bpf.o")],
                   check=True)
    return out / "parity_extra.bpf.o"


def build_load_oracle(tmp_path_factory) -> Path:
    """tests/oracle/load_oracle.c linked against the system libbpf, once per session."""
    gcc = shutil.which("gcc")
    if gcc is None or not Path("/usr/include/bpf/libbpf.h").exists():
        pytest.skip("the libbpf load oracle needs gcc and libbpf-dev (scripts/setup-system.sh installs them)")
    out = tmp_path_factory.mktemp("load_oracle") / "load_oracle"
    subprocess.run([gcc, "-O1", "-Wall", "-Werror", "-o", str(out), str(ORACLE_SRC), "-lbpf"], check=True)
    return out


def run_libbpf(oracle: Path, obj: Path, programs: list[str], pin_root: str,
               types: dict[str, tuple[int, int]]) -> LoadFacts:
    """Load ``programs`` of ``obj`` with libbpf (``types``: program -> (prog type, expected
    attach type) set by hand) and read back what the kernel holds."""
    cmd = [str(oracle), "-p", pin_root]
    for prog, (ptype, attach) in types.items():
        cmd += ["-t", f"{prog}={ptype}:{attach}"]
    proc = subprocess.run(cmd + [str(obj)] + programs, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or not any(ln.startswith("LOAD ") for ln in lines):
        return LoadFacts(error=f"load_oracle exited {proc.returncode}: {proc.stdout.strip()} {proc.stderr.strip()}")
    facts = LoadFacts()
    if "LOAD 0" not in lines:
        facts.error = _libbpf_reason(lines)
        return facts
    names: dict[int, str] = {}
    last_map: MapFacts | None = None
    prog: ProgFacts | None = None
    raw = bytearray()
    btfs: dict[str, bytes] = {}
    btf_ids: dict[str, str] = {}
    pending: list[tuple[ProgFacts, bytes, list[int]]] = []
    for ln in lines:
        kind, _, rest = ln.partition(" ")
        if kind == "MAP":
            map_id, *numbers, name = rest.split(" ", 9)
            last_map = MapFacts(name, *map(int, numbers))
            names[int(map_id)] = last_map.name
            facts.maps[last_map.name] = last_map
        elif kind == "MAPDATA":
            assert last_map is not None
            facts.maps[last_map.name] = dataclasses.replace(last_map, data=bytes.fromhex(rest.strip()))
        elif kind == "PROG":
            name, ptype, _id, nfunc, nline, gpl, btf_id, attach_btf_id = rest.split(" ")
            prog = ProgFacts(name, int(ptype), int(nfunc), int(nline), int(gpl), int(attach_btf_id),
                             "", "", b"", b"", None, [])
            btf_ids[name] = btf_id
            raw = bytearray()
        elif kind in _HEX_FIELDS:
            assert prog is not None
            value = bytes.fromhex(rest.strip())
            setattr(prog, _HEX_FIELDS[kind], value.hex() if kind.endswith("TAGS") or kind == "TAG" else value)
        elif kind == "BTF":
            btf_id, _, blob = rest.partition(" ")
            btfs[btf_id] = bytes.fromhex(blob)
        elif kind == "INSN":
            raw += bytes.fromhex(rest)
        elif kind == "LOADED":
            assert prog is not None
            prog.loaded += bytes.fromhex(rest)
        elif kind == "MAPIDS":
            assert prog is not None
            pending.append((prog, bytes(raw), [int(x) for x in rest.split()]))
        elif kind in ("MAPERR", "PROGERR", "BTFERR"):
            facts.error = f"load_oracle: {ln}"
    for prog, xlated, map_ids in pending:
        prog.insns = normalise(xlated, names)
        prog.btf = btfs.get(btf_ids[prog.name])
        prog.maps_used = [names.get(i, f"<unknown map id {i}>") for i in map_ids]
        facts.programs[prog.name] = prog
    return facts


_HEX_FIELDS = {"TAG": "tag", "SUBTAGS": "subprog_tags", "FUNCINFO": "func_info", "LINEINFO": "line_info"}


def _libbpf_reason(lines: list[str]) -> str:
    """libbpf's own words for a failed load: its messages, the verifier log folded into one line."""
    msgs = [ln.removeprefix("LIBBPF ").removeprefix("libbpf: ") for ln in lines if ln.startswith("LIBBPF ")]
    return " | ".join(m.replace("\n", " / ") for m in msgs) + f" (bpf_object__load: {lines[-1].split()[-1]})"


def corepy_facts(obj) -> LoadFacts:
    """The same facts for a loaded :class:`corepy.Object`, read from the kernel by fd."""
    from corepy.syscalls.maps import map_lookup_elem
    from corepy.syscalls.objects import btf_info, get_fd_by_id, map_info
    from corepy.syscalls.uapi import MapType

    facts = LoadFacts()
    names: dict[int, str] = {}

    def add_map(info, fd: int) -> None:
        data = None
        if info.type == MapType.ARRAY and info.max_entries == 1 and b"." in info.name:
            data = map_lookup_elem(fd, b"\0\0\0\0", info.value_size)
        mf = MapFacts(info.name.decode(), info.type, info.key_size, info.value_size, info.max_entries,
                      info.map_flags, info.map_extra, info.btf_key_type_id, info.btf_value_type_id, data)
        names[info.id] = mf.name
        facts.maps[mf.name] = mf

    for m in obj.maps.values():
        add_map(map_info(m.fileno()), m.fileno())
    for name, p in obj.programs.items():
        info, xlated, map_ids, func_info, line_info, tags = prog_details(p.fileno())
        for map_id in map_ids:
            if map_id not in names:
                with get_fd_by_id("map", map_id) as fd:
                    add_map(map_info(fd), fd.fileno())
        btf = None
        if info.btf_id:
            with get_fd_by_id("btf", info.btf_id) as fd:
                btf = btf_info(fd).blob
        facts.programs[name] = ProgFacts(
            name, info.type, info.nr_func_info, info.nr_line_info, info.gpl_compatible, info.attach_btf_id,
            bytes(info.tag).hex(), tags.hex(), func_info, line_info, btf, normalise(xlated, names),
            [names[i] for i in map_ids])
    return facts


def prog_details(fd: int) -> tuple:
    """(bpf_prog_info, xlated, map ids, func info, line info, subprogram tags) of a program fd:
    the two-call pattern, sizes first, then every buffer at once."""
    from corepy.syscalls.attr import ProgInfo
    from corepy.syscalls.objects import obj_get_info

    want = obj_get_info(fd, ProgInfo())
    bufs = {
        "xlated": ctypes.create_string_buffer(want.xlated_prog_len),
        "map_ids": (ctypes.c_uint32 * want.nr_map_ids)(),
        "func_info": ctypes.create_string_buffer(want.nr_func_info * want.func_info_rec_size),
        "line_info": ctypes.create_string_buffer(want.nr_line_info * want.line_info_rec_size),
        "tags": ctypes.create_string_buffer(want.nr_prog_tags * 8),
    }
    info = obj_get_info(fd, ProgInfo(
        xlated_prog_len=want.xlated_prog_len, xlated_prog_insns=ctypes.addressof(bufs["xlated"]),
        nr_map_ids=want.nr_map_ids, map_ids=ctypes.addressof(bufs["map_ids"]),
        nr_func_info=want.nr_func_info, func_info_rec_size=want.func_info_rec_size,
        func_info=ctypes.addressof(bufs["func_info"]),
        nr_line_info=want.nr_line_info, line_info_rec_size=want.line_info_rec_size,
        line_info=ctypes.addressof(bufs["line_info"]),
        nr_prog_tags=want.nr_prog_tags, prog_tags=ctypes.addressof(bufs["tags"])))
    counts = ("xlated_prog_len", "nr_map_ids", "nr_func_info", "nr_line_info", "nr_prog_tags")
    assert all(getattr(info, c) == getattr(want, c) for c in counts), "program info changed between calls"
    return (info, bufs["xlated"].raw, list(bufs["map_ids"]), bufs["func_info"].raw, bufs["line_info"].raw,
            bufs["tags"].raw)


def first_difference(want: list[tuple], got: list[tuple]) -> str:
    """Where two normalised instruction lists part, for an assertion message."""
    for i, (a, b) in enumerate(zip(want, got)):
        if a != b:
            return f"insn #{i}: libbpf {a} corepy {b}"
    return f"lengths differ: libbpf {len(want)} insns, corepy {len(got)}"
