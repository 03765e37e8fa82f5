"""CO-RE relocation kinds (``enum bpf_core_relo_kind``) and libbpf's names for them."""

from __future__ import annotations

import enum


class ReloKind(enum.IntEnum):
    """What a CO-RE relocation computes; ``str(kind)`` is libbpf's short name (``byte_off``...)."""

    FIELD_BYTE_OFFSET = 0
    FIELD_BYTE_SIZE = 1
    FIELD_EXISTS = 2
    FIELD_SIGNED = 3
    FIELD_LSHIFT_U64 = 4
    FIELD_RSHIFT_U64 = 5
    TYPE_ID_LOCAL = 6
    TYPE_ID_TARGET = 7
    TYPE_EXISTS = 8
    TYPE_SIZE = 9
    ENUMVAL_EXISTS = 10
    ENUMVAL_VALUE = 11
    TYPE_MATCHES = 12

    @property
    def short(self) -> str:
        """libbpf's ``core_relo_kind_str`` name."""
        return _SHORT[self]

    @property
    def is_field(self) -> bool:
        return self <= ReloKind.FIELD_RSHIFT_U64

    @property
    def is_type(self) -> bool:
        return self in _TYPE_KINDS

    @property
    def is_enumval(self) -> bool:
        return self in (ReloKind.ENUMVAL_EXISTS, ReloKind.ENUMVAL_VALUE)

    @property
    def is_existence(self) -> bool:
        """Kinds that answer 0 instead of poisoning when nothing matches (guards in C code)."""
        return self in _EXISTENCE_KINDS

    def __str__(self) -> str:
        return _SHORT[self]

    @classmethod
    def from_short(cls, name: str) -> ReloKind:
        """The kind libbpf calls ``name``; ValueError if none."""
        for kind, short in _SHORT.items():
            if short == name:
                return kind
        raise ValueError(f"no CO-RE relocation kind is called {name!r}")


_SHORT = {
    ReloKind.FIELD_BYTE_OFFSET: "byte_off",
    ReloKind.FIELD_BYTE_SIZE: "byte_sz",
    ReloKind.FIELD_EXISTS: "field_exists",
    ReloKind.FIELD_SIGNED: "signed",
    ReloKind.FIELD_LSHIFT_U64: "lshift_u64",
    ReloKind.FIELD_RSHIFT_U64: "rshift_u64",
    ReloKind.TYPE_ID_LOCAL: "local_type_id",
    ReloKind.TYPE_ID_TARGET: "target_type_id",
    ReloKind.TYPE_EXISTS: "type_exists",
    ReloKind.TYPE_SIZE: "type_size",
    ReloKind.ENUMVAL_EXISTS: "enumval_exists",
    ReloKind.ENUMVAL_VALUE: "enumval_value",
    ReloKind.TYPE_MATCHES: "type_matches",
}
_TYPE_KINDS = frozenset({ReloKind.TYPE_ID_LOCAL, ReloKind.TYPE_ID_TARGET, ReloKind.TYPE_EXISTS,
                         ReloKind.TYPE_MATCHES, ReloKind.TYPE_SIZE})
_EXISTENCE_KINDS = frozenset({ReloKind.FIELD_EXISTS, ReloKind.TYPE_EXISTS, ReloKind.ENUMVAL_EXISTS,
                              ReloKind.TYPE_MATCHES})
