"""The BTF a program is relocated against, and candidate search in it (libbpf
``bpf_core_find_cands`` / ``bpf_core_add_cands``)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Sequence

from ..._records import record
from ...errors import BTFError, RelocationError
from ..types import ENUMS, Kind, Type, essential_name
from .access import kind_str

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..spec import BTF


@record(frozen=True, slots=True)
class Candidate:
    """A target type whose essential name and kind agree with a local type."""

    btf: BTF
    type_id: int
    btf_name: str
    """``vmlinux`` or the module's name."""

    def __repr__(self) -> str:
        t = self.btf[self.type_id]
        return f"[{self.type_id}] {kind_str(t)} {t.name} in [{self.btf_name}]"


class Target:
    """Target kernel BTF: ``vmlinux``, plus module BTFs (split on vmlinux) searched only when
    vmlinux has no candidate; ``custom`` (a user-supplied BTF file, libbpf's ``btf_custom_path``)
    disables the module search. ``modules`` may be a callable, called once on first need.

    Candidate lists are cached per (essential name, kind). Like libbpf's per-object cache,
    the target also remembers, per local BTF and local type id, the candidates a relocation
    narrowed the list to: later relocations of the same local type only consider those.
    """

    def __init__(self, vmlinux: BTF, modules: Sequence[BTF] | Callable[[], Sequence[BTF]] = (),
                 custom: bool = False):
        self.vmlinux = vmlinux
        self.custom = custom
        self._modules = modules
        self._cands: dict[tuple[str, int], tuple[Candidate, ...]] = {}
        self._narrowed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.searched_modules = False
        """Whether some candidate search went on to the module BTFs (found nothing in vmlinux)."""

    @classmethod
    def running_kernel(cls) -> Target:
        """The running kernel: /sys/kernel/btf/vmlinux, modules from /sys/kernel/btf/* on demand."""
        from ..spec import BTF

        vmlinux = BTF.kernel()

        def load_modules() -> list[BTF]:
            root = "/sys/kernel/btf"
            names = sorted(n for n in os.listdir(root) if n != "vmlinux") if os.path.isdir(root) else []
            return [BTF.from_file(os.path.join(root, n), base=vmlinux) for n in names]

        return cls(vmlinux, load_modules)

    @classmethod
    def from_file(cls, path: str) -> Target:
        """A custom target (libbpf's ``btf_custom_path``): a raw BTF file, an ELF file with .BTF,
        or either compressed with xz (``.xz``). Modules are not searched."""
        from ..spec import BTF

        if str(path).endswith(".xz"):
            import lzma

            try:
                with lzma.open(path) as f:
                    data = f.read()
            except (OSError, lzma.LZMAError) as e:
                raise BTFError(f"cannot read xz-compressed BTF: {e}", source=str(path)) from e
            return cls(BTF.from_bytes(data, source=str(path)), custom=True)
        return cls(BTF.from_file(path), custom=True)

    @property
    def modules(self) -> Sequence[BTF]:
        if callable(self._modules):
            self._modules = tuple(self._modules())
        return self._modules

    def __repr__(self) -> str:
        return f"Target({self.vmlinux.source!r}{', custom' if self.custom else ''})"

    # --- candidates -------------------------------------------------------
    def candidates(self, local: BTF, local_id: int) -> tuple[Candidate, ...]:
        """Candidates for local type ``local_id``, narrowed by earlier relocations of this local BTF."""
        narrowed = self._narrowed_for(local).get(local_id)
        if narrowed is not None:
            return narrowed
        t = local[local_id]
        if not t.name:
            raise RelocationError(f"target candidate search failed for [{local_id}] {kind_str(t)} "
                                  "<anon>: CO-RE does not relocate anonymous types")
        return self.find_candidates(t)

    def narrow(self, local: BTF, local_id: int, kept: Sequence[Candidate]) -> None:
        """Remember that relocations of ``local_id`` only matched ``kept`` (libbpf prunes its list)."""
        self._narrowed_for(local)[local_id] = tuple(kept)

    def _narrowed_for(self, local: BTF) -> dict[int, tuple[Candidate, ...]]:
        try:
            return self._narrowed.setdefault(local, {})
        except TypeError:  # a BTF without weakref support: no narrowing memory
            return {}

    def find_candidates(self, local_type: Type) -> tuple[Candidate, ...]:
        """Target types with the same essential name and a compatible kind, vmlinux first,
        in id order; modules only when vmlinux has none and the target is not custom."""
        ess = essential_name(local_type.name)
        kind = Kind.ENUM if isinstance(local_type, ENUMS) else local_type.kind
        key = (ess, kind)
        found = self._cands.get(key)
        if found is None:
            found = tuple(self._scan(self.vmlinux, "vmlinux", ess, kind, 1))
            if not found and not self.custom:
                self.searched_modules = True
                found = tuple(c for m in self.modules
                              for c in self._scan(m, _module_name(m), ess, kind, m.start_id))
            self._cands[key] = found
        return found

    def _scan(self, btf: BTF, btf_name: str, ess: str, kind: Kind, start_id: int) -> list[Candidate]:
        ids: list[int] = []
        for name in [ess, *_flavors_of(btf, ess)]:
            ids.extend(i for i in btf.ids_by_name(name) if i >= start_id)
        out = []
        for i in sorted(ids):
            t = btf[i]
            if t.kind == kind or (kind == Kind.ENUM and isinstance(t, ENUMS)):
                out.append(Candidate(btf, i, btf_name))
        return out


