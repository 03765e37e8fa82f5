"""Name lookups over a BTF string section: which types carry a name.

Three forms answer the same question (``positions(name)``: positions ``id - start_id``
of the types named so, ascending):

- :class:`ScannedNames` builds no index: each lookup searches the string section and the
  name offsets (for the first few lookups of a big BTF, before a full index pays).
- :class:`NameIndex` is built in memory from the name offsets of every type,
  with C-level passes only (``dict(zip(...))``, ``Counter``, ``map``).
- :class:`HashedNameIndex` is an open-addressing hash table in flat u32 arrays,
  which is what the on-disk index cache (:func:`load_cache`/:func:`store_cache`)
  holds: loading it is a file read, no per-name work. Every hit is verified
  against the blob's own strings, so a bad table can only miss, never lie.

The cache entry of a blob (:mod:`corepy.cache`: keyed by its size and checksums, private to
the user) is checksummed itself and holds the type offsets and name offsets, and the hashed
name index when one was built.
"""

from __future__ import annotations

import marshal
import sys
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import compress, count
from operator import is_not, itemgetter

from ..cache import read_entry, write_entry
from ..errors import BTFError

_U32 = "I"
_EMPTY = 0xFFFFFFFF
_CACHE_MAGIC = b"corepy-btf-index\0"
_CACHE_VERSION = 3
_MID_CHECKS = 8
"""Occurrences mid-string a :class:`ScannedNames` lookup checks one by one (~0.5 ms each on vmlinux)
before it finds out once whether any name offset points mid-string."""


class NameIndex:
    """name -> positions of the types carrying it, built from the types' name offsets.

    Keyed by the names' bytes (so one name stored at several offsets is one key); the
    positions of names that several types share are gathered up front, so every lookup
    is a dict access."""

    def __init__(self, name_offs: Sequence[int], string_bytes: Callable[[int], bytes],
                 strtab: bytes | memoryview | None):
        """``strtab`` (the own string section) enables the fast path when every name offset indexes it
        directly (no base); ``string_bytes(off)`` reads any name otherwise."""
        self._name_offs = name_offs
        named_pos = list(compress(count(), name_offs))  # name offset 0 is the empty name: skipped
        names = _named_names(strtab, name_offs) if strtab is not None else None
        if names is None:
            names = list(map(_checked(string_bytes), filter(None, name_offs)))
        self._first: dict[bytes, int] = {}
        """name -> the first position carrying it"""
        self._shared: dict[bytes, list[int]] = {}
        """name -> all its positions, for names several types carry"""
        for k in self._add(names, named_pos):  # ascending: each list stays sorted
            name = names[k]
            self._shared.setdefault(name, [self._first[name]]).append(named_pos[k])

    def _add(self, names: list[bytes], named_pos: list[int]) -> list[int]:
        """Record each name's first position; return the indices (into both lists) of the names that
        came earlier (one C-level pass)."""
        first = self._first
        # setdefault hands back the very object passed in when the name is new: identity tells repeats
        return list(compress(count(), map(is_not, map(first.setdefault, names, named_pos), named_pos)))

    def positions(self, key: bytes) -> list[int] | None:
        if not key:
            return []
        shared = self._shared.get(key)
        if shared is not None:
            return list(shared)
        pos = self._first.get(key)
        return [] if pos is None else [pos]

    def names(self) -> Iterator[bytes]:
        """Every distinct non-empty name."""
        return (name for name in self._first if name)

    def hashed(self, strtab: bytes) -> HashedNameIndex:
        """The same index as a flat hash table (for the cache)."""
        by_name = {name: self._shared.get(name) or [pos] for name, pos in self._first.items() if name}
        return HashedNameIndex.build(by_name, self._name_offs, strtab)


