"""Programs on perf events: the path tracepoints, kprobes and uprobes share.

A ``BPF_LINK_CREATE`` with attach type ``BPF_PERF_EVENT`` (kernel 5.15+) makes a real
link (pinnable, with info and a BPF cookie); older kernels get ``PERF_EVENT_IOC_SET_BPF``.
"""

from __future__ import annotations

import os

from ..errors import NotSupportedError
from ..links import Link, PerfEventAttachment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..programs import Program
    from ..syscalls.fd import FD

__all__ = ["attach_perf_event", "attach_perf_fd"]


def attach_perf_fd(program: Program, perf_fd: FD, *, target: str, cookie: int = 0,
                   use_link: bool | None = None) -> Link:
    """Attach ``program`` to the perf event ``perf_fd``, which the returned link then owns
    (closed with it, or right away if attaching fails). ``use_link`` None: a BPF link where
    the kernel has perf_event links (probed), else ``PERF_EVENT_IOC_SET_BPF``."""
    from ..syscalls import features, perf
    from ..syscalls.links import link_create_perf_event
    from ..syscalls.uapi import LinkType

    link_fd = None
    try:
        if use_link is None:
            use_link = features.has_link_type(LinkType.PERF_EVENT)
        if not use_link:
            if cookie:
                raise NotSupportedError("BPF cookies on perf events", "they need perf_event links (kernel 5.15+): "
                                        + features.feature_reason("link_type", LinkType.PERF_EVENT))
            perf.ioctl_set_bpf(perf_fd, program.fd)
            perf.ioctl_enable(perf_fd)
            return PerfEventAttachment(perf_fd, program=program, target=target)
        link_fd = link_create_perf_event(program.fd, perf_fd, cookie=cookie)
        perf.ioctl_enable(perf_fd)
    except BaseException:
        if link_fd is not None:
            link_fd.close()
        perf_fd.close()
        raise
    return Link(link_fd, program=program, target=target, owned=(perf_fd,))


def attach_perf_event(program: Program, perf_fd: Any, *, cookie: int = 0) -> Link:
    """Attach a ``perf_event`` (or kprobe/tracepoint) program to an open perf event
    (an int fd, or anything with ``fileno()``). The link holds its own duplicate of the fd."""
    from ..syscalls.fd import FD

    number = perf_fd if isinstance(perf_fd, int) else perf_fd.fileno()
    own = FD(os.dup(number), "perf_event")
    return attach_perf_fd(program, own, target=f"perf event fd {number}", cookie=cookie)
