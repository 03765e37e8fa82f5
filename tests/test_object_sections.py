"""libbpf's SEC() conventions: matching rules and the table, cross-checked with libbpf 1.1's
libbpf_prog_type_by_name() through ctypes where libbpf 1.1 knows the section."""

from __future__ import annotations

import ctypes
import ctypes.util

import pytest

from corepy.errors import ObjectError
from corepy.object.sections import SECTION_DEFS, SecFlag, parse_section
from corepy.syscalls.uapi import AttachType as A
from corepy.syscalls.uapi import ProgType as P


@pytest.mark.parametrize("name, prog_type, attach, attach_to, autoload, sleepable", [
    ("tp/syscalls/sys_enter_write", P.TRACEPOINT, None, "syscalls/sys_enter_write", True, False),
    ("tracepoint/sched/sched_switch", P.TRACEPOINT, None, "sched/sched_switch", True, False),
    ("tp", P.TRACEPOINT, None, None, True, False),
    ("?raw_tp/sys_enter", P.RAW_TRACEPOINT, None, "sys_enter", False, False),
    ("raw_tp.w/sys_enter", P.RAW_TRACEPOINT_WRITABLE, None, "sys_enter", True, False),
    ("tp_btf/sched_process_exec", P.TRACING, A.TRACE_RAW_TP, "sched_process_exec", True, False),
    ("fentry/do_unlinkat", P.TRACING, A.TRACE_FENTRY, "do_unlinkat", True, False),
    ("fentry.s/do_unlinkat", P.TRACING, A.TRACE_FENTRY, "do_unlinkat", True, True),
    ("?fexit.s/vfs_read", P.TRACING, A.TRACE_FEXIT, "vfs_read", False, True),
    ("lsm.s/file_open", P.LSM, A.LSM_MAC, "file_open", True, True),
    ("uprobe//bin/bash:readline", P.KPROBE, None, "/bin/bash:readline", True, False),
    ("uretprobe.s//usr/lib/libc.so.6:malloc+0x10", P.KPROBE, None, "/usr/lib/libc.so.6:malloc+0x10", True, True),
    ("uprobe", P.KPROBE, None, None, True, False),
    ("kprobe.multi/vfs_*", P.KPROBE, A.TRACE_KPROBE_MULTI, "vfs_*", True, False),
    ("usdt/./bin:provider:name", P.KPROBE, None, "./bin:provider:name", True, False),
    ("xdp", P.XDP, A.XDP, None, True, False),
    ("xdp.frags", P.XDP, A.XDP, None, True, False),
    ("xdp/devmap", P.XDP, A.XDP_DEVMAP, None, True, False),
    ("tc", P.SCHED_CLS, None, None, True, False),
    ("tcx/ingress", P.SCHED_CLS, A.TCX_INGRESS, None, True, False),
    ("socket", P.SOCKET_FILTER, None, None, True, False),
    ("cgroup_skb/egress", P.CGROUP_SKB, A.CGROUP_INET_EGRESS, None, True, False),
    ("cgroup/connect4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT, None, True, False),
    ("sk_skb/stream_parser", P.SK_SKB, A.SK_SKB_STREAM_PARSER, None, True, False),
    ("sk_skb", P.SK_SKB, None, None, True, False),
    ("syscall", P.SYSCALL, None, None, True, True),
    ("iter/task", P.TRACING, A.TRACE_ITER, "task", True, False),
    ("struct_ops/dctcp_init", P.STRUCT_OPS, None, "dctcp_init", True, False),
])
def test_parse_section(name, prog_type, attach, attach_to, autoload, sleepable):
    s = parse_section(name)
    assert (s.prog_type, s.expected_attach_type, s.attach_to, s.autoload, s.sleepable) == (
        prog_type, attach, attach_to, autoload, sleepable)
    assert s.name == name.lstrip("?")


def test_flags():
    assert parse_section("xdp.frags/cpumap").flags & SecFlag.XDP_FRAGS
    assert parse_section("usdt").flags & SecFlag.USDT
    assert parse_section("fentry/x").flags & SecFlag.ATTACH_BTF
    assert parse_section("xdp").flags == SecFlag.ATTACHABLE_OPT


@pytest.mark.parametrize("name", ["xdp/foo", "socket/x", "tpx/a", "kprobex", "", "?", "sk_skb/other", "tracepoint_x"])
def test_unknown_sections(name):
    with pytest.raises(ObjectError, match="unknown program section"):
        parse_section(name)


def _libbpf():
    path = ctypes.util.find_library("bpf")
    if path is None:
        pytest.skip("libbpf shared library not installed (libbpf1)")
    lib = ctypes.CDLL(path)
    lib.libbpf_prog_type_by_name.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]
    return lib


def test_table_agrees_with_libbpf():
    """Every row, bare and with '/extras', classified as libbpf does (rows libbpf 1.1 lacks are newer)."""
    lib = _libbpf()
    compared = 0
    for d in SECTION_DEFS:
        names = [d.base] if not d.prefix.endswith(("+", "/")) else [d.base, d.base + "/x"]
        if d.prefix.endswith("/"):
            names = [d.prefix + "x"]
        for name in names:
            ptype, atype = ctypes.c_int(), ctypes.c_int()
            if lib.libbpf_prog_type_by_name(name.encode(), ctypes.byref(ptype), ctypes.byref(atype)) != 0:
                continue  # libbpf 1.1 predates this section
            s = parse_section(name)
            if (ptype.value, atype.value) != (int(s.prog_type), int(s.expected_attach_type or 0)):
                # libbpf 1.1 had tc/ingress etc. as plain tc; newer rows win by design
                assert name.startswith(("tc/", "tcx/", "netkit/")), name
                continue
            compared += 1
    assert compared > 80


def test_kernel_btf_target():
    from corepy.object.sections import kernel_btf_target

    def target(name):
        s = parse_section(name)
        return kernel_btf_target(s.expected_attach_type, s.attach_to)

    assert target("tp_btf/sched_switch") == ("btf_trace_sched_switch", "TYPEDEF")
    assert target("lsm.s/file_open") == ("bpf_lsm_file_open", "FUNC")
    assert target("iter/task") == ("bpf_iter_task", "FUNC")
    assert target("fentry/do_unlinkat") == ("do_unlinkat", "FUNC")
