"""libbpf's ``SEC()`` conventions as data: section name -> program type, attach type, flags.

The table mirrors libbpf's ``section_defs[]`` (libbpf 1.4+), in its order: the first
matching entry wins. A definition ending in ``/`` needs ``SEC("type/extras")``; one
ending in ``+`` takes either ``SEC("type")`` or ``SEC("type/extras")``; anything else
must match exactly. A leading ``?`` turns autoload off and is otherwise ignored.
"""

from __future__ import annotations

import enum

from .._records import record
from ..errors import ObjectError
from ..syscalls.uapi import AttachType as A
from ..syscalls.uapi import ProgType as P

__all__ = ["SecFlag", "SectionDef", "Section", "SECTION_DEFS", "find_section_def", "parse_section",
           "kernel_btf_target"]


class SecFlag(enum.IntFlag):
    """libbpf's ``enum sec_def_flags``."""

    NONE = 0
    EXP_ATTACH_OPT = 1
    """The expected attach type may be dropped on kernels that do not know it."""
    ATTACHABLE = 2
    ATTACHABLE_OPT = 3
    ATTACH_BTF = 4
    """The program attaches to a BTF id named after the ``/`` (fentry, tp_btf, lsm, iter...)."""
    SLEEPABLE = 8
    XDP_FRAGS = 16
    USDT = 32


@record(frozen=True, slots=True)
class SectionDef:
    """One row of libbpf's table; ``expected_attach_type`` None means 0 (none)."""

    prefix: str
    prog_type: P
    expected_attach_type: A | None = None
    flags: SecFlag = SecFlag.NONE

    def matches(self, name: str) -> bool:
        """libbpf's ``sec_def_matches``."""
        sec = self.prefix
        if sec.endswith("/"):
            return name.startswith(sec)
        if sec.endswith("+"):
            base = sec[:-1]
            return name.startswith(base) and (len(name) == len(base) or name[len(base)] == "/")
        return name == sec

    @property
    def base(self) -> str:
        """The prefix without its trailing ``+``/``/`` marker."""
        return self.prefix.rstrip("+/")


