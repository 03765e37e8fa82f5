"""BTF parsing checked against bpftool's raw dump (the oracle) on real kernel and object BTF."""

from __future__ import annotations

import gc
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest

from conftest import KERNEL_BTF, MODULES, OTHER_KERNELS, btf_blob, btf_path
from corepy.btf import BTF, Kind
from corepy.btf import format as fmt
from corepy.btf.ext import BTFExt, FuncInfo
from corepy.btf.types import (
    Array, Datasec, DeclTag, Enum, Enum64, Float, Func, FuncProto, Fwd, Int, IntEncoding, Struct, Union, Var,
)
from corepy.btf.writer import write_btf
from corepy.errors import BTFError, CorepyError

BPFTOOL = shutil.which("bpftool") or ("/usr/sbin/bpftool" if Path("/usr/sbin/bpftool").exists() else None)
CLANG = shutil.which("clang-19") or shutil.which("clang")
needs_bpftool = pytest.mark.skipif(BPFTOOL is None, reason="bpftool not installed (scripts/setup-system.sh)")
needs_clang = pytest.mark.skipif(CLANG is None, reason="clang not installed (scripts/setup-system.sh)")
needs_kernel_btf = pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no /sys/kernel/btf/vmlinux")

# A small program using every construct the parser must decode: bitfields, anonymous
# members, enums (signed, 64-bit), floats, decl/type tags, globals, maps and CO-RE relocations.
PROGRAM = textwrap.dedent(
    r"""
    typedef unsigned int u32;
    typedef unsigned long long u64;
    #define SEC(x) __attribute__((section(x), used))
    #define __uint(name, val) int (*name)[val]
    #define __type(name, val) typeof(val) *name
    enum small { S_NEG = -3, S_POS = 7 };
    enum big { B_HUGE = 0xfffffffffffULL, B_ONE = 1 };
    struct bits { u32 a: 3, b: 5; u32 c; union { int x; struct { short y, z; }; }; double d; };
    struct task { int pid; struct bits bits; enum small s; enum big g; } __attribute__((preserve_access_index));
    struct packed { char c; int i; } __attribute__((packed));
    struct { __uint(type, 2); __uint(max_entries, 1); __type(key, u32); __type(value, u64); } counts SEC(".maps");
    volatile const int config = 5;
    int __attribute__((btf_decl_tag("tagged"))) tagged_global = 1;
    int __attribute__((btf_type_tag("user"))) *tagged_ptr;
    struct packed packed_global;
    double ratio_global;
    extern int bpf_ext(int) __attribute__((weak));
    static long (*bpf_probe_read_kernel)(void *dst, u32 size, const void *src) = (void *)113;
    SEC("tracepoint/syscalls/sys_enter_write")
    int handle(struct task *t)
    {
        int pid;
        bpf_probe_read_kernel(&pid, sizeof(pid), &t->pid);
        return pid + config + t->bits.y + tagged_global + (int)t->s + (int)t->g;
    }
    char LICENSE[] SEC("license") = "GPL";
    """
)

_ENC = {0: "(none)", 1: "SIGNED", 2: "CHAR", 4: "BOOL"}
_LINKAGE = {0: "static", 1: "global", 2: "extern"}


def bpftool_raw(btf: BTF, t) -> list[str]:
    """Render a type exactly as `bpftool btf dump ... format raw` does."""
    name = t.name or "(anon)"
    head = f"[{t.id}] {t.kind.name} '{name}'"
    if isinstance(t, Int):
        return [f"{head} size={t.size} bits_offset={t.bit_offset} nr_bits={t.bits} encoding={_ENC.get(int(t.encoding), 'UNKN')}"]
    if isinstance(t, Array):
        return [f"{head} type_id={t.type_id} index_type_id={t.index_type_id} nr_elems={t.nelems}"]
    if isinstance(t, (Struct, Union)):
        out = [f"{head} size={t.size} vlen={len(t.members)}"]
        for m in t.members:
            line = f"\t'{m.name or '(anon)'}' type_id={m.type_id} bits_offset={m.bit_offset}"
            out.append(line + (f" bitfield_size={m.bitfield_size}" if m.bitfield_size else ""))
        return out
    if isinstance(t, (Enum, Enum64)):
        out = [f"{head} encoding={'SIGNED' if t.signed else 'UNSIGNED'} size={t.size} vlen={len(t.values)}"]
        suffix = "" if isinstance(t, Enum) else ("LL" if t.signed else "ULL")
        return out + [f"\t'{v.name}' val={v.value}{suffix}" for v in t.values]
    if isinstance(t, Fwd):
        return [f"{head} fwd_kind={'union' if t.union else 'struct'}"]
    if isinstance(t, Func):
        return [f"{head} type_id={t.type_id} linkage={_LINKAGE[t.linkage]}"]
    if isinstance(t, FuncProto):
        out = [f"{head} ret_type_id={t.return_type_id} vlen={len(t.params)}"]
        return out + [f"\t'{p.name or '(anon)'}' type_id={p.type_id}" for p in t.params]
    if isinstance(t, Var):
        return [f"{head} type_id={t.type_id}, linkage={_LINKAGE[t.linkage]}"]
    if isinstance(t, Datasec):
        out = [f"{head} size={t.size} vlen={len(t.vars)}"]
        for v in t.vars:
            target = btf[v.type_id]
            out.append(f"\ttype_id={v.type_id} offset={v.offset} size={v.size} ({target.kind.name} '{target.name}')")
        return out
    if isinstance(t, Float):
        return [f"{head} size={t.size}"]
    if isinstance(t, DeclTag):
        return [f"{head} type_id={t.type_id} component_idx={t.component_idx}"]
    return [f"{head} type_id={t.type_id}"]  # PTR, TYPEDEF, modifiers, TYPE_TAG


