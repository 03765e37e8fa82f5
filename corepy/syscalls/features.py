"""Kernel feature probes: try the smallest thing, remember the answer and why.

Each ``has_*`` function returns a bool, memoised for the process. The probe
behind it also records how it decided; :func:`feature_reason` returns that text
(``feature_reason("map_type", MapType.ARENA)``) so callers and tests can say
exactly why something is unavailable. Probes close every fd they open.
"""

from __future__ import annotations

import errno
import functools
import mmap
import os
import struct
from collections.abc import Callable

from .._records import record
from ..asm.insn import ALU64, CALL_INSN, EXIT_INSN, K, LD_IMM64, MOV, PSEUDO_MAP_VALUE, Insn
from ..errors import SyscallError, VerifierError
from .attr import LinkCreateAttr
from .bpf import bpf_errno
from .fd import FD
from .load import btf_load, prog_load
from .maps import map_create
from .uapi import AttachType, Cmd, LinkType, MapFlag, MapType, ProgFlag, ProgType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .helpers import Helper


@record(frozen=True)
class Probe:
    """The answer of one probe and how it was reached."""

    supported: bool
    reason: str

    def __bool__(self) -> bool:
        return self.supported


_PROBES: dict[str, Callable[..., Probe]] = {}


def _probe(name: str) -> Callable[[Callable[..., Probe]], Callable[..., Probe]]:
    def register(fn: Callable[..., Probe]) -> Callable[..., Probe]:
        cached = functools.cache(fn)
        _PROBES[name] = cached
        return cached

    return register


def probe(name: str, *args: Any) -> Probe:
    """Run (or recall) probe ``name`` (``"map_type"``, ``"helper"``, ``"btf_kind"``...)."""
    try:
        fn = _PROBES[name]
    except KeyError:
        raise ValueError(f"unknown feature probe {name!r} (known: {', '.join(sorted(_PROBES))})") from None
    return fn(*args)


def feature_reason(name: str, *args: Any) -> str:
    """Why probe ``name`` answered as it did, e.g. for a test's skip message."""
    return probe(name, *args).reason


def _errname(err: int) -> str:
    return "ENOTSUPP" if err == 524 else errno.errorcode.get(err, str(err))


def _describe(e: SyscallError) -> str:
    return f"{_errname(e.errno)} ({os.strerror(e.errno) if e.errno != 524 else 'not supported'})"


def _name(enum_type: type, value: int) -> str:
    try:
        return enum_type(int(value)).name.lower()
    except ValueError:
        return f"#{int(value)}"


RET0 = [Insn(ALU64 | MOV | K, dst=0, imm=0), Insn(EXIT_INSN)]

# --- BTF blobs, built by hand (libbpf's probe_kern_btf_* types) ---

_BTF_HEADER = struct.Struct("<HBBIIIII")


def _btf_type(name_off: int, kind: int, vlen: int, size_or_type: int, kflag: int = 0) -> bytes:
    return struct.pack("<III", name_off, (kflag << 31) | (kind << 24) | vlen, size_or_type)


def _int32(name_off: int) -> bytes:
    return _btf_type(name_off, 1, 0, 4) + struct.pack("<I", (1 << 24) | 32)  # signed, 32 bits


def raw_btf(types: bytes, strings: bytes) -> bytes:
    """A complete BTF blob from encoded ``types`` and the string section ``strings``."""
    header = _BTF_HEADER.pack(0xEB9F, 1, 0, _BTF_HEADER.size, 0, len(types), len(types), len(strings))
    return header + types + strings


def _btf_func(linkage: int) -> bytes:
    types = (
        _int32(1)  # [1] int
        + _btf_type(0, 13, 1, 0) + struct.pack("<II", 7, 1)  # [2] FUNC_PROTO (int a)
        + _btf_type(5, 12, linkage, 2)  # [3] FUNC x
    )
    return raw_btf(types, b"\0int\0x\0a\0")


