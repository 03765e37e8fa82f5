"""The C dump (vmlinux.h) compiles, reproduces every layout, and matches libbpf's btf_dump."""

from __future__ import annotations

import collections
import functools
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import KERNEL_BTF, MODULES, OTHER_KERNELS, btf_path
from corepy.btf.dump_c import CDumper, dump_c, write_c
from corepy.btf.spec import BTF
from corepy.btf.types import (
    Array, Enum, Enum64, EnumValue, FuncProto, Int, IntEncoding, Member, Param, Ptr, Struct, Type,
    Typedef, Union,
)

CLANG = shutil.which("clang-19") or shutil.which("clang")
BPFTOOL = shutil.which("bpftool") or next((p for p in ("/usr/sbin/bpftool",) if Path(p).exists()), None)
needs_clang = pytest.mark.skipif(CLANG is None, reason="clang is not installed")
needs_bpftool = pytest.mark.skipif(BPFTOOL is None, reason="bpftool (the oracle) is not installed")
needs_kernel_btf = pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no /sys/kernel/btf/vmlinux")


def compile_bpf(tmp_path: Path, header: str, body: str = "int corepy_anchor;\n") -> None:
    """clang -target bpf -c a .c including ``header``; fails the test with clang's errors."""
    (tmp_path / "vmlinux.h").write_text(header)
    src = tmp_path / "use.c"
    src.write_text('#include "vmlinux.h"\n' + body)
    run = subprocess.run([CLANG, "-target", "bpf", "-O2", "-g", "-c", str(src), "-o", str(tmp_path / "use.o")],
                         capture_output=True, text=True)
    assert run.returncode == 0, "header does not compile:\n" + "\n".join(run.stderr.splitlines()[:30])


@functools.cache
def header_of(path: Path) -> tuple[BTF, str]:
    """A kernel BTF and its header, made once per test session (several tests read them)."""
    btf = BTF.from_file(str(path))
    out = io.StringIO()
    write_c(btf, out)
    return btf, out.getvalue()


# --- (1) every kernel's header compiles, with (2) its layouts checked ------------------

@needs_clang
@pytest.mark.parametrize("module", sorted(MODULES))
def test_split_module_header_compiles(module: str, tmp_path: Path) -> None:
    base = BTF.from_file(str(btf_path(MODULES[module])))
    btf = BTF.from_file(str(btf_path(module)), base=base)
    header = dump_c(btf)
    mod_struct = {"veth-6.1.0-56": "veth_priv", "nf_conntrack-6.1.0-56": "nf_conntrack_expect_policy"}[module]
    assert f"struct {mod_struct} {{" in header  # module types are there, with the base's they need
    compile_bpf(tmp_path, header, f"int corepy_size = sizeof(struct {mod_struct});\n")


# --- (2) layouts: sizeof/offsetof of the running kernel's structs ------------------

def layout_asserts(btf: BTF) -> tuple[list[str], int]:
    """_Static_asserts of sizeof and member offsets for every struct/union whose
    name is unique (so the header keeps it unsuffixed), and how many types they cover."""
    tags: collections.Counter[str] = collections.Counter()
    composites: list[Struct | Union] = []
    for t in btf.types():
        if isinstance(t, (Struct, Union, Enum, Enum64)) and t.name:
            tags[t.name] += 1
            if isinstance(t, (Struct, Union)):
                composites.append(t)
    lines, covered = [], 0
    for t in composites:
        if tags[t.name] != 1 or _embeds_va_list(btf, t.id, {}):
            continue
        kw = "struct" if isinstance(t, Struct) else "union"
        lines.append(f'_Static_assert(sizeof({kw} {t.name}) == {t.size}, "sizeof {t.name}");')
        for m in t.members:
            if m.name and m.bitfield_size == 0:
                lines.append(f'_Static_assert(__builtin_offsetof({kw} {t.name}, {m.name}) == {m.bit_offset // 8}, '
                             f'"{t.name}.{m.name}");')
        covered += 1
    return lines, covered


