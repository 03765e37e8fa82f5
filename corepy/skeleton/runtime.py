"""What generated skeleton modules run on: the :class:`Skeleton` base class, its attribute
namespaces, and the small value conversions of generated record classes.

A skeleton wraps one :class:`corepy.collection.Object` the way a libbpf skeleton wraps a
``bpf_object``: ``open()`` parses (no system calls), ``load()`` creates maps and loads
programs, ``attach()`` attaches every program whose SEC() names a target, and ``close()``
(alias ``destroy()``, or leaving the ``with`` block) detaches and closes everything once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from .._records import field, record  # generated record classes are made with these (no dataclasses import)
from ..btf.codec import _text_or_bytes  # the one definition of char[N] values
from ..errors import BTFError, CorepyError, ObjectError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, ClassVar, TypeVar

    from ..collection import Object
    from ..object.spec import ObjectSpec

    _S = TypeVar("_S", bound="Skeleton")

__all__ = ["Skeleton", "ObjectSource", "Maps", "Progs", "Links", "Globals", "Kconfig", "record", "field"]


@record(frozen=True)
class ObjectSource:
    """Where a skeleton's object comes from: bytes embedded in the module, or a file."""

    path: str
    """The file, or a display name for embedded bytes."""
    data: bytes | None = None
    """Embedded bytes (None: read ``path``)."""
    loader: Any = None
    """The generated module's loader: reads the object from a zip archive when it has ``get_data``."""

    @classmethod
    def embedded(cls, b64: str, name: str) -> ObjectSource:
        import base64

        return cls(name, base64.b64decode(b64))

    @classmethod
    def beside(cls, module_file: str, relpath: str, module_spec: Any = None) -> ObjectSource:
        """``relpath`` relative to the directory of the module at ``module_file`` (whose
        ``__spec__`` gives the loader for modules imported from a zip archive)."""
        path = os.path.normpath(os.path.join(os.path.dirname(module_file), relpath))
        return cls(path, loader=getattr(module_spec, "loader", None))

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except OSError as e:
            if hasattr(self.loader, "get_data"):  # e.g. a zipimporter: the object is in the archive
                try:
                    return self.loader.get_data(self.path)
                except OSError:
                    pass
            raise ObjectError(f"cannot read the skeleton's BPF object: {e.strerror or e}", path=self.path) from e


class Skeleton:
    """Base of generated ``<Name>Skeleton`` classes; use :meth:`open` to make one."""

    OBJECT_NAME: ClassVar[str] = ""
    OBJECT_SHA256: ClassVar[str] = ""
    _NAMESPACES: ClassVar[dict[str, type]] = {}
    _RECORDS: ClassVar[dict[str, Any]] = {}
    """Global variable -> generated record class, for struct-typed globals."""

    def __init__(self, obj: Object) -> None:
        """Wrap an opened :class:`~corepy.collection.Object` (prefer :meth:`open`)."""
        self.object = obj
        """The underlying :class:`~corepy.collection.Object`."""
        for attr, ns in self._NAMESPACES.items():
            setattr(self, attr, ns(self))

    @classmethod
    def _object_source(cls) -> ObjectSource:  # generated
        raise NotImplementedError

    @classmethod
    def open(cls: type[_S], path: str | os.PathLike[str] | None = None, *, check: bool = True,
             **options: Any) -> _S:
        """Parse the object (no system calls). ``path`` overrides where the object is read from;
        ``check`` refuses an object read from a file whose sha256 differs from the one the skeleton
        was generated from (the typed attributes would not match; embedded bytes are part of the
        module itself). ``options`` go to :class:`~corepy.collection.Object`
        (``btf=``, ``pin_root=``, ``kconfig=``, ``log_level=``)."""
        from ..collection import Object

        source = cls._object_source() if path is None else ObjectSource(os.fspath(path))
        data = source.read()
        if check and cls.OBJECT_SHA256 and source.data is None:  # (embedded bytes cannot drift)
            import hashlib

            digest = hashlib.sha256(data).hexdigest()
            if digest != cls.OBJECT_SHA256:
                raise ObjectError(f"the object changed since {cls.__name__} was generated (sha256 "
                                  f"{digest[:16]}..., expected {cls.OBJECT_SHA256[:16]}...): "
                                  "regenerate the skeleton with `corepy skeleton`", path=source.path)
        spec = parse_object(data, cls.OBJECT_NAME or _stem(source.path), source.path)
        return cls(Object(spec, **options))

    @classmethod
    def elf_bytes(cls) -> bytes:
        """The object's bytes (embedded, or read from beside the module)."""
        return cls._object_source().read()

    @classmethod
    def open_and_load(cls: type[_S], path: str | os.PathLike[str] | None = None, **options: Any) -> _S:
        """:meth:`open` then :meth:`load`; closes what it made if loading fails."""
        skel = cls.open(path, **options)
        try:
            return skel.load()
        except BaseException:
            skel.close()
            raise

    def load(self: _S) -> _S:
        """Create the maps and load the programs (see :meth:`corepy.collection.Object.load`)."""
        self.object.load()
        return self

    def attach(self: _S) -> _S:
        """Attach every loaded program whose SEC() names a target; links appear in ``links``."""
        self.object.attach()
        return self

    def detach(self) -> None:
        """Close the links made by :meth:`attach`; programs stay loaded."""
        self.object.detach()

    def close(self) -> None:
        """Detach, then close programs, maps and BTF; idempotent (libbpf's ``__destroy``)."""
        self.object.close()

    destroy = close

    @property
    def closed(self) -> bool:
        return self.object.closed

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        o = self.object
        state = "closed" if o.closed else "loaded" if o.loaded else "opened"
        return f"<{type(self).__name__} {state} {o.path!r}>"