def _btf_datasec(name: bytes) -> bytes:
    types = (
        _int32(0)  # [1] int
        + _btf_type(1, 14, 0, 1) + struct.pack("<I", 0)  # [2] VAR x, static
        + _btf_type(3, 15, 1, 4) + struct.pack("<III", 2, 0, 4)  # [3] DATASEC
    )
    return raw_btf(types, b"\0x\0" + name + b"\0")


_BTF_BLOBS: dict[str, Callable[[], bytes]] = {
    "btf": lambda: raw_btf(_int32(1), b"\0int\0"),
    "func": lambda: _btf_func(0),
    "func_global": lambda: _btf_func(1),
    "datasec": lambda: _btf_datasec(b".data"),
    "qmark_datasec": lambda: _btf_datasec(b"?.data"),
    "float": lambda: raw_btf(_btf_type(1, 16, 0, 4), b"\0float\0"),
    "decl_tag": lambda: raw_btf(
        _int32(0) + _btf_type(1, 14, 0, 1) + struct.pack("<I", 0) + _btf_type(1, 17, 0, 2) + struct.pack("<i", -1),
        b"\0tag\0",
    ),
    "type_tag": lambda: raw_btf(_int32(0) + _btf_type(1, 18, 0, 1) + _btf_type(0, 2, 0, 2), b"\0tag\0"),
    "enum64": lambda: raw_btf(_btf_type(1, 19, 1, 8) + struct.pack("<III", 1, 1, 1), b"\0enum64\0"),
}


@_probe("btf_feature")
def _probe_btf_feature(feature: str) -> Probe:
    if feature not in _BTF_BLOBS:
        raise ValueError(f"unknown BTF feature {feature!r} (known: {', '.join(_BTF_BLOBS)})")
    what = "BTF" if feature == "btf" else f"BTF {feature.replace('_', ' ')}"
    try:
        with btf_load(_BTF_BLOBS[feature]()):
            return Probe(True, f"BPF_BTF_LOAD of a minimal {what} blob succeeded")
    except SyscallError as e:
        return Probe(False, f"BPF_BTF_LOAD of a minimal {what} blob failed: {_describe(e)}")


def has_btf() -> bool:
    return bool(probe("btf_feature", "btf"))


def has_btf_func() -> bool:
    return bool(probe("btf_feature", "func"))


def has_btf_func_global() -> bool:
    return bool(probe("btf_feature", "func_global"))


def has_btf_datasec() -> bool:
    return bool(probe("btf_feature", "datasec"))


def has_btf_qmark_datasec() -> bool:
    return bool(probe("btf_feature", "qmark_datasec"))


def has_btf_float() -> bool:
    return bool(probe("btf_feature", "float"))


def has_btf_decl_tag() -> bool:
    return bool(probe("btf_feature", "decl_tag"))


def has_btf_type_tag() -> bool:
    return bool(probe("btf_feature", "type_tag"))


def has_btf_enum64() -> bool:
    return bool(probe("btf_feature", "enum64"))


# BTF kind number -> the probe that covers it (kinds 1..11 came with BTF itself)
_KIND_FEATURE = {12: "func", 13: "func", 14: "datasec", 15: "datasec", 16: "float", 17: "decl_tag", 18: "type_tag", 19: "enum64"}


@_probe("btf_kind")
def _probe_btf_kind(kind: int) -> Probe:
    kind = int(kind)
    if 1 <= kind <= 11:
        return probe("btf_feature", "btf")
    if kind not in _KIND_FEATURE:
        return Probe(False, f"BTF kind {kind} is unknown to corepy (known kinds: 1..19)")
    return probe("btf_feature", _KIND_FEATURE[kind])


def has_btf_kind(kind: int) -> bool:
    """Whether the kernel accepts BTF kind ``kind`` (a :class:`corepy.btf.types.Kind`)."""
    return bool(probe("btf_kind", kind))


def btf_features() -> dict[str, bool]:
    """All BTF probes, keyed like :class:`corepy.btf.sanitize.BTFFeatures` fields."""
    names = ["func", "func_global", "datasec", "float", "decl_tag", "type_tag", "enum64", "qmark_datasec"]
    return {f"has_{n}": bool(probe("btf_feature", n)) for n in names}


