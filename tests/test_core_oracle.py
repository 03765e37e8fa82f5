"""Differential tests: corepy's CO-RE relocation against libbpf's, relocation by relocation,
for every fixture object and every target BTF (the running kernel and the other kernels in
fixtures/btf). libbpf runs in a small C helper (tests/oracle/core_oracle.c) whose debug log
says, per relocation, the local spec, each candidate and whether it matched, and how it
patched (or poisoned) which instruction; corepy must produce the same, spec text included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FIXTURES, KERNEL_BTF, OTHER_KERNELS, btf_path
from corepy.btf import BTF
from corepy.btf.core import ReloKind, Target, calc_relo, is_poisoned, patch_insn
from corepy.errors import RelocationError
from oracle.elfprogs import program_insns
from oracle.libbpf_log import CORNER_CASES, build_corner_objects, build_oracle, run_libbpf

def _has_core_relos(path: Path) -> bool:
    ext = BTF.from_file(path).ext
    return ext is not None and any(ext.core_relos.values())


# Fixture objects with CO-RE relocations (maps_zoo, ringbuf_bench have none), plus the corner cases.
OBJECTS = sorted(p.name.removesuffix(".bpf.o") for p in FIXTURES.glob("*.bpf.o") if _has_core_relos(p)) + sorted(
    p.name.removesuffix(".bpf.c") for p in CORNER_CASES.glob("*.bpf.c"))
TARGETS = ["running"] + OTHER_KERNELS


@pytest.fixture(scope="session")
def oracle(tmp_path_factory) -> Path:
    return build_oracle(tmp_path_factory)


@pytest.fixture(scope="session")
def corner_objects(tmp_path_factory) -> Path:
    return build_corner_objects(tmp_path_factory)


def _insn_value(insns, idx: int, what: str) -> int:
    i = insns[idx]
    if what == "off":
        return i.off & 0xFFFFFFFFFFFFFFFF
    if what == "imm":
        return i.imm & 0xFFFFFFFFFFFFFFFF
    if what == "imm64":
        return (i.imm & 0xFFFFFFFF) | ((insns[idx + 1].imm & 0xFFFFFFFF) << 32)
    return i.mem_size


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", OBJECTS)
def test_same_relocations_as_libbpf(oracle, name, target, kernel_targets, request):
    obj = FIXTURES / f"{name}.bpf.o"
    if not obj.exists():
        obj = request.getfixturevalue("corner_objects") / f"{name}.bpf.o"
    local = BTF.from_file(obj)
    if local.ext is None or not any(local.ext.core_relos.values()):
        pytest.skip(f"{name} has no CO-RE relocations")
    expected = run_libbpf(oracle, obj, target)
    tgt = kernel_targets(target)
    progs = program_insns(obj)
    compared = 0
    for sec, records in local.ext.core_relos.items():
        for n, rec in enumerate(records):
            prog, idx, insns = progs.locate(sec, rec.insn_off)
            want = expected.get((prog, n))
            assert want is not None, f"libbpf logged nothing for {sec} relo #{n} (prog {prog!r})"
            ctx = f"{name} vs {target}: prog {prog!r} relo #{n} insn #{idx}"
            if want.failed:
                with pytest.raises(RelocationError):
                    patch_insn(insns, idx, rec, calc_relo(local, rec, tgt))
                return  # libbpf stops at the first failure
            before = [i.copy() for i in insns]
            res = calc_relo(local, rec, tgt)
            assert f"<{ReloKind(rec.kind)}> {res.local_spec}" == want.local, ctx
            got_cands = [(c.matched, f"<{ReloKind(rec.kind)}> {c.spec}") for c in res.candidates]
            assert got_cands == want.candidates, ctx
            patch_insn(insns, idx, rec, res)
            if want.poisoned:
                assert sorted(want.poisoned) == [i for i in range(idx, idx + len(want.poisoned))], ctx
                assert all(is_poisoned(insns[i]) for i in want.poisoned), ctx
            else:
                assert not is_poisoned(insns[idx]), ctx
            for insn_idx, what, old, new in want.patched:
                assert insn_idx == idx, ctx
                assert (_insn_value(before, idx, what), _insn_value(insns, idx, what)) == (old, new), ctx
            compared += 1
    assert compared == sum(map(len, local.ext.core_relos.values()))


@pytest.fixture(scope="module")
def kernel_targets():
    """target name -> a fresh Target (libbpf's candidate cache is per object), BTFs parsed once."""
    cache: dict[str, BTF] = {}

    def make(target: str) -> Target:
        if target == "running":
            return Target.running_kernel()
        if target not in cache:
            cache[target] = BTF.from_file(btf_path(target))
        return Target(cache[target], custom=True)

    if not KERNEL_BTF.exists():
        pytest.skip("no /sys/kernel/btf/vmlinux")
    return make
