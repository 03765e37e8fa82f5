"""Live maps on the real kernel: every basic map type, typed access through BTF,
per-CPU values, queues, bloom filters, batches, freezing, pinning and ids."""

from __future__ import annotations

import errno
import os
import struct
import uuid

import pytest

from corepy.asm.insn import ALU64, EXIT_INSN, MOV, Insn
from corepy.btf.spec import BTF
from corepy.errors import BPFPermissionError, CorepyError, SyscallError
from corepy.maps import Map, MapIncompatibleError
from corepy.syscalls import load as sysload
from corepy.syscalls import maps as sysmaps
from corepy.syscalls.cpus import possible_cpu_count
from corepy.syscalls.uapi import BPF_EXIST, BPF_NOEXIST, MapFlag, MapType, ProgType

from conftest import fixture_obj, requires_root

pytestmark = [requires_root, pytest.mark.usefixtures("no_fd_leak")]


# --- a tiny hand-written BTF: u32, u64, struct pair {u32 a; u32 b; u64 c}, int ---------
def _btf_blob() -> bytes:
    strings = b"\0u32\0u64\0pair\0a\0b\0c\0int\0"
    off = {name: strings.index(name.encode() + b"\0") for name in ("u32", "u64", "pair", "a", "b", "c", "int")}

    def btf_type(name: str, kind: int, vlen: int, size: int) -> bytes:
        return struct.pack("<III", off[name], (kind << 24) | vlen, size)

    types = (
        btf_type("u32", 1, 0, 4) + struct.pack("<I", 32)  # [1] INT u32
        + btf_type("u64", 1, 0, 8) + struct.pack("<I", 64)  # [2] INT u64
        + btf_type("pair", 4, 3, 16)  # [3] STRUCT pair
        + struct.pack("<III", off["a"], 1, 0) + struct.pack("<III", off["b"], 1, 32) + struct.pack("<III", off["c"], 2, 64)
        + btf_type("int", 1, 0, 4) + struct.pack("<I", (1 << 24) | 32)  # [4] INT int (signed)
    )
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


U32, U64, PAIR, INT = 1, 2, 3, 4


@pytest.fixture(scope="module")
def btf() -> BTF:
    return BTF.from_bytes(_btf_blob(), source="test BTF")


@pytest.fixture
def btf_fd():
    with sysload.btf_load(_btf_blob()) as fd:
        yield fd


@pytest.fixture
def pin_dir():
    if not os.path.ismount("/sys/fs/bpf"):
        os.makedirs("/sys/fs/bpf", exist_ok=True)
        assert os.system("mount -t bpf bpf /sys/fs/bpf") == 0
    path = f"/sys/fs/bpf/corepy-test-{uuid.uuid4().hex[:8]}"
    os.mkdir(path)
    try:
        yield path
    finally:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)


# --- basic types --------------------------------------------------------------------------
def test_array_dict_like():
    with Map.create(MapType.ARRAY, 4, 8, 8, name="arr") as m:
        assert m[3] == 0  # arrays are zero-filled
        m[3] = 2**64 - 1
        assert m[3] == 2**64 - 1 and m.get(3) == 2**64 - 1
        assert 3 in m and 8 not in m
        assert m.get(8, "absent") == "absent"
        with pytest.raises(KeyError):
            m[8]
        assert list(m.keys()) == list(range(8))
        assert dict(m.items())[3] == 2**64 - 1
        assert len(m) == 8
        with pytest.raises(SyscallError) as e:
            m[9] = 1  # beyond max_entries
        assert e.value.errno == errno.E2BIG
        with pytest.raises(SyscallError):
            del m[3]  # array elements cannot be deleted (EINVAL)
        with pytest.raises(TypeError, match="arr"):
            m["three"]
        assert m.raw[struct.pack("<I", 3)] == b"\xff" * 8


