"""CO-RE: relocating a BPF program's field offsets, sizes, type ids and enum values from the
BTF it was compiled with to a target kernel's BTF, exactly as libbpf's ``relo_core.c`` does.

Pure functions: :func:`calc_relo` computes a :class:`CoreResult` from (local BTF, relocation
record, :class:`Target`); :func:`patch_insn` writes it into the instructions.
"""

from .access import format_spec, parse_spec
from .calc import CandidateTry, CoreResult, calc_relo
from .compat import fields_are_compat, types_are_compat, types_match
from .kinds import ReloKind
from .patch import POISON_IMM, is_poisoned, patch_insn, poisons
from .target import Candidate, Target

__all__ = [
    "ReloKind", "Target", "Candidate", "CandidateTry", "CoreResult", "calc_relo", "patch_insn",
    "POISON_IMM", "is_poisoned", "poisons", "parse_spec", "format_spec", "types_are_compat",
    "fields_are_compat", "types_match",
]