def _named_names(strtab: bytes | memoryview, name_offs: Sequence[int]) -> list[bytes] | None:
    """The NUL-terminated strings of ``strtab`` at the non-zero ``name_offs`` (u32), in order, read in
    C-level passes over bytes; an offset at or past the end reads as ``b""``, as a one-by-one read
    of a broken name does. None where these passes cannot serve (then read them one by one): an
    offset of 2**24 or more, ``strtab`` not ending with NUL, pointers that are not 64-bit.

    - The non-zero offsets: with every word's top byte (0, checked) set to 0xff, the zero words
      are the only occurrences of the 4 bytes ``00 00 00 ff`` (in memory order): an unaligned
      occurrence would need a top byte to read 0. ``bytes.replace`` drops them.
    - The strings: read through a ``char *`` each, as ctypes' ``c_char_p`` array slice does
      strlen-and-copy for every element in C (about 3x faster than slicing in Python), the
      pointers computed by :func:`_pointer_lanes`.
    - Bounds: offsets below the last 64 KiB boundary of ``strtab`` are inside it (their byte
      ``offset >> 16`` tells, through ``bytes.translate``); the few others are checked one by one,
      and those at or past the end point at the empty string instead."""
    import ctypes

    if not (strtab and strtab[-1] == 0 and isinstance(name_offs, (array, memoryview))
            and ctypes.sizeof(ctypes.c_char_p) == 8):
        return None
    little = sys.byteorder == "little"
    top, third = (3, 2) if little else (0, 1)  # the bytes holding bits 24-31 and 16-23 of a word
    words = bytearray(memoryview(name_offs).cast("B"))
    total = len(words) // 4
    if words[top::4].count(0) != total:
        return None
    words[top::4] = b"\xff" * total
    named = words.replace(b"\0\0\0\xff" if little else b"\xff\0\0\0", b"")
    n = len(named) // 4
    named[top::4] = bytes(n)
    address = _address_of(strtab)
    if address is None:
        return None
    lanes = _pointer_lanes(named, address, sys.byteorder)
    size, empty = len(strtab), address.to_bytes(8, sys.byteorder)
    near_end = named[third::4].translate(bytes(v >= size >> 16 for v in range(256)))
    offsets = memoryview(named).cast(_U32)
    i = near_end.find(1)
    while i >= 0:
        if offsets[i] >= size:
            lanes[8 * i : 8 * i + 8] = empty  # the empty string at offset 0
        i = near_end.find(1, i + 1)
    offsets.release()
    return (ctypes.c_char_p * n).from_buffer(lanes)[:]  # type: ignore[return-value]  # (no NULL among them)


def _address_of(buffer: bytes | memoryview) -> int | None:
    """The address of the first byte of ``buffer`` (contiguous; the caller keeps it alive while the
    address is used), asked of the C API's ``PyObject_GetBuffer`` (ctypes' ``from_buffer`` wants a
    writable buffer; a file's read-only mapping is not); None where ``ctypes.pythonapi`` is missing
    (not CPython) or the buffer is refused."""
    import ctypes

    api = getattr(ctypes, "pythonapi", None)
    if api is None:
        return None
    view = _py_buffer()()
    try:
        api.PyObject_GetBuffer(ctypes.py_object(buffer), ctypes.byref(view), 0)  # PyBUF_SIMPLE: contiguous
    except (BufferError, TypeError, ValueError):
        return None
    address = view.buf or 0
    api.PyBuffer_Release(ctypes.byref(view))
    return address


_PY_BUFFER: type | None = None


def _py_buffer() -> type:
    """The C API's ``Py_buffer`` as a ctypes structure (defined at first use: ctypes loads lazily)."""
    global _PY_BUFFER
    if _PY_BUFFER is None:
        import ctypes

        class PyBuffer(ctypes.Structure):
            _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.c_void_p), ("len", ctypes.c_ssize_t),
                        ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                        ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                        ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]

        _PY_BUFFER = PyBuffer
    return _PY_BUFFER


def _pointer_lanes(offsets: bytes | bytearray, base: int, order: str) -> bytearray:
    """``base + offset`` as 8-byte pointers in byte order ``order``, for each u32 ``offset`` (all below
    2**24) of ``offsets`` in that order, with no per-element Python work: the additions are
    one big-integer addition over all lanes at once. Where no lane can carry past 32 bits (the
    base's low half leaves room for 2**24: all but 1 in 256 addresses) the 4-byte lanes are added
    and the base's high half is copied in, else the offsets are widened to 8-byte lanes first."""
    n = len(offsets) // 4
    low, high = base & 0xFFFFFFFF, base >> 32
    lanes = bytearray(8 * n)
    words = memoryview(lanes).cast(_U32)
    low_at = 0 if order == "little" else 1
    if low + (1 << 24) <= 1 << 32:
        added = int.from_bytes(offsets, order) + int.from_bytes(low.to_bytes(4, order) * n, order)
        words[low_at::2] = memoryview(added.to_bytes(4 * n, order)).cast(_U32)
        words[1 - low_at :: 2] = memoryview(high.to_bytes(4, order) * n).cast(_U32)
        words.release()
        return lanes
    words[low_at::2] = memoryview(offsets).cast(_U32)
    words.release()
    lanes[:] = (int.from_bytes(lanes, order) + int.from_bytes(base.to_bytes(8, order) * n, order)).to_bytes(8 * n, order)
    return lanes


