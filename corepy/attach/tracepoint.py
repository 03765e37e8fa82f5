"""Tracepoints (``tp/``: perf event on the tracefs id) and raw tracepoints (``raw_tp/``)."""

from __future__ import annotations

from ..links import Link
from .perf_event import attach_perf_fd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..programs import Program

__all__ = ["attach_tracepoint", "attach_raw_tracepoint"]


def attach_tracepoint(program: Program, category: str, name: str, *, cookie: int = 0) -> Link:
    """Attach to tracepoint ``category:name`` (e.g. ``syscalls``, ``sys_enter_write``)."""
    from ..syscalls import perf, tracefs

    tp_id = tracefs.tracepoint_id(category, name)
    pfd = perf.perf_event_open(perf.tracepoint_attr(tp_id), pid=-1, cpu=0)
    return attach_perf_fd(program, pfd, target=f"tracepoint {category}:{name}", cookie=cookie)


def attach_raw_tracepoint(program: Program, name: str) -> Link:
    """Attach a ``raw_tp`` program to raw tracepoint ``name`` (e.g. ``sys_enter``)."""
    from ..syscalls.links import raw_tracepoint_open

    return Link(raw_tracepoint_open(name, program.fd), program=program, target=f"raw_tp {name}")