FLAVOR_SEARCHES = 3
"""Essential names whose flavored names (``x___y``) are looked for in a BTF's strings one by one
(a search for ``\\0x___``: ~0.8 ms on vmlinux) before one scan for every ``___`` (~2.7 ms)
answers all later ones: a typical object relocates against only a few types."""


class _Flavors:
    """The flavored names of one BTF's own strings (ids are filtered by the caller), by
    essential name: searched for per name, then all at once (:data:`FLAVOR_SEARCHES`)."""

    def __init__(self, strings: bytes):
        self._strings = strings
        self._by_ess: dict[str, list[str]] = {}
        self._searches_left: int | None = FLAVOR_SEARCHES
        """None once the scan of every flavored name filled ``_by_ess``."""

    def of(self, ess: str) -> list[str]:
        found = self._by_ess.get(ess)
        if found is not None or self._searches_left is None:
            return found or []
        if self._searches_left == 0:
            self._by_ess, self._searches_left = _all_flavors(self._strings), None
            return self._by_ess.get(ess, [])
        self._searches_left -= 1
        found = self._by_ess[ess] = [
            name for name in _strings_starting(self._strings, ess.encode() + b"___") if essential_name(name) == ess]
        return found


def _flavors_of(btf: BTF, ess: str) -> list[str]:
    """Flavored names of ``ess`` in ``btf``'s own strings; what was found is kept per BTF for the
    process (weakly: every load makes a new Target on the same cached kernel BTF)."""
    flavors = _FLAVORED.get(btf)
    if flavors is None:
        flavors = _Flavors(btf.strings_bytes())
        try:
            _FLAVORED[btf] = flavors
        except TypeError:  # a BTF without weakref support: searched again next time
            pass
    return flavors.of(ess)


def _strings_starting(data: bytes, prefix: bytes) -> list[str]:
    """The distinct strings of the string section ``data`` that start with ``prefix``."""
    found: dict[str, None] = {}
    pattern = b"\0" + prefix  # (below, find's -1 + 1 is 0: no more, as -1)
    start = 0 if data.startswith(prefix) else data.find(pattern) + 1 or -1
    while start >= 0:
        end = data.find(b"\0", start)
        if end < 0:
            end = len(data)
        found[data[start:end].decode("utf-8", "replace")] = None
        start = data.find(pattern, end) + 1 or -1
    return list(found)


def _all_flavors(data: bytes) -> dict[str, list[str]]:
    """essential name -> every flavored name in the string section ``data``, found by searching
    it for ``___`` rather than decoding every name: kernels have very few."""
    flavors: dict[str, list[str]] = {}
    seen = set()
    i = data.find(b"___")
    while i >= 0:
        start, end = data.rfind(b"\0", 0, i) + 1, data.find(b"\0", i)
        if end < 0:
            end = len(data)
        raw = data[start:end]
        if raw not in seen:
            seen.add(raw)
            name = raw.decode("utf-8", "replace")
            ess = essential_name(name)
            if ess != name:
                flavors.setdefault(ess, []).append(name)
        i = data.find(b"___", end)
    return flavors


_FLAVORED: weakref.WeakKeyDictionary[BTF, _Flavors] = weakref.WeakKeyDictionary()


def _module_name(btf: BTF) -> str:
    return os.path.basename(btf.source) if btf.source else "module"
