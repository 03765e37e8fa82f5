"""Sanitising (libbpf bpf_object__sanitize_btf) and DATASEC fix-ups (btf_fixup_datasec):
each rewrite on hand-built types, the static linker as the oracle for section sizes and
offsets, and the kernel's BPF_BTF_LOAD accepting the results."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from conftest import requires_root
from corepy.btf.sanitize import BTFFeatures, fixup_datasecs, needs_sanitizing, sanitize
from corepy.btf.spec import BTF
from corepy.btf.types import (
    Const, Datasec, DeclTag, Enum, Enum64, EnumValue, Float, Func, FuncProto, Int,
    IntEncoding, Linkage, Member, Param, Ptr, Struct, Type, Typedef, TypeTag, Union,
    Var, VarSecinfo,
)
from corepy.btf.writer import write_btf
from corepy.errors import BTFError, SyscallError

CLANG = shutil.which("clang-19") or shutil.which("clang")
BPFTOOL = shutil.which("bpftool") or ("/usr/sbin/bpftool" if Path("/usr/sbin/bpftool").exists() else None)
NONE_SUPPORTED = {f.name: False for f in fields(BTFFeatures)}

INT = Int(1, "int", 4, IntEncoding.SIGNED, 0, 32)
HAND_BUILT: list[Type] = [
    INT,
    Var(2, "counter", 1, Linkage.GLOBAL),
    Var(3, "hidden", 1, Linkage.STATIC),
    Datasec(4, ".data.cfg", 0, (VarSecinfo(3, 8, 4), VarSecinfo(2, 0, 4))),
    FuncProto(5, 1, (Param("ctx", 7), Param("n", 1))),
    Func(6, "prog", 5, Linkage.GLOBAL),
    Ptr(7, 0),
    Float(8, "double", 8),
    DeclTag(9, "kfunc", 6, -1),
    TypeTag(10, "user", 1),
    Enum(11, "sign", 4, (EnumValue("MINUS", -2), EnumValue("PLUS", 2)), signed=True),
    Enum64(12, "wide", 8, (EnumValue("BIG", 1 << 40), EnumValue("SMALL", 1))),
    Datasec(13, "?.maybe", 4, (VarSecinfo(2, 0, 4),)),
]


def test_all_features_is_identity() -> None:
    assert not needs_sanitizing(BTFFeatures())
    assert sanitize(HAND_BUILT, BTFFeatures()) == HAND_BUILT


def test_features_from_mapping_and_object() -> None:
    assert BTFFeatures.of({"has_float": False}) == BTFFeatures(has_float=False)
    assert needs_sanitizing({"has_enum64": False})

    class Probed:  # e.g. the kernel feature probes' result object
        has_func = False
        other = "ignored"

    assert BTFFeatures.of(Probed()) == BTFFeatures(has_func=False)


def rewritten(feature: str) -> dict[int, Type]:
    """The types a single missing feature changes, by id."""
    out = sanitize(HAND_BUILT, {feature: False})
    return {t.id: t for t in out if t.id > len(HAND_BUILT) or t != HAND_BUILT[t.id - 1]}


def test_without_datasec() -> None:
    got = rewritten("has_datasec")
    assert got == {
        2: Int(2, "counter", 1, IntEncoding.NONE, 0, 8),
        3: Int(3, "hidden", 1, IntEncoding.NONE, 0, 8),
        4: Struct(4, "_data_cfg", 0, (Member("hidden", 3, 64), Member("counter", 2, 0))),
        13: Struct(13, "__maybe", 4, (Member("counter", 2, 0),)),
    }
    assert got[4].name_off == -1  # renamed: the writer must intern the new name


def test_without_qmark_datasec_only_renames_it() -> None:
    assert rewritten("has_qmark_datasec") == {13: Datasec(13, "_.maybe", 4, (VarSecinfo(2, 0, 4),))}


def test_without_func() -> None:
    assert rewritten("has_func") == {
        5: Enum(5, "", 4, (EnumValue("ctx", 7), EnumValue("n", 1))),
        6: Typedef(6, "prog", 5),
    }


def test_without_global_func() -> None:
    assert rewritten("has_func_global") == {6: Func(6, "prog", 5, Linkage.STATIC)}


def test_without_float() -> None:
    got = rewritten("has_float")
    assert got == {8: Struct(8, "", 8, (), name_off=0)}


def test_without_decl_tag() -> None:
    assert rewritten("has_decl_tag") == {9: Int(9, "kfunc", 1, IntEncoding.NONE, 0, 8)}


def test_without_type_tag() -> None:
    assert rewritten("has_type_tag") == {10: Const(10, 1, "", name_off=0)}


def test_without_enum64() -> None:
    got = rewritten("has_enum64")
    placeholder = len(HAND_BUILT) + 1
    assert got == {
        11: Enum(11, "sign", 4, (EnumValue("MINUS", 2**32 - 2), EnumValue("PLUS", 2))),  # same bits, unsigned
        12: Union(12, "wide", 8, (Member("BIG", placeholder, 0), Member("SMALL", placeholder, 0))),
        placeholder: Int(placeholder, "enum64_placeholder", 1, IntEncoding.NONE, 0, 8),
    }


def test_precedence_follows_libbpf() -> None:
    """Without func and global func, a FUNC becomes a TYPEDEF (the first rule wins)."""
    out = {t.id: t for t in sanitize(HAND_BUILT, NONE_SUPPORTED)}
    assert isinstance(out[6], Typedef) and isinstance(out[4], Struct) and isinstance(out[13], Struct)


# --- DATASEC fix-ups ---------------------------------------------------------------------

def test_fixup_sets_size_offsets_sorts_and_hides() -> None:
    types = [INT, Var(2, "b", 1, Linkage.GLOBAL), Var(3, "a", 1, Linkage.GLOBAL), Var(4, "s", 1, Linkage.STATIC),
             Datasec(5, ".data", 0, (VarSecinfo(2, 0, 4), VarSecinfo(3, 0, 4), VarSecinfo(4, 12, 4))),
             Datasec(6, ".kconfig", 0, (VarSecinfo(2, 4, 4), VarSecinfo(3, 0, 4)))]
    out = fixup_datasecs(types, {".data": 16}, {"a": 0, "b": 4}, hidden={"b"})
    assert out[4] == Datasec(5, ".data", 16, (VarSecinfo(3, 0, 4), VarSecinfo(2, 4, 4), VarSecinfo(4, 12, 4)))
    assert out[1] == Var(2, "b", 1, Linkage.STATIC)  # hidden global -> static
    assert out[2] == types[2]
    assert out[5] == Datasec(6, ".kconfig", 0, (VarSecinfo(3, 0, 4), VarSecinfo(2, 4, 4)))  # only sorted


def test_fixup_errors_name_what_is_missing() -> None:
    types = [INT, Var(2, "x", 1, Linkage.GLOBAL), Datasec(3, ".bss", 0, (VarSecinfo(2, 0, 4),))]
    with pytest.raises(BTFError, match=r"'\.bss'.*no size"):
        fixup_datasecs(types, {}, {"x": 0})
    with pytest.raises(BTFError, match="no ELF symbol for VAR 'x'"):
        fixup_datasecs(types, {".bss": 4}, {})
    with pytest.raises(BTFError, match="not a VAR"):
        fixup_datasecs([INT, Datasec(2, ".bss", 4, (VarSecinfo(1, 0, 4),))], {}, {})


# --- a clang-built object: the static linker and the kernel as oracles -------------------

OBJECT_SOURCE = r"""
enum big { NEG = -5000000000LL, POS = 5000000000LL };
struct tagged { int a; } __attribute__((btf_decl_tag("tag")));
int counter = 3;
__attribute__((visibility("hidden"))) long hidden_total = 9;
static volatile int local_state;
const volatile int config = 7;
char buffer[40];
struct tagged in_bss;
enum big e64;
float ratio = 1.5f;
int __attribute__((btf_type_tag("user"))) *user_ptr;
__attribute__((section(".data.custom"))) int custom_value = 5;
static __attribute__((noinline)) int helper(int x __attribute__((btf_decl_tag("param")))) { return x + local_state; }
__attribute__((noinline)) int global_sub(int y) { return y * 2; }
__attribute__((section("tp/syscalls/sys_enter_getpid"), used)) int prog(void *ctx)
{ return helper(counter) + global_sub(config) + e64 + in_bss.a + buffer[3] + (int)sizeof(ratio) + *user_ptr
         + custom_value + hidden_total; }
