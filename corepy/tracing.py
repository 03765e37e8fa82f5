"""Read ``bpf_printk`` output from tracefs ``trace_pipe`` (a debugging aid).

``trace_pipe`` is one global, consuming stream: whatever this reader takes,
other readers will not see.

    with TracePipe() as pipe:
        for line in pipe.read(timeout=1.0):
            print(line.pid, line.message)
"""

from __future__ import annotations

import os
import re
import select
import time
from collections.abc import Iterator

from ._records import record
from .errors import NotSupportedError

__all__ = ["TraceLine", "TracePipe", "parse_trace_line"]

# "   python3-1234    [001] d..31  1234.567890: bpf_trace_printk: hello"
# (older kernels omit the flags column; some add a "(  tgid)" column)
_LINE = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s:]{4,})\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>[^:]+):\s?(?P<message>.*)$")


@record(frozen=True, slots=True)
class TraceLine:
    """One parsed trace_pipe line (``raw`` is the line as read)."""

    task: str
    pid: int
    cpu: int
    flags: str
    timestamp: float
    event: str
    message: str
    raw: str


def parse_trace_line(line: str) -> TraceLine | None:
    """Parse one trace_pipe line; None if it is not in the trace format."""
    m = _LINE.match(line.rstrip("\n"))
    if not m:
        return None
    return TraceLine(m["task"], int(m["pid"]), int(m["cpu"]), m["flags"] or "", float(m["ts"]),
                     m["event"].strip(), m["message"], line.rstrip("\n"))


class TracePipe:
    """Non-blocking reader of ``<tracefs>/trace_pipe``; a context manager."""

    def __init__(self, path: str | None = None):
        if path is None:
            from .syscalls import tracefs

            path = tracefs.trace_pipe_path()
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotSupportedError("tracefs trace_pipe", f"{path} does not exist") from None
        self.path = path
        self._partial = b""

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("TracePipe is closed")
        return self._fd

    def read(self, timeout: float = 0.0) -> list[TraceLine]:
        """Lines available now, waiting up to ``timeout`` seconds for the first one.
        Lines that are not in the trace format are skipped."""
        fd = self.fileno()
        out: list[TraceLine] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], remaining if not out else 0)
            if not ready:
                return out
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                if out or remaining <= 0:
                    return out
                time.sleep(min(0.01, remaining))  # trace_pipe polls as readable when empty
                continue
            if not chunk:
                return out
            data = self._partial + chunk
            *lines, self._partial = data.split(b"\n")
            for raw in lines:
                parsed = parse_trace_line(raw.decode("utf-8", "replace"))
                if parsed is not None:
                    out.append(parsed)

    def lines(self, timeout: float) -> Iterator[TraceLine]:
        """Yield lines as they come until ``timeout`` seconds pass without one."""
        while batch := self.read(timeout):
            yield from batch

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> TracePipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
