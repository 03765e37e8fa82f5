"""BPF ring buffer consumer (BPF_MAP_TYPE_RINGBUF), in pure Python over mmap.

The kernel maps a ring buffer map as: page 0, the consumer position (read-write, ours);
page 1, the producer position (read-only); then the data area, mapped twice in a row so a
record never wraps for the reader. Each record starts with an 8-byte header — ``len``
(u32, bit 31 BUSY: not committed yet, bit 30 DISCARD) and ``pgoff`` (u32, the kernel's) —
and the next one starts 8-byte aligned. We walk headers from the consumer position up to
the producer position, stop at a BUSY record, skip DISCARDed ones, hand the rest over and
store the new consumer position (a native 8-byte store) for the producer to reuse the space.

Memory ordering: loads and stores go through ``memoryview`` (plain aligned loads/stores),
which is enough on x86-64 (TSO); weakly ordered CPUs would need acquire/release barriers
CPython cannot issue.
"""

from __future__ import annotations

import errno
import mmap
import struct
from collections.abc import Callable

from .errors import CorepyError, raise_for_errno
from .poller import Decoder, EventBuffer, resolve_decoder

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["RingBuffer", "UserRingBuffer", "Reservation", "BUSY_BIT", "DISCARD_BIT", "HEADER_SIZE"]

BUSY_BIT = 1 << 31
"""Record header ``len`` bit: reserved, not yet submitted or discarded."""
DISCARD_BIT = 1 << 30
"""Record header ``len`` bit: discarded by the producer; skipped."""
HEADER_SIZE = 8
"""``struct bpf_ringbuf_hdr``: u32 len, u32 pg_off."""
_LEN_MASK = ~(BUSY_BIT | DISCARD_BIT) & 0xFFFFFFFF
_FLAGS = BUSY_BIT | DISCARD_BIT
_PAGE = mmap.PAGESIZE
_RINGBUF = 27  # MapType.RINGBUF
_BATCH_MAX = 4096
"""Records per batch at most: short-lived lists stay cheap and space returns to the producer sooner."""


def _map_facts(map: Any) -> tuple[int, str, int, int, Any]:
    """(fd, name, type, max_entries, btf) of a :class:`~corepy.maps.Map`, an ``FD`` or an int fd."""
    if hasattr(map, "max_entries") and hasattr(map, "fileno"):
        return map.fileno(), map.name, int(map.type), map.max_entries, getattr(map, "btf", None)
    if not isinstance(map, int) and not hasattr(map, "fileno"):
        what = f"map {map.name!r}" if hasattr(map, "name") else repr(map)
        raise CorepyError(f"{what} is not a live map ({type(map).__name__}): load the object first")
    from .maps import MapInfo

    fd = map if isinstance(map, int) else map.fileno()
    info = MapInfo.of(fd)
    return fd, info.name, int(info.type), info.max_entries, None


def _map_ring(owner: Any, fd: int, size: int, what: str, consumer_side: bool) -> None:
    """Map a ring's consumer page and its producer page + twice-mapped data area into
    ``owner._consumer_map``/``owner._producer_map``; user space writes the consumer position
    when it consumes (``consumer_side``), the producer page and data when it produces."""
    rw, ro = mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_READ
    try:
        owner._consumer_map = mmap.mmap(fd, _PAGE, mmap.MAP_SHARED, rw if consumer_side else ro, offset=0)
        owner._producer_map = mmap.mmap(fd, _PAGE + 2 * size, mmap.MAP_SHARED, ro if consumer_side else rw,
                                        offset=_PAGE)
    except OSError as e:
        owner.close()
        raise_for_errno("mmap", e.errno or errno.EINVAL, f"{what} ({size} bytes, fd {fd})")


def _unmap(owner: Any, views: tuple[str, ...]) -> None:
    """Release ``owner``'s memoryviews named ``views``, then close its two ring mappings; a
    mapping whose record view was handed out and is still alive is unmapped when that view goes."""
    for name in views:
        view = owner.__dict__.pop(name, None)
        if view is not None:
            view.release()
    for name in ("_consumer_map", "_producer_map"):
        m = getattr(owner, name, None)
        if m is not None:
            try:
                m.close()
            except BufferError:
                pass
            setattr(owner, name, None)


