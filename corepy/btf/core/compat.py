"""Type compatibility rules of CO-RE, as libbpf defines them:

- :func:`types_are_compat` (``bpf_core_types_are_compat``): type-based relocations;
- :func:`fields_are_compat` (``bpf_core_fields_are_compat``): a matched field's type;
- :func:`types_match` (``bpf_core_types_match``): the stricter TYPE_MATCHES relation.

Names are compared up to the flavor suffix (``___something``). Each returns a bool
and raises RelocationError where libbpf gives up (recursion too deep).
"""

from __future__ import annotations

from ...errors import RelocationError
from ..types import (COMPOSITE, ENUMS, Array, Enum, Enum64, FuncProto, Fwd, Int, Kind, Ptr, Struct,
                     Type, Union, essential_name)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..spec import BTF

MAX_DEPTH = 32
"""libbpf's recursion bound for both compat relations."""


def kinds_compat(a: Type, b: Type) -> bool:
    """libbpf ``btf_kind_core_compat``: same kind, or both enums (ENUM and ENUM64 mix)."""
    return a.kind == b.kind or (isinstance(a, ENUMS) and isinstance(b, ENUMS))


def names_match(local_name: str, targ_name: str) -> bool:
    """libbpf ``bpf_core_names_match``: an anonymous target matches only an anonymous local;
    otherwise the essential names (flavor suffix dropped) must be equal."""
    if not targ_name:
        return not local_name
    return essential_name(local_name) == essential_name(targ_name)


def types_are_compat(local: BTF, local_id: int, targ: BTF, targ_id: int, level: int = MAX_DEPTH) -> bool:
    """Compatibility for type-based relocations. Root names were already matched; below the
    root names are ignored: modifiers and typedefs are skipped, structs/unions/enums/fwds are
    compatible with their own kind, ints unless they are old-style bitfield ints, pointers and
    arrays recurse into their targets, function prototypes compare arity, params, return type."""
    if not kinds_compat(local[local_id], targ[targ_id]):
        return False
    for _ in range(MAX_DEPTH):
        lt = local.skip_mods_and_typedefs(local_id)
        tt = targ.skip_mods_and_typedefs(targ_id)
        if not kinds_compat(lt, tt):
            return False
        if lt.kind in (Kind.UNKN, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.FWD, Kind.ENUM64):
            return True
        if isinstance(lt, Int):
            return lt.bit_offset == 0 and tt.bit_offset == 0  # type: ignore[union-attr]
        if isinstance(lt, (Ptr, Array)):
            local_id, targ_id = lt.type_id, tt.type_id  # type: ignore[union-attr]
            continue
        if isinstance(lt, FuncProto):
            assert isinstance(tt, FuncProto)
            if len(lt.params) != len(tt.params):
                return False
            for lp, tp in zip(lt.params, tt.params):
                if level <= 0:
                    raise RelocationError("function prototypes nested too deep to compare")
                lp_id = local.skip_mods_and_typedefs(lp.type_id).id
                tp_id = targ.skip_mods_and_typedefs(tp.type_id).id
                if not types_are_compat(local, lp_id, targ, tp_id, level - 1):
                    return False
            local_id = local.skip_mods_and_typedefs(lt.return_type_id).id
            targ_id = targ.skip_mods_and_typedefs(tt.return_type_id).id
            continue
        return False  # libbpf: "unexpected kind relocated"
    raise RelocationError(f"types [{local_id}] and [{targ_id}] nested deeper than {MAX_DEPTH}")


