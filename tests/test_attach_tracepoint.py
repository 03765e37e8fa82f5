"""Tracepoints (perf event + BPF link), raw tracepoints and tp_btf on the real kernel: the
program counts this process's getppid() calls; link info, update, detach, pin round trip."""

from __future__ import annotations

import os
import platform
import time

import pytest

from conftest import requires_root
from test_programs import array_map, bpffs_dir, counter_program, open_fds, read_counter

pytestmark = requires_root

NR_GETPPID = {"x86_64": 110, "aarch64": 173}[platform.machine()]


def _load(insns, prog_type, name, **kw):
    from corepy.programs import load_program

    return load_program(insns, name=name, prog_type=prog_type, **kw)


def _getppid(n: int) -> None:
    for _ in range(n):
        os.getppid()


def _raw_tp_counter(map_fd, name="raw_count"):
    """raw_tp sys_enter: ctx is bpf_raw_tracepoint_args, args[1] the syscall number."""
    from corepy.syscalls.uapi import ProgType

    return _load(counter_program(map_fd, pid=os.getpid(), ctx_u64=(8, NR_GETPPID)), ProgType.RAW_TRACEPOINT, name)


def test_raw_tracepoint_counts_link_info_close():
    from corepy.errors import NotSupportedError
    from corepy.syscalls.uapi import LinkType

    before = open_fds()
    with array_map() as counts, _raw_tp_counter(counts.fileno()) as prog:
        with prog.attach_raw_tracepoint("sys_enter") as link:
            _getppid(7)
            assert read_counter(counts) == 7
            info = link.info()
            assert info.type == LinkType.RAW_TRACEPOINT and info.prog_id == prog.info().id
            assert info.details["tp_name"] == "sys_enter"
            with pytest.raises(NotSupportedError, match="RAW_TRACEPOINT"):
                link.detach()  # raw_tp links have no detach operation: close them
        _getppid(3)
        assert read_counter(counts) == 7
    assert open_fds() == before


def test_raw_tracepoint_pin_round_trip():
    from corepy.links import Link

    root = bpffs_dir()
    try:
        with array_map() as counts, _raw_tp_counter(counts.fileno()) as prog:
            link = prog.attach_raw_tracepoint("sys_enter")
            link_id = link.info().id
            link.pin(f"{root}/link")
            link.close()  # the pin keeps it attached
            _getppid(4)
            assert read_counter(counts) == 4
            with Link.from_pinned(f"{root}/link") as again:
                assert again.info().id == link_id
            with Link.from_id(link_id) as by_id:
                assert by_id.info().prog_id == prog.info().id
            os.unlink(f"{root}/link")  # last reference gone: detached (the kernel defers the release)
            deadline = time.monotonic() + 5
            while True:
                seen = read_counter(counts)
                _getppid(4)
                if read_counter(counts) == seen:
                    break
                assert time.monotonic() < deadline, "link still attached 5 s after its pin was removed"
                time.sleep(0.01)
    finally:
        for name in os.listdir(root):
            os.unlink(f"{root}/{name}")
        os.rmdir(root)


def test_raw_tracepoint_unknown_name_is_named():
    from corepy.errors import SyscallError

    with array_map() as counts, _raw_tp_counter(counts.fileno()) as prog:
        with pytest.raises(SyscallError, match="corepy_no_such_tracepoint"):
            prog.attach_raw_tracepoint("corepy_no_such_tracepoint")


def test_tracepoint_perf_link_counts_and_closes():
    from corepy.errors import NotSupportedError
    from corepy.syscalls.uapi import LinkType, PerfEventType, ProgType

    before = open_fds()
    with array_map() as counts, array_map("counts2") as counts2, \
            _load(counter_program(counts.fileno(), pid=os.getpid()), ProgType.TRACEPOINT, "tp_count") as prog, \
            _load(counter_program(counts2.fileno(), pid=os.getpid()), ProgType.TRACEPOINT, "tp_count2") as prog2:
        with prog.attach_tracepoint("syscalls", "sys_enter_getppid") as link:
            _getppid(5)
            assert read_counter(counts) == 5
            info = link.info()
            assert info.type == LinkType.PERF_EVENT and info.prog_id == prog.info().id
            assert info.details["type"] == PerfEventType.TRACEPOINT
            assert info.details["tp_name"] == "sys_enter_getppid"
            with pytest.raises(NotSupportedError, match="BPF_LINK_UPDATE of PERF_EVENT links"):
                link.update(prog2)  # perf links can neither swap programs nor be detached early
            with pytest.raises(NotSupportedError, match="BPF_LINK_DETACH of PERF_EVENT links"):
                link.detach()
        _getppid(2)
        assert (read_counter(counts), read_counter(counts2)) == (5, 0)
    assert open_fds() == before


def test_tracepoint_auto_attach_by_section():
    from corepy.syscalls.uapi import ProgType

    with array_map() as counts:
        with _load(counter_program(counts.fileno(), pid=os.getpid()), ProgType.TRACEPOINT, "tp_auto",
                   section="tp/syscalls/sys_enter_getppid") as prog:
            with prog.attach():
                _getppid(3)
            _getppid(3)
            assert read_counter(counts) == 3


