"""BTF-typed tracing programs: ``tp_btf/``, ``fentry/``, ``fexit/``, ``fmod_ret/``, ``lsm/``.

Their target was fixed at load time (``attach_btf_id``), so attaching takes no arguments.
"""

from __future__ import annotations

from ..links import Link

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..programs import Program

__all__ = ["attach_trace"]


def attach_trace(program: Program, *, cookie: int = 0) -> Link:
    """Attach a tracing/LSM program at its load-time target. With a ``cookie`` this needs
    ``BPF_LINK_CREATE`` with the program's attach type (kernel 5.19+); without one,
    ``BPF_RAW_TRACEPOINT_OPEN`` with no name, which every BTF-tracing kernel has."""
    from ..syscalls.links import link_create_tracing, raw_tracepoint_open

    target = f"{program.section or program.name}"
    if cookie:
        fd = link_create_tracing(program.fd, program.expected_attach_type or 0, cookie=cookie)
    else:
        fd = raw_tracepoint_open(None, program.fd)
    return Link(fd, program=program, target=target)
