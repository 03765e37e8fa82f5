"""Name lookups over a BTF string section: which types carry a name.

Two forms answer the same question (``positions(name)``: positions ``id - start_id``
of the types named so, ascending):

- :class:`NameIndex` is built in memory from the name offsets of every type,
  with C-level passes only (``dict(zip(...))``, ``Counter``, ``map``).
- :class:`HashedNameIndex` is an open-addressing hash table in flat u32 arrays,
  which is what the on-disk index cache (:func:`load_cache`/:func:`store_cache`)
  holds: loading it is a file read, no per-name work. Every hit is verified
  against the blob's own strings, so a bad table can only miss, never lie.

The cache is keyed by the SHA-256 and size of the whole blob, checksummed,
stored under the user's cache directory (``$COREPY_CACHE_DIR``, else
``$XDG_CACHE_HOME/corepy`` or ``~/.cache/corepy``) with mode 0600, and ignored
unless owned by the current user and not writable by others.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import sys
import tempfile
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from itertools import compress, count, repeat

from ..errors import BTFError

_U32 = "I"
_EMPTY = 0xFFFFFFFF
_CACHE_MAGIC = b"corepy-btf-index\0"
_CACHE_VERSION = 1


class NameIndex:
    """name -> positions of the types carrying it, built from the types' name offsets."""

    def __init__(self, name_offs: array, string_bytes: Callable[[int], bytes], strtab: bytes | None):
        """``strtab`` (the own string section) enables the fast path when every name offset indexes it
        directly (no base); ``string_bytes(off)`` reads any name otherwise."""
        self._name_offs = name_offs
        # named types only (name offset 0 is the empty name): offset -> last position using it, use counts
        self._last: dict[int, int] = dict(compress(zip(name_offs, count()), name_offs))
        self._counts = Counter(filter(None, name_offs))
        self._shared: dict[int, list[int]] | None = None
        offs = list(self._last)
        names: list[bytes] | None = None
        if strtab is not None:
            try:
                names = list(map(strtab.__getitem__, map(slice, offs, map(strtab.index, repeat(0), offs))))
            except ValueError:  # an offset past the last NUL: use the checked path
                names = None
        if names is None:
            names = []
            for off in offs:
                try:
                    names.append(string_bytes(off))
                except BTFError:
                    names.append(b"")  # reported when the type is decoded
        self._offs_by_name: dict[bytes, int] = dict(zip(names, offs))
        self._more_offs: dict[bytes, list[int]] = {}
        if len(self._offs_by_name) != len(names):  # one name stored at several offsets
            for name, off in zip(names, offs):
                self._more_offs.setdefault(name, []).append(off)

    def positions(self, key: bytes) -> list[int] | None:
        if not key:
            return []
        more = self._more_offs.get(key)
        offs = more if more is not None else [self._offs_by_name[key]] if key in self._offs_by_name else []
        found: list[int] = []
        for off in offs:
            found += self._positions_of_offset(off)
        if len(offs) > 1:
            found.sort()
        return found

    def _positions_of_offset(self, name_off: int) -> list[int]:
        last = self._last[name_off]
        if self._counts[name_off] == 1:
            return [last]
        return list(self._shared_positions()[name_off])

    def _shared_positions(self) -> dict[int, list[int]]:
        """name offset -> positions, for the offsets several types use (one filtered pass, on first need)."""
        if self._shared is None:
            shared: dict[int, list[int]] = {}
            dup_offs = {off for off, n in self._counts.items() if n > 1}
            for off, pos in compress(zip(self._name_offs, count()), map(dup_offs.__contains__, self._name_offs)):
                shared.setdefault(off, []).append(pos)
            self._shared = shared
        return self._shared

    def names(self) -> Iterator[bytes]:
        """Every distinct non-empty name."""
        return (name for name in self._offs_by_name if name)

    def hashed(self, strtab: bytes) -> HashedNameIndex:
        """The same index as a flat hash table (for the cache)."""
        by_name: dict[bytes, list[int]] = {}
        shared = self._shared_positions()
        for name, off in self._offs_by_name.items():
            if not name:
                continue
            offs = self._more_offs.get(name, [off])
            positions = sorted(p for o in offs for p in shared.get(o, [self._last[o]]))
            by_name[name] = positions
        return HashedNameIndex.build(by_name, self._name_offs, strtab)


class HashedNameIndex:
    """An open-addressing hash table (crc32, linear probing) of name -> first position, plus a
    ``next`` chain linking the positions of types sharing a name. Hits are checked against ``strtab``."""

    def __init__(self, slots: memoryview | array, chain: memoryview | array, name_offs: memoryview | array,
                 strtab: bytes):
        self._slots = slots
        self._mask = len(slots) - 1
        self._chain = chain
        self._name_offs = name_offs
        self._strtab = strtab

    @classmethod
    def build(cls, by_name: dict[bytes, list[int]], name_offs: array, strtab: bytes) -> HashedNameIndex:
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

def cache_dir() -> str:
    """Where index caches live."""
    explicit = os.environ.get("COREPY_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "corepy")


def blob_digest(blob: bytes | memoryview) -> bytes:
    """The cache key of a blob: SHA-256 of its bytes."""
    return hashlib.sha256(blob).digest()


def _cache_path(digest: bytes, size: int) -> str:
    return os.path.join(cache_dir(), f"btf-{digest.hex()[:40]}-{size}.idx")


def load_cache(digest: bytes, size: int, start_id: int) -> tuple[memoryview, memoryview, memoryview, memoryview] | None:
    """(type starts, name offsets, slots, chain) as u32 views, or None if there is no trustworthy cache."""
    path = _cache_path(digest, size)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read()
    except OSError:
        return None
    finally:
        os.close(fd)
    head = len(_CACHE_MAGIC) + 4
    if data[: len(_CACHE_MAGIC)] != _CACHE_MAGIC:
        return None
    payload = memoryview(data)[head:]
    if zlib.crc32(payload) != int.from_bytes(data[len(_CACHE_MAGIC) : head], "little"):
        return None
    try:
        version, order, blob_size, blob_hash, first_id, starts, name_offs, slots, chain = marshal.loads(payload)
    except (ValueError, EOFError, TypeError):
        return None
    if (version, order, blob_size, blob_hash, first_id) != (_CACHE_VERSION, sys.byteorder, size, digest, start_id):
        return None
    views = [memoryview(b).cast(_U32) for b in (starts, name_offs, slots, chain)]
    if len(views[0]) != len(views[1]) or len(views[3]) != len(views[0]) or len(views[2]) & (len(views[2]) - 1):
        return None
    return views[0], views[1], views[2], views[3]


def store_cache(digest: bytes, size: int, start_id: int, starts: array, name_offs: array,
                index: HashedNameIndex) -> None:
    """Write the cache (atomically, mode 0600); failures are ignored: the cache is an optimisation."""
    slots, chain = index.arrays()
    payload = marshal.dumps((_CACHE_VERSION, sys.byteorder, size, digest, start_id, starts.tobytes(),
                             name_offs.tobytes(), bytes(slots), bytes(chain)))
    path = _cache_path(digest, size)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".btf-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_CACHE_MAGIC + zlib.crc32(payload).to_bytes(4, "little") + payload)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass
