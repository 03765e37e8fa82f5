"""Differential tests: corepy's CO-RE relocation against libbpf's, relocation by relocation,
for every fixture object and every target BTF (the running kernel and the other kernels in
fixtures/btf). libbpf runs in a small C helper (tests/oracle/core_oracle.c) whose debug log
says, per relocation, the local spec, each candidate and whether it matched, and how it
patched (or poisoned) which instruction; corepy must produce the same, spec text included.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import FIXTURES, KERNEL_BTF, OTHER_KERNELS, btf_path
from corepy.btf import BTF
from corepy.btf.core import ReloKind, Target, calc_relo, is_poisoned, patch_insn
from corepy.errors import RelocationError
from oracle.elfprogs import program_insns

ORACLE_SRC = Path(__file__).parent / "oracle" / "core_oracle.c"
CORNER_CASES = Path(__file__).parent / "oracle" / "bpf"
OBJECTS = sorted(p.name.removesuffix(".bpf.o") for p in FIXTURES.glob("*.bpf.o")) + sorted(
    p.name.removesuffix(".bpf.c") for p in CORNER_CASES.glob("*.bpf.c"))
TARGETS = ["running"] + OTHER_KERNELS


@pytest.fixture(scope="session")
def oracle(tmp_path_factory) -> Path:
    """The libbpf oracle binary, built once per session."""
    gcc = shutil.which("gcc")
    if gcc is None or not Path("/usr/include/bpf/libbpf.h").exists():
        pytest.skip("the libbpf oracle needs gcc and libbpf-dev (scripts/setup-system.sh installs them)")
    out = tmp_path_factory.mktemp("oracle") / "core_oracle"
    subprocess.run([gcc, "-O1", "-Wall", "-o", str(out), str(ORACLE_SRC), "-lbpf"], check=True)
    return out


@pytest.fixture(scope="session")
def corner_objects(tmp_path_factory) -> Path:
    """tests/oracle/bpf/*.bpf.c compiled with clang-19 into a session directory."""
    clang = shutil.which("clang-19")
    if clang is None or not Path("/usr/include/bpf/bpf_helpers.h").exists():
        pytest.skip("corner-case objects need clang-19 and libbpf-dev headers (scripts/setup-system.sh)")
    out = tmp_path_factory.mktemp("core_bpf")
    for src in CORNER_CASES.glob("*.bpf.c"):
        subprocess.run([clang, "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86",
                        "-I/usr/include/x86_64-linux-gnu", "-I/usr/include/aarch64-linux-gnu", "-Wall",
                        "-c", str(src), "-o", str(out / f"{src.name[:-2]}.o")], check=True)
    return out


@dataclass
class LibbpfRelo:
    prog: str
    local: str = ""                                   # "<kind> spec"
    candidates: list[tuple[bool, str]] = field(default_factory=list)
    patched: list[tuple[int, str, int, int]] = field(default_factory=list)  # insn, what, old, new
    poisoned: list[int] = field(default_factory=list)
    failed: str | None = None


_RELO = re.compile(r"^libbpf: prog '([^']+)': relo #(\d+): (.*)$")
_CAND = re.compile(r"^(non-matching|matching) candidate #\d+ (.*)$")
_PATCH = re.compile(r"^patched insn #(\d+) \([A-Z0-9/]+\) (imm64|imm|off|mem_sz) (\d+) -> (\d+)$")
_POISON = re.compile(r"^substituting insn #(\d+) w/ invalid insn$")
_FAIL = re.compile(r"^(failed to relocate|failed to patch insn.*|unexpected insn.*|.*too big.*)")


def run_libbpf(oracle: Path, obj: Path, target: str) -> dict[tuple[str, int], LibbpfRelo]:
    """libbpf's account of every CO-RE relocation of ``obj``, keyed by (program, relo #)."""
    cmd = [str(oracle), str(obj)] + ([] if target == "running" else [str(btf_path(target))])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    if "ORACLE open" in out:
        pytest.skip(f"libbpf 1.1 cannot open {obj.name}: {out.strip().splitlines()[-1]}")
    if "CO-RE relocations" not in out:  # libbpf gave up before relocating (e.g. an unresolved ksym)
        last = [ln for ln in out.splitlines() if ln.startswith("libbpf:")][-2:]
        pytest.skip(f"libbpf 1.1 fails {obj.name} before CO-RE relocation here: {' / '.join(last)}")
    relos: dict[tuple[str, int], LibbpfRelo] = {}
    for line in out.splitlines():
        m = _RELO.match(line)
        if not m:
            continue
        prog, idx, text = m.group(1), int(m.group(2)), m.group(3)
        r = relos.setdefault((prog, idx), LibbpfRelo(prog))
        if text.startswith("<") and not r.local:
            r.local = text
        elif (c := _CAND.match(text)):
            r.candidates.append((c.group(1) == "matching", c.group(2)))
        elif (p := _PATCH.match(text)):
            r.patched.append((int(p.group(1)), p.group(2), int(p.group(3)), int(p.group(4))))
        elif (p := _POISON.match(text)):
            r.poisoned.append(int(p.group(1)))
        elif _FAIL.match(text):
            r.failed = text
    return relos


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
