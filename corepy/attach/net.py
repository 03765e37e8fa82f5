"""Networking attach points: XDP, tcx, cgroups and socket filters. Each needs a target
(an interface, a cgroup, a socket), so none is auto-attached by section name."""

from __future__ import annotations

import errno
import os
import socket

from ..errors import SyscallError
from ..links import Link, SocketAttachment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..programs import Program

__all__ = ["attach_xdp", "attach_tcx", "attach_cgroup", "attach_socket", "ifindex",
           "XDP_FLAGS_UPDATE_IF_NOEXIST", "XDP_FLAGS_SKB_MODE", "XDP_FLAGS_DRV_MODE", "XDP_FLAGS_HW_MODE"]

# include/uapi/linux/if_link.h
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1  # generic
XDP_FLAGS_DRV_MODE = 1 << 2  # native
XDP_FLAGS_HW_MODE = 1 << 3  # offload


def ifindex(interface: int | str) -> int:
    """An interface index from an index or a name (ObjectError-free: OSError names it)."""
    if isinstance(interface, int):
        return interface
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise SyscallError("if_nametoindex", errno.ENODEV, f"no network interface {interface!r}") from None


def attach_xdp(program: Program, interface: int | str, *, flags: int = 0) -> Link:
    """XDP link on ``interface``; ``flags`` picks the mode (``XDP_FLAGS_SKB_MODE`` generic,
    ``XDP_FLAGS_DRV_MODE`` native, ``XDP_FLAGS_HW_MODE`` offload; default: the driver's best)."""
    from ..syscalls.links import link_create
    from ..syscalls.uapi import AttachType

    idx = ifindex(interface)
    return Link(link_create(program.fd, idx, AttachType.XDP, flags=flags), program=program,
                target=f"xdp ifindex {idx}")


def attach_tcx(program: Program, interface: int | str, direction: str = "ingress", *,
               use_tcx: bool | None = None) -> Link:
    """A tc program at ``direction`` ('ingress'/'egress') of ``interface``: a tcx link where
    the kernel has them (6.6+, probed), else (or with ``use_tcx=False``) a direct-action
    ``bpf`` filter on a ``clsact`` qdisc through rtnetlink."""
    from ..syscalls import features
    from ..syscalls.links import link_create_tcx
    from ..syscalls.uapi import AttachType, LinkType

    if direction not in ("ingress", "egress"):
        raise ValueError(f"tc direction must be 'ingress' or 'egress', not {direction!r}")
    idx = ifindex(interface)
    if use_tcx is None:
        use_tcx = features.has_link_type(LinkType.TCX)
    if not use_tcx:
        from .tc_netlink import attach_tc_netlink

        return attach_tc_netlink(program, idx, direction)
    kind = AttachType.TCX_INGRESS if direction == "ingress" else AttachType.TCX_EGRESS
    return Link(link_create_tcx(program.fd, idx, kind), program=program, target=f"tcx {direction} ifindex {idx}")


def attach_cgroup(program: Program, cgroup: int | str, attach_type: Any = None, *,
                  use_link: bool | None = None) -> Link:
    """Attach to a cgroup v2 directory (or an open fd of one); ``attach_type`` defaults to the
    program's expected attach type (e.g. ``CGROUP_INET_INGRESS``). ``use_link`` None: a BPF
    link where the kernel has cgroup links (probed), else ``BPF_PROG_ATTACH`` with
    ``BPF_F_ALLOW_MULTI`` (detached by ``BPF_PROG_DETACH`` on close)."""
    from ..links import ProgAttachment
    from ..syscalls import features
    from ..syscalls.fd import FD
    from ..syscalls.links import link_create, prog_attach
    from ..syscalls.uapi import AttachFlag, LinkType

    kind = attach_type if attach_type is not None else program.expected_attach_type
    if kind is None:
        raise ValueError(f"program {program.name!r} has no expected attach type; pass attach_type")
    where = f"cgroup fd {cgroup}" if isinstance(cgroup, int) else f"cgroup {cgroup}"
    try:
        cg = FD(os.dup(cgroup) if isinstance(cgroup, int) else
                os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), "cgroup")
    except OSError as e:
        raise SyscallError("open", e.errno or errno.ENOENT, where) from None
    target = f"{where} {getattr(kind, 'name', kind)}"
    try:
        if use_link is None:
            use_link = features.has_link_type(LinkType.CGROUP)
        if not use_link:
            prog_attach(program.fd, cg, kind, flags=AttachFlag.ALLOW_MULTI)
            return ProgAttachment(cg, kind, program=program, target=target)
        fd = link_create(program.fd, cg, kind)
    except BaseException:
        cg.close()
        raise
    cg.close()
    return Link(fd, program=program, target=target)


def attach_socket(program: Program, sock: socket.socket) -> SocketAttachment:
    """Socket filter via ``SO_ATTACH_BPF``; the attachment's close() detaches it."""
    from ..links import SO_ATTACH_BPF

    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, program.fd)
    except OSError as e:
        raise SyscallError("setsockopt(SO_ATTACH_BPF)", e.errno or errno.EINVAL,
                           f"program {program.name!r}") from None
    return SocketAttachment(sock, program=program)