# --- maps ---


@_probe("map_type")
def _probe_map_type(map_type: int) -> Probe:
    kind = _name(MapType, map_type)
    key, value, entries, flags, extra = 4, 4, 1, 0, {}
    btf: FD | None = None
    inner: FD | None = None
    expected_err = 0
    try:
        if map_type in (MapType.RINGBUF, MapType.USER_RINGBUF):
            key, value, entries = 0, 0, mmap.PAGESIZE
        elif map_type in (MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER):
            key = 0
        elif map_type == MapType.STACK_TRACE:
            value = 8
        elif map_type == MapType.LPM_TRIE:
            key, value, flags = 8, 8, MapFlag.NO_PREALLOC
        elif map_type in (MapType.CGROUP_STORAGE, MapType.PERCPU_CGROUP_STORAGE):
            key, value, entries = 16, 8, 0  # struct bpf_cgroup_storage_key
        elif map_type in (MapType.SK_STORAGE, MapType.INODE_STORAGE, MapType.TASK_STORAGE, MapType.CGRP_STORAGE):
            # libbpf's value type: struct val { int cnt; struct bpf_spin_lock l; }
            types = (
                _int32(0)
                + _btf_type(1, 4, 1, 4) + struct.pack("<III", 15, 1, 0)
                + _btf_type(15, 4, 2, 8) + struct.pack("<III", 19, 1, 0) + struct.pack("<III", 23, 2, 32)
            )
            btf = btf_load(raw_btf(types, b"\0bpf_spin_lock\0val\0cnt\0l\0"))
            value, entries, flags = 8, 0, MapFlag.NO_PREALLOC
            extra = {"btf_fd": btf, "btf_key_type_id": 1, "btf_value_type_id": 3}
        elif map_type in (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS):
            inner = map_create(MapType.HASH, 4, 4, 1)
            extra = {"inner_map_fd": inner}
        elif map_type == MapType.STRUCT_OPS:
            value, extra, expected_err = 256, {"btf_vmlinux_value_type_id": 1}, 524  # ENOTSUPP: type exists
        elif map_type == MapType.ARENA:
            key, value, flags = 0, 0, MapFlag.MMAPABLE
        try:
            with map_create(map_type, key, value, entries, flags=flags, **extra):
                return Probe(True, f"BPF_MAP_CREATE of a minimal {kind} map succeeded")
        except SyscallError as e:
            if expected_err and e.errno == expected_err:
                return Probe(True, f"BPF_MAP_CREATE of a {kind} map failed as expected of a known type: {_describe(e)}")
            return Probe(False, f"BPF_MAP_CREATE of a minimal {kind} map failed: {_describe(e)}")
    except SyscallError as e:
        return Probe(False, f"could not prepare the {kind} map probe: {e}")
    finally:
        for fd in (btf, inner):
            if fd is not None:
                fd.close()


def has_map_type(map_type: MapType | int) -> bool:
    """Whether BPF_MAP_CREATE accepts ``map_type``."""
    return bool(probe("map_type", int(map_type)))


