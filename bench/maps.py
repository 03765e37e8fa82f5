"""Map access speed: corepy vs libbpf (Debian's libbpf.so.1 through ctypes), same run.

1. per-element lookup on an array map (u32 -> u64): corepy ``m[k]`` (typed, decoded to
   int) vs ``bpf_map_lookup_elem`` with preallocated ctypes buffers and the value
   decoded with a precompiled struct;
2. batch lookup of a 100k-entry hash map (u32 -> u64) decoded to Python ints:
   corepy ``m.lookup_batch()`` vs ``bpf_map_lookup_batch`` looped to the end, decoded
   the same way (memoryview casts).

Needs root. Last line: ``lookup_us=.. libbpf_lookup_us=.. batch_meps=.. libbpf_batch_meps=..``.
"""

from __future__ import annotations

import ctypes
import errno
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from corepy.maps import Map  # noqa: E402
from corepy.syscalls.uapi import MapType  # noqa: E402

LOOKUPS = 20_000  # per round; rounds alternate corepy/libbpf and the best round counts
LOOKUP_ROUNDS = 40
ENTRIES = 100_000
ROUNDS = 7


def corepy_lookup(m: Map) -> float:
    keys = range(LOOKUPS)
    t = time.perf_counter()
    for i in keys:
        m[i & 1023]
    return (time.perf_counter() - t) / LOOKUPS


def libbpf_lookup(lib: ctypes.CDLL, fd: int) -> float:
    key, value = ctypes.c_uint32(0), ctypes.create_string_buffer(8)
    kref, vref = ctypes.byref(key), value
    lookup, unpack = lib.bpf_map_lookup_elem, struct.Struct("<Q").unpack_from
    t = time.perf_counter()
    for i in range(LOOKUPS):
        key.value = i & 1023
        if lookup(fd, kref, vref):
            raise OSError(ctypes.get_errno(), "bpf_map_lookup_elem")
        unpack(value)[0]
    return (time.perf_counter() - t) / LOOKUPS


def corepy_batch(m: Map) -> float:
    t = time.perf_counter()
    pairs = m.lookup_batch()
    dt = time.perf_counter() - t
    assert len(pairs) == ENTRIES and pairs[0][1] == pairs[0][0] * 2
    return dt


def libbpf_batch(lib: ctypes.CDLL, fd: int) -> float:
    count = ENTRIES
    keys, values = ctypes.create_string_buffer(4 * count), ctypes.create_string_buffer(8 * count)
    cursor_in, cursor_out = ctypes.c_uint64(0), ctypes.c_uint64(0)
    n = ctypes.c_uint32()
    t = time.perf_counter()
    out: list[tuple[int, int]] = []
    first = True
    while True:
        n.value = count
        rc = lib.bpf_map_lookup_batch(fd, None if first else ctypes.byref(cursor_in), ctypes.byref(cursor_out),
                                      keys, values, ctypes.byref(n), None)
        err = ctypes.get_errno() if rc else 0
        if rc and err != errno.ENOENT:
            raise OSError(err, "bpf_map_lookup_batch")
        got = n.value
        out.extend(zip(memoryview(keys).cast("B")[: 4 * got].cast("I").tolist(),
                       memoryview(values).cast("B")[: 8 * got].cast("Q").tolist()))
        if rc:
            break
        cursor_in.value, first = cursor_out.value, False
    dt = time.perf_counter() - t
    assert len(out) == ENTRIES
    return dt


def main() -> int:
    lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
    lib.bpf_map_lookup_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    lib.bpf_map_lookup_batch.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 6
    with Map.create(MapType.ARRAY, 4, 8, 1024, name="bench_arr") as arr, \
            Map.create(MapType.HASH, 4, 8, ENTRIES, name="bench_hash") as h:
        arr.update_batch((i, i) for i in range(1024))
        h.update_batch((i, 2 * i) for i in range(ENTRIES))
        lookup = libbpf_lookup_s = float("inf")
        for _ in range(LOOKUP_ROUNDS):  # interleaved, so both see the same machine load
            lookup = min(lookup, corepy_lookup(arr))
            libbpf_lookup_s = min(libbpf_lookup_s, libbpf_lookup(lib, arr.fileno()))
        batch = libbpf_batch_s = float("inf")
        for _ in range(ROUNDS):
            batch = min(batch, corepy_batch(h))
            libbpf_batch_s = min(libbpf_batch_s, libbpf_batch(lib, h.fileno()))
    print(f"per-element lookup (array, typed): corepy {lookup * 1e6:.2f} us, libbpf-ctypes {libbpf_lookup_s * 1e6:.2f} us")
    print(f"batch lookup ({ENTRIES} hash entries, decoded): corepy {ENTRIES / batch / 1e6:.2f} M/s, "
          f"libbpf-ctypes {ENTRIES / libbpf_batch_s / 1e6:.2f} M/s")
    print(f"lookup_us={lookup * 1e6:.2f} libbpf_lookup_us={libbpf_lookup_s * 1e6:.2f} "
          f"batch_meps={ENTRIES / batch / 1e6:.2f} libbpf_batch_meps={ENTRIES / libbpf_batch_s / 1e6:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