class _Ring:
    """One mapped ring buffer and what to do with its records."""

    def __init__(self, fd: int, name: str, size: int, callback: Callable[[Any], Any] | None,
                 record: tuple[Decoder | None, struct.Struct | None, int], batch: bool, queue: Any):
        if size <= 0 or size & (size - 1) or size % _PAGE:
            raise CorepyError(f"ring buffer {name!r}: size {size} is not a power-of-2 multiple of the page size")
        self.name, self.size, self.mask = name, size, size - 1
        self._consumer_map = self._producer_map = None
        _map_ring(self, fd, size, f"ring buffer {name!r}", consumer_side=True)
        self.consumer = memoryview(self._consumer_map).cast("Q")
        producer = memoryview(self._producer_map)
        self.producer = producer[:8].cast("Q")
        self.data = producer[_PAGE:]
        self.words = self.data.cast("I")
        self.callback = callback
        self.decode, batch_struct, self.need = record
        self.batch = batch
        self.queue = queue
        self.copy = callback is None  # queued records outlive the commit: copy them
        if callback is None:
            self.callback = queue.append
            self.batch = False
        self._batch_structs: dict[int, struct.Struct] = {}
        self._user_struct = batch_struct

    # --- positions --------------------------------------------------------
    def available(self) -> int:
        """Bytes between the consumer and the producer position (records not yet consumed)."""
        return self.producer[0] - self.consumer[0]

    # --- consuming --------------------------------------------------------
    def consume(self) -> int:
        if self.batch:
            return self._consume_batches()
        return self._consume_each()

    def _consume_each(self) -> int:
        """One callback per record, committing after each (as libbpf does)."""
        consumer, producer, words, data = self.consumer, self.producer, self.words, self.data
        mask, callback, decode, copy, need = self.mask, self.callback, self.decode, self.copy, self.need
        cons = consumer[0]
        count = 0
        while True:
            prod = producer[0]
            if cons >= prod:
                return count
            while cons < prod:
                off = cons & mask
                length = words[off >> 2]
                if length & _FLAGS:
                    if length & BUSY_BIT:
                        return count
                    cons += ((length & _LEN_MASK) + 15) & ~7
                    consumer[0] = cons
                    continue
                cons += (length + 15) & ~7
                off += 8
                try:
                    if decode is not None:
                        if length < need:
                            self._short(length)
                        callback(decode(data, off))
                    elif copy:
                        callback(bytes(data[off:off + length]))
                    else:
                        callback(data[off:off + length])
                finally:
                    consumer[0] = cons
                count += 1

    def _consume_batches(self) -> int:
        """One callback per walk up to the producer position, with every record of it;
        the consumer position is committed once per batch."""
        consumer, producer, words, data = self.consumer, self.producer, self.words, self.data
        mask, callback, decode, need = self.mask, self.callback, self.decode, self.need
        user_struct = self._user_struct
        cons = consumer[0]
        count = 0
        while True:
            prod = producer[0]
            if cons >= prod:
                return count
            records: list[Any] = []
            busy = False
            short = -1
            if user_struct is not None:
                cons, records = self._uniform_batch(cons, prod)
            while cons < prod and len(records) < _BATCH_MAX:
                off = cons & mask
                length = words[off >> 2]
                if length & _FLAGS:
                    if length & BUSY_BIT:
                        busy = True
                        break
                    cons += ((length & _LEN_MASK) + 15) & ~7
                    continue
                cons += (length + 15) & ~7
                off += 8
                if decode is None:
                    records.append(data[off:off + length])
                elif length >= need:
                    records.append(decode(data, off))
                else:
                    short = length  # consumed; reported after the batch before it is delivered
                    break
            try:
                if records:
                    callback(records)
            finally:
                consumer[0] = cons
            count += len(records)
            if short >= 0:
                self._short(short)
            if busy:
                return count

    def _short(self, length: int) -> None:
        raise CorepyError(f"ring buffer {self.name!r}: a {length}-byte record is shorter than its record type "
                          f"({self.need} bytes)")

    def _uniform_batch(self, cons: int, prod: int) -> tuple[int, list[Any]]:
        """Fast path for struct-decoded batches: a run of same-length committed records is
        unpacked in one ``iter_unpack`` (the data area is mapped twice: the run is contiguous)."""
        words, mask = self.words, self.mask
        off = cons & mask
        length = words[off >> 2]
        if length & _FLAGS or length < self._user_struct.size:  # type: ignore[union-attr]
            return cons, []
        stride = (length + 15) & ~7
        n = min((prod - cons) // stride, _BATCH_MAX)
        if n < 2:
            return cons, []
        headers = words[off >> 2:(off + n * stride) >> 2:stride >> 2].tolist()
        if headers.count(length) != n:  # a BUSY, DISCARDed or different record in the run
            n = headers.index(next(h for h in headers if h != length))
            if n < 2:
                return cons, []
        unpacker = self._batch_structs.get(stride)
        if unpacker is None:
            unpacker = self._batch_structs[stride] = strided(self._user_struct, HEADER_SIZE, stride)  # type: ignore[arg-type]
        records = list(unpacker.iter_unpack(self.data[off:off + n * stride]))
        return cons + n * stride, records

    def close(self) -> None:
        _unmap(self, ("consumer", "producer", "words", "data"))


def strided(user: struct.Struct, skip: int, stride: int) -> struct.Struct:
    """``user``'s layout after ``skip`` header bytes, padded to ``stride`` bytes (for ``iter_unpack``
    over a run of same-size records). ``skip`` is a multiple of the alignment ``user`` needs."""
    fmt = user.format
    order = fmt[0] if fmt[:1] in ("@", "=", "<", ">", "!") else "@"
    body = fmt[1:] if fmt[:1] in ("@", "=", "<", ">", "!") else fmt
    result = struct.Struct(f"{order}{skip}x{body}")
    pad = stride - result.size
    if pad < 0:
        raise CorepyError(f"record struct {fmt!r} is longer than the records ({stride - skip} bytes)")
    return struct.Struct(f"{order}{skip}x{body}{pad}x") if pad else result


class RingBuffer(EventBuffer):
    """Consumer of one or more BPF ring buffers behind one epoll set.

    ``RingBuffer(map, callback)`` or ``RingBuffer()`` then :meth:`add` per map. The
    callback gets each record as a zero-copy ``memoryview`` valid only during the call,
    or decoded when ``record_type`` is given (a BTF type name or id, looked up in
    ``btf`` or the map's BTF, a :class:`~corepy.btf.codec.Codec`, or a ``struct.Struct``
    giving tuples). ``batch=True`` calls it with a list of up to 4096 records at a time
    and commits the consumer position once per batch. Without a callback, records are
    copied (``bytes``) or decoded into a queue read by ``async for`` or :meth:`records`.
    The buffer does not own the maps: close them yourself (after or before this).
    """

    def __init__(self, map: Any = None, callback: Callable[[Any], Any] | None = None, *,
                 record_type: Any = None, batch: bool = False, btf: Any = None):
        super().__init__()
        self._rings: list[_Ring] = []
        if map is not None:
            try:
                self.add(map, callback, record_type=record_type, batch=batch, btf=btf)
            except BaseException:
                self.close()
                raise

    def add(self, map: Any, callback: Callable[[Any], Any] | None = None, *,
            record_type: Any = None, batch: bool = False, btf: Any = None) -> None:
        """Consume ring buffer ``map`` (a Map or an fd) too, with its own callback and decoding."""
        fd, name, map_type, size, map_btf = _map_facts(map)
        if map_type != _RINGBUF:
            raise CorepyError(f"map {name!r} is not a ring buffer (BPF_MAP_TYPE_RINGBUF); its type is {map_type}")
        decode, batch_struct, need = resolve_decoder(record_type, btf if btf is not None else map_btf,
                                                     f"ring buffer {name!r}")
        ring = _Ring(fd, name, size, callback, (decode, batch_struct, need), batch, self._queue)
        try:
            self._register(ring, fd)
        except BaseException:
            ring.close()
            raise
        self._rings.append(ring)

    def available(self, index: int = 0) -> int:
        """Unconsumed bytes (headers included) in the ``index``-th ring added."""
        return self._rings[index].available()

    def close(self) -> None:
        super().close()
        self._rings = []


_USER_RINGBUF = 31  # MapType.USER_RINGBUF


class Reservation:
    """A sample reserved in a :class:`UserRingBuffer`: fill :attr:`data`, then :meth:`submit`
    (or :meth:`discard`). The kernel drains samples in order and stops at one still reserved."""

    __slots__ = ("data", "_words", "_index", "_length")

    def __init__(self, data: memoryview, words: memoryview, index: int, length: int):
        self.data = data
        """The sample's bytes, writable, zero-copy into the ring."""
        self._words, self._index, self._length = words, index, length

    def submit(self) -> None:
        """Hand the sample to the kernel (clears the header's BUSY bit)."""
        self._finish(self._length)

    def discard(self) -> None:
        """Give the space back unused (the kernel skips it)."""
        self._finish(self._length | DISCARD_BIT)

    def _finish(self, header: int) -> None:
        if self._words is None:
            raise CorepyError("this user ring buffer sample was already submitted or discarded")
        try:
            self.data.release()
        except BufferError:
            pass  # the caller still holds an export of it; the header is what the kernel reads
        self._words[self._index] = header
        self._words = None  # type: ignore[assignment]


class UserRingBuffer:
    """Producer side of a BPF_MAP_TYPE_USER_RINGBUF: user space writes samples that a BPF
    program drains with ``bpf_user_ringbuf_drain`` (the kernel gives every sample to a callback
    as a dynptr). Page 0 (the kernel's consumer position) is mapped read-only, the producer
    page and the twice-mapped data area read-write. Single producer: not thread-safe.
    The buffer does not own the map."""

    def __init__(self, map: Any):
        fd, name, map_type, size, _ = _map_facts(map)
        if map_type != _USER_RINGBUF:
            raise CorepyError(f"map {name!r} is not a user ring buffer (BPF_MAP_TYPE_USER_RINGBUF); "
                              f"its type is {map_type}")
        if size <= 0 or size & (size - 1) or size % _PAGE:
            raise CorepyError(f"user ring buffer {name!r}: size {size} is not a power-of-2 multiple of the page size")
        self.name, self.size, self.mask = name, size, size - 1
        self._consumer_map = self._producer_map = None
        self._epoll: Any = None
        _map_ring(self, fd, size, f"user ring buffer {name!r}", consumer_side=False)
        import select

        self._consumer = memoryview(self._consumer_map).cast("Q")
        producer = memoryview(self._producer_map)
        self._producer = producer[:8].cast("Q")
        self._data = producer[_PAGE:]
        self._words = self._data.cast("I")
        self._epoll = select.epoll()
        self._epoll.register(fd, select.EPOLLOUT)

    def free(self) -> int:
        """Bytes free for new samples (headers and 8-byte alignment included)."""
        return self.size - (self._producer[0] - self._consumer[0])

    def reserve(self, size: int) -> Reservation | None:
        """Room for a ``size``-byte sample, or None when the ring is too full right now.
        Raises when ``size`` can never fit."""
        total = (size + HEADER_SIZE + 7) & ~7
        if size <= 0 or total > self.size:
            raise CorepyError(f"user ring buffer {self.name!r}: a {size}-byte sample cannot fit "
                              f"in {self.size} bytes")
        prod = self._producer[0]
        if self.size - (prod - self._consumer[0]) < total:
            return None
        off = prod & self.mask
        index = off >> 2
        self._words[index] = size | BUSY_BIT
        self._words[index + 1] = 0
        self._producer[0] = prod + total  # the kernel sees the BUSY header first and waits
        return Reservation(self._data[off + HEADER_SIZE:off + HEADER_SIZE + size], self._words, index, size)

    def write(self, sample: bytes | bytearray | memoryview, timeout: float | None = 0) -> bool:
        """Copy ``sample`` in and submit it; waits up to ``timeout`` seconds for room
        (``None``: forever). False if there was no room in time."""
        size = len(sample)
        reservation = self.reserve(size)
        if reservation is None and timeout != 0:
            reservation = self._wait_reserve(size, timeout)
        if reservation is None:
            return False
        reservation.data[:] = sample
        reservation.submit()
        return True

    def _wait_reserve(self, size: int, timeout: float | None) -> Reservation | None:
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._epoll.poll(-1 if left is None else left)  # EPOLLOUT: the kernel drained something
            reservation = self.reserve(size)
            if reservation is not None:
                return reservation

    def close(self) -> None:
        """Unmap and close the epoll fd (samples written stay for the kernel to drain)."""
        _unmap(self, ("_consumer", "_producer", "_words", "_data"))
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    def __enter__(self) -> UserRingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