def test_hash_crud_and_flags():
    with Map.create(MapType.HASH, 4, 8, 16, name="h") as m:
        assert m.get(1) is None and 1 not in m
        m[1] = 10
        m.update(2, 20, BPF_NOEXIST)
        with pytest.raises(KeyError):
            m.update(2, 21, BPF_NOEXIST)
        with pytest.raises(KeyError):
            m.update(3, 30, BPF_EXIST)
        m.update(2, 22, BPF_EXIST)
        assert dict(m.items()) == {1: 10, 2: 22}
        assert sorted(m.keys()) == [1, 2] and sorted(m.values()) == [10, 22] and len(m) == 2
        del m[1]
        with pytest.raises(KeyError):
            del m[1]
        assert m.delete(2) is True and m.delete(2) is False
        assert list(m) == []
        for i in range(16):
            m[i] = i
        with pytest.raises(SyscallError) as e:
            m[100] = 1  # full
        assert e.value.errno == errno.E2BIG
        assert m.lookup_and_delete(5) == 5 and 5 not in m


def test_iteration_agrees_with_raw_syscalls():
    with Map.create(MapType.HASH, 4, 4, 64, name="it") as m:
        for i in range(50):
            m[i * 7] = i
        keys, key = [], None
        while (key := sysmaps.map_get_next_key(m.fd, key, 4)) is not None:
            keys.append(struct.unpack("<I", key)[0])
        assert list(m.keys()) == keys and sorted(keys) == [i * 7 for i in range(50)]


def test_lru_hash_evicts():
    with Map.create(MapType.LRU_HASH, 4, 8, 64, name="lru") as m:
        for i in range(1000):
            m[i] = i
        n = len(m)
        assert 0 < n <= 64 * possible_cpu_count() and 999 in m


@pytest.mark.parametrize("map_type", [MapType.PERCPU_ARRAY, MapType.PERCPU_HASH, MapType.LRU_PERCPU_HASH])
def test_per_cpu_values(map_type):
    ncpus = possible_cpu_count()
    with Map.create(map_type, 4, 4, 8, name="pc") as m:
        m[1] = list(range(100, 100 + ncpus))
        assert m[1] == list(range(100, 100 + ncpus))
        m[2] = 7  # one value: every CPU
        assert m[2] == [7] * ncpus
        raw = m.raw[struct.pack("<I", 1)]
        assert len(raw) == 8 * ncpus  # 4-byte values in 8-byte slots
        assert [struct.unpack_from("<I", raw, 8 * i)[0] for i in range(ncpus)] == list(range(100, 100 + ncpus))
        with pytest.raises(ValueError, match="possible CPUs"):
            m[3] = [1] * (ncpus + 1)
        assert dict(m.lookup_batch())[1] == list(range(100, 100 + ncpus))


def test_lpm_trie_typed_struct_key():
    zoo = BTF.from_file(str(fixture_obj("maps_zoo")))
    key_id = zoo.find_one("ipv4_lpm_key").id
    u32_id = zoo.find_one("__u32").id
    with Map.create(MapType.LPM_TRIE, 8, 4, 16, name="lpm", flags=MapFlag.NO_PREALLOC,
                    btf=zoo, key_type_id=key_id, value_type_id=u32_id) as m:
        m[{"prefixlen": 8, "addr": [10, 0, 0, 0]}] = 8
        m[{"prefixlen": 16, "addr": [10, 1, 0, 0]}] = 16
        assert m[{"prefixlen": 32, "addr": [10, 1, 2, 3]}] == 16  # longest prefix
        assert m[{"prefixlen": 32, "addr": [10, 2, 2, 3]}] == 8
        assert m.get({"prefixlen": 32, "addr": [11, 0, 0, 0]}) is None
        keys = sorted((k.prefixlen, bytes(k.addr)) for k in m.keys())
        assert keys == [(8, b"\x0a\0\0\0"), (16, b"\x0a\x01\0\0")]
        assert sorted(v for _, v in m.lookup_batch()) == [8, 16]  # batch or per-element fallback


