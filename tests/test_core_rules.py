"""CO-RE rules on hand-built local/target BTF pairs: flavors, ambiguity, anonymous members,
bitfields, arrays, enums, type matching, candidate search and instruction patching. Each
expected value is worked out from the C layout the BTF describes, as libbpf defines it."""

from __future__ import annotations

import pytest

from corepy.asm.insn import ALU64, CALL_INSN, DW, LD_IMM64, LDX, MEM, MOV, STX, W, Insn, K, B, H
from corepy.btf.core import (POISON_IMM, CoreResult, ReloKind, Target, calc_relo, is_poisoned, patch_insn,
                             types_are_compat, types_match)
from corepy.btf.ext import CoreRelo
from corepy.btf.types import (Array, Enum, Enum64, EnumValue, FuncProto, Fwd, Int, IntEncoding, Member,
                              Param, Ptr, Struct, Typedef, Union)
from corepy.errors import RelocationError
from oracle.btfgen import build

S = IntEncoding.SIGNED
INT = Int(0, "int", 4, S)
UINT = Int(0, "unsigned int", 4)
LONG = Int(0, "long", 8, S)
CHAR = Int(0, "char", 1, IntEncoding.SIGNED | IntEncoding.CHAR)
K_ = ReloKind


def relo(type_id: int, access: str, kind: ReloKind, insn_off: int = 0) -> CoreRelo:
    return CoreRelo(insn_off, type_id, access, int(kind))


def calc(local, type_id, access, kind, target_btf, **kw) -> CoreResult:
    return calc_relo(local, relo(type_id, access, kind), Target(target_btf, custom=True, **kw))


# --- field offsets, flavors, anonymous members -----------------------------------------------

LOCAL = build(
    INT,                                                                            # 1
    Struct(0, "task___v1", 12, (Member("pad", 1, 0), Member("pid", 1, 32), Member("tgid", 1, 64))),  # 2
)
TARGET = build(
    LONG,                                                                           # 1
    INT,                                                                            # 2
    Struct(0, "", 8, (Member("pid", 2, 0), Member("tgid", 2, 32))),                 # 3 anonymous
    Union(0, "", 8, (Member("", 3, 0), Member("both", 1, 0))),                      # 4 anonymous
    Struct(0, "task", 24, (Member("state", 1, 0), Member("", 4, 64), Member("x", 1, 128))),  # 5
)


def test_flavored_local_matches_plain_target_through_anonymous_members():
    r = calc(LOCAL, 2, "0:1", K_.FIELD_BYTE_OFFSET, TARGET)
    assert (r.old, r.new, r.poisoned) == (4, 8, False)
    assert r.local_spec == "[2] struct task___v1.pid (0:1 @ offset 4)"
    # raw path goes task -> anonymous union (1) -> anonymous struct (0) -> pid (0)
    assert r.target_spec == "[5] struct task.pid (0:1:0:0 @ offset 8)"
    r = calc(LOCAL, 2, "0:2", K_.FIELD_BYTE_OFFSET, TARGET)
    assert (r.old, r.new) == (8, 12)
    assert r.target_spec == "[5] struct task.tgid (0:1:0:1 @ offset 12)"


def test_missing_field_poisons_offset_and_answers_zero_for_exists():
    local = build(INT, Struct(0, "task", 8, (Member("pid", 1, 0), Member("gone", 1, 32))))
    r = calc(local, 2, "0:1", K_.FIELD_BYTE_OFFSET, TARGET)
    assert r.poisoned and r.target_spec is None and "no field 'gone'" in r.reason
    r = calc(local, 2, "0:1", K_.FIELD_EXISTS, TARGET)
    assert (r.old, r.new, r.poisoned) == (1, 0, False)


def test_incompatible_field_type_does_not_match():
    local = build(INT, Ptr(0, 1), Struct(0, "task", 8, (Member("state", 2, 0),)))
    r = calc(local, 3, "0:0", K_.FIELD_BYTE_OFFSET, TARGET)
    assert r.poisoned and "incompatible type" in r.reason


