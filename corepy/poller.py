"""What ring buffers and perf buffers share: one level-triggered epoll set, poll/consume,
and asyncio integration (the epoll fd registered with the running loop; no threads).

Level-triggered on purpose: an edge-triggered consumer must issue a full memory fence
between committing its position and re-reading the producer's, which CPython cannot do.
"""

from __future__ import annotations

import asyncio
import errno
import select
import struct
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from .errors import CorepyError, raise_for_errno

__all__ = ["EventBuffer", "Source", "resolve_decoder", "Decoder"]

Decoder = Callable[[Any, int], Any]
"""``decode(buffer, offset) -> value`` (``Codec.decode`` and ``Struct.unpack_from`` both fit)."""


class Source(Protocol):
    """One epoll-registered producer (a ring buffer, or one CPU of a perf buffer)."""

    def consume(self) -> int:
        """Deliver every available record; return how many."""

    def close(self) -> None: ...


class EventBuffer:
    """Base of :class:`~corepy.ringbuf.RingBuffer` and :class:`~corepy.perfbuf.PerfBuffer`.

    Sources without a callback deliver into an internal queue (copied or decoded records)
    that ``async for record in buffer`` and :meth:`records` drain. Timeouts are seconds;
    ``None`` waits forever, ``0`` does not wait.
    """

    def __init__(self) -> None:
        self._epoll: select.epoll | None = select.epoll()
        self._sources: list[Source] = []
        self._queue: deque[Any] = deque()
        self._fd_source: dict[int, Source] = {}

    # --- sources ----------------------------------------------------------
    def _register(self, source: Source, fd: int) -> None:
        epoll = self._open_epoll()
        if fd in self._fd_source:
            raise CorepyError(f"fd {fd} was already added to this {type(self).__name__}")
        index = len(self._sources)
        self._sources.append(source)
        try:
            epoll.register(fd, select.EPOLLIN)  # level-triggered
        except OSError as e:
            self._sources.pop()
            raise_for_errno("epoll_ctl(EPOLL_CTL_ADD)", e.errno or errno.EINVAL, f"fd {fd} (source {index})")
        self._fd_source[fd] = source

    def _open_epoll(self) -> select.epoll:
        if self._epoll is None:
            raise CorepyError(f"{type(self).__name__} is closed")
        return self._epoll

    # --- consuming --------------------------------------------------------
    def poll(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` seconds for records, then consume the ready sources.
        Returns the number of records delivered (0 on timeout)."""
        epoll = self._open_epoll()
        events = epoll.poll(-1 if timeout is None else timeout)
        count = 0
        fd_source = self._fd_source
        for fd, _ in events:
            count += fd_source[fd].consume()
        return count

    def consume(self) -> int:
        """Consume every source without waiting; returns the number of records delivered."""
        self._open_epoll()
        return sum(source.consume() for source in self._sources)

    def fileno(self) -> int:
        """The epoll fd: readable while any source has records (for select/asyncio loops)."""
        return self._open_epoll().fileno()

    def records(self, timeout: float | None = None) -> list[Any]:
        """Poll once and return the queued records of sources added without a callback."""
        if not self._queue:
            self.poll(timeout)
        out = list(self._queue)
        self._queue.clear()
        return out

    # --- asyncio ------------------------------------------------------------
    async def wait_readable(self, timeout: float | None = None) -> bool:
        """Wait (without blocking the loop) until a source has records; False on timeout."""
        loop = asyncio.get_running_loop()
        fd = self.fileno()
        ready = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(True)

        loop.add_reader(fd, wake)
        try:
            return await asyncio.wait_for(ready, timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            loop.remove_reader(fd)

    async def poll_async(self, timeout: float | None = None) -> int:
        """:meth:`poll` for asyncio: await records, consume them, return how many."""
        count = self.consume()
        if count:
            return count
        if await self.wait_readable(timeout):
            return self.consume()
        return 0

    def __aiter__(self) -> EventBuffer:
        return self

    async def __anext__(self) -> Any:
        """The next queued record (sources added without a callback); ends when closed."""
        queue = self._queue
        while not queue:
            if self._epoll is None:
                raise StopAsyncIteration
            if not self.consume():
                await self.wait_readable()
        return queue.popleft()

    # --- lifetime -------------------------------------------------------------
    def close(self) -> None:
        """Unmap every source and close the epoll fd (maps stay open: their owner closes them)."""
        sources, self._sources = self._sources, []
        self._fd_source = {}
        for source in sources:
            source.close()
        if self._epoll is not None:
            self._epoll.close()
            self._epoll = None

    @property
    def closed(self) -> bool:
        return self._epoll is None

    def __enter__(self) -> EventBuffer:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def resolve_decoder(record_type: Any, btf: Any, what: str) -> tuple[Decoder | None, struct.Struct | None, int]:
    """``record_type`` -> (``decode(buf, offset)``, the ``struct.Struct`` when it is one, the
    bytes a record needs).

    ``None``: no decoding; a ``str``/``int``: that BTF type of ``btf`` through a
    :class:`~corepy.btf.codec.Codec`; a ``Codec``; a ``struct.Struct`` (records become tuples);
    a class with ``SIZE`` and ``from_bytes(data, offset)``, such as a skeleton's record class."""
    if record_type is None:
        return None, None, 0
    if isinstance(record_type, struct.Struct):
        return record_type.unpack_from, record_type, record_type.size
    from .btf.codec import Codec

    if isinstance(record_type, Codec):
        return record_type.decode, None, record_type.size
    if isinstance(record_type, (str, int)) and not isinstance(record_type, bool):
        if btf is None:
            raise CorepyError(f"{what}: cannot decode records as {record_type!r} without BTF "
                              "(pass btf=, e.g. the object's BTF, or a Codec)")
        type_id = record_type
        if isinstance(record_type, str):
            from .btf.types import Kind

            ids = [i for i in btf.ids_by_name(record_type)
                   if btf[i].kind in (Kind.STRUCT, Kind.UNION, Kind.TYPEDEF, Kind.INT, Kind.ENUM, Kind.ARRAY)]
            if not ids:
                raise CorepyError(f"{what}: no type named {record_type!r} in the BTF")
            type_id = ids[0]
        codec = Codec(btf, type_id)
        return codec.decode, None, codec.size
    if isinstance(record_type, type) and hasattr(record_type, "from_bytes") and hasattr(record_type, "SIZE"):
        return record_type.from_bytes, None, int(record_type.SIZE)
    raise TypeError(f"{what}: record_type must be a BTF type name or id, a Codec, a struct.Struct "
                    f"or a record class (SIZE + from_bytes), not {type(record_type).__name__}")
