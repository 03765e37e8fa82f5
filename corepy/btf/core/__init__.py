"""CO-RE: relocating a BPF program's field offsets, sizes, type ids and enum values from the
BTF it was compiled with to a target kernel's BTF, exactly as libbpf's ``relo_core.c`` does.

Pure functions: :func:`calc_relo` computes a :class:`CoreResult` from (local BTF, relocation
record, :class:`Target`); :func:`patch_insn` writes it into the instructions.

Names load lazily from their modules: applying cached results (:mod:`.result`, :mod:`.patch`)
does not import the engine.
"""

from __future__ import annotations

from ..._lazy import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .access import format_spec, parse_spec
    from .calc import calc_relo
    from .compat import fields_are_compat, types_are_compat, types_match
    from .kinds import ReloKind
    from .patch import POISON_IMM, is_poisoned, patch_insn, poisons
    from .result import CandidateTry, CoreResult
    from .target import Candidate, Target

_LAZY = {
    "ReloKind": "kinds", "Target": "target", "Candidate": "target", "CandidateTry": "result",
    "CoreResult": "result", "calc_relo": "calc", "patch_insn": "patch", "POISON_IMM": "patch",
    "is_poisoned": "patch", "poisons": "patch", "parse_spec": "access", "format_spec": "access",
    "types_are_compat": "compat", "fields_are_compat": "compat", "types_match": "compat",
}
__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
