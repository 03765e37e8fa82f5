"""corepy: a pure-Python eBPF CO-RE loader.

Imports are lazy: ``import corepy`` costs almost nothing; the BTF, ELF and
syscall layers load when first used.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "open": "collection",
    "Object": "collection",
    "Map": "maps",
    "Program": "programs",
    "Link": "links",
    "RingBuffer": "ringbuf",
    "PerfBuffer": "perfbuf",
    "BTF": "btf",
    "btf_from_id": "maps",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