def assert_matches_bpftool(btf: BTF, path: Path, base: Path | None = None) -> None:
    cmd = [BPFTOOL, "btf", "dump", "file", str(path), "format", "raw"]
    if base is not None:
        cmd[1:1] = ["-B", str(base)]
    want = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    got = [line for t in btf.types() for line in bpftool_raw(btf, t)]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g == w


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    if CLANG is None:
        pytest.skip("clang not installed (scripts/setup-system.sh)")
    d = tmp_path_factory.mktemp("prog")
    (d / "prog.bpf.c").write_text(PROGRAM)
    out = d / "prog.bpf.o"
    subprocess.run([CLANG, "-g", "-O2", "-target", "bpf", "-c", str(d / "prog.bpf.c"), "-o", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def program_eb(program: Path) -> Path:
    out = program.with_name("prog-eb.bpf.o")
    subprocess.run([CLANG, "-g", "-O2", "-target", "bpfeb", "-c", str(program.with_name("prog.bpf.c")),
                    "-o", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def vmlinux() -> BTF:
    if not KERNEL_BTF.exists():
        pytest.skip("no /sys/kernel/btf/vmlinux")
    return BTF.kernel()


# --- real kernel ---------------------------------------------------------

@needs_bpftool
def test_kernel_btf_equals_bpftool_raw_dump(vmlinux: BTF) -> None:
    assert_matches_bpftool(vmlinux, KERNEL_BTF)


@needs_bpftool
def test_task_struct_pid_as_bpftool_says(vmlinux: BTF) -> None:
    raw = subprocess.run([BPFTOOL, "btf", "dump", "file", str(KERNEL_BTF), "format", "raw"],
                         check=True, capture_output=True, text=True).stdout
    head, _, rest = raw.partition("STRUCT 'task_struct' ")
    type_id = int(head.rsplit("[", 1)[1].rstrip("] "))
    size = int(rest.split()[0].removeprefix("size="))
    pid_line = next(line for line in rest.splitlines() if line.startswith("\t'pid' "))
    fields = dict(kv.split("=") for kv in pid_line.split()[1:])
    task = vmlinux.find_one("task_struct", Kind.STRUCT)
    assert (task.id, task.size) == (type_id, size)
    member, bits = vmlinux.find_member(task.id, "pid")
    assert (member.type_id, bits) == (int(fields["type_id"]), int(fields["bits_offset"]))
    assert vmlinux.resolve_size(member.type_id) == 4  # pid_t is an int: C's answer, not BTF's
    assert vmlinux.resolve_size(task.id) == size


def test_kernel_is_cached_and_little_endian(vmlinux: BTF) -> None:
    assert BTF.kernel() is vmlinux
    assert vmlinux.byte_order == "little" and vmlinux.start_id == 1 and vmlinux.base is None
    assert vmlinux[0].kind == Kind.UNKN
    assert vmlinux.raw_bytes() == KERNEL_BTF.read_bytes()


def test_ids_by_name_and_find(vmlinux: BTF) -> None:
    ids = vmlinux.ids_by_name("task_struct")
    assert ids == sorted(ids) and all(vmlinux[i].name == "task_struct" for i in ids)
    # every name maps back to all and only the types carrying it
    seen: dict[str, list[int]] = {}
    for t in vmlinux.types():
        if t.name:
            seen.setdefault(t.name, []).append(t.id)
    for name, ids in seen.items():
        assert vmlinux.ids_by_name(name) == ids
    assert set(vmlinux.names()) == set(seen)
    assert vmlinux.ids_by_name("no_such_type_anywhere") == []
    with pytest.raises(BTFError, match="no_such_type"):
        vmlinux.find_one("no_such_type")
    with pytest.raises(BTFError, match="out of range"):
        vmlinux[len(vmlinux)]
    with pytest.raises(BTFError, match="out of range"):
        vmlinux[-1]


def test_name_index_on_odd_string_tables() -> None:
    """Names are string contents, not offsets: the same name stored twice is one name, an offset
    into the middle of a string names its tail, an offset at a NUL is the empty name (never indexed),
    and an offset past the strings is reported when that type is decoded, not by the index."""
    strings = b"\0abc\0bc\0\0"  # "abc" at 1, "bc" at 5, "" at 8
    ptr = lambda name_off: struct.pack("<III", name_off, 2 << 24, 0)  # noqa: E731
    types = ptr(1) + ptr(5) + ptr(2) + ptr(8) + ptr(1) + ptr(99) + ptr(0)
    head = struct.pack("<HBBIIIII", fmt.BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings))
    btf = BTF.from_bytes(head + types + strings)
    assert btf.ids_by_name("abc") == [1, 5]
    assert btf.ids_by_name("bc") == [2, 3]
    assert btf.ids_by_name("c") == btf.ids_by_name("") == btf.ids_by_name("nope") == []
    assert sorted(btf.names()) == ["abc", "bc"]
    assert [t.name for t in btf.find("bc")] == ["bc", "bc"]
    with pytest.raises(BTFError, match="string offset 99"):
        btf[6]


def test_alignment_and_members_of_kernel_types(vmlinux: BTF) -> None:
    assert vmlinux.pointer_size == 8
    task = vmlinux.find_one("task_struct", Kind.STRUCT)
    assert vmlinux.alignment(task.id) >= 8
    # every member of a kernel struct sits at a multiple of its alignment unless it is a bitfield
    for name in ("task_struct", "sk_buff", "file", "page"):
        struct = vmlinux.find_one(name, Kind.STRUCT)
        names = [m.name for m, _ in vmlinux.members(struct.id)]
        assert len(names) == len(set(names)) and "" not in names
        for m, bits in vmlinux.members(struct.id):
            if not m.bitfield_size:
                assert bits % (8 * vmlinux.alignment(m.type_id)) == 0
    # sk_buff's 'len' lives inside no anonymous member; its 'next' inside an anonymous union
    skb = vmlinux.find_one("sk_buff", Kind.STRUCT)
    assert vmlinux.find_member(skb.id, "next") is not None
    assert all(m.name != "next" for m in skb.members)


# --- other kernels, split BTF ------------------------------------------------

@needs_bpftool
@pytest.mark.parametrize("name", OTHER_KERNELS)
def test_other_kernels_equal_bpftool(name: str) -> None:
    btf = BTF.from_file(btf_path(name))
    assert_matches_bpftool(btf, btf_path(name))
    arch_long = btf.find_one("long int", Kind.INT)
    assert btf.pointer_size == arch_long.size == 8


@needs_bpftool
@pytest.mark.parametrize("module", sorted(MODULES))
def test_split_module_btf_equals_bpftool(module: str) -> None:
    base = BTF.from_file(btf_path(MODULES[module]))
    split = BTF.from_bytes(btf_blob(module), base=base, source=module)
    assert split.start_id == len(base) and split.base is base
    assert_matches_bpftool(split, btf_path(module), base=btf_path(MODULES[module]))


def test_split_nf_conn_points_into_base() -> None:
    base = BTF.from_file(btf_path("vmlinux-6.1.0-56"))
    split = BTF.from_bytes(btf_blob("nf_conntrack-6.1.0-56"), base=base)
    conn = split.find_one("nf_conn", Kind.STRUCT)  # Debian builds nf_conn into vmlinux's BTF
    assert conn.id < split.start_id and conn is base[conn.id]
    assert split.find_member(conn.id, "ct_general") is not None
    helper = split.find_one("nf_conntrack_helper", Kind.STRUCT)  # defined by the module
    assert helper.id >= split.start_id
    kinds = {m.type_id < split.start_id for m in helper.members}
    assert kinds == {True, False}, "members in both the base and the module"
    for t in (conn, helper):
        for m in t.members:
            assert m.bit_offset // 8 + split.resolve_size(m.type_id) <= t.size
    assert split.ids_by_name("sk_buff") == base.ids_by_name("sk_buff")
    # a split type name that is a base string offset (< base string size) resolves through the base
    assert split.string(0) == ""


# --- an object file: .BTF and .BTF.ext ------------------------------------------

@needs_bpftool
def test_object_btf_equals_bpftool(program: Path) -> None:
    btf = BTF.from_file(program)
    assert_matches_bpftool(btf, program)


def test_object_kinds_and_values(program: Path) -> None:
    btf = BTF.from_file(program)
    small = btf.find_one("small", Kind.ENUM)
    assert small.signed and {v.name: v.value for v in small.values} == {"S_NEG": -3, "S_POS": 7}
    big = btf.find_one("big", Kind.ENUM64)
    assert not big.signed and {v.name: v.value for v in big.values} == {"B_HUGE": 0xFFFFFFFFFFF, "B_ONE": 1}
    bits = btf.find_one("bits", Kind.STRUCT)
    a, b = bits.members[:2]
    assert bits.kind_flag and (a.bit_offset, a.bitfield_size, b.bit_offset, b.bitfield_size) == (0, 3, 3, 5)
    assert [m.name for m, _ in btf.members(bits.id)] == ["a", "b", "c", "x", "y", "z", "d"]
    assert btf.find_member(bits.id, "z")[1] == 64 + 16
    assert btf.alignment(btf.find_one("packed", Kind.STRUCT).id) == 1
    assert btf.alignment(bits.id) == 8 and btf.resolve_size(bits.id) == 24
    assert btf.find_one("double", Kind.FLOAT).size == 8
    tag = btf.find_one("tagged", Kind.DECL_TAG)
    assert btf[tag.type_id].name == "tagged_global" and tag.component_idx == -1
    assert btf.find("user", Kind.TYPE_TAG)
    handle = btf.find_one("handle", Kind.FUNC)
    proto = btf[handle.type_id]
    assert [p.name for p in proto.params] == ["t"] and btf[proto.return_type_id].name == "int"
    assert {t.name for t in btf.types() if t.kind == Kind.DATASEC} >= {".maps", ".rodata", ".data", "license"}
    with pytest.raises(BTFError, match="no size"):
        btf.resolve_size(handle.id)


def test_object_ext(program: Path) -> None:
    btf = BTF.from_file(program)
    ext = btf.ext
    assert isinstance(ext, BTFExt)
    sec = "tracepoint/syscalls/sys_enter_write"
    assert [btf[f.type_id].name for f in ext.func_info[sec]] == ["handle"]
    assert ext.func_info[sec][0].insn_off == 0
    lines = ext.line_info[sec]
    assert lines and all(li.file_name.endswith("prog.bpf.c") and li.line_num > 0 for li in lines)
    assert any("bpf_probe_read_kernel" in li.line for li in lines)
    assert all(li.insn_off % 8 == 0 for li in lines)
    relos = ext.core_relos[sec]
    assert relos and all(btf[r.type_id].name == "task" for r in relos)
    access = {r.access_str for r in relos}
    assert "0:0" in access  # t->pid


def test_big_endian_object_parses_the_same(program: Path, program_eb: Path) -> None:
    le, be = BTF.from_file(program), BTF.from_file(program_eb)
    assert (le.byte_order, be.byte_order) == ("little", "big")
    assert list(le.types()) == list(be.types())
    assert le.ext.core_relos == be.ext.core_relos and le.ext.line_info == be.ext.line_info


def construct_decode(btf: BTF, L: fmt.Layouts, raw: bytes, type_id: int) -> dict:
    """A type's fields read with the construct declarations alone (the slow, declarative path)."""
    off = btf.type_offset(type_id)

    def rec(layout, at):
        return layout.parse(raw[at : at + layout.sizeof()])

    head = rec(L.btf_type, off)
    kind = (head.info >> fmt.INFO_KIND_SHIFT) & fmt.INFO_KIND_MASK
    vlen = head.info & fmt.INFO_VLEN_MASK
    kflag = head.info >> fmt.INFO_KIND_FLAG_SHIFT
    p = off + L.btf_type.sizeof()
    out = dict(kind=kind, name=btf.string(head.name_off), name_off=head.name_off)
    many = {Kind.STRUCT: L.member, Kind.UNION: L.member, Kind.ENUM: L.enum, Kind.ENUM64: L.enum64,
            Kind.FUNC_PROTO: L.param, Kind.DATASEC: L.var_secinfo}
    one = {Kind.INT: L.int_encoding, Kind.ARRAY: L.array, Kind.VAR: L.var, Kind.DECL_TAG: L.decl_tag}
    if kind in many:
        layout = many[kind]
        out["records"] = [dict(rec(layout, p + i * layout.sizeof())) for i in range(vlen)]
    elif kind in one:
        out["record"] = dict(rec(one[kind], p))
    out.update(size_or_type=head.size_or_type, vlen=vlen, kflag=kflag)
    for r in out.get("records", []) + ([out["record"]] if "record" in out else []):
        r.pop("_io", None)
    return out


def fast_as_records(t) -> dict:
    """The same fields rebuilt from the decoded model object."""
    out = dict(kind=t.kind, name=t.name, name_off=t.name_off)
    if isinstance(t, (Struct, Union)):
        out["records"] = [dict(name_off=m.name_off, type=m.type_id,
                               offset=(m.bitfield_size << 24 | m.bit_offset) if t.kind_flag else m.bit_offset)
                          for m in t.members]
        out.update(size_or_type=t.size, vlen=len(t.members), kflag=int(t.kind_flag))
    elif isinstance(t, Enum):
        out["records"] = [dict(name_off=v.name_off, val=v.value if t.signed else (v.value - (1 << 32) if v.value >= 1 << 31 else v.value)) for v in t.values]
        out.update(size_or_type=t.size, vlen=len(t.values), kflag=int(t.signed))
    elif isinstance(t, Enum64):
        out["records"] = [dict(name_off=v.name_off, val_lo32=v.value & 0xFFFFFFFF, val_hi32=(v.value >> 32) & 0xFFFFFFFF)
                          for v in t.values]
        out.update(size_or_type=t.size, vlen=len(t.values), kflag=int(t.signed))
    elif isinstance(t, FuncProto):
        out["records"] = [dict(name_off=p.name_off, type=p.type_id) for p in t.params]
        out.update(size_or_type=t.return_type_id, vlen=len(t.params), kflag=0)
    elif isinstance(t, Datasec):
        out["records"] = [dict(type=v.type_id, offset=v.offset, size=v.size) for v in t.vars]
        out.update(size_or_type=t.size, vlen=len(t.vars), kflag=0)
    elif isinstance(t, Int):
        out["record"] = dict(encoding=int(t.encoding) << 24 | t.bit_offset << 16 | t.bits)
        out.update(size_or_type=t.size, vlen=0, kflag=0)
    elif isinstance(t, Array):
        out["record"] = dict(type=t.type_id, index_type=t.index_type_id, nelems=t.nelems)
        out.update(size_or_type=0, vlen=0, kflag=0)
    elif isinstance(t, Var):
        out["record"] = dict(linkage=int(t.linkage))
        out.update(size_or_type=t.type_id, vlen=0, kflag=0)
    elif isinstance(t, DeclTag):
        out["record"] = dict(component_idx=t.component_idx)
        out.update(size_or_type=t.type_id, vlen=0, kflag=int(t.kind_flag))
    elif isinstance(t, Func):
        out.update(size_or_type=t.type_id, vlen=int(t.linkage), kflag=0)
    elif isinstance(t, Fwd):
        out.update(size_or_type=0, vlen=0, kflag=int(t.union))
    elif isinstance(t, Float):
        out.update(size_or_type=t.size, vlen=0, kflag=0)
    else:  # PTR, TYPEDEF, modifiers, TYPE_TAG
        out.update(size_or_type=t.type_id, vlen=0, kflag=int(getattr(t, "kind_flag", False)))
    return out


def test_fast_decoder_equals_construct_declarations(vmlinux: BTF, program: Path, program_eb: Path) -> None:
    """The struct-based fast path reads exactly what the construct declarations declare, every kind."""
    for btf, step in ((vmlinux, 41), (BTF.from_file(program), 1), (BTF.from_file(program_eb), 1)):
        L = fmt.LITTLE if btf.byte_order == "little" else fmt.BIG
        raw = btf.raw_bytes()
        ids = list(range(1, len(btf), step))
        ids += [t.id for name in ("task_struct", "bpf_attr", "bpf_map_type") for t in btf.find(name)]
        ids += [i for i in range(1, len(btf)) if btf[i].kind in (Kind.ENUM64, Kind.DECL_TAG, Kind.TYPE_TAG,
                                                                  Kind.DATASEC, Kind.FLOAT)][:50]
        for type_id in ids:
            assert fast_as_records(btf[type_id]) == construct_decode(btf, L, raw, type_id), type_id


# --- contract details ---------------------------------------------------------

def test_header_lengths_come_from_declarations() -> None:
    assert fmt.LITTLE.header.sizeof() == 24 and fmt.LITTLE.btf_type.sizeof() == 12
    assert fmt.LITTLE.member.sizeof() == 12 and fmt.LITTLE.enum64.sizeof() == 12
    assert fmt.BIG.header.build(dict(magic=fmt.BTF_MAGIC, version=1, flags=0, hdr_len=24, type_off=0,
                                     type_len=0, str_off=0, str_len=1))[:2] == b"\xeb\x9f"


@pytest.mark.parametrize("L", [fmt.LITTLE, fmt.BIG], ids=["little", "big"])
def test_struct_formats_read_as_the_construct_declarations(L: fmt.Layouts) -> None:
    """Each layout's struct form (what the fast paths use) and its construct Struct agree on
    size, field order and every field's value, both ways, on arbitrary bytes."""
    import random

    rng = random.Random(7)
    for name in fmt.DECLARATIONS:
        layout = getattr(L, name)
        assert layout.sizeof() == layout.construct.sizeof() == L.fmt(layout).size
        for _ in range(20):
            raw = rng.randbytes(layout.sizeof())
            parsed = layout.construct.parse(raw)
            values = L.fmt(layout).unpack(raw)
            assert [parsed[f] for f, _ in layout.fields] == list(values), name
            assert layout.construct.build(parsed) == L.fmt(layout).pack(*values) == raw


def test_open_and_lookup_need_no_construct() -> None:
    """construct is imported on first use of a declaration's construct form, not by the fast paths."""
    code = ("import sys; from corepy.btf import BTF; b = BTF.from_file(sys.argv[1]); b.find('task_struct'); "
            "print('construct' in sys.modules)")
    target = str(KERNEL_BTF) if KERNEL_BTF.exists() else str(btf_path("vmlinux-6.1.0-56"))
    out = subprocess.run([sys.executable, "-c", code, target], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_type_classes_behave_as_frozen_slotted_dataclasses() -> None:
    """The model's classes (methods generated in one batch) act exactly as
    ``@dataclass(frozen=True, slots=True)`` would: signature, repr, equality, hashing, frozenness,
    slots, match args, copy/pickle and ``dataclasses.replace``."""
    import copy
    import dataclasses
    import inspect
    import pickle

    from corepy.btf import types

    classes = [c for c in vars(types).values() if isinstance(c, type) and dataclasses.is_dataclass(c)]
    assert len(classes) == 24
    for cls in classes:
        fields = dataclasses.fields(cls)
        spec = [(f.name, f.type) if f.default is dataclasses.MISSING else
                (f.name, f.type, dataclasses.field(default=f.default, init=f.init)) for f in fields]
        ref = dataclasses.make_dataclass(cls.__name__, spec, frozen=True, slots=True)
        assert str(inspect.signature(cls)) == str(inspect.signature(ref))
        assert cls.__slots__ == ref.__slots__ and cls.__match_args__ == ref.__match_args__
        kw = {f.name: f"{f.name}-value" for f in fields if f.init and f.default is dataclasses.MISSING}
        ours, theirs = cls(**kw), ref(**kw)
        assert repr(ours) == repr(theirs) and hash(ours) == hash(theirs)
        assert ours == cls(**kw) and hash(ours) == hash(cls(**kw)) and ours != theirs and ours != 0
        for f in fields:
            other = dataclasses.replace(ours, **{f.name: "changed"}) if f.init else None
            if other is not None:
                assert other != ours and getattr(other, f.name) == "changed"
                assert repr(other) == repr(dataclasses.replace(theirs, **{f.name: "changed"}))
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(ours, f.name, 1)
            with pytest.raises(dataclasses.FrozenInstanceError):
                delattr(ours, f.name)
        assert not hasattr(ours, "__dict__")
        assert copy.copy(ours) == ours == pickle.loads(pickle.dumps(ours))
        assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)


def test_from_file_errors(tmp_path: Path) -> None:
    with pytest.raises(BTFError, match="cannot read"):
        BTF.from_file(tmp_path / "missing")
    (tmp_path / "junk").write_bytes(b"hello world, not btf")
    with pytest.raises(BTFError, match="bad magic"):
        BTF.from_file(tmp_path / "junk")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(BTFError, match="bad magic"):
        BTF.from_file(tmp_path / "empty")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@needs_kernel_btf
def test_dropping_or_closing_a_file_btf_leaves_no_fd_or_mapping() -> None:
    """Refcounting alone frees a BTF from from_file (no cycles: no gc.collect() needed); close() and
    ``with`` unmap it at once; a corrupt file's mapping goes with the exception."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        before = _open_fds()
        btf = BTF.from_file(KERNEL_BTF)
        task = btf.find_one("task_struct", Kind.STRUCT)
        dead = weakref.ref(btf)
        del btf
        assert dead() is None and _open_fds() == before
        with BTF.from_file(KERNEL_BTF) as btf:
            task_again = btf.find_one("task_struct", Kind.STRUCT)
            pid = btf.find_member(task_again.id, "pid")
        assert _open_fds() == before and task_again == task  # closed on leaving the block
        assert btf.find_one("task_struct", Kind.STRUCT) is task_again  # decoded types stay
        assert btf.ids_by_name("pid_t") and pid[0].name == "pid"  # lookups need no mapping
        with pytest.raises(BTFError, match="closed"):
            btf[task.id + 1]
        with pytest.raises(BTFError, match="closed"):
            btf.raw_bytes()
        btf.close()  # idempotent
    finally:
        if gc_was_enabled:
            gc.enable()


@needs_kernel_btf
def test_full_name_index_reads_the_mapping_and_survives_close() -> None:
    """The full name index reads the names straight from the file's mapping (the strings are
    copied out only when something needs them as bytes, at the latest on close), and lookups
    after close() still answer, from the copy."""
    btf = BTF.from_file(KERNEL_BTF)
    whole = BTF.from_bytes(btf.raw_bytes())
    names = ("task_struct", "pid_t", "int", "sk_buff", "no_such_type_anywhere")
    btf._name_index()
    assert btf._strtab_copy is None  # nothing copied to build it
    found = {name: btf.ids_by_name(name) for name in names}
    btf.close()
    assert btf._strtab_copy is not None
    assert {name: btf.ids_by_name(name) for name in names} == found
    assert found == {name: whole.ids_by_name(name) for name in names} and found["task_struct"]


def test_object_btf_with_ext_is_freed_by_refcounting(program: Path) -> None:
    gc.disable()
    try:
        btf = BTF.from_file(program)
        assert btf.ext is not None and btf.ext.core_relos
        btf.ids_by_name("task")
        dead = weakref.ref(btf)
        del btf
        assert dead() is None
    finally:
        gc.enable()


def test_corrupt_file_leaves_no_fd(tmp_path: Path) -> None:
    bad = tmp_path / "bad.btf"
    head = struct.pack("<HBBIIIII", fmt.BTF_MAGIC, 1, 0, 24, 0, 12, 12, 1)
    bad.write_bytes(head + struct.pack("<III", 0, 4 << 24 | 3, 0) + b"\0")  # a STRUCT cut short
    gc.disable()
    try:
        before = _open_fds()
        with pytest.raises(BTFError, match="runs past the end") as info:
            BTF.from_file(bad)
        assert _open_fds() == before and str(bad) in str(info.value)
    finally:
        gc.enable()
    good = BTF.from_bytes(head.replace(struct.pack("<I", 12), struct.pack("<I", 0), 1)[:12]
                          + struct.pack("<III", 0, 0, 1) + b"\0")
    good.close()  # nothing mapped: a no-op
    assert len(good) == 1


def test_int_encoding_flags(vmlinux: BTF) -> None:
    assert vmlinux.find_one("_Bool", Kind.INT).encoding == IntEncoding.BOOL
    assert vmlinux.find_one("int", Kind.INT).signed


# --- the on-disk index cache ---------------------------------------------------

def _cache_files(d: Path) -> list[Path]:
    return sorted(d.glob("btf-*.idx"))


def _rewrite_cache(path: Path, edit) -> None:
    """Re-marshal a cache file after ``edit(fields)`` with a valid checksum (a crafted, consistent-looking cache)."""
    import marshal
    import zlib

    from corepy.btf import strings

    head = len(strings._CACHE_MAGIC) + 4
    fields = list(marshal.loads(path.read_bytes()[head:]))
    edit(fields)
    payload = marshal.dumps(tuple(fields))
    path.write_bytes(strings._CACHE_MAGIC + zlib.crc32(payload).to_bytes(4, "little") + payload)


def test_index_cache_round_trip(tmp_path: Path, monkeypatch) -> None:
    from corepy.btf.strings import HashedNameIndex, NameIndex

    monkeypatch.setenv("COREPY_CACHE_DIR", str(tmp_path))
    blob = btf_blob("vmlinux-5.10.0-32")
    plain = BTF.from_bytes(blob)
    first = BTF.from_bytes(blob, cache=True)
    first.ids_by_name("task_struct")
    (path,) = _cache_files(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    second = BTF.from_bytes(blob, cache=True)
    assert isinstance(second._index, HashedNameIndex)
    names = sorted(plain.names())
    assert sorted(second.names()) == names
    for name in names[::37] + ["", "no_such_name", "task_struct", "page"]:
        assert second.ids_by_name(name) == plain.ids_by_name(name)
    for type_id in range(1, len(plain), 211):
        assert second[type_id] == plain[type_id]
    # the cache is keyed by content: another blob does not use it
    other = BTF.from_bytes(btf_blob("vmlinux-6.1.0-56"), cache=True)
    assert isinstance(other._index, type(None)) or isinstance(other._index, NameIndex)


@pytest.mark.parametrize("damage", ["flip", "group-writable", "bad-chain", "wrong-size"])
def test_index_cache_damage_is_never_trusted(tmp_path: Path, monkeypatch, damage: str) -> None:
    from corepy.btf.strings import HashedNameIndex

    monkeypatch.setenv("COREPY_CACHE_DIR", str(tmp_path))
    blob = btf_blob("vmlinux-5.10.0-32")
    plain = BTF.from_bytes(blob)
    BTF.from_bytes(blob, cache=True).ids_by_name("x")
    (path,) = _cache_files(tmp_path)
    if damage == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "group-writable":
        path.chmod(0o620)
    elif damage == "bad-chain":  # every type "followed" by type 0: contradicts the blob's names
        _rewrite_cache(path, lambda f: f.__setitem__(8, bytes(len(f[8]))))
    else:
        _rewrite_cache(path, lambda f: f.__setitem__(2, f[2] + 1))
    cached = BTF.from_bytes(blob, cache=True)
    if damage != "bad-chain":
        assert not isinstance(cached._index, HashedNameIndex)
    dup = next(n for n in sorted(plain.names()) if len(plain.ids_by_name(n)) > 1)
    for name in (dup, "task_struct", "sk_buff"):
        assert cached.ids_by_name(name) == plain.ids_by_name(name)


def test_offsets_cache_stores_at_open_and_keeps_lookups_scanned(tmp_path: Path, monkeypatch) -> None:
    """cache="offsets" (BTF.kernel()'s default): the scan's result is stored at open; a later open
    of the same blob reads it instead of scanning, and answers every lookup as a plain open does."""
    monkeypatch.setenv("COREPY_CACHE_DIR", str(tmp_path))
    blob = btf_blob("vmlinux-5.10.0-32")
    plain = BTF.from_bytes(blob)
    first = BTF.from_bytes(blob, cache="offsets")
    (path,) = _cache_files(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert first._index is None and not first._store_index  # (lookups still search the strings)

    def no_scan(self):  # noqa: ANN001
        raise AssertionError("scanned although the cache holds this blob's offsets")

    monkeypatch.setattr(BTF, "_scan", no_scan)
    second = BTF.from_bytes(blob, cache="offsets")
    assert list(second._offsets) == list(plain._offsets) and list(second._name_offs) == list(plain._name_offs)
    assert second._index is None
    assert second._mid_string is False  # (stored with the offsets: deduplicated strings)
    dup = next(n for n in sorted(plain.names()) if len(plain.ids_by_name(n)) > 1)
    for name in (dup, "task_struct", "int", "no_such_name"):
        assert second.ids_by_name(name) == plain.ids_by_name(name)
    for type_id in range(1, len(plain), 997):
        assert second[type_id] == plain[type_id]
    monkeypatch.undo()
    # an offsets-only entry still serves cache=True, which adds the name index to it
    monkeypatch.setenv("COREPY_CACHE_DIR", str(tmp_path))
    third = BTF.from_bytes(blob, cache=True)
    third.ids_by_name("task_struct")
    from corepy.btf.strings import HashedNameIndex

    assert isinstance(BTF.from_bytes(blob, cache="offsets")._index, HashedNameIndex)


@pytest.mark.parametrize("setting", ["", "0", "1"])
def test_kernel_btf_cache_setting(tmp_path: Path, monkeypatch, setting: str) -> None:
    """BTF.kernel() caches the running kernel's offsets unless COREPY_BTF_CACHE=0; =1 adds the index."""
    if not KERNEL_BTF.exists():
        pytest.skip("no /sys/kernel/btf/vmlinux")
    from corepy.btf import spec

    monkeypatch.setenv("COREPY_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("COREPY_BTF_CACHE", setting)
    monkeypatch.setattr(spec, "_kernel", None)
    btf = BTF.kernel()
    try:
        ids = btf.ids_by_name("task_struct")
        assert ids and all(btf[i].name == "task_struct" for i in ids)
        files = _cache_files(tmp_path)
        assert len(files) == (0 if setting == "0" else 1)
        if files:  # offsets and name offsets (2 x 4 bytes per type), plus the index with =1
            with_index = files[0].stat().st_size > 3 * 4 * len(btf)
            assert with_index == (setting == "1")
    finally:
        btf.close()


def _ext_blob(L: fmt.Layouts, sections: list[tuple[int, bytes, int, int]]) -> bytes:
    """A .BTF.ext with func_info, line_info, core_relo subsections: (rec_size, sec header+records...) each."""
    body = b""
    offs = []
    for rec_size, records, sec_name_off, count in sections:
        offs.append((len(body), 4 + L.ext_info_sec.sizeof() + len(records)))
        body += struct.pack(L.prefix + "I", rec_size) + L.ext_info_sec.build(dict(sec_name_off=sec_name_off,
                                                                                  num_info=count)) + records
    header = L.ext_header.build(dict(magic=fmt.BTF_MAGIC, version=1, flags=0,
                                     hdr_len=L.ext_header.sizeof() + L.ext_core_header.sizeof(),
                                     func_info_off=offs[0][0], func_info_len=offs[0][1],
                                     line_info_off=offs[1][0], line_info_len=offs[1][1]))
    header += L.ext_core_header.build(dict(core_relo_off=offs[2][0], core_relo_len=offs[2][1]))
    return header + body


@pytest.mark.parametrize("L", [fmt.LITTLE, fmt.BIG], ids=["little", "big"])
def test_ext_honours_larger_record_sizes(L: fmt.Layouts) -> None:
    """Newer compilers may append fields to records: the record size in the section rules."""
    btf = BTF.from_bytes(write_btf([Int(1, "int", 4, IntEncoding.SIGNED, 0, 32)], byte_order=L.order))
    sec = btf.ids_by_name("int") and 1  # name offset 1 is "int"
    pad = b"\xaa" * 8
    func = L.func_info.build(dict(insn_off=16, type_id=1)) + pad
    line = L.line_info.build(dict(insn_off=8, file_name_off=1, line_off=1, line_col=7 << 10 | 3)) + pad
    relo = (L.core_relo.build(dict(insn_off=24, type_id=1, access_str_off=1, kind=0)) + pad) * 2
    blob = _ext_blob(L, [(16, func, sec, 1), (24, line, sec, 1), (24, relo, sec, 2)])
    ext = BTFExt.from_bytes(blob, btf)
    assert (ext.func_info_rec_size, ext.line_info_rec_size, ext.core_relo_rec_size) == (16, 24, 24)
    assert ext.func_info == {"int": [FuncInfo(16, 1)]}
    assert ext.line_info["int"][0].line_num == 7 and ext.line_info["int"][0].line_col == 3
    assert [r.insn_off for r in ext.core_relos["int"]] == [24, 24] and ext.core_relos["int"][0].access_str == "int"
    with pytest.raises(BTFError, match="record size 4"):
        BTFExt.from_bytes(_ext_blob(L, [(4, func, sec, 1), (24, line, sec, 1), (24, relo, sec, 2)]), btf)
    with pytest.raises(BTFError, match="run past the end"):
        BTFExt.from_bytes(_ext_blob(L, [(16, func, sec, 5), (24, line, sec, 1), (24, relo, sec, 2)]), btf)


def test_elf_without_btf(tmp_path: Path) -> None:
    if CLANG is None:
        pytest.skip("clang not installed (scripts/setup-system.sh)")
    src = tmp_path / "nobtf.c"
    src.write_text('int x __attribute__((section("license"))) = 1;\n')
    obj = tmp_path / "nobtf.o"
    subprocess.run([CLANG, "-O2", "-target", "bpf", "-c", str(src), "-o", str(obj)], check=True)
    with pytest.raises(BTFError, match="no .BTF section"):
        BTF.from_file(obj)
    obj.write_bytes(obj.read_bytes()[:100])  # a truncated ELF
    with pytest.raises(CorepyError, match="ELF"):
        BTF.from_file(obj)