def test_no_candidate_at_all():
    local = build(INT, Struct(0, "nothing___here", 4, (Member("a", 1, 0),)))
    r = calc(local, 2, "0:0", K_.FIELD_BYTE_OFFSET, TARGET)
    assert r.poisoned and r.candidates == () and "no type named 'nothing'" in r.reason
    r = calc(local, 2, "0", K_.TYPE_SIZE, TARGET)
    assert (r.new, r.poisoned) == (0, False)  # type-based kinds answer 0, never poison


# --- ambiguity --------------------------------------------------------------------------------

def _two_flavors(off_a: int, off_b: int):
    return build(INT, Struct(0, "s", 8, (Member("f", 1, off_a),)),
                 Struct(0, "s___2", 8, (Member("g", 1, 0), Member("f", 1, off_b))))


def test_candidates_agreeing_are_fine_and_disagreeing_is_an_error():
    local = build(INT, Struct(0, "s___mine", 4, (Member("f", 1, 0),)))
    r = calc(local, 2, "0:0", K_.FIELD_BYTE_OFFSET, _two_flavors(32, 32))
    assert r.new == 4 and [c.matched for c in r.candidates] == [True, True]
    with pytest.raises(RelocationError, match="ambiguity"):
        calc(local, 2, "0:0", K_.FIELD_BYTE_OFFSET, _two_flavors(0, 32))


def test_candidate_list_narrows_like_libbpf():
    """libbpf keeps, per local type, only the candidates the previous relocation matched."""
    local = build(INT, Struct(0, "s", 8, (Member("f", 1, 0), Member("g", 1, 32))))
    target_btf = build(INT, Struct(0, "s", 4, (Member("f", 1, 0),)),
                       Struct(0, "s___b", 8, (Member("x", 1, 0), Member("g", 1, 32))))
    target = Target(target_btf, custom=True)
    first = calc_relo(local, relo(2, "0:0", K_.FIELD_BYTE_OFFSET), target)   # only s matches
    assert first.new == 0 and len(first.candidates) == 2
    second = calc_relo(local, relo(2, "0:1", K_.FIELD_BYTE_OFFSET), target)  # s___b is gone now
    assert second.poisoned and len(second.candidates) == 1
    fresh = calc_relo(local, relo(2, "0:1", K_.FIELD_BYTE_OFFSET), Target(target_btf, custom=True))
    assert fresh.new == 4 and not fresh.poisoned


def test_narrowing_is_per_local_btf():
    """Another object relocated against the same Target starts from the full candidate list."""
    target_btf = build(INT, Struct(0, "s", 4, (Member("f", 1, 0),)),
                       Struct(0, "s___b", 8, (Member("x", 1, 0), Member("g", 1, 32))))
    target = Target(target_btf, custom=True)

    def local():
        return build(INT, Struct(0, "s", 8, (Member("f", 1, 0), Member("g", 1, 32))))

    first = local()
    calc_relo(first, relo(2, "0:0", K_.FIELD_BYTE_OFFSET), target)  # narrows `first`'s s to one
    assert calc_relo(first, relo(2, "0:1", K_.FIELD_BYTE_OFFSET), target).poisoned
    assert calc_relo(local(), relo(2, "0:1", K_.FIELD_BYTE_OFFSET), target).new == 4


# --- bitfields -----------------------------------------------------------------------------

BITS_LOCAL = build(UINT, Struct(0, "bf", 8, (Member("a", 1, 0, 3), Member("b", 1, 3, 2)), kind_flag=True))
BITS_TARGET = build(UINT, INT, Struct(0, "bf", 8, (Member("x", 1, 0, 30), Member("b", 2, 30, 4),
                                                   Member("a", 1, 34, 5)), kind_flag=True))


@pytest.mark.parametrize("kind, old, new", [
    (K_.FIELD_BYTE_OFFSET, 0, 0),    # b spans bits 30..33: an 8-byte load at offset 0
    (K_.FIELD_BYTE_SIZE, 4, 8),
    (K_.FIELD_LSHIFT_U64, 64 - 5, 64 - 34),
    (K_.FIELD_RSHIFT_U64, 62, 60),
    (K_.FIELD_SIGNED, 0, 1),
])
def test_bitfield_straddling_a_word(kind, old, new):
    r = calc(BITS_LOCAL, 2, "0:1", kind, BITS_TARGET)
    assert (r.old, r.new, r.poisoned) == (old, new, False)
    assert r.validate == (kind in (K_.FIELD_SIGNED, K_.FIELD_RSHIFT_U64))