def test_typed_struct_values(btf, btf_fd):
    with Map.create(MapType.HASH, 4, 16, 8, name="typed", btf=btf, btf_fd=btf_fd,
                    key_type_id=INT, value_type_id=PAIR) as m:
        m[-5] = {"a": 1, "b": 2, "c": 3}
        value = m[-5]
        assert (value.a, value.b, value.c) == (1, 2, 3)
        value.c = 2**40
        m[-5] = value
        assert m[-5].c == 2**40
        assert m.raw[struct.pack("<i", -5)] == struct.pack("<IIQ", 1, 2, 2**40)
        info = m.info()
        assert info.btf_id and info.btf_key_type_id == INT and info.btf_value_type_id == PAIR


def test_btf_refused_falls_back_without(btf, btf_fd):
    # value type 'pair' (16 bytes) does not match value_size 8: the kernel refuses the BTF,
    # the map is created without it, as libbpf does
    with pytest.warns(RuntimeWarning, match="'fallback'.*without BTF"):
        m = Map.create(MapType.HASH, 4, 8, 8, name="fallback", btf=None, btf_fd=btf_fd,
                       key_type_id=U32, value_type_id=PAIR)
    with m:
        assert m.info().btf_id == 0
        m[1] = 2
        assert m[1] == 2


def test_queue_and_stack():
    with Map.create(MapType.QUEUE, 0, 4, 3, name="q") as q, Map.create(MapType.STACK, 0, 4, 3, name="s") as s:
        for v in (1, 2, 3):
            q.push(v)
            s.push(v)
        with pytest.raises(SyscallError):
            q.push(4)  # full
        q.push(4, BPF_EXIST)  # overwrite the oldest
        assert q.peek() == 2 and s.peek() == 3
        assert [q.pop() for _ in range(4)] == [2, 3, 4, None]
        assert [s.pop() for _ in range(4)] == [3, 2, 1, None]
        with pytest.raises(TypeError, match="no keys"):
            q[0]


def test_a_forgotten_keyless_map_is_freed_without_the_garbage_collector():
    """No reference cycle through the preallocated buffers: dropping a queue or ring buffer map
    (never closed) frees it, and closes its fd, at once."""
    import gc
    import weakref

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for args in ((MapType.QUEUE, 0, 4, 3), (MapType.RINGBUF, 0, 0, 4096)):
            m = Map.create(*args, name="forgotten")
            fd, ref = m.fileno(), weakref.ref(m)
            del m
            assert ref() is None, f"{args[0].name} map kept alive by a reference cycle"
            with pytest.raises(OSError):
                os.fstat(fd)  # (the fd was closed by the map's FD going away)
    finally:
        if gc_was_enabled:
            gc.enable()


def test_bloom_filter():
    with Map.create(MapType.BLOOM_FILTER, 0, 4, 64, name="bloom", map_extra=3) as b:
        for v in range(0, 40, 2):
            b.push(v)
        assert all(b.contains(v) for v in range(0, 40, 2))
        assert 2 in b
        assert sum(b.contains(v) for v in range(1, 40, 2)) < 20  # some are certainly absent


def test_ringbuf_and_perf_event_array_create():
    with Map.create(MapType.RINGBUF, 0, 0, 64 * 1024, name="rb") as rb:
        assert rb.info().max_entries == 64 * 1024
    with Map.create(MapType.PERF_EVENT_ARRAY, 4, 4, 0, name="pe") as pe:
        assert pe.max_entries == possible_cpu_count() == pe.info().max_entries


# --- batches -------------------------------------------------------------------------------
def test_batch_hash_roundtrip():
    with Map.create(MapType.HASH, 4, 8, 5000, name="batch") as m:
        want = {i: i * 3 for i in range(5000)}
        assert m.update_batch(want) == 5000
        assert dict(m.lookup_batch(batch_size=97)) == want
        assert dict(m.lookup_batch()) == want
        assert m.delete_batch(range(1000)) == 1000
        assert len(m) == 4000
        got = dict(m.lookup_and_delete_batch(batch_size=333))
        assert got == {k: v for k, v in want.items() if k >= 1000}
        assert list(m.keys()) == []