def _embeds_va_list(btf: BTF, type_id: int, memo: dict[int, bool]) -> bool:
    """Whether the type holds a ``__builtin_va_list`` by value: the header leaves that
    compiler built-in to the compiler (as libbpf does), and the BPF target's differs
    in size from the kernel's (8 vs 24 bytes on x86-64), so such layouts cannot match."""
    if type_id in memo:
        return memo[type_id]
    memo[type_id] = False
    t = btf[type_id]
    if isinstance(t, Typedef):
        found = t.name == "__builtin_va_list" or _embeds_va_list(btf, t.type_id, memo)
    elif isinstance(t, (Struct, Union)):
        found = any(_embeds_va_list(btf, m.type_id, memo) for m in t.members)
    elif isinstance(t, Ptr) or not hasattr(t, "type_id"):
        found = False
    else:  # arrays and modifiers
        found = _embeds_va_list(btf, t.type_id, memo)
    memo[type_id] = found
    return found


@needs_clang
@needs_kernel_btf
def test_running_kernel_layouts(tmp_path: Path) -> None:
    btf, header = header_of(KERNEL_BTF)
    lines, covered = layout_asserts(btf)
    assert covered >= 500, covered
    assert sum("offsetof" in line for line in lines) >= 5000
    compile_bpf(tmp_path, header, "\n".join(lines) + "\n")


@needs_clang
@pytest.mark.parametrize("name", OTHER_KERNELS)
def test_other_kernel_headers_compile_with_their_layouts(name: str, tmp_path: Path) -> None:
    btf, header = header_of(btf_path(name))
    lines, covered = layout_asserts(btf)
    assert covered >= 500
    compile_bpf(tmp_path, header, "\n".join(lines) + "\n")


# --- (3) same text as libbpf's btf_dump (bpftool) -------------------------------------

# libbpf 1.1 (bpftool 7.1) predates the enum size attributes newer libbpf emits
# (and corepy follows): without them 1-byte and 8-byte enums get the wrong size.
# corepy also marks packed unions packed (libbpf checks structs only).
_ENUM_MODE = re.compile(r" __attribute__\(\(mode\((byte|word)\)\)\)")
_PACKED = " __attribute__((packed))"


def assert_same_as_libbpf(mine: str, ref: str) -> None:
    """Equal but for corepy's extra layout attributes; never fewer packed than libbpf."""
    assert mine.count(_PACKED) >= ref.count(_PACKED)
    assert _ENUM_MODE.sub("", mine).replace(_PACKED, "") == _ENUM_MODE.sub("", ref).replace(_PACKED, "")


@needs_bpftool
@needs_kernel_btf
@pytest.mark.parametrize("name", ["running", *OTHER_KERNELS])
def test_matches_bpftool(name: str) -> None:
    path = KERNEL_BTF if name == "running" else btf_path(name)
    ref = subprocess.run([BPFTOOL, "btf", "dump", "file", str(path), "format", "c"],
                         capture_output=True, text=True, check=True).stdout
    assert_same_as_libbpf(header_of(path)[1], ref)


# --- C constructs on a clang-built object ------------------------------------------

TRICKY_SOURCE = r"""
typedef unsigned long long u64;
typedef int (*handler_t)(void *ctx, int flags, ...);
struct node;
struct list { struct node *head, *tail; };
struct node { struct list children; struct node *parent; int (*visit[4])(struct node *, const char *); };
struct bits { unsigned a: 3; int b: 5; long: 0; unsigned char c: 2; u64 d: 40; unsigned e: 1; };
struct holes { char a; long b; char c; short d; int e[0]; } __attribute__((aligned(16)));
struct __attribute__((packed)) packed { char a; int b; short c; };
union __attribute__((packed)) packed_union { long long wide; char bytes[18]; };
struct holds_packed_union { char tag; union packed_union u; };
struct outer {
    int kind;
    union { struct { int x, y; } point; long raw; };
    struct { enum { RED, GREEN = 1000 } colour; const volatile char *name; } *anon_ptr;
    enum big { BIG = 0x100000000ULL } big;
    __int128 wide; unsigned __int128 uwide;
    handler_t handlers[2];
    void (*(*signal_fn)(int))(int);
    char matrix[3][4];
    const int *const restrictless;
    struct packed p;
};
typedef struct { int v; } anon_typedef_t;
enum { TOP_LEVEL_CONST = 7 };
struct holds_packed_union g_pu; struct outer g_outer; struct bits g_bits; struct holes g_holes; anon_typedef_t g_anon; struct node g_node; int g_const = TOP_LEVEL_CONST;
"""


def object_btf(tmp_path: Path, source: str) -> BTF:
    src = tmp_path / "obj.c"
    src.write_text(source)
    obj = tmp_path / "obj.o"
    subprocess.run([CLANG, "-g", "-O2", "-target", "bpf", "-c", str(src), "-o", str(obj)], check=True)
    return BTF.from_file(str(obj))


