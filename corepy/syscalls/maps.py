"""Map commands: MAP_CREATE and the element, freeze and batch operations.

Keys and values are ``bytes``. Absence is not an error: lookups return ``None``,
``map_delete_elem`` returns ``False`` and ``map_get_next_key`` returns ``None``
when the kernel answers ENOENT; every other failure raises
:class:`~corepy.errors.SyscallError`. Per-CPU maps take and return
``round_up(value_size, 8) * possible_cpus`` bytes (see :func:`percpu_value_size`).
"""

from __future__ import annotations

import ctypes
import errno

from .._records import record
from ..errors import raise_for_errno
from .attr import MapBatchAttr, MapCreateAttr, MapElemAttr, ptr
from .bpf import bpf, bpf_errno
from .fd import FD, FdLike, fdnum
from .uapi import Cmd, MapType


def obj_name(name: str) -> bytes:
    """``name`` as the kernel's 16-byte object name field takes it (15 chars + NUL, truncated)."""
    return name.encode()[:15]


def percpu_value_size(value_size: int, cpus: int) -> int:
    """Bytes of a per-CPU map value buffer: one 8-byte aligned slot per possible CPU."""
    return ((value_size + 7) & ~7) * cpus


def map_create(
    map_type: MapType | int,
    key_size: int,
    value_size: int,
    max_entries: int,
    *,
    flags: int = 0,
    name: str = "",
    inner_map_fd: FdLike | None = None,
    numa_node: int = 0,
    ifindex: int = 0,
    btf_fd: FdLike | None = None,
    btf_key_type_id: int = 0,
    btf_value_type_id: int = 0,
    btf_vmlinux_value_type_id: int = 0,
    map_extra: int = 0,
    value_type_btf_obj_fd: FdLike | None = None,
    token_fd: FdLike | None = None,
) -> FD:
    """BPF_MAP_CREATE: a new map."""
    attr = MapCreateAttr(
        map_type=int(map_type),
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_flags=int(flags),
        inner_map_fd=fdnum(inner_map_fd),
        numa_node=numa_node,
        map_name=obj_name(name),
        map_ifindex=ifindex,
        btf_fd=fdnum(btf_fd),
        btf_key_type_id=btf_key_type_id,
        btf_value_type_id=btf_value_type_id,
        btf_vmlinux_value_type_id=btf_vmlinux_value_type_id,
        map_extra=map_extra,
        value_type_btf_obj_fd=fdnum(value_type_btf_obj_fd),
        map_token_fd=fdnum(token_fd),
    )
    try:
        kind = MapType(int(map_type)).name.lower()
    except ValueError:
        kind = f"type {int(map_type)}"
    detail = f"map {name!r} ({kind}, key {key_size}, value {value_size}, max_entries {max_entries}, flags {int(flags):#x})"
    return FD(bpf(Cmd.MAP_CREATE, attr, detail=detail), "map")


def _elem(cmd: Cmd, attr: MapElemAttr) -> bool:
    """Run an element command: True on success, False on ENOENT, raise otherwise."""
    result, err = bpf_errno(cmd, attr)
    if result >= 0:
        return True
    if err == errno.ENOENT:
        return False
    raise_for_errno(f"BPF_{cmd.name}", err, f"map fd {attr.map_fd}")
    return False  # unreachable


def _key(key: bytes | None) -> ctypes.Array | None:
    return None if key is None else ctypes.create_string_buffer(key, len(key))


def map_lookup_elem(fd: FdLike, key: bytes | None, value_size: int, flags: int = 0) -> bytes | None:
    """BPF_MAP_LOOKUP_ELEM: the value, or None if absent. ``key=None`` peeks a queue/stack."""
    kbuf, vbuf = _key(key), ctypes.create_string_buffer(value_size)
    attr = MapElemAttr(map_fd=fdnum(fd), key=ptr(kbuf), value=ptr(vbuf), flags=flags)
    return vbuf.raw if _elem(Cmd.MAP_LOOKUP_ELEM, attr) else None


def map_update_elem(fd: FdLike, key: bytes | None, value: bytes, flags: int = 0) -> None:
    """BPF_MAP_UPDATE_ELEM (flags BPF_ANY/NOEXIST/EXIST/F_LOCK). ``key=None`` pushes to a queue/stack."""
    kbuf, vbuf = _key(key), ctypes.create_string_buffer(value, len(value))
    attr = MapElemAttr(map_fd=fdnum(fd), key=ptr(kbuf), value=ptr(vbuf), flags=flags)
    bpf(Cmd.MAP_UPDATE_ELEM, attr, detail=f"map fd {attr.map_fd}")


def map_delete_elem(fd: FdLike, key: bytes) -> bool:
    """BPF_MAP_DELETE_ELEM: True if deleted, False if the key was absent."""
    kbuf = _key(key)
    return _elem(Cmd.MAP_DELETE_ELEM, MapElemAttr(map_fd=fdnum(fd), key=ptr(kbuf)))


def map_get_next_key(fd: FdLike, key: bytes | None, key_size: int) -> bytes | None:
    """BPF_MAP_GET_NEXT_KEY: the key after ``key`` (the first key for None), or None at the end."""
    kbuf, nbuf = _key(key), ctypes.create_string_buffer(key_size)
    attr = MapElemAttr(map_fd=fdnum(fd), key=ptr(kbuf), value=ptr(nbuf))
    return nbuf.raw if _elem(Cmd.MAP_GET_NEXT_KEY, attr) else None


