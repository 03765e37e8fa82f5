"""The BTF type model: small immutable objects, one class per kind.

Types refer to other types by id (``type_id``), never by object, so a BTF can
decode each type lazily and cache it. The :class:`~corepy.btf.spec.BTF`
container resolves ids. Id 0 is :data:`VOID`.

Every type keeps ``name_off`` (its name's offset in the string section it came
from) so that writing a parsed BTF back reproduces it byte for byte; types
built by hand leave it at -1 and the writer interns their names.
"""

from __future__ import annotations

import enum

from .._records import field, record

_record = record(frozen=True, slots=True)
"""Every type class: ``@dataclass(frozen=True, slots=True)``, built the cheaper way."""


class Kind(enum.IntEnum):
    """BTF_KIND_* values."""

    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


class IntEncoding(enum.IntFlag):
    """BTF_INT_* encoding bits of an INT."""

    NONE = 0
    SIGNED = 1
    CHAR = 2
    BOOL = 4


class Linkage(enum.IntEnum):
    """BTF_FUNC_* / BTF_VAR_* linkage (funcs: static, global, extern; vars the same)."""

    STATIC = 0
    GLOBAL = 1
    EXTERN = 2


@_record
class Member:
    """A struct/union member. ``bit_offset`` from the start of the parent;
    ``bitfield_size`` is 0 unless the member is a bitfield."""

    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int = 0
    name_off: int = -1


@_record
class EnumValue:
    """An enumerator; ``value`` is already sign-interpreted per the enum's signedness."""

    name: str
    value: int
    name_off: int = -1


@_record
class Param:
    """A FUNC_PROTO parameter (name may be empty; a trailing ``type_id == 0`` means ``...``)."""

    name: str
    type_id: int
    name_off: int = -1


@_record
class VarSecinfo:
    """A DATASEC entry: the VAR (or FUNC for ksym sections) at ``offset`` of ``size`` bytes."""

    type_id: int
    offset: int
    size: int


@_record
class Void:
    """The void type (id 0)."""

    id: int = 0
    name: str = ""
    kind: Kind = Kind.UNKN
    name_off: int = 0


@_record
class Int:
    """INT; ``encoding`` says signed/char/bool, ``bits`` its width."""

    id: int
    name: str
    size: int
    encoding: IntEncoding = IntEncoding.NONE
    bit_offset: int = 0
    bits: int = 0
    name_off: int = -1
    kind: Kind = field(default=Kind.INT, init=False)

    @property
    def signed(self) -> bool:
        return bool(self.encoding & IntEncoding.SIGNED)


@_record
class Ptr:
    """PTR to ``type_id``."""

    id: int
    type_id: int
    name: str = ""
    name_off: int = -1
    kind: Kind = field(default=Kind.PTR, init=False)


@_record
class Array:
    """ARRAY of ``nelems`` ``type_id`` elements indexed by ``index_type_id``."""

    id: int
    type_id: int
    index_type_id: int
    nelems: int
    name: str = ""
    name_off: int = -1
    kind: Kind = field(default=Kind.ARRAY, init=False)


@_record
class Struct:
    """STRUCT; ``kind_flag`` set means members carry bitfield sizes."""

    id: int
    name: str
    size: int
    members: tuple[Member, ...]
    kind_flag: bool = False
    name_off: int = -1
    kind: Kind = field(default=Kind.STRUCT, init=False)


@_record
class Union:
    """UNION; ``kind_flag`` set means members carry bitfield sizes."""

    id: int
    name: str
    size: int
    members: tuple[Member, ...]
    kind_flag: bool = False
    name_off: int = -1
    kind: Kind = field(default=Kind.UNION, init=False)


@_record
class Enum:
    """ENUM (32-bit values); ``signed`` is the kind_flag."""

    id: int
    name: str
    size: int
    values: tuple[EnumValue, ...]
    signed: bool = False
    name_off: int = -1
    kind: Kind = field(default=Kind.ENUM, init=False)


@_record
class Enum64:
    """ENUM64 (64-bit values); ``signed`` is the kind_flag."""

    id: int
    name: str
    size: int
    values: tuple[EnumValue, ...]
    signed: bool = False
    name_off: int = -1
    kind: Kind = field(default=Kind.ENUM64, init=False)


@_record
class Fwd:
    """A forward declaration; ``union`` is the kind_flag (``union X;`` vs ``struct X;``)."""

    id: int
    name: str
    union: bool = False
    name_off: int = -1
    kind: Kind = field(default=Kind.FWD, init=False)


@_record
class Typedef:
    """TYPEDEF ``name`` for ``type_id``."""

    id: int
    name: str
    type_id: int
    name_off: int = -1
    kind: Kind = field(default=Kind.TYPEDEF, init=False)


