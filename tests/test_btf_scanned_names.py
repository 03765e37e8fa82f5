"""The first lookups by name search the strings (ScannedNames); they must answer exactly as the full index."""

from __future__ import annotations

import random
import struct

import pytest

from conftest import KERNEL_BTF, OTHER_KERNELS, btf_blob
from corepy.btf import BTF
from corepy.btf import format as fmt
from corepy.btf.spec import SCANNED_LOOKUPS
from corepy.btf.strings import NameIndex, ScannedNames


def _both(btf: BTF) -> tuple[ScannedNames, NameIndex]:
    return ScannedNames(btf._name_offs, btf.strings_bytes()), NameIndex(btf._name_offs, btf._string_bytes,
                                                                         btf.strings_bytes())


def _odd_blob() -> bytes:
    strings = b"\0abc\0bc\0\0abc\0"  # "abc" at 1 and 9 (stored twice), "bc" at 5, tail "bc" of "abc" at 2
    ptr = lambda name_off: struct.pack("<III", name_off, 2 << 24, 0)  # noqa: E731
    types = ptr(1) + ptr(5) + ptr(2) + ptr(8) + ptr(9) + ptr(99) + ptr(0) + ptr(10) + ptr(5)
    head = struct.pack("<HBBIIIII", fmt.BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings))
    return head + types + strings


def test_scanned_equals_index_on_odd_strings() -> None:
    """Repeated strings, offsets into the middle of a string, NULs, out-of-range offsets, repeats."""
    scanned, index = _both(BTF.from_bytes(_odd_blob()))
    for name in (b"abc", b"bc", b"c", b"", b"nope", b"a", b"abc\0bc", b"\0"):
        assert scanned.positions(name) == index.positions(name), name
    assert scanned._mid is None  # (few occurrences mid-string: each was looked for by itself)


@pytest.mark.parametrize(("checks", "global_check"), [(0, True), (1, True), (8, None)])
def test_mid_string_occurrences_one_by_one_or_after_the_global_check(monkeypatch: pytest.MonkeyPatch, checks: int,
                                                                     global_check: bool | None) -> None:
    """Occurrences mid-string are found one by one up to _MID_CHECKS, past it by the one-time check:
    the same answers either way."""
    import corepy.btf.strings as strings

    monkeypatch.setattr(strings, "_MID_CHECKS", checks)
    scanned, index = _both(BTF.from_bytes(_odd_blob()))
    for name in (b"bc", b"c", b"abc", b"nope"):
        assert scanned.positions(name) == index.positions(name), name
    assert scanned._mid is global_check  # ("bc" ends both "abc": 2 occurrences mid-string)
    assert scanned.positions(b"bc") == [1, 2, 7, 8]
    assert scanned.positions(b"abc") == [0, 4]


def test_scanned_equals_index_on_repeated_strings_without_mid_string_offsets() -> None:
    """Every name offset at a string start (the fast path): repeated strings still all found, and a
    string's tail is no name."""
    strings = b"\0abc\0bc\0abc\0"  # "abc" at 1 and 8, "bc" at 5; tail "bc" of "abc" names nothing
    ptr = lambda name_off: struct.pack("<III", name_off, 2 << 24, 0)  # noqa: E731
    types = ptr(8) + ptr(5) + ptr(1) + ptr(0) + ptr(8)
    head = struct.pack("<HBBIIIII", fmt.BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings))
    scanned, index = _both(BTF.from_bytes(head + types + strings))
    assert not scanned._mid_string
    for name in (b"abc", b"bc", b"c", b"", b"nope"):
        assert scanned.positions(name) == index.positions(name), name
    assert scanned.positions(b"abc") == [0, 2, 4]
    assert scanned.positions(b"bc") == [1]


def test_lookups_switch_to_the_index_after_the_threshold() -> None:
    btf = BTF.from_bytes(_odd_blob())
    expected = {"abc": [1, 5], "bc": [2, 3, 8, 9], "c": [], "": []}
    for n in range(SCANNED_LOOKUPS):
        assert btf._index is None
        name = list(expected)[n % len(expected)]
        assert btf.ids_by_name(name) == expected[name]
    assert btf._index is None and btf._scanned is not None and btf._scanned._mid_string
    assert btf.ids_by_name("bc") == expected["bc"]  # one more: the full index now
    assert btf._index is not None and btf._scanned is None
    assert sorted(btf.names()) == ["abc", "bc"]


def test_names_builds_the_index_at_once() -> None:
    btf = BTF.from_bytes(_odd_blob())
    assert sorted(btf.names()) == ["abc", "bc"]
    assert btf._index is not None
    assert btf.ids_by_name("abc") == [1, 5]


def _check_sample(btf: BTF, count: int, seed: int) -> None:
    scanned, index = _both(btf)
    assert not scanned._mid_string  # (deduplicated kernel BTF: the path the loads take)
    names = sorted(index.names())
    sample = random.Random(seed).sample(names, min(count, len(names)))
    for name in sample + [b"long", b"int", b"id", b"pid", b"task_struct", b"no_such_name"]:
        assert scanned.positions(name) == index.positions(name), name


@pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no /sys/kernel/btf/vmlinux")
def test_scanned_equals_index_on_running_kernel() -> None:
    btf = BTF.from_file(KERNEL_BTF)
    _check_sample(btf, 400, 1)