@needs_clang
def test_tricky_constructs_round_trip_layouts(tmp_path: Path) -> None:
    btf = object_btf(tmp_path, TRICKY_SOURCE)
    header = dump_c(btf)
    for text in ("__attribute__((packed))", "\tchar bytes[18];\n} __attribute__((packed));", "long: 56;", ": 40;", "__int128 wide;", "(*visit[4])(",
                 "...);", "void (* (*signal_fn)(int))(int);", "char matrix[3][4];",
                 "typedef struct {\n\tint v;\n} anon_typedef_t;", "struct node;\n"):
        assert text in header, text
    lines, covered = layout_asserts(btf)
    assert covered >= 8
    compile_bpf(tmp_path, header, "\n".join(lines) + "\n")
    if BPFTOOL:
        ref = subprocess.run([BPFTOOL, "btf", "dump", "file", str(tmp_path / "obj.o"), "format", "c"],
                             capture_output=True, text=True, check=True).stdout
        assert_same_as_libbpf(header, ref)


def test_hand_built_types_and_name_conflicts() -> None:
    """A BTF assembled by hand: duplicate struct names get ___N, enumerators too."""
    int_t = Int(1, "int", 4, IntEncoding.SIGNED, 0, 32)
    types: list[Type] = [
        int_t,
        Struct(2, "pair", 8, (Member("a", 1, 0), Member("b", 1, 32))),
        Struct(3, "pair", 4, (Member("only", 1, 0),)),
        Enum(4, "e1", 4, (EnumValue("X", 1),)),
        Enum(5, "e2", 4, (EnumValue("X", 2),)),
        Ptr(6, 7),
        FuncProto(7, 1, (Param("p", 2), Param("", 0))),
        Typedef(8, "cb_t", 6),
        Array(9, 8, 1, 3),
        Struct(10, "holder", 24, (Member("cbs", 9, 0),)),
        Enum(11, "", 4, (EnumValue("TOP", 7),)),  # unreferenced anonymous enum: global constants
        Enum(12, "", 1, (EnumValue("IN_A", 1),)),
        Struct(13, "tiny", 1, (Member("e", 12, 0),)),
    ]
    header = dump_c(_ListBTF(types))
    assert "struct pair {\n\tint a;\n\tint b;\n};" in header
    assert "struct pair___2 {\n\tint only;\n};" in header
    assert "\tX___2 = 2," in header
    assert "typedef int (*cb_t)(struct pair p, ...);" in header
    assert "struct holder {\n\tcb_t cbs[3];\n};" in header
    assert "enum {\n\tTOP = 7,\n};" in header
    assert "struct tiny {\n\tenum {\n\t\tIN_A = 1,\n\t} __attribute__((mode(byte))) e;\n};" in header
    assert CDumper(_ListBTF(types)).type_decl(9, "arr") == "cb_t arr[3]"


class _ListBTF:
    """The minimum of the BTF container the dumper reads, over a list of types."""

    source = "<hand-built>"
    pointer_size = 8

    def __init__(self, types: list[Type]) -> None:
        from corepy.btf.types import VOID
        self._types = [VOID, *types]

    def __len__(self) -> int:
        return len(self._types)

    def __getitem__(self, type_id: int) -> Type:
        return self._types[type_id]


@needs_kernel_btf
def test_cli_c_format_is_the_header(tmp_path: Path) -> None:
    import sys

    from conftest import ROOT
    run = subprocess.run([sys.executable, "-m", "corepy", "btf", "dump", str(KERNEL_BTF), "--format", "c"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("#ifndef __VMLINUX_H__\n") and run.stdout.endswith("#endif /* __VMLINUX_H__ */\n")
    assert run.stdout == header_of(KERNEL_BTF)[1]


def test_absurd_nesting_is_a_btf_error() -> None:
    """A chain of 5000 nested structs (valid BTF, hostile input) fails cleanly."""
    from corepy.errors import BTFError

    int_t = Int(1, "int", 4, IntEncoding.SIGNED, 0, 32)
    # s2 holds s3 which holds s4 ... which holds the int: ordering s2 walks the whole chain
    chain: list[Type] = [Struct(i, f"s{i}", 4, (Member("m", i + 1 if i < 5001 else 1, 0),)) for i in range(2, 5002)]
    chain.insert(0, int_t)
    with pytest.raises(BTFError, match="nests too deeply"):
        dump_c(_ListBTF(chain))
