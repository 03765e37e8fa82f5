"""Attaching programs, one module per family; :func:`auto_attach` picks by SEC() name.

- ``tracepoint``: ``tp/``, ``tracepoint/`` (perf event + link), ``raw_tp/``, ``raw_tracepoint/``
- ``tracing``: ``tp_btf/``, ``fentry/``, ``fexit/``, ``fmod_ret/``, ``lsm/`` (target fixed at load)
- ``probes``: ``kprobe/``, ``kretprobe/``, ``ksyscall/``, ``uprobe/``, ``uretprobe/`` (PMU perf
  events + link), ``uprobe.multi/`` (one uprobe_multi link on a glob of functions)
- ``net``: xdp, tc (tcx links; rtnetlink clsact filters via ``tc_netlink`` where tcx is absent),
  cgroup, socket filters (need a target: never auto-attached)
- ``perf_event``: a program on any perf event fd (also the common path of the above)
- ``iter``: ``iter/`` links and reading their output
- ``usdt``: ``usdt/`` probes of programs built with libbpf's ``usdt.bpf.h``
"""

from __future__ import annotations

from ..errors import NotSupportedError, ObjectError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..links import Link
    from ..programs import Program

__all__ = ["auto_attach", "section_kind", "section_target"]


def section_kind(section: str | None) -> str:
    """``'uprobe'`` for ``uprobe.s/bin:f``, ``'tp'`` for ``?tp/a/b``: the SEC() prefix without
    the autoload marker, sleepable suffix or target."""
    head = (section or "").lstrip("?").split("/", 1)[0]
    return head[:-2] if head.endswith(".s") else head


def section_target(program: Program) -> str:
    """The attach target text: the program's ``attach_to``, else its SEC() after the first '/'."""
    if program.attach_to:
        return program.attach_to
    section = (program.section or "").lstrip("?")
    return section.split("/", 1)[1] if "/" in section else ""


def auto_attach(program: Program, **options: Any) -> Link | None:
    """Attach ``program`` where its SEC() says, as libbpf's auto-attach does; None when the
    section names no target (``xdp``, ``tc``, ``socket``, ``cgroup_skb/...``, bare ``uprobe``)."""
    kind = section_kind(program.section)
    target = section_target(program)
    if kind in ("tp", "tracepoint"):
        if not target:
            return None
        category, sep, name = target.partition("/")
        if not sep or not name:
            raise ObjectError(f"tracepoint section {program.section!r} is not 'tp/<category>/<name>'",
                              section=program.section)
        return program.attach_tracepoint(category, name, **options)
    if kind in ("raw_tp", "raw_tracepoint", "raw_tp.w", "raw_tracepoint.w"):
        return program.attach_raw_tracepoint(target, **options) if target else None
    if kind in ("tp_btf", "fentry", "fexit", "fmod_ret", "lsm", "freplace"):
        return program.attach_trace(**options)
    if kind == "iter":
        return program.attach_iter(**options)
    if kind in ("kprobe", "kretprobe"):
        if not target:
            return None
        function, _, off = target.partition("+")
        return program.attach_kprobe(function, int(off, 0) if off else 0, retprobe=kind == "kretprobe",
                                     **options)
    if kind in ("ksyscall", "kretsyscall"):
        return program.attach_ksyscall(target, retprobe=kind == "kretsyscall", **options) if target else None
    if kind in ("kprobe.multi", "kretprobe.multi"):
        from ..syscalls import features
        from ..syscalls.uapi import LinkType

        raise NotSupportedError("kprobe_multi attach in corepy", "not implemented" + (
            "" if features.has_link_type(LinkType.KPROBE_MULTI) else
            "; this kernel lacks it anyway: " + features.feature_reason("link_type", LinkType.KPROBE_MULTI)))
    if kind in ("uprobe.multi", "uretprobe.multi"):
        if not target:
            return None
        binary, sep, pattern = target.rpartition(":")
        if not sep or not binary or not pattern:
            raise ObjectError(f"section {program.section!r} is not '{kind}/<binary>:<function pattern>'",
                              section=program.section)
        return program.attach_uprobe_multi(binary, pattern, retprobe=kind == "uretprobe.multi", **options)
    if kind in ("uprobe", "uretprobe"):
        if not target:
            return None
        from ..uprobe import parse_uprobe_spec

        spec = parse_uprobe_spec(target)
        return program.attach_uprobe(spec.binary, spec.function, spec.offset, retprobe=kind == "uretprobe",
                                     **options)
    if kind == "usdt" and target:
        binary, provider, name = _usdt_target(target, program)
        return program.attach_usdt(binary, provider, name, **options)
    return None


def _usdt_target(target: str, program: Program) -> tuple[str, str, str]:
    """``binary:provider:name`` (libbpf's SEC("usdt/...") syntax)."""
    parts = target.rsplit(":", 2)
    if len(parts) != 3 or not all(parts):
        raise ObjectError(f"usdt section {program.section!r} is not 'usdt/<binary>:<provider>:<name>'",
                          section=program.section)
    return parts[0], parts[1], parts[2]