@pytest.mark.parametrize("name", OTHER_KERNELS)
def test_scanned_equals_index_on_other_kernels(name: str) -> None:
    _check_sample(BTF.from_bytes(btf_blob(name)), 150, 2)


def _int_blob(*ints: tuple[bytes, int]) -> bytes:
    strings, types = b"\0", b""
    for name, size in ints:
        types += struct.pack("<IIII", len(strings), 1 << 24, size, size * 8)
        strings += name + b"\0"
    types += struct.pack("<III", 0, 2 << 24, 1)  # a PTR after them
    head = struct.pack("<HBBIIIII", fmt.BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings))
    return head + types + strings


def test_pointer_size_from_the_first_long_in_id_order_without_lookups() -> None:
    btf = BTF.from_bytes(_int_blob((b"char", 1), (b"int", 4), (b"long int", 4), (b"long unsigned int", 8)))
    assert btf.pointer_size == 4
    assert btf._scanned is None and btf._index is None  # no lookup by name was needed
    assert BTF.from_bytes(_int_blob((b"int", 4), (b"long long int", 8))).pointer_size == 8  # no long: 8
    assert BTF.from_bytes(_int_blob((b"long", 2), (b"unsigned long", 4))).pointer_size == 4  # sizes 4/8 only


@pytest.mark.parametrize("name", OTHER_KERNELS)
def test_pointer_size_as_the_long_types_of_other_kernels_say(name: str) -> None:
    btf = BTF.from_bytes(btf_blob(name))
    longs = {t.size for n in ("long int", "long unsigned int") for t in btf.find(n)}
    assert longs == {btf.pointer_size}


def test_named_names_read_inside_the_strings_only() -> None:
    """The C-level name reads skip unnamed types and never read outside the strings: an offset
    at or past the end reads as b"" (as a one-by-one read of a broken name does); one of 2**24 or
    more, or strings without a final NUL, leave the reading to the one-by-one path (None)."""
    from array import array

    from corepy.btf.strings import _named_names

    strtab = b"\0abc\0de\0"
    assert _named_names(strtab, array("I", [1, 0, 5, 2, 0, 0, 7])) == [b"abc", b"de", b"bc", b""]
    for bad in (len(strtab), len(strtab) + 1, 0x10000, 0xFFFFFF):
        assert _named_names(strtab, array("I", [1, bad, 5])) == [b"abc", b"", b"de"]
    for bad in (0x1000000, 0xFFFFFFFF):
        assert _named_names(strtab, array("I", [1, bad, 5])) is None
    assert _named_names(b"\0abc", array("I", [1])) is None  # no final NUL: never handed to strlen
    assert _named_names(strtab, array("I")) == []
    assert _named_names(strtab, array("I", [0, 0])) == []
    # zero words among offsets whose bytes hold zeros at every alignment
    offsets = array("I", [0x100, 0, 0x10000, 0, 0, 0x1, 0x10100])
    big = bytearray(0x10200)
    for off, text in ((0x100, b"x"), (0x10000, b"y"), (0x1, b"z"), (0x10100, b"w")):
        big[off : off + 1] = text
    assert _named_names(bytes(big), offsets) == [b"x", b"y", b"z", b"w"]


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize("base", [0x7F0012345678, 0x7F00FFFFF000, 0xFFFFFFFF, 0x100000000, 0])
def test_pointer_lanes_add_the_base_to_every_offset(order: str, base: int) -> None:
    """Both ways of adding (4-byte lanes where no lane can carry, else 8-byte lanes) give base + offset."""
    from corepy.btf.strings import _pointer_lanes

    offsets = [0, 1, 0xFFF, 0x1000, 0xFFFFFF, 0x123456, 0xFFFFFE]
    packed = b"".join(o.to_bytes(4, order) for o in offsets)
    lanes = _pointer_lanes(packed, base, order)
    assert [int.from_bytes(lanes[i : i + 8], order) for i in range(0, len(lanes), 8)] == [base + o for o in offsets]


def test_address_of_read_only_and_sliced_buffers() -> None:
    """The C API reports where a read-only buffer starts (a bytes object, a slice of a view);
    a non-contiguous view gets None (no address to read strings from)."""
    import ctypes

    from corepy.btf.strings import _address_of

    data = b"\0abc\0"
    base = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    assert _address_of(data) == base
    assert _address_of(memoryview(data)[2:]) == base + 2
    assert _address_of(memoryview(data)[::2]) is None


def test_full_index_fast_and_one_by_one_paths_agree() -> None:
    """The index built from the C-level name reads equals the one built from names read one by one
    (name offsets in a list take that path), on a kernel's BTF and on odd strings."""
    from corepy.btf.strings import _named_names

    for btf in (BTF.from_bytes(_odd_blob()), BTF.from_bytes(btf_blob("vmlinux-6.12.117"))):
        assert _named_names(btf.strings_bytes(), btf._name_offs) is not None  # (the fast path serves here)
        fast = NameIndex(btf._name_offs, btf._string_bytes, btf.strings_bytes())
        slow = NameIndex(list(btf._name_offs), btf._string_bytes, btf.strings_bytes())
        assert fast._first == slow._first and fast._shared == slow._shared
