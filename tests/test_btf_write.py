"""Writing BTF: byte-exact round trips of real kernel BTF, hand-built types, big-endian output."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import KERNEL_BTF, MODULES, OTHER_KERNELS, btf_blob
from corepy.btf import BTF, Kind
from corepy.btf.types import (
    Array, Const, Datasec, DeclTag, Enum, Enum64, EnumValue, Float, Func, FuncProto, Fwd, Int, IntEncoding,
    Linkage, Member, Param, Ptr, Restrict, Struct, Typedef, TypeTag, Union, Var, VarSecinfo, Void, Volatile,
)
from corepy.btf.writer import BTFBuilder, write_btf
from corepy.errors import BTFError
from test_btf_parse import BPFTOOL, bpftool_raw, needs_bpftool, program  # noqa: F401  (program: fixture)


def unnamed(t):
    """The type with every name_off reset, for comparing parsed types with hand-built ones."""
    changes = {"name_off": -1}
    for field in ("members", "values", "params"):
        if hasattr(t, field):
            changes[field] = tuple(dataclasses.replace(x, name_off=-1) for x in getattr(t, field))
    return dataclasses.replace(t, **changes)


@pytest.mark.parametrize("name", OTHER_KERNELS + ["running-kernel"])
def test_kernel_btf_round_trips_byte_for_byte(name: str) -> None:
    if name == "running-kernel":
        if not KERNEL_BTF.exists():
            pytest.skip("no /sys/kernel/btf/vmlinux")
        btf = BTF.from_file(KERNEL_BTF)
    else:
        btf = BTF.from_bytes(btf_blob(name), source=name)
    assert BTFBuilder.from_btf(btf).build() == btf.raw_bytes()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_split_module_btf_round_trips(module: str) -> None:
    base = BTF.from_bytes(btf_blob(MODULES[module]))
    split = BTF.from_bytes(btf_blob(module), base=base)
    assert BTFBuilder.from_btf(split).build() == btf_blob(module)


def test_object_btf_round_trips(program: Path) -> None:  # noqa: F811
    btf = BTF.from_file(program)
    assert BTFBuilder.from_btf(btf).build() == btf.raw_bytes()


def hand_built() -> list:
    """One type of every kind, ids from 1, names not yet in any string table."""
    return [
        Int(1, "int", 4, IntEncoding.SIGNED, 0, 32),                                  # 1
        Ptr(2, 1),                                                                    # 2
        Array(3, 1, 1, 16),                                                           # 3
        Struct(4, "pair", 16, (Member("a", 1, 0), Member("b", 3, 32, 0),
                               Member("", 5, 96))),                                   # 4
        Union(5, "", 4, (Member("x", 1, 0), Member("y", 11, 0))),                     # 5
        Enum(6, "color", 4, (EnumValue("RED", -1), EnumValue("BLUE", 7)), signed=True),  # 6
        Enum64(7, "wide", 8, (EnumValue("BIG", 0xFFFF_FFFF_FFFF_FFFF), EnumValue("ONE", 1))),  # 7
        Fwd(8, "later", union=True),                                                  # 8
        Typedef(9, "int_t", 1),                                                       # 9
        Volatile(10, 9),                                                              # 10
        Const(11, 10),                                                                # 11
        Restrict(12, 2),                                                              # 12
        FuncProto(13, 1, (Param("p", 2), Param("", 0))),                              # 13
        Func(14, "fn", 13, Linkage.GLOBAL),                                           # 14
        Var(15, "counter", 1, Linkage.GLOBAL),                                        # 15
        Datasec(16, ".data", 4, (VarSecinfo(15, 0, 4),)),                             # 16
        Float(17, "double", 8),                                                       # 17
        DeclTag(18, "tag", 4, 1),                                                     # 18
        TypeTag(19, "user", 2),                                                       # 19
        Struct(20, "bits", 4, (Member("lo", 1, 0, 3), Member("hi", 1, 3, 29)), kind_flag=True),  # 20
        Enum(21, "unsigned_big", 4, (EnumValue("TOP", 0xFFFFFFFF),)),                 # 21
        Enum64(22, "neg", 8, (EnumValue("MINUS", -5),), signed=True),                 # 22
    ]


@pytest.mark.parametrize("byte_order", ["little", "big"])
def test_hand_built_types_survive_write_and_parse(byte_order: str) -> None:
    types = hand_built()
    blob = write_btf(types, byte_order=byte_order)
    btf = BTF.from_bytes(blob)
    assert btf.byte_order == byte_order
    assert [unnamed(t) for t in btf.types()] == types
    assert btf.find_one("pair", Kind.STRUCT).members[1].name == "b"
    assert btf.find_one("color").values[0].value == -1
    assert btf.find_one("wide").values[0].value == 0xFFFF_FFFF_FFFF_FFFF
    # names are interned once: "int" appears a single time in the string section
    assert btf.strings_bytes().count(b"\0int\0") == 1


@needs_bpftool
def test_big_endian_blob_read_by_bpftool(program: Path, tmp_path: Path) -> None:  # noqa: F811
    """A byte-swapped copy of an object's BTF: bpftool (libbpf) reads it as we do."""
    le = BTF.from_file(program)
    blob = BTFBuilder(le.types(), byte_order="big", strings=le.strings_bytes()).build()
    assert blob[:2] == b"\xeb\x9f" and blob != le.raw_bytes()
    be = BTF.from_bytes(blob)
    assert be.byte_order == "big" and list(be.types()) == list(le.types())
    path = tmp_path / "be.btf"
    path.write_bytes(blob)
    want = subprocess.run([BPFTOOL, "btf", "dump", "file", str(path), "format", "raw"],
                          check=True, capture_output=True, text=True).stdout.splitlines()
    assert [line for t in be.types() for line in bpftool_raw(be, t)] == want


