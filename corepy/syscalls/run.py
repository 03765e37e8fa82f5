"""BPF_PROG_TEST_RUN and BPF_ENABLE_STATS."""

from __future__ import annotations

import ctypes

from .._records import record
from .attr import EnableStatsAttr, TestRunAttr, ptr
from .bpf import bpf
from .fd import FD, FdLike, fdnum
from .uapi import Cmd, StatsType


@record(frozen=True)
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
    repeat: int = 0,
    data_size_out: int | None = None,
    ctx_size_out: int = 0,
    flags: int = 0,
    cpu: int = 0,
    batch_size: int = 0,
) -> TestRunResult:
    """BPF_PROG_TEST_RUN: run the program on ``data`` (packet programs) and/or ``ctx``.

    ``repeat`` 0 runs once, like 1 (raw_tp and syscall programs refuse any other value).
    ``data_size_out`` defaults to ``len(data) + 256`` when there is data (room for programs
    that grow the packet), else 0; ``ctx_size_out`` > 0 asks for the context back. Outputs
    are trimmed to what the kernel wrote; ``ctx`` in the result is None unless requested.
    """
    out_size = (len(data) + 256 if data else 0) if data_size_out is None else data_size_out
    data_in = ctypes.create_string_buffer(data, len(data)) if data else None
    data_out = ctypes.create_string_buffer(out_size) if out_size else None
    ctx_in = ctypes.create_string_buffer(ctx, len(ctx)) if ctx else None
    ctx_out = ctypes.create_string_buffer(ctx_size_out) if ctx_size_out else None
    attr = TestRunAttr(
        prog_fd=fdnum(fd),
        data_size_in=len(data),
        data_size_out=out_size,
        data_in=ptr(data_in),
        data_out=ptr(data_out),
        repeat=repeat,
        ctx_size_in=len(ctx) if ctx else 0,
        ctx_size_out=ctx_size_out,
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
