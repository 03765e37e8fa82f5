"""tracefs: where it is (mounting it if needed), tracepoint ids, trace_pipe."""

from __future__ import annotations

import functools
import os

from ..errors import CorepyError, NotSupportedError

CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def _is_tracefs(path: str) -> bool:
    return os.path.exists(os.path.join(path, "trace_pipe"))


@functools.cache
def tracefs_root() -> str:
    """The tracefs mount point; mounts tracefs at /sys/kernel/tracing if it is nowhere (root only)."""
    for path in CANDIDATES:
        if _is_tracefs(path):
            return path
    target = CANDIDATES[0]
    if os.path.isdir(target) and os.geteuid() == 0:
        import subprocess  # only here: its import costs ~3 ms on every attach otherwise

        done = subprocess.run(["mount", "-t", "tracefs", "tracefs", target], capture_output=True, text=True)
        if done.returncode == 0 and _is_tracefs(target):
            return target
        reason = done.stderr.strip() or f"mount exited {done.returncode}"
    else:
        reason = "not mounted, and mounting it needs root"
    raise NotSupportedError("tracefs", f"not found at {' or '.join(CANDIDATES)}: {reason}")


def _component(value: str, what: str) -> str:
    if not value or "/" in value or value in (".", ".."):
        raise CorepyError(f"invalid tracepoint {what} {value!r}")
    return value


def tracepoint_id(category: str, name: str) -> int:
    """The id of tracepoint ``category:name`` (``events/<category>/<name>/id``)."""
    path = os.path.join(tracefs_root(), "events", _component(category, "category"), _component(name, "name"), "id")
    try:
        with open(path) as f:
            return int(f.read().strip())
    except FileNotFoundError:
        raise NotSupportedError(f"tracepoint {category}:{name}", f"{path} does not exist") from None
    except (OSError, ValueError) as e:
        raise CorepyError(f"cannot read tracepoint id from {path}: {e}") from None


def trace_pipe_path() -> str:
    """Path of ``trace_pipe`` (bpf_printk output)."""
    return os.path.join(tracefs_root(), "trace_pipe")