@_probe("mmapable_maps")
def _probe_mmapable() -> Probe:
    try:
        with map_create(MapType.ARRAY, 4, 4, 1, flags=MapFlag.MMAPABLE) as m:
            mem = mmap.mmap(m.fileno(), mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
            mem.close()
        return Probe(True, "an mmap()ed BPF_F_MMAPABLE array worked")
    except SyscallError as e:
        return Probe(False, f"BPF_MAP_CREATE with BPF_F_MMAPABLE failed: {_describe(e)}")
    except OSError as e:
        return Probe(False, f"mmap of a BPF_F_MMAPABLE array failed: {e.strerror}")


def has_mmapable_maps() -> bool:
    return bool(probe("mmapable_maps"))


# --- programs ---


def _kernel_version_code() -> int:
    parts = (os.uname().release.split("-")[0].split(".") + ["0", "0"])[:3]
    try:
        major, minor, patch = (int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts)
    except ValueError:
        return 0
    return (major << 16) | (minor << 8) | min(patch, 255)


def _prog_settings(prog_type: int) -> tuple[dict[str, Any], str | None]:
    """prog_load() keywords for a minimal program of ``prog_type``, and the verifier message that
    proves the type exists when the load cannot succeed (libbpf's probe_prog_load)."""
    if prog_type == ProgType.KPROBE:
        return {"kern_version": _kernel_version_code()}, None
    if prog_type == ProgType.CGROUP_SOCK_ADDR:
        return {"expected_attach_type": AttachType.CGROUP_INET4_CONNECT}, None
    if prog_type == ProgType.CGROUP_SOCKOPT:
        return {"expected_attach_type": AttachType.CGROUP_GETSOCKOPT}, None
    if prog_type == ProgType.SK_LOOKUP:
        return {"expected_attach_type": AttachType.SK_LOOKUP}, None
    if prog_type == ProgType.NETFILTER:
        return {"expected_attach_type": AttachType.NETFILTER}, None
    if prog_type == ProgType.SYSCALL:
        return {"prog_flags": ProgFlag.SLEEPABLE}, None
    if prog_type == ProgType.TRACING:
        return {"expected_attach_type": AttachType.TRACE_FENTRY, "attach_btf_id": 1}, "attach_btf_id 1 is not a function"
    if prog_type == ProgType.LSM:
        return {"expected_attach_type": AttachType.LSM_MAC, "attach_btf_id": 1}, "attach_btf_id 1 is not a function"
    if prog_type == ProgType.EXT:
        return {"attach_btf_id": 1}, "Cannot replace kernel functions"
    if prog_type == ProgType.STRUCT_OPS:
        return {"attach_btf_id": 1}, "attach_btf_id 1 is not a supported struct"
    return {}, None


@_probe("prog_type")
def _probe_prog_type(prog_type: int) -> Probe:
    kind = _name(ProgType, prog_type)
    settings, proof = _prog_settings(prog_type)
    try:
        with prog_load(prog_type, RET0, **settings):
            return Probe(True, f"BPF_PROG_LOAD of a minimal {kind} program succeeded")
    except VerifierError as e:
        if proof and proof in e.log:
            return Probe(True, f"the verifier knows {kind} programs: {proof!r}")
        line = e.log.strip().splitlines()[-1] if e.log.strip() else "no verifier log"
        return Probe(False, f"BPF_PROG_LOAD of a minimal {kind} program failed: {_describe(e)}: {line}")
    except SyscallError as e:
        return Probe(False, f"BPF_PROG_LOAD of a minimal {kind} program failed: {_describe(e)}")


def has_prog_type(prog_type: ProgType | int) -> bool:
    """Whether a minimal program of ``prog_type`` loads (or is provably known to the verifier)."""
    return bool(probe("prog_type", int(prog_type)))


_HELPER_ABSENT = ("invalid func ", "unknown func ", "program of this type cannot use helper ")


@_probe("helper")
def _probe_helper(prog_type: int, helper_id: int) -> Probe:
    from .helpers import Helper

    kind = _name(ProgType, prog_type)
    known = int(helper_id) in Helper._value2member_map_
    helper = f"bpf_{Helper(int(helper_id)).name}#{int(helper_id)}" if known else f"helper #{int(helper_id)}"
    if prog_type in (ProgType.TRACING, ProgType.EXT, ProgType.LSM, ProgType.STRUCT_OPS):
        return Probe(False, f"helpers cannot be probed for {kind} programs (they need a BTF attach target)")
    if not has_prog_type(prog_type):
        return Probe(False, f"{kind} programs are unavailable: {feature_reason('prog_type', int(prog_type))}")
    settings, _ = _prog_settings(prog_type)
    insns = [Insn(CALL_INSN, imm=int(helper_id)), Insn(EXIT_INSN)]
    try:
        with prog_load(prog_type, insns, **settings):
            return Probe(True, f"a {kind} program calling {helper} loaded")
    except VerifierError as e:
        for line in e.log.splitlines():
            if any(marker in line for marker in _HELPER_ABSENT):
                return Probe(False, f"the verifier refused {helper} in a {kind} program: {line.strip()!r}")
        return Probe(True, f"the verifier accepted {helper} in a {kind} program (it failed later, on its arguments)")
    except SyscallError as e:
        return Probe(False, f"BPF_PROG_LOAD of a {kind} program calling {helper} failed: {_describe(e)}")


def has_helper(prog_type: ProgType | int, helper_id: Helper | int) -> bool:
    """Whether programs of ``prog_type`` may call helper ``helper_id``."""
    return bool(probe("helper", int(prog_type), int(helper_id)))


def has_bpf_cookie() -> bool:
    """Whether tracing programs can read a BPF cookie (``bpf_get_attach_cookie``, libbpf FEAT_BPF_COOKIE)."""
    from .helpers import Helper

    return has_helper(ProgType.TRACEPOINT, Helper.get_attach_cookie)


@_probe("prog_name")
def _probe_prog_name() -> Probe:
    try:
        with prog_load(ProgType.SOCKET_FILTER, RET0, name="corepy_nametest"):
            return Probe(True, "a socket filter named 'corepy_nametest' loaded")
    except SyscallError as e:
        return Probe(False, f"a named program failed to load: {_describe(e)}")


def has_prog_name() -> bool:
    """Whether the kernel takes program and map names (4.15+)."""
    return bool(probe("prog_name"))


@_probe("global_data")
def _probe_global_data() -> Probe:
    try:
        with map_create(MapType.ARRAY, 4, 32, 1) as m:
            insns = [
                Insn(LD_IMM64, dst=1, src=PSEUDO_MAP_VALUE, imm=m.fileno()),
                Insn(0, imm=0),
                Insn(0x7A, dst=1, off=0, imm=42),  # *(u64 *)(r1 + 0) = 42
                *RET0,
            ]
            with prog_load(ProgType.SOCKET_FILTER, insns):
                return Probe(True, "a program addressing a map value directly (BPF_PSEUDO_MAP_VALUE) loaded")
    except SyscallError as e:
        return Probe(False, f"direct map value access failed: {_describe(e)}")


def has_global_data() -> bool:
    """Whether programs can address map values directly (global variables, libbpf FEAT_GLOBAL_DATA)."""
    return bool(probe("global_data"))


# --- links ---


def _link_probe(prog_type: ProgType, attach_type: AttachType, fill: Callable[[LinkCreateAttr], Any], supported_errno: int | None) -> Probe:
    name = _name(AttachType, attach_type)
    try:
        prog = prog_load(prog_type, RET0, expected_attach_type=attach_type)
    except SyscallError as e:
        return Probe(False, f"a {_name(ProgType, prog_type)} program for {name} did not load: {_describe(e)}")
    with prog:
        attr = LinkCreateAttr(prog_fd=prog.fileno(), attach_type=int(attach_type))
        keep = fill(attr)  # buffers referenced by attr stay alive in ``keep``
        result, err = bpf_errno(Cmd.LINK_CREATE, attr)
        del keep
        if result >= 0:
            os.close(result)
            return Probe(True, f"BPF_LINK_CREATE ({name}) succeeded")
        if supported_errno is not None and err == supported_errno:
            return Probe(True, f"BPF_LINK_CREATE ({name}) on a bogus target failed with {_errname(err)}: the attach type exists")
        return Probe(False, f"BPF_LINK_CREATE ({name}) failed: {_errname(err)} ({os.strerror(err) if err != 524 else 'not supported'})")


def _tcx_like(attach_type: AttachType) -> Probe:
    def fill(attr: LinkCreateAttr) -> None:
        attr.target_fd = 0xFFFFFFFF  # no such ifindex: ENODEV proves the kernel knows the attach type

    return _link_probe(ProgType.SCHED_CLS, attach_type, fill, errno.ENODEV)


def _uprobe_multi() -> Probe:
    import ctypes

    path = ctypes.create_string_buffer(b"/")
    offsets = (ctypes.c_uint64 * 1)(0)

    def fill(attr: LinkCreateAttr) -> tuple[Any, ...]:
        attr.uprobe_multi.path, attr.uprobe_multi.offsets, attr.uprobe_multi.cnt = ctypes.addressof(path), ctypes.addressof(offsets), 1
        return path, offsets

    # "/" is not a regular file: EBADF proves the kernel parsed the uprobe_multi request
    return _link_probe(ProgType.KPROBE, AttachType.TRACE_UPROBE_MULTI, fill, errno.EBADF)


def _kprobe_multi() -> Probe:
    import ctypes

    name = ctypes.create_string_buffer(b"vprintk")
    syms = (ctypes.c_uint64 * 1)(ctypes.addressof(name))

    def fill(attr: LinkCreateAttr) -> tuple[Any, ...]:
        attr.kprobe_multi.syms, attr.kprobe_multi.cnt = ctypes.addressof(syms), 1
        return name, syms

    return _link_probe(ProgType.KPROBE, AttachType.TRACE_KPROBE_MULTI, fill, None)


def _perf_event_link() -> Probe:
    def fill(attr: LinkCreateAttr) -> None:
        attr.target_fd = 0xFFFFFFFF  # -1: EBADF proves the kernel has perf_event links

    return _link_probe(ProgType.TRACEPOINT, AttachType.PERF_EVENT, fill, errno.EBADF)


def _cgroup_link() -> Probe:
    def fill(attr: LinkCreateAttr) -> None:
        attr.target_fd = 0xFFFFFFFF

    return _link_probe(ProgType.CGROUP_SKB, AttachType.CGROUP_INET_INGRESS, fill, errno.EBADF)


_LINK_PROBES: dict[int, Callable[[], Probe]] = {
    LinkType.TCX: lambda: _tcx_like(AttachType.TCX_INGRESS),
    LinkType.NETKIT: lambda: _tcx_like(AttachType.NETKIT_PRIMARY),
    LinkType.UPROBE_MULTI: _uprobe_multi,
    LinkType.KPROBE_MULTI: _kprobe_multi,
    LinkType.PERF_EVENT: _perf_event_link,
    LinkType.CGROUP: _cgroup_link,
}


@_probe("link_type")
def _probe_link_type(link_type: int) -> Probe:
    try:
        fn = _LINK_PROBES[link_type]
    except KeyError:
        known = ", ".join(_name(LinkType, t) for t in _LINK_PROBES)
        raise ValueError(f"no cheap probe for link type {_name(LinkType, link_type)} (probed: {known})") from None
    return fn()


def has_link_type(link_type: LinkType | int) -> bool:
    """Whether BPF_LINK_CREATE supports ``link_type`` (tcx, netkit, uprobe_multi, kprobe_multi,
    perf_event, cgroup; others raise ValueError)."""
    return bool(probe("link_type", int(link_type)))


# --- kernel symbols ---

_SYSCALL_PREFIX = {"x86_64": "__x64_", "aarch64": "__arm64_", "arm64": "__arm64_", "s390x": "__s390x_", "riscv64": "__riscv_"}


@_probe("syscall_wrapper")
def _probe_syscall_wrapper() -> Probe:
    prefix = _SYSCALL_PREFIX.get(os.uname().machine, "")
    symbol = f"{prefix}sys_bpf"
    if not prefix:
        return Probe(False, f"no syscall wrapper prefix known for {os.uname().machine}")
    try:
        with open("/proc/kallsyms") as f:
            for line in f:
                if line.rstrip().endswith(f" {symbol}"):
                    return Probe(True, f"/proc/kallsyms has {symbol}")
    except OSError as e:
        return Probe(False, f"cannot read /proc/kallsyms: {e.strerror}")
    return Probe(False, f"/proc/kallsyms has no {symbol}")


def has_syscall_wrapper() -> bool:
    """Whether syscalls are entered through arch wrappers (``__x64_sys_*``): kprobes on syscalls
    must then use the wrapper name (libbpf FEAT_SYSCALL_WRAPPER)."""
    return bool(probe("syscall_wrapper"))
