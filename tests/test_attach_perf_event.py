"""perf_event programs on a software perf event (CPU clock sampling of this process)."""

from __future__ import annotations

import time

import pytest

from conftest import requires_root
from test_programs import array_map, counter_program, open_fds, read_counter

pytestmark = requires_root


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_perf_event_program_on_cpu_clock():
    from corepy.programs import load_program
    from corepy.syscalls import perf
    from corepy.syscalls.uapi import LinkType, PerfEventType, ProgType

    before = open_fds()
    attr = perf.software_attr(perf.PERF_COUNT_SW_TASK_CLOCK, freq=1000)
    with array_map() as counts, \
            load_program(counter_program(counts.fileno()), name="on_sample", prog_type=ProgType.PERF_EVENT) as prog, \
            perf.perf_event_open(attr, pid=0, cpu=-1) as event:  # this thread, any CPU
        with prog.attach_perf_event(event) as link:
            info = link.info()
            assert info.type == LinkType.PERF_EVENT and info.details["type"] == PerfEventType.EVENT
            _spin(0.2)
            seen = read_counter(counts)
            assert seen >= 20  # ~1000 samples/s of CPU time
        _spin(0.05)
        assert read_counter(counts) == seen  # detached with the link (the event itself is still open)
    assert open_fds() == before


def test_perf_event_attach_refuses_wrong_program_type():
    from corepy.errors import SyscallError
    from corepy.programs import load_program
    from corepy.syscalls import perf
    from corepy.syscalls.uapi import ProgType

    before = open_fds()
    with array_map() as counts, \
            load_program(counter_program(counts.fileno()), name="sockf", prog_type=ProgType.SOCKET_FILTER) as prog, \
            perf.perf_event_open(perf.software_attr(perf.PERF_COUNT_SW_TASK_CLOCK, freq=100), pid=0, cpu=-1) as ev:
        with pytest.raises(SyscallError):
            prog.attach_perf_event(ev)
    assert open_fds() == before