def test_batch_array_and_fallback():
    with Map.create(MapType.ARRAY, 4, 4, 100, name="barr") as m:
        m.update_batch((i, i + 1) for i in range(100))
        assert m.lookup_batch() == [(i, i + 1) for i in range(100)]
    with Map.create(MapType.LPM_TRIE, 8, 4, 10, name="lpmfb", flags=MapFlag.NO_PREALLOC) as typed:
        # LPM tries have no batch operations: element-by-element fallback
        m = typed.raw
        keys = [struct.pack("<I4s", 24, bytes([10, i, 0, 0])) for i in range(5)]
        assert m.update_batch((k, struct.pack("<I", i)) for i, k in enumerate(keys)) == 5
        assert sorted(m.lookup_batch()) == sorted(zip(keys, [struct.pack("<I", i) for i in range(5)]))
        assert m.delete_batch(keys[:2]) == 2 and len(m) == 3


# --- freeze, pin, ids, fd-valued maps ----------------------------------------------------
def test_frozen_map_refuses_writes():
    with Map.create(MapType.ARRAY, 4, 4, 1, name="frozen") as m:
        m[0] = 42
        m.freeze()
        with pytest.raises(BPFPermissionError, match="frozen"):
            m[0] = 1
        assert m[0] == 42


def test_pin_from_pinned_from_id_with_kernel_btf(btf, btf_fd, pin_dir):
    path = os.path.join(pin_dir, "typed")
    with Map.create(MapType.HASH, 4, 16, 4, name="pinme", btf=btf, btf_fd=btf_fd,
                    key_type_id=U32, value_type_id=PAIR) as m:
        m[7] = {"a": 1, "b": 2, "c": 3}
        m.pin(path)
        map_id = m.info().id
    with Map.from_pinned(path) as again:  # BTF fetched from the kernel by id
        assert again.btf is not None and again.name == "pinme"
        assert again[7].c == 3 and again.info().id == map_id
        again.unpin()
    assert not os.path.exists(path)
    with pytest.raises(SyscallError):
        Map.from_id(map_id)  # no pin, no fd: gone


def test_from_id_and_closed_map():
    with Map.create(MapType.ARRAY, 4, 4, 2, name="byid") as m:
        m[1] = 5
        with Map.from_id(m.info().id) as other:
            assert other[1] == 5 and other.type == MapType.ARRAY and other.btf is None
    with pytest.raises(ValueError, match="closed"):
        m[1]
    m.close()  # idempotent


def test_map_in_map():
    with Map.create(MapType.ARRAY, 4, 8, 1, name="inner") as inner, \
            Map.create(MapType.ARRAY, 4, 8, 1, name="inner2") as inner2:
        with Map.create(MapType.ARRAY_OF_MAPS, 4, 4, 2, name="outer", inner_map=inner) as outer, \
                Map.create(MapType.HASH_OF_MAPS, 4, 4, 2, name="outerh", inner_map=inner) as outerh:
            outer[0] = inner
            outerh[9] = inner2.fd
            assert outer[0] == inner.info().id
            assert outerh[9] == inner2.info().id
            assert outer.get(1) is None  # empty slot
            with Map.from_id(outer[0]) as same:
                assert same.info().id == inner.info().id


def test_prog_array():
    insns = [Insn(ALU64 | MOV, dst=0, imm=0), Insn(EXIT_INSN)]
    with sysload.prog_load(ProgType.SOCKET_FILTER, insns, name="tail") as prog, \
            Map.create(MapType.PROG_ARRAY, 4, 4, 4, name="jmp") as jmp:
        jmp[2] = prog
        from corepy.syscalls.objects import prog_info

        assert jmp[2] == prog_info(prog).info.id
        assert jmp.get(0) is None
        del jmp[2]
        assert 2 not in jmp


