"""Load parity: what corepy loads into the kernel equals what libbpf 1.1 loads, instruction for
instruction. Every program of every fixture object (plus parity_extra, built from
parity_helpers.EXTRA_SRC: kfuncs, kconfig, tp_btf, a global subprogram, bpf_loop, a tail call;
and the CO-RE corner objects of tests/oracle/bpf) is loaded by libbpf (tests/oracle/load_oracle.c,
linked against Debian's libbpf) and by ``corepy.open(...).load()``, and the kernel's account of
both is compared:

- the xlated (post-verifier) instructions, after one normalisation: the map a ``ld_imm64``
  references is named by the map's name instead of its per-load id (helper and kfunc calls
  hold kernel addresses, subprogram calls are relative: both must match as they are);
- the program tag, a hash of the instructions as loaded: checked against a tag computed from
  the instructions libbpf gave the kernel, so the input is equal too, not just the outcome;
- name, type, attach BTF id, GPL flag, func_info and line_info records, the loaded BTF blob;
- the used-maps list by name and order; the maps created (name, type, sizes, max_entries,
  flags, map_extra, BTF key/value type ids) and the contents of the global data maps.

A program libbpf cannot load on this kernel is skipped with libbpf's own error, after checking
corepy refuses it too; both then load the same set of programs, so they create the same maps.
"""

from __future__ import annotations

import os
import subprocess
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import corepy
from conftest import FIXTURES, requires_root
from corepy.btf import BTF
from corepy.errors import CorepyError
from corepy.syscalls.uapi import AttachType, ProgType
from oracle.libbpf_log import CORNER_CASES, build_corner_objects
from parity_helpers import (EXTRA_PROGRAMS, LoadFacts, ProgFacts, build_extra_object, build_load_oracle, corepy_facts,
                            elf_programs, first_difference, kernel_tag, poison_kfunc_call, run_libbpf,
                            unresolved_weak_kfunc_calls)

pytestmark = requires_root

FIXTURE_OBJECTS = sorted(p.name.removesuffix(".bpf.o") for p in FIXTURES.glob("*.bpf.o"))
OBJECTS = FIXTURE_OBJECTS + ["parity_extra"]  # parity_extra: built from parity_helpers.EXTRA_SRC
CASES = [(name, prog) for name in FIXTURE_OBJECTS for prog in elf_programs(FIXTURES / f"{name}.bpf.o")] + [
    ("parity_extra", prog) for prog in EXTRA_PROGRAMS]

# Sections libbpf 1.1 does not know (libbpf 1.3 added them): the type and expected attach
# type libbpf >= 1.3 gives them, set by hand in the oracle.
LIBBPF_1_1_UNKNOWN = {
    "tcx/ingress": (ProgType.SCHED_CLS, AttachType.TCX_INGRESS),
    "tcx/egress": (ProgType.SCHED_CLS, AttachType.TCX_EGRESS),
}


@dataclass
class Parity:
    """Both loads of one object: the programs libbpf could load, and why the others not."""

    libbpf: LoadFacts
    corepy: LoadFacts | None = None
    corepy_error: BaseException | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    """program -> libbpf's error when loading it alone"""
    corepy_refused: dict[str, BaseException | None] = field(default_factory=dict)
    """program libbpf refused -> corepy's error loading it alone (None: corepy loaded it)"""
    fds_before: int = 0
    fds_after: int = 0


@pytest.fixture(scope="session")
def load_oracle(tmp_path_factory) -> Path:
    return build_load_oracle(tmp_path_factory)


@pytest.fixture(scope="module")
def bpffs() -> str:
    BTF.kernel()  # corepy keeps the kernel BTF file open for the process: open it before counting fds
    if not os.path.ismount("/sys/fs/bpf"):
        os.makedirs("/sys/fs/bpf", exist_ok=True)
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)
    return "/sys/fs/bpf"


class PinRoot:
    """A private directory on bpffs for pin-by-name maps, emptied and removed on exit."""

    def __init__(self, bpffs: str, side: str):
        self.path = os.path.join(bpffs, f"corepy-parity-{side}-{uuid.uuid4().hex[:8]}")

    def __enter__(self) -> str:
        os.mkdir(self.path)
        return self.path

    def __exit__(self, *exc: object) -> None:
        _empty(self.path)
        os.rmdir(self.path)


