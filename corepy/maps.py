"""Live BPF maps: dict-like typed access through BTF, batches, queues, pinning.

A :class:`Map` owns one kernel map fd. Keys and values are converted through
the map's BTF types (:class:`~corepy.btf.codec.Codec`) when the map has them;
without BTF, 1/2/4/8-byte keys and values are unsigned ints and anything else
is ``bytes``. ``m.raw`` is the same map with ``bytes`` keys and values.

Conventions: ``m[key]`` raises ``KeyError`` for a missing key, ``m.get(key)``
returns a default; per-CPU maps give and take one value per possible CPU (a
list; a single value on write is copied to every CPU); fd-valued maps (prog
arrays, map-in-map, perf event arrays) take a ``Program``/``Map``/fd on write
and give the kernel object's id on read.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct
import warnings
from _thread import get_ident as _get_ident  # (threading's own, without importing threading: ~0.7 ms)
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType

from ._records import record
from .errors import CorepyError, NotSupportedError, SyscallError, raise_for_errno
from .syscalls import maps as sysmaps
from .syscalls import objects as sysobj
from .syscalls.attr import MapElemAttr
from .syscalls.fast import prepared
from .syscalls.cpus import possible_cpu_count
from .syscalls.fd import FD
from .syscalls.uapi import BPF_ANY, BPF_EXIST, Cmd, MapFlag, MapType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .btf.spec import BTF
    from .object.spec import MapSpec

__all__ = ["Map", "MapInfo", "MapIncompatibleError", "PER_CPU_TYPES", "FD_VALUE_TYPES"]

PER_CPU_TYPES = frozenset({MapType.PERCPU_HASH, MapType.PERCPU_ARRAY, MapType.LRU_PERCPU_HASH, MapType.PERCPU_CGROUP_STORAGE})
"""Map types whose user-space values hold one slot per possible CPU."""
FD_VALUE_TYPES = frozenset({
    MapType.PROG_ARRAY, MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY, MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS,
})
"""Map types written with file descriptors and read back as object ids."""
KEYLESS_TYPES = frozenset({MapType.QUEUE, MapType.STACK, MapType.BLOOM_FILTER})
"""Map types without keys: values are pushed and popped (queue/stack) or tested (bloom)."""
ARRAY_TYPES = frozenset({
    MapType.ARRAY, MapType.PERCPU_ARRAY, MapType.PROG_ARRAY, MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY,
    MapType.ARRAY_OF_MAPS,
})
"""Map types whose keys are the indexes 0..max_entries-1 and cannot be deleted."""

_ENOTSUPP = 524
_BATCH_UNSUPPORTED = (errno.EINVAL, errno.EOPNOTSUPP, _ENOTSUPP)
_UINT_FORMATS = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}
_ARRAY_CODES = {(1, False): "B", (2, False): "H", (4, False): "I", (8, False): "Q",
                (1, True): "b", (2, True): "h", (4, True): "i", (8, True): "q"}


class MapIncompatibleError(CorepyError):
    """A pinned map exists but differs from what the object declares."""

    def __init__(self, name: str, path: str, differences: list[str]):
        self.name, self.path, self.differences = name, path, differences
        super().__init__(f"map {name!r}: the map pinned at {path} is incompatible: {'; '.join(differences)}")


# --- converters: Python values <-> the bytes the kernel takes ------------------


class _Conv:
    """Converts one key or value. ``array_code`` is the array/memoryview code of a plain int."""

    size: int
    array_code: str | None = None

    def encode(self, value: Any) -> bytes:
        raise NotImplementedError

    def decode(self, buf: Any, offset: int = 0) -> Any:
        raise NotImplementedError

    def pack_into(self, buf: Any, value: Any) -> None:
        """Write ``value`` at the start of the writable buffer ``buf``."""
        data = self.encode(value)
        ctypes.memmove(buf, data, len(data))


class _BytesConv(_Conv):
    def __init__(self, size: int, what: str):
        self.size, self.what = size, what

    def encode(self, value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == self.size:
            return bytes(value)
        raise TypeError(f"{self.what} must be {self.size} bytes, got {_describe(value)}")

    def decode(self, buf: Any, offset: int = 0) -> bytes:
        return bytes(memoryview(buf).cast("B")[offset:offset + self.size])


class _IntConv(_Conv):
    def __init__(self, size: int, signed: bool, what: str):
        fmt = _UINT_FORMATS[size]
        self.st = struct.Struct(fmt.lower() if signed else fmt)
        self.size, self.what = size, what
        self.array_code = _ARRAY_CODES[(size, signed)] if struct.pack("=H", 1) == b"\x01\x00" else None

    def encode(self, value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == self.size:
            return bytes(value)
        try:
            return self.st.pack(value)
        except struct.error as e:
            raise TypeError(f"{self.what}: cannot store {_describe(value)} as a {self.size}-byte int ({e})") from None

    def decode(self, buf: Any, offset: int = 0) -> int:
        return self.st.unpack_from(buf, offset)[0]

    def pack_into(self, buf: Any, value: Any) -> None:
        try:
            self.st.pack_into(buf, 0, value)
        except struct.error:
            super().pack_into(buf, value)


class _FdConv(_IntConv):
    """Values written as fds (Program/Map/FD/int) and read back as ids."""

    def encode(self, value: Any) -> bytes:
        if hasattr(value, "fileno"):
            value = value.fileno()
        return super().encode(value)

    def pack_into(self, buf: Any, value: Any) -> None:
        if hasattr(value, "fileno"):
            value = value.fileno()
        super().pack_into(buf, value)


class _CodecConv(_Conv):
    def __init__(self, codec: Any, size: int, what: str):
        self.codec, self.size, self.what = codec, size, what

    def encode(self, value: Any) -> bytes:
        try:
            data = self.codec.encode(value)
        except (TypeError, ValueError, KeyError, AttributeError, struct.error) as e:
            raise TypeError(f"{self.what}: cannot encode {_describe(value)}: {e}") from None
        if len(data) != self.size:
            data = data[: self.size].ljust(self.size, b"\0")
        return data

    def decode(self, buf: Any, offset: int = 0) -> Any:
        if self.codec.size != self.size:
            view = memoryview(buf).cast("B")[offset:offset + self.size]
            return self.codec.decode(bytes(view).ljust(self.codec.size, b"\0"))
        return self.codec.decode(buf, offset)


class _PerCPUConv(_Conv):
    """One ``inner`` value per possible CPU, each slot 8-byte aligned."""

    def __init__(self, inner: _Conv, cpus: int):
        self.inner, self.cpus = inner, cpus
        self.stride = (inner.size + 7) & ~7
        self.size = self.stride * cpus

    def encode(self, value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == self.size:
            return bytes(value)
        if isinstance(value, (list, tuple)):
            if len(value) != self.cpus:
                raise ValueError(f"per-CPU value needs {self.cpus} entries (possible CPUs), got {len(value)}")
            values = value
        else:
            values = [value] * self.cpus
        pad = bytes(self.stride - self.inner.size)
        return b"".join(self.inner.encode(v) + pad for v in values)

    def decode(self, buf: Any, offset: int = 0) -> list[Any]:
        dec, stride = self.inner.decode, self.stride
        return [dec(buf, offset + i * stride) for i in range(self.cpus)]


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def _converter(btf: BTF | None, type_id: int, size: int, what: str, *, fd_values: bool = False) -> _Conv:
    """The converter for a key or value of ``size`` bytes with BTF type ``type_id`` (0: none)."""
    if fd_values:
        return _FdConv(4, False, what) if size == 4 else _BytesConv(size, what)
    if btf is not None and type_id:
        from .btf.types import Enum, Enum64, Int, IntEncoding

        t = btf.skip_mods_and_typedefs(type_id)
        if isinstance(t, Int) and t.size == size and size in _UINT_FORMATS and t.bits == size * 8 \
                and not t.bit_offset and not t.encoding & IntEncoding.BOOL:
            return _IntConv(size, t.signed, what)
        if isinstance(t, (Enum, Enum64)) and t.size == size and size in _UINT_FORMATS:
            return _IntConv(size, t.signed, what)
        from .btf.codec import Codec

        return _CodecConv(Codec(btf, type_id), size, what)
    if size in _UINT_FORMATS:
        return _IntConv(size, False, what)
    return _BytesConv(size, what)


# --- map info ---------------------------------------------------------------


@record(frozen=True)
class MapInfo:
    """What the kernel says about a map (``bpf_map_info``)."""

    type: MapType | int
    id: int
    name: str
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    map_extra: int
    btf_id: int
    btf_key_type_id: int
    btf_value_type_id: int

    @classmethod
    def of(cls, fd: FD | int) -> MapInfo:
        raw = sysobj.map_info(fd)
        try:
            kind: MapType | int = MapType(raw.type)
        except ValueError:
            kind = raw.type
        return cls(kind, raw.id, raw.name.decode(errors="replace"), raw.key_size, raw.value_size, raw.max_entries,
                   raw.map_flags, raw.map_extra, raw.btf_id, raw.btf_key_type_id, raw.btf_value_type_id)


# --- the live map -----------------------------------------------------------


class _Elem:
    """Preallocated attrs and key/value buffers for the element commands of one map,
    with the bpf() calls bound to them (the hot path builds nothing per call)."""

    __slots__ = ("kbuf", "vbuf", "vview", "attr", "del_attr", "lookup", "update", "delete", "kpack", "vunpack")

    def __init__(self, fd: int, key_size: int, kconv: _Conv | None, vconv: _Conv, keyless: Any):
        self.kbuf = ctypes.create_string_buffer(max(key_size, 1))
        self.vbuf = ctypes.create_string_buffer(max(vconv.size, 1))
        self.vview = memoryview(self.vbuf).cast("B")
        kaddr = ctypes.addressof(self.kbuf)
        self.attr = MapElemAttr(map_fd=fd & 0xFFFFFFFF, key=kaddr, value=ctypes.addressof(self.vbuf))
        # DELETE_ELEM takes only map_fd and key: the kernel rejects a nonzero value field
        self.del_attr = MapElemAttr(map_fd=fd & 0xFFFFFFFF, key=kaddr)
        self.lookup = prepared(Cmd.MAP_LOOKUP_ELEM, self.attr)
        self.update = prepared(Cmd.MAP_UPDATE_ELEM, self.attr)
        self.delete = prepared(Cmd.MAP_DELETE_ELEM, self.del_attr)
        if kconv is None:
            self.kpack = keyless
        elif type(kconv) is _IntConv:
            self.kpack = functools.partial(kconv.st.pack_into, self.kbuf, 0)
        else:
            self.kpack = functools.partial(kconv.pack_into, self.kbuf)
        self.vunpack = functools.partial(vconv.st.unpack_from, self.vbuf) if type(vconv) is _IntConv else None

    def invalidate(self) -> None:
        """Point the attrs at no fd (EBADF) once the map is closed."""
        self.attr.map_fd = self.del_attr.map_fd = 0xFFFFFFFF


class Map:
    """A live kernel map. Context manager; ``close()`` releases the fd (once)."""

    def __init__(
        self,
        fd: FD,
        *,
        name: str,
        type: MapType | int,
        key_size: int,
        value_size: int,
        max_entries: int,
        flags: int = 0,
        map_extra: int = 0,
        btf: BTF | None = None,
        key_type_id: int = 0,
        value_type_id: int = 0,
    ):
        self.fd = fd
        self.name = name
        try:
            self.type: MapType | int = MapType(type)
        except ValueError:
            self.type = type
        self.key_size, self.value_size, self.max_entries = key_size, value_size, max_entries
        self.flags, self.map_extra = flags, map_extra
        self.btf, self.key_type_id, self.value_type_id = btf, key_type_id, value_type_id
        self.pinned_path: str | None = None
        self.reused = False
        """True when this map was an existing pinned map reused instead of created."""
        self._mmap: Any = None
        self._keyless = self.type in KEYLESS_TYPES
        per_cpu = self.type in PER_CPU_TYPES
        key_conv = _converter(btf, key_type_id, key_size, f"map {name!r} key") if key_size else None
        value_conv = _converter(btf, value_type_id, value_size, f"map {name!r} value",
                                fd_values=self.type in FD_VALUE_TYPES)
        if per_cpu:
            value_conv = _PerCPUConv(value_conv, possible_cpu_count())
        self._setup(key_conv, value_conv)

    def _setup(self, key_conv: _Conv | None, value_conv: _Conv) -> None:
        self._kconv, self._vconv = key_conv, value_conv
        self._vdecode = value_conv.decode
        # the creating thread reuses one set of preallocated buffers; other threads get their own per call
        self._owner = _get_ident()
        self._elem = self._new_elem()
        owner = getattr(self, "_parent", self)
        if owner is self:
            self._elems: list[_Elem] = []
        owner._elems.append(self._elem)  # invalidated on close: a reused fd number is not this map

    def _new_elem(self) -> _Elem:
        fd = -1 if self.fd.closed else self.fd.fileno()
        keyless = None if self._kconv is not None else functools.partial(_no_keys, self._no_keys_message())
        return _Elem(fd, self.key_size, self._kconv, self._vconv, keyless)

    def _thread_elem(self) -> _Elem:
        return self._elem if _get_ident() == self._owner else self._new_elem()

    # --- construction ---------------------------------------------------
    @classmethod
    def create(
        cls,
        type: MapType | int,
        key_size: int,
        value_size: int,
        max_entries: int,
        *,
        name: str = "",
        flags: int = 0,
        map_extra: int = 0,
        inner_map: Map | FD | int | None = None,
        numa_node: int = 0,
        btf: BTF | None = None,
        btf_fd: FD | int | None = None,
        key_type_id: int = 0,
        value_type_id: int = 0,
    ) -> Map:
        """BPF_MAP_CREATE a map. With ``btf_fd`` the kernel checks the key/value BTF types;
        if it refuses them, the map is created without BTF (as libbpf does)."""
        if type == MapType.PERF_EVENT_ARRAY and not max_entries:
            max_entries = possible_cpu_count()
        inner_fd = inner_map.fd if isinstance(inner_map, Map) else inner_map
        if numa_node:
            flags |= MapFlag.NUMA_NODE
        args = dict(flags=flags, name=name, inner_map_fd=inner_fd, numa_node=numa_node, map_extra=map_extra)
        kernel_btf = btf_fd is not None and (key_type_id or value_type_id)
        try:
            if kernel_btf:
                try:
                    fd = sysmaps.map_create(type, key_size, value_size, max_entries, btf_fd=btf_fd,
                                            btf_key_type_id=key_type_id, btf_value_type_id=value_type_id, **args)
                except SyscallError as e:
                    warnings.warn(f"map {name!r}: the kernel refused its BTF key/value types ({e}); "
                                  "creating it without BTF", RuntimeWarning, stacklevel=2)
                    fd = sysmaps.map_create(type, key_size, value_size, max_entries, **args)
            else:
                fd = sysmaps.map_create(type, key_size, value_size, max_entries, **args)
        except SyscallError as e:
            _explain_create_failure(e, type, name)
            raise
        try:
            return cls(fd, name=name, type=type, key_size=key_size, value_size=value_size, max_entries=max_entries,
                       flags=int(flags), map_extra=map_extra, btf=btf, key_type_id=key_type_id,
                       value_type_id=value_type_id)
        except BaseException:
            fd.close()
            raise

    @classmethod
    def from_spec(
        cls,
        spec: MapSpec,
        *,
        btf: BTF | None = None,
        btf_fd: FD | int | None = None,
        pin_root: str | os.PathLike[str] | None = None,
    ) -> Map:
        """Create the map a :class:`~corepy.object.spec.MapSpec` describes, as libbpf does.

        The inner map of a map-in-map is created first (as its template) and closed
        after; global data maps get their initial contents and ``.rodata``/``.kconfig``
        are frozen. With ``pin_root``, a map pinned by name (``LIBBPF_PIN_BY_NAME``) is
        reused from ``<pin_root>/<name>`` when compatible (no initial contents written)
        or created and pinned there; an incompatible pin raises
        :class:`MapIncompatibleError`. Prog-array and map-in-map ``values`` are the
        caller's (they need the programs and the other maps).
        """
        from .object.spec import PIN_BY_NAME

        path = None
        if spec.pinning == PIN_BY_NAME and pin_root is not None:
            path = os.path.join(os.fspath(pin_root), spec.name)
            existing = _open_pinned(path)
            if existing is not None:
                try:
                    _check_compatible(existing, spec, path)
                    m = cls.from_fd(existing)  # typed by the BTF the pinned map was created with
                except BaseException:
                    existing.close()
                    raise
                m.name, m.pinned_path, m.reused = spec.name, path, True
                return m
        elif spec.pinning not in (0, PIN_BY_NAME):
            raise CorepyError(f"map {spec.name!r}: unsupported pinning type {spec.pinning} (only LIBBPF_PIN_BY_NAME)")
        m = cls._create_spec(spec, btf, btf_fd)
        try:
            if spec.data is not None and len(spec.data):
                m.update(0, bytes(spec.data).ljust(m.value_size, b"\0")[: m.value_size])
            if spec.readonly:
                m.freeze()
            if path is not None:
                m.pin(path)
        except BaseException:
            m.close()
            raise
        return m

    @classmethod
    def _create_spec(cls, spec: MapSpec, btf: BTF | None, btf_fd: FD | int | None) -> Map:
        key_type_id, value_type_id = spec.key_type_id, spec.value_type_id
        if spec.type in _NO_BTF_TYPES:  # libbpf passes no key/value BTF for these
            key_type_id = value_type_id = 0
        max_entries = spec.max_entries
        if spec.type in (MapType.RINGBUF, MapType.USER_RINGBUF):
            max_entries = _ringbuf_size(max_entries)
        inner = None
        if spec.inner is not None:
            inner = cls._create_spec(spec.inner, btf, btf_fd)
        try:
            m = cls.create(spec.type, spec.key_size, spec.value_size, max_entries, name=spec.kernel_name or spec.name,
                           flags=spec.flags, map_extra=spec.map_extra, numa_node=spec.numa_node, inner_map=inner,
                           btf=None if spec.internal else btf, btf_fd=btf_fd,
                           key_type_id=key_type_id, value_type_id=value_type_id)
        finally:
            if inner is not None:
                inner.close()
        m.name = spec.name
        if spec.internal:  # global data is typed per variable (corepy.collection.Globals): bytes here
            m._setup(m._kconv, _BytesConv(m.value_size, f"map {spec.name!r} value"))
        return m

    @classmethod
    def from_fd(cls, fd: FD, *, btf: BTF | None = None) -> Map:
        """Wrap an fd already open on a map (owning it); BTF fetched from the kernel when the map has some."""
        try:
            _check_is_map(fd)
            info = MapInfo.of(fd)
            if btf is None and info.btf_id:
                btf = btf_from_id(info.btf_id)
            return cls(fd, name=info.name, type=info.type, key_size=info.key_size, value_size=info.value_size,
                       max_entries=info.max_entries, flags=info.flags, map_extra=info.map_extra, btf=btf,
                       key_type_id=info.btf_key_type_id if btf else 0,
                       value_type_id=info.btf_value_type_id if btf else 0)
        except BaseException:
            fd.close()
            raise

    @classmethod
    def from_pinned(cls, path: str | os.PathLike[str], *, btf: BTF | None = None) -> Map:
        """Open the map pinned at ``path`` on a bpffs (``unpin()`` removes that pin)."""
        m = cls.from_fd(sysobj.obj_get(path), btf=btf)
        m.pinned_path = os.fspath(path)
        return m

    @classmethod
    def from_id(cls, map_id: int, *, btf: BTF | None = None) -> Map:
        """Open the map with kernel id ``map_id``."""
        return cls.from_fd(sysobj.get_fd_by_id("map", map_id), btf=btf)

    # --- lifetime -------------------------------------------------------
    def close(self) -> None:
        """Release the mmap (if any) and the fd; the kernel frees the map once nothing else holds it."""
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                pass  # a view into it is still alive; it goes when that does
            self._mmap = None
        for elem in self._elems:
            elem.invalidate()
        self.fd.close()

    @property
    def closed(self) -> bool:
        return self.fd.closed

    def fileno(self) -> int:
        return self.fd.fileno()

    def __enter__(self) -> Map:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = self.type.name if isinstance(self.type, MapType) else str(self.type)
        state = "closed" if self.fd.closed else f"fd {self.fd.fileno()}"
        return f"<Map {self.name!r} {kind} key {self.key_size} value {self.value_size} max {self.max_entries} {state}>"

    @property
    def raw(self) -> Map:
        """This map with ``bytes`` keys and values (per-CPU values: the whole buffer)."""
        view = self.__dict__.get("_raw")
        if view is not None:
            return view
        view = object.__new__(RawMap)
        view.__dict__.update(self.__dict__)
        view._parent = self
        view._setup(_BytesConv(self.key_size, f"map {self.name!r} key") if self.key_size else None,
                    _BytesConv(self._vconv.size, f"map {self.name!r} value"))
        self._raw = view
        return view

    # --- element access (hot path) --------------------------------------
    def _check_keyed(self) -> None:
        if self._kconv is None:
            _no_keys(self._no_keys_message())

    def _no_keys_message(self) -> str:
        return f"map {self.name!r} ({_type_name(self.type)}) has no keys: use push/pop/peek"

    def _pack_key(self, e: _Elem, key: Any) -> None:
        try:
            e.kpack(key)
        except struct.error:
            self._kconv.pack_into(e.kbuf, key)  # type: ignore[union-attr]  # raises a TypeError naming the map

    def __getitem__(self, key: Any) -> Any:
        e = self._elem if _get_ident() == self._owner else self._new_elem()
        try:
            e.kpack(key)
        except struct.error:
            self._kconv.pack_into(e.kbuf, key)  # type: ignore[union-attr]  # raises a TypeError naming the map
        if e.lookup() < 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                raise KeyError(key)
            self._raise("BPF_MAP_LOOKUP_ELEM", err, key)
        unpack = e.vunpack
        if unpack is not None:
            return unpack()[0]
        return self._vdecode(e.vview)

    def get(self, key: Any, default: Any = None) -> Any:
        """The value at ``key``, or ``default`` if absent."""
        try:
            return self[key]
        except KeyError:
            return default

    def lookup(self, key: Any, default: Any = None, *, flags: int = 0) -> Any:
        """Like :meth:`get`, with lookup ``flags`` (e.g. BPF_F_LOCK)."""
        e = self._thread_elem()
        self._pack_key(e, key)
        e.attr.flags = flags
        try:
            rc = e.lookup()
        finally:
            e.attr.flags = 0
        if rc < 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                return default
            self._raise("BPF_MAP_LOOKUP_ELEM", err, key)
        return self._vdecode(e.vview)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update(key, value)

    def update(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        """Write ``value`` at ``key`` (flags: BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK)."""
        e = self._elem if _get_ident() == self._owner else self._new_elem()
        self._pack_key(e, key)
        self._vconv.pack_into(e.vbuf, value)
        if flags:
            e.attr.flags = flags
            try:
                rc = e.update()
            finally:
                e.attr.flags = 0
        else:
            rc = e.update()
        if rc < 0:
            err = ctypes.get_errno()
            if err == errno.EEXIST:
                raise KeyError(f"map {self.name!r}: key {key!r} exists (BPF_NOEXIST)")
            if err == errno.ENOENT and flags & BPF_EXIST:
                raise KeyError(key)
            self._raise("BPF_MAP_UPDATE_ELEM", err, key)

    def __delitem__(self, key: Any) -> None:
        if not self.delete(key):
            raise KeyError(key)

    def delete(self, key: Any) -> bool:
        """Remove ``key``: True if it was there, False if not."""
        e = self._thread_elem()
        self._pack_key(e, key)
        if e.delete() < 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                return False
            self._raise("BPF_MAP_DELETE_ELEM", err, key)
        return True

    def __contains__(self, key: Any) -> bool:
        if self.type == MapType.BLOOM_FILTER:
            return self.contains(key)
        e = self._thread_elem()
        self._pack_key(e, key)
        if e.lookup() < 0:
            err = ctypes.get_errno()
            if err == errno.ENOENT:
                return False
            self._raise("BPF_MAP_LOOKUP_ELEM", err, key)
        return True

    def lookup_bytes(self, key: bytes | None) -> bytes | None:
        """The raw value bytes at the raw ``key`` (None: absent)."""
        return sysmaps.map_lookup_elem(self.fd, key, self._vconv.size)

    def lookup_and_delete(self, key: Any, default: Any = None) -> Any:
        """Remove ``key`` and return its value (``default`` if absent)."""
        self._check_keyed()
        data = sysmaps.map_lookup_and_delete_elem(self.fd, self._kconv.encode(key), self._vconv.size)  # type: ignore[union-attr]
        return default if data is None else self._vconv.decode(data)

    def _raise(self, command: str, err: int, key: Any) -> None:
        if self.fd.closed:
            raise ValueError(f"map {self.name!r} is closed")
        hint = ""
        if err == errno.EPERM and command != "BPF_MAP_LOOKUP_ELEM":
            hint = " (frozen or read-only map?)"
        elif err == errno.E2BIG:
            hint = f" (index beyond max_entries {self.max_entries}, or map full)"
        raise_for_errno(command, err, f"map {self.name!r} key {key!r}{hint}")

    # --- iteration ------------------------------------------------------
    def _raw_keys(self) -> Iterator[bytes]:
        key: bytes | None = None
        limit = self.max_entries or None
        seen = 0
        while True:
            nxt = sysmaps.map_get_next_key(self.fd, key, self.key_size)
            if nxt is None:
                return
            seen += 1
            if limit is not None and seen > limit:
                # a key deleted under the walk makes a hash map start over from its first key
                raise CorepyError(f"map {self.name!r}: more than max_entries ({limit}) keys while iterating: "
                                  "the map changed under the walk; use lookup_batch() for a snapshot")
            yield nxt
            key = nxt

    def keys(self) -> Iterator[Any]:
        """Every key, by BPF_MAP_GET_NEXT_KEY (no length needed)."""
        self._check_keyed()
        dec = self._kconv.decode  # type: ignore[union-attr]
        for raw in self._raw_keys():
            yield dec(raw)

    __iter__ = keys

    def items(self) -> Iterator[tuple[Any, Any]]:
        """Every (key, value); keys deleted meanwhile are skipped."""
        self._check_keyed()
        kdec, vdec, size = self._kconv.decode, self._vconv.decode, self._vconv.size  # type: ignore[union-attr]
        for raw in self._raw_keys():
            value = sysmaps.map_lookup_elem(self.fd, raw, size)
            if value is not None:
                yield kdec(raw), vdec(value)

    def values(self) -> Iterator[Any]:
        """Every value (see :meth:`items`)."""
        for _, value in self.items():
            yield value

    def __len__(self) -> int:
        """Entries counted by walking the keys (O(n) system calls; arrays: max_entries)."""
        if self.type in ARRAY_TYPES:
            return self.max_entries
        return sum(1 for _ in self._raw_keys())

    def __bool__(self) -> bool:
        return True

    # --- queue / stack / bloom -------------------------------------------
    def push(self, value: Any, flags: int = BPF_ANY) -> None:
        """Queue/stack: push ``value`` (flags BPF_EXIST overwrites the oldest when full); bloom: add it."""
        self._need_keyless("push")
        sysmaps.map_update_elem(self.fd, None, self._vconv.encode(value), flags)

    def pop(self) -> Any:
        """Queue/stack: remove and return the next value, None if empty."""
        self._need_keyless("pop")
        data = sysmaps.map_lookup_and_delete_elem(self.fd, None, self._vconv.size)
        return None if data is None else self._vconv.decode(data)

    def peek(self) -> Any:
        """Queue/stack: the next value without removing it, None if empty."""
        self._need_keyless("peek")
        data = sysmaps.map_lookup_elem(self.fd, None, self._vconv.size)
        return None if data is None else self._vconv.decode(data)

    def contains(self, value: Any) -> bool:
        """Bloom filter: False if ``value`` was certainly never pushed, True if it may have been."""
        if self.type != MapType.BLOOM_FILTER:
            raise TypeError(f"map {self.name!r} is a {_type_name(self.type)}, not a bloom filter")
        return sysmaps.bloom_filter_contains(self.fd, self._vconv.encode(value))

    def _need_keyless(self, op: str) -> None:
        if not self._keyless:
            raise TypeError(f"{op}() needs a queue, stack or bloom filter; map {self.name!r} is a {_type_name(self.type)}")

    # --- batches ----------------------------------------------------------
    def _decode_many(self, conv: _Conv, data: bytes, count: int) -> list[Any]:
        code = conv.array_code
        if code is not None:
            return memoryview(data).cast(code).tolist()
        size, dec = conv.size, conv.decode
        return [dec(data, i * size) for i in range(count)]

    def _batches(self, delete: bool, batch_size: int | None) -> Iterator[tuple[list[Any], list[Any]]]:
        lookup = sysmaps.map_lookup_and_delete_batch if delete else sysmaps.map_lookup_batch
        vsize = self._vconv.size
        # whole map in one call where buffers stay under ~16 MiB
        count = batch_size or max(1, min(self.max_entries, (16 << 20) // max(self.key_size + vsize, 1)))
        cursor: bytes | None = None
        while True:
            try:
                batch = lookup(self.fd, self.key_size, vsize, count, cursor)
            except SyscallError as e:
                if e.errno == errno.ENOSPC and count < (1 << 24):
                    count *= 2  # a hash bucket holds more entries than fit: retry bigger
                    continue
                raise
            if batch.count:
                yield (self._decode_many(self._kconv, batch.keys, batch.count),  # type: ignore[arg-type]
                       self._decode_many(self._vconv, batch.values, batch.count))
            if batch.next_batch is None:
                return
            cursor = batch.next_batch

    def lookup_batch(self, *, batch_size: int | None = None) -> list[tuple[Any, Any]]:
        """Every (key, value) through BPF_MAP_LOOKUP_BATCH (element by element where the
        map type has no batch support)."""
        self._check_keyed()
        try:
            out: list[tuple[Any, Any]] = []
            for keys, values in self._batches(False, batch_size):
                out.extend(zip(keys, values))
            return out
        except SyscallError as e:
            if e.errno not in _BATCH_UNSUPPORTED:
                raise
            return list(self.items())

    def lookup_and_delete_batch(self, *, batch_size: int | None = None) -> list[tuple[Any, Any]]:
        """Remove and return every (key, value) (BPF_MAP_LOOKUP_AND_DELETE_BATCH, or one by one)."""
        self._check_keyed()
        try:
            out: list[tuple[Any, Any]] = []
            for keys, values in self._batches(True, batch_size):
                out.extend(zip(keys, values))
            return out
        except SyscallError as e:
            if e.errno not in _BATCH_UNSUPPORTED or out:
                raise
        result = []
        for raw in list(self._raw_keys()):
            value = sysmaps.map_lookup_and_delete_elem(self.fd, raw, self._vconv.size)
            if value is not None:
                result.append((self._kconv.decode(raw), self._vconv.decode(value)))  # type: ignore[union-attr]
        return result

    def update_batch(self, pairs: Mapping[Any, Any] | Iterable[tuple[Any, Any]], flags: int = BPF_ANY) -> int:
        """Write many entries with BPF_MAP_UPDATE_BATCH (one by one where unsupported); returns the count."""
        self._check_keyed()
        items = list(pairs.items() if isinstance(pairs, Mapping) else pairs)
        if not items:
            return 0
        kenc, venc = self._kconv.encode, self._vconv.encode  # type: ignore[union-attr]
        keys = b"".join(kenc(k) for k, _ in items)
        values = b"".join(venc(v) for _, v in items)
        try:
            return sysmaps.map_update_batch(self.fd, keys, values, len(items), elem_flags=flags)
        except SyscallError as e:
            if e.errno not in _BATCH_UNSUPPORTED:
                raise
        for k, v in items:
            self.update(k, v, flags)
        return len(items)

    def delete_batch(self, keys: Iterable[Any]) -> int:
        """Delete many keys with BPF_MAP_DELETE_BATCH (one by one where unsupported); returns how many went."""
        self._check_keyed()
        keys = list(keys)
        if not keys:
            return 0
        raw = b"".join(self._kconv.encode(k) for k in keys)  # type: ignore[union-attr]
        try:
            return sysmaps.map_delete_batch(self.fd, raw, len(keys))
        except SyscallError as e:
            if e.errno not in _BATCH_UNSUPPORTED:
                raise
        return sum(1 for k in keys if self.delete(k))

    def clear(self) -> None:
        """Delete every key (hash-like maps)."""
        self.delete_batch([self._kconv.decode(k) for k in list(self._raw_keys())])  # type: ignore[union-attr]

    # --- the rest -----------------------------------------------------------
    def freeze(self) -> None:
        """BPF_MAP_FREEZE: no more writes from user space (BPF programs may still write
        unless the map is BPF_F_RDONLY_PROG)."""
        sysmaps.map_freeze(self.fd)

    def info(self) -> MapInfo:
        """The kernel's view of this map."""
        return MapInfo.of(self.fd)

    @property
    def id(self) -> int:
        return self.info().id

    def pin(self, path: str | os.PathLike[str]) -> None:
        """Pin at ``path`` on a bpffs (the pin keeps the map alive after close)."""
        sysobj.obj_pin(self.fd, path)
        self.pinned_path = os.fspath(path)

    def unpin(self) -> None:
        """Remove the pin made by :meth:`pin` (or found by pinning by name)."""
        if self.pinned_path is not None:
            try:
                os.unlink(self.pinned_path)
            except FileNotFoundError:
                pass
            self.pinned_path = None

    def mmap(self, writable: bool = True) -> memoryview:
        """The value area of a BPF_F_MMAPABLE array, mapped shared (read-only if frozen or ``writable`` is False)."""
        if not self.flags & MapFlag.MMAPABLE:
            raise NotSupportedError("mmap of this map", f"map {self.name!r} was not created with BPF_F_MMAPABLE")
        if self._mmap is None:
            import mmap

            page = mmap.PAGESIZE
            length = (self.value_size * self.max_entries + page - 1) // page * page
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            try:
                self._mmap = mmap.mmap(self.fd.fileno(), length, mmap.MAP_SHARED, prot)
            except OSError as e:
                raise_for_errno("mmap", e.errno or errno.EINVAL, f"map {self.name!r} ({length} bytes)")
        return memoryview(self._mmap)


