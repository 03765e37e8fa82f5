"""corepy: a pure-Python eBPF CO-RE loader.

Imports are lazy: ``import corepy`` costs almost nothing; the BTF, ELF and
syscall layers load when first used.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "open": "corepy.collection",
    "Object": "corepy.collection",
    "Map": "corepy.maps",
    "Program": "corepy.programs",
    "Link": "corepy.links",
    "RingBuffer": "corepy.ringbuf",
    "PerfBuffer": "corepy.perfbuf",
    "BTF": "corepy.btf",
    "btf_from_id": "corepy.maps",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'corepy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