def _checked(string_bytes: Callable[[int], bytes]) -> Callable[[int], bytes]:
    def name(off: int) -> bytes:
        try:
            return string_bytes(off)
        except BTFError:
            return b""  # reported when the type is decoded
    return name


class ScannedNames:
    """name -> positions with no index: the name is searched for in the string section, then its
    offset among the types' name offsets (aligned 4-byte hits in their packed bytes).

    Answers as :class:`NameIndex` does, repeated strings included, for about two passes (strings,
    name offsets: ~1.5 ms on vmlinux) per lookup, where NameIndex costs ~20 ms and ~70,000 objects
    up front. For the few lookups a typical load makes. Nothing is kept per type but one bytes
    object (no big container for the garbage collector to traverse). Own strings only: no base
    (split BTF may name types with its base's strings)."""

    def __init__(self, name_offs: Sequence[int], strtab: bytes, mid_string: bool | None = None):
        """``mid_string``: :func:`points_mid_string` of these name offsets if known (the cache keeps it)."""
        self._strtab = strtab
        self._name_offs = name_offs
        self._packed = (name_offs if isinstance(name_offs, (array, memoryview)) else array(_U32, name_offs)).tobytes()
        self._mid = mid_string

    @property
    def _mid_string(self) -> bool:
        """:func:`points_mid_string`, found (~5 ms on vmlinux) the first time a lookup meets more
        occurrences mid-string than :data:`_MID_CHECKS`, unless given."""
        if self._mid is None:
            self._mid = points_mid_string(self._name_offs, self._strtab)
        return self._mid

    def positions(self, key: bytes) -> list[int]:
        if not key or 0 in key:  # (a NUL inside never matches: names end at the first NUL)
            return []
        strtab, pattern = self._strtab, key + b"\0"
        found: list[int] = []
        mid: list[int] = []  # occurrences that end a longer string ("task_struct" in "put_task_struct")
        i = strtab.find(pattern)
        while i >= 0:
            if i == 0 or strtab[i - 1] == 0:
                found.extend(self._positions_of(i))
            else:
                mid.append(i)
            i = strtab.find(pattern, i + len(pattern))  # (occurrences cannot overlap: key has no NUL)
        if mid and self._mid is not False and (len(mid) <= _MID_CHECKS or self._mid_string):
            for i in mid:  # a few: each offset looked for itself (exact; cheaper than _mid_string)
                found.extend(self._positions_of(i))
        found.sort()
        return found

    def _positions_of(self, offset: int) -> list[int]:
        packed, word = self._packed, offset.to_bytes(4, sys.byteorder)
        out = []
        j = packed.find(word)
        while j >= 0:
            if j % 4:
                j = packed.find(word, j + 1)
            else:
                out.append(j // 4)
                j = packed.find(word, j + 4)
        return out


def points_mid_string(name_offs: Sequence[int], strtab: bytes) -> bool:
    """Whether some name offset points into the middle of a string (never, in deduplicated BTF):
    then every string ending with a name may carry it, not only the one starting with it.
    One pass over all name offsets."""
    return any(_gather_bytes(b"\0" + strtab, name_offs))


def _gather_bytes(data: bytes, offsets: Sequence[int]) -> Iterable[int]:
    """``data[o]`` for every offset (one C-level call; out-of-range offsets read as 0)."""
    if len(offsets) < 2:
        return [data[o] if o < len(data) else 0 for o in offsets]
    try:
        return itemgetter(*offsets)(data)
    except IndexError:  # (a corrupt name offset: reported when its type is decoded)
        return [data[o] if o < len(data) else 0 for o in offsets]


class HashedNameIndex:
    """An open-addressing hash table (crc32, linear probing) of name -> first position, plus a
    ``next`` chain linking the positions of types sharing a name. Hits are checked against ``strtab``."""

    def __init__(self, slots: memoryview | array, chain: memoryview | array, name_offs: Sequence[int],
                 strtab: bytes):
        self._slots = slots
        self._mask = len(slots) - 1
        self._chain = chain
        self._name_offs = name_offs
        self._strtab = strtab

    @classmethod
    def build(cls, by_name: dict[bytes, list[int]], name_offs: Sequence[int], strtab: bytes) -> HashedNameIndex:
        size = 1
        while size < 2 * len(by_name) + 1:
            size <<= 1
        slots = array(_U32, [_EMPTY]) * size
        chain = array(_U32, [_EMPTY]) * len(name_offs)
        mask = size - 1
        for name, positions in by_name.items():
            h = zlib.crc32(name) & mask
            while slots[h] != _EMPTY:
                h = (h + 1) & mask
            slots[h] = positions[0]
            for a, b in zip(positions, positions[1:]):
                chain[a] = b
        return cls(slots, chain, name_offs, strtab)

    def _named(self, pos: int, key: bytes) -> bool:
        if pos >= len(self._name_offs):
            return False
        off = self._name_offs[pos]
        end = off + len(key)
        return self._strtab[off:end] == key and self._strtab[end : end + 1] == b"\0"

    def positions(self, key: bytes) -> list[int] | None:
        """Positions named ``key``; None if the table contradicts the blob (then it must not be used)."""
        if not key:
            return []
        slots, mask = self._slots, self._mask
        h = zlib.crc32(key) & mask
        for _ in range(len(slots)):
            pos = slots[h]
            if pos == _EMPTY:
                return []
            if self._named(pos, key):
                found = [pos]
                while (pos := self._chain[pos]) != _EMPTY:
                    if pos <= found[-1] or pos >= len(self._chain) or not self._named(pos, key):
                        return None
                    found.append(pos)
                return found
            h = (h + 1) & mask
        return []

    def names(self) -> Iterator[bytes]:
        strtab, name_offs = self._strtab, self._name_offs
        for pos in self._slots:
            if pos < len(name_offs):
                off = name_offs[pos]
                end = strtab.find(0, off)
                if end > off:
                    yield strtab[off:end]

    def arrays(self) -> tuple[memoryview | array, memoryview | array]:
        return self._slots, self._chain


# --- the on-disk cache --------------------------------------------------------

def _cache_name(digest: bytes, size: int) -> str:
    return f"btf-{digest.hex()}-{size}.idx"


def load_cache(digest: bytes, size: int, start_id: int) -> tuple[memoryview, memoryview, memoryview, memoryview,
                                                                  bool | None] | None:
    """(type starts, name offsets, slots, chain) as u32 views and :func:`points_mid_string` (None if
    not stored), or None if there is no trustworthy cache."""
    payload = read_entry(_cache_name(digest, size), _CACHE_MAGIC)
    if payload is None:
        return None
    try:
        version, order, blob_size, blob_hash, first_id, starts, name_offs, slots, chain, mid = marshal.loads(payload)
    except (ValueError, EOFError, TypeError):
        return None
    if mid not in (None, False, True):
        return None
    if (version, order, blob_size, blob_hash, first_id) != (_CACHE_VERSION, sys.byteorder, size, digest, start_id):
        return None
    views = [memoryview(b).cast(_U32) for b in (starts, name_offs, slots, chain)]
    if len(views[0]) != len(views[1]) or len(views[2]) & (len(views[2]) - 1):
        return None
    if len(views[3]) != (len(views[0]) if len(views[2]) else 0):  # (no slots: offsets only, no index)
        return None
    return views[0], views[1], views[2], views[3], mid


def store_cache(digest: bytes, size: int, start_id: int, starts: array | memoryview, name_offs: Sequence[int],
                index: HashedNameIndex | None, mid_string: bool | None = None) -> None:
    """Write the cache (atomically, mode 0600), with the name index or (``index`` None) without,
    and :func:`points_mid_string` if known; failures are ignored: the cache is an optimisation."""
    slots, chain = index.arrays() if index is not None else (b"", b"")
    payload = marshal.dumps((_CACHE_VERSION, sys.byteorder, size, digest, start_id, starts.tobytes(),
                             array(_U32, name_offs).tobytes(), bytes(slots), bytes(chain), mid_string))
    write_entry(_cache_name(digest, size), _CACHE_MAGIC, payload)
