"""`corepy explain` and `corepy check`: the shipped commands, run as a user runs them, checked
against libbpf's own account of the same relocations and against the guard semantics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BTF_DIR, KERNEL_BTF, btf_path, fixture_obj
from oracle.libbpf_log import build_corner_objects, build_oracle, run_libbpf

pytestmark = pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no /sys/kernel/btf/vmlinux")


def corepy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "corepy", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def oracle(tmp_path_factory) -> Path:
    return build_oracle(tmp_path_factory)


@pytest.fixture(scope="module")
def corner(tmp_path_factory) -> Path:
    return build_corner_objects(tmp_path_factory)


@pytest.mark.parametrize("target", ["running", "vmlinux-5.10.0-32"])
@pytest.mark.parametrize("which", ["core_zoo", "core_tricky", "core_order"])
def test_explain_json_agrees_with_libbpf_log(oracle, corner, which, target):
    obj = fixture_obj(which) if which == "core_zoo" else corner / f"{which}.bpf.o"
    args = ["explain", obj, "--json"] + ([] if target == "running" else ["--btf", btf_path(target)])
    proc = corepy(*args)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    libbpf = run_libbpf(oracle, obj, target)
    assert len(rows) == len(libbpf)
    for row in rows:
        want = libbpf[(row["program"], row["relo"])]
        assert want.local == f"<{row['kind']}> {row['local']}"
        assert row["poisoned"] == bool(want.poisoned), row
        if want.poisoned:
            assert min(want.poisoned) == row["insn"]
        for insn, what, old, new in want.patched:
            assert insn == row["insn"]
            assert (row["mem_sz"] if what == "mem_sz" else [row["old"], row["new"]]) == [old, new], row
        if not any(what == "mem_sz" for _, what, _, _ in want.patched):
            assert row["mem_sz"] is None, row
        assert isinstance(row["old"], int) and isinstance(row["new"], int)
        assert (row["target"] is None) == (not any(m for m, _ in want.candidates)), row


def test_explain_text_names_poisoned_relocations_and_why():
    proc = corepy("explain", fixture_obj("core_zoo"), "-v")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "prog 'poisoned' (?raw_tp/sys_enter)" in out
    assert "POISONED" in out and "no field 'corepy_missing'" in out
    assert "cand    [" in out  # -v lists candidates


def test_check_matrix_guarded_poisons_pass(tmp_path):
    kernels = [KERNEL_BTF] + [BTF_DIR / f"{k}.btf.xz" for k in ("vmlinux-5.10.0-32", "vmlinux-6.1.0-56-arm64")]
    proc = corepy("check", fixture_obj("core_zoo"), "--btf", *kernels, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert all(k["ok"] and k["error"] is None for k in report["kernels"].values())
    states = {(r["program"], r["kind"], r["targets"]["vmlinux-5.10.0-32"]["state"]) for r in report["relocations"]}
    assert ("field_exists", "byte_off", "guarded") in states
    assert ("enumval_value", "enumval_value", "guarded") in states
    assert ("field_exists", "field_exists", "absent") in states
    assert not any(r["program"] == "poisoned" for r in report["relocations"])  # autoload off


def test_check_fails_on_unguarded_poison():
    proc = corepy("check", fixture_obj("core_zoo"), "--all", "--btf", KERNEL_BTF)
    assert proc.returncode == 1
    assert "prog 'poisoned' insn #1 relo #0: POISON" in proc.stdout
    assert "poisoned unguarded" in proc.stdout


def test_check_reports_a_relocation_libbpf_refuses(corner):
    """irq_info.irq is ambiguous on 5.10 (libbpf: field offset ambiguity), fine here."""
    obj = corner / "core_ambiguous.bpf.o"
    proc = corepy("check", obj, "--btf", KERNEL_BTF, BTF_DIR / "vmlinux-5.10.0-32.btf.xz")
    assert proc.returncode == 1
    assert "vmlinux: ok" in proc.stdout
    assert "vmlinux-5.10.0-32: FAILS" in proc.stdout and "ambiguity" in proc.stdout


def test_check_and_explain_bad_input_exit_1_with_a_message(tmp_path):
    bogus = tmp_path / "x.bpf.o"
    bogus.write_bytes(b"\x7fELF garbage")
    for args in (["explain", bogus], ["check", bogus, "--btf", KERNEL_BTF],
                 ["explain", fixture_obj("core_zoo"), "--btf", tmp_path / "missing.btf"]):
        proc = corepy(*args)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith(f"corepy {args[0]}: ")
