"""The raw dump is bpftool's ``format raw``, line for line (bpftool as the oracle)."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import KERNEL_BTF, MODULES, OTHER_KERNELS, ROOT, btf_path
from corepy.btf.dump_raw import format_type, write_raw
from corepy.btf.spec import BTF
from corepy.btf.types import Datasec, Enum64, EnumValue, Func, Linkage, Var, VarSecinfo

BPFTOOL = shutil.which("bpftool") or next((p for p in ("/usr/sbin/bpftool", "/sbin/bpftool") if Path(p).exists()), None)
CLANG = shutil.which("clang-19") or shutil.which("clang")
needs_bpftool = pytest.mark.skipif(BPFTOOL is None, reason="bpftool (the oracle) is not installed")


def bpftool_raw(path: Path, base: Path | None = None) -> str:
    cmd = [BPFTOOL, "btf", "dump", "file", str(path), "format", "raw"]
    if base is not None:
        cmd[1:1] = ["-B", str(base)]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def corepy_raw(path: Path, base: Path | None = None) -> str:
    out = io.StringIO()
    write_raw(BTF.from_file(str(path), base=BTF.from_file(str(base)) if base else None), out)
    return out.getvalue()


def assert_same(mine: str, ref: str) -> None:
    if mine == ref:
        return
    a, b = mine.splitlines(), ref.splitlines()
    first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    pytest.fail(f"first difference at line {first + 1}:\n corepy:  {a[first:first + 1]}\n bpftool: "
                f"{b[first:first + 1]}\n({len(a)} vs {len(b)} lines)")


@needs_bpftool
@pytest.mark.parametrize("name", OTHER_KERNELS)
def test_other_kernels_match_bpftool(name: str) -> None:
    path = btf_path(name)
    assert_same(corepy_raw(path), bpftool_raw(path))


@needs_bpftool
@pytest.mark.parametrize("module", sorted(MODULES))
def test_split_module_btf_matches_bpftool(module: str) -> None:
    path, base = btf_path(module), btf_path(MODULES[module])
    mine = corepy_raw(path, base)
    assert mine.startswith(f"[{len(BTF.from_file(str(base)))}] ")  # split ids continue the base's
    assert_same(mine, bpftool_raw(path, base))


@needs_bpftool
@pytest.mark.skipif(not KERNEL_BTF.exists(), reason="the running kernel has no /sys/kernel/btf/vmlinux")
def test_running_kernel_matches_bpftool() -> None:
    assert_same(corepy_raw(KERNEL_BTF), bpftool_raw(KERNEL_BTF))


OBJECT_SOURCE = r"""
typedef unsigned long long u64;
enum big_signed { NEG = -5000000000LL, POS = 5000000000LL };
enum big_unsigned { HUGE = 0xf000000000000000ULL };
enum small_signed { MINUS_ONE = -1, ONE = 1 };
struct bits { int a: 3; unsigned b: 13; u64 c; } __attribute__((btf_decl_tag("tagged")));
int counter = 3;
static volatile int hidden;
const volatile int config = 7;
struct bits in_bss;
enum big_signed e1; enum big_unsigned e2; enum small_signed e3;
float ratio = 1.5f;
int __attribute__((btf_type_tag("user"))) *user_ptr;
extern int some_extern(int) __attribute__((weak));
static __attribute__((noinline)) int helper(int x __attribute__((btf_decl_tag("param")))) { return x + hidden; }
__attribute__((section("tp/syscalls/sys_enter_getpid"), used)) int prog(void *ctx)
{ return helper(counter) + e1 + e2 + e3 + in_bss.a + (int)sizeof(ratio) + config + *user_ptr; }
char _license[] __attribute__((section("license"), used)) = "GPL";
"""


@needs_bpftool
@pytest.mark.skipif(CLANG is None, reason="clang is not installed")
def test_compiled_object_matches_bpftool(tmp_path: Path) -> None:
    """A clang-built object exercises kinds kernel BTF lacks: VAR, global FUNC,
    signed ENUM/ENUM64, FLOAT, DECL_TAG on members/params, TYPE_TAG."""
    src = tmp_path / "kinds.bpf.c"
    src.write_text(OBJECT_SOURCE)
    obj = tmp_path / "kinds.bpf.o"
    subprocess.run([CLANG, "-g", "-O2", "-target", "bpf", "-c", str(src), "-o", str(obj)], check=True)
    ref = bpftool_raw(obj)
    for needle in ("VAR 'counter'", "DATASEC '.data'", "linkage=global", "ENUM64 'big_signed' encoding=SIGNED",
                   "val=-5000000000LL", "'MINUS_ONE' val=-1", "FLOAT 'float'", "component_idx=0", "TYPE_TAG 'user'"):
        assert needle in ref, needle  # the object really covers these kinds
    assert_same(corepy_raw(obj), ref)


def test_hand_built_types() -> None:
    """Formatting without a parser, incl. values bpftool prints as unsigned."""
    e = Enum64(5, "", 8, (EnumValue("A", 2**64 - 1), EnumValue("B", 0)))
    assert format_type(e) == "[5] ENUM64 '(anon)' encoding=UNSIGNED size=8 vlen=2\n\t'A' val=18446744073709551615ULL\n\t'B' val=0ULL"
    assert format_type(Func(7, "f", 3, Linkage.EXTERN)) == "[7] FUNC 'f' type_id=3 linkage=extern"
    assert format_type(Var(8, "v", 1, Linkage.GLOBAL)) == "[8] VAR 'v' type_id=1, linkage=global"
    # without a BTF, a DATASEC entry cannot name its VAR, as bpftool with an out-of-range id
    assert format_type(Datasec(9, ".bss", 4, (VarSecinfo(8, 0, 4),))) == \
        "[9] DATASEC '.bss' size=4 vlen=1\n\ttype_id=8 offset=0 size=4"


@needs_bpftool
def test_cli_split_dump() -> None:
    path, base = btf_path("veth-6.1.0-56"), btf_path("vmlinux-6.1.0-56")
    run = subprocess.run([sys.executable, "-m", "corepy", "btf", "dump", str(path), "--base", str(base)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert_same(run.stdout, bpftool_raw(path, base))


def test_cli_bad_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.btf"
    bad.write_bytes(b"\x9f\xeb\x01\x00" + b"\xff" * 20)
    run = subprocess.run([sys.executable, "-m", "corepy", "btf", "dump", str(bad)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr and "garbage.btf" in run.stderr
