"""Map commands against the real kernel: every basic map type, iteration, batches, per-CPU, freeze."""

from __future__ import annotations

import errno
import struct

import pytest

from corepy.asm.insn import ALU64, EXIT_INSN, LD_IMM64, LDX, MEM, MOV, PSEUDO_MAP_VALUE, ST, W, K, Insn
from corepy.errors import BPFPermissionError, SyscallError, VerifierError
from corepy.syscalls import load, maps
from corepy.syscalls.cpus import possible_cpu_count
from corepy.syscalls.objects import map_info
from corepy.syscalls.uapi import BPF_EXIST, BPF_NOEXIST, MapFlag, MapType, ProgType
from tests.conftest import requires_root

pytestmark = requires_root

u32 = struct.Struct("<I")
u64 = struct.Struct("<Q")


def _kv_roundtrip(map_type: MapType, flags: int = 0) -> None:
    with maps.map_create(map_type, 4, 8, 8, flags=flags, name=map_type.name.lower()) as m:
        for i in range(5):
            maps.map_update_elem(m, u32.pack(i), u64.pack(i * 100))
        assert maps.map_lookup_elem(m, u32.pack(3), 8) == u64.pack(300)
        assert maps.map_lookup_elem(m, u32.pack(7), 8) is None
        assert maps.map_delete_elem(m, u32.pack(3)) is True
        assert maps.map_delete_elem(m, u32.pack(3)) is False
        assert maps.map_lookup_elem(m, u32.pack(3), 8) is None
        keys, key = [], None
        while (key := maps.map_get_next_key(m, key, 4)) is not None:
            keys.append(u32.unpack(key)[0])
        assert sorted(keys) == [0, 1, 2, 4]
        with pytest.raises(SyscallError) as exc:
            maps.map_update_elem(m, u32.pack(0), u64.pack(1), BPF_NOEXIST)
        assert exc.value.errno == errno.EEXIST


@pytest.mark.parametrize("map_type", [MapType.HASH, MapType.LRU_HASH])
def test_hash_like(map_type: MapType) -> None:
    _kv_roundtrip(map_type)


def test_hash_no_prealloc() -> None:
    _kv_roundtrip(MapType.HASH, MapFlag.NO_PREALLOC)


def test_array() -> None:
    with maps.map_create(MapType.ARRAY, 4, 8, 4, name="arr") as m:
        assert maps.map_lookup_elem(m, u32.pack(2), 8) == bytes(8)  # arrays are zero-filled
        maps.map_update_elem(m, u32.pack(2), u64.pack(42), BPF_EXIST)
        assert maps.map_lookup_elem(m, u32.pack(2), 8) == u64.pack(42)
        assert maps.map_lookup_elem(m, u32.pack(4), 8) is None  # out of range
        with pytest.raises(SyscallError) as exc:
            maps.map_delete_elem(m, u32.pack(0))
        assert exc.value.errno == errno.EINVAL
        keys, key = [], None
        while (key := maps.map_get_next_key(m, key, 4)) is not None:
            keys.append(u32.unpack(key)[0])
        assert keys == [0, 1, 2, 3]


@pytest.mark.parametrize("map_type", [MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH])
def test_percpu(map_type: MapType) -> None:
    cpus = possible_cpu_count()
    size = maps.percpu_value_size(4, cpus)
    assert size == 8 * cpus  # a 4-byte value takes an 8-byte slot per CPU
    with maps.map_create(map_type, 4, 4, 4, name="pcpu") as m:
        value = b"".join(struct.pack("<II", 1000 + cpu, 0) for cpu in range(cpus))
        maps.map_update_elem(m, u32.pack(1), value)
        got = maps.map_lookup_elem(m, u32.pack(1), size)
        assert got is not None
        assert [struct.unpack_from("<I", got, 8 * cpu)[0] for cpu in range(cpus)] == [1000 + c for c in range(cpus)]


