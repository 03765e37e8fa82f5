"""Corrupt BTF and .BTF.ext raise BTFError, never anything else and never hang.

Real blobs (a clang object's .BTF/.BTF.ext and a self-contained slice of a
kernel's BTF) are truncated, bit-flipped and given huge lengths; parsing and then
touching every type must either work or raise :class:`~corepy.errors.BTFError`.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import btf_blob
from corepy.btf import BTF
from corepy.btf.ext import BTFExt
from corepy.btf.types import COMPOSITE
from corepy.btf.writer import write_btf
from corepy.errors import BTFError
from test_btf_parse import CLANG, PROGRAM

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


@functools.cache
def object_sections() -> tuple[bytes, bytes]:
    """(.BTF, .BTF.ext) of the test program, compiled once."""
    import tempfile

    from elftools.elf.elffile import ELFFile

    with tempfile.TemporaryDirectory() as d:
        src, obj = Path(d) / "fuzz.bpf.c", Path(d) / "fuzz.bpf.o"
        src.write_text(PROGRAM)
        subprocess.run([CLANG, "-g", "-O2", "-target", "bpf", "-c", str(src), "-o", str(obj)], check=True)
        with open(obj, "rb") as f:
            elf = ELFFile(f)
            return elf.get_section_by_name(".BTF").data(), elf.get_section_by_name(".BTF.ext").data()


def _renumber(t, new_id: int, ids: dict[int, int]):
    """``t`` with its id and every reference mapped through ``ids``."""
    changes = {"id": new_id, "name_off": -1}
    for field in ("type_id", "index_type_id", "return_type_id"):
        if hasattr(t, field):
            changes[field] = ids[getattr(t, field)]
    for field in ("members", "params", "vars", "values"):
        if hasattr(t, field):
            items = getattr(t, field)
            changes[field] = tuple(
                dataclasses.replace(x, **({"type_id": ids[x.type_id]} if hasattr(x, "type_id") else {}),
                                    **({"name_off": -1} if hasattr(x, "name_off") else {}))
                for x in items
            )
    return dataclasses.replace(t, **changes)


@functools.cache
def kernel_slice() -> bytes:
    """The closure of a few kernel structs, renumbered into a small self-contained blob."""
    btf = BTF.from_bytes(btf_blob("vmlinux-6.1.0-56"))
    todo = [btf.find_one(name).id for name in ("timer_list", "rb_root_cached", "bpf_insn", "hrtimer", "xdp_md")]
    todo += btf.ids_by_name("bpf_map_type")
    seen: dict[int, None] = {0: None}
    while todo:
        type_id = todo.pop()
        if type_id in seen:
            continue
        seen[type_id] = None
        t = btf[type_id]
        for field in ("type_id", "index_type_id", "return_type_id"):
            if hasattr(t, field):
                todo.append(getattr(t, field))
        for field in ("members", "params", "vars"):
            todo += [x.type_id for x in getattr(t, field, ())]
    old = sorted(seen)
    ids = {o: n for n, o in enumerate(old)}
    return write_btf([_renumber(btf[o], ids[o], ids) for o in old[1:]])


def touch_everything(btf: BTF) -> None:
    """Decode every type and run every helper on it; BTFError from any of them is fine."""
    for type_id in range(len(btf)):
        t = btf[type_id]
        for helper in (btf.skip_mods_and_typedefs, btf.resolve_size, btf.alignment):
            try:
                helper(type_id)
            except BTFError:
                pass
        if isinstance(btf.skip_mods(type_id) if not isinstance(t, COMPOSITE) else t, COMPOSITE):
            try:
                list(btf.members(type_id))
            except BTFError:
                pass
        if t.name:
            assert type_id in btf.ids_by_name(t.name)
    for name in list(btf.names())[:50]:
        btf.find(name)
    btf.pointer_size


def mutations(blob: bytes):
    """A strategy of corrupted copies of ``blob``."""
    n = len(blob)

    def truncate(cut: int) -> bytes:
        return blob[:cut]

    def flip(flips: list[tuple[int, int]]) -> bytes:
        out = bytearray(blob)
        for pos, byte in flips:
            out[pos % n] ^= byte or 1
        return bytes(out)

    def header_field(field: int, value: int) -> bytes:
        out = bytearray(blob)
        struct.pack_into("<I", out, 4 + 4 * field, value)
        return bytes(out)

    def type_word(word: int, value: int) -> bytes:
        out = bytearray(blob)
        words = (n - 24) // 4
        struct.pack_into("<I", out, 24 + 4 * (word % words), value)
        return bytes(out)

    huge = st.sampled_from([0, 1, 3, 0x7FFFFFFF, 0xFFFFFFFF, 0xFFFFFFF0, n, n - 1, n + 1]) | st.integers(0, 2**32 - 1)
    # flips concentrate on the header and the type area (the strings follow the types)
    spot = st.integers(0, min(n - 1, 4096)) | st.integers(0, n - 1)
    return st.one_of(
        st.integers(0, n).map(truncate),
        st.lists(st.tuples(spot, st.integers(0, 255)), min_size=1, max_size=8).map(flip),
        st.builds(header_field, st.integers(0, 4), huge),
        st.builds(type_word, st.integers(0, n), huge),
    )


def check(blob: bytes) -> None:
    try:
        btf = BTF.from_bytes(blob)
    except BTFError:
        return
    try:
        touch_everything(btf)
    except BTFError:
        pass


needs_clang = pytest.mark.skipif(CLANG is None, reason="clang not installed (scripts/setup-system.sh)")


@needs_clang
@FUZZ
@given(data=st.data())
def test_corrupt_object_btf(data) -> None:
    check(data.draw(mutations(object_sections()[0])))


@FUZZ
@given(data=st.data())
def test_corrupt_kernel_slice(data) -> None:
    check(data.draw(mutations(kernel_slice())))


@needs_clang
@FUZZ
@given(data=st.data())
def test_corrupt_btf_ext(data) -> None:
    btf_raw, ext_raw = object_sections()
    btf = BTF.from_bytes(btf_raw)
    blob = data.draw(mutations(ext_raw))
    try:
        BTFExt.from_bytes(blob, btf)
    except BTFError:
        pass


def test_the_unmutated_blobs_are_fine() -> None:
    """The fuzz seeds themselves parse cleanly (so the mutations are what fails)."""
    btf = BTF.from_bytes(kernel_slice())
    touch_everything(btf)
    assert btf.find_one("timer_list").size > 0 and len(btf) > 50
    if CLANG is not None:
        btf_raw, ext_raw = object_sections()
        touch_everything(BTF.from_bytes(btf_raw))
        assert BTFExt.from_bytes(ext_raw, BTF.from_bytes(btf_raw)).core_relos


@pytest.mark.parametrize("blob, match", [
    (b"", "bad magic"),
    (b"\x9f\xeb", "truncated BTF header"),
    (b"\x9f\xeb\x02\x00" + bytes(20), "unsupported BTF version"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 8, 0, 0, 0, 1), "bad BTF header length"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 1000, 0, 1) + b"\0", "type section"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 0, 0, 1000) + b"\0", "string section"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 12, 1) + struct.pack("<III", 0, 25 << 24, 0) + b"\0",
     "unknown kind 25"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 12, 1) + struct.pack("<III", 0, 4 << 24 | 3, 0) + b"\0",
     "runs past the end"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 16, 16, 1) + struct.pack("<IIII", 0, 2 << 24, 0, 0) + b"\0",
     r"type \[2\] runs past the end"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 20, 20, 1) + struct.pack("<IIIII", 0, 2 << 24, 0, 0, 4 << 24 | 1) + b"\0",
     r"type \[2\] runs past the end"),
    (struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 12, 12, 2) + struct.pack("<III", 0, 2 << 24, 0) + b"\0a",
     "does not end with NUL"),
])
def test_specific_corruptions_name_the_problem(blob: bytes, match: str) -> None:
    with pytest.raises(BTFError, match=match) as info:
        BTF.from_bytes(blob)
    assert "offset" in str(info.value) or match == "bad magic"


def test_bad_references_raise_on_access() -> None:
    head = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, 24, 24, 5)
    types = struct.pack("<III", 0, 2 << 24, 7)             # [1] PTR -> 7: out of range
    types += struct.pack("<III", 1, 8 << 24, 2)            # [2] TYPEDEF 'a' -> itself via [2]
    blob = head + types + b"\0a\0\0\0"
    btf = BTF.from_bytes(blob)
    with pytest.raises(BTFError, match="type id 7"):
        btf[1]
    with pytest.raises(BTFError, match="loop"):
        btf.skip_mods_and_typedefs(2)
    with pytest.raises(BTFError, match="loop"):
        btf.resolve_size(2)
    with pytest.raises(BTFError, match="string offset 99"):
        btf.string(99)
