"""Prepared ``bpf()`` calls for hot paths: an attr built once, the call bound to it.

``prepared(cmd, attr)`` returns a zero-argument callable doing
``bpf(cmd, &attr, sizeof(attr))`` and returning the raw result (read the errno
with ``ctypes.get_errno()`` when it is negative). The caller keeps ``attr`` (and
whatever its pointers point at) alive and rewrites its fields between calls.

The call keeps the GIL (``ctypes.PyDLL``): right for short, non-blocking commands
such as the map element operations, where handing the GIL over costs as much as
the system call; never use it for commands that can block (PROG_LOAD, ...).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

from .bpf import syscall_number
from .uapi import Cmd

__all__ = ["prepared"]

_syscall = ctypes.PyDLL(None, use_errno=True).syscall  # variadic: arguments passed as prebuilt c_long
_syscall.restype = ctypes.c_long
_BPF_NR = ctypes.c_long(syscall_number("bpf"))


def prepared(cmd: Cmd, attr: ctypes.Structure) -> Callable[[], int]:
    """``bpf(cmd, &attr, sizeof(attr))`` bound into a callable returning the raw result."""
    return functools.partial(_syscall, _BPF_NR, ctypes.c_long(int(cmd)), ctypes.c_long(ctypes.addressof(attr)),
                             ctypes.c_long(ctypes.sizeof(attr)))