def test_lpm_trie() -> None:
    key = struct.Struct("<I4s")  # prefixlen, IPv4 address
    with maps.map_create(MapType.LPM_TRIE, key.size, 8, 16, flags=MapFlag.NO_PREALLOC, name="lpm") as m:
        maps.map_update_elem(m, key.pack(8, bytes([10, 0, 0, 0])), u64.pack(8))
        maps.map_update_elem(m, key.pack(24, bytes([10, 1, 2, 0])), u64.pack(24))
        assert maps.map_lookup_elem(m, key.pack(32, bytes([10, 1, 2, 3])), 8) == u64.pack(24)
        assert maps.map_lookup_elem(m, key.pack(32, bytes([10, 9, 9, 9])), 8) == u64.pack(8)
        assert maps.map_lookup_elem(m, key.pack(32, bytes([11, 0, 0, 0])), 8) is None


@pytest.mark.parametrize("map_type,order", [(MapType.QUEUE, [1, 2, 3]), (MapType.STACK, [3, 2, 1])])
def test_queue_stack(map_type: MapType, order: list[int]) -> None:
    with maps.map_create(map_type, 0, 8, 3, name=map_type.name.lower()) as m:
        for v in (1, 2, 3):
            maps.map_update_elem(m, None, u64.pack(v))
        with pytest.raises(SyscallError) as exc:  # full
            maps.map_update_elem(m, None, u64.pack(4))
        assert exc.value.errno == errno.E2BIG
        assert maps.map_lookup_elem(m, None, 8) == u64.pack(order[0])  # peek
        popped = [maps.map_lookup_and_delete_elem(m, None, 8) for _ in range(3)]
        assert popped == [u64.pack(v) for v in order]
        assert maps.map_lookup_and_delete_elem(m, None, 8) is None  # empty
        assert maps.map_lookup_elem(m, None, 8) is None


def test_lookup_and_delete_hash() -> None:
    with maps.map_create(MapType.HASH, 4, 8, 4) as m:
        maps.map_update_elem(m, u32.pack(1), u64.pack(11))
        assert maps.map_lookup_and_delete_elem(m, u32.pack(1), 8) == u64.pack(11)
        assert maps.map_lookup_and_delete_elem(m, u32.pack(1), 8) is None


def test_bloom_filter() -> None:
    with maps.map_create(MapType.BLOOM_FILTER, 0, 8, 1000, map_extra=3, name="bloom") as m:
        maps.map_update_elem(m, None, u64.pack(1))
        assert maps.bloom_filter_contains(m, u64.pack(1))
        # false positives are possible, but not for every value in a nearly empty filter
        absent = [v for v in range(2, 50) if not maps.bloom_filter_contains(m, u64.pack(v))]
        assert absent, "every value looked present in a nearly empty bloom filter"
        with pytest.raises(SyscallError):
            maps.map_get_next_key(m, None, 0)


def test_ringbuf_create() -> None:
    with maps.map_create(MapType.RINGBUF, 0, 0, 4096 * 4, name="rb") as m:
        info = map_info(m)
        assert info.type == MapType.RINGBUF and info.max_entries == 4096 * 4
        assert info.name == b"rb"


def test_bad_ringbuf_size_names_map() -> None:
    with pytest.raises(SyscallError) as exc:
        maps.map_create(MapType.RINGBUF, 0, 0, 1000, name="badrb")
    assert exc.value.errno == errno.EINVAL
    assert "BPF_MAP_CREATE" in str(exc.value) and "badrb" in str(exc.value)


@pytest.mark.parametrize("map_type", [MapType.HASH, MapType.ARRAY])
def test_batch_ops(map_type: MapType) -> None:
    n = 10
    with maps.map_create(map_type, 4, 8, n, name="batch") as m:
        keys = b"".join(u32.pack(i) for i in range(n))
        values = b"".join(u64.pack(i * 7) for i in range(n))
        assert maps.map_update_batch(m, keys, values, n) == n
        seen: dict[int, int] = {}
        cursor = None
        rounds = 0
        while True:
            batch = maps.map_lookup_batch(m, 4, 8, 3, cursor)
            rounds += 1
            for i in range(batch.count):
                seen[u32.unpack_from(batch.keys, 4 * i)[0]] = u64.unpack_from(batch.values, 8 * i)[0]
            if batch.next_batch is None:
                break
            cursor = batch.next_batch
            assert rounds < 20
        assert seen == {i: i * 7 for i in range(n)}
        if map_type == MapType.HASH:
            assert maps.map_delete_batch(m, keys[:12], 3) == 3
            assert maps.map_lookup_elem(m, u32.pack(1), 8) is None
            got = maps.map_lookup_and_delete_batch(m, 4, 8, 32)
            assert got.count == n - 3 and got.next_batch is None
            assert maps.map_get_next_key(m, None, 4) is None


