"""CO-RE relocation against the running kernel, remembered on disk.

A relocation's result is a pure function of the object's BTF, its relocation record and the
target BTF (:mod:`corepy.btf.core`). So once an object was relocated against this boot's kernel,
later processes loading the same object take the results from the cache
(:mod:`corepy.cache`) and neither open the kernel BTF nor search it: ~10 ms less for a small
tool, more for big ones.

An entry holds everything the results depend on and is used only if all of it matches: the
kernel BTF's digest (remembered per boot), the object's BTF blob, each pending relocation's
record and place, and the engine (corepy's version and its BTF/CO-RE/object modules' sizes and
times, so an edited checkout never reads results of the code it replaced). There is one entry
per object (BTF and places): another kernel or engine replaces it. ``COREPY_BTF_CACHE=0``
turns the cache off. Relocations that looked at module BTFs (which can come and go within a
boot) are not stored; failures (RelocationError) are recomputed every time.
"""

from __future__ import annotations

import marshal
import os

from .. import __version__
from ..cache import blob_digest, enabled, kernel_btf_digest, read_entry, write_entry
from .core import CoreRecord, pending_relocations, relocate_core

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..btf.ext import CoreRelo
    from .spec import Function, ObjectSpec

__all__ = ["relocate_running_kernel"]

_MAGIC = b"corepy-core\0"
_VERSION = 1
_ENGINE_DIRS = ("btf", os.path.join("btf", "core"), "object")


def relocate_running_kernel(obj: ObjectSpec) -> list[CoreRecord]:
    """:func:`~.core.relocate_core` of ``obj`` against the running kernel, from the cache when
    the same object was relocated against this boot's kernel BTF before (and stored if not)."""
    pending = pending_relocations(obj)
    if not pending:
        return []
    use_cache = enabled()
    key = _key(obj, pending) if use_cache else None
    if key is not None:
        records = _load(key, pending)
        if records is not None:
            return records
    from ..btf.core import Target

    target = Target.running_kernel()
    records = relocate_core(obj, target)
    if use_cache and not target.searched_modules:
        key = key or _key(obj, pending)  # (the kernel BTF's digest is remembered now)
        if key is not None:
            _store(key, records)
    return records


def _key(obj: ObjectSpec, pending: list[tuple[Function, str, int, int, CoreRelo]]) -> tuple | None:
    kernel = kernel_btf_digest()
    if kernel is None or obj.btf is None:
        return None
    places = tuple((f.name, f.section, f.offset, section, n, r.insn_off, r.type_id, r.access_str, r.kind)
                   for f, section, n, _idx, r in pending)
    return (_VERSION, blob_digest(obj.btf.raw_bytes()), places, kernel, _engine())


def _engine() -> tuple:
    """corepy's version and the size and mtime of each module the results can depend on."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stamp: list = [__version__]
    for sub in _ENGINE_DIRS:
        try:
            with os.scandir(os.path.join(root, sub)) as entries:
                files = sorted((e.name, e.stat()) for e in entries if e.name.endswith(".py"))
        except OSError:
            files = []
        stamp.extend((sub, name, st.st_size, st.st_mtime_ns) for name, st in files)
    return tuple(stamp)


def _file_name(key: tuple) -> str:
    """Named by the object's part of the key (format, BTF, places): one entry per object."""
    return f"core-{blob_digest(marshal.dumps(key[:3])).hex()}.rel"


def _load(key: tuple, pending: list[tuple[Function, str, int, int, CoreRelo]]) -> list[CoreRecord] | None:
    from ..btf.core.result import CoreResult

    payload = read_entry(_file_name(key), _MAGIC)
    if payload is None:
        return None
    try:
        stored_key, results = marshal.loads(payload)
        if stored_key != key or len(results) != len(pending):
            return None
        return [CoreRecord(f.name, f.section, idx, n, relo, CoreResult.from_tuple(r))
                for (f, _section, n, idx, relo), r in zip(pending, results)]
    except (ValueError, EOFError, TypeError):
        return None


def _store(key: tuple, records: list[CoreRecord]) -> None:
    payload = marshal.dumps((key, tuple(r.result.as_tuple() for r in records)))
    write_entry(_file_name(key), _MAGIC, payload)
