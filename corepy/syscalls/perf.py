"""``perf_event_open(2)``: ``struct perf_event_attr`` (Linux 6.18 layout), its ioctls, and the
dynamic kprobe/uprobe PMUs from /sys/bus/event_source."""

from __future__ import annotations

import ctypes
import os
from ctypes import c_int32, c_uint16, c_uint32, c_uint64

from ..errors import CorepyError, NotSupportedError
from .bpf import raw_syscall, retrying, syscall_number
from .fd import FD, FdLike, fdnum

# enum perf_type_id
PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
PERF_TYPE_HW_CACHE = 3
PERF_TYPE_RAW = 4
PERF_TYPE_BREAKPOINT = 5

# enum perf_sw_ids (the ones BPF uses)
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_COUNT_SW_TASK_CLOCK = 1
PERF_COUNT_SW_DUMMY = 9
PERF_COUNT_SW_BPF_OUTPUT = 10

# enum perf_event_sample_format (excerpt)
PERF_SAMPLE_IP = 1 << 0
PERF_SAMPLE_TID = 1 << 1
PERF_SAMPLE_TIME = 1 << 2
PERF_SAMPLE_CALLCHAIN = 1 << 5
PERF_SAMPLE_CPU = 1 << 7
PERF_SAMPLE_RAW = 1 << 10

# perf_event_open flags
PERF_FLAG_FD_NO_GROUP = 1 << 0
PERF_FLAG_FD_OUTPUT = 1 << 1
PERF_FLAG_PID_CGROUP = 1 << 2
PERF_FLAG_FD_CLOEXEC = 1 << 3

# bits of perf_event_attr.flags (the C bitfield word)
ATTR_DISABLED = 1 << 0
ATTR_INHERIT = 1 << 1
ATTR_PINNED = 1 << 2
ATTR_EXCLUSIVE = 1 << 3
ATTR_EXCLUDE_USER = 1 << 4
ATTR_EXCLUDE_KERNEL = 1 << 5
ATTR_EXCLUDE_HV = 1 << 6
ATTR_EXCLUDE_IDLE = 1 << 7
ATTR_MMAP = 1 << 8
ATTR_COMM = 1 << 9
ATTR_FREQ = 1 << 10
ATTR_INHERIT_STAT = 1 << 11
ATTR_ENABLE_ON_EXEC = 1 << 12
ATTR_TASK = 1 << 13
ATTR_WATERMARK = 1 << 14
ATTR_PRECISE_IP_SHIFT = 15  # 2 bits
ATTR_MMAP_DATA = 1 << 17
ATTR_SAMPLE_ID_ALL = 1 << 18
ATTR_EXCLUDE_HOST = 1 << 19
ATTR_EXCLUDE_GUEST = 1 << 20
ATTR_EXCLUDE_CALLCHAIN_KERNEL = 1 << 21
ATTR_EXCLUDE_CALLCHAIN_USER = 1 << 22
ATTR_MMAP2 = 1 << 23
ATTR_COMM_EXEC = 1 << 24
ATTR_USE_CLOCKID = 1 << 25
ATTR_CONTEXT_SWITCH = 1 << 26
ATTR_WRITE_BACKWARD = 1 << 27
ATTR_NAMESPACES = 1 << 28
ATTR_KSYMBOL = 1 << 29
ATTR_BPF_EVENT = 1 << 30
ATTR_AUX_OUTPUT = 1 << 31
ATTR_CGROUP = 1 << 32
ATTR_TEXT_POKE = 1 << 33
ATTR_BUILD_ID = 1 << 34
ATTR_INHERIT_THREAD = 1 << 35
ATTR_REMOVE_ON_EXEC = 1 << 36
ATTR_SIGTRAP = 1 << 37

PERF_UPROBE_REF_CTR_OFFSET_SHIFT = 32


