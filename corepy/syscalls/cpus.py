"""CPU sets from /sys/devices/system/cpu/{possible,online} (the kernel's cpulist format)."""

from __future__ import annotations

import functools

from ..errors import CorepyError

CPU_DIR = "/sys/devices/system/cpu"


def parse_cpulist(text: str) -> list[int]:
    """``"0-3,5,7-8"`` -> ``[0, 1, 2, 3, 5, 7, 8]``."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise CorepyError(f"malformed CPU list {text.strip()!r}") from None
        cpus.extend(range(first, last + 1))
    return cpus


def _read(name: str) -> list[int]:
    path = f"{CPU_DIR}/{name}"
    try:
        with open(path) as f:
            return parse_cpulist(f.read())
    except OSError as e:
        raise CorepyError(f"cannot read {path}: {e.strerror}") from None


@functools.cache
def possible_cpus() -> list[int]:
    """CPUs that can ever be online: per-CPU maps hold one slot for each."""
    return _read("possible")


def possible_cpu_count() -> int:
    """Slots in a per-CPU map value: the kernel copies one per possible CPU."""
    return len(possible_cpus())


def online_cpus() -> list[int]:
    """CPUs online right now (not cached: CPUs come and go)."""
    return _read("online")