def test_from_spec_pin_by_name_reuse_and_incompatible(pin_dir):
    from corepy.object.spec import PIN_BY_NAME, MapSpec

    spec = MapSpec(name="shared", type=MapType.ARRAY, key_size=4, value_size=8, max_entries=4, pinning=PIN_BY_NAME)
    with Map.from_spec(spec, pin_root=pin_dir) as first:
        assert not first.reused and os.path.exists(os.path.join(pin_dir, "shared"))
        first[1] = 99
        with Map.from_spec(spec, pin_root=pin_dir) as second:
            assert second.reused and second[1] == 99
            assert second.info().id == first.info().id
        spec.max_entries = 8
        spec.value_size = 4
        with pytest.raises(MapIncompatibleError, match="max_entries 4 pinned vs 8 declared") as e:
            Map.from_spec(spec, pin_root=pin_dir)
        assert "value_size 8 pinned vs 4 declared" in str(e.value)


def test_from_spec_global_data_and_ringbuf_size():
    from corepy.object.spec import MapSpec

    rodata = MapSpec(name=".rodata", type=MapType.ARRAY, key_size=4, value_size=8, max_entries=1,
                     flags=MapFlag.RDONLY_PROG | MapFlag.MMAPABLE, data=bytearray(b"\x01\x02"), internal=True)
    with Map.from_spec(rodata) as m:
        assert m.raw[b"\0\0\0\0"] == b"\x01\x02" + bytes(6)
        with pytest.raises(BPFPermissionError):
            m.raw[b"\0\0\0\0"] = bytes(8)  # frozen
        assert bytes(m.mmap(writable=False)[:2]) == b"\x01\x02"
    rb = MapSpec(name="rb", type=MapType.RINGBUF, key_size=0, value_size=0, max_entries=5000)
    with Map.from_spec(rb) as m:
        assert m.info().max_entries == 8192  # libbpf rounds up to page * 2**n


def test_create_errors_are_clear():
    with pytest.raises(SyscallError, match="'bad'"):
        Map.create(MapType.HASH, 0, 8, 4, name="bad")  # hash maps need a key


# --- the other map types, where this kernel has them (probed) --------------------------------
def cgroup2_dir() -> str:
    with open("/proc/self/mounts") as f:
        for line in f:
            _, where, fstype, *_ = line.split()
            if fstype == "cgroup2":
                return where
    pytest.skip("no cgroup2 hierarchy mounted (/proc/self/mounts)")


def _need(map_type):
    from corepy.syscalls import features

    if not features.has_map_type(map_type):
        pytest.skip(features.feature_reason("map_type", int(map_type)))


@pytest.mark.parametrize("map_type", [MapType.TASK_STORAGE, MapType.SK_STORAGE, MapType.CGRP_STORAGE,
                                      MapType.INODE_STORAGE])
def test_local_storage_maps(map_type, btf, btf_fd, tmp_path):
    import socket

    _need(map_type)
    with Map.create(map_type, 4, 8, 0, name="storage", flags=MapFlag.NO_PREALLOC, btf=btf, btf_fd=btf_fd,
                    key_type_id=INT, value_type_id=U64) as m:
        # user space names the owner by an fd: a pidfd, a socket, a cgroup directory, a file
        if map_type == MapType.TASK_STORAGE:
            owner = os.pidfd_open(os.getpid())
        elif map_type == MapType.SK_STORAGE:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            owner = os.dup(sock.fileno())
            sock.close()
        elif map_type == MapType.CGRP_STORAGE:
            owner = os.open(cgroup2_dir(), os.O_RDONLY | os.O_DIRECTORY)
        else:
            path = tmp_path / "inode"
            path.write_bytes(b"")
            owner = os.open(path, os.O_RDONLY)
        try:
            assert owner not in m
            try:
                m[owner] = 2**40 + 5
            except BPFPermissionError as e:
                pytest.skip(f"{map_type.name} updates from user space refused here: {e}")
            assert m[owner] == 2**40 + 5
            del m[owner]
            assert m.get(owner) is None
        finally:
            os.close(owner)