def _empty(directory: str) -> None:
    for name in os.listdir(directory):
        os.unlink(os.path.join(directory, name))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _load_both(oracle: Path, bpffs: str, path: Path) -> Parity:
    sections = elf_programs(path)
    types = {prog: tuple(map(int, LIBBPF_1_1_UNKNOWN[sec.lstrip("?")]))
             for prog, sec in sections.items() if sec.lstrip("?") in LIBBPF_1_1_UNKNOWN}
    with PinRoot(bpffs, "libbpf") as pins:
        facts = run_libbpf(oracle, path, list(sections), pins, types)
        skipped: dict[str, str] = {}
        if facts.error is not None:  # find which programs libbpf cannot load, one by one
            for prog in sections:
                _empty(pins)  # no map pinned by an earlier try is reused
                alone = run_libbpf(oracle, path, [prog], pins, types)
                if alone.error is not None:
                    skipped[prog] = alone.error
            _empty(pins)
            loadable = [p for p in sections if p not in skipped]
            facts = run_libbpf(oracle, path, loadable, pins, types) if loadable else LoadFacts()
            assert facts.error is None, f"libbpf loads each of {loadable} alone but not together: {facts.error}"
    result = Parity(facts, skipped=skipped)
    for prog in skipped:
        result.corepy_refused[prog] = _corepy_load_error(bpffs, path, [prog])
    if len(skipped) == len(sections):
        return result
    with PinRoot(bpffs, "corepy") as pins:
        result.fds_before = _open_fds()
        try:
            with corepy.open(path, pin_root=pins) as obj:
                for prog, spec in obj.programs.items():
                    spec.autoload = prog not in skipped
                obj.load()
                result.corepy = corepy_facts(obj)
        except Exception as e:  # reported by each test of the object
            result.corepy_error = e
        result.fds_after = _open_fds()
    return result


def _corepy_load_error(bpffs: str, path: Path, programs: list[str]) -> BaseException | None:
    """What corepy raises loading only ``programs`` of ``path`` (None when it loads them)."""
    with PinRoot(bpffs, "corepy") as pins, corepy.open(path, pin_root=pins) as obj:
        for prog, spec in obj.programs.items():
            spec.autoload = prog in programs
        try:
            obj.load()
        except CorepyError as e:
            return e
    return None


@pytest.fixture(scope="module")
def extra_object(tmp_path_factory) -> Path:
    path = build_extra_object(tmp_path_factory)
    assert list(elf_programs(path)) == EXTRA_PROGRAMS
    return path


@pytest.fixture(scope="module")
def parity(load_oracle, bpffs, request):
    cache: dict[Path, Parity] = {}

    def get(name: str | Path) -> Parity:
        """Both loads of fixtures/NAME.bpf.o, of parity_extra, or of the object at a path."""
        if isinstance(name, Path):
            path = name
        elif name == "parity_extra":
            path = request.getfixturevalue("extra_object")
        else:
            path = FIXTURES / f"{name}.bpf.o"
        if path not in cache:
            cache[path] = _load_both(load_oracle, bpffs, path)
        return cache[path]

    return get


def _both(parity, name: str | Path) -> Parity:
    p = parity(name)
    loads = [prog for prog, err in p.corepy_refused.items() if err is None]
    assert not loads, f"libbpf refuses {loads} of {name} here but corepy loads them"
    if p.corepy is None and p.corepy_error is None:
        pytest.skip(f"libbpf 1.1 loads no program of {name} here: " + "; ".join(
            f"{prog}: {why}" for prog, why in p.skipped.items()))
    if p.corepy_error is not None:
        raise p.corepy_error
    return p


@pytest.mark.parametrize(("name", "prog"), CASES, ids=[f"{n}:{p}" for n, p in CASES])
def test_program_equals_libbpf(parity, name, prog):
    _assert_same_program(*_program_pair(parity, name, prog))


def _assert_same_program(want: ProgFacts, got: ProgFacts) -> None:
    info = ("name", "type", "nr_func_info", "nr_line_info", "gpl_compatible", "attach_btf_id")
    assert {k: getattr(got, k) for k in info} == {k: getattr(want, k) for k in info}
    assert got.insns == want.insns, first_difference(want.insns, got.insns)
    # the same instructions went in: tags hash them as loaded (map fds zeroed), per subprogram too
    algorithm = next((a for a in ("sha256", "sha1") if kernel_tag(want.loaded, a) == want.tag), None)
    assert algorithm is not None, "the tag model does not reproduce the kernel's tag of libbpf's load"
    assert got.subprog_tags == want.subprog_tags
    assert got.tag in _tags_libbpf_would_load(want.loaded, algorithm)


def _tags_libbpf_would_load(loaded: bytes, algorithm: str) -> set[str]:
    """Tags of what libbpf 1.1 loaded, and of what libbpf >= 1.2 loads instead: unresolved weak
    kfunc calls, left by 1.1 as a kfunc call with imm 0, are poisoned by 1.2 as a helper call
    2002000000 + the extern's index (any index: the verifier removes the call as dead code)."""
    tags = {kernel_tag(loaded, algorithm)}
    calls = unresolved_weak_kfunc_calls(loaded)
    if len(calls) == 1:
        tags |= {kernel_tag(poison_kfunc_call(loaded, calls[0], k), algorithm) for k in range(64)}
    return tags


