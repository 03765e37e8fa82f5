"""Computing a CO-RE relocation: the value the instruction was compiled with (``old``) and
the value for the target kernel (``new``), or the decision to poison it (libbpf
``bpf_core_calc_relo_insn`` and the ``bpf_core_calc_*_relo`` helpers)."""

from __future__ import annotations

from ..._records import record
from ...errors import BTFError, RelocationError
from ..types import ENUMS, Int, IntEncoding, Ptr, essential_name
from .access import CoreSpec, enum_relo_value, format_spec, kind_str, parse_spec
from .kinds import ReloKind
from .match import spec_match
from .result import CandidateTry, CoreResult
from .target import Candidate, Target

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..ext import CoreRelo
    from ..spec import BTF

U32 = 0xFFFFFFFF


@record(slots=True)
class _Values:
    """What one local/target spec pair makes of a relocation (libbpf's ``bpf_core_relo_res``)."""

    old: int = 0
    new: int = 0
    poison: bool = False
    validate: bool = True
    orig_sz: int = 0
    new_sz: int = 0
    orig_type_id: int = 0
    new_type_id: int = 0
    fail_memsz_adjust: bool = False


class _Poison(Exception):
    """libbpf's -EUCLEAN: the target lacks what the instruction needs."""


def calc_relo(local: BTF, relo: CoreRelo, target: Target) -> CoreResult:
    """Resolve ``relo`` (from ``local``, the object's BTF) against ``target``. Never patches.
    RelocationError where libbpf fails the load: malformed relocation, anonymous type,
    ambiguous candidates, unsatisfiable bitfield..."""
    try:
        kind = ReloKind(relo.kind)
    except ValueError:
        raise RelocationError(f"unknown CO-RE relocation kind {relo.kind} at byte {relo.insn_off}") from None
    try:
        return _calc_relo(local, relo, kind, target)
    except BTFError as e:
        raise RelocationError(f"<{kind}> relocation of type [{relo.type_id}] {relo.access_str!r}: {e}") from None


def _calc_relo(local: BTF, relo: CoreRelo, kind: ReloKind, target: Target) -> CoreResult:
    local_type = local[relo.type_id]
    if kind != ReloKind.TYPE_ID_LOCAL:
        cands = target.candidates(local, relo.type_id)
    try:
        local_spec = parse_spec(local, relo)
    except RelocationError as e:
        raise RelocationError(f"<{kind}> parsing [{relo.type_id}] {kind_str(local_type)} "
                              f"{local_type.name or '<anon>'} + {relo.access_str} failed: {e}") from None
    local_text = format_spec(local_spec)

    if kind == ReloKind.TYPE_ID_LOCAL:
        return CoreResult(kind, local_text, None, relo.type_id, relo.type_id, validate=False)

    tried: list[CandidateTry] = []
    kept: list[Candidate] = []
    best: tuple[_Values, CoreSpec] | None = None
    for cand in cands:
        cand_spec, why = spec_match(local_spec, cand.btf, cand.type_id)
        tried.append(CandidateTry(cand.btf_name, cand.type_id, format_spec(cand_spec), why is None, why))
        if why is not None:
            continue
        values = _calc(kind, relo, local_spec, cand_spec)
        if best is None:
            best = values, cand_spec
        elif cand_spec.bit_offset != best[1].bit_offset:
            raise RelocationError(f"<{kind}> {local_text}: field offset ambiguity: "
                                  f"{cand_spec.bit_offset} != {best[1].bit_offset} bits "
                                  f"({tried[-1].spec} vs {format_spec(best[1])})")
        elif values.poison != best[0].poison or values.new != best[0].new:
            raise RelocationError(f"<{kind}> {local_text}: relocation decision ambiguity: "
                                  f"{_decision(values)} != {_decision(best[0])} "
                                  f"({tried[-1].spec} vs {format_spec(best[1])})")
        kept.append(cand)

    reason = None
    if best is None:
        values, targ_text = _calc(kind, relo, local_spec, None), None
        if tried:
            reason = "no candidate matches: " + "; ".join(f"{t.spec}: {t.reason}" for t in tried)
        else:
            reason = (f"no type named {essential_name(local_type.name)!r} (or a flavor of it) of kind "
                      f"{kind_str(local_type)} in {target.vmlinux.source}"
                      + ("" if target.custom else " or its modules"))
    else:
        target.narrow(local, relo.type_id, kept)
        values, targ_text = best[0], format_spec(best[1])
        if values.fail_memsz_adjust:
            reason = (f"field size changes from {values.orig_sz} to {values.new_sz} bytes and it is "
                      "neither a pointer nor an unsigned integer: a load/store of it is poisoned")
    return CoreResult(kind, local_text, targ_text, values.old, values.new, values.poison, values.validate,
                      values.orig_sz, values.new_sz, values.orig_type_id, values.new_type_id,
                      values.fail_memsz_adjust, reason, tuple(tried))