def test_frozen_map_refuses_user_writes() -> None:
    with maps.map_create(MapType.ARRAY, 4, 4, 1, name="frozen") as m:
        maps.map_update_elem(m, u32.pack(0), u32.pack(5))
        maps.map_freeze(m)
        with pytest.raises(BPFPermissionError) as exc:
            maps.map_update_elem(m, u32.pack(0), u32.pack(6))
        assert exc.value.errno == errno.EPERM
        assert maps.map_lookup_elem(m, u32.pack(0), 4) == u32.pack(5)


def test_rdonly_and_wronly_maps() -> None:
    with maps.map_create(MapType.ARRAY, 4, 4, 1, flags=MapFlag.RDONLY) as m:
        assert maps.map_lookup_elem(m, u32.pack(0), 4) == bytes(4)
        with pytest.raises(BPFPermissionError):
            maps.map_update_elem(m, u32.pack(0), u32.pack(1))
    with maps.map_create(MapType.ARRAY, 4, 4, 1, flags=MapFlag.WRONLY) as m:
        maps.map_update_elem(m, u32.pack(0), u32.pack(1))
        with pytest.raises(BPFPermissionError):
            maps.map_lookup_elem(m, u32.pack(0), 4)
    with maps.map_create(MapType.ARRAY, 4, 4, 1, flags=MapFlag.RDONLY_PROG) as m:
        maps.map_update_elem(m, u32.pack(0), u32.pack(9))  # user space may still write
        assert map_info(m).map_flags & MapFlag.RDONLY_PROG
        with pytest.raises(VerifierError) as exc:  # ...but programs may not
            load.prog_load(ProgType.SOCKET_FILTER, _touch_value(m.fileno(), write=True))
        assert "write into map forbidden" in exc.value.log
        with load.prog_load(ProgType.SOCKET_FILTER, _touch_value(m.fileno(), write=False)):
            pass
    with maps.map_create(MapType.ARRAY, 4, 4, 1, flags=MapFlag.WRONLY_PROG) as m:
        with pytest.raises(VerifierError) as exc:
            load.prog_load(ProgType.SOCKET_FILTER, _touch_value(m.fileno(), write=False))
        assert "read from map forbidden" in exc.value.log


def _touch_value(map_fd: int, write: bool) -> list[Insn]:
    """r1 = &value[0]; then *(u32 *)r1 = 1 or r0 = *(u32 *)r1; return 0"""
    access = Insn(ST | MEM | W, dst=1, imm=1) if write else Insn(LDX | MEM | W, dst=2, src=1)
    return [
        Insn(LD_IMM64, dst=1, src=PSEUDO_MAP_VALUE, imm=map_fd),
        Insn(0),
        access,
        Insn(ALU64 | MOV | K, dst=0, imm=0),
        Insn(EXIT_INSN),
    ]


def test_mmapable_array_shares_memory() -> None:
    import mmap

    with maps.map_create(MapType.ARRAY, 4, 8, 512, flags=MapFlag.MMAPABLE) as m:
        mem = mmap.mmap(m.fileno(), 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            mem[8:16] = u64.pack(0xABCDEF)
            assert maps.map_lookup_elem(m, u32.pack(1), 8) == u64.pack(0xABCDEF)
        finally:
            mem.close()


def test_errors_are_corepy_errors() -> None:
    with pytest.raises(SyscallError) as exc:
        maps.map_create(MapType.HASH, 0, 8, 1)  # hash maps need a key
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(SyscallError) as exc:
        maps.map_lookup_elem(999_999, u32.pack(0), 4)
    assert exc.value.errno == errno.EBADF
