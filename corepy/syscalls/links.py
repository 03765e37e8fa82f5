"""Attachment commands: LINK_CREATE/UPDATE/DETACH, PROG_ATTACH/DETACH/QUERY,
RAW_TRACEPOINT_OPEN, ITER_CREATE, PROG_BIND_MAP."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence

from .._records import record
from .attr import (
    IterCreateAttr,
    LinkCreateAttr,
    LinkDetachAttr,
    LinkUpdateAttr,
    ProgAttachAttr,
    ProgBindMapAttr,
    QueryAttr,
    RawTracepointAttr,
    ptr,
)
from .bpf import bpf
from .fd import FD, FdLike, fdnum
from .uapi import AttachFlag, AttachType, Cmd


def _attach_name(attach_type: int) -> str:
    try:
        return AttachType(attach_type).name
    except ValueError:
        return f"attach type {attach_type}"


def link_create_attr(attr: LinkCreateAttr, detail: str | None = None) -> FD:
    """BPF_LINK_CREATE with a prepared attribute (for the per-kind fields below)."""
    detail = detail or f"prog fd {attr.prog_fd} -> target {attr.target_fd} ({_attach_name(attr.attach_type)})"
    return FD(bpf(Cmd.LINK_CREATE, attr, detail=detail), "link")


def link_create(
    prog_fd: FdLike,
    target_fd: int | FD,
    attach_type: AttachType | int,
    *,
    flags: int = 0,
    target_btf_id: int = 0,
) -> FD:
    """BPF_LINK_CREATE for kinds with no extra fields (cgroup, xdp (target = ifindex), netns,
    sk_lookup, iter without parameters, freplace/tracing with ``target_btf_id``)."""
    attr = LinkCreateAttr(prog_fd=fdnum(prog_fd), target_fd=fdnum(target_fd), attach_type=int(attach_type), flags=flags)
    attr.target_btf_id = target_btf_id
    return link_create_attr(attr)


def link_create_perf_event(prog_fd: FdLike, perf_fd: FdLike, *, cookie: int = 0) -> FD:
    """A BPF_PERF_EVENT link: ``prog`` runs on the perf event (kprobe/uprobe/tracepoint) ``perf_fd``."""
    attr = LinkCreateAttr(prog_fd=fdnum(prog_fd), target_fd=fdnum(perf_fd), attach_type=AttachType.PERF_EVENT)
    attr.perf_event.bpf_cookie = cookie
    return link_create_attr(attr)


def link_create_tracing(
    prog_fd: FdLike,
    attach_type: AttachType | int,
    *,
    target_fd: FdLike | None = None,
    target_btf_id: int = 0,
    cookie: int = 0,
) -> FD:
    """A tracing link (fentry/fexit/fmod_ret/lsm/tp_btf, freplace with ``target_fd``) with a BPF cookie."""
    attr = LinkCreateAttr(prog_fd=fdnum(prog_fd), target_fd=fdnum(target_fd), attach_type=int(attach_type))
    attr.tracing.target_btf_id = target_btf_id
    attr.tracing.cookie = cookie
    return link_create_attr(attr)


def link_create_iter(prog_fd: FdLike, iter_info: bytes = b"") -> FD:
    """A BPF_TRACE_ITER link; ``iter_info`` is a packed ``union bpf_iter_link_info`` (or empty)."""
    info = ctypes.create_string_buffer(iter_info, len(iter_info)) if iter_info else None
    attr = LinkCreateAttr(prog_fd=fdnum(prog_fd), attach_type=AttachType.TRACE_ITER)
    attr.iter_info = ptr(info)
    attr.iter_info_len = len(iter_info)
    return link_create_attr(attr)


def _u64_array(values: Sequence[int] | None) -> ctypes.Array | None:
    return (ctypes.c_uint64 * len(values))(*values) if values else None


def link_create_kprobe_multi(
    prog_fd: FdLike,
    *,
    syms: Sequence[str] = (),
    addrs: Sequence[int] = (),
    cookies: Sequence[int] = (),
    flags: int = 0,
    attach_type: AttachType | int = AttachType.TRACE_KPROBE_MULTI,
) -> FD:
    """A kprobe_multi (or kprobe_session) link on kernel symbols ``syms`` or addresses ``addrs``."""
    if bool(syms) == bool(addrs):
        raise ValueError("kprobe_multi needs exactly one of syms or addrs")
    count = len(syms) or len(addrs)
    if cookies and len(cookies) != count:
        raise ValueError(f"{len(cookies)} cookies for {count} probes")
    names = [ctypes.create_string_buffer(s.encode()) for s in syms]
    sym_ptrs = (ctypes.c_uint64 * len(names))(*(ctypes.addressof(n) for n in names)) if names else None
    addr_arr, cookie_arr = _u64_array(addrs), _u64_array(cookies)
    attr = LinkCreateAttr(prog_fd=fdnum(prog_fd), attach_type=int(attach_type))
    km = attr.kprobe_multi
    km.flags, km.cnt, km.syms, km.addrs, km.cookies = flags, count, ptr(sym_ptrs), ptr(addr_arr), ptr(cookie_arr)
    first = syms[0] if syms else f"{addrs[0]:#x}"
    return link_create_attr(attr, f"kprobe_multi on {count} functions ({first}...)")


def link_create_uprobe_multi(
    prog_fd: FdLike,
    path: str | os.PathLike[str],
    offsets: Sequence[int],
    *,
    ref_ctr_offsets: Sequence[int] = (),
    cookies: Sequence[int] = (),
    pid: int = 0,
    flags: int = 0,
    attach_type: AttachType | int = AttachType.TRACE_UPROBE_MULTI,
) -> FD:
    """An uprobe_multi link at file ``offsets`` of ``path`` (``pid`` 0 = every process)."""
    for name, seq in (("ref_ctr_offsets", ref_ctr_offsets), ("cookies", cookies)):
        if seq and len(seq) != len(offsets):
            raise ValueError(f"{len(seq)} {name} for {len(offsets)} offsets")
    path_buf = ctypes.create_string_buffer(os.fsencode(path))
    off, ref, ck = _u64_array(offsets), _u64_array(ref_ctr_offsets), _u64_array(cookies)
    attr = LinkCreateAttr(prog_fd=fdnum(prog_fd), attach_type=int(attach_type))
    um = attr.uprobe_multi
    um.path, um.offsets, um.ref_ctr_offsets, um.cookies = ptr(path_buf), ptr(off), ptr(ref), ptr(ck)
    um.cnt, um.flags, um.pid = len(offsets), flags, pid
    return link_create_attr(attr, f"uprobe_multi on {os.fsdecode(path)} at {len(offsets)} offsets")


def link_create_tcx(
    prog_fd: FdLike,
    ifindex: int,
    attach_type: AttachType | int,
    *,
    flags: int = 0,
    relative_fd: FdLike | None = None,
    relative_id: int | None = None,
    expected_revision: int = 0,
) -> FD:
    """A tcx (BPF_TCX_INGRESS/EGRESS) or netkit (BPF_NETKIT_PRIMARY/PEER) link on ``ifindex``.

    ``flags`` are :class:`~corepy.syscalls.uapi.AttachFlag` BEFORE/AFTER/ID/LINK relative to
    ``relative_fd`` or ``relative_id`` (which sets ``AttachFlag.ID``).
    """
    attr = LinkCreateAttr(prog_fd=fdnum(prog_fd), target_fd=ifindex, attach_type=int(attach_type), flags=flags)
    if relative_id is not None:
        attr.flags |= AttachFlag.ID
        attr.tcx.relative_fd = relative_id
    else:
        attr.tcx.relative_fd = fdnum(relative_fd)
    attr.tcx.expected_revision = expected_revision
    return link_create_attr(attr, f"prog fd {attr.prog_fd} on ifindex {ifindex} ({_attach_name(attr.attach_type)})")


def link_create_netfilter(prog_fd: FdLike, pf: int, hooknum: int, priority: int, *, flags: int = 0) -> FD:
    """A BPF_NETFILTER link on protocol family ``pf`` hook ``hooknum``."""
    attr = LinkCreateAttr(prog_fd=fdnum(prog_fd), attach_type=AttachType.NETFILTER)
    nf = attr.netfilter
    nf.pf, nf.hooknum, nf.priority, nf.flags = pf, hooknum, priority, flags
    return link_create_attr(attr, f"netfilter pf {pf} hook {hooknum} priority {priority}")


def link_update(link_fd: FdLike, new_prog_fd: FdLike, *, old_prog_fd: FdLike | None = None) -> None:
    """BPF_LINK_UPDATE: swap the link's program (only if it is ``old_prog_fd``, when given)."""
    attr = LinkUpdateAttr(link_fd=fdnum(link_fd), new_prog_fd=fdnum(new_prog_fd))
    if old_prog_fd is not None:
        attr.flags, attr.old_prog_fd = AttachFlag.REPLACE, fdnum(old_prog_fd)
    bpf(Cmd.LINK_UPDATE, attr, detail=f"link fd {attr.link_fd}")


