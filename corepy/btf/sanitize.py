"""Make an object's BTF acceptable to the running kernel: pure rewrites of a
type list, exactly as libbpf does them.

* :func:`fixup_datasecs` — libbpf ``btf_fixup_datasec``: clang leaves DATASEC
  sizes and global VAR offsets at zero; fill them from the ELF section sizes
  and symbol values, demote hidden globals to static, sort entries by offset.
  Kernel-independent, always needed before loading.
* :func:`sanitize` — libbpf ``bpf_object__sanitize_btf``: replace the kinds
  the kernel lacks (per probed features) by older kinds of the same layout.

Both take the object's types in id order (ids ``1..n``) and return a new list;
the ids of existing types never change (``sanitize`` may append one type).
Renamed types get ``name_off=-1`` so the writer interns their new names.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from .._records import fields, record, replace
from ..errors import BTFError
from .types import (
    Const, Datasec, DeclTag, Enum, Enum64, EnumValue, Float, Func, FuncProto, Int, IntEncoding,
    Linkage, Member, Struct, Type, Typedef, TypeTag, Union, Var,
)

__all__ = ["BTFFeatures", "fixup_datasecs", "needs_sanitizing", "sanitize"]

KCONFIG_SEC = ".kconfig"
KSYMS_SEC = ".ksyms"
ENUM64_PLACEHOLDER = "enum64_placeholder"


@record(frozen=True)
class BTFFeatures:
    """Which BTF kinds the kernel accepts (each probed with BPF_BTF_LOAD elsewhere)."""

    has_func: bool = True
    has_func_global: bool = True
    has_datasec: bool = True
    has_float: bool = True
    has_decl_tag: bool = True
    has_type_tag: bool = True
    has_enum64: bool = True
    has_qmark_datasec: bool = True
    """DATASEC names starting with '?' (libbpf FEAT_BTF_QMARK_DATASEC)."""

    @classmethod
    def of(cls, features: BTFFeatures | Mapping[str, bool] | object) -> BTFFeatures:
        """From a mapping or any object with ``has_*`` attributes; absent ones count as supported."""
        if isinstance(features, BTFFeatures):
            return features
        get = features.get if isinstance(features, Mapping) else (lambda k, d: getattr(features, k, d))
        return cls(**{f.name: bool(get(f.name, True)) for f in fields(cls)})


def needs_sanitizing(features: BTFFeatures | Mapping[str, bool] | object) -> bool:
    """Whether the kernel lacks any BTF kind libbpf knows how to replace."""
    f = BTFFeatures.of(features)
    return not all(getattr(f, field.name) for field in fields(f))


def sanitize(types: Sequence[Type], features: BTFFeatures | Mapping[str, bool] | object) -> list[Type]:
    """libbpf ``bpf_object__sanitize_btf`` on ``types`` (ids 1..n in order):

    * VAR and DECL_TAG -> 1-byte INT (keeping the name), without datasec / decl_tag;
    * DATASEC -> STRUCT whose members are its VARs ('.' and '?' in the name -> '_');
      with datasec but no '?'-datasec, a leading '?' -> '_';
    * FUNC_PROTO -> ENUM of its params (4 bytes), FUNC -> TYPEDEF, without func;
      global/extern FUNC -> static without global funcs;
    * FLOAT -> anonymous STRUCT of the same size;
    * TYPE_TAG -> anonymous CONST;
    * without enum64: ENUM loses its signedness flag; ENUM64 -> UNION whose
      members (its enumerators) are all of a new 1-byte INT ``enum64_placeholder``,
      appended as the last type.
    """
    f = BTFFeatures.of(features)
    out: list[Type] = list(types)
    by_id = {t.id: t for t in types}
    placeholder_id = 0
    for i, t in enumerate(types):
        new: Type | None = None
        if (not f.has_datasec and isinstance(t, Var)) or (not f.has_decl_tag and isinstance(t, DeclTag)):
            # size 1: a bigger INT could fail validation when the variable is smaller
            new = Int(t.id, t.name, 1, IntEncoding.NONE, 0, 8, name_off=t.name_off)
        elif not f.has_datasec and isinstance(t, Datasec):
            members = []
            for v in t.vars:
                var = by_id.get(v.type_id)
                if var is None:
                    raise BTFError(f"DATASEC {t.name!r} [{t.id}] refers to missing type [{v.type_id}]")
                members.append(Member(var.name, v.type_id, v.offset * 8, 0, var.name_off))
            name = t.name.replace(".", "_").replace("?", "_")
            new = Struct(t.id, name, t.size, tuple(members), False,
                         name_off=t.name_off if name == t.name else -1)
        elif not f.has_qmark_datasec and isinstance(t, Datasec) and t.name.startswith("?"):
            new = replace(t, name="_" + t.name[1:], name_off=-1)
        elif not f.has_func and isinstance(t, FuncProto):
            # params {name_off, type} become enumerators {name_off, val}: same bytes
            values = tuple(EnumValue(p.name, p.type_id, p.name_off) for p in t.params)
            new = Enum(t.id, t.name, 4, values, False, name_off=t.name_off)
        elif not f.has_func and isinstance(t, Func):
            new = Typedef(t.id, t.name, t.type_id, name_off=t.name_off)
        elif not f.has_func_global and isinstance(t, Func):
            new = replace(t, linkage=Linkage.STATIC)
        elif not f.has_float and isinstance(t, Float):
            # "float" is no valid struct name in C: anonymous
            new = Struct(t.id, "", t.size, (), False, name_off=0)
        elif not f.has_type_tag and isinstance(t, TypeTag):
            new = Const(t.id, t.type_id, "", name_off=0)
        elif not f.has_enum64 and isinstance(t, Enum):
            # clearing the kind flag reinterprets the same 32-bit values as unsigned
            values = tuple(EnumValue(v.name, v.value & 0xFFFFFFFF, v.name_off) for v in t.values)
            new = replace(t, values=values, signed=False)
        elif not f.has_enum64 and isinstance(t, Enum64):
            if placeholder_id == 0:
                placeholder_id = (types[-1].id if types else 0) + 1
                out.append(Int(placeholder_id, ENUM64_PLACEHOLDER, 1, IntEncoding.NONE, 0, 8))
            members = tuple(Member(v.name, placeholder_id, 0, 0, v.name_off) for v in t.values)
            new = Union(t.id, t.name, t.size, members, False, name_off=t.name_off)
        if new is not None:
            out[i] = new
    return out


def fixup_datasecs(
    types: Sequence[Type],
    section_sizes: Mapping[str, int],
    symbol_offsets: Mapping[str, int],
    hidden: Collection[str] = (),
) -> list[Type]:
    """libbpf ``btf_fixup_datasec`` for every DATASEC of ``types``.

    ``section_sizes``: ELF section name -> size; ``symbol_offsets``: global
    variable symbol name -> ``st_value``; ``hidden``: names of globals with
    STV_HIDDEN/STV_INTERNAL visibility (their VARs become static). A DATASEC of
    size 0 gets its section's size and its global VARs their symbols' offsets;
    static and extern VARs keep theirs. ``.kconfig``/``.ksyms`` are only sorted
    (their layout is the loader's). Entries end up sorted by offset.
    Raises BTFError when a section size or a symbol is missing, as libbpf fails.
    """
    out: list[Type] = list(types)
    index = {t.id: i for i, t in enumerate(types)}
    for i, t in enumerate(types):
        if not isinstance(t, Datasec):
            continue
        entries = list(t.vars)
        size = t.size
        if t.name not in (KCONFIG_SEC, KSYMS_SEC):
            fix_offsets = size == 0
            if fix_offsets:
                size = section_sizes.get(t.name, 0)
                if not size:
                    raise BTFError(f"DATASEC {t.name!r} [{t.id}]: no size for ELF section {t.name!r}")
            for j, v in enumerate(entries):
                k = index.get(v.type_id)
                var = out[k] if k is not None else None
                if not isinstance(var, Var):
                    raise BTFError(f"DATASEC {t.name!r} [{t.id}]: entry {j} is not a VAR (type [{v.type_id}])")
                if var.linkage in (Linkage.STATIC, Linkage.EXTERN):
                    continue
                if var.name not in symbol_offsets:
                    raise BTFError(f"DATASEC {t.name!r} [{t.id}]: no ELF symbol for VAR {var.name!r}")
                if fix_offsets:
                    entries[j] = replace(v, offset=symbol_offsets[var.name])
                if var.name in hidden:
                    out[k] = replace(var, linkage=Linkage.STATIC)  # type: ignore[index]
        entries.sort(key=lambda v: v.offset)
        out[i] = replace(t, size=size, vars=tuple(entries))
    return out
