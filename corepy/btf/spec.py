"""The BTF container: a lazily decoded set of types with a name index.

INTERFACE CONTRACT (other layers code against exactly this; implementation
fills the bodies). Type ids are global: for split BTF they continue after the
base's last id, and ``btf[i]`` answers for base ids too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .types import Kind, Type

if TYPE_CHECKING:
    from .ext import BTFExt


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

    # --- construction -----------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes | memoryview, *, base: BTF | None = None, source: str = "<bytes>") -> BTF:
        """Parse a raw BTF blob (header + types + strings). Raises BTFError."""
        raise NotImplementedError

    @classmethod
    def from_file(cls, path: str, *, base: BTF | None = None) -> BTF:
        """Open a raw BTF file (e.g. /sys/kernel/btf/vmlinux) or an ELF file with a .BTF section."""
        raise NotImplementedError

    @classmethod
    def kernel(cls) -> BTF:
        """The running kernel's /sys/kernel/btf/vmlinux, opened once per process and cached."""
        raise NotImplementedError

    # --- access -----------------------------------------------------------
    def __len__(self) -> int:
        """Number of type ids including void and the base's: valid ids are 0..len-1."""
        raise NotImplementedError

    def __getitem__(self, type_id: int) -> Type:
        """The type with this id (0 is VOID); decoded on first access, then cached. BTFError if out of range."""
        raise NotImplementedError

    def types(self) -> Iterator[Type]:
        """Every type of this blob (not the base's), in id order."""
        raise NotImplementedError

    def ids_by_name(self, name: str) -> list[int]:
        """Ids of all types (this blob and base) whose name is exactly ``name``, ascending."""
        raise NotImplementedError

    def find(self, name: str, kind: Kind | None = None) -> list[Type]:
        """Types named ``name`` (optionally of ``kind``), ascending id."""
        raise NotImplementedError

    def find_one(self, name: str, kind: Kind | None = None) -> Type:
        """The single type named ``name`` (of ``kind``); BTFError naming the name if none or several."""
        raise NotImplementedError

    def string(self, offset: int) -> str:
        """The string at ``offset`` in the (base + own) string section."""
        raise NotImplementedError

    def names(self) -> Iterator[str]:
        """Every distinct type name (own + base), for essential-name candidate search."""
        raise NotImplementedError

    # --- helpers every layer needs ----------------------------------------
    def skip_mods(self, type_id: int) -> Type:
        """Follow CONST/VOLATILE/RESTRICT/TYPE_TAG."""
        raise NotImplementedError

    def skip_mods_and_typedefs(self, type_id: int) -> Type:
        """Follow modifiers and TYPEDEFs to the underlying type (bounded; BTFError on loops)."""
        raise NotImplementedError

    def resolve_size(self, type_id: int) -> int:
        """Byte size of a type as libbpf's btf__resolve_size (arrays multiply; BTFError if sizeless)."""
        raise NotImplementedError

    def alignment(self, type_id: int) -> int:
        """Natural alignment as libbpf's btf__align_of."""
        raise NotImplementedError

    def raw_bytes(self) -> bytes:
        """The blob exactly as parsed (header, types, strings)."""
        raise NotImplementedError

    ext: BTFExt | None
    """The matching .BTF.ext when parsed from an ELF object, else None."""
