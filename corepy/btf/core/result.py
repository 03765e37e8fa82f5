"""What a CO-RE relocation resolves to: plain data (no BTF held), so it can be kept, compared
and cached (:mod:`corepy.object.core_cache`) apart from the BTFs it was computed from."""

from __future__ import annotations

from ..._records import record
from .kinds import ReloKind

__all__ = ["CandidateTry", "CoreResult"]


@record(frozen=True, slots=True)
class CandidateTry:
    """One candidate considered for a relocation: where it is, its spec text and why it did not match."""

    btf_name: str
    """``vmlinux`` or the module's name."""
    type_id: int
    spec: str
    matched: bool
    reason: str | None = None

    def __str__(self) -> str:
        verdict = "matching" if self.matched else f"non-matching ({self.reason})"
        return f"{verdict} candidate {self.spec} in [{self.btf_name}]"


@record(frozen=True, slots=True)
class CoreResult:
    """The outcome of one CO-RE relocation, before patching (libbpf ``bpf_core_relo_res``).

    ``old``/``new`` are unsigned 64-bit as libbpf computes them. ``validate`` asks the patch
    step to check the instruction really holds ``old``. ``orig_sz``/``new_sz`` and the type ids
    are the field's size and type for load/store resizing; ``fail_memsz_adjust`` marks a size
    change that cannot be done safely (the patch step poisons a load/store then)."""

    kind: ReloKind
    local_spec: str
    target_spec: str | None
    old: int
    new: int
    poisoned: bool = False
    validate: bool = True
    orig_sz: int = 0
    new_sz: int = 0
    orig_type_id: int = 0
    new_type_id: int = 0
    fail_memsz_adjust: bool = False
    reason: str | None = None
    candidates: tuple[CandidateTry, ...] = ()

    def as_tuple(self) -> tuple:
        """Every field as builtins (ints, strs, bools, None, tuples): :meth:`from_tuple`'s input."""
        return (int(self.kind), self.local_spec, self.target_spec, self.old, self.new, self.poisoned,
                self.validate, self.orig_sz, self.new_sz, self.orig_type_id, self.new_type_id,
                self.fail_memsz_adjust, self.reason,
                tuple((c.btf_name, c.type_id, c.spec, c.matched, c.reason) for c in self.candidates))

    @classmethod
    def from_tuple(cls, values: tuple) -> CoreResult:
        """The result :meth:`as_tuple` gave ``values`` for; ValueError/TypeError if malformed."""
        *head, candidates = values
        return cls(ReloKind(head[0]), *head[1:], tuple(CandidateTry(*c) for c in candidates))