def test_edit_in_place_and_intern_new_names(program: Path) -> None:  # noqa: F811
    """What sanitising does: replace kinds an old kernel lacks, keep ids, add names."""
    btf = BTF.from_file(program)
    builder = BTFBuilder.from_btf(btf)
    replaced = []
    for i, t in enumerate(builder.types):
        if isinstance(t, (DeclTag, Float)):
            builder.types[i] = Int(t.id, "__sanitized_" + t.kind.name.lower(), 1, IntEncoding.NONE, 0, 8)
            replaced.append(t.id)
        elif isinstance(t, TypeTag):
            builder.types[i] = Const(t.id, t.type_id)
            replaced.append(t.id)
    new_id = builder.add(Typedef(-1, "brand_new_name", 1))
    assert replaced and new_id == len(btf)
    out = BTF.from_bytes(builder.build())
    assert len(out) == len(btf) + 1
    for type_id in replaced:
        assert out[type_id].kind in (Kind.INT, Kind.CONST)
    assert out[new_id].name == "brand_new_name"
    untouched = [i for i in range(1, len(btf)) if i not in replaced]
    assert all(out[i] == btf[i] for i in untouched)
    # the original string section is kept as a prefix; only new names are appended
    assert out.strings_bytes().startswith(btf.strings_bytes())


def test_split_builder_interns_after_base_strings() -> None:
    base = BTF.from_bytes(btf_blob("vmlinux-6.1.0-56"))
    split = BTF.from_bytes(btf_blob("veth-6.1.0-56"), base=base)
    builder = BTFBuilder.from_btf(split)
    new_id = builder.add(Struct(-1, "veth_extra_probe", 8, (Member("skb", split.find_one("sk_buff").id, 0),)))
    out = BTF.from_bytes(builder.build(), base=base)
    t = out[new_id]
    assert t.name == "veth_extra_probe" and t.name_off >= base._str_total
    assert out[t.members[0].type_id].name == "sk_buff"
    # a name that already exists in the base reuses the base's string
    assert builder.string("sk_buff") == base.find_one("sk_buff", Kind.STRUCT).name_off


@pytest.mark.parametrize("bad, match", [
    (Struct(1, "s", 4, (Member("b", 1, 0, 3),)), "kind_flag is clear"),
    (Enum(1, "e", 4, (EnumValue("X", 1 << 32),)), "does not fit 32 bits"),
    (Enum64(1, "e", 8, (EnumValue("X", 1 << 64),)), "does not fit 64 bits"),
    (Void(), "implicit"),
    (Int(1, "i", 4, IntEncoding.NONE, 0, 300), "out of range"),
    (Array(1, 1, 1, -1), "cannot write type"),
    (Struct(1, "s", 4, tuple(Member("m", 1, 0) for _ in range(70000))), "vlen limit"),
])
def test_unwritable_types_raise_btferror(bad, match: str) -> None:
    with pytest.raises(BTFError, match=match):
        write_btf([bad])


def test_builder_rejects_bad_string_section() -> None:
    with pytest.raises(BTFError, match="NUL"):
        BTFBuilder(strings=b"\0abc")
