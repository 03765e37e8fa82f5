"""perf_event_open, tracefs and the perf_event link on the real kernel."""

from __future__ import annotations

import errno
import os
import struct

import pytest

from corepy.asm.insn import ALU64, ATOMIC, CALL_INSN, DW, EXIT_INSN, K, LD_IMM64, MOV, PSEUDO_MAP_VALUE, STX, MEM, X, Insn
from corepy.errors import NotSupportedError, SyscallError
from corepy.syscalls import features, links, load, maps, objects, perf, tracefs
from corepy.syscalls.cpus import online_cpus, parse_cpulist, possible_cpu_count, possible_cpus
from corepy.syscalls.uapi import Helper, LinkType, MapType, PerfEventType, ProgType
from tests.conftest import requires_root

pytestmark = requires_root

ATOMIC_ADD = 0x00


def counting_program(map_fd: int) -> list[Insn]:
    """lock *(u64 *)&value[0] += 1; return 0"""
    return [
        Insn(LD_IMM64, dst=1, src=PSEUDO_MAP_VALUE, imm=map_fd),
        Insn(0, imm=0),
        Insn(ALU64 | MOV | K, dst=2, imm=1),
        Insn(STX | ATOMIC | DW, dst=1, src=2, off=0, imm=ATOMIC_ADD),
        Insn(ALU64 | MOV | K, dst=0, imm=0),
        Insn(EXIT_INSN),
    ]


def cookie_program(map_fd: int) -> list[Insn]:
    """value[0] = bpf_get_attach_cookie(ctx); return 0"""
    return [
        Insn(CALL_INSN, imm=Helper.get_attach_cookie),
        Insn(ALU64 | MOV | X, dst=7, src=0),
        Insn(LD_IMM64, dst=1, src=PSEUDO_MAP_VALUE, imm=map_fd),
        Insn(0, imm=0),
        Insn(STX | MEM | DW, dst=1, src=7, off=0),
        Insn(ALU64 | MOV | K, dst=0, imm=0),
        Insn(EXIT_INSN),
    ]


def read_u64(map_fd) -> int:
    value = maps.map_lookup_elem(map_fd, bytes(4), 8)
    assert value is not None
    return struct.unpack("<Q", value)[0]


def test_cpu_lists() -> None:
    assert parse_cpulist("0-3,5,7-8\n") == [0, 1, 2, 3, 5, 7, 8]
    assert parse_cpulist("0") == [0]
    assert possible_cpu_count() == len(possible_cpus()) >= len(online_cpus()) >= 1
    assert set(online_cpus()) <= set(possible_cpus())
    assert len(os.sched_getaffinity(0)) <= possible_cpu_count()


def test_tracefs() -> None:
    root = tracefs.tracefs_root()
    assert os.path.exists(os.path.join(root, "trace_pipe"))
    assert tracefs.trace_pipe_path() == os.path.join(root, "trace_pipe")
    tp = tracefs.tracepoint_id("syscalls", "sys_enter_getpid")
    with open(os.path.join(root, "events/syscalls/sys_enter_getpid/id")) as f:
        assert tp == int(f.read())
    with pytest.raises(NotSupportedError) as exc:
        tracefs.tracepoint_id("syscalls", "no_such_tracepoint")
    assert "syscalls:no_such_tracepoint" in str(exc.value)
    with pytest.raises(Exception) as exc2:
        tracefs.tracepoint_id("..", "x")
    assert "invalid" in str(exc2.value)


def test_dynamic_pmus() -> None:
    source = "/sys/bus/event_source/devices"
    for kind in ("kprobe", "uprobe"):
        path = f"{source}/{kind}/type"
        if os.path.exists(path):
            assert perf.pmu_type(kind) == int(open(path).read())
            fmt = open(f"{source}/{kind}/format/retprobe").read().strip()
            assert perf.retprobe_bit(kind) == int(fmt.split(":")[1])
        else:
            with pytest.raises(NotSupportedError):
                perf.pmu_type(kind)


def test_perf_event_open_and_ioctls() -> None:
    attr = perf.tracepoint_attr(tracefs.tracepoint_id("syscalls", "sys_enter_getpid"))
    before = len(os.listdir("/proc/self/fd"))
    with perf.perf_event_open(attr, pid=-1, cpu=0) as event:
        first = perf.ioctl_id(event)
        assert first > 0
        perf.ioctl_enable(event)
        perf.ioctl_disable(event)
        with perf.perf_event_open(attr, pid=-1, cpu=0) as other:
            assert perf.ioctl_id(other) != first
    assert len(os.listdir("/proc/self/fd")) == before
    with pytest.raises(SyscallError) as exc:
        perf.perf_event_open(perf.PerfEventAttr(type=0xFFFFFFF0), pid=-1, cpu=0)
    assert exc.value.command == "perf_event_open"


def test_bpf_output_event_per_cpu() -> None:
    with perf.perf_event_open(perf.bpf_output_attr(), pid=-1, cpu=online_cpus()[0]) as event:
        assert event.fileno() > 2


def test_tracepoint_perf_link_counts_and_carries_cookie() -> None:
    if not features.has_link_type(LinkType.PERF_EVENT):
        pytest.skip(features.feature_reason("link_type", LinkType.PERF_EVENT))
    tp = tracefs.tracepoint_id("syscalls", "sys_enter_getpid")
    with (
        maps.map_create(MapType.ARRAY, 4, 8, 1, name="counter") as counter,
        maps.map_create(MapType.ARRAY, 4, 8, 1, name="cookie") as cookie_map,
        load.prog_load(ProgType.TRACEPOINT, counting_program(counter.fileno()), name="count") as count_prog,
        load.prog_load(ProgType.TRACEPOINT, cookie_program(cookie_map.fileno()), name="cookie") as cookie_prog,
    ):
        with (
            perf.perf_event_open(perf.tracepoint_attr(tp), pid=-1, cpu=0) as ev1,
            perf.perf_event_open(perf.tracepoint_attr(tp), pid=-1, cpu=0) as ev2,
        ):
            with (
                links.link_create_perf_event(count_prog, ev1) as link,
                links.link_create_perf_event(cookie_prog, ev2, cookie=0xC0FFEE_1234) as link2,
            ):
                for _ in range(10):
                    os.getpid()  # glibc does not cache getpid: each is a syscall
                assert read_u64(counter) >= 10
                assert read_u64(cookie_map) == 0xC0FFEE_1234
                info = objects.link_info(link)
                assert info.type == LinkType.PERF_EVENT
                assert objects.link_info(link2).perf_event.type == PerfEventType.TRACEPOINT
            seen = read_u64(counter)
            for _ in range(10):
                os.getpid()
            assert read_u64(counter) == seen  # closed link: detached


def test_legacy_ioctl_set_bpf_attach() -> None:
    tp = tracefs.tracepoint_id("syscalls", "sys_enter_getpid")
    with (
        maps.map_create(MapType.ARRAY, 4, 8, 1) as counter,
        load.prog_load(ProgType.TRACEPOINT, counting_program(counter.fileno())) as prog,
    ):
        with perf.perf_event_open(perf.tracepoint_attr(tp), pid=-1, cpu=0) as event:
            perf.ioctl_set_bpf(event, prog)
            perf.ioctl_enable(event)
            for _ in range(5):
                os.getpid()
            assert read_u64(counter) >= 5
            with pytest.raises(SyscallError) as exc:  # one program per event
                perf.ioctl_set_bpf(event, prog)
            assert exc.value.errno == errno.EEXIST