def link_detach(link_fd: FdLike) -> None:
    """BPF_LINK_DETACH: detach now; the link fd stays valid but defunct."""
    attr = LinkDetachAttr(link_fd=fdnum(link_fd))
    bpf(Cmd.LINK_DETACH, attr, detail=f"link fd {attr.link_fd}")


def prog_attach(
    prog_fd: FdLike,
    target_fd: int | FD,
    attach_type: AttachType | int,
    *,
    flags: int = 0,
    replace_prog_fd: FdLike | None = None,
    relative_fd: FdLike | None = None,
    relative_id: int | None = None,
    expected_revision: int = 0,
) -> None:
    """BPF_PROG_ATTACH (cgroup, sockmap, flow dissector, lirc, tcx...); ``replace_prog_fd``
    sets BPF_F_REPLACE."""
    attr = ProgAttachAttr(
        target_fd=fdnum(target_fd),
        attach_bpf_fd=fdnum(prog_fd),
        attach_type=int(attach_type),
        attach_flags=flags,
        expected_revision=expected_revision,
    )
    if replace_prog_fd is not None:
        attr.attach_flags |= AttachFlag.REPLACE
        attr.replace_bpf_fd = fdnum(replace_prog_fd)
    if relative_id is not None:
        attr.attach_flags |= AttachFlag.ID
        attr.relative_fd = relative_id
    elif relative_fd is not None:
        attr.relative_fd = fdnum(relative_fd)
    bpf(Cmd.PROG_ATTACH, attr, detail=f"prog fd {attr.attach_bpf_fd} -> target {attr.target_fd} ({_attach_name(attr.attach_type)})")


