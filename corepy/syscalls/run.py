"""BPF_PROG_TEST_RUN and BPF_ENABLE_STATS."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from .attr import EnableStatsAttr, TestRunAttr, ptr
from .bpf import bpf
from .fd import FD, FdLike, fdnum
from .uapi import Cmd, StatsType


@dataclass(frozen=True)
class TestRunResult:
    """What one PROG_TEST_RUN returned: r0, the output packet/context, mean ns per run."""

    retval: int
    data: bytes
    ctx: bytes | None
    duration_ns: int


def prog_test_run(
    fd: FdLike,
    data: bytes = b"",
    ctx: bytes | None = None,
    *,
    repeat: int = 1,
    data_size_out: int | None = None,
    ctx_size_out: int | None = None,
    flags: int = 0,
    cpu: int = 0,
    batch_size: int = 0,
) -> TestRunResult:
    """BPF_PROG_TEST_RUN: run the program ``repeat`` times on ``data``/``ctx`` in the kernel.

    ``data_size_out`` defaults to ``len(data) + 256`` (room for programs that grow the
    packet); ``ctx_size_out`` to ``len(ctx)``. Output is trimmed to what the kernel wrote.
    """
    out_size = len(data) + 256 if data_size_out is None else data_size_out
    data_in = ctypes.create_string_buffer(data, len(data)) if data else None
    data_out = ctypes.create_string_buffer(out_size) if out_size else None
    ctx_in = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    ctx_out_size = (len(ctx) if ctx else 0) if ctx_size_out is None else ctx_size_out
    ctx_out = ctypes.create_string_buffer(ctx_out_size) if ctx_out_size else None
    attr = TestRunAttr(
        prog_fd=fdnum(fd),
        data_size_in=len(data),
        data_size_out=out_size,
        data_in=ptr(data_in),
        data_out=ptr(data_out),
        repeat=repeat,
        ctx_size_in=len(ctx) if ctx else 0,
        ctx_size_out=ctx_out_size,
        ctx_in=ptr(ctx_in),
        ctx_out=ptr(ctx_out),
        flags=int(flags),
        cpu=cpu,
        batch_size=batch_size,
    )
    bpf(Cmd.PROG_TEST_RUN, attr, detail=f"prog fd {attr.prog_fd}")
    out = data_out.raw[: attr.data_size_out] if data_out is not None else b""
    ctx_result = ctx_out.raw[: attr.ctx_size_out] if ctx_out is not None else None
    return TestRunResult(attr.retval, out, ctx_result, attr.duration)


def enable_stats(kind: StatsType = StatsType.RUN_TIME) -> FD:
    """BPF_ENABLE_STATS: run-time statistics stay on while the returned fd is open."""
    return FD(bpf(Cmd.ENABLE_STATS, EnableStatsAttr(type=int(kind))), "stats")
