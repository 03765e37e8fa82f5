"""corepy.btf.codec: Python values <-> bytes through real BTF (clang-built object and the kernel's)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st

from conftest import KERNEL_BTF
from corepy.btf.codec import Codec, StructValue
from corepy.btf.spec import BTF
from corepy.errors import BTFError
from test_object_support import build_bpf

TYPES_SRC = r"""
#include <linux/types.h>
struct flat { int a; unsigned int b; char c; long long d; char name[16]; };
struct bits { unsigned int a:3; int b:5; unsigned long long c:40; _Bool f:1; };
enum color { RED = 1, GREEN = 2, BLUE = -1 };
enum big { HUGE = 0x100000000ULL };
union u { int i; unsigned char bytes[4]; float f; };
struct nested {
	struct flat f;
	union u u;
	enum color col;
	double dd;
	void *ptr;
	__int128 big;
	unsigned char mac[6];
	short arr[3];
	struct { int x; } named;
	union { int y; long z; };
	_Bool flag;
	struct flat many[2];
};
typedef const volatile struct flat flat_t;
struct flat g_flat;
struct bits g_bits;
struct nested g_nested;
union u g_u;
enum big g_big;
flat_t g_typedef;
__s8 g_s8; __u16 g_u16; __s32 g_s32; __u64 g_u64;
int g_data = 7;
"""


@pytest.fixture(scope="module")
def btf() -> BTF:
    return BTF.from_file(str(build_bpf("codec_types", TYPES_SRC)))


def var_type(btf: BTF, name: str) -> int:
    return btf.find_one(name).type_id


def codec(btf: BTF, name: str) -> Codec:
    return Codec(btf, var_type(btf, name))


def test_sizes_match_btf(btf):
    for name in ("g_flat", "g_bits", "g_nested", "g_u", "g_big", "g_typedef", "g_s8", "g_u64"):
        c = codec(btf, name)
        assert c.size == btf.resolve_size(var_type(btf, name)), name


def test_flat_struct(btf):
    c = codec(btf, "g_flat")
    raw = struct.pack("<iIb7xq16s", -3, 7, -1, 2**40, b"comm\0")
    v = c.decode(raw)
    assert isinstance(v, StructValue) and type(v).__name__ == "flat"
    assert (v.a, v.b, v.c, v.d, v.name) == (-3, 7, -1, 2**40, "comm")
    assert c.encode(v) == raw
    assert c.encode({"a": -3, "b": 7, "c": -1, "d": 2**40, "name": b"comm"}) == raw
    assert c.encode(raw) == raw  # raw bytes pass through
    assert v == {"a": -3, "b": 7, "c": -1, "d": 2**40, "name": "comm"}
    assert repr(v) == "flat(a=-3, b=7, c=-1, d=1099511627776, name='comm')"
    assert codec(btf, "g_typedef").decode(raw) == v  # typedef + const volatile are transparent
    assert c.decode(b"\0" * 4 + raw, 4) == v


def test_char_array_text_or_bytes(btf):
    c = codec(btf, "g_flat")
    base = struct.pack("<iIb7xq", 0, 0, 0, 0)
    assert c.decode(base + b"\xff\xfe" + bytes(14)).name == b"\xff\xfe" + bytes(14)
    assert c.decode(base + b"a\0b" + bytes(13)).name == b"a\0b" + bytes(13)  # bytes after the NUL
    assert c.decode(base + b"x" * 16).name == b"x" * 16  # not NUL-terminated
    assert c.decode(base + bytes(16)).name == ""
    with pytest.raises(BTFError, match="do not fit"):
        c.encode({"name": "x" * 17})


def test_bitfields(btf):
    c = codec(btf, "g_bits")
    v = c.decode(c.encode({"a": 5, "b": -7, "c": 2**40 - 1, "f": True}))
    assert (v.a, v.b, v.c, v.f) == (5, -7, 2**40 - 1, True)
    t = btf.skip_mods_and_typedefs(var_type(btf, "g_bits"))
    word = int.from_bytes(c.encode(v), "little")
    for m, value in zip(t.members, (5, -7 & 0x1F, 2**40 - 1, 1)):
        assert (word >> m.bit_offset) & ((1 << m.bitfield_size) - 1) == value, m.name
    with pytest.raises(BTFError, match="does not fit the 5-bit field 'b'"):
        c.encode({"b": 16})
    with pytest.raises(BTFError, match="3-bit field 'a'"):
        c.encode({"a": 8})


def test_nested_union_enum_and_more(btf):
    c = codec(btf, "g_nested")
    value = {
        "f": {"a": 1, "name": "x"}, "u": {"f": 1.5}, "col": "BLUE", "dd": 2.25, "ptr": 0xFFFF888000000000,
        "big": -(2**100), "mac": [1, 2, 3, 4, 5, 6], "arr": [-1, 2], "named": {"x": 9}, "_anon9": {"z": -5},
        "flag": True, "many": [{"a": 1}, {"b": 2}],
    }
    v = c.decode(c.encode(value))
    assert v.f.a == 1 and v.f.name == "x"
    assert v.u.f == 1.5 and v.u.i == struct.unpack("<i", struct.pack("<f", 1.5))[0]
    assert v.u.bytes == struct.pack("<f", 1.5)
    assert v.col == -1  # signed enum, given by name
    assert (v.dd, v.ptr, v.big, v.mac, v.arr) == (2.25, 0xFFFF888000000000, -(2**100), bytes([1, 2, 3, 4, 5, 6]), [-1, 2, 0])
    assert v.named.x == 9 and v._anon9.z == -5 and v.flag is True
    assert v.many[1].b == 2 and v.many[0].a == 1
    assert c.encode(v) == c.encode(value)
    assert c.decode(c.encode(v)) == v
    assert v._asdict()["many"][1]["b"] == 2


def test_union_last_assignment_wins(btf):
    c = codec(btf, "g_u")
    v = c.decode(struct.pack("<i", 0x01020304))
    assert (v.i, v.bytes) == (0x01020304, b"\x04\x03\x02\x01")
    v.bytes = b"\xff\0\0\0"
    assert c.decode(c.encode(v)).i == 255
    v.i = 7
    assert c.decode(c.encode(v)).bytes == b"\x07\0\0\0"


def test_enum64_and_errors(btf):
    c = codec(btf, "g_big")
    assert c.size == 8 and c.decode(c.encode("HUGE")) == 0x100000000
    with pytest.raises(BTFError, match="no enumerator 'NOPE'"):
        c.encode("NOPE")
    with pytest.raises(BTFError, match="cannot encode"):
        codec(btf, "g_s8").encode(200)
    with pytest.raises(BTFError, match="has no member"):
        codec(btf, "g_flat").encode({"zz": 1})
    with pytest.raises(BTFError, match="give a struct value, a dict or bytes"):
        codec(btf, "g_flat").encode(42)
    with pytest.raises(BTFError, match="need 40 bytes"):
        codec(btf, "g_flat").decode(b"\0" * 10)


@given(st.integers(-(2**7), 2**7 - 1), st.integers(0, 2**16 - 1), st.integers(-(2**31), 2**31 - 1),
       st.integers(0, 2**64 - 1))
def test_int_round_trip(btf, s8, u16, s32, u64):
    for name, value in (("g_s8", s8), ("g_u16", u16), ("g_s32", s32), ("g_u64", u64)):
        c = codec(btf, name)
        assert c.decode(c.encode(value)) == value


def test_datasec(btf):
    sec = btf.find_one(".data")
    c = Codec(btf, sec.id)
    v = c.decode(struct.pack("<i", 7) + bytes(max(0, c.size - 4)))
    assert v.g_data == 7


def test_encode_into_leaves_other_bytes(btf):
    c = codec(btf, "g_s32")
    buf = bytearray(b"\xaa" * 12)
    c.encode_into(buf, 4, -1)
    assert buf == b"\xaa" * 4 + b"\xff" * 4 + b"\xaa" * 4


@pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no /sys/kernel/btf/vmlinux")
def test_kernel_struct_round_trip():
    kbtf = BTF.kernel()
    info = kbtf.find_one("bpf_map_info")
    c = Codec(kbtf, info.id)
    v = c.decode(c.encode({"type": 2, "id": 10, "name": "counts", "max_entries": 64}))
    assert (v.type, v.id, v.name, v.max_entries) == (2, 10, "counts", 64)
    assert c.encode(v) == c.encode({"type": 2, "id": 10, "name": "counts", "max_entries": 64})


@pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no /sys/kernel/btf/vmlinux")
def test_kernel_composites_round_trip():
    """A sample of every struct/union of the running kernel decodes, encodes and decodes back equal."""
    from corepy.btf.types import Struct, Union

    kbtf = BTF.kernel()
    composites = [t for t in kbtf.types() if isinstance(t, (Struct, Union))]
    for t in composites[::25]:
        c = Codec(kbtf, t.id)
        raw = bytes((i * 37 + 11) & 0xFF for i in range(c.size))
        v = c.decode(raw)
        assert repr(c.decode(c.encode(v))) == repr(v), t.name or t.id
        if isinstance(t, Union):
            assert c.encode(v) == raw  # untouched unions keep their exact bytes


@pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no /sys/kernel/btf/vmlinux")
def test_member_names_python_cannot_spell():
    kbtf = BTF.kernel()
    c = Codec(kbtf, kbtf.find_one("rb_node").id)  # __rb_parent_color would be name-mangled in a class
    v = c.decode(struct.pack("<QQQ", 1, 2, 3))
    assert v["__rb_parent_color"] == getattr(v, "__rb_parent_color") == 1 and v.rb_right == 2
    w = c.value_class(rb_left=5)
    assert (w["__rb_parent_color"], w.rb_left) == (0, 5)
    with pytest.raises(TypeError, match="no member 'nope'"):
        c.value_class(nope=1)


def test_union_nested_change_is_kept(btf):
    c = codec(btf, "g_nested")
    v = c.decode(bytes(c.size))
    v.u.f = 2.5  # a union member set through the parent struct
    v._anon9.z = -2  # an anonymous union's member
    w = c.decode(c.encode(v))
    assert w.u.f == 2.5 and w._anon9.z == -2 and w._anon9.y == -2


def test_union_keeps_signaling_nan_bytes(btf):
    c = codec(btf, "g_u")
    raw = bytes.fromhex("814ea3ff")  # a signaling NaN as float: re-packing it would set the quiet bit
    assert c.encode(c.decode(raw)) == raw