def map_lookup_and_delete_elem(fd: FdLike, key: bytes | None, value_size: int, flags: int = 0) -> bytes | None:
    """BPF_MAP_LOOKUP_AND_DELETE_ELEM: the removed value, or None if absent/empty.
    ``key=None`` pops a queue/stack."""
    kbuf, vbuf = _key(key), ctypes.create_string_buffer(value_size)
    attr = MapElemAttr(map_fd=fdnum(fd), key=ptr(kbuf), value=ptr(vbuf), flags=flags)
    return vbuf.raw if _elem(Cmd.MAP_LOOKUP_AND_DELETE_ELEM, attr) else None


def bloom_filter_contains(fd: FdLike, value: bytes) -> bool:
    """BPF_MAP_LOOKUP_ELEM on a bloom filter: False if ``value`` is surely absent,
    True if it may be present."""
    vbuf = ctypes.create_string_buffer(value, len(value))
    return _elem(Cmd.MAP_LOOKUP_ELEM, MapElemAttr(map_fd=fdnum(fd), value=ptr(vbuf)))


def map_freeze(fd: FdLike) -> None:
    """BPF_MAP_FREEZE: forbid further writes from user space."""
    attr = MapElemAttr(map_fd=fdnum(fd))
    bpf(Cmd.MAP_FREEZE, attr, detail=f"map fd {attr.map_fd}")


# --- batch operations ---


@record(frozen=True)
class Batch:
    """One batch: ``count`` entries in ``keys``/``values`` (packed), and the cursor to pass
    as ``in_batch`` next time, or None when the map has been walked to the end."""

    count: int
    keys: bytes
    values: bytes
    next_batch: bytes | None


def _batch_cursor_size(key_size: int) -> int:
    # hash maps use a u32 bucket index as cursor, arrays the key itself
    return max(key_size, 4)


def _lookup_batch(
    cmd: Cmd,
    fd: FdLike,
    key_size: int,
    value_size: int,
    count: int,
    in_batch: bytes | None,
    elem_flags: int,
    flags: int,
) -> Batch:
    keys = ctypes.create_string_buffer(key_size * count)
    values = ctypes.create_string_buffer(value_size * count)
    cursor_in = _key(in_batch)
    cursor_out = ctypes.create_string_buffer(_batch_cursor_size(key_size))
    attr = MapBatchAttr(
        in_batch=ptr(cursor_in),
        out_batch=ptr(cursor_out),
        keys=ptr(keys),
        values=ptr(values),
        count=count,
        map_fd=fdnum(fd),
        elem_flags=elem_flags,
        flags=flags,
    )
    result, err = bpf_errno(cmd, attr)
    if result < 0 and err != errno.ENOENT:
        raise_for_errno(f"BPF_{cmd.name}", err, f"map fd {attr.map_fd}")
    n = attr.count
    done = result < 0  # ENOENT: no more entries after these
    return Batch(n, keys.raw[: n * key_size], values.raw[: n * value_size], None if done else cursor_out.raw)


def map_lookup_batch(
    fd: FdLike,
    key_size: int,
    value_size: int,
    count: int,
    in_batch: bytes | None = None,
    *,
    elem_flags: int = 0,
    flags: int = 0,
) -> Batch:
    """BPF_MAP_LOOKUP_BATCH: up to ``count`` entries starting at cursor ``in_batch`` (None = start)."""
    return _lookup_batch(Cmd.MAP_LOOKUP_BATCH, fd, key_size, value_size, count, in_batch, elem_flags, flags)


def map_lookup_and_delete_batch(
    fd: FdLike,
    key_size: int,
    value_size: int,
    count: int,
    in_batch: bytes | None = None,
    *,
    elem_flags: int = 0,
    flags: int = 0,
) -> Batch:
    """BPF_MAP_LOOKUP_AND_DELETE_BATCH: like :func:`map_lookup_batch`, removing what it returns."""
    return _lookup_batch(Cmd.MAP_LOOKUP_AND_DELETE_BATCH, fd, key_size, value_size, count, in_batch, elem_flags, flags)


def map_update_batch(fd: FdLike, keys: bytes, values: bytes, count: int, *, elem_flags: int = 0, flags: int = 0) -> int:
    """BPF_MAP_UPDATE_BATCH: write ``count`` packed keys/values; returns how many were written.

    On failure the raised error's ``detail`` says how many were written before it.
    """
    kbuf, vbuf = _key(keys), _key(values)
    attr = MapBatchAttr(keys=ptr(kbuf), values=ptr(vbuf), count=count, map_fd=fdnum(fd), elem_flags=elem_flags, flags=flags)
    result, err = bpf_errno(Cmd.MAP_UPDATE_BATCH, attr)
    if result < 0:
        raise_for_errno("BPF_MAP_UPDATE_BATCH", err, f"map fd {attr.map_fd}: {attr.count} of {count} elements written")
    return attr.count


def map_delete_batch(fd: FdLike, keys: bytes, count: int, *, elem_flags: int = 0, flags: int = 0) -> int:
    """BPF_MAP_DELETE_BATCH: delete ``count`` packed keys; returns how many were deleted.

    A missing key stops the batch (ENOENT): the count deleted so far is returned.
    """
    kbuf = _key(keys)
    attr = MapBatchAttr(keys=ptr(kbuf), count=count, map_fd=fdnum(fd), elem_flags=elem_flags, flags=flags)
    result, err = bpf_errno(Cmd.MAP_DELETE_BATCH, attr)
    if result < 0 and err != errno.ENOENT:
        raise_for_errno("BPF_MAP_DELETE_BATCH", err, f"map fd {attr.map_fd}: {attr.count} of {count} elements deleted")
    return attr.count
