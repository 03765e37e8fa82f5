"""The BTF container: a lazily decoded set of types with a name index.

Type ids are global: for split BTF they continue after the base's last id, and
``btf[i]`` answers for base ids too.

Opening a blob is one fast pass over the type section that records where each
type starts and its name offset; a type is decoded the first time it is asked
for (then cached). The first few lookups by name search the strings (no index); the
full name index is built after :data:`SCANNED_LOOKUPS` of them or when all names are asked for.

:meth:`BTF.from_file` maps a raw BTF file rather than reading it; the mapping
lives as long as the BTF (plain refcounting: no cycles) or until
:meth:`BTF.close` / the end of a ``with`` block.
"""

from __future__ import annotations

import functools
import gc
import mmap
import os
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence

from ..cache import (
    KERNEL_BTF_PATH,
    blob_digest,
    kernel_btf_digest,
    remember_kernel_btf_digest,
)
from ..cache import enabled as cache_enabled
from ..errors import BTFError, ObjectError
from . import format as fmt
from .strings import (
    HashedNameIndex,
    NameIndex,
    ScannedNames,
    load_cache,
    points_mid_string,
    store_cache,
)
from .types import (
    COMPOSITE,
    MODIFIERS,
    VOID,
    Array,
    Const,
    Datasec,
    DeclTag,
    Enum,
    Enum64,
    EnumValue,
    Float,
    Func,
    FuncProto,
    Fwd,
    Int,
    IntEncoding,
    Kind,
    Linkage,
    Member,
    Param,
    Ptr,
    Restrict,
    Struct,
    Type,
    Typedef,
    TypeTag,
    Union,
    Var,
    VarSecinfo,
    Volatile,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    from .ext import BTFExt

    CacheMode = bool | Literal["offsets"]

MAX_RESOLVE_DEPTH = 32
"""Longest chain of type references followed before assuming a loop (libbpf's limit)."""

SCANNED_LOOKUPS = 16
"""Lookups by name a base BTF answers by searching its strings (:class:`~.strings.ScannedNames`,
~1.5 ms each on vmlinux) before it builds the full name index (~20 ms once, then O(1))."""

_kernel: BTF | None = None

# libbpf determine_ptr_size(): these INT names tell the target's pointer size
_LONG_NAMES = frozenset(("long", "long int", "unsigned long", "long unsigned int", "unsigned long int"))
_INT = int(Kind.INT)


class _Codec:
    """``struct`` readers for one byte order, derived from the construct declarations."""

    def __init__(self, layouts: fmt.Layouts):
        self.layouts = layouts
        self.header = layouts.fmt(layouts.header)
        self.btf_type = layouts.fmt(layouts.btf_type)
        self.type_size = self.btf_type.size
        self.u32 = struct.Struct(layouts.prefix + "I")
        self.array = layouts.fmt(layouts.array)
        self.member = layouts.fmt(layouts.member)
        self.enum = layouts.fmt(layouts.enum)
        self.enum64 = layouts.fmt(layouts.enum64)
        self.param = layouts.fmt(layouts.param)
        self.var_secinfo = layouts.fmt(layouts.var_secinfo)
        self.decl_tag = layouts.fmt(layouts.decl_tag)
        # per kind (index = kind value, 32 slots): btf_type size + fixed trailer, bytes per vlen entry
        self.fixed: list[int | None] = [None] * 32
        self.per_vlen: list[int | None] = [None] * 32
        for kind, (fixed, per) in layouts.trailing.items():
            self.fixed[kind] = self.type_size + fixed
            self.per_vlen[kind] = per
        self.words_by_info: dict[int, int] = {}
        """btf_type.info word -> size in 4-byte words of the type and its records (filled as met)."""


_U32 = array("I")


@functools.cache
def _codec(order: str) -> _Codec:
    return _Codec(fmt.LITTLE if order == "little" else fmt.BIG)


class BTF:
    """A parsed BTF blob (optionally split on a ``base``)."""

    base: BTF | None
    """The base BTF for split (module) BTF, else None."""
    start_id: int
    """First type id defined by this blob: 1, or ``len(base)`` for split BTF."""
    byte_order: str
    """'little' or 'big'."""
    source: str
    """Where the blob came from, for error messages (a path, or '<bytes>')."""
    ext: BTFExt | None
    """The matching .BTF.ext when parsed from an ELF object, else None."""

    def __init__(self, data: bytes | memoryview, *, base: BTF | None = None, source: str = "<bytes>",
                 cache: CacheMode = False, digest: bytes | None = None):
        """Parse ``data``; prefer :meth:`from_bytes` / :meth:`from_file`."""
        self.base = base
        self.source = source
        self.ext = None
        self._mapping: mmap.mmap | None = None
        """The file mapping ``_buf`` views (from_file), released by :meth:`close`."""
        self._closed = False
        self._buf = memoryview(data).cast("B") if not isinstance(data, bytes) else memoryview(data)
        self._size = len(self._buf)
        self.start_id = len(base) if base is not None else 1
        self._str_base = base._str_total if base is not None else 0
        layouts = fmt.layouts_for_magic(self._buf)
        if layouts is None:
            got = bytes(self._buf[:2]).hex() if len(self._buf) >= 2 else f"{len(self._buf)} byte(s)"
            raise self._err(f"not BTF: bad magic {got} (want {fmt.BTF_MAGIC:#x} in either byte order)", 0)
        self.byte_order = layouts.order
        self._codec = _codec(layouts.order)
        self._read_header()
        self._str_total = self._str_base + self._str_len
        self._strtab_copy: bytes | None = None
        """The own string section copied out of the blob, made at first need (:attr:`_strtab`)."""
        self._str_cache: dict[int, str] = {}
        self._index: NameIndex | HashedNameIndex | None = None
        self._scanned: ScannedNames | None = None
        self._scans_left = SCANNED_LOOKUPS if base is None else 0
        self._digest = digest
        """The blob's cache key (:func:`~corepy.cache.blob_digest`), when caching."""
        self._store_index = False
        """Whether the name index, once built, goes to the cache."""
        self._mid_string: bool | None = None
        """Whether name offsets point mid-string, when known (:func:`~.strings.points_mid_string`)."""
        cached = None
        self._offsets: array | memoryview
        """Word index of each own type's btf_type in the type section."""
        self._name_offs: Sequence[int]
        """Name offset of each own type."""
        if cache and base is None:
            key = self._digest = digest or blob_digest(self._buf)
            cached = load_cache(key, len(self._buf), self.start_id)
            if cached is None:
                self._offsets, self._name_offs = self._scan()
                if cache == "offsets":  # (and whether names point mid-string: spares later lookups ~3 ms)
                    self._mid_string = points_mid_string(self._name_offs, self._strtab)
                    store_cache(key, self._size, self.start_id, self._offsets, self._name_offs, None,
                                self._mid_string)
            else:
                self._offsets, self._name_offs, slots, chain, self._mid_string = cached
                if len(slots):
                    self._index = HashedNameIndex(slots, chain, self._name_offs, self._strtab)
            if cache is True and self._index is None:
                self._store_index = True  # the name index is built at the first lookup, then stored
        else:
            self._offsets, self._name_offs = self._scan()
        self._decoded: dict[int, Type] = {}
        """position -> its decoded type (a dict: a list slot per type would be one more 100k-entry
        container for every garbage collection to traverse)"""
        self._ptr_size: int | None = None

    # --- construction -----------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes | memoryview, *, base: BTF | None = None, source: str = "<bytes>",
                   cache: CacheMode = False, digest: bytes | None = None) -> BTF:
        """Parse a raw BTF blob (header + types + strings). Raises BTFError.

        ``cache`` (base BTF only): reuse what the on-disk cache holds for this blob, keyed by its
        size and checksums (see :mod:`corepy.cache`), and fill it: with ``True`` the type offsets and
        the full name index (built at the first lookup by name, then stored); with ``"offsets"``
        the type offsets only, stored at once (a name index found there is used too). ``digest``:
        the blob's :func:`~corepy.cache.blob_digest` when already known."""
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return cls(data, base=base, source=source, cache=cache, digest=digest)
        finally:
            if gc_was_enabled:
                gc.enable()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, base: BTF | None = None, cache: CacheMode = False,
                  digest: bytes | None = None) -> BTF:
        """Open a raw BTF file (e.g. /sys/kernel/btf/vmlinux) or an ELF file with a .BTF section
        (its .BTF.ext, if any, becomes :attr:`ext`). ``cache`` and ``digest`` as in :meth:`from_bytes`."""
        path = os.fspath(path)
        try:
            with open(path, "rb") as f:  # the mapping needs no fd of ours: closed on leaving
                magic = f.read(4)
                if magic == b"\x7fELF":
                    return cls._from_elf(f, path, base)
                f.seek(0)
                mapping = _map(f)
                data = f.read() if mapping is None else b""
        except OSError as e:
            raise BTFError(f"cannot read BTF file: {e.strerror or e}", source=path) from e
        if mapping is None:
            return cls.from_bytes(data, base=base, source=path, cache=cache, digest=digest)
        view = memoryview(mapping)
        try:
            btf = cls.from_bytes(view, base=base, source=path, cache=cache, digest=digest)
        except BTFError as e:
            e.__traceback__ = None  # its frames hold views of the mapping: drop them, then unmap
            view.release()
            _unmap(mapping)
            raise
        view.release()
        btf._mapping = mapping
        return btf

    def close(self) -> None:
        """Unmap the file :meth:`from_file` mapped (nothing to do for other sources). Types decoded
        so far stay usable; decoding others, or the raw bytes, then raises BTFError. Idempotent;
        also called on leaving a ``with BTF.from_file(...) as btf:`` block."""
        if self._mapping is None:
            return
        self.strings_bytes()  # copied out of the mapping now: lookups by name keep working
        self._closed = True
        self._buf.release()
        _unmap(self._mapping)
        self._mapping = None

    def __enter__(self) -> BTF:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _blob(self) -> memoryview:
        """The blob's bytes; BTFError once :meth:`close` unmapped them."""
        if self._closed:
            raise self._err("closed: its file is no longer mapped (only types decoded before close() remain)")
        return self._buf

    @classmethod
    def _from_elf(cls, f, path: str, base: BTF | None) -> BTF:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        from .ext import BTFExt

        try:
            elf = ELFFile(f)
            sec = elf.get_section_by_name(".BTF")
            ext_sec = elf.get_section_by_name(".BTF.ext")
            data = sec.data() if sec is not None else None
            ext_data = ext_sec.data() if ext_sec is not None else None
        except (ELFError, struct.error, ValueError, EOFError) as e:
            raise ObjectError(f"malformed ELF file: {e}", path=path) from e
        if data is None:
            raise BTFError("ELF file has no .BTF section", source=path)
        btf = cls.from_bytes(data, base=base, source=f"{path}:.BTF")
        if ext_data is not None:
            btf.ext = BTFExt.from_bytes(ext_data, btf, source=f"{path}:.BTF.ext")
        return btf

    @classmethod
    def kernel(cls) -> BTF:
        """The running kernel's /sys/kernel/btf/vmlinux, opened once per process. Its type offsets
        come from the on-disk cache after the first process of a boot has stored them, found by the
        blob's digest remembered for the boot (a scan of ~126k types and ~3 ms of checksums saved:
        ~15 ms down to ~1.5 ms); ``COREPY_BTF_CACHE=0`` turns that off, ``COREPY_BTF_CACHE=1``
        caches the full name index too."""
        global _kernel
        if _kernel is None or _kernel._closed:  # (someone closed the shared one: map it again)
            setting = os.environ.get("COREPY_BTF_CACHE", "")
            cache: CacheMode = False if not cache_enabled() else True if setting == "1" else "offsets"
            digest = kernel_btf_digest() if cache else None
            _kernel = cls.from_file(KERNEL_BTF_PATH, cache=cache, digest=digest)
            if cache and digest is None and _kernel._digest is not None:
                remember_kernel_btf_digest(_kernel._digest, _kernel._size)
        return _kernel

    # --- parsing ----------------------------------------------------------
    def _err(self, message: str, offset: int | None = None) -> BTFError:
        return BTFError(message, offset=offset, source=self.source)

    def _read_header(self) -> None:
        codec, buf = self._codec, self._buf
        size = len(buf)
        if size < codec.header.size:
            raise self._err(f"truncated BTF header: {size} bytes, need {codec.header.size}", 0)
        _magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = codec.header.unpack_from(buf, 0)
        if version != fmt.BTF_VERSION:
            raise self._err(f"unsupported BTF version {version}", 2)
        if hdr_len < codec.header.size or hdr_len > size:
            raise self._err(f"bad BTF header length {hdr_len} (blob is {size} bytes)", 4)
        self.flags = flags
        self._hdr_len = hdr_len
        data_len = size - hdr_len
        if type_off % 4:
            raise self._err(f"type section offset {type_off} not 4-byte aligned", 8)
        if type_off + type_len > data_len:
            raise self._err(
                f"type section [{type_off}, +{type_len}) runs past the end of the data ({data_len} bytes)", 8
            )
        if str_off + str_len > data_len:
            raise self._err(f"string section [{str_off}, +{str_len}) runs past the end of the data ({data_len} bytes)", 16)
        if type_off < str_off + str_len and str_off < type_off + type_len:
            raise self._err("type and string sections overlap", 8)
        self._type_start = hdr_len + type_off
        self._type_end = self._type_start + type_len
        self._str_start = hdr_len + str_off
        self._str_len = str_len
        if str_len:
            if buf[self._str_start + str_len - 1] != 0:
                raise self._err("string section does not end with NUL", self._str_start + str_len - 1)
            if self.base is None and buf[self._str_start] != 0:
                raise self._err("string section does not start with the empty string", self._str_start)
        elif self.base is None:
            raise self._err("empty string section", 16)

    def _type_words(self) -> memoryview | array:
        """The type section as u32 words in host order (zero-copy when the blob is host-endian)."""
        section = self._blob()[self._type_start : self._type_end]
        if len(section) % 4:
            raise self._err(f"type section length {len(section)} is not a multiple of 4", 12)
        if self.byte_order == sys.byteorder and _U32.itemsize == 4:
            return section.cast("I")
        words = array(_U32.typecode)
        words.frombytes(section)
        if self.byte_order != sys.byteorder:
            words.byteswap()
        return words

    def _scan(self) -> tuple[array, array]:
        """One pass over the type section: the word index where each type starts, and its name offset.

        Both go straight into u32 arrays: no int object outlives its iteration (no 100k-entry
        list to build, convert and free)."""
        words = self._type_words()
        sizes = self._codec.words_by_info
        starts, name_offs = array(_U32.typecode), array(_U32.typecode)
        add, add_name = starts.append, name_offs.append
        infos = words[1:]  # infos[i] is btf_type.info of a type starting at word i
        i, n = 0, len(words)
        while True:
            try:
                while True:  # ends at words[n] or infos[n - 1] (no such word) or beyond: IndexError
                    add(i)
                    add_name(words[i])
                    i += sizes[infos[i]]
            except KeyError as e:  # first type with this info word: learn its size
                i += self._learn_size(e.args[0], len(starts), i)
            except IndexError:
                break
        if i >= n:
            starts.pop()  # the end of the section (or past it), not a type
        if i != n:
            raise self._err(
                f"type [{self.start_id + len(starts) - 1}] runs past the end of the type section",
                self._type_start + 4 * starts[-1],
            )
        if self.start_id + len(starts) > 0x7FFFFFFF:
            raise self._err("too many types", self._type_start)
        return starts, name_offs

    def _learn_size(self, info: int, count: int, word: int) -> int:
        """Size in words of a type whose btf_type.info is ``info`` (cached per info word)."""
        codec = self._codec
        kind = (info >> fmt.INFO_KIND_SHIFT) & fmt.INFO_KIND_MASK
        fixed = codec.fixed[kind]
        if fixed is None or kind == Kind.UNKN:
            raise self._err(f"type [{self.start_id + count - 1}] has unknown kind {kind}", self._type_start + 4 * word)
        size = (fixed + codec.per_vlen[kind] * (info & fmt.INFO_VLEN_MASK)) // 4  # type: ignore[operator]
        if len(codec.words_by_info) < 1 << 16:
            codec.words_by_info[info] = size
        return size

    # --- strings ----------------------------------------------------------
    def string(self, offset: int) -> str:
        """The string at ``offset`` in the (base + own) string section."""
        cached = self._str_cache.get(offset)
        if cached is not None:
            return cached
        if offset < self._str_base:
            return self.base.string(offset)  # type: ignore[union-attr]
        s = self._str_cache[offset] = self._decode(offset)
        return s

    def _decode(self, offset: int) -> str:
        raw = self._string_bytes(offset)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise self._err(f"string at offset {offset} is not valid UTF-8", self._str_start + offset - self._str_base) from None

    def _string_bytes(self, offset: int) -> bytes:
        if offset < self._str_base:
            return self.base._string_bytes(offset)  # type: ignore[union-attr]
        local = offset - self._str_base
        if local >= self._str_len:
            raise self._err(
                f"string offset {offset} out of range (string section ends at {self._str_total})", self._str_start
            )
        strtab = self._strtab_copy or self._strtab
        end = strtab.find(0, local)
        if end < 0:
            raise self._err(f"string at offset {offset} is not NUL-terminated", self._str_start + local)
        return strtab[local:end]

    def strings_bytes(self) -> bytes:
        """This blob's own string section, raw."""
        return self._strtab

    @property
    def _strtab(self) -> bytes:
        """The own string section as bytes, copied out of the blob at first need (a file's mapping may
        be closed; building the full name index reads the names straight from the blob instead)."""
        if self._strtab_copy is None:
            self._strtab_copy = bytes(self._blob()[self._str_start : self._str_start + self._str_len])
        return self._strtab_copy

    # --- access -----------------------------------------------------------
    def __len__(self) -> int:
        """Number of type ids including void and the base's: valid ids are 0..len-1."""
        return self.start_id + len(self._offsets)

    def __repr__(self) -> str:
        split = f", split on {self.base.source}" if self.base is not None else ""
        return f"<BTF {self.source}: {len(self._offsets)} types{split}>"

    def __getitem__(self, type_id: int) -> Type:
        """The type with this id (0 is VOID); decoded on first access, then cached. BTFError if out of range."""
        i = type_id - self.start_id
        if i >= 0:
            t = self._decoded.get(i)
            if t is None:
                try:
                    word = self._offsets[i]
                except (IndexError, TypeError):
                    raise self._err(f"type id {type_id!r} out of range (last id is {len(self) - 1})") from None
                t = self._decoded[i] = self._decode_type(type_id, self._type_start + 4 * word)
            return t
        if self.base is not None:
            return self.base[type_id]
        if type_id == 0:
            return VOID
        raise self._err(f"type id {type_id!r} out of range (last id is {len(self) - 1})")

    def type_offset(self, type_id: int) -> int:
        """Byte offset of an own type's btf_type in the blob (for error messages and tools)."""
        return self._type_start + 4 * self._offsets[type_id - self.start_id]

    def types(self) -> Iterator[Type]:
        """Every type of this blob (not the base's), in id order."""
        for type_id in range(self.start_id, len(self)):
            yield self[type_id]

    def _check_id(self, owner: int, what: str, type_id: int, offset: int) -> int:
        if type_id >= len(self):
            raise self._err(f"type [{owner}] {what} refers to type id {type_id}, past the last id {len(self) - 1}", offset)
        return type_id

    def _decode_type(self, type_id: int, off: int) -> Type:
        """Decode one btf_type and its trailing records (the fast path; tests check it against construct)."""
        c, buf = self._codec, self._blob()
        name_off, info, size = c.btf_type.unpack_from(buf, off)
        kind = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = bool(info >> 31)
        name = self.string(name_off)
        p = off + c.type_size
        ref = self._check_id
        if kind == Kind.INT:
            (word,) = c.u32.unpack_from(buf, p)
            return Int(
                type_id, name, size, IntEncoding((word >> fmt.INT_ENCODING_SHIFT) & fmt.INT_ENCODING_MASK),
                (word >> fmt.INT_OFFSET_SHIFT) & fmt.INT_OFFSET_MASK, word & fmt.INT_BITS_MASK, name_off,
            )
        if kind in (Kind.STRUCT, Kind.UNION):
            members = []
            step, unpack = c.member.size, c.member.unpack_from
            for i in range(vlen):
                m_name_off, m_type, m_off = unpack(buf, p)
                ref(type_id, f"member {i}", m_type, p)
                if kflag:
                    members.append(Member(self.string(m_name_off), m_type, m_off & fmt.MEMBER_BIT_OFFSET_MASK,
                                          m_off >> fmt.MEMBER_BITFIELD_SHIFT, m_name_off))
                else:
                    members.append(Member(self.string(m_name_off), m_type, m_off, 0, m_name_off))
                p += step
            cls = Struct if kind == Kind.STRUCT else Union
            return cls(type_id, name, size, tuple(members), kflag, name_off)
        if kind in (Kind.PTR, Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG, Kind.FUNC):
            ref(type_id, "target", size, off)
            if kind == Kind.PTR:
                return Ptr(type_id, size, name, name_off)
            if kind == Kind.TYPEDEF:
                return Typedef(type_id, name, size, name_off)
            if kind == Kind.FUNC:
                return Func(type_id, name, size, self._linkage(type_id, vlen, off), name_off)
            if kind == Kind.TYPE_TAG:
                return TypeTag(type_id, name, size, name_off, kind_flag=kflag)
            cls = {Kind.VOLATILE: Volatile, Kind.CONST: Const, Kind.RESTRICT: Restrict}[Kind(kind)]
            return cls(type_id, size, name, name_off)
        if kind == Kind.ARRAY:
            elem, index, nelems = c.array.unpack_from(buf, p)
            ref(type_id, "element type", elem, p)
            ref(type_id, "index type", index, p)
            return Array(type_id, elem, index, nelems, name, name_off)
        if kind == Kind.ENUM:
            values = []
            for i in range(vlen):
                v_name_off, val = c.enum.unpack_from(buf, p)
                values.append(EnumValue(self.string(v_name_off), val if kflag else val & 0xFFFFFFFF, v_name_off))
                p += c.enum.size
            return Enum(type_id, name, size, tuple(values), kflag, name_off)
        if kind == Kind.ENUM64:
            values = []
            for i in range(vlen):
                v_name_off, lo, hi = c.enum64.unpack_from(buf, p)
                val = hi << 32 | lo
                if kflag and val >> 63:
                    val -= 1 << 64
                values.append(EnumValue(self.string(v_name_off), val, v_name_off))
                p += c.enum64.size
            return Enum64(type_id, name, size, tuple(values), kflag, name_off)
        if kind == Kind.FUNC_PROTO:
            params = []
            for i in range(vlen):
                p_name_off, p_type = c.param.unpack_from(buf, p)
                ref(type_id, f"parameter {i}", p_type, p)
                params.append(Param(self.string(p_name_off), p_type, p_name_off))
                p += c.param.size
            return FuncProto(type_id, size, tuple(params), name, name_off)
        if kind == Kind.VAR:
            ref(type_id, "type", size, off)
            (linkage,) = c.u32.unpack_from(buf, p)
            return Var(type_id, name, size, self._linkage(type_id, linkage, p), name_off)
        if kind == Kind.DATASEC:
            entries = []
            for i in range(vlen):
                v_type, v_off, v_size = c.var_secinfo.unpack_from(buf, p)
                ref(type_id, f"entry {i}", v_type, p)
                entries.append(VarSecinfo(v_type, v_off, v_size))
                p += c.var_secinfo.size
            return Datasec(type_id, name, size, tuple(entries), name_off)
        if kind == Kind.FWD:
            return Fwd(type_id, name, kflag, name_off)
        if kind == Kind.FLOAT:
            return Float(type_id, name, size, name_off)
        if kind == Kind.DECL_TAG:
            ref(type_id, "target", size, off)
            (component_idx,) = c.decl_tag.unpack_from(buf, p)
            return DeclTag(type_id, name, size, component_idx, name_off, kind_flag=kflag)
        raise self._err(f"type [{type_id}] has unknown kind {kind}", off)  # the scan rejects these already

    def _linkage(self, type_id: int, value: int, offset: int) -> Linkage:
        try:
            return Linkage(value)
        except ValueError:
            raise self._err(f"type [{type_id}] has unknown linkage {value}", offset) from None

    # --- names ------------------------------------------------------------
    def _name_index(self) -> NameIndex | HashedNameIndex:
        if self._index is None:
            gc_was_enabled = gc.isenabled()
            gc.disable()
            try:
                if self.base is not None:
                    strtab = None
                else:  # the copy if one was made, else straight from the blob (the index alone needs none)
                    strtab = self._strtab_copy or self._blob()[self._str_start : self._str_start + self._str_len]
                index = self._index = NameIndex(self._name_offs, self._string_bytes, strtab)
                self._scanned = None
                if self._store_index and self._digest is not None:
                    hashed = index.hashed(self._strtab)
                    store_cache(self._digest, self._size, self.start_id, self._offsets, self._name_offs, hashed)
            finally:
                if gc_was_enabled:
                    gc.enable()
        return self._index

    def ids_by_name(self, name: str) -> list[int]:
        """Ids of all types (this blob and base) whose name is exactly ``name``, ascending."""
        found = self.base.ids_by_name(name) if self.base is not None else []
        if self._index is None and self._scans_left > 0 and not self._store_index:
            self._scans_left -= 1
            if self._scanned is None:
                self._scanned = ScannedNames(self._name_offs, self._strtab, self._mid_string)
            return [self.start_id + i for i in self._scanned.positions(name.encode())]
        positions = self._name_index().positions(name.encode())
        if positions is None:  # a cached index that contradicts the blob: forget it, index afresh
            self._offsets, self._name_offs = self._scan()
            self._decoded = {}
            self._index = None
            self._mid_string = None
            self._digest, self._store_index = blob_digest(self._blob()), True  # and replace it on disk
            positions = self._name_index().positions(name.encode())
        start = self.start_id
        return found + [start + i for i in positions]  # type: ignore[union-attr]

    def find(self, name: str, kind: Kind | None = None) -> list[Type]:
        """Types named ``name`` (optionally of ``kind``), ascending id."""
        found = [self[i] for i in self.ids_by_name(name)]
        return found if kind is None else [t for t in found if t.kind == kind]

    def find_one(self, name: str, kind: Kind | None = None) -> Type:
        """The single type named ``name`` (of ``kind``); BTFError naming the name if none or several."""
        found = self.find(name, kind)
        what = f"{kind.name} {name!r}" if kind is not None else repr(name)
        if not found:
            raise self._err(f"no type {what}")
        if len(found) > 1:
            raise self._err(f"{len(found)} types named {what}: ids {[t.id for t in found]}")
        return found[0]

    def names(self) -> Iterator[str]:
        """Every distinct type name (own + base), for essential-name candidate search."""
        seen: set[str] = set()
        if self.base is not None:
            seen.update(self.base.names())
            yield from seen
        for raw in self._name_index().names():
            try:
                name = raw.decode()
            except UnicodeDecodeError:
                raise self._err(f"type name {raw!r} is not valid UTF-8") from None
            if name not in seen:
                seen.add(name)
                yield name

    # --- helpers every layer needs ----------------------------------------
    def skip_mods(self, type_id: int) -> Type:
        """Follow CONST/VOLATILE/RESTRICT/TYPE_TAG."""
        return self._skip(type_id, MODIFIERS)

    def skip_mods_and_typedefs(self, type_id: int) -> Type:
        """Follow modifiers and TYPEDEFs to the underlying type (bounded; BTFError on loops)."""
        return self._skip(type_id, MODIFIERS + (Typedef,))

    def _skip(self, type_id: int, kinds: tuple[type, ...]) -> Type:
        t = self[type_id]
        for _ in range(MAX_RESOLVE_DEPTH):
            if not isinstance(t, kinds):
                return t
            t = self[t.type_id]  # type: ignore[union-attr]
        raise self._err(f"type [{type_id}]: reference chain deeper than {MAX_RESOLVE_DEPTH} (a loop?)")

    @property
    def pointer_size(self) -> int:
        """The target's pointer size: the size of its first ``long`` INT in id order, as libbpf's
        determine_ptr_size (8 if there is none). No lookup by name: kernels define one early."""
        if self._ptr_size is None:
            self._ptr_size = next((t.size for t in self._ints() if t.size in (4, 8) and t.name in _LONG_NAMES), 8)
        return self._ptr_size

    def _ints(self) -> Iterator[Int]:
        """The INT types (base first), in id order; only they are decoded."""
        if self.base is not None:
            yield from self.base._ints()
        words, start = self._type_words(), self.start_id
        for i, word in enumerate(self._offsets):
            if (words[word + 1] >> fmt.INFO_KIND_SHIFT) & fmt.INFO_KIND_MASK == _INT:
                yield self[start + i]  # type: ignore[misc]

    def resolve_size(self, type_id: int) -> int:
        """Byte size of a type as libbpf's btf__resolve_size (arrays multiply; BTFError if sizeless)."""
        nelems = 1
        t = self[type_id]
        for _ in range(MAX_RESOLVE_DEPTH):
            if isinstance(t, (Int, Struct, Union, Enum, Enum64, Datasec, Float)):
                size = t.size
                break
            if isinstance(t, Ptr):
                size = self.pointer_size
                break
            if isinstance(t, (Typedef, Volatile, Const, Restrict, Var, DeclTag, TypeTag)):
                t = self[t.type_id]
            elif isinstance(t, Array):
                nelems *= t.nelems
                if nelems > 0xFFFFFFFF:
                    raise self._err(f"type [{type_id}]: array size overflows 32 bits")
                t = self[t.type_id]
            else:
                raise self._err(f"type [{type_id}]: {t.kind.name} [{t.id}] has no size")
        else:
            raise self._err(f"type [{type_id}]: reference chain deeper than {MAX_RESOLVE_DEPTH} (a loop?)")
        total = nelems * size
        if total > 0xFFFFFFFF:
            raise self._err(f"type [{type_id}]: size overflows 32 bits")
        return total

    def alignment(self, type_id: int) -> int:
        """Natural alignment as libbpf's btf__align_of (1 for packed structs/unions)."""
        return self._align(type_id, 0)

    def _align(self, type_id: int, depth: int) -> int:
        if depth > MAX_RESOLVE_DEPTH:
            raise self._err(f"type [{type_id}]: nesting deeper than {MAX_RESOLVE_DEPTH} (a loop?)")
        t = self[type_id]
        if isinstance(t, (Int, Enum, Enum64, Float)):
            return max(1, min(self.pointer_size, t.size))
        if isinstance(t, Ptr):
            return self.pointer_size
        if isinstance(t, (Typedef, Volatile, Const, Restrict, TypeTag, Array)):
            return self._align(t.type_id, depth + 1)
        if isinstance(t, COMPOSITE):
            max_align = 1
            for m in t.members:
                align = self._align(m.type_id, depth + 1)
                max_align = max(max_align, align)
                if m.bitfield_size == 0 and m.bit_offset % (8 * align):
                    return 1  # a misaligned member: packed
            return 1 if t.size % max_align else max_align
        raise self._err(f"type [{type_id}]: {t.kind.name} has no alignment")

    def members(self, type_id: int) -> Iterator[tuple[Member, int]]:
        """Named members of a struct/union with their bit offsets from its start, looking through
        anonymous struct/union members (as C name lookup does)."""
        yield from self._members(type_id, 0, 0)

    def _members(self, type_id: int, base_bits: int, depth: int) -> Iterator[tuple[Member, int]]:
        if depth > MAX_RESOLVE_DEPTH:
            raise self._err(f"type [{type_id}]: anonymous members nested deeper than {MAX_RESOLVE_DEPTH}")
        t = self.skip_mods(type_id)
        if not isinstance(t, COMPOSITE):
            raise self._err(f"type [{type_id}] is {t.kind.name}, not a struct or union")
        for m in t.members:
            if m.name:
                yield m, base_bits + m.bit_offset
            elif isinstance(self.skip_mods(m.type_id), COMPOSITE):
                yield from self._members(m.type_id, base_bits + m.bit_offset, depth + 1)

    def find_member(self, type_id: int, name: str) -> tuple[Member, int] | None:
        """The member called ``name`` (looking through anonymous members) and its bit offset, or None."""
        for m, bits in self.members(type_id):
            if m.name == name:
                return m, bits
        return None

    def raw_bytes(self) -> bytes:
        """The blob exactly as parsed (header, types, strings)."""
        return bytes(self._blob())

    def type_bytes(self) -> memoryview:
        """This blob's type section, raw."""
        return self._blob()[self._type_start : self._type_end]


def _map(f) -> mmap.mmap | None:
    """The whole file mapped private read-only, or None when the file cannot be mapped (then read it).
    Where Python allows (3.13+), the mapping keeps no duplicate of the file's fd."""
    try:
        size = os.fstat(f.fileno()).st_size
        if size > 0:
            extra = {"trackfd": False} if sys.version_info >= (3, 13) else {}
            return mmap.mmap(f.fileno(), size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ, **extra)
    except (OSError, ValueError):
        pass
    return None


def _unmap(mapping: mmap.mmap) -> None:
    try:
        mapping.close()
    except BufferError:  # views handed out (type_bytes()) still alive: unmapped when the last goes
        pass
