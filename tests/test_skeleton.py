"""``corepy skeleton``: generated modules compile, are deterministic, decode records exactly as
the codec does, and drive real objects on the real kernel (globals set before load, effects
seen through the typed attributes, nothing left open)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import math
import os
import py_compile
import random
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES, ROOT, btf_blob, requires_root
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corepy.btf.codec import Codec
from corepy.btf.spec import BTF
from corepy.btf.types import Array, Enum, Enum64, EnumValue, Float, Int, IntEncoding, Member, Ptr, Struct, Union
from corepy.cli import main as cli_main
from corepy.errors import BTFError, CorepyError, ObjectError

CLANG = shutil.which("clang-19") or shutil.which("clang")
PYTHON = sys.executable
ALL_FIXTURES = sorted(p.name for p in FIXTURES.glob("*.bpf.o"))


def generate(tmp_path: Path, obj: Path, *options: str, out: str | None = None) -> Path:
    """Run ``corepy skeleton`` in-process; the module written into ``tmp_path``."""
    path = tmp_path / (out or f"{obj.name.split('.')[0]}_skel.py")
    assert cli_main(["skeleton", str(obj), "-o", str(path), *options]) == 0
    return path


def load_module(path: Path) -> Any:
    name = f"skel_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while decorating
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def exec_module(text: str) -> Any:
    """Generated module text run as a module (dataclasses look up the module while decorating)."""
    name = f"records_{uuid.uuid4().hex}"
    sys.modules[name] = module = type(sys)(name)
    try:
        exec(compile(text, "<generated>", "exec"), module.__dict__)  # noqa: S102 - our generated code
    finally:
        del sys.modules[name]
    return module


def kernel_ids(kind: str) -> set[int]:
    from corepy.syscalls.objects import get_next_id

    ids: set[int] = set()
    current: int | None = 0
    while (current := get_next_id(kind, current)) is not None:  # type: ignore[arg-type]
        ids.add(current)
    return ids


def live_ids(skel: Any) -> dict[str, set[int]]:
    """Kernel ids of the skeleton's programs, maps and links."""
    obj = skel.object
    return {"prog": {p.id for p in obj.programs.values()}, "map": {m.id for m in obj.maps.values()},
            "link": {link.info().id for link in obj.links.values()}}


def assert_released(ids: dict[str, set[int]]) -> None:
    """None of ``ids`` is still in the kernel (freeing can lag the last close a little)."""
    deadline = time.monotonic() + 3
    while left := {kind: found & kernel_ids(kind) for kind, found in ids.items() if found & kernel_ids(kind)}:
        assert time.monotonic() < deadline, f"still in the kernel after close(): {left}"
        time.sleep(0.02)


# --- a BPF object with every record shape ---------------------------------------------

RECORDS_SRC = r"""
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

enum color { RED, GREEN = 5, NEG = -1 };
struct inner { __u16 a; __u8 b; __u32 c; };
union number { __u32 u; float f; __u8 bytes[4]; __u16 halves[2]; };
struct flags { unsigned int lo : 3; int mid : 7; unsigned int hi : 20; _Bool on : 1; enum color col : 4; };
struct everything {
	char tag[5];
	_Bool ok;
	__s8 s8;
	__u8 u8;
	__s16 s16;
	__u64 u64;
	__s64 s64;
	enum color color;
	struct inner inr;
	struct inner pair[2];
	union number num;
	struct flags fl;
	__u32 grid[2][3];
	char names[2][4];
	__u8 raw[3];
	float f;
	double d;
	void *ptr;
	unsigned __int128 big;
	__int128 sbig;
	struct { int x; int y; } point;
	union { __u32 as_u32; __u16 as_u16[2]; };
	struct inner grid2[2][2];
	__u8 flex[];
};
struct key { __u32 id; char name[12]; };

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct key);
	__type(value, struct inner);
} things SEC(".maps");

struct inner origin = { .a = 1, .b = 2, .c = 3 };
__u32 from = 4, _private = 5, __mangled = 6;  /* a Python keyword; leading underscores */
const volatile union number knob = { .u = 7 };
__u32 calls;
struct everything *unused_everything __attribute__((unused));

SEC("?tp/syscalls/sys_enter_getppid")
int not_loaded(void *ctx)
{
	return 0;
}

SEC("tp/syscalls/sys_enter_getppid")
int touch(void *ctx)
{
	struct key k = { .id = knob.u };

	__builtin_memcpy(k.name, "touched", 8);
	bpf_map_update_elem(&things, &k, &origin, BPF_ANY);
	calls++;
	return 0;
}
"""


def build(name: str, source: str) -> Path:
    """``source`` compiled with clang -g -O2 -target bpf (cached by content)."""
    from test_object_support import build_bpf

    return build_bpf(name, source)


@pytest.fixture(scope="module")
def records_obj() -> Path:
    return build("skeleton-records", RECORDS_SRC)


