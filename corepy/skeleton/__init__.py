"""Python skeletons of BPF objects (``corepy skeleton``), like ``bpftool gen skeleton``.

:func:`generate` writes a module with a ``<Name>Skeleton`` class (typed ``maps``,
``progs``, ``links`` and per-section globals) and dataclasses for the object's record
types; generated modules run on :mod:`corepy.skeleton.runtime`.
"""

from __future__ import annotations

from .generate import SkeletonSource, generate, section_attr

__all__ = ["SkeletonSource", "generate", "section_attr"]
