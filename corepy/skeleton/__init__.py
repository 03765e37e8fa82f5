"""Python skeletons of BPF objects (``corepy skeleton``), like ``bpftool gen skeleton``.

:func:`generate` writes a module with a ``<Name>Skeleton`` class (typed ``maps``,
``progs``, ``links`` and per-section globals) and dataclasses for the object's record
types; generated modules import only :mod:`corepy.skeleton.runtime` at run time.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"SkeletonSource": "codegen", "generate": "codegen", "section_attr": "codegen",
         "Skeleton": "runtime"}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'corepy.skeleton' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