def test_bitfield_lshift_big_endian_target():
    target = build(UINT, INT, Struct(0, "bf", 8, (Member("a", 1, 4, 5), Member("b", 2, 9, 3)), kind_flag=True),
                   byte_order="big")
    assert target.byte_order == "big"
    # libbpf's big-endian formula: (8 - byte_sz) * 8 + (bit_off - byte_off * 8)
    r = calc(BITS_LOCAL, 2, "0:1", K_.FIELD_LSHIFT_U64, target)
    assert r.new == (8 - 4) * 8 + 9
    r = calc(BITS_LOCAL, 2, "0:0", K_.FIELD_LSHIFT_U64, target)
    assert r.new == (8 - 4) * 8 + 4


def test_bitfield_wider_than_a_u64_load_is_an_error():
    target = build(Int(0, "unsigned long", 8), Struct(0, "bf", 16, (Member("a", 1, 60, 8),), kind_flag=True))
    with pytest.raises(RelocationError, match="64-bit load"):
        calc(BITS_LOCAL, 2, "0:0", K_.FIELD_BYTE_OFFSET, target)


# --- arrays ----------------------------------------------------------------------------------

ARR_LOCAL = build(INT, Array(0, 1, 1, 4), Struct(0, "a", 20, (Member("n", 1, 0), Member("v", 2, 32))),
                  Array(0, 1, 1, 0), Struct(0, "flex", 4, (Member("n", 1, 0), Member("data", 4, 32))))
ARR_TARGET = build(LONG, Array(0, 1, 1, 2), Struct(0, "a", 24, (Member("v", 2, 0), Member("n", 1, 128))),
                   Array(0, 1, 1, 0), Struct(0, "flex", 8, (Member("n", 1, 0), Member("data", 4, 64))))


def test_array_element_offsets_follow_element_size():
    r = calc(ARR_LOCAL, 3, "0:1:1", K_.FIELD_BYTE_OFFSET, ARR_TARGET)  # &a->v[1]
    assert (r.old, r.new) == (8, 8) and r.target_spec == "[3] struct a.v[1] (0:0:1 @ offset 8)"
    assert (r.orig_sz, r.new_sz) == (4, 8) and r.fail_memsz_adjust  # int -> long: signed, resized
    r = calc(ARR_LOCAL, 3, "0:1:1", K_.FIELD_BYTE_SIZE, ARR_TARGET)
    assert (r.old, r.new) == (4, 8)


def test_array_index_out_of_target_bounds_poisons():
    r = calc(ARR_LOCAL, 3, "0:1:3", K_.FIELD_BYTE_OFFSET, ARR_TARGET)
    assert r.poisoned and "out of bounds" in r.reason


def test_flexible_array_any_index_and_pointer_index():
    r = calc(ARR_LOCAL, 5, "0:1:7", K_.FIELD_BYTE_OFFSET, ARR_TARGET)
    assert (r.old, r.new) == (4 + 7 * 4, 8 + 7 * 8)
    r = calc(ARR_LOCAL, 3, "2:0", K_.FIELD_BYTE_OFFSET, ARR_TARGET)  # (&a)[2].n
    assert (r.old, r.new) == (40, 2 * 24 + 16) and r.local_spec == "[3] struct a[2].n (2:0 @ offset 40)"


def test_signed_and_shift_of_an_array_element_are_errors():
    with pytest.raises(RelocationError, match="array element"):
        calc(ARR_LOCAL, 3, "0:1:1", K_.FIELD_SIGNED, ARR_TARGET)


# --- enums -----------------------------------------------------------------------------------

