"""Encode and decode Python values through a BTF type. Pure.

``Codec(btf, type_id)`` compiles a BTF type once into a tree of small
encoders/decoders; flat structs of scalars get one precompiled
``struct.Struct`` so per-element map access stays cheap.

Value mapping:

- ints (any size up to 16 bytes, signed per encoding) -> ``int``; ``bool`` ints -> ``bool``
- enums -> ``int``; encoding also accepts the enumerator's name
- floats -> ``float`` (a 16-byte long double stays ``bytes``)
- pointers -> ``int``
- ``char[N]`` -> ``str`` when the bytes are printable text followed only by NULs, else ``bytes``;
  encoding accepts ``str`` or ``bytes`` (zero-padded)
- arrays -> ``list``
- structs, unions and DATASECs -> a generated :class:`StructValue` subclass per type,
  with attribute access (anonymous members are named ``_anon<index>``); encoding
  also accepts a ``dict`` (missing members are zero)
- typedefs and modifiers are transparent; raw ``bytes`` of the right size are always accepted
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping

from ..errors import BTFError
from .types import (
    Array, Datasec, Enum, Enum64, Float, Int, IntEncoding, Ptr, Struct, Union, Var,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Codec", "StructValue"]

_INT_FMT = {1: "b", 2: "h", 4: "i", 8: "q"}
_FLOAT_FMT = {2: "e", 4: "f", 8: "d"}


_LAST = " last"  # instance key of the union member assigned last (never a C identifier)
_RAW = " raw"  # instance key of a decoded union's bytes, so members left alone round-trip exactly


class StructValue:
    """Base of the generated per-type value classes: attribute access, equality, dict view.

    Construct with positional values in member order or with keywords. For unions, the
    member assigned last is the one written last on encode. Members whose C names are not
    usable as Python attributes (``class``, ``__x``) are still reached with ``getattr``/``[]``."""

    _fields: tuple[str, ...] = ()
    _type_name: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # replaced per class by a generated one
        raise NotImplementedError

    def _set_keywords(self, kw: dict[str, Any]) -> None:
        fields = type(self)._fields
        for k, v in kw.items():
            if k not in fields:
                raise TypeError(f"{type(self)._type_name or type(self).__name__} has no member {k!r}")
            self.__dict__[k] = v

    def __eq__(self, other: object) -> bool:
        fields = type(self)._fields
        if isinstance(other, StructValue):
            return fields == type(other)._fields and all(getattr(self, f) == getattr(other, f) for f in fields)
        if isinstance(other, Mapping):
            return self._asdict() == dict(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        cls = type(self)
        body = ", ".join(f"{f}={self.__dict__[f]!r}" for f in cls._fields)
        return f"{cls._type_name or cls.__name__}({body})"

    def __iter__(self):
        return iter(type(self)._fields)

    def __getitem__(self, name: str) -> Any:
        if name not in type(self)._fields:
            raise KeyError(name)
        return self.__dict__[name]

    def __setitem__(self, name: str, value: Any) -> None:
        if name not in type(self)._fields:
            raise KeyError(name)
        setattr(self, name, value)

    def _asdict(self) -> dict[str, Any]:
        """Members as a dict, nested values converted too."""
        d = self.__dict__
        return {f: _plain(d[f]) for f in type(self)._fields}


def _plain(v: Any) -> Any:
    if isinstance(v, StructValue):
        return v._asdict()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _make_class(name: str, fields: tuple[str, ...], union: bool) -> type[StructValue]:
    params = "".join(f", p{i}=0" for i in range(len(fields)))
    body = "".join(f"\n    d[{f!r}] = p{i}" for i, f in enumerate(fields))
    ns: dict[str, Any] = {}
    exec(f"def __init__(self{params}, **kw):\n    d = self.__dict__{body}\n"  # noqa: S102 - names are repr()'d
         f"    if kw:\n        self._set_keywords(kw)", ns)
    attrs: dict[str, Any] = {"_fields": fields, "_type_name": name, "__init__": ns["__init__"]}
    if union:
        def __setattr__(self: StructValue, key: str, value: Any) -> None:
            self.__dict__[key] = value
            if key in type(self)._fields:
                self.__dict__[_LAST] = key
        attrs["__setattr__"] = __setattr__
    ident = "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "anon"
    if not ident[0].isalpha() and ident[0] != "_":
        ident = "_" + ident
    return type(ident, (StructValue,), attrs)


# --- nodes: one per compiled type -----------------------------------------------


class _Node:
    size: int = 0
    fmt: str | None = None  # struct format of a flat scalar, usable in a combined Struct
    post: Callable[[Any], Any] | None = None  # conversion after unpacking ``fmt``
    pre: Callable[[Any], Any] | None = None  # conversion before packing ``fmt``

    def decode(self, buf: Any, off: int) -> Any:
        raise NotImplementedError

    def encode_into(self, buf: bytearray, off: int, value: Any) -> None:
        raise NotImplementedError


class _Scalar(_Node):
    def __init__(self, order: str, fmt: str, size: int, post=None, pre=None) -> None:
        self.fmt, self.size, self.post, self.pre = fmt, size, post, pre
        self.st = struct.Struct(order + fmt)

    def decode(self, buf: Any, off: int) -> Any:
        v = self.st.unpack_from(buf, off)[0]
        return self.post(v) if self.post else v

    def encode_into(self, buf: bytearray, off: int, value: Any) -> None:
        if self.pre:
            value = self.pre(value)
        try:
            self.st.pack_into(buf, off, value)
        except struct.error as e:
            raise BTFError(f"cannot encode {value!r} as {self.size}-byte {self.fmt!r}: {e}") from None


class _BigInt(_Node):
    """Ints wider than 8 bytes (__int128)."""

    def __init__(self, order: str, size: int, signed: bool) -> None:
        self.size, self.signed = size, signed
        self.byteorder = "little" if order == "<" else "big"

    def decode(self, buf: Any, off: int) -> int:
        return int.from_bytes(bytes(buf[off:off + self.size]), self.byteorder, signed=self.signed)

    def encode_into(self, buf: bytearray, off: int, value: Any) -> None:
        try:
            buf[off:off + self.size] = int(value).to_bytes(self.size, self.byteorder, signed=self.signed)
        except OverflowError:
            raise BTFError(f"{value!r} does not fit {self.size} bytes") from None


class _Raw(_Node):
    """Bytes of a type with no better Python form (long double, func pointers...)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.fmt = f"{size}s"

    def decode(self, buf: Any, off: int) -> bytes:
        return bytes(buf[off:off + self.size])

    def encode_into(self, buf: bytearray, off: int, value: Any) -> None:
        data = _as_bytes(value, self.size)
        buf[off:off + len(data)] = data