def parse_object(data: bytes, name: str, path: str) -> ObjectSpec:
    """``ObjectSpec.from_bytes`` with errors naming ``path`` rather than ``<bytes>``."""
    from ..object.spec import ObjectSpec

    try:
        return ObjectSpec.from_bytes(data, name=name, path=path)
    except ObjectError as e:
        if e.path not in (None, "<bytes>"):
            raise
        where = ", ".join(w for w in ("<bytes>", f"section {e.section}" if e.section else "") if w)
        raise ObjectError(str(e).removesuffix(f" ({where})"), path=path, section=e.section) from None


def _stem(path: str) -> str:
    return os.path.basename(path).split(".")[0] or "object"


class _Namespace:
    """A group of typed attributes over one view of the object."""

    __slots__ = ("_skel",)

    def __init__(self, skel: Skeleton) -> None:
        self._skel = skel

    def _names(self) -> list[str]:
        """The attribute names, in declaration order."""
        return [n for n, v in vars(type(self)).items() if isinstance(v, property)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {', '.join(self._names())}>"


class Maps(_Namespace):
    __slots__ = ()

    def _get(self, name: str) -> Any:
        return self._skel.object.maps[name]


class Progs(_Namespace):
    __slots__ = ()

    def _get(self, name: str) -> Any:
        obj = self._skel.object
        programs = obj.programs
        if name not in programs and obj.loaded and name in obj.spec.programs:
            raise CorepyError(f"program {name!r} was not loaded (autoload is off: set "
                              f"progs.{name}.autoload = True before load())")
        return programs[name]


class Links(_Namespace):
    __slots__ = ()

    def _get(self, name: str) -> Any:
        return self._skel.object.links.get(name)


class Globals(_Namespace):
    """The global variables of one data section."""

    __slots__ = ()
    _SECTION: ClassVar[str] = ""

    def _get(self, name: str) -> Any:
        skel = self._skel
        record = skel._RECORDS.get(name)
        if record is not None:
            return record.from_bytes(skel.object.globals.raw(name))
        return skel.object.globals[name]

    def _set(self, name: str, value: Any) -> None:
        skel = self._skel
        record = skel._RECORDS.get(name)
        if record is not None and isinstance(value, record):
            value = value.to_bytes()
        skel.object.globals[name] = value


class Kconfig(_Namespace):
    """``__kconfig`` externs: the values the loader resolved (libbpf's ``skel->kconfig``)."""

    __slots__ = ()

    def _get(self, name: str) -> Any:
        from ..btf.codec import Codec

        obj = self._skel.object
        if not obj.loaded or obj.externs is None or obj.externs.kconfig_data is None:
            raise CorepyError(f"kconfig extern {name!r} is resolved at load(): read it after")
        ext = obj.spec.externs[name]
        if not ext.type_id:
            raise CorepyError(f"kconfig extern {name!r} has no type to decode")
        return Codec(obj.spec.btf, ext.type_id).decode(obj.externs.kconfig_data, ext.offset)


# --- conversions used by generated record classes ---------------------------------


chars = _text_or_bytes
"""``char[N]`` as the codec decodes it: text when printable and NUL-terminated, else bytes."""


def chars_in(value: Any, size: int) -> bytes:
    """A ``char[N]`` field to pack: str or bytes of at most ``size`` bytes (zero-padded by struct)."""
    if isinstance(value, str):
        value = value.encode()
    return octets_in(value, size)


def octets_in(value: Any, size: int) -> bytes:
    """A byte-array field to pack: bytes (or ints) of at most ``size`` bytes."""
    if isinstance(value, (list, tuple)):
        try:
            value = bytes(x & 0xFF for x in value)
        except TypeError:
            raise BTFError(f"expected ints for a {size}-byte array, got {value!r}") from None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise BTFError(f"expected bytes of at most {size} bytes, got {type(value).__name__}")
    if len(value) > size:
        raise BTFError(f"{len(value)} bytes do not fit {size} bytes")
    return bytes(value)


def int_bytes(value: Any, size: int, order: str, signed: bool) -> bytes:
    """A wide (``__int128``) int field to pack."""
    try:
        return int(value).to_bytes(size, order, signed=signed)  # type: ignore[arg-type]
    except OverflowError:
        raise BTFError(f"{value!r} does not fit {size} bytes") from None


def items(value: Any, n: int, zero: Any, what: str) -> list[Any]:
    """An array field's ``n`` elements, padded with ``zero``."""
    value = list(value)
    if len(value) > n:
        raise BTFError(f"{len(value)} elements do not fit {what} of {n}")
    return value + [zero] * (n - len(value))


def record_bytes(value: Any, cls: type) -> bytes:
    """A nested record field to pack: an instance of ``cls`` or its raw bytes."""
    if isinstance(value, cls):
        return value.to_bytes()  # type: ignore[attr-defined]
    if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == cls.SIZE:  # type: ignore[attr-defined]
        return bytes(value)
    raise BTFError(f"expected a {cls.__name__} (or {cls.SIZE} bytes), got {type(value).__name__}")  # type: ignore[attr-defined]


def get_bits(data: Any, offset: int, shift: int, bits: int, signed: bool) -> int:
    """A little-endian bitfield of ``bits`` bits, ``shift`` bits into byte ``offset``."""
    nbytes = (shift + bits + 7) // 8
    v = (int.from_bytes(bytes(data[offset:offset + nbytes]), "little") >> shift) & ((1 << bits) - 1)
    return v - (1 << bits) if signed and v >> (bits - 1) else v


def set_bits(buf: bytearray, offset: int, shift: int, bits: int, signed: bool, value: Any, name: str) -> None:
    v = int(value)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= v <= hi:
        raise BTFError(f"{v} does not fit the {bits}-bit field {name!r}")
    nbytes = (shift + bits + 7) // 8
    word = int.from_bytes(buf[offset:offset + nbytes], "little")
    mask = ((1 << bits) - 1) << shift
    word = (word & ~mask) | ((v << shift) & mask)
    buf[offset:offset + nbytes] = word.to_bytes(nbytes, "little")


def short_buffer(name: str, size: int, data: Any, offset: int) -> CorepyError:
    return BTFError(f"{name}: need {size} bytes at offset {offset} to decode, have {len(data) - offset}")


def encode_error(name: str, e: Exception) -> CorepyError:
    if isinstance(e, CorepyError):
        return e
    return BTFError(f"cannot encode {name}: {e}")

