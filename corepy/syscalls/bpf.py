"""The ``bpf(2)`` and ``perf_event_open(2)`` system calls through ``libc.syscall``."""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable

from ..errors import NotSupportedError, raise_for_errno
from .uapi import Cmd

# syscall numbers per architecture (uname machine spelling)
SYSCALL_NUMBERS: dict[str, dict[str, int]] = {
    "x86_64": {"bpf": 321, "perf_event_open": 298, "ioctl": 16},
    "aarch64": {"bpf": 280, "perf_event_open": 241, "ioctl": 29},
    "arm64": {"bpf": 280, "perf_event_open": 241, "ioctl": 29},
}

PROG_LOAD_ATTEMPTS = 5  # libbpf retries BPF_PROG_LOAD on EAGAIN this many times

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall  # long syscall(long number, ...): the first 3 arguments typed for bpf()
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long]


def syscall_number(name: str) -> int:
    """The number of system call ``name`` on this machine's architecture."""
    machine = os.uname().machine
    numbers = SYSCALL_NUMBERS.get(machine)
    if numbers is None:
        raise NotSupportedError(f"{name} syscall", f"architecture {machine!r} is not supported (known: x86_64, aarch64)")
    return numbers[name]


def raw_syscall(number: int, *args: int) -> tuple[int, int]:
    """``syscall(number, *args)`` (integer arguments): ``(result, errno)``; errno is 0 on success."""
    ctypes.set_errno(0)
    padded = list(args[:3]) + [0] * (3 - len(args)) + [ctypes.c_long(a) for a in args[3:]]
    result = _syscall(number, *padded)
    return result, (ctypes.get_errno() if result < 0 else 0)


def retrying(
    call: Callable[[], tuple[int, int]], command: str, *, eagain_attempts: int = 1, detail: str | None = None
) -> int:
    """Run ``call`` until it succeeds; retry EINTR always and EAGAIN ``eagain_attempts`` times, then raise."""
    attempts = 0
    while True:
        result, err = call()
        if result >= 0:
            return result
        if err == errno.EINTR:
            continue
        attempts += 1
        if err == errno.EAGAIN and attempts < eagain_attempts:
            continue
        raise_for_errno(command, err, detail)


_BPF_NR: int | None = None


def bpf(cmd: Cmd, attr: ctypes.Structure, *, detail: str | None = None, size: int | None = None) -> int:
    """``bpf(cmd, &attr, sizeof(attr))``: the result (an fd or 0), or raise a
    :class:`~corepy.errors.SyscallError` named ``BPF_<CMD>``.

    ``size`` defaults to the Structure's real size, so fields this kernel does not
    know are passed as zero.
    """
    global _BPF_NR
    if _BPF_NR is None:
        _BPF_NR = syscall_number("bpf")
    nr, address, length = _BPF_NR, ctypes.addressof(attr), ctypes.sizeof(attr) if size is None else size
    attempts = PROG_LOAD_ATTEMPTS if cmd == Cmd.PROG_LOAD else 1
    return retrying(
        lambda: raw_syscall(nr, int(cmd), address, length), f"BPF_{cmd.name}", eagain_attempts=attempts, detail=detail
    )


def bpf_errno(cmd: Cmd, attr: ctypes.Structure) -> tuple[int, int]:
    """``bpf()`` without raising (for probes): ``(result, errno)``, EINTR retried."""
    global _BPF_NR
    if _BPF_NR is None:
        _BPF_NR = syscall_number("bpf")
    while True:
        result, err = raw_syscall(_BPF_NR, int(cmd), ctypes.addressof(attr), ctypes.sizeof(attr))
        if err != errno.EINTR:
            return result, err
