"""The BTF a program is relocated against, and candidate search in it (libbpf
``bpf_core_find_cands`` / ``bpf_core_add_cands``)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..._records import record
from ...errors import BTFError, RelocationError
from ..types import ENUMS, Kind, Type, essential_name
from .access import kind_str

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
                found = tuple(c for m in self.modules
                              for c in self._scan(m, _module_name(m), ess, kind, m.start_id))
            self._cands[key] = found
        return found

    def _scan(self, btf: BTF, btf_name: str, ess: str, kind: Kind, start_id: int) -> list[Candidate]:
        ids: list[int] = []
        for name in [ess, *self._flavors(btf).get(ess, ())]:
            ids.extend(i for i in btf.ids_by_name(name) if i >= start_id)
        out = []
        for i in sorted(ids):
            t = btf[i]
            if t.kind == kind or (kind == Kind.ENUM and isinstance(t, ENUMS)):
                out.append(Candidate(btf, i, btf_name))
        return out

    def _flavors(self, btf: BTF) -> dict[str, list[str]]:
        """essential name -> flavored names (``x___y``) present in ``btf`` (own strings only;
        ids are filtered by the caller). Found by searching the string section for ``___``
        rather than decoding every name: kernels have very few. Kept per BTF for the process
        (every load makes a new Target on the same cached kernel BTF)."""
        flavors = _FLAVORED.get(btf)
        if flavors is None:
            flavors = {}
            data = btf.strings_bytes()
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
            try:
                _FLAVORED[btf] = flavors
            except TypeError:  # a BTF without weakref support: scanned again next time
                pass
        return flavors


_FLAVORED: weakref.WeakKeyDictionary[BTF, dict[str, list[str]]] = weakref.WeakKeyDictionary()


def _module_name(btf: BTF) -> str:
    return os.path.basename(btf.source) if btf.source else "module"
