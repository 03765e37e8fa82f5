"""corepy's exceptions: every failure names what went wrong, where, and what to try.

Pure layers (BTF, ELF, CO-RE) raise :class:`BTFError`, :class:`ObjectError` and
:class:`RelocationError`; the kernel layer raises :class:`SyscallError` (an
``OSError`` too, carrying ``errno``) and its refinements.
"""

from __future__ import annotations

import errno as _errno
import os

__all__ = [
    "CorepyError",
    "BTFError",
    "ObjectError",
    "RelocationError",
    "SyscallError",
    "BPFPermissionError",
    "VerifierError",
    "NotSupportedError",
]


class CorepyError(Exception):
    """Base of every exception corepy raises on purpose."""


class BTFError(CorepyError, ValueError):
    """Malformed or unusable BTF. ``offset`` is the byte offset in the blob, if known."""

    def __init__(self, message: str, *, offset: int | None = None, source: str | None = None):
        self.offset = offset
        self.source = source
        where = []
        if source:
            where.append(source)
        if offset is not None:
            where.append(f"offset {offset:#x}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class ObjectError(CorepyError, ValueError):
    """Malformed or unsupported BPF ELF object (bad section, symbol, map definition...)."""

    def __init__(self, message: str, *, path: str | None = None, section: str | None = None):
        self.path = path
        self.section = section
        where = [w for w in (path, f"section {section}" if section else None) if w]
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class RelocationError(CorepyError):
    """A relocation (CO-RE, map, call or extern) could not be applied."""


_HINTS = {
    _errno.EPERM: "needs root or CAP_BPF+CAP_PERFMON (CAP_NET_ADMIN for networking); "
    "check kernel lockdown and RLIMIT_MEMLOCK on old kernels",
    _errno.EACCES: "permission denied: needs root or CAP_BPF; for PROG_LOAD see the verifier log",
    _errno.E2BIG: "attribute too big for this kernel: the kernel is probably older than the feature",
    _errno.ENOENT: "no such object (key, id, pin path or kernel symbol)",
    _errno.EINVAL: "the kernel rejected an argument: unknown type or flag, or a feature this kernel lacks",
    _errno.ENOSPC: "the object is full (max_entries reached) or the log buffer is too small",
    _errno.EEXIST: "it exists already",
    _errno.EBADF: "bad file descriptor (closed object?)",
    _errno.ENOTSUPP if hasattr(_errno, "ENOTSUPP") else 524: "not supported by this kernel",
    _errno.EOPNOTSUPP: "operation not supported by this kernel or for this object type",
}


class SyscallError(CorepyError, OSError):
    """A system call failed. ``command`` names it (``BPF_MAP_CREATE``, ``perf_event_open``...)."""

    def __init__(self, command: str, err: int, detail: str | None = None, hint: str | None = None):
        self.command = command
        self.detail = detail
        self.hint = hint if hint is not None else _HINTS.get(err, "")
        name = _errno.errorcode.get(err, str(err)) if err != 524 else "ENOTSUPP"
        text = f"{command} failed: {name} ({os.strerror(err) if err != 524 else 'Operation not supported'})"
        if detail:
            text += f": {detail}"
        if self.hint:
            text += f" [hint: {self.hint}]"
        OSError.__init__(self, err, text)

    def __str__(self) -> str:  # OSError would print "[Errno N] ..."; we already say it
        return self.strerror or ""


class BPFPermissionError(SyscallError, PermissionError):
    """EPERM/EACCES from the kernel outside of the verifier."""


class VerifierError(SyscallError):
    """BPF_PROG_LOAD refused the program; ``log`` is the verifier's full log."""

    def __init__(self, program: str, err: int, log: str, context: str | None = None):
        self.program = program
        self.log = log
        self.context = context
        tail = "\n".join(log.rstrip().splitlines()[-12:])
        detail = f"program {program!r} rejected by the verifier"
        if context:
            detail += f"\n{context}"
        if tail:
            detail += f"\nverifier log (tail):\n{tail}"
        super().__init__("BPF_PROG_LOAD", err, detail, hint="")


class NotSupportedError(CorepyError):
    """The running kernel lacks a feature; ``feature`` names it as probed."""

    def __init__(self, feature: str, detail: str | None = None):
        self.feature = feature
        super().__init__(f"kernel lacks {feature}" + (f": {detail}" if detail else ""))


def raise_for_errno(command: str, err: int, detail: str | None = None) -> None:
    """Raise the right :class:`SyscallError` subclass for ``err``."""
    if err in (_errno.EPERM, _errno.EACCES):
        raise BPFPermissionError(command, err, detail)
    raise SyscallError(command, err, detail)
