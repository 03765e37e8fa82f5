"""kprobes and uprobes through their dynamic perf PMUs (``/sys/bus/event_source/devices``).

A uprobe is ``binary`` + file offset (resolved from a symbol by :mod:`corepy.uprobe`);
a kprobe is a kernel function + offset. Both become a perf event, then a BPF link.
"""

from __future__ import annotations

import ctypes
import os

from ..errors import NotSupportedError
from ..links import Link
from .perf_event import attach_perf_fd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..programs import Program
    from ..syscalls.fd import FD

__all__ = ["attach_kprobe", "attach_ksyscall", "attach_uprobe", "attach_uprobe_offset", "attach_uprobe_multi",
           "probe_pmu"]

PMU_DIR = "/sys/bus/event_source/devices"


def probe_pmu(kind: str) -> tuple[int, int]:
    """(PMU type, retprobe config bit) of the ``kprobe``/``uprobe`` PMU, or NotSupportedError
    naming what is missing (checked: the PMU directory and tracefs ``<kind>_events``)."""
    from ..syscalls import perf

    try:
        return perf.pmu_type(kind), perf.retprobe_bit(kind)
    except NotSupportedError:
        pass
    legacy = _tracefs_file(f"{kind}_events")
    detail = (f"no {kind} PMU in {PMU_DIR}" +
              (f"; {legacy} exists but corepy does not use the legacy tracefs interface" if legacy and
               os.path.exists(legacy) else f" and no {kind}_events in tracefs"))
    config = "CONFIG_KPROBES/CONFIG_KPROBE_EVENTS" if kind == "kprobe" else "CONFIG_UPROBE_EVENTS"
    raise NotSupportedError(f"{kind}s ({config})", detail)


def _tracefs_file(name: str) -> str | None:
    try:
        from ..syscalls import tracefs

        return os.path.join(tracefs.tracefs_root(), name)
    except Exception:  # tracefs absent: the message says so
        return None


def _open_probe(kind: str, name: bytes, offset: int, retprobe: bool, pid: int, ref_ctr_offset: int = 0) -> FD:
    from ..syscalls import perf

    pmu, bit = probe_pmu(kind)
    buf = ctypes.create_string_buffer(name)  # alive across the syscall
    config = (1 << bit) if retprobe else 0
    if ref_ctr_offset:
        config |= ref_ctr_offset << perf.PERF_UPROBE_REF_CTR_OFFSET_SHIFT
    attr = perf.probe_attr(pmu, ctypes.addressof(buf), offset, config=config)
    # libbpf's convention: all processes -> (pid -1, cpu 0); one process -> (pid, any cpu)
    return perf.perf_event_open(attr, pid=pid if pid >= 0 else -1, cpu=0 if pid < 0 else -1,
                                detail=f"{kind} {name.decode(errors='replace')}+{offset:#x}")


def attach_kprobe(program: Program, function: str, offset: int = 0, *, retprobe: bool = False,
                  cookie: int = 0) -> Link:
    """Attach a kprobe program to kernel ``function+offset`` (``retprobe``: on return)."""
    kind = "kretprobe" if retprobe else "kprobe"
    pfd = _open_probe("kprobe", function.encode(), offset, retprobe, -1)
    return attach_perf_fd(program, pfd, target=f"{kind} {function}+{offset:#x}", cookie=cookie)


def attach_uprobe(program: Program, binary: str, function: str | None = None, offset: int = 0, *,
                  pid: int = -1, retprobe: bool = False, cookie: int = 0) -> Link:
    """Attach a uprobe program to ``function+offset`` in ``binary`` (a path, an executable on
    PATH, or a library name like ``libc.so.6``); without ``function``, ``offset`` is a file
    offset. ``pid`` >= 0 limits it to one process."""
    from ..uprobe import UprobeTarget, file_offset

    path, file_off = file_offset(UprobeTarget(binary, function, offset))
    what = f"{function}+{offset:#x}" if function else f"{file_off:#x}"
    return attach_uprobe_offset(program, path, file_off, pid=pid, retprobe=retprobe, cookie=cookie,
                                what=f"{'uretprobe' if retprobe else 'uprobe'} {path}:{what}")


def attach_uprobe_offset(program: Program, path: str, file_offset: int, *, pid: int = -1, retprobe: bool = False,
                         cookie: int = 0, ref_ctr_offset: int = 0, what: str = "") -> Link:
    """Attach at a resolved file offset; ``ref_ctr_offset`` is the file offset of a USDT
    semaphore the kernel increments while the probe is attached."""
    pfd = _open_probe("uprobe", os.fsencode(os.path.realpath(path)), file_offset, retprobe, pid, ref_ctr_offset)
    return attach_perf_fd(program, pfd, target=what or f"uprobe {path}:{file_offset:#x}", cookie=cookie)


def attach_ksyscall(program: Program, syscall: str, *, retprobe: bool = False, cookie: int = 0) -> Link:
    """``ksyscall/<name>``: a kprobe on the syscall's kernel entry point (``__x64_sys_<name>``
    where the kernel has syscall wrappers, else ``sys_<name>``), as libbpf does."""
    import platform

    from ..syscalls import features

    prefix = {"x86_64": "__x64_", "aarch64": "__arm64_", "s390x": "__s390x_", "riscv64": "__riscv_",
              "ppc64le": "", "i686": "__ia32_"}.get(platform.machine(), "")
    function = f"{prefix}sys_{syscall}" if features.has_syscall_wrapper() else f"sys_{syscall}"
    return attach_kprobe(program, function, retprobe=retprobe, cookie=cookie)


def attach_uprobe_multi(program: Program, binary: str, pattern: str, *, pid: int = -1, retprobe: bool = False,
                        cookies: tuple[int, ...] = ()) -> Link:
    """One ``uprobe_multi`` link (kernel 6.6+) on every function of ``binary`` matching the glob
    ``pattern``; the program must be loaded with attach type ``TRACE_UPROBE_MULTI``
    (``SEC("uprobe.multi/...")``). ``cookies``: one per matched function, in name order."""
    from ..syscalls import features
    from ..syscalls.links import link_create_uprobe_multi
    from ..syscalls.uapi import BPF_F_UPROBE_MULTI_RETURN, LinkType
    from ..uprobe import function_offsets, resolve_binary

    if not features.has_link_type(LinkType.UPROBE_MULTI):
        raise NotSupportedError("uprobe_multi links (kernel 6.6+)",
                                features.feature_reason("link_type", LinkType.UPROBE_MULTI))
    path = os.path.realpath(resolve_binary(binary))
    found = function_offsets(path, pattern)
    names = sorted(found)
    fd = link_create_uprobe_multi(program.fd, path, [found[n] for n in names], cookies=cookies,
                                  pid=max(pid, 0), flags=BPF_F_UPROBE_MULTI_RETURN if retprobe else 0)
    kind = "uretprobe.multi" if retprobe else "uprobe.multi"
    return Link(fd, program=program, target=f"{kind} {path}:{pattern} ({len(names)} functions)")
