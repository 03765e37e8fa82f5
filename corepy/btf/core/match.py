"""Matching a local spec against one target candidate type (libbpf ``bpf_core_spec_match``
and ``bpf_core_match_member``), producing the target spec and, on failure, why."""

from __future__ import annotations

from ...errors import RelocationError
from ..types import COMPOSITE, ENUMS, Array, essential_name
from .access import SPEC_MAX_LEN, Accessor, CoreSpec, is_flex_array, kind_str
from .compat import fields_are_compat, types_are_compat, types_match
from .kinds import ReloKind

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..spec import BTF


def spec_match(local: CoreSpec, targ: BTF, targ_id: int) -> tuple[CoreSpec, str | None]:
    """Match ``local`` against candidate ``targ_id`` of ``targ``. Returns the target spec (as far
    as matching got) and None on success, else the reason it does not match. RelocationError
    where libbpf fails the whole relocation (path too deep)."""
    spec = CoreSpec(targ, targ_id, local.kind)
    kind = local.kind
    if kind.is_type:
        if kind == ReloKind.TYPE_MATCHES:
            ok = types_match(local.btf, local.root_type_id, targ, targ_id)
            return spec, None if ok else "types do not match (bpf_core_types_match)"
        ok = types_are_compat(local.btf, local.root_type_id, targ, targ_id)
        return spec, None if ok else "types are not compatible"

    acc0 = local.accessors[0]
    if kind.is_enumval:
        t = targ.skip_mods_and_typedefs(targ_id)
        if not isinstance(t, ENUMS):
            return spec, f"[{t.id}] is {kind_str(t)}, not an enum"
        want = essential_name(acc0.name or "")
        for i, v in enumerate(t.values):
            if essential_name(v.name) == want:
                spec.accessors.append(Accessor(t.id, i, v.name))
                spec.raw.append(i)
                return spec, None
        return spec, f"no enumerator {want!r} in {kind_str(t)} {t.name or '<anon>'}"

    if not kind.is_field:
        raise RelocationError(f"relocation kind {int(kind)} cannot be matched")
    for i, lacc in enumerate(local.accessors):
        t = targ.skip_mods_and_typedefs(targ_id)
        targ_id = t.id
        if lacc.name is not None:
            found, targ_id, why = _match_member(local.btf, lacc, targ, targ_id, spec)
            if not found:
                return spec, why
            continue
        if i > 0:
            if not isinstance(t, Array):
                return spec, f"[{t.id}] is {kind_str(t)}, not an array"
            if not is_flex_array(targ, spec.accessors[-1], t) and lacc.idx >= t.nelems:
                return spec, f"index {lacc.idx} out of bounds of array [{t.id}] of {t.nelems}"
            targ_id = targ.skip_mods_and_typedefs(t.type_id).id
        if len(spec.raw) == SPEC_MAX_LEN:
            raise RelocationError(f"target access path deeper than {SPEC_MAX_LEN} levels")
        spec.accessors.append(Accessor(targ_id, lacc.idx))
        spec.raw.append(lacc.idx)
        spec.bit_offset += lacc.idx * targ.resolve_size(targ_id) * 8
    return spec, None


def _match_member(local: BTF, lacc: Accessor, targ: BTF, targ_id: int,
                  spec: CoreSpec) -> tuple[bool, int, str]:
    """Find local member ``lacc`` by name in target struct/union ``targ_id``, looking through
    anonymous members; extend ``spec`` as libbpf does (including what it leaves behind when a
    same-named field has an incompatible type). Returns (found, next target type id, reason)."""
    t = targ.skip_mods_and_typedefs(targ_id)
    targ_id = t.id
    if not isinstance(t, COMPOSITE):
        return False, targ_id, f"[{t.id}] is {kind_str(t)}, not a struct or union"
    lmember = local[lacc.type_id].members[lacc.idx]  # type: ignore[union-attr]
    incompatible = None
    for i, m in enumerate(t.members):
        if len(spec.raw) == SPEC_MAX_LEN:
            raise RelocationError(f"target access path deeper than {SPEC_MAX_LEN} levels")
        spec.bit_offset += m.bit_offset
        spec.raw.append(i)
        if not m.name:
            found, next_id, why = _match_member(local, lacc, targ, m.type_id, spec)
            if found:
                return found, next_id, why
            if why.startswith("field"):  # same name, incompatible type: libbpf keeps looking
                incompatible = why
        elif m.name == lmember.name:
            spec.accessors.append(Accessor(targ_id, i, m.name))
            if fields_are_compat(local, lmember.type_id, targ, m.type_id):
                return True, m.type_id, ""
            spec.accessors.pop()
            lt, tt = local.skip_mods_and_typedefs(lmember.type_id), targ.skip_mods_and_typedefs(m.type_id)
            return False, m.type_id, (f"field {m.name!r} has incompatible type: local {kind_str(lt)} "
                                      f"{lt.name or '<anon>'}, target {kind_str(tt)} {tt.name or '<anon>'}")
        spec.bit_offset -= m.bit_offset
        spec.raw.pop()
    if incompatible:
        return False, targ_id, incompatible
    return False, targ_id, f"no field {lmember.name!r} in {kind_str(t)} {t.name or '<anon>'} [{t.id}]"