@pytest.mark.parametrize(("name", "prog"), CASES, ids=[f"{n}:{p}" for n, p in CASES])
def test_program_func_and_line_info_equal_libbpf(parity, name, prog):
    """The kernel's func_info and line_info records (instruction offsets, BTF type ids,
    file/line string offsets, line and column) are the same."""
    want, got = _program_pair(parity, name, prog)
    assert want.func_info and want.line_info, "libbpf loaded the program without func/line info"
    assert got.func_info == want.func_info
    assert got.line_info == want.line_info


@pytest.mark.parametrize(("name", "prog"), CASES, ids=[f"{n}:{p}" for n, p in CASES])
def test_program_btf_equals_libbpf(parity, name, prog):
    """The object's BTF the program was loaded with is the same blob, byte for byte."""
    want, got = _program_pair(parity, name, prog)
    assert want.btf is not None, "libbpf loaded the program without BTF"
    assert got.btf == want.btf


# libbpf 1.1 bpf_object_load_prog(): when the object has RODATA maps (.rodata, .rodata.*) and the
# kernel has BPF_PROG_BIND_MAP, every loaded program gets each of them bound, so they live as
# long as the program (bpftool reads bpf_metadata_* from them). The kernel appends a bound map to
# the program's used maps unless its code already references it; corepy binds them the same way.
BPF_F_RDONLY_PROG = 1 << 7


@pytest.mark.parametrize(("name", "prog"), [pytest.param(n, p, id=f"{n}:{p}") for n, p in CASES])
def test_program_uses_the_maps_libbpf_does(parity, name, prog):
    """The kernel's used-maps list of the program, by name and in order."""
    want, got = _program_pair(parity, name, prog)
    maps = parity(name).libbpf.maps
    bound = want.maps_used[len(got.maps_used):]
    if want.maps_used[:len(got.maps_used)] != got.maps_used or not all(
            ".rodata" in m and maps[m].flags & BPF_F_RDONLY_PROG for m in bound):
        pytest.fail(f"used maps differ beyond libbpf's bound .rodata maps: libbpf {want.maps_used}, "
                    f"corepy {got.maps_used}")
    assert got.maps_used == want.maps_used, "libbpf binds its .rodata maps to the program, corepy not"


def _program_pair(parity, name: str, prog: str):
    p = _both(parity, name)
    if prog in p.skipped:
        pytest.skip(f"libbpf 1.1 cannot load {prog!r} of {name} here (corepy refuses it too: "
                    f"{type(p.corepy_refused[prog]).__name__}): {p.skipped[prog]}")
    return p.libbpf.programs[prog], p.corepy.programs[prog]


@pytest.mark.parametrize("name", OBJECTS)
def test_maps_equal_libbpf(parity, name):
    _assert_same_maps(_both(parity, name))


def _assert_same_maps(p: Parity) -> None:
    assert p.corepy.maps == p.libbpf.maps
    assert set(p.corepy.programs) == set(p.libbpf.programs)
    assert p.fds_after == p.fds_before, "corepy left file descriptors open after close()"


def test_comparison_sees_a_difference(parity, bpffs):
    """The comparison is not blind: bootstrap with min_duration_ns set before load goes in as
    the same instructions (same tag) but the verifier keeps code that libbpf's load, with
    min_duration_ns = 0 in the frozen .rodata, pruned."""
    want = _both(parity, "bootstrap").libbpf.programs
    with PinRoot(bpffs, "corepy") as pins, corepy.open(FIXTURES / "bootstrap.bpf.o", pin_root=pins) as obj:
        obj.globals.min_duration_ns = 10**8
        obj.load()
        got = corepy_facts(obj).programs
    assert got["handle_exec"].tag == want["handle_exec"].tag
    assert got["handle_exec"].insns != want["handle_exec"].insns
    assert any(ref == ("map", "exec_start") for *_, ref in want["handle_exec"].insns)


CORNER_OBJECTS = sorted(p.name.removesuffix(".bpf.c") for p in CORNER_CASES.glob("*.bpf.c"))


@pytest.fixture(scope="module")
def corner_objects(tmp_path_factory) -> Path:
    return build_corner_objects(tmp_path_factory)


@pytest.mark.parametrize("name", CORNER_OBJECTS)
def test_core_corner_object_equals_libbpf(parity, corner_objects, name):
    """The CO-RE relocation oracle's corner-case objects (tests/oracle/bpf), loaded: every program
    libbpf loads here compares equal as above, the maps too. Some hold relocations or code this
    kernel refuses: corepy must refuse those programs too (checked by _both), and each is named
    in a warning with libbpf's error."""
    p = _both(parity, corner_objects / f"{name}.bpf.o")
    for prog, why in p.skipped.items():
        warnings.warn(f"{name}: libbpf 1.1 cannot load {prog!r} here, nor can corepy: {why}", stacklevel=1)
    for prog, want in p.libbpf.programs.items():
        got = p.corepy.programs[prog]
        _assert_same_program(want, got)
        assert (got.func_info, got.line_info, got.btf) == (want.func_info, want.line_info, want.btf)
        assert got.maps_used == want.maps_used
    _assert_same_maps(p)