@_record
class Volatile:
    """VOLATILE ``type_id``."""

    id: int
    type_id: int
    name: str = ""
    name_off: int = -1
    kind: Kind = field(default=Kind.VOLATILE, init=False)


@_record
class Const:
    """CONST ``type_id``."""

    id: int
    type_id: int
    name: str = ""
    name_off: int = -1
    kind: Kind = field(default=Kind.CONST, init=False)


@_record
class Restrict:
    """RESTRICT ``type_id``."""

    id: int
    type_id: int
    name: str = ""
    name_off: int = -1
    kind: Kind = field(default=Kind.RESTRICT, init=False)


@_record
class Func:
    """FUNC: ``type_id`` is its FUNC_PROTO; ``linkage`` is stored in vlen."""

    id: int
    name: str
    type_id: int
    linkage: Linkage = Linkage.STATIC
    name_off: int = -1
    kind: Kind = field(default=Kind.FUNC, init=False)


@_record
class FuncProto:
    """FUNC_PROTO: return type and parameters."""

    id: int
    return_type_id: int
    params: tuple[Param, ...]
    name: str = ""
    name_off: int = -1
    kind: Kind = field(default=Kind.FUNC_PROTO, init=False)


@_record
class Var:
    """VAR: a global variable of ``type_id``."""

    id: int
    name: str
    type_id: int
    linkage: Linkage = Linkage.STATIC
    name_off: int = -1
    kind: Kind = field(default=Kind.VAR, init=False)


@_record
class Datasec:
    """DATASEC: the variables of an ELF data section."""

    id: int
    name: str
    size: int
    vars: tuple[VarSecinfo, ...]
    name_off: int = -1
    kind: Kind = field(default=Kind.DATASEC, init=False)


@_record
class Float:
    """FLOAT of ``size`` bytes."""

    id: int
    name: str
    size: int
    name_off: int = -1
    kind: Kind = field(default=Kind.FLOAT, init=False)


@_record
class DeclTag:
    """DECL_TAG on ``type_id``; ``component_idx`` -1 for the type itself, else a member/param index."""

    id: int
    name: str
    type_id: int
    component_idx: int = -1
    name_off: int = -1
    kind: Kind = field(default=Kind.DECL_TAG, init=False)
    kind_flag: bool = False
    """Set: the tag is a C attribute (``__attribute__((...))``), not a btf_decl_tag string."""


@_record
class TypeTag:
    """TYPE_TAG ``name`` on ``type_id``."""

    id: int
    name: str
    type_id: int
    name_off: int = -1
    kind: Kind = field(default=Kind.TYPE_TAG, init=False)
    kind_flag: bool = False
    """Set: the tag is a C type attribute (e.g. ``address_space(1)``), not a btf_type_tag string."""



Type = (
    Void | Int | Ptr | Array | Struct | Union | Enum | Enum64 | Fwd | Typedef | Volatile | Const
    | Restrict | Func | FuncProto | Var | Datasec | Float | DeclTag | TypeTag
)
"""Any BTF type (a ``types.UnionType``: fine in annotations and ``isinstance``)."""

VOID = Void()

COMPOSITE = (Struct, Union)
ENUMS = (Enum, Enum64)
MODIFIERS = (Volatile, Const, Restrict, TypeTag)
"""Kinds that only qualify the type they point to (``skip_mods`` skips these)."""

KIND_CLASS: dict[Kind, type] = {
    Kind.UNKN: Void, Kind.INT: Int, Kind.PTR: Ptr, Kind.ARRAY: Array, Kind.STRUCT: Struct,
    Kind.UNION: Union, Kind.ENUM: Enum, Kind.FWD: Fwd, Kind.TYPEDEF: Typedef,
    Kind.VOLATILE: Volatile, Kind.CONST: Const, Kind.RESTRICT: Restrict, Kind.FUNC: Func,
    Kind.FUNC_PROTO: FuncProto, Kind.VAR: Var, Kind.DATASEC: Datasec, Kind.FLOAT: Float,
    Kind.DECL_TAG: DeclTag, Kind.TYPE_TAG: TypeTag, Kind.ENUM64: Enum64,
}


def essential_name(name: str) -> str:
    """Strip a CO-RE flavor suffix at the last ``___`` exactly as libbpf's
    ``bpf_core_essential_name_len`` does: ``task_struct___v1`` -> ``task_struct``."""
    n = len(name)
    for i in range(n - 5, -1, -1):
        if _is_flavor_sep(name, i):
            return name[: i + 1]
    return name


def _is_flavor_sep(s: str, i: int) -> bool:
    # libbpf bpf_core_is_flavor_sep: s[i] != '_' && s[i+1..i+3] == '___' && s[i+4] != '_'
    return s[i] != "_" and s[i + 1] == "_" and s[i + 2] == "_" and s[i + 3] == "_" and s[i + 4] != "_"