_ = SecFlag
SECTION_DEFS: tuple[SectionDef, ...] = tuple(SectionDef(*row) for row in (
    ("socket", P.SOCKET_FILTER),
    ("sk_reuseport/migrate", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT_OR_MIGRATE, _.ATTACHABLE),
    ("sk_reuseport", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT, _.ATTACHABLE),
    ("kprobe+", P.KPROBE),
    ("uprobe+", P.KPROBE),
    ("uprobe.s+", P.KPROBE, None, _.SLEEPABLE),
    ("kretprobe+", P.KPROBE),
    ("uretprobe+", P.KPROBE),
    ("uretprobe.s+", P.KPROBE, None, _.SLEEPABLE),
    ("kprobe.multi+", P.KPROBE, A.TRACE_KPROBE_MULTI),
    ("kretprobe.multi+", P.KPROBE, A.TRACE_KPROBE_MULTI),
    ("uprobe.multi+", P.KPROBE, A.TRACE_UPROBE_MULTI),
    ("uretprobe.multi+", P.KPROBE, A.TRACE_UPROBE_MULTI),
    ("uprobe.multi.s+", P.KPROBE, A.TRACE_UPROBE_MULTI, _.SLEEPABLE),
    ("uretprobe.multi.s+", P.KPROBE, A.TRACE_UPROBE_MULTI, _.SLEEPABLE),
    ("ksyscall+", P.KPROBE),
    ("kretsyscall+", P.KPROBE),
    ("usdt+", P.KPROBE, None, _.USDT),
    ("usdt.s+", P.KPROBE, None, _.USDT | _.SLEEPABLE),
    ("tc/ingress", P.SCHED_CLS, A.TCX_INGRESS),
    ("tc/egress", P.SCHED_CLS, A.TCX_EGRESS),
    ("tcx/ingress", P.SCHED_CLS, A.TCX_INGRESS),
    ("tcx/egress", P.SCHED_CLS, A.TCX_EGRESS),
    ("tc", P.SCHED_CLS),
    ("classifier", P.SCHED_CLS),
    ("action", P.SCHED_ACT),
    ("netkit/primary", P.SCHED_CLS, A.NETKIT_PRIMARY),
    ("netkit/peer", P.SCHED_CLS, A.NETKIT_PEER),
    ("tracepoint+", P.TRACEPOINT),
    ("tp+", P.TRACEPOINT),
    ("raw_tracepoint+", P.RAW_TRACEPOINT),
    ("raw_tp+", P.RAW_TRACEPOINT),
    ("raw_tracepoint.w+", P.RAW_TRACEPOINT_WRITABLE),
    ("raw_tp.w+", P.RAW_TRACEPOINT_WRITABLE),
    ("tp_btf+", P.TRACING, A.TRACE_RAW_TP, _.ATTACH_BTF),
    ("fentry+", P.TRACING, A.TRACE_FENTRY, _.ATTACH_BTF),
    ("fmod_ret+", P.TRACING, A.MODIFY_RETURN, _.ATTACH_BTF),
    ("fexit+", P.TRACING, A.TRACE_FEXIT, _.ATTACH_BTF),
    ("fentry.s+", P.TRACING, A.TRACE_FENTRY, _.ATTACH_BTF | _.SLEEPABLE),
    ("fmod_ret.s+", P.TRACING, A.MODIFY_RETURN, _.ATTACH_BTF | _.SLEEPABLE),
    ("fexit.s+", P.TRACING, A.TRACE_FEXIT, _.ATTACH_BTF | _.SLEEPABLE),
    ("freplace+", P.EXT, None, _.ATTACH_BTF),
    ("lsm+", P.LSM, A.LSM_MAC, _.ATTACH_BTF),
    ("lsm.s+", P.LSM, A.LSM_MAC, _.ATTACH_BTF | _.SLEEPABLE),
    ("lsm_cgroup+", P.LSM, A.LSM_CGROUP, _.ATTACH_BTF),
    ("iter+", P.TRACING, A.TRACE_ITER, _.ATTACH_BTF),
    ("iter.s+", P.TRACING, A.TRACE_ITER, _.ATTACH_BTF | _.SLEEPABLE),
    ("syscall", P.SYSCALL, None, _.SLEEPABLE),
    ("xdp.frags/devmap", P.XDP, A.XDP_DEVMAP, _.XDP_FRAGS),
    ("xdp/devmap", P.XDP, A.XDP_DEVMAP, _.ATTACHABLE),
    ("xdp.frags/cpumap", P.XDP, A.XDP_CPUMAP, _.XDP_FRAGS),
    ("xdp/cpumap", P.XDP, A.XDP_CPUMAP, _.ATTACHABLE),
    ("xdp.frags", P.XDP, A.XDP, _.XDP_FRAGS),
    ("xdp", P.XDP, A.XDP, _.ATTACHABLE_OPT),
    ("perf_event", P.PERF_EVENT),
    ("lwt_in", P.LWT_IN),
    ("lwt_out", P.LWT_OUT),
    ("lwt_xmit", P.LWT_XMIT),
    ("lwt_seg6local", P.LWT_SEG6LOCAL),
    ("sockops", P.SOCK_OPS, A.CGROUP_SOCK_OPS, _.ATTACHABLE_OPT),
    ("sk_skb/stream_parser", P.SK_SKB, A.SK_SKB_STREAM_PARSER, _.ATTACHABLE_OPT),
    ("sk_skb/stream_verdict", P.SK_SKB, A.SK_SKB_STREAM_VERDICT, _.ATTACHABLE_OPT),
    ("sk_skb", P.SK_SKB),
    ("sk_msg", P.SK_MSG, A.SK_MSG_VERDICT, _.ATTACHABLE_OPT),
    ("lirc_mode2", P.LIRC_MODE2, A.LIRC_MODE2, _.ATTACHABLE_OPT),
    ("flow_dissector", P.FLOW_DISSECTOR, A.FLOW_DISSECTOR, _.ATTACHABLE_OPT),
    ("cgroup_skb/ingress", P.CGROUP_SKB, A.CGROUP_INET_INGRESS, _.ATTACHABLE_OPT),
    ("cgroup_skb/egress", P.CGROUP_SKB, A.CGROUP_INET_EGRESS, _.ATTACHABLE_OPT),
    ("cgroup/skb", P.CGROUP_SKB),
    ("cgroup/sock_create", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, _.ATTACHABLE),
    ("cgroup/sock_release", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_RELEASE, _.ATTACHABLE),
    ("cgroup/sock", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE, _.ATTACHABLE_OPT),
    ("cgroup/post_bind4", P.CGROUP_SOCK, A.CGROUP_INET4_POST_BIND, _.ATTACHABLE),
    ("cgroup/post_bind6", P.CGROUP_SOCK, A.CGROUP_INET6_POST_BIND, _.ATTACHABLE),
    ("cgroup/bind4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_BIND, _.ATTACHABLE),
    ("cgroup/bind6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_BIND, _.ATTACHABLE),
    ("cgroup/connect4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT, _.ATTACHABLE),
    ("cgroup/connect6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_CONNECT, _.ATTACHABLE),
    ("cgroup/connect_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_CONNECT, _.ATTACHABLE),
    ("cgroup/sendmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_SENDMSG, _.ATTACHABLE),
    ("cgroup/sendmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_SENDMSG, _.ATTACHABLE),
    ("cgroup/sendmsg_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_SENDMSG, _.ATTACHABLE),
    ("cgroup/recvmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_RECVMSG, _.ATTACHABLE),
    ("cgroup/recvmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_RECVMSG, _.ATTACHABLE),
    ("cgroup/recvmsg_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_RECVMSG, _.ATTACHABLE),
    ("cgroup/getpeername4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETPEERNAME, _.ATTACHABLE),
    ("cgroup/getpeername6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETPEERNAME, _.ATTACHABLE),
    ("cgroup/getpeername_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_GETPEERNAME, _.ATTACHABLE),
    ("cgroup/getsockname4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETSOCKNAME, _.ATTACHABLE),
    ("cgroup/getsockname6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETSOCKNAME, _.ATTACHABLE),
    ("cgroup/getsockname_unix", P.CGROUP_SOCK_ADDR, A.CGROUP_UNIX_GETSOCKNAME, _.ATTACHABLE),
    ("cgroup/sysctl", P.CGROUP_SYSCTL, A.CGROUP_SYSCTL, _.ATTACHABLE),
    ("cgroup/getsockopt", P.CGROUP_SOCKOPT, A.CGROUP_GETSOCKOPT, _.ATTACHABLE),
    ("cgroup/setsockopt", P.CGROUP_SOCKOPT, A.CGROUP_SETSOCKOPT, _.ATTACHABLE),
    ("cgroup/dev", P.CGROUP_DEVICE, A.CGROUP_DEVICE, _.ATTACHABLE_OPT),
    ("struct_ops+", P.STRUCT_OPS),
    ("struct_ops.s+", P.STRUCT_OPS, None, _.SLEEPABLE),
    ("sk_lookup", P.SK_LOOKUP, A.SK_LOOKUP, _.ATTACHABLE),
    ("netfilter", P.NETFILTER, A.NETFILTER),
))
del _


@record(frozen=True, slots=True)
class Section:
    """What a program's ELF section name says about it."""

    name: str
    """The section name without a leading ``?``."""
    definition: SectionDef
    autoload: bool
    """False for ``SEC("?...")``."""
    attach_to: str | None
    """The text after the prefix's ``/`` (``sched/sched_process_exec``, ``do_unlinkat``,
    ``/bin/bash:readline``), None for the bare form."""

    @property
    def prog_type(self) -> P:
        return self.definition.prog_type

    @property
    def expected_attach_type(self) -> A | None:
        return self.definition.expected_attach_type

    @property
    def flags(self) -> SecFlag:
        return self.definition.flags

    @property
    def sleepable(self) -> bool:
        return bool(self.definition.flags & SecFlag.SLEEPABLE)


def find_section_def(name: str) -> SectionDef | None:
    """The first table row matching ``name`` (``?`` already stripped), as libbpf's ``find_sec_def``."""
    for d in SECTION_DEFS:
        if d.matches(name):
            return d
    return None


def parse_section(name: str) -> Section:
    """Interpret a program section name; ObjectError naming the known prefixes if none matches."""
    autoload = not name.startswith("?")
    bare = name[1:] if not autoload else name
    d = find_section_def(bare)
    if d is None:
        known = " ".join(x.prefix for x in SECTION_DEFS)
        raise ObjectError(f"unknown program section {name!r}: no SEC() prefix matches; known: {known}",
                          section=name)
    base = d.base
    if d.prefix.endswith(("/", "+")) and len(bare) > len(base) and bare[len(base)] == "/":
        attach_to: str | None = bare[len(base) + 1:]
    elif d.prefix.endswith("/"):
        attach_to = bare[len(d.prefix):]
    else:
        attach_to = None
    return Section(bare, d, autoload, attach_to or None)


def kernel_btf_target(expected_attach_type: A | None, attach_to: str) -> tuple[str, str]:
    """libbpf's ``btf_get_kernel_prefix_kind``: the kernel BTF (name, kind) a SEC_ATTACH_BTF
    program attaches to: ``btf_trace_<tp>`` TYPEDEF for tp_btf, ``bpf_lsm_<hook>`` FUNC for lsm,
    ``bpf_iter_<name>`` FUNC for iter, else the FUNC itself. Kind is 'TYPEDEF' or 'FUNC'."""
    if expected_attach_type == A.TRACE_RAW_TP:
        return "btf_trace_" + attach_to, "TYPEDEF"
    if expected_attach_type in (A.LSM_MAC, A.LSM_CGROUP):
        return "bpf_lsm_" + attach_to, "FUNC"
    if expected_attach_type == A.TRACE_ITER:
        return "bpf_iter_" + attach_to, "FUNC"
    return attach_to, "FUNC"