def prog_detach(target_fd: int | FD, attach_type: AttachType | int, prog_fd: FdLike | None = None) -> None:
    """BPF_PROG_DETACH: remove ``prog_fd`` (or the only program) from ``target_fd``."""
    attr = ProgAttachAttr(target_fd=fdnum(target_fd), attach_bpf_fd=fdnum(prog_fd), attach_type=int(attach_type))
    bpf(Cmd.PROG_DETACH, attr, detail=f"target {attr.target_fd} ({_attach_name(attr.attach_type)})")


@record(frozen=True)
class QueryResult:
    """Programs attached at a hook: ids in run order, the hook's attach flags and revision."""

    attach_flags: int
    prog_ids: list[int]
    link_ids: list[int]
    revision: int


def prog_query(
    target_fd: int | FD,
    attach_type: AttachType | int,
    *,
    query_flags: int = 0,
    max_progs: int = 64,
    with_links: bool = False,
) -> QueryResult:
    """BPF_PROG_QUERY: ids of the programs attached at ``target_fd``/``attach_type``.

    ``with_links`` also asks for link ids (mprog hooks: tcx/netkit, cgroup on 6.6+; older
    kernels refuse the field with E2BIG).
    """
    prog_ids = (ctypes.c_uint32 * max_progs)()
    link_ids = (ctypes.c_uint32 * max_progs)() if with_links else None
    attr = QueryAttr(
        target_fd=fdnum(target_fd),
        attach_type=int(attach_type),
        query_flags=query_flags,
        prog_ids=ptr(prog_ids),
        prog_cnt=max_progs,
        link_ids=ptr(link_ids),
    )
    bpf(Cmd.PROG_QUERY, attr, detail=f"target {attr.target_fd} ({_attach_name(attr.attach_type)})")
    n = min(attr.prog_cnt, max_progs)
    links = list(link_ids[:n]) if link_ids is not None else []
    return QueryResult(attr.attach_flags, list(prog_ids[:n]), links, attr.revision)


def raw_tracepoint_open(name: str | None, prog_fd: FdLike, *, cookie: int = 0) -> FD:
    """BPF_RAW_TRACEPOINT_OPEN: attach a raw_tp program to tracepoint ``name`` (None for
    tp_btf/fentry-style programs whose target is in the program)."""
    name_buf = ctypes.create_string_buffer(name.encode()) if name else None
    attr = RawTracepointAttr(name=ptr(name_buf), prog_fd=fdnum(prog_fd), cookie=cookie)
    return FD(bpf(Cmd.RAW_TRACEPOINT_OPEN, attr, detail=f"raw tracepoint {name!r}"), "link")


def iter_create(link_fd: FdLike) -> FD:
    """BPF_ITER_CREATE: a readable fd producing the iterator's output."""
    attr = IterCreateAttr(link_fd=fdnum(link_fd))
    return FD(bpf(Cmd.ITER_CREATE, attr, detail=f"iterator link fd {attr.link_fd}"), "iter")


def prog_bind_map(prog_fd: FdLike, map_fd: FdLike) -> None:
    """BPF_PROG_BIND_MAP: keep ``map`` alive as long as ``prog`` (e.g. .rodata with no users)."""
    bpf(Cmd.PROG_BIND_MAP, ProgBindMapAttr(prog_fd=fdnum(prog_fd), map_fd=fdnum(map_fd)))
