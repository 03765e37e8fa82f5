"""The UAPI written down in corepy.syscalls matches the running kernel's own BTF, field by field.

The oracle is ``bpftool btf dump file /sys/kernel/btf/vmlinux`` (raw format): every
ctypes field we declare must exist in the kernel's type at the same offset with the
same size, every structure must have the kernel's size, and every enum value must
equal the kernel's.
"""

from __future__ import annotations

import ctypes
import functools
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from corepy.syscalls import attr as A
from corepy.syscalls import perf, uapi

VMLINUX = Path("/sys/kernel/btf/vmlinux")

pytestmark = pytest.mark.skipif(not VMLINUX.exists(), reason="no /sys/kernel/btf/vmlinux")

_HEADER = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(.*)$")
_MEMBER = re.compile(r"^\t'([^']*)' (?:type_id=(\d+) bits_offset=(\d+)(?: bitfield_size=(\d+))?|val=(-?\d+))")


@functools.cache
def kernel_types() -> dict[int, tuple[str, str, dict[str, str], list[tuple]]]:
    """id -> (kind, name, attributes, members) from bpftool's raw dump."""
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed (scripts/setup-system.sh installs it)")
    text = subprocess.run(["bpftool", "btf", "dump", "file", str(VMLINUX)], capture_output=True, text=True, check=True).stdout
    types: dict[int, tuple[str, str, dict[str, str], list[tuple]]] = {}
    members: list[tuple] = []
    for line in text.splitlines():
        if m := _HEADER.match(line):
            members = []
            attrs = dict(kv.split("=", 1) for kv in m.group(4).split() if "=" in kv)
            types[int(m.group(1))] = (m.group(2), m.group(3), attrs, members)
        elif m := _MEMBER.match(line):
            members.append(m.groups())
    return types


@functools.cache
def by_name(kind: str, name: str) -> int:
    matches = [tid for tid, (k, n, _, _) in kernel_types().items() if k == kind and n == name]
    assert matches, f"{kind} {name} not in the kernel's BTF"
    return matches[0]


def resolve(tid: int) -> int:
    kinds = kernel_types()
    while kinds[tid][0] in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
        tid = int(kinds[tid][2]["type_id"])
    return tid


def type_size(tid: int) -> int:
    kind, _, attrs, _ = kernel_types()[resolve(tid)]
    if kind == "ARRAY":
        return type_size(int(attrs["type_id"])) * int(attrs["nr_elems"])
    if kind == "PTR":
        return 8
    return int(attrs["size"])


def kernel_layout(tid: int, prefix: str = "", base: int = 0) -> dict[str, tuple[int, int]]:
    """Flattened ``name -> (byte offset, size)``; anonymous members merge into their parent,
    named struct/union members also appear as ``name.member``. Bitfields are left out."""
    out: dict[str, tuple[int, int]] = {}
    for name, type_id, bits, bitfield, _ in kernel_types()[resolve(tid)][3]:
        if bitfield:
            continue
        member_tid, offset = resolve(int(type_id)), base + int(bits) // 8
        is_aggregate = kernel_types()[member_tid][0] in ("STRUCT", "UNION")
        if name == "(anon)" and is_aggregate:
            for key, value in kernel_layout(member_tid, prefix, offset).items():
                out.setdefault(key, value)
            continue
        out.setdefault(prefix + name, (offset, type_size(member_tid)))
        if is_aggregate:
            for key, value in kernel_layout(member_tid, f"{prefix}{name}.", offset).items():
                out.setdefault(key, value)
    return out


def our_layout(struct: type, prefix: str = "", base: int = 0) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    anonymous = set(getattr(struct, "_anonymous_", ()))
    for name, ctype, *bits in struct._fields_:
        descriptor = getattr(struct, name)
        offset = base + descriptor.offset
        if name in anonymous:
            out.update(our_layout(ctype, prefix, offset))
            continue
        if bits or name.startswith("_"):
            continue
        out[prefix + name] = (offset, ctypes.sizeof(ctype))
        if issubclass(ctype, (ctypes.Structure, ctypes.Union)):
            out.update(our_layout(ctype, f"{prefix}{name}.", offset))
    return out


def attr_member(index: int) -> int:
    """Type id of the index-th member of ``union bpf_attr``."""
    members = kernel_types()[by_name("UNION", "bpf_attr")][3]
    return resolve(int(members[index][1]))


# our Structure -> position of the matching member in union bpf_attr
ATTR_MEMBERS = [
    (A.MapCreateAttr, 0),
    (A.MapElemAttr, 1),
    (A.MapBatchAttr, 2),
    (A.ProgLoadAttr, 3),
    (A.ObjPinAttr, 4),
    (A.ProgAttachAttr, 5),
    (A.TestRunAttr, 6),
    (A.GetIdAttr, 7),
    (A.InfoAttr, 8),
    (A.QueryAttr, 9),
    (A.RawTracepointAttr, 10),
    (A.BTFLoadAttr, 11),
    (A.TaskFdQueryAttr, 12),
    (A.LinkCreateAttr, 13),
    (A.LinkUpdateAttr, 14),
    (A.LinkDetachAttr, 15),
    (A.EnableStatsAttr, 16),
    (A.IterCreateAttr, 17),
    (A.ProgBindMapAttr, 18),
]