class RawMap(Map):
    """A :class:`Map` seen with ``bytes`` keys and values (``Map.raw``); shares the parent's fd."""

    _parent: Map

    def close(self) -> None:  # the parent owns the fd
        pass

    @property
    def fd(self) -> FD:  # type: ignore[override]
        return self._parent.fd

    @fd.setter
    def fd(self, value: FD) -> None:
        pass

    @property
    def raw(self) -> Map:
        return self


_NO_BTF_TYPES = frozenset({
    MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY, MapType.STACK_TRACE, MapType.ARRAY_OF_MAPS,
    MapType.HASH_OF_MAPS, MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.CPUMAP, MapType.XSKMAP, MapType.SOCKMAP,
    MapType.SOCKHASH, MapType.QUEUE, MapType.STACK, MapType.ARENA,
})


def _ringbuf_size(size: int) -> int:
    """libbpf's adjust_ringbuf_sz: the smallest page_size * 2**n >= size (0 stays 0)."""
    page = os.sysconf("SC_PAGE_SIZE")
    if size == 0 or (size % page == 0 and ((size // page) & (size // page - 1)) == 0):
        return size
    mul = 1
    while mul * page <= size:
        mul <<= 1
    return mul * page


def _check_is_map(fd: FD) -> None:
    """BPF_OBJ_GET and friends hand out any BPF object: make sure this one is a map."""
    try:
        kind = os.readlink(f"/proc/self/fd/{fd.fileno()}")
    except OSError:
        return  # no procfs: the map info below is the only check
    if kind != "anon_inode:bpf-map":
        raise CorepyError(f"fd {fd.fileno()} is not a BPF map but {kind.removeprefix('anon_inode:')}")


def _open_pinned(path: str) -> FD | None:
    """The map pinned at ``path``, or None when nothing is pinned there."""
    try:
        return sysobj.obj_get(path)
    except SyscallError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


def _check_compatible(fd: FD, spec: MapSpec, path: str) -> None:
    """libbpf's map_is_reuse_compat: type, key/value size, max_entries, flags and map_extra must match."""
    info = MapInfo.of(fd)
    max_entries = spec.max_entries
    if spec.type == MapType.PERF_EVENT_ARRAY and not max_entries:
        max_entries = possible_cpu_count()
    if spec.type in (MapType.RINGBUF, MapType.USER_RINGBUF):
        max_entries = _ringbuf_size(max_entries)
    want = {"type": MapType(spec.type), "key_size": spec.key_size, "value_size": spec.value_size,
            "max_entries": max_entries, "flags": int(spec.flags), "map_extra": spec.map_extra}
    have = {"type": info.type, "key_size": info.key_size, "value_size": info.value_size,
            "max_entries": info.max_entries, "flags": info.flags, "map_extra": info.map_extra}
    diffs = [f"{k} {have[k]!r} pinned vs {want[k]!r} declared" for k in want if have[k] != want[k]]
    if diffs:
        raise MapIncompatibleError(spec.name, path, diffs)


def _no_keys(message: str, *_: Any) -> None:
    """The key packer of a keyless map (queue, stack, bloom filter, ring buffer): a TypeError.
    (A bound method of the map would make a reference cycle: map -> buffers -> map.)"""
    raise TypeError(message)


def _type_name(t: MapType | int) -> str:
    return t.name.lower() if isinstance(t, MapType) else f"map type {t}"


def _explain_create_failure(e: SyscallError, map_type: MapType | int, name: str) -> None:
    """Turn EINVAL for a map type this kernel lacks into NotSupportedError (probed)."""
    if e.errno != errno.EINVAL:
        return
    try:
        from .syscalls import features
    except ImportError:
        return
    has = getattr(features, "has_map_type", None)
    if has is not None and not has(map_type):
        raise NotSupportedError(f"map type {_type_name(map_type)}", f"cannot create map {name!r}") from e


def btf_from_id(btf_id: int) -> BTF:
    """The BTF object with kernel id ``btf_id`` (module BTF is split on vmlinux)."""
    from .btf.spec import BTF

    with sysobj.get_fd_by_id("btf", btf_id) as fd:
        details = sysobj.btf_info(fd)
    source = f"kernel BTF id {btf_id}" + (f" ({details.name})" if details.name else "")
    kernel = bool(getattr(details.info, "kernel_btf", 0))
    if kernel and details.name and details.name != "vmlinux":
        return BTF.from_bytes(details.blob, base=BTF.kernel(), source=source)
    return BTF.from_bytes(details.blob, source=source)