def fields_are_compat(local: BTF, local_id: int, targ: BTF, targ_id: int) -> bool:
    """Compatibility of a matched field's local and target types: any two structs/unions,
    pointers, floats; enums and fwds whose essential names agree (or one is anonymous);
    ints unless old-style bitfield ints; arrays whose element types are compatible."""
    for _ in range(MAX_DEPTH + 1):
        lt = local.skip_mods_and_typedefs(local_id)
        tt = targ.skip_mods_and_typedefs(targ_id)
        if isinstance(lt, COMPOSITE) and isinstance(tt, COMPOSITE):
            return True
        if not kinds_compat(lt, tt):
            return False
        if lt.kind in (Kind.PTR, Kind.FLOAT):
            return True
        if isinstance(lt, (Fwd, Enum, Enum64)):
            ln, tn = essential_name(lt.name), essential_name(tt.name)
            return not ln or not tn or ln == tn
        if isinstance(lt, Int):
            return lt.bit_offset == 0 and tt.bit_offset == 0  # type: ignore[union-attr]
        if isinstance(lt, Array):
            local_id, targ_id = lt.type_id, tt.type_id  # type: ignore[union-attr]
            continue
        return False
    raise RelocationError(f"array types [{local_id}] and [{targ_id}] nested too deep")


def types_match(local: BTF, local_id: int, targ: BTF, targ_id: int, behind_ptr: bool = False,
                level: int = MAX_DEPTH) -> bool:
    """libbpf ``__bpf_core_types_match``: same kinds (a struct/union behind a pointer may match
    a fwd of the same flavor; enum matches enum64), ints of equal size and signedness, arrays
    of equal length, every local member/enumerator present by name in the target (members
    matched recursively), function prototypes parameter by parameter."""
    if level <= 0:
        raise RelocationError("types nested too deep to match")
    for _ in range(MAX_DEPTH):
        lt = local.skip_mods_and_typedefs(local_id)
        tt = targ.skip_mods_and_typedefs(targ_id)
        local_id, targ_id = lt.id, tt.id
        if not names_match(lt.name, tt.name):
            return False
        lk, tk = lt.kind, tt.kind
        if lk == Kind.UNKN:
            return lk == tk
        if isinstance(lt, Fwd):
            if behind_ptr and lk != tk:
                return (tk == Kind.STRUCT and not lt.union) or (tk == Kind.UNION and lt.union)
            return lk == tk and lt.union == tt.union  # type: ignore[union-attr]
        if isinstance(lt, ENUMS):
            return isinstance(tt, ENUMS) and _enums_match(lt, tt)
        if isinstance(lt, COMPOSITE):
            if behind_ptr:
                if lk == tk:
                    return True
                return isinstance(tt, Fwd) and (lk == Kind.UNION) == tt.union
            return lk == tk and _composites_match(local, lt, targ, tt, behind_ptr, level)  # type: ignore[arg-type]
        if isinstance(lt, Int):
            return (isinstance(tt, Int) and lt.size == tt.size and lt.signed == tt.signed)
        if isinstance(lt, Ptr):
            if lk != tk:
                return False
            behind_ptr = True
            local_id, targ_id = lt.type_id, tt.type_id  # type: ignore[union-attr]
            continue
        if isinstance(lt, Array):
            if not isinstance(tt, Array) or lt.nelems != tt.nelems:
                return False
            local_id, targ_id = lt.type_id, tt.type_id
            continue
        if isinstance(lt, FuncProto):
            if not isinstance(tt, FuncProto) or len(lt.params) != len(tt.params):
                return False
            for lp, tp in zip(lt.params, tt.params):
                if not types_match(local, lp.type_id, targ, tp.type_id, behind_ptr, level - 1):
                    return False
            local_id, targ_id = lt.return_type_id, tt.return_type_id
            continue
        return False  # libbpf: "unexpected kind relocated"
    raise RelocationError(f"types [{local_id}] and [{targ_id}] nested deeper than {MAX_DEPTH}")


def _enums_match(lt: Enum | Enum64, tt: Enum | Enum64) -> bool:
    if lt.size != tt.size or len(lt.values) > len(tt.values):
        return False
    return all(any(names_match(lv.name, tv.name) for tv in tt.values) for lv in lt.values)


def _composites_match(local: BTF, lt: Struct | Union, targ: BTF, tt: Struct | Union, behind_ptr: bool,
                      level: int) -> bool:
    if len(lt.members) > len(tt.members):
        return False
    for lm in lt.members:
        if not any(names_match(lm.name, tm.name)
                   and types_match(local, lm.type_id, targ, tm.type_id, behind_ptr, level - 1)
                   for tm in tt.members):
            return False
    return True