class PerfEventAttr(ctypes.Structure):
    """``struct perf_event_attr`` (PERF_ATTR_SIZE_VER8, 136 bytes). Unions are named by their
    first member: ``sample_period`` (= sample_freq), ``wakeup_events`` (= wakeup_watermark),
    ``config1`` (= bp_addr, kprobe_func, uprobe_path), ``config2`` (= bp_len, kprobe_addr,
    probe_offset). ``flags`` is the bitfield word (``ATTR_*``)."""

    _fields_ = [
        ("type", c_uint32),
        ("size", c_uint32),
        ("config", c_uint64),
        ("sample_period", c_uint64),
        ("sample_type", c_uint64),
        ("read_format", c_uint64),
        ("flags", c_uint64),
        ("wakeup_events", c_uint32),
        ("bp_type", c_uint32),
        ("config1", c_uint64),
        ("config2", c_uint64),
        ("branch_sample_type", c_uint64),
        ("sample_regs_user", c_uint64),
        ("sample_stack_user", c_uint32),
        ("clockid", c_int32),
        ("sample_regs_intr", c_uint64),
        ("aux_watermark", c_uint32),
        ("sample_max_stack", c_uint16),
        ("_reserved_2", c_uint16),
        ("aux_sample_size", c_uint32),
        ("aux_action", c_uint32),
        ("sig_data", c_uint64),
        ("config3", c_uint64),
    ]

    def __init__(self, **fields: int):
        super().__init__(size=ctypes.sizeof(PerfEventAttr), **fields)


def tracepoint_attr(tp_id: int) -> PerfEventAttr:
    """Attributes of a tracepoint event (id from :func:`corepy.syscalls.tracefs.tracepoint_id`)."""
    return PerfEventAttr(type=PERF_TYPE_TRACEPOINT, config=tp_id)


def probe_attr(pmu: int, name_address: int, offset: int, *, config: int = 0) -> PerfEventAttr:
    """Attributes of a kprobe/uprobe event on the dynamic PMU ``pmu``: ``name_address`` points at
    the NUL-terminated function name (kprobe) or binary path (uprobe), or is 0 for a kprobe on
    the absolute address ``offset``. ``config`` carries the retprobe bit and, for uprobes, the
    reference counter offset (``<< PERF_UPROBE_REF_CTR_OFFSET_SHIFT``)."""
    return PerfEventAttr(type=pmu, config=config, config1=name_address, config2=offset)


def bpf_output_attr(wakeup_events: int = 1) -> PerfEventAttr:
    """Attributes of the per-CPU BPF output events behind a perf event array (perf buffer)."""
    return PerfEventAttr(
        type=PERF_TYPE_SOFTWARE,
        config=PERF_COUNT_SW_BPF_OUTPUT,
        sample_type=PERF_SAMPLE_RAW,
        sample_period=1,
        wakeup_events=max(1, wakeup_events),
    )


def software_attr(config: int = PERF_COUNT_SW_CPU_CLOCK, *, sample_period: int = 0, freq: int = 0) -> PerfEventAttr:
    """Attributes of a software event (for perf_event programs); ``freq`` samples per second."""
    attr = PerfEventAttr(type=PERF_TYPE_SOFTWARE, config=config, sample_period=freq or sample_period)
    if freq:
        attr.flags |= ATTR_FREQ
    return attr


_PERF_NR: int | None = None


def perf_event_open(
    attr: PerfEventAttr,
    pid: int = -1,
    cpu: int = 0,
    group_fd: int = -1,
    flags: int = PERF_FLAG_FD_CLOEXEC,
    *,
    detail: str | None = None,
) -> FD:
    """``perf_event_open(&attr, pid, cpu, group_fd, flags)`` -> the event's FD."""
    global _PERF_NR
    if _PERF_NR is None:
        _PERF_NR = syscall_number("perf_event_open")
    nr, address = _PERF_NR, ctypes.addressof(attr)
    fd = retrying(lambda: raw_syscall(nr, address, pid, cpu, group_fd, flags), "perf_event_open",
                  detail=detail or f"type {attr.type} config {attr.config:#x} pid {pid} cpu {cpu}")
    return FD(fd, "perf_event")