def test_enum_values_flavors_enum64_and_sign_extension():
    local = build(Enum(0, "e___x", 4, (EnumValue("A", 1), EnumValue("B___old", 2), EnumValue("NEG", -1))))
    target = build(Enum64(0, "e", 8, (EnumValue("B", 1 << 40), EnumValue("A", 7))),
                   Enum(0, "e", 4, (EnumValue("NEG", 0x80000000),)))  # unsigned 32-bit value
    r = calc(local, 1, "0", K_.ENUMVAL_VALUE, target)
    assert (r.old, r.new) == (1, 7) and r.target_spec == "[1] enum64 e::A = 7"
    r = calc(local, 1, "1", K_.ENUMVAL_VALUE, target)
    assert r.new == 1 << 40
    r = calc(local, 1, "2", K_.ENUMVAL_VALUE, target)
    # libbpf reads a 32-bit enumerator as s32 and widens it: 0x80000000 -> 0xffffffff80000000
    assert r.old == 0xFFFFFFFFFFFFFFFF and r.new == 0xFFFFFFFF80000000
    assert r.local_spec == "[1] enum e___x::NEG = 4294967295"
    r = calc(local, 1, "0", K_.ENUMVAL_EXISTS, build(Enum(0, "e", 4, (EnumValue("Z", 0),))))
    assert (r.new, r.poisoned) == (0, False)
    r = calc(local, 1, "0", K_.ENUMVAL_VALUE, build(Enum(0, "e", 4, (EnumValue("Z", 0),))))
    assert r.poisoned and "no enumerator 'A'" in r.reason


def test_field_signed_rules():
    local = build(INT, Enum(0, "k", 4, (EnumValue("X", 0),)), CHAR,
                  Struct(0, "s", 12, (Member("e", 2, 0), Member("c", 3, 32), Member("u", 1, 64))))
    target = build(Enum(0, "k", 4, (EnumValue("X", -1),), signed=True), CHAR, UINT,
                   Struct(0, "s", 12, (Member("e", 1, 0), Member("c", 2, 32), Member("u", 3, 64))))
    assert calc(local, 4, "0:0", K_.FIELD_SIGNED, target).new == 1  # enum with kind_flag
    assert calc(local, 4, "0:1", K_.FIELD_SIGNED, target).new == 1  # signed char
    assert calc(local, 4, "0:2", K_.FIELD_SIGNED, target).new == 0


# --- type-based kinds ----------------------------------------------------------------------

def test_type_id_local_target_size_exists():
    local = build(INT, Typedef(0, "pid_t", 1), Struct(0, "t___v2", 4, (Member("x", 1, 0),)))
    target = build(LONG, INT, Typedef(0, "pid_t", 2), Struct(0, "t", 8, ()))
    r = calc(local, 2, "0", K_.TYPE_ID_LOCAL, target)
    assert (r.old, r.new, r.validate, r.candidates) == (2, 2, False, ())
    r = calc(local, 2, "0", K_.TYPE_ID_TARGET, target)
    assert (r.old, r.new, r.validate) == (2, 3, False)
    assert calc(local, 3, "0", K_.TYPE_SIZE, target).new == 8
    assert calc(local, 3, "0", K_.TYPE_EXISTS, target).new == 1
    assert calc(local, 2, "0", K_.TYPE_SIZE, target).new == 4


def test_types_are_compat_rules():
    a = build(INT, Ptr(0, 1), FuncProto(0, 1, (Param("x", 2),)), Int(0, "bf", 4, bit_offset=2))
    b = build(CHAR, Ptr(0, 1), FuncProto(0, 1, (Param("y", 2),)), FuncProto(0, 1, ()))
    assert types_are_compat(a, 1, b, 1)            # any two ints
    assert types_are_compat(a, 2, b, 2)            # pointers recurse
    assert types_are_compat(a, 3, b, 3)            # same arity, compatible params
    assert not types_are_compat(a, 3, b, 4)        # arity differs
    assert not types_are_compat(a, 4, b, 1)        # old-style bitfield int
    assert not types_are_compat(a, 1, b, 2)        # int vs pointer