def _compare(ours: type, kernel_tid: int, renames: dict[str, str] | None = None) -> None:
    theirs = kernel_layout(kernel_tid)
    mine = our_layout(ours)
    assert mine, ours
    for name, (offset, size) in mine.items():
        kernel_name = (renames or {}).get(name, name)
        assert kernel_name in theirs, f"{ours.__name__}.{name} is not a field of the kernel's type"
        assert theirs[kernel_name] == (offset, size), f"{ours.__name__}.{name}: ours {(offset, size)}, kernel {theirs[kernel_name]}"
    assert ctypes.sizeof(ours) == type_size(kernel_tid), ours.__name__


@pytest.mark.parametrize("ours,index", ATTR_MEMBERS, ids=[s.__name__ for s, _ in ATTR_MEMBERS])
def test_bpf_attr_members(ours: type, index: int) -> None:
    _compare(ours, attr_member(index))


@pytest.mark.parametrize(
    "ours,name",
    [(A.ProgInfo, "bpf_prog_info"), (A.MapInfo, "bpf_map_info"), (A.BTFInfo, "bpf_btf_info"), (A.LinkInfo, "bpf_link_info")],
)
def test_info_structs(ours: type, name: str) -> None:
    _compare(ours, by_name("STRUCT", name))


def test_prog_info_gpl_bit() -> None:
    members = {m[0]: m for m in kernel_types()[by_name("STRUCT", "bpf_prog_info")][3]}
    _, _, bits, bitfield, _ = members["gpl_compatible"]
    assert int(bits) == A.ProgInfo.ifindex.offset * 8 + 32 and bitfield == "1"


def test_perf_event_attr() -> None:
    tid = by_name("STRUCT", "perf_event_attr")
    theirs = kernel_layout(tid)
    mine = our_layout(perf.PerfEventAttr)
    mine.pop("flags")
    for name, value in mine.items():
        assert theirs.get(name) == value, name
    assert ctypes.sizeof(perf.PerfEventAttr) == type_size(tid)
    bit_offsets = {m[0]: int(m[2]) - 8 * perf.PerfEventAttr.flags.offset for m in kernel_types()[tid][3] if m[3]}
    assert 1 << bit_offsets["disabled"] == perf.ATTR_DISABLED
    assert 1 << bit_offsets["freq"] == perf.ATTR_FREQ
    assert 1 << bit_offsets["sigtrap"] == perf.ATTR_SIGTRAP
    assert bit_offsets["precise_ip"] == perf.ATTR_PRECISE_IP_SHIFT


def kernel_enum(name: str | None, prefix: str, member: str | None = None) -> dict[str, int]:
    """Values of enum ``name`` (or of the anonymous enum holding ``member``) with ``prefix`` removed."""
    for kind, enum_name, _, members in kernel_types().values():
        if kind not in ("ENUM", "ENUM64"):
            continue
        names = {m[0] for m in members}
        if (name is not None and enum_name == name) or (name is None and member in names):
            return {m[0][len(prefix):]: int(m[4]) for m in members if m[0].startswith(prefix)}
    raise AssertionError(f"enum {name or member} not in the kernel's BTF")


@pytest.mark.parametrize(
    "ours,name,prefix",
    [
        (uapi.Cmd, "bpf_cmd", "BPF_"),
        (uapi.MapType, "bpf_map_type", "BPF_MAP_TYPE_"),
        (uapi.ProgType, "bpf_prog_type", "BPF_PROG_TYPE_"),
        (uapi.AttachType, "bpf_attach_type", "BPF_"),
        (uapi.LinkType, "bpf_link_type", "BPF_LINK_TYPE_"),
        (uapi.Helper, "bpf_func_id", "BPF_FUNC_"),
        (uapi.PerfEventType, "bpf_perf_event_type", "BPF_PERF_EVENT_"),
        (uapi.StatsType, "bpf_stats_type", "BPF_STATS_"),
    ],
)
def test_enums(ours: type, name: str, prefix: str) -> None:
    theirs = {k: v for k, v in kernel_enum(name, prefix).items() if not k.startswith("_") and not k.endswith("_DEPRECATED")}
    theirs = {k.upper(): v for k, v in theirs.items()}
    mine = {name.upper(): m.value for name, m in ours.__members__.items()}  # aliases too (PROG_RUN)
    for key, value in theirs.items():
        assert mine.get(key) == value, f"{ours.__name__}.{key}: ours {mine.get(key)}, kernel {value}"
    assert set(mine) <= set(theirs), set(mine) - set(theirs)


def test_map_flags_and_update_flags() -> None:
    theirs = kernel_enum(None, "BPF_F_", member="BPF_F_NO_PREALLOC")
    for flag in uapi.MapFlag:
        assert theirs[flag.name] == flag.value, flag
    updates = kernel_enum(None, "BPF_", member="BPF_NOEXIST")
    assert (updates["ANY"], updates["NOEXIST"], updates["EXIST"], updates["F_LOCK"]) == (
        uapi.BPF_ANY, uapi.BPF_NOEXIST, uapi.BPF_EXIST, uapi.BPF_F_LOCK)
