"""Test helper: hand-built BTF (types from the corepy.btf.types model) written with corepy's BTF
writer and parsed back, so rule tests run the real container on tiny local/target pairs.

``build(*types)`` takes types in id order starting at 1 (their ``id`` fields are ignored)."""

from __future__ import annotations

from corepy.btf import BTF
from corepy.btf.types import Type
from corepy.btf.writer import write_btf


def build(*types: Type, byte_order: str = "little", source: str = "<btfgen>") -> BTF:
    return BTF.from_bytes(write_btf(types, byte_order=byte_order), source=source)