def test_types_match_rules():
    local = build(INT, Struct(0, "m___a", 8, (Member("x", 1, 0),)), Ptr(0, 2),
                  Struct(0, "h", 8, (Member("p", 3, 0),)), Enum(0, "e", 4, (EnumValue("A", 5),)),
                  Array(0, 1, 1, 3))
    target = build(INT, Struct(0, "m", 16, (Member("y", 1, 0), Member("x", 1, 64))),
                   Fwd(0, "m"), Ptr(0, 3), Struct(0, "h", 8, (Member("p", 4, 0),)),
                   Enum64(0, "e", 4, (EnumValue("B", 1), EnumValue("A", 9))), Array(0, 1, 1, 4),
                   Int(0, "int", 4))
    assert types_match(local, 2, target, 2)        # members found by name, offsets ignored
    assert types_match(local, 4, target, 5)        # struct behind a pointer matches a fwd
    assert types_match(local, 5, target, 6)        # enum vs enum64: names, not values
    assert not types_match(local, 6, target, 7)    # array lengths differ
    assert not types_match(local, 1, target, 8)    # signedness differs
    r = calc(local, 5, "0", K_.TYPE_MATCHES, target)
    assert (r.new, r.poisoned) == (1, False)


# --- candidate search ------------------------------------------------------------------------

def test_modules_searched_only_when_vmlinux_has_no_candidate_and_target_not_custom():
    from conftest import btf_blob
    from corepy.btf import BTF
    vmlinux = BTF.from_bytes(btf_blob("vmlinux-6.1.0-56"), source="vmlinux-6.1.0-56")
    module = BTF.from_bytes(btf_blob("nf_conntrack-6.1.0-56"), base=vmlinux, source="nf_conntrack")
    name = next(t.name for t in module.types()
                if t.kind.name == "STRUCT" and t.name and not vmlinux.ids_by_name(t.name))
    local = build(INT, Struct(0, name, 4, ()))
    r = calc_relo(local, relo(2, "0", K_.TYPE_EXISTS), Target(vmlinux, [module]))
    assert r.new == 1 and r.candidates[0].btf_name == "nf_conntrack"
    assert r.candidates[0].type_id >= module.start_id
    r = calc_relo(local, relo(2, "0", K_.TYPE_EXISTS), Target(vmlinux, [module], custom=True))
    assert r.new == 0


def test_bad_records_raise_relocation_errors():
    local = build(INT, Struct(0, "", 4, (Member("a", 1, 0),)), Struct(0, "s", 4, (Member("a", 1, 0),)))
    with pytest.raises(RelocationError, match="anonymous"):
        calc(local, 2, "0:0", K_.FIELD_BYTE_OFFSET, TARGET)
    for access in ("", ":0", "0:x", "0:5", "0::0", "0:-1"):
        with pytest.raises(RelocationError):
            calc(local, 3, access, K_.FIELD_BYTE_OFFSET, TARGET)
    with pytest.raises(RelocationError, match="'0'"):
        calc(local, 3, "0:0", K_.TYPE_SIZE, TARGET)
    with pytest.raises(RelocationError, match="unknown CO-RE relocation kind 13"):
        calc_relo(local, CoreRelo(0, 3, "0", 13), Target(TARGET))
    with pytest.raises(RelocationError):
        calc(local, 99, "0", K_.TYPE_SIZE, TARGET)


# --- patching --------------------------------------------------------------------------------

def res(kind=K_.FIELD_BYTE_OFFSET, old=0, new=0, **kw) -> CoreResult:
    return CoreResult(kind, "[1] struct s.f (0:0 @ offset 0)", None, old, new, **kw)


R = relo(1, "0:0", K_.FIELD_BYTE_OFFSET)


def test_patch_alu_ldx_and_ld_imm64():
    insns = [Insn(ALU64 | MOV | K, 1, 0, 0, 4)]
    patch_insn(insns, 0, R, res(old=4, new=0xFFFFFFFF))
    assert insns[0].imm == -1
    insns = [Insn(LDX | MEM | W, 1, 2, 8, 0)]
    patch_insn(insns, 0, R, res(old=8, new=1264))
    assert insns[0] == Insn(LDX | MEM | W, 1, 2, 1264, 0)
    insns = [Insn(LD_IMM64, 1, 0, 0, 5), Insn(0, 0, 0, 0, 0)]
    patch_insn(insns, 0, R, res(K_.ENUMVAL_VALUE, old=5, new=(1 << 40) | 0x80000001))
    assert (insns[0].imm, insns[1].imm) == (-0x7FFFFFFF, 256)