def test_devmap_cpumap_sockmap_and_others():
    import socket

    checked = []
    for map_type in (MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.CPUMAP, MapType.XSKMAP, MapType.SOCKMAP,
                     MapType.SOCKHASH, MapType.CGROUP_ARRAY, MapType.STACK_TRACE):
        from corepy.syscalls import features

        if not features.has_map_type(map_type):
            continue
        value_size = {MapType.SOCKMAP: 8, MapType.SOCKHASH: 8, MapType.STACK_TRACE: 64}.get(map_type, 4)
        with Map.create(map_type, 4, value_size, 4, name=map_type.name.lower()[:15]) as m:
            if map_type in (MapType.DEVMAP, MapType.DEVMAP_HASH):
                m[1] = socket.if_nametoindex("lo")
                assert m[1] == socket.if_nametoindex("lo")
            elif map_type == MapType.CPUMAP:
                m[0] = 192  # queue size of CPU 0's kthread
                assert m[0] == 192
                del m[0]
            elif map_type in (MapType.SOCKMAP, MapType.SOCKHASH):
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                with a, b:
                    m[2] = a.fileno()
                    cookie = int.from_bytes(a.getsockopt(socket.SOL_SOCKET, 57, 8), "little")  # SO_COOKIE
                    assert m[2] == cookie  # user space reads the socket cookie back
                    del m[2]
            elif map_type == MapType.CGROUP_ARRAY:
                cg = os.open(cgroup2_dir(), os.O_RDONLY | os.O_DIRECTORY)
                try:
                    m[0] = cg
                    del m[0]
                finally:
                    os.close(cg)
            elif map_type == MapType.STACK_TRACE:
                assert m.get(0) is None
            checked.append(map_type)
    assert MapType.DEVMAP in checked and MapType.SOCKMAP in checked  # present on every kernel corepy supports


def test_threads_share_a_map():
    import threading

    with Map.create(MapType.HASH, 4, 8, 4096, name="threads") as m:
        errors = []

        def worker(base: int) -> None:
            try:
                for i in range(500):
                    m[base + i] = (base + i) * 3
                    assert m[base + i] == (base + i) * 3
                    assert (base + i) in m
                for i in range(0, 500, 2):
                    del m[base + i]
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n * 1000,)) for n in range(1, 5)]
        for t in threads:
            t.start()
        worker(0)  # the creating thread at the same time
        for t in threads:
            t.join()
        assert not errors
        assert dict(m.lookup_batch()) == {b + i: (b + i) * 3 for b in range(0, 5000, 1000) for i in range(1, 500, 2)}


def test_iteration_while_deleting_terminates():
    with Map.create(MapType.HASH, 4, 4, 32, name="churn") as m:
        for i in range(32):
            m[i] = i
        seen = []
        with pytest.raises(CorepyError, match="changed under the walk"):
            for k in m.keys():
                seen.append(k)
                del m[k]  # the next GET_NEXT_KEY restarts from the first key
                m[k + 1000] = 0
        assert len(seen) == 32  # never endless: at most max_entries keys


def test_from_pinned_refuses_a_program(pin_dir):
    insns = [Insn(ALU64 | MOV, dst=0, imm=0), Insn(EXIT_INSN)]
    path = os.path.join(pin_dir, "prog")
    with sysload.prog_load(ProgType.SOCKET_FILTER, insns, name="notamap") as prog:
        from corepy.syscalls.objects import obj_pin

        obj_pin(prog, path)
    with pytest.raises(CorepyError, match="not a BPF map but bpf-prog"):
        Map.from_pinned(path)