def _decision(v: _Values) -> str:
    return f"{'failure' if v.poison else 'success'} {v.new}"


def _calc(kind: ReloKind, relo: CoreRelo, local: CoreSpec, targ: CoreSpec | None) -> _Values:
    """libbpf ``bpf_core_calc_relo``: old value from the local spec, new from the target's."""
    v = _Values()
    try:
        if kind.is_field:
            v.old, v.orig_sz, v.orig_type_id, v.validate = _field_value(kind, relo, local)
            v.new, v.new_sz, v.new_type_id, _ = _field_value(kind, relo, targ)
            if v.orig_sz != v.new_sz:
                assert targ is not None
                orig_t, new_t = local.btf[v.orig_type_id], targ.btf[v.new_type_id]
                if not (isinstance(orig_t, Ptr) and isinstance(new_t, Ptr)) and not (
                        isinstance(orig_t, Int) and isinstance(new_t, Int)
                        and orig_t.encoding != IntEncoding.SIGNED and new_t.encoding != IntEncoding.SIGNED):
                    v.fail_memsz_adjust = True
        elif kind.is_type:
            v.old, v.validate = _type_value(kind, local)
            v.new, _ = _type_value(kind, targ)
        else:
            v.old = _enumval_value(kind, local)
            v.new = _enumval_value(kind, targ)
    except _Poison:
        v.poison = True
    return v


def _field_value(kind: ReloKind, relo: CoreRelo, spec: CoreSpec | None) -> tuple[int, int, int, bool]:
    """(value, field byte size for load resizing, field type id, validate) of a field relocation."""
    if kind == ReloKind.FIELD_EXISTS:
        return (1 if spec else 0), 0, 0, True
    if spec is None:
        raise _Poison
    btf = spec.btf
    acc = spec.accessors[-1]
    if acc.name is None:  # array element access a[n]
        size = btf.resolve_size(acc.type_id)
        if kind == ReloKind.FIELD_BYTE_OFFSET:
            return spec.bit_offset // 8, size, acc.type_id, True
        if kind == ReloKind.FIELD_BYTE_SIZE:
            return size, 0, 0, True
        raise RelocationError(f"<{kind}> relocation at insn #{relo.insn_off // 8} can't be applied "
                              "to an array element access")

    parent = btf[acc.type_id]
    m = parent.members[acc.idx]  # type: ignore[union-attr]
    mt = btf.skip_mods_and_typedefs(m.type_id)
    bit_off = spec.bit_offset
    bit_sz = m.bitfield_size
    bitfield = bit_sz > 0
    if bitfield:
        byte_sz = mt.size  # type: ignore[union-attr]
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:  # smallest load that covers it
            if byte_sz >= 8:
                raise RelocationError(f"<{kind}> relocation at insn #{relo.insn_off // 8}: bitfield "
                                      f"{m.name!r} can't be read with a 64-bit load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = btf.resolve_size(mt.id)
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    validate = not bitfield  # bitfield values may legitimately disagree with the compiler
    field_sz = field_type = 0
    if kind == ReloKind.FIELD_BYTE_OFFSET:
        val = byte_off
        if not bitfield:
            field_sz, field_type = byte_sz, mt.id
    elif kind == ReloKind.FIELD_BYTE_SIZE:
        val = byte_sz
    elif kind == ReloKind.FIELD_SIGNED:
        val = int((isinstance(mt, ENUMS) and mt.signed) or (isinstance(mt, Int) and mt.signed))
        validate = True
    elif kind == ReloKind.FIELD_LSHIFT_U64:
        if btf.byte_order == "big":
            val = (8 - byte_sz) * 8 + (bit_off - byte_off * 8)
        else:
            val = 64 - (bit_off + bit_sz - byte_off * 8)
        val &= U32
    else:  # FIELD_RSHIFT_U64
        val = (64 - bit_sz) & U32
        validate = True
    return val, field_sz, field_type, validate


def _type_value(kind: ReloKind, spec: CoreSpec | None) -> tuple[int, bool]:
    if spec is None:
        return 0, True  # type-based relocations answer 0 when the type is missing
    if kind == ReloKind.TYPE_ID_TARGET:
        return spec.root_type_id, False  # ids change at link time: never validated
    if kind in (ReloKind.TYPE_EXISTS, ReloKind.TYPE_MATCHES):
        return 1, True
    return spec.btf.resolve_size(spec.root_type_id), True  # TYPE_SIZE


def _enumval_value(kind: ReloKind, spec: CoreSpec | None) -> int:
    if kind == ReloKind.ENUMVAL_EXISTS:
        return 1 if spec else 0
    if spec is None:
        raise _Poison
    acc = spec.accessors[0]
    e = spec.btf[acc.type_id]
    assert isinstance(e, ENUMS)
    return enum_relo_value(e, e.values[acc.idx].value)
