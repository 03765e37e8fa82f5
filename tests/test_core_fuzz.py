"""Bad relocation records and instructions raise RelocationError naming the problem, never a
raw IndexError/AttributeError/KeyError: random records against real object and kernel BTF."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import KERNEL_BTF, fixture_obj
from corepy.asm.insn import Insn
from corepy.btf import BTF
from corepy.btf.core import ReloKind, Target, calc_relo, patch_insn
from corepy.btf.core.calc import CoreResult
from corepy.btf.ext import CoreRelo
from corepy.errors import RelocationError

pytestmark = pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no /sys/kernel/btf/vmlinux")

LOCAL = BTF.from_file(fixture_obj("core_zoo"))
TARGET = Target.running_kernel() if KERNEL_BTF.exists() else None

access = st.lists(st.integers(0, 140), min_size=1, max_size=5).map(lambda xs: ":".join(map(str, xs)))
weird_access = st.text(alphabet="0123456789:- x", max_size=8)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(type_id=st.integers(0, len(LOCAL) + 3), kind=st.integers(0, 14),
       access_str=st.one_of(access, weird_access, st.just("0")))
def test_random_records_raise_only_relocation_errors(type_id, kind, access_str):
    relo = CoreRelo(0, type_id, access_str, kind)
    try:
        result = calc_relo(LOCAL, relo, TARGET)
    except RelocationError:
        return
    assert isinstance(result, CoreResult)
    assert 0 <= result.old < 2**64 and 0 <= result.new < 2**64


@pytest.mark.parametrize("access_str", [
    "0:\u0663",            # an Arabic-Indic digit: not a digit to libbpf's sscanf("%d")
    "0:\uff11",            # a fullwidth digit
    "0:" + "1" * 5000,      # beyond int()'s digit limit (raised a raw ValueError once)
    "0:99999999999",        # beyond a C int
    "0:\u20031",           # a non-ASCII blank before the index
])
def test_corrupt_access_string_is_a_relocation_error_naming_it(access_str):
    struct_id = next(t.id for t in LOCAL.types() if t.kind.name == "STRUCT" and t.name)
    relo = CoreRelo(0, struct_id, access_str, int(ReloKind.FIELD_BYTE_OFFSET))
    with pytest.raises(RelocationError) as info:
        calc_relo(LOCAL, relo, TARGET)
    assert repr(access_str)[:40] in str(info.value)


insn = st.builds(Insn, st.integers(0, 255), st.integers(0, 15), st.integers(0, 15),
                 st.integers(-2**15, 2**15 - 1), st.integers(-2**31, 2**31 - 1))


@settings(max_examples=400, deadline=None)
@given(insns=st.lists(insn, min_size=0, max_size=3), idx=st.integers(-1, 3), old=st.integers(0, 2**64 - 1),
       new=st.integers(0, 2**64 - 1), kind=st.sampled_from(list(ReloKind)), poisoned=st.booleans(),
       validate=st.booleans(),
       sizes=st.tuples(st.sampled_from([0, 1, 2, 4, 8, 3]), st.sampled_from([0, 1, 2, 4, 8, 16])))
def test_random_patches_raise_only_relocation_errors(insns, idx, old, new, kind, poisoned, validate, sizes):
    result = CoreResult(kind, "[1] struct s", None, old, new, poisoned, validate, sizes[0], sizes[1])
    try:
        patch_insn(insns, idx, CoreRelo(0, 1, "0", int(kind)), result)
    except RelocationError:
        return
    for i in insns:
        assert -2**31 <= i.imm < 2**31 and -2**15 <= i.off < 2**15 and 0 <= i.code < 256
