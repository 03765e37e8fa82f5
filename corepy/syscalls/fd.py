"""``FD``: one owned kernel file descriptor, closed exactly once."""

from __future__ import annotations

import os
from types import TracebackType


class FD:
    """Owns one open file descriptor.

    ``close()`` is idempotent; ``__del__`` closes a forgotten fd as a last resort
    only (code should close explicitly or use ``with``). ``fileno()`` on a closed
    FD raises ``ValueError`` rather than handing out a stale number.
    """

    __slots__ = ("_fd", "kind")

    def __init__(self, fd: int, kind: str = "fd"):
        if fd < 0:
            raise ValueError(f"invalid file descriptor {fd}")
        self._fd = fd
        self.kind = kind

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError(f"{self.kind} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def detach(self) -> int:
        """Give up ownership: return the number without closing it."""
        fd = self.fileno()
        self._fd = -1
        return fd

    def dup(self) -> FD:
        """A new FD (close-on-exec) for the same kernel object."""
        return FD(os.dup(self.fileno()), self.kind)

    def __int__(self) -> int:
        return self.fileno()

    def __enter__(self) -> FD:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass

    def __repr__(self) -> str:
        return f"<FD {self.kind} {'closed' if self._fd < 0 else self._fd}>"


FdLike = int | FD
"""Anything naming an open fd: a raw number or an :class:`FD`."""


def fdnum(fd: FdLike | None) -> int:
    """The integer fd of an ``FD`` or ``int`` (0 for None: "no fd" in bpf_attr)."""
    if fd is None:
        return 0
    return fd if isinstance(fd, int) else fd.fileno()
