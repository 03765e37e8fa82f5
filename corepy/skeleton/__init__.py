"""Python skeletons of BPF objects (``corepy skeleton``), like ``bpftool gen skeleton``.

:func:`generate` writes a module with a ``<Name>Skeleton`` class (typed ``maps``,
``progs``, ``links`` and per-section globals) and dataclass-compatible classes for the
object's record types; generated modules import only :mod:`corepy.skeleton.runtime` at run time.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {"SkeletonSource": "codegen", "generate": "codegen", "section_attr": "codegen",
         "Skeleton": "runtime"}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