def _as_bytes(value: Any, size: int) -> bytes:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise BTFError(f"expected bytes or str of at most {size} bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) > size:
        raise BTFError(f"{len(value)} bytes do not fit {size} bytes")
    return value


def _text_or_bytes(raw: bytes) -> str | bytes:
    head, nul, tail = raw.partition(b"\0")
    if (nul or not raw) and not tail.strip(b"\0") and head.isascii() and (not head or head.decode().isprintable()):
        return head.decode()
    return raw


class _Chars(_Node):
    """char[N]: text when NUL-terminated and printable, else bytes."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.fmt = f"{size}s"
        self.post = _text_or_bytes
        self.pre = lambda v: _as_bytes(v, size)

    def decode(self, buf: Any, off: int) -> str | bytes:
        return _text_or_bytes(bytes(buf[off:off + self.size]))

    def encode_into(self, buf: bytearray, off: int, value: Any) -> None:
        data = _as_bytes(value, self.size)
        buf[off:off + len(data)] = data
        buf[off + len(data):off + self.size] = bytes(self.size - len(data))


class _Octets(_Raw):
    """Arrays of other 1-byte ints (u8[N]): ``bytes``; encoding also takes a list of ints."""

    def encode_into(self, buf: bytearray, off: int, value: Any) -> None:
        if isinstance(value, (list, tuple)):
            try:
                value = bytes(x & 0xFF for x in value)
            except TypeError:
                raise BTFError(f"expected ints for a {self.size}-byte array, got {value!r}") from None
        data = _as_bytes(value, self.size)
        buf[off:off + len(data)] = data
        buf[off + len(data):off + self.size] = bytes(self.size - len(data))


class _Array(_Node):
    def __init__(self, order: str, elem: _Node, n: int) -> None:
        self.elem, self.n, self.size = elem, n, elem.size * n
        self.st = struct.Struct(f"{order}{n}{elem.fmt}") if elem.fmt and elem.fmt[-1] != "s" and n else None

    def decode(self, buf: Any, off: int) -> list:
        if self.st is not None:
            vals = list(self.st.unpack_from(buf, off))
            post = self.elem.post
            return [post(v) for v in vals] if post else vals
        es = self.elem.size
        return [self.elem.decode(buf, off + i * es) for i in range(self.n)]

    def encode_into(self, buf: bytearray, off: int, value: Any) -> None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            data = _as_bytes(value, self.size)
            buf[off:off + len(data)] = data
            return
        value = list(value)
        if len(value) > self.n:
            raise BTFError(f"{len(value)} elements do not fit an array of {self.n}")
        es = self.elem.size
        for i, v in enumerate(value):
            self.elem.encode_into(buf, off + i * es, v)
        buf[off + len(value) * es:off + self.size] = bytes((self.n - len(value)) * es)


class _Field:
    __slots__ = ("name", "node", "off", "bit_off", "bits", "signed")

    def __init__(self, name: str, node: _Node, off: int, bit_off: int = 0, bits: int = 0,
                 signed: bool = False) -> None:
        self.name, self.node, self.off = name, node, off
        self.bit_off, self.bits, self.signed = bit_off, bits, signed


class _Composite(_Node):
    """STRUCT, UNION or DATASEC."""

    def __init__(self, order: str, name: str, size: int, fields: list[_Field], union: bool) -> None:
        self.size, self.fields, self.union = size, fields, union
        self.cls = _make_class(name, tuple(f.name for f in fields), union)
        self.st: struct.Struct | None = None
        self.posts: list[tuple[int, Callable]] = []
        self.pres: list[tuple[int, Callable]] = []
        if not union and all(f.node.fmt and not f.bits for f in fields):
            fmt, pos = [], 0
            for i, f in enumerate(sorted(fields, key=lambda f: f.off)):
                if f.off < pos:
                    break
                fmt.append("x" * (f.off - pos) + f.node.fmt)
                pos = f.off + f.node.size
                if f.node.post:
                    self.posts.append((i, f.node.post))
                if f.node.pre:
                    self.pres.append((i, f.node.pre))
            else:
                if pos <= size and [f.off for f in fields] == sorted(f.off for f in fields):
                    self.st = struct.Struct(order + "".join(fmt) + "x" * (size - pos))

    def decode(self, buf: Any, off: int) -> StructValue:
        if self.st is not None:
            vals = self.st.unpack_from(buf, off)
            if self.posts:
                vals = list(vals)
                for i, post in self.posts:
                    vals[i] = post(vals[i])
            return self.cls(*vals)
        obj = self.cls(*[self._decode_field(f, buf, off) for f in self.fields])
        if self.union:
            obj.__dict__[_RAW] = bytes(buf[off:off + self.size])
        return obj

    @staticmethod
    def _decode_field(f: _Field, buf: Any, off: int) -> Any:
        if not f.bits:
            return f.node.decode(buf, off + f.off)
        start = off + f.bit_off // 8
        nbytes = (f.bit_off % 8 + f.bits + 7) // 8
        word = int.from_bytes(bytes(buf[start:start + nbytes]), "little")
        v = (word >> (f.bit_off % 8)) & ((1 << f.bits) - 1)
        if f.signed and v >> (f.bits - 1):
            v -= 1 << f.bits
        if f.node.fmt == "?":
            return bool(v)
        post = f.node.post
        return post(v) if post else v

    def encode_into(self, buf: bytearray, off: int, value: Any) -> None:
        if self.st is not None and type(value) is self.cls:  # fast path: our own flat struct value
            d = value.__dict__
            vals = [d[n] for n in self.cls._fields]
            for i, pre in self.pres:
                vals[i] = pre(vals[i])
            try:
                self.st.pack_into(buf, off, *vals)
                return
            except struct.error:
                pass  # the per-field path below names the member that does not fit
        if isinstance(value, (bytes, bytearray, memoryview)):
            data = _as_bytes(value, self.size)
            buf[off:off + len(data)] = data
            return
        if isinstance(value, StructValue):
            get = value.__dict__.__getitem__
            names = set(type(value)._fields)
        elif isinstance(value, Mapping):
            get = value.__getitem__
            names = set(value)
        else:
            raise BTFError(f"cannot encode {type(value).__name__} as {self.cls._type_name or 'struct'}: "
                           "give a struct value, a dict or bytes")
        unknown = names - {f.name for f in self.fields}
        if unknown:
            raise BTFError(f"{self.cls._type_name or 'struct'} has no member(s) {sorted(unknown)}")
        order = [f for f in self.fields if f.name in names]
        last = value.__dict__.get(_LAST) if self.union and isinstance(value, StructValue) else None
        raw = value.__dict__.get(_RAW) if self.union and isinstance(value, StructValue) else None
        if raw is not None:
            # a decoded union: start from its bytes and overlay only the members that changed
            buf[off:off + self.size] = raw
            # repr compares NaN payload-blind and nested values fully: a NaN left alone stays unchanged
            order = [f for f in order if f.name == last or repr(self._decode_field(f, raw, 0)) != repr(get(f.name))]
        if last:
            order = [f for f in order if f.name != last] + [f for f in order if f.name == last]
        for f in order:
            v = get(f.name)
            if not f.bits:
                f.node.encode_into(buf, off + f.off, v)
                continue
            if f.node.pre:
                v = f.node.pre(v)
            v = int(v)
            lo, hi = (-(1 << (f.bits - 1)), (1 << (f.bits - 1)) - 1) if f.signed else (0, (1 << f.bits) - 1)
            if not lo <= v <= hi:
                raise BTFError(f"{v} does not fit the {f.bits}-bit field {f.name!r}")
            start = off + f.bit_off // 8
            shift = f.bit_off % 8
            nbytes = (shift + f.bits + 7) // 8
            word = int.from_bytes(bytes(buf[start:start + nbytes]), "little")
            mask = ((1 << f.bits) - 1) << shift
            word = (word & ~mask) | ((v << shift) & mask)
            buf[start:start + nbytes] = word.to_bytes(nbytes, "little")


# --- compiling BTF types into nodes --------------------------------------------------


class _Compiler:
    def __init__(self, btf: Any) -> None:
        self.btf = btf
        self.order = ">" if getattr(btf, "byte_order", "little") == "big" else "<"
        self.cache: dict[int, _Node] = {}
        self.busy: set[int] = set()

    def resolve(self, type_id: int) -> Any:
        """The type behind a VAR, modifiers and typedefs."""
        t = self.btf[type_id]
        return self.btf.skip_mods_and_typedefs(t.type_id if isinstance(t, Var) else type_id)

    def node(self, type_id: int) -> _Node:
        node = self.cache.get(type_id)
        if node is None:
            if type_id in self.busy:
                raise BTFError(f"type [{type_id}] contains itself")
            self.busy.add(type_id)
            try:
                node = self._build(type_id)
            finally:
                self.busy.discard(type_id)
            self.cache[type_id] = node
        return node

    def _build(self, type_id: int) -> _Node:
        t = self.resolve(type_id)
        o = self.order
        if isinstance(t, Int):
            if t.encoding & IntEncoding.BOOL and t.size == 1:
                return _Scalar(o, "?", 1)
            if t.size in _INT_FMT:
                fmt = _INT_FMT[t.size]
                return _Scalar(o, fmt if t.signed else fmt.upper(), t.size)
            return _BigInt(o, t.size, t.signed)
        if isinstance(t, (Enum, Enum64)):
            names = {v.name: v.value for v in t.values}
            fmt = _INT_FMT.get(t.size)
            if fmt is None:
                raise BTFError(f"enum {t.name or '[%d]' % t.id} has unsupported size {t.size}")

            def pre(v: Any, names: dict = names, tname: str = t.name) -> int:
                if isinstance(v, str):
                    if v not in names:
                        raise BTFError(f"enum {tname} has no enumerator {v!r}")
                    return names[v]
                return int(v)
            node = _Scalar(o, fmt if t.signed else fmt.upper(), t.size, pre=pre)
            node.signed = t.signed  # type: ignore[attr-defined]
            return node
        if isinstance(t, Float):
            if t.size in _FLOAT_FMT:
                return _Scalar(o, _FLOAT_FMT[t.size], t.size)
            return _Raw(t.size)
        if isinstance(t, Ptr):
            return _Scalar(o, "Q", 8)
        if isinstance(t, Array):
            elem_t = self.resolve(t.type_id)
            if isinstance(elem_t, Int) and elem_t.size == 1 and not elem_t.encoding & IntEncoding.BOOL:
                if elem_t.encoding & IntEncoding.CHAR or elem_t.name == "char":
                    return _Chars(t.nelems)
                return _Octets(t.nelems)
            return _Array(o, self.node(t.type_id), t.nelems)
        if isinstance(t, (Struct, Union)):
            return _Composite(o, t.name, t.size, self._members(t), isinstance(t, Union))
        if isinstance(t, Datasec):
            fields = [_Field(self.btf[v.type_id].name or f"_anon{i}", self.node(v.type_id), v.offset)
                      for i, v in enumerate(t.vars)]
            return _Composite(o, t.name, t.size, fields, False)
        raise BTFError(f"type [{type_id}] ({type(t).__name__} {t.name!r}) has no value encoding")

    def _members(self, t: Struct | Union) -> list[_Field]:
        fields = []
        for i, m in enumerate(t.members):
            node = self.node(m.type_id)
            name = m.name or f"_anon{i}"
            mt = self.resolve(m.type_id)
            bits, bit_off = m.bitfield_size, m.bit_offset
            if not bits and isinstance(mt, Int) and (mt.bit_offset or (mt.bits and mt.bits != mt.size * 8)):
                bits, bit_off = mt.bits, m.bit_offset + mt.bit_offset  # pre-kind_flag bitfield encoding
            if bits:
                if self.order == ">":
                    raise BTFError(f"{t.name}.{name}: big-endian bitfields are not supported")
                signed = getattr(mt, "signed", False)
                fields.append(_Field(name, node, bit_off // 8, bit_off, bits, signed))
            else:
                if bit_off % 8:
                    raise BTFError(f"{t.name}.{name}: member at bit offset {bit_off} is not byte aligned")
                fields.append(_Field(name, node, bit_off // 8))
        return fields


class Codec:
    """Converts between bytes and Python values for one BTF type.

    ``btf`` is anything indexable by type id returning :mod:`corepy.btf.types` objects
    (normally a :class:`~corepy.btf.spec.BTF`)."""

    def __init__(self, btf: Any, type_id: int) -> None:
        self.btf = btf
        self.type_id = type_id
        self._node = _Compiler(btf).node(type_id)
        self.size: int = self._node.size
        self._zero = bytes(self.size)

    @property
    def value_class(self) -> type[StructValue] | None:
        """The generated class of struct/union values, else None."""
        return getattr(self._node, "cls", None)

    def decode(self, buf: bytes | bytearray | memoryview, offset: int = 0) -> Any:
        """The value stored at ``buf[offset:offset+size]``."""
        if len(buf) - offset < self.size:
            raise BTFError(f"need {self.size} bytes at offset {offset} to decode, have {len(buf) - offset}")
        return self._node.decode(buf, offset)

    def encode(self, value: Any) -> bytes:
        """``value`` as ``size`` bytes; raw bytes of exactly ``size`` pass through."""
        if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == self.size:
            return bytes(value)
        buf = bytearray(self._zero)
        self._node.encode_into(buf, 0, value)
        return bytes(buf)

    def encode_into(self, buf: bytearray | memoryview, offset: int, value: Any) -> None:
        """Write ``value`` into ``buf`` at ``offset`` (other bytes untouched)."""
        if len(buf) - offset < self.size:
            raise BTFError(f"need {self.size} bytes at offset {offset} to encode, have {len(buf) - offset}")
        if isinstance(value, (bytes, bytearray, memoryview)) and len(value) == self.size:
            buf[offset:offset + self.size] = value
            return
        tmp = bytearray(buf[offset:offset + self.size])
        self._node.encode_into(tmp, 0, value)
        buf[offset:offset + self.size] = tmp