# ioctl request numbers: _IO/_IOW/_IOR('$', nr, size) in the generic Linux encoding
def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("$") << 8) | nr


_NONE, _WRITE, _READ = 0, 1, 2
PERF_EVENT_IOC_ENABLE = _ioc(_NONE, 0, 0)
PERF_EVENT_IOC_DISABLE = _ioc(_NONE, 1, 0)
PERF_EVENT_IOC_REFRESH = _ioc(_NONE, 2, 0)
PERF_EVENT_IOC_RESET = _ioc(_NONE, 3, 0)
PERF_EVENT_IOC_SET_OUTPUT = _ioc(_NONE, 5, 0)
PERF_EVENT_IOC_ID = _ioc(_READ, 7, 8)
PERF_EVENT_IOC_SET_BPF = _ioc(_WRITE, 8, 4)
PERF_EVENT_IOC_PAUSE_OUTPUT = _ioc(_WRITE, 9, 4)


_IOCTL_NR: int | None = None


def _ioctl(fd: FdLike, request: int, arg: int, name: str) -> None:
    """``ioctl(fd, request, arg)`` through ``libc.syscall`` as the other calls here (no :mod:`fcntl`
    to load); ``arg`` is an integer or an address."""
    global _IOCTL_NR
    if _IOCTL_NR is None:
        _IOCTL_NR = syscall_number("ioctl")
    nr, number = _IOCTL_NR, fdnum(fd)
    retrying(lambda: raw_syscall(nr, number, request, arg), name, detail=f"perf event fd {number}")


def ioctl_enable(fd: FdLike) -> None:
    """PERF_EVENT_IOC_ENABLE."""
    _ioctl(fd, PERF_EVENT_IOC_ENABLE, 0, "PERF_EVENT_IOC_ENABLE")


def ioctl_disable(fd: FdLike) -> None:
    """PERF_EVENT_IOC_DISABLE."""
    _ioctl(fd, PERF_EVENT_IOC_DISABLE, 0, "PERF_EVENT_IOC_DISABLE")


def ioctl_set_bpf(fd: FdLike, prog_fd: FdLike) -> None:
    """PERF_EVENT_IOC_SET_BPF: run ``prog_fd`` on the event (pre-bpf_link attachment)."""
    _ioctl(fd, PERF_EVENT_IOC_SET_BPF, fdnum(prog_fd), "PERF_EVENT_IOC_SET_BPF")


def ioctl_id(fd: FdLike) -> int:
    """PERF_EVENT_IOC_ID: the event's id."""
    event_id = ctypes.c_uint64()
    _ioctl(fd, PERF_EVENT_IOC_ID, ctypes.addressof(event_id), "PERF_EVENT_IOC_ID")
    return event_id.value


# --- dynamic PMUs ---

EVENT_SOURCE_DIR = "/sys/bus/event_source/devices"


def pmu_type(kind: str) -> int:
    """The dynamic PMU type number of ``kind`` ("kprobe" or "uprobe")."""
    path = os.path.join(EVENT_SOURCE_DIR, kind, "type")
    try:
        with open(path) as f:
            return int(f.read().strip())
    except FileNotFoundError:
        raise NotSupportedError(f"{kind} PMU", f"{path} is missing (kernel built without {kind} events?)") from None
    except (OSError, ValueError) as e:
        raise CorepyError(f"cannot read {path}: {e}") from None


def retprobe_bit(kind: str) -> int:
    """The ``config`` bit that turns a ``kind`` probe into a return probe (``config:N``)."""
    path = os.path.join(EVENT_SOURCE_DIR, kind, "format", "retprobe")
    try:
        with open(path) as f:
            text = f.read().strip()
    except FileNotFoundError:
        raise NotSupportedError(f"{kind} return probes", f"{path} is missing") from None
    except OSError as e:
        raise CorepyError(f"cannot read {path}: {e.strerror}") from None
    field, _, bit = text.partition(":")
    if field != "config" or not bit.isdigit():
        raise CorepyError(f"unexpected format {text!r} in {path} (expected 'config:N')")
    return int(bit)