@pytest.fixture(scope="module")
def records(records_obj: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("records")
    return load_module(generate(tmp, records_obj, "--types", "everything,struct flags,enum color", "--name", "records"))


# --- generation -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_every_fixture_generates_a_deterministic_compilable_module(name: str, tmp_path: Path) -> None:
    obj = FIXTURES / name
    sha = hashlib.sha256(obj.read_bytes()).hexdigest()
    for mode in ("--path", "--embed"):
        first = generate(tmp_path, obj, mode, out="a.py")
        again = generate(tmp_path, obj, mode, out="b.py")
        assert first.read_bytes() == again.read_bytes()
        text = first.read_text()
        assert text.startswith(f"# Generated by `corepy skeleton` from {name}: DO NOT EDIT.\n# object sha256: {sha}\n")
        py_compile.compile(str(first), cfile=str(tmp_path / "a.pyc"), doraise=True)
        module = load_module(first)
        skel_cls = next(getattr(module, n) for n in module.__all__ if n.endswith("Skeleton"))
        assert skel_cls.OBJECT_SHA256 == sha
        with skel_cls.open() as skel:  # parse only: no kernel needed
            assert sorted(skel.progs) == sorted(skel.object.spec.programs)
            assert len(list(skel.maps)) == len(skel.object.spec.maps)
            for prog in skel.progs:
                assert getattr(skel.progs, prog) is skel.object.programs[prog]
                assert getattr(skel.links, prog) is None


BPFTOOL = shutil.which("bpftool") or ("/usr/sbin/bpftool" if Path("/usr/sbin/bpftool").exists() else None)


def bpftool_skeleton(obj: Path, name: str) -> dict[str, list[str]]:
    """What ``bpftool gen skeleton`` names: maps, progs, links, and the members of each data
    section struct (``rodata``, ``bss``, ``data_foo``, ``kconfig``...), in its order."""
    r = subprocess.run([BPFTOOL, "gen", "skeleton", str(obj), "name", name], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"bpftool gen skeleton refused {obj.name}: {r.stderr.strip()[:200]}")
    out: dict[str, list[str]] = {}
    for body, attr in re.findall(r"\n\tstruct (?:\w+ )?\{\n(.*?)\n\t\} (\w+);", r.stdout, re.S):
        out[attr] = re.findall(r"\*(\w+);", body)
    for section, body, attr in re.findall(rf"\n\tstruct {name}__(\w+) \{{\n(.*?)\t\}} \*(\w+);", r.stdout, re.S):
        assert section == attr
        out[attr] = [m for m in re.findall(r"(\w+)(?:\[\d+\])*;", body) if not re.fullmatch(r"__pad\d+", m)]
    return out


@pytest.mark.skipif(BPFTOOL is None, reason="bpftool (the oracle) is not installed")
@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_attributes_are_the_ones_bpftool_gen_skeleton_names(name: str, tmp_path: Path) -> None:
    obj = FIXTURES / name
    stem = name.split(".")[0]
    theirs = bpftool_skeleton(obj, stem)
    module = load_module(generate(tmp_path, obj))
    skel_cls = next(getattr(module, n) for n in module.__all__ if n.endswith("Skeleton"))
    mine = {attr: list(ns(None)) for attr, ns in skel_cls._NAMESPACES.items()}
    assert mine == theirs


def test_stdout_matches_file_and_path_is_relative_to_the_module(tmp_path: Path) -> None:
    sub = tmp_path / "pkg"
    sub.mkdir()
    obj = tmp_path / "minimal.bpf.o"
    shutil.copy(FIXTURES / "minimal.bpf.o", obj)
    path = generate(sub, obj)
    assert "OBJECT_PATH = '../minimal.bpf.o'" in path.read_text()
    r = subprocess.run([PYTHON, "-m", "corepy", "skeleton", "minimal.bpf.o"], cwd=tmp_path,
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout == path.read_text().replace("'../minimal.bpf.o'", "'minimal.bpf.o'")
    module = load_module(path)
    with module.MinimalSkeleton.open() as skel:
        assert skel.object.path == str(obj)


def test_odd_file_names_stay_inside_comments_and_strings(tmp_path: Path) -> None:
    obj = tmp_path / 'we"ird\\N{x} """.bpf.o'
    shutil.copy(FIXTURES / "minimal.bpf.o", obj)
    for mode in ("--path", "--embed"):
        module = load_module(generate(tmp_path, obj, mode, out="odd.py"))
        with module.WeIrdNXSkeleton.open() as skel:
            assert skel.object.name == 'we"ird\\N{x} """'


def test_globals_are_grouped_by_section_like_libbpf(tmp_path: Path) -> None:
    module = load_module(generate(tmp_path, FIXTURES / "globals.bpf.o"))
    skel_cls = module.GlobalsSkeleton
    assert set(skel_cls._NAMESPACES) == {"maps", "progs", "links", "data", "bss", "rodata", "data_foo", "rodata_bar",
                                         "kconfig"}  # the names bpftool gen skeleton gives them too
    with skel_cls.open() as skel:
        spec = skel.object.spec
        for attr, ns in skel_cls._NAMESPACES.items():
            if attr in ("maps", "progs", "links", "kconfig"):
                continue
            for var in getattr(skel, attr):
                assert spec.variables[var].map == ns._SECTION
                assert getattr(getattr(skel, attr), var) == skel.object.globals[var]
        assert skel.data_foo.foo_value == spec.variables["foo_value"].value
        skel.data.data_msg = "hey"
        assert skel.object.globals.raw("data_msg") == b"hey" + bytes(5)
        assert skel.maps.data_foo is spec.maps[".data.foo"]
        assert skel.maps.kconfig is spec.maps[".kconfig"]
    hints = {n: p.fget.__annotations__["return"] for n, p in vars(module.GlobalsBss).items() if isinstance(p, property)}
    assert hints == {"seen": "list[int]", "second_seen": "list[int]", "ksym_seen": "list[int]"}
    assert module.GlobalsData.data_msg.fget.__annotations__["return"] == "str | bytes"


def test_static_variables_are_not_exposed(tmp_path: Path) -> None:
    """As in libbpf skeletons: ``handle_write.____fmt`` (static) has no attribute."""
    module = load_module(generate(tmp_path, FIXTURES / "minimal.bpf.o"))
    assert sorted(module.MinimalRodata(None)) == ["my_pid"]
    assert sorted(module.MinimalBss(None)) == ["last_fd", "write_count"]


def test_stale_object_is_refused(tmp_path: Path) -> None:
    obj = tmp_path / "minimal.bpf.o"
    shutil.copy(FIXTURES / "minimal.bpf.o", obj)
    module = load_module(generate(tmp_path, obj))
    shutil.copy(FIXTURES / "bootstrap.bpf.o", obj)
    with pytest.raises(ObjectError, match="changed since MinimalSkeleton was generated"):
        module.MinimalSkeleton.open()
    with module.MinimalSkeleton.open(FIXTURES / "minimal.bpf.o") as skel:  # same bytes elsewhere: fine
        assert skel.rodata.my_pid == 0
    obj.unlink()
    with pytest.raises(ObjectError, match="cannot read the skeleton's BPF object"):
        module.MinimalSkeleton.open()


def test_object_beside_the_module_inside_a_zip(tmp_path: Path) -> None:
    """A package shipped as a zip archive reads its object through the module's loader."""
    import zipfile

    pkg = tmp_path / "src" / "zpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    shutil.copy(FIXTURES / "minimal.bpf.o", pkg / "minimal.bpf.o")
    generate(pkg, pkg / "minimal.bpf.o", out="minimal_skel.py")
    archive = tmp_path / "app.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(pkg.iterdir()):
            z.write(f, f"zpkg/{f.name}")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from zpkg.minimal_skel import MinimalSkeleton\n"
            "with MinimalSkeleton.open() as s: print(s.object.path, list(s.progs))")
    r = subprocess.run([PYTHON, "-c", code, str(archive)], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{archive}/zpkg/minimal.bpf.o ['handle_write']\n"


def test_embedded_object_needs_no_file(tmp_path: Path) -> None:
    obj = tmp_path / "minimal.bpf.o"
    shutil.copy(FIXTURES / "minimal.bpf.o", obj)
    module = load_module(generate(tmp_path, obj, "--embed", "--name", "tiny"))
    obj.unlink()
    assert module.TinySkeleton.elf_bytes() == (FIXTURES / "minimal.bpf.o").read_bytes()
    with module.TinySkeleton.open() as skel:
        assert list(skel.progs) == ["handle_write"]
        assert skel.object.name == "tiny"  # as bpftool gen skeleton's name: the object's name
        assert skel.object.spec.maps[".rodata"].kernel_name == "tiny.rodata"


@pytest.mark.parametrize("case, message", [
    ("not-elf", "not an ELF file"),
    ("truncated", "malformed ELF"),
    ("no-btf", "object has no BTF"),
    ("missing", "cannot read the object"),
    ("unknown-type", "no struct, union or enum named 'nosuch'"),
])
def test_bad_input_exits_nonzero_with_a_named_error(case: str, message: str, tmp_path: Path) -> None:
    obj = tmp_path / f"{case}.o"
    args: list[str] = []
    if case == "not-elf":
        obj.write_text("hello\n")
    elif case == "truncated":
        obj.write_bytes((FIXTURES / "minimal.bpf.o").read_bytes()[:3000])
    elif case == "no-btf":
        if CLANG is None:
            pytest.skip("clang-19 not installed (scripts/setup-system.sh installs it)")
        (tmp_path / "x.c").write_text("int x = 1;\n")
        subprocess.run([CLANG, "-O2", "-target", "bpf", "-c", str(tmp_path / "x.c"), "-o", str(obj)], check=True)
    elif case == "unknown-type":
        shutil.copy(FIXTURES / "bootstrap.bpf.o", obj)
        args = ["--types", "nosuch"]
    out = tmp_path / "out.py"
    r = subprocess.run([PYTHON, "-m", "corepy", "skeleton", str(obj), "-o", str(out), *args],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1
    assert r.stderr.startswith("corepy skeleton: ") and message in r.stderr and "Traceback" not in r.stderr
    assert obj.name in r.stderr
    assert not out.exists() and not out.with_name("out.py.tmp").exists()


def test_unwritable_output_is_named_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "taken.py").mkdir()  # os.replace onto a directory fails after the write
    for out in (tmp_path / "missing" / "x.py", tmp_path / "taken.py"):
        r = subprocess.run([PYTHON, "-m", "corepy", "skeleton", str(FIXTURES / "minimal.bpf.o"), "-o", str(out)],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 1 and r.stderr.startswith("corepy skeleton: cannot write the skeleton: ")
        assert str(out) in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.py"]


def test_type_missing_from_btf_is_explained() -> None:
    """clang emits a struct into BTF only when something (a variable, a map) names it."""
    from corepy.skeleton import SkeletonSource, generate as gen

    with pytest.raises(BTFError, match=r"struct event \*unused __attribute__\(\(unused\)\)"):
        gen(SkeletonSource((FIXTURES / "minimal.bpf.o").read_bytes(), display="minimal.bpf.o"), types=["event"])


# --- records against the codec ---------------------------------------------------------

def same(a: Any, b: Any) -> bool:
    """Equal values, NaN equal to NaN and bool distinct from int."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def codec_of(btf: BTF, cls: type) -> Codec:
    c_name = cls.__doc__.split("``")[1]  # "struct inner" or "anonymous union [58]"
    if c_name.startswith("anonymous"):
        return Codec(btf, int(c_name.split("[")[1].rstrip("]")))
    return Codec(btf, btf.find_one(c_name.split()[1]).id)


def test_record_classes_planned(records: Any) -> None:
    names = [n for n in records.__all__ if not n.endswith("Skeleton")]
    assert names == ["Color", "Key", "Inner", "Number", "Flags", "EverythingPoint", "EverythingAnon21", "Everything"]
    assert [f.name for f in dataclasses.fields(records.Everything)][-4:] == ["point", "_anon21", "grid2", "flex"]
    assert records.Inner._layout.format == "<HBxI"  # padding from the BTF layout
    assert records.Key._layout.format == "<I12s"
    assert records.Everything._layout.size == records.Everything.SIZE == 208
    assert records.Everything().names == ["", ""] and records.Everything().pair == [records.Inner()] * 2


def test_records_decode_and_encode_like_the_codec(records: Any, records_obj: Path) -> None:
    """Each member of the compiled unions covers the whole union: encodings agree with the codec too."""
    btf = BTF.from_file(str(records_obj))
    rng = random.Random(4)
    for name in records.__all__[2:]:  # the records after the skeleton and the enum
        cls = getattr(records, name)
        codec = codec_of(btf, cls)
        assert codec.size == cls.SIZE
        for i in range(200):
            raw = rng.randbytes(cls.SIZE) if i else bytes(cls.SIZE)
            mine, theirs = cls.from_bytes(raw), codec.decode(raw)
            assert same(dataclasses.asdict(mine), theirs._asdict()), (name, raw.hex())
            assert mine.to_bytes() == codec.encode(theirs), (name, raw.hex())
            assert same(dataclasses.asdict(cls.from_bytes(b"\xee" + raw, 1)), theirs._asdict())


def test_record_values_round_trip(records: Any) -> None:
    R = records
    value = R.Everything(tag="abc", ok=True, s8=-3, u64=2**64 - 1, color=-1, inr=R.Inner(1, 2, 3),
                         pair=[R.Inner(c=9)], num=R.Number(f=1.5), fl=R.Flags(lo=7, mid=-64, hi=2**20 - 1, on=True,
                                                                               col=-1),
                         grid=[[1, 2, 3]], names=["ab", b"\xff\x00"], raw=[1, 2], d=-0.25, ptr=2**63, big=2**127,
                         sbig=-(2**127), point=R.EverythingPoint(-1, 1), grid2=[[R.Inner(a=5)]])
    back = R.Everything.from_bytes(value.to_bytes())
    assert back.grid == [[1, 2, 3], [0, 0, 0]] and back.names == ["ab", b"\xff\x00\x00\x00"]
    assert back.raw == b"\x01\x02\x00" and back.pair == [R.Inner(c=9), R.Inner()]
    assert back.fl == value.fl and back.num.f == 1.5 and back.big == 2**127 and back.sbig == -(2**127)
    assert back.grid2 == [[R.Inner(a=5), R.Inner()], [R.Inner(), R.Inner()]]
    assert R.Everything.from_bytes(back.to_bytes()) == back


def test_named_enum_becomes_an_int_enum(records: Any) -> None:
    assert {m.name: m.value for m in records.Color} == {"RED": 0, "GREEN": 5, "NEG": -1}
    value = records.Everything.from_bytes(records.Everything(color=records.Color.NEG).to_bytes())
    assert value.color == records.Color.NEG == -1 and records.Color(value.color) is records.Color.NEG


@pytest.mark.parametrize("bad, message", [
    (dict(tag="toolong"), "7 bytes do not fit 5 bytes"),
    (dict(u8=256), "cannot encode Everything"),
    (dict(fl="x"), "expected a Flags"),
    (dict(grid=[[0]] * 3), "3 elements do not fit list"),
    (dict(raw=b"1234"), "4 bytes do not fit 3 bytes"),
    (dict(big=2**128), "does not fit 16 bytes"),
])
def test_record_encode_errors_are_named(records: Any, bad: dict, message: str) -> None:
    with pytest.raises(BTFError, match=message):
        records.Everything(**bad).to_bytes()


def test_record_errors_are_named(records: Any) -> None:
    with pytest.raises(BTFError, match="does not fit the 3-bit field 'lo'"):
        records.Flags(lo=8).to_bytes()
    with pytest.raises(BTFError, match=r"Inner: need 8 bytes at offset 2 to decode, have 5"):
        records.Inner.from_bytes(bytes(7), 2)


def test_struct_globals_and_map_specs_before_load(records: Any) -> None:
    with records.RecordsSkeleton.open() as skel:
        assert skel.data.origin == records.Inner(1, 2, 3)
        assert skel.rodata.knob.u == 7 and skel.rodata.knob.halves == [7, 0]
        skel.data.origin = records.Inner(4, 5, 6)
        assert skel.object.globals.raw("origin") == records.Inner(4, 5, 6).to_bytes()
        skel.data.origin = bytes(8)  # raw bytes too
        assert skel.data.origin == records.Inner()
        assert (skel.data.from_, skel.data._private, skel.data._mangled) == (4, 5, 6)
        skel.data.from_ = 40
        assert skel.object.globals["from"] == 40
        skel.maps.things.max_entries = 32
        assert skel.object.spec.maps["things"].max_entries == 32
        assert type(skel.maps).things.fget.__doc__ == "``things``: HASH, key Key (16 bytes), value Inner (8 bytes), max_entries 16."


# Hand-built BTF: scalars with fixed ids, then random structs/unions laid out over them.
SCALARS = [
    Int(1, "int", 4, IntEncoding.SIGNED, 0, 32), Int(2, "unsigned int", 4, IntEncoding.NONE, 0, 32),
    Int(3, "char", 1, IntEncoding.SIGNED, 0, 8), Int(4, "unsigned char", 1, IntEncoding.NONE, 0, 8),
    Int(5, "_Bool", 1, IntEncoding.BOOL, 0, 8), Int(6, "short", 2, IntEncoding.SIGNED, 0, 16),
    Int(7, "unsigned long long", 8, IntEncoding.NONE, 0, 64), Int(8, "long long", 8, IntEncoding.SIGNED, 0, 64),
    Float(9, "float", 4), Float(10, "double", 8), Int(11, "__int128", 16, IntEncoding.SIGNED, 0, 128),
    Ptr(12, 1), Enum(13, "e32", 4, (EnumValue("A", -1), EnumValue("B", 7)), signed=True),
    Enum64(14, "e64", 8, (EnumValue("BIG", 1 << 40),)), Int(15, "__ARRAY_SIZE_TYPE__", 4, IntEncoding.NONE, 0, 32),
]
BITFIELD_BASES = [1, 2, 4, 6, 7, 8, 13]


@st.composite
def btf_records(draw: st.DrawFn) -> tuple[list, list[int]]:
    """Scalars, arrays and 1-4 structs/unions (each may nest the earlier ones); the composite ids."""
    types: list = list(SCALARS)
    composites: list[int] = []

    def new_id() -> int:
        return len(types) + 1

    def member_type() -> int:
        tid = draw(st.sampled_from([t.id for t in SCALARS if t.id != 15] + composites))
        for _ in range(draw(st.integers(0, 2))):  # arrays, arrays of arrays
            types.append(Array(new_id(), tid, 15, draw(st.integers(0, 3))))
            tid = types[-1].id
        return tid

    def size_of(tid: int) -> int:
        t = types[tid - 1]
        return t.nelems * size_of(t.type_id) if isinstance(t, Array) else (8 if isinstance(t, Ptr) else t.size)

    for n in range(draw(st.integers(1, 4))):
        union = draw(st.booleans())
        members, pos, end = [], 0, 0
        for i in range(draw(st.integers(0 if n else 1, 6))):
            name = "" if draw(st.integers(0, 5)) == 0 else f"m{i}"
            if not union and draw(st.integers(0, 3)) == 0:
                base = draw(st.sampled_from(BITFIELD_BASES))
                bits = draw(st.integers(1, types[base - 1].size * 8))
                members.append(Member(name, base, pos, bits))
                pos += bits
            else:
                tid = member_type()
                start = 0 if union else (pos + 7) // 8 * 8 + 8 * draw(st.integers(0, 2))
                members.append(Member(name, tid, start))
                pos = start + 8 * size_of(tid)
            end = max(end, pos)
        size = (end + 7) // 8 + draw(st.integers(0, 3))
        kind_flag = any(m.bitfield_size for m in members)
        cls = Union if union else Struct
        name = f"s{new_id()}" if draw(st.integers(0, 4)) else ""
        types.append(cls(new_id(), name, size, tuple(members), kind_flag))
        composites.append(types[-1].id)
    return types, composites


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(btf_records(), st.randoms(use_true_random=False))
def test_generated_records_match_the_codec_on_random_layouts(case: tuple[list, list[int]], rnd: random.Random) -> None:
    from corepy.btf.writer import write_btf
    from corepy.skeleton.typegen import generate_records

    types, composites = case
    btf = BTF.from_bytes(write_btf(types))
    text = generate_records(btf, composites, source="hypothesis")
    assert generate_records(btf, composites, source="hypothesis") == text
    module = exec_module(text)
    for name in module.__all__:
        cls = getattr(module, name)
        codec = codec_of(btf, cls)
        assert cls.SIZE == codec.size
        for _ in range(5):
            raw = rnd.randbytes(cls.SIZE)
            mine, theirs = cls.from_bytes(raw), codec.decode(raw)
            assert same(dataclasses.asdict(mine), theirs._asdict()), (name, raw.hex(), text)
            packed = mine.to_bytes()
            if not has_union(btf, codec.type_id):
                assert packed == codec.encode(theirs), (name, raw.hex(), text)
            # unions: members overlap, so which bytes win is a convention (ours: declaration order,
            # zero-valued members skipped, nested records with their padding); our bytes are stable
            assert cls.from_bytes(packed).to_bytes() == packed, (name, raw.hex(), text)


@pytest.mark.parametrize("kernel", ["running", "vmlinux-6.1.0-56-arm64"])
def test_kernel_structs_decode_like_the_codec(kernel: str) -> None:
    """Real layouts (unions in structs, bitfields, flexible arrays...): a seeded sample of named
    structs/unions of a kernel's BTF, plus task_struct."""
    from corepy.skeleton.records import member_name
    from corepy.skeleton.typegen import generate_records

    if kernel == "running":
        if not Path("/sys/kernel/btf/vmlinux").exists():
            pytest.skip("no /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF off)")
        btf = BTF.kernel()
    else:
        btf = BTF.from_bytes(btf_blob(kernel), source=kernel)

    def renamed(value: Any) -> Any:  # the codec keeps '__x'; records call it '_x'
        if isinstance(value, dict):
            return {k if k.startswith("_anon") else member_name(k): renamed(v) for k, v in value.items()}
        return [renamed(v) for v in value] if isinstance(value, list) else value

    rng = random.Random(5)
    named = [t.id for t in btf.types() if isinstance(t, (Struct, Union)) and t.name]
    for type_id in [*rng.sample(named, 150), btf.find_one("task_struct").id]:
        module = exec_module(generate_records(btf, [type_id]))
        cls = getattr(module, module.__all__[-1])  # records come dependencies first
        codec = Codec(btf, type_id)
        raw = rng.randbytes(cls.SIZE)
        mine, theirs = cls.from_bytes(raw), codec.decode(raw)
        assert same(dataclasses.asdict(mine), renamed(theirs._asdict())), btf[type_id].name
        packed = mine.to_bytes()
        if not has_union(btf, type_id):
            assert packed == codec.encode(theirs), btf[type_id].name
        assert cls.from_bytes(packed).to_bytes() == packed, btf[type_id].name


def test_member_names_python_would_mangle_or_reject() -> None:
    from corepy.btf.writer import write_btf
    from corepy.skeleton.typegen import generate_records

    int_t = Int(1, "int", 4, IntEncoding.SIGNED, 0, 32)
    members = (Member("__reserved", 1, 0), Member("lambda", 1, 32), Member("__dunder__", 1, 64))
    btf = BTF.from_bytes(write_btf([int_t, Struct(2, "uapi", 12, members)]))
    value = exec_module(generate_records(btf, ["uapi"])).Uapi.from_bytes(bytes(range(12)))
    assert [f.name for f in dataclasses.fields(value)] == ["_reserved", "lambda_", "__dunder__"]
    assert list(dataclasses.astuple(value)) == list(Codec(btf, 2).decode(bytes(range(12)))._asdict().values())
    clash = (Member("__x", 1, 0), Member("_x", 1, 32))
    btf = BTF.from_bytes(write_btf([int_t, Struct(2, "clash", 8, clash)]))
    with pytest.raises(BTFError, match="struct clash: member name '_x' is not usable"):
        generate_records(btf, ["clash"])


def has_union(btf: BTF, type_id: int) -> bool:
    t = btf.skip_mods_and_typedefs(type_id)
    if isinstance(t, Union):
        return True
    if isinstance(t, Array):
        return has_union(btf, t.type_id)
    return isinstance(t, Struct) and any(has_union(btf, m.type_id) for m in t.members)


# --- the real kernel --------------------------------------------------------------------

@requires_root
def test_records_with_live_maps_and_globals(records: Any, no_fd_leak: None) -> None:
    R = records
    with R.RecordsSkeleton.open() as skel:
        skel.rodata.knob = R.Number(u=41)
        skel.data.origin = R.Inner(a=7, b=8, c=9)
        assert skel.progs.not_loaded.autoload is False
        skel.load()
        with pytest.raises(CorepyError, match="'not_loaded' was not loaded .autoload is off"):
            skel.progs.not_loaded
        skel.attach()
        assert skel.links.not_loaded is None and skel.links.touch is not None
        ids = live_ids(skel)
        calls = skel.bss.calls
        os.getppid()
        assert skel.bss.calls > calls
        key = R.Key(id=41, name="touched")
        assert R.Inner.from_bytes(skel.maps.things.raw[key.to_bytes()]) == R.Inner(7, 8, 9)
        assert [R.Key.from_bytes(k) for k in skel.maps.things.raw.keys()] == [key]
        skel.data.origin = R.Inner(c=1)  # live .data, written through the skeleton
        os.getppid()
        assert skel.data.origin == R.Inner(c=1)
        assert R.Inner.from_bytes(skel.maps.things.raw[key.to_bytes()]) == R.Inner(c=1)
    assert_released(ids)


@requires_root
def test_minimal_counts_writes(tmp_path: Path, no_fd_leak: None) -> None:
    module = load_module(generate(tmp_path, FIXTURES / "minimal.bpf.o"))
    skel = module.MinimalSkeleton.open()
    with skel:
        skel.rodata.my_pid = os.getpid()
        assert skel.load() is skel
        assert skel.maps.bss.name == ".bss" and skel.progs.handle_write.fd >= 0
        assert skel.links.handle_write is None
        skel.attach()
        assert skel.links.handle_write is skel.object.links["handle_write"]
        ids = live_ids(skel)
        assert all(ids.values())
        before = skel.bss.write_count
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            for _ in range(5):
                os.write(devnull, b"x")
        finally:
            os.close(devnull)
        assert skel.bss.write_count - before == 5
        assert skel.bss.last_fd == devnull
        with pytest.raises(CorepyError, match="frozen once loaded"):
            skel.rodata.my_pid = 1
        skel.bss.write_count = 0  # .bss stays writable
        assert skel.bss.write_count == 0
        skel.detach()
        assert skel.links.handle_write is None
    assert skel.closed
    assert_released(ids)
    skel.destroy()  # closing again is a no-op
    with pytest.raises(CorepyError, match="closed"):
        skel.maps.bss


@requires_root
def test_bootstrap_embedded_tracks_exec_start(tmp_path: Path, no_fd_leak: None) -> None:
    module = load_module(generate(tmp_path, FIXTURES / "bootstrap.bpf.o", "--embed"))
    with module.BootstrapSkeleton.open_and_load() as skel:
        skel.attach()
        assert set(skel.object.links) == {"handle_exec", "handle_exit"}
        ids = live_ids(skel)
        child = subprocess.Popen(["sleep", "0.3"])
        try:
            deadline = time.monotonic() + 2
            while child.pid not in skel.maps.exec_start and time.monotonic() < deadline:
                time.sleep(0.01)
            started = skel.maps.exec_start[child.pid]
            assert 0 < started <= time.monotonic_ns()
        finally:
            child.wait()
        assert child.pid not in skel.maps.exec_start  # handle_exit deleted it
    assert_released(ids)


@requires_root
def test_kconfig_externs_after_load(tmp_path: Path, no_fd_leak: None) -> None:
    import gzip

    if not Path("/proc/config.gz").exists():
        pytest.skip("/proc/config.gz is absent (CONFIG_IKCONFIG_PROC off): no independent view of the config")
    config = dict(line.split("=", 1) for line in gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
                  .splitlines() if line.startswith("CONFIG_"))
    module = load_module(generate(tmp_path, FIXTURES / "globals.bpf.o"))
    assert module.GlobalsKconfig.CONFIG_HZ.fget.__annotations__["return"] == "int"
    with module.GlobalsSkeleton.open() as skel:
        with pytest.raises(CorepyError, match="'CONFIG_HZ' is resolved at load"):
            skel.kconfig.CONFIG_HZ
        skel.load()
        k = skel.kconfig
        assert k.CONFIG_HZ == int(config["CONFIG_HZ"])
        assert k.CONFIG_BPF_JIT is (config.get("CONFIG_BPF_JIT") == "y")
        assert k.CONFIG_BPF_SYSCALL == {"y": 1, "m": 2}.get(config.get("CONFIG_BPF_SYSCALL", "n"), 0)
        assert k.CONFIG_MODULES == {"y": 1, "m": 2}.get(config.get("CONFIG_MODULES", "n"), 0)
        assert k.CONFIG_CORE_PY_UNKNOWN is False  # weak and unknown
        assert k.CONFIG_LOCALVERSION == config.get("CONFIG_LOCALVERSION", '""').strip('"')
        major, minor, patch = (int(x) for x in os.uname().release.split("-")[0].split(".")[:3])
        assert k.LINUX_KERNEL_VERSION == major << 16 | minor << 8 | min(patch, 255)
    with module.GlobalsSkeleton.open(kconfig={"CONFIG_HZ": 100}) as skel:  # options reach the Object
        skel.load()
        assert skel.kconfig.CONFIG_HZ == 100


def run_and_collect(skel: Any, event: type, commands: list[list[str]]) -> tuple[list[bytes], list[int]]:
    """Run ``commands`` one after the other; the ring buffer records seen until the exit event of
    the last one, and the commands' pids."""
    from corepy.ringbuf import RingBuffer

    seen: list[bytes] = []
    pids: list[int] = []
    with RingBuffer(skel.maps.rb, lambda rec: seen.append(bytes(rec))) as ring:
        for cmd in commands:
            child = subprocess.Popen(cmd)
            pids.append(child.pid)
            child.wait()
        deadline = time.monotonic() + 5
        while not any(e.exit_event and e.pid == pids[-1] for e in map(event.from_bytes, seen)):
            assert time.monotonic() < deadline, f"no exit event for {commands[-1]} (pid {pids[-1]})"
            ring.poll(0.05)
    return seen, pids


@requires_root
def test_bootstrap_event_records_and_min_duration(tmp_path: Path, no_fd_leak: None) -> None:
    obj = FIXTURES / "bootstrap.bpf.o"  # anchors struct event in its BTF with an unused pointer
    module = load_module(generate(tmp_path, obj, "--types", "event"))
    Event = module.Event
    btf = BTF.from_file(str(obj))
    codec = Codec(btf, btf.find_one("event").id)
    assert Event.SIZE == codec.size == 168
    assert [f.name for f in dataclasses.fields(Event)] == [
        "pid", "ppid", "exit_code", "duration_ns", "comm", "filename", "exit_event"]

    with module.BootstrapSkeleton.open() as skel:  # every exec and exit reported
        skel.load()
        skel.attach()
        seen, (pid,) = run_and_collect(skel, Event, [["/bin/sh", "-c", "exit 3"]])
    events = [Event.from_bytes(raw) for raw in seen]
    for raw, event in zip(seen, events):
        assert dataclasses.asdict(event) == codec.decode(raw)._asdict()
        assert event.to_bytes() == codec.encode(codec.decode(raw))
    mine = [e for e in events if e.pid == pid]
    assert [e.exit_event for e in mine] == [False, True]
    exec_event, exit_event = mine
    assert exec_event.filename == "/bin/sh" and exec_event.ppid == os.getpid() and exec_event.comm == "sh"
    assert exit_event.exit_code == 3 and exit_event.duration_ns > 0 and exit_event.filename == ""

    with module.BootstrapSkeleton.open() as skel:  # the .rodata filter, set through the skeleton
        skel.rodata.min_duration_ns = 200_000_000
        skel.load()
        assert skel.rodata.min_duration_ns == 200_000_000
        skel.attach()
        seen, (short, long_) = run_and_collect(skel, Event, [["/bin/true"], ["sleep", "0.4"]])
    events = [Event.from_bytes(raw) for raw in seen]
    assert not [e for e in events if not e.exit_event]  # no exec events with a minimum duration
    assert short not in {e.pid for e in events}
    (slept,) = [e for e in events if e.pid == long_]
    assert slept.duration_ns >= 200_000_000 and slept.comm == "sleep"


@requires_root
def test_ring_buffer_decodes_into_generated_record_class(tmp_path: Path, no_fd_leak: None) -> None:
    from corepy.ringbuf import RingBuffer

    module = load_module(generate(tmp_path, FIXTURES / "bootstrap.bpf.o", "--types", "event"))
    Event = module.Event
    got: list[Any] = []
    with module.BootstrapSkeleton.open() as skel:
        skel.load()
        skel.attach()
        with RingBuffer(skel.maps.rb, got.append, record_type=Event) as ring:
            child = subprocess.Popen(["/bin/sh", "-c", "exit 5"])
            child.wait()
            deadline = time.monotonic() + 5
            while not any(e.exit_event and e.pid == child.pid for e in got):
                assert time.monotonic() < deadline, "no exit event through the record class"
                ring.poll(0.05)
    assert all(type(e) is Event for e in got)
    exit_event = next(e for e in got if e.exit_event and e.pid == child.pid)
    assert exit_event.exit_code == 5 and exit_event.comm == "sh"