char _license[] __attribute__((section("license"), used)) = "GPL";
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if CLANG is None:
        pytest.skip("clang is not installed")
    tmp = tmp_path_factory.mktemp("sanitize")
    (tmp / "obj.c").write_text(OBJECT_SOURCE)
    subprocess.run([CLANG, "-g", "-O2", "-target", "bpf", "-c", str(tmp / "obj.c"), "-o", str(tmp / "obj.o")],
                   check=True)
    return tmp / "obj.o"


def elf_inputs(path: Path) -> tuple[dict[str, int], dict[str, int], set[str]]:
    """Section sizes, global object symbol values, and hidden symbol names, read with pyelftools."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        sizes = {s.name: s["sh_size"] for s in elf.iter_sections()}
        offsets, hidden = {}, set()
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            if sym["st_info"]["type"] == "STT_OBJECT" and sym["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK"):
                offsets[sym.name] = sym["st_value"]
                if sym["st_other"]["visibility"] in ("STV_HIDDEN", "STV_INTERNAL"):
                    hidden.add(sym.name)
    return sizes, offsets, hidden


def fixed_types(obj: Path) -> list[Type]:
    return fixup_datasecs(list(BTF.from_file(str(obj)).types()), *elf_inputs(obj))


def datasec_layouts(types: list[Type]) -> dict[str, tuple[int, list[tuple[str, int, int]]]]:
    by_id = {t.id: t for t in types}
    return {t.name: (t.size, sorted((by_id[v.type_id].name, v.offset, v.size) for v in t.vars))
            for t in types if isinstance(t, Datasec)}


@pytest.mark.skipif(BPFTOOL is None, reason="bpftool (its static linker is the oracle) is not installed")
def test_fixup_matches_the_static_linker(compiled: Path, tmp_path: Path) -> None:
    """``bpftool gen object`` (libbpf's linker) fills DATASEC sizes and offsets the same way."""
    raw = list(BTF.from_file(str(compiled)).types())
    assert any(isinstance(t, Datasec) and t.size == 0 for t in raw)  # clang left them to the loader
    linked = tmp_path / "linked.o"
    subprocess.run([BPFTOOL, "gen", "object", str(linked), str(compiled)], check=True, capture_output=True)
    mine = datasec_layouts(fixed_types(compiled))
    assert set(mine) >= {".data", ".bss", ".rodata", ".data.custom", "license"}
    assert mine == datasec_layouts(list(BTF.from_file(str(linked)).types()))
    by_name = {t.name: t for t in fixed_types(compiled) if isinstance(t, Var)}
    assert by_name["hidden_total"].linkage == Linkage.STATIC and by_name["counter"].linkage == Linkage.GLOBAL


def test_sanitized_object_round_trips_through_the_parser(compiled: Path) -> None:
    types = sanitize(fixed_types(compiled), NONE_SUPPORTED)
    kinds = {type(t) for t in types}
    assert not kinds & {Var, Datasec, Float, DeclTag, TypeTag, Enum64, FuncProto, Func}
    parsed = list(BTF.from_bytes(write_btf(types)).types())
    assert [_without_offsets(t) for t in parsed] == [_without_offsets(t) for t in types]


@requires_root
@pytest.mark.parametrize("features", ["all", "none"], ids=["as-is", "fully-sanitized"])
def test_kernel_loads_the_result(compiled: Path, features: str) -> None:
    from corepy.syscalls.load import btf_load

    raw = list(BTF.from_file(str(compiled)).types())
    with pytest.raises(SyscallError):  # control: DATASEC size 0 is refused
        btf_load(write_btf(raw)).close()
    types = fixed_types(compiled)
    if features == "none":
        types = sanitize(types, NONE_SUPPORTED)
    fd = btf_load(write_btf(types))
    try:
        assert fd.fileno() >= 0
    finally:
        fd.close()


# --- helpers -------------------------------------------------------------------------------

def _without_offsets(t: Type) -> Type:
    from dataclasses import replace

    t = replace(t, name_off=-1)
    for attr in ("members", "values", "params"):
        items = getattr(t, attr, None)
        if items is not None:
            t = replace(t, **{attr: tuple(replace(i, name_off=-1) for i in items)})
    return t