def test_patch_resizes_unsigned_loads_and_poisons_unsafe_ones():
    insns = [Insn(LDX | MEM | W, 1, 2, 8, 0)]
    patch_insn(insns, 0, R, res(old=8, new=16, orig_sz=4, new_sz=8))
    assert insns[0].code == LDX | MEM | DW and insns[0].off == 16
    insns = [Insn(STX | MEM | H, 1, 2, 8, 0)]
    patch_insn(insns, 0, R, res(old=8, new=16, orig_sz=2, new_sz=1))
    assert insns[0].code == STX | MEM | B
    insns = [Insn(LDX | MEM | W, 1, 2, 8, 0)]
    patch_insn(insns, 0, R, res(old=8, new=16, orig_sz=4, new_sz=8, fail_memsz_adjust=True))
    assert is_poisoned(insns[0])
    with pytest.raises(RelocationError, match="access of 2 bytes"):
        patch_insn([Insn(LDX | MEM | H, 1, 2, 8, 0)], 0, R, res(old=8, new=16, orig_sz=4, new_sz=8))


def test_patch_poisons_both_halves_of_ld_imm64():
    insns = [Insn(LD_IMM64, 1, 0, 0, 5), Insn(0, 0, 0, 0, 0), Insn(ALU64 | MOV | K, 0, 0, 0, 0)]
    patch_insn(insns, 0, R, res(K_.ENUMVAL_VALUE, old=5, poisoned=True))
    assert insns[:2] == [Insn(CALL_INSN, 0, 0, 0, POISON_IMM)] * 2 and POISON_IMM == 195896080
    assert insns[2] == Insn(ALU64 | MOV | K, 0, 0, 0, 0)


def test_patch_refuses_what_libbpf_refuses():
    with pytest.raises(RelocationError, match="unexpected ALU immediate"):
        patch_insn([Insn(ALU64 | MOV | K, 1, 0, 0, 3)], 0, R, res(old=4, new=8))
    patch_insn([Insn(ALU64 | MOV | K, 1, 0, 0, 3)], 0, R, res(old=4, new=8, validate=False))
    with pytest.raises(RelocationError, match="too big"):
        patch_insn([Insn(LDX | MEM | W, 1, 2, 8, 0)], 0, R, res(old=8, new=0x8000))
    with pytest.raises(RelocationError, match="register operand"):
        patch_insn([Insn(ALU64 | MOV | 0x08, 1, 2, 0, 0)], 0, R, res(old=0, new=8))
    with pytest.raises(RelocationError, match="unexpected form"):
        patch_insn([Insn(LD_IMM64, 1, 1, 0, 5), Insn(0)], 0, R, res(old=5, new=8))
    with pytest.raises(RelocationError, match="cannot be relocated"):
        patch_insn([Insn(CALL_INSN, 0, 0, 0, 1)], 0, R, res(old=0, new=8))
    with pytest.raises(RelocationError, match="past the program"):
        patch_insn([], 0, R, res())


def test_existence_kinds_resolve_to_zero_not_poison():
    target = build(INT)
    local = build(INT, Struct(0, "gone", 4, (Member("a", 1, 0),)), Enum(0, "ge", 4, (EnumValue("A", 1),)))
    for type_id, access, kind in [(2, "0:0", K_.FIELD_EXISTS), (2, "0", K_.TYPE_EXISTS),
                                  (3, "0", K_.ENUMVAL_EXISTS), (2, "0", K_.TYPE_MATCHES)]:
        r = calc(local, type_id, access, kind, target)
        insns = [Insn(ALU64 | MOV | K, 1, 0, 0, 1)]
        patch_insn(insns, 0, relo(type_id, access, kind), r)
        assert insns[0].imm == 0 and not r.poisoned, kind
