"""Perf buffer consumer (BPF_MAP_TYPE_PERF_EVENT_ARRAY + ``bpf_perf_event_output``).

One ``PERF_COUNT_SW_BPF_OUTPUT`` software event per CPU (``sample_type=PERF_SAMPLE_RAW``),
each mmapped as one metadata page (``struct perf_event_mmap_page``) plus 2**n data pages,
its fd stored in the map at the CPU's index. Records in the data area are
``perf_event_header`` (u32 type, u16 misc, u16 size) followed by, for PERF_RECORD_SAMPLE,
a u32 raw size and the raw bytes (the program's data, zero-padded so that size field and
data end 8-byte aligned), or for PERF_RECORD_LOST, u64 id and u64 count of lost samples.
Unlike the ring buffer, the data area is mapped once: a record may wrap around its end
(we then hand over a copy). We read ``data_head``, walk up to it and store ``data_tail``.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
from collections.abc import Callable, Sequence

from .errors import CorepyError, raise_for_errno
from .poller import EventBuffer, resolve_decoder
from .ringbuf import _BATCH_MAX, _map_facts, strided
from .syscalls.fd import FD

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PerfBuffer", "PerfEventMmapPage", "PERF_RECORD_SAMPLE", "PERF_RECORD_LOST"]

PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9
_PAGE = mmap.PAGESIZE
_PERF_EVENT_ARRAY = 4  # MapType.PERF_EVENT_ARRAY
HEADER = struct.Struct("<IHH")
"""``struct perf_event_header``: type, misc, size (of the whole record)."""
_SAMPLE_HEAD = 12  # perf_event_header + u32 raw size
_LOST = struct.Struct("<QQ")  # after the header: id, lost


class PerfEventMmapPage(ctypes.Structure):
    """The first page of a perf event mmap (``struct perf_event_mmap_page``, fields up to
    the data area description); ``data_head`` is written by the kernel, ``data_tail`` by us."""

    _fields_ = [
        ("version", ctypes.c_uint32),
        ("compat_version", ctypes.c_uint32),
        ("lock", ctypes.c_uint32),
        ("index", ctypes.c_uint32),
        ("offset", ctypes.c_int64),
        ("time_enabled", ctypes.c_uint64),
        ("time_running", ctypes.c_uint64),
        ("capabilities", ctypes.c_uint64),
        ("pmc_width", ctypes.c_uint16),
        ("time_shift", ctypes.c_uint16),
        ("time_mult", ctypes.c_uint32),
        ("time_offset", ctypes.c_uint64),
        ("time_zero", ctypes.c_uint64),
        ("size", ctypes.c_uint32),
        ("_reserved_1", ctypes.c_uint32),
        ("time_cycles", ctypes.c_uint64),
        ("time_mask", ctypes.c_uint64),
        ("_reserved", ctypes.c_uint8 * (116 * 8)),
        ("data_head", ctypes.c_uint64),
        ("data_tail", ctypes.c_uint64),
        ("data_offset", ctypes.c_uint64),
        ("data_size", ctypes.c_uint64),
    ]


assert PerfEventMmapPage.data_head.offset == 1024
_HEAD = PerfEventMmapPage.data_head.offset // 8
_TAIL = PerfEventMmapPage.data_tail.offset // 8


class _CpuBuffer:
    """The BPF output event of one CPU: its fd, its mapping, and the record walk."""

    def __init__(self, cpu: int, pages: int, wakeup_events: int, owner: PerfBuffer):
        from .syscalls.perf import bpf_output_attr, ioctl_enable, perf_event_open

        self.cpu = cpu
        self.owner = owner
        self.fd = perf_event_open(bpf_output_attr(wakeup_events), pid=-1, cpu=cpu,
                                  detail=f"perf buffer BPF output event on CPU {cpu}")
        self._map: mmap.mmap | None = None
        try:
            length = (1 + pages) * _PAGE
            try:
                self._map = mmap.mmap(self.fd.fileno(), length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            except OSError as e:
                raise_for_errno("mmap", e.errno or errno.EINVAL,
                                f"perf buffer of CPU {cpu} ({pages} data pages): see /proc/sys/kernel/perf_event_mlock_kb")
            meta = PerfEventMmapPage.from_buffer(self._map)
            offset, size = meta.data_offset or _PAGE, meta.data_size or pages * _PAGE
            del meta  # no export of the mapping may outlive close()
            view = memoryview(self._map)
            self.positions = view[:_PAGE].cast("Q")
            self.data = view[offset:offset + size]
            self.words = self.data.cast("I")
            self.qwords = self.data.cast("Q")
            self.halves = self.data.cast("H")
            self._structs: dict[int, struct.Struct] = {}
            self.size, self.mask = size, size - 1
            ioctl_enable(self.fd)
        except BaseException:
            self.close()
            raise

    def consume(self) -> int:
        owner = self.owner
        return self._consume_batch() if owner._batch else self._consume_each()

    def _record(self, off: int, size: int) -> memoryview | bytes:
        """The whole record at ``off`` (a copy when it wraps around the end of the data area)."""
        end = off + size
        if end <= self.size:
            return self.data[off:end]
        return bytes(self.data[off:]) + bytes(self.data[:end - self.size])

    def _consume_each(self) -> int:
        """One callback per sample; ``data_tail`` stored once per walk (as libbpf does) and
        past a record whose callback raised."""
        positions, qwords, words, data, mask, size_total = self.positions, self.qwords, self.words, self.data, \
            self.mask, self.size
        owner = self.owner
        callback, decode, copy = owner._callback, owner._decode, owner._copy
        least = _SAMPLE_HEAD + owner._need  # smallest sample record the fast path takes
        head = positions[_HEAD]
        tail = positions[_TAIL]
        count = 0
        try:
            while tail < head:
                while tail < head:
                    off = tail & mask
                    header = qwords[off >> 3]  # u32 type | u16 misc << 32 | u16 size << 48
                    size = header >> 48
                    tail += size
                    if header & 0xFFFFFFFF == PERF_RECORD_SAMPLE and least <= size <= size_total - off:
                        if decode is not None:
                            callback(decode(data, off + _SAMPLE_HEAD))
                        else:
                            raw = words[(off >> 2) + 2]
                            off += _SAMPLE_HEAD
                            callback(bytes(data[off:off + raw]) if copy else data[off:off + raw])
                        count += 1
                    else:
                        count += self._other_record(tail - size, off, header, callback, decode)
                head = positions[_HEAD]
        finally:
            positions[_TAIL] = tail
        return count

    def _other_record(self, pos: int, off: int, header: int, callback: Any, decode: Any) -> int:
        """A sample wrapping around the end (a copy is handed over), a LOST record, or
        something else (skipped); returns the samples delivered (0 or 1)."""
        kind, size = header & 0xFFFFFFFF, header >> 48
        if size < 8:
            raise CorepyError(f"perf buffer CPU {self.cpu}: corrupt record header at {pos:#x} (size {size})")
        if kind == PERF_RECORD_LOST:
            self.owner._lost_record(self.cpu, _LOST.unpack_from(self._record(off, size), 8)[1])
        elif kind == PERF_RECORD_SAMPLE and size >= _SAMPLE_HEAD:
            record = self._record(off, size)
            raw = struct.unpack_from("<I", record, 8)[0]
            if decode is not None and min(raw, size - _SAMPLE_HEAD) < self.owner._need:
                raise CorepyError(f"perf buffer CPU {self.cpu}: a {raw}-byte sample is shorter than its record "
                                  f"type ({self.owner._need} bytes)")
            callback(decode(record, _SAMPLE_HEAD) if decode is not None else record[_SAMPLE_HEAD:_SAMPLE_HEAD + raw])
            return 1
        return 0

    def _consume_batch(self) -> int:
        owner, positions, qwords, words, data, mask, size_total = self.owner, self.positions, self.qwords, \
            self.words, self.data, self.mask, self.size
        callback, decode = owner._callback, owner._decode
        least = _SAMPLE_HEAD + owner._need
        head = positions[_HEAD]
        tail = positions[_TAIL]
        count = 0
        user_struct = owner._struct
        while tail < head:
            records: list[Any] = []
            if user_struct is not None:
                tail, records = self._uniform_batch(tail, head, user_struct)
            append = records.append
            error: CorepyError | None = None
            while tail < head and len(records) < _BATCH_MAX:
                off = tail & mask
                header = qwords[off >> 3]
                size = header >> 48
                tail += size
                if header & 0xFFFFFFFF == PERF_RECORD_SAMPLE and least <= size <= size_total - off:
                    off += _SAMPLE_HEAD
                    append(decode(data, off) if decode is not None else data[off:off + words[(off >> 2) - 1]])
                else:
                    try:
                        self._other_record(tail - size, off, header, append, decode)
                    except CorepyError as e:  # consumed; raised once the batch before it is delivered
                        error = e
                        break
            try:
                if records:
                    callback(records)
            finally:
                positions[_TAIL] = tail
            count += len(records)
            if error is not None:
                raise error
            head = positions[_HEAD]
        return count

    def _uniform_batch(self, tail: int, head: int, user: struct.Struct) -> tuple[int, list[Any]]:
        """Fast path for struct-decoded batches: a run of same-size samples up to the end of the
        data area is unpacked in one ``iter_unpack`` (skipping header and raw size)."""
        words, off = self.words, tail & self.mask
        size = words[(off >> 2) + 1] >> 16
        if words[off >> 2] != PERF_RECORD_SAMPLE or size < _SAMPLE_HEAD + user.size or size & 7:
            return tail, []
        n = min((head - tail) // size, (self.size - off) // size, _BATCH_MAX)
        if n < 2:
            return tail, []
        step = size >> 2
        kinds = words[off >> 2:(off >> 2) + n * step:step].tolist()
        halves = self.halves
        sizes = halves[(off + 6) >> 1:((off + 6) >> 1) + n * (size >> 1):size >> 1].tolist()
        if kinds.count(PERF_RECORD_SAMPLE) != n or sizes.count(size) != n:
            return tail, []
        unpacker = self._structs.get(size)
        if unpacker is None:
            unpacker = self._structs[size] = strided(user, _SAMPLE_HEAD, size)
        return tail + n * size, list(unpacker.iter_unpack(self.data[off:off + n * size]))

    def available(self) -> int:
        return self.positions[_HEAD] - self.positions[_TAIL]

    def close(self) -> None:
        for name in ("positions", "qwords", "words", "halves", "data"):
            view = self.__dict__.pop(name, None)
            if view is not None:
                view.release()
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # a record view handed out is still alive: unmapped when it goes
            self._map = None
        self.fd.close()


class PerfBuffer(EventBuffer):
    """Consumer of a BPF_MAP_TYPE_PERF_EVENT_ARRAY: one mmapped BPF output event per CPU.

    ``callback(record)`` gets the raw sample as a zero-copy ``memoryview`` (valid during the
    call; a copy for a record wrapping around the buffer end), or decoded per
    ``record_type`` (as :class:`~corepy.ringbuf.RingBuffer`); ``batch=True`` hands over lists
    of up to 4096 records and stores ``data_tail`` once per batch. Without a callback, records
    are queued for ``async for`` and :meth:`records`. ``lost_callback(cpu, count)`` hears
    of samples the kernel dropped because a buffer was full; :attr:`lost` sums them.
    ``pages`` data pages per CPU (a power of 2), ``wakeup_events`` samples per wake-up,
    ``cpus`` the CPUs to open (default: online CPUs below the map's size).
    The buffer does not own the map; closing it clears the map slots it filled.
    """

    def __init__(self, map: Any, callback: Callable[[Any], Any] | None = None, *,
                 lost_callback: Callable[[int, int], Any] | None = None, record_type: Any = None,
                 batch: bool = False, pages: int = 8, wakeup_events: int = 1, cpus: Sequence[int] | None = None,
                 btf: Any = None):
        super().__init__()
        self._buffers: list[_CpuBuffer] = []
        self._map_fd: FD | None = None
        self.lost = 0
        """Samples the kernel reported lost (PERF_RECORD_LOST), all CPUs together."""
        try:
            self._open(map, callback, lost_callback, record_type, batch, pages, wakeup_events, cpus, btf)
        except BaseException:
            self.close()
            raise

    def _open(self, map: Any, callback: Any, lost_callback: Any, record_type: Any, batch: bool, pages: int,
              wakeup_events: int, cpus: Sequence[int] | None, btf: Any) -> None:
        from .syscalls.cpus import online_cpus

        fd, name, map_type, max_entries, map_btf = _map_facts(map)
        if map_type != _PERF_EVENT_ARRAY:
            raise CorepyError(f"map {name!r} is not a perf event array (BPF_MAP_TYPE_PERF_EVENT_ARRAY); "
                              f"its type is {map_type}")
        if pages <= 0 or pages & (pages - 1):
            raise CorepyError(f"perf buffer {name!r}: pages must be a power of 2, not {pages}")
        self.name = name
        self._decode, self._struct, self._need = resolve_decoder(record_type, btf if btf is not None else map_btf,
                                                                 f"perf buffer {name!r}")
        self._copy = callback is None
        self._callback = self._queue.append if callback is None else callback
        self._batch = batch and callback is not None
        self._lost_callback = lost_callback
        wanted = list(cpus) if cpus is not None else [c for c in online_cpus() if c < max_entries]
        for cpu in wanted:
            if cpu >= max_entries:
                raise CorepyError(f"perf buffer {name!r}: CPU {cpu} is beyond the map's {max_entries} slots")
        self._map_fd = FD(os.dup(fd), "perf event array")  # our own reference: slots cleared safely on close
        for cpu in wanted:
            buf = _CpuBuffer(cpu, pages, wakeup_events, self)
            self._buffers.append(buf)
            self._set_slot(cpu, buf.fd.fileno())
            self._register(buf, buf.fd.fileno())

    def _set_slot(self, cpu: int, event_fd: int) -> None:
        from .syscalls.maps import map_update_elem

        map_update_elem(self._map_fd, struct.pack("=I", cpu), struct.pack("=I", event_fd))

    def _lost_record(self, cpu: int, count: int) -> None:
        self.lost += count
        if self._lost_callback is not None:
            self._lost_callback(cpu, count)

    @property
    def cpus(self) -> list[int]:
        """The CPUs with an open buffer."""
        return [b.cpu for b in self._buffers]

    def available(self, cpu: int) -> int:
        """Unconsumed bytes in ``cpu``'s buffer."""
        for b in self._buffers:
            if b.cpu == cpu:
                return b.available()
        raise CorepyError(f"perf buffer {getattr(self, 'name', '?')!r} has no buffer on CPU {cpu}")

    def close(self) -> None:
        """Clear the map slots this buffer filled, then close every CPU's event and mapping."""
        from .errors import SyscallError
        from .syscalls.maps import map_delete_elem

        buffers, self._buffers = getattr(self, "_buffers", []), []
        map_fd, self._map_fd = getattr(self, "_map_fd", None), None
        try:
            for buf in buffers:
                if map_fd is not None:
                    try:
                        map_delete_elem(map_fd, struct.pack("=I", buf.cpu))
                    except SyscallError:
                        pass  # ENOENT: the slot was cleared or replaced already
        finally:
            super().close()
            for buf in buffers:
                buf.close()
            if map_fd is not None:
                map_fd.close()