def test_tracepoint_unknown_is_named():
    from corepy.errors import CorepyError
    from corepy.syscalls.uapi import ProgType

    with array_map() as counts, _load(counter_program(counts.fileno()), ProgType.TRACEPOINT, "tp") as prog:
        with pytest.raises(CorepyError, match="corepy_nope"):
            prog.attach_tracepoint("syscalls", "corepy_nope")


def test_tp_btf_attach_btf_id_and_count():
    from corepy.programs import find_attach_btf_id
    from corepy.syscalls.uapi import AttachType, LinkType, ProgType

    with array_map() as counts:
        # tp_btf ctx is u64 args[]: args[1] = syscall id for sys_enter
        with _load(counter_program(counts.fileno(), pid=os.getpid(), ctx_u64=(8, NR_GETPPID)), ProgType.TRACING,
                   "tp_btf_count", expected_attach_type=AttachType.TRACE_RAW_TP, section="tp_btf/sys_enter",
                   attach_to="sys_enter") as prog:
            assert prog.info().raw.attach_btf_id == find_attach_btf_id("sys_enter", "tp_btf")
            with prog.attach() as link:
                info = link.info()  # tp_btf makes a raw tracepoint link
                assert info.type == LinkType.RAW_TRACEPOINT and info.details["tp_name"] == "sys_enter"
                _getppid(6)
            _getppid(6)
            assert read_counter(counts) == 6


def test_trace_pipe_reads_bpf_printk():
    import random
    import struct

    from corepy.asm.insn import ADD, ALU64, CALL_INSN, DW, JMP, JNE, K, LD_IMM64, MEM, MOV, RSH, STX, X, Insn
    from corepy.syscalls.uapi import ProgType
    from corepy.tracing import TracePipe, parse_trace_line

    marker = f"corepy{random.randrange(16 ** 8):08x}"
    text = (marker + "\n").encode().ljust(24, b"\0")
    lo, mid, hi = struct.unpack("<qqq", text)

    def ld64(reg, value):
        return [Insn(LD_IMM64, reg, 0, 0, value & 0xFFFFFFFF), Insn(0, 0, 0, 0, (value >> 32) & 0xFFFFFFFF)]

    body = []
    for off, value in ((-24, lo), (-16, mid), (-8, hi)):
        body += ld64(1, value) + [Insn(STX | MEM | DW, 10, 1, off, 0)]
    body += [Insn(ALU64 | MOV | X, 1, 10), Insn(ALU64 | ADD | K, 1, 0, 0, -24), Insn(ALU64 | MOV | K, 2, 0, 0, 24),
             Insn(CALL_INSN, imm=6)]  # bpf_trace_printk(fmt, 24)
    insns = [Insn(CALL_INSN, imm=14), Insn(ALU64 | RSH | K, 0, 0, 0, 32),
             Insn(JMP | JNE | K, 0, 0, len(body), os.getpid())] + body + \
            [Insn(ALU64 | MOV | K, 0, 0, 0, 0), Insn(0x95)]
    with TracePipe() as pipe, _load(insns, ProgType.TRACEPOINT, "printk") as prog:
        pipe.read(0.0)  # drop what was pending
        with prog.attach_tracepoint("syscalls", "sys_enter_getppid"):
            _getppid(3)
        ours: list = []
        deadline = time.monotonic() + 5
        while len(ours) < 3 and time.monotonic() < deadline:
            ours += [line for line in pipe.read(timeout=0.5) if marker in line.message]
    assert len(ours) == 3
    assert all(line.pid == os.getpid() and line.message.strip() == marker for line in ours)
    sample = parse_trace_line("    python3-1234    [001] d..31  1234.567890: bpf_trace_printk: hello")
    assert sample and (sample.task, sample.pid, sample.cpu, sample.message) == ("python3", 1234, 1, "hello")


def test_tracepoint_without_links_uses_ioctl_attachment():
    """The pre-5.15 path (PERF_EVENT_IOC_SET_BPF), forced here: counts, and close() detaches."""
    from corepy.attach.perf_event import attach_perf_fd
    from corepy.errors import NotSupportedError
    from corepy.links import PerfEventAttachment
    from corepy.syscalls import perf, tracefs
    from corepy.syscalls.uapi import ProgType

    before = open_fds()
    with array_map() as counts, \
            _load(counter_program(counts.fileno(), pid=os.getpid()), ProgType.TRACEPOINT, "tp_ioctl") as prog:
        event = perf.perf_event_open(perf.tracepoint_attr(tracefs.tracepoint_id("syscalls", "sys_enter_getppid")))
        with attach_perf_fd(prog, event, target="tracepoint syscalls:sys_enter_getppid", use_link=False) as att:
            assert isinstance(att, PerfEventAttachment)
            _getppid(4)
            assert read_counter(counts) == 4
            with pytest.raises(NotSupportedError):
                att.pin("/sys/fs/bpf/corepy-never")
        assert event.closed
        _getppid(4)
        assert read_counter(counts) == 4
    assert open_fds() == before
