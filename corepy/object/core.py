"""Run the CO-RE engine over an object's relocation records. Pure: computes, never patches the spec.

:func:`link` applies the records to its copy of the instructions.
"""

from __future__ import annotations

from .._records import record
from ..btf.ext import CoreRelo
from ..errors import ObjectError, RelocationError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..btf.core import CoreResult, Target
    from ..btf.spec import BTF
    from .spec import Function, ObjectSpec

__all__ = ["CoreRecord", "pending_relocations", "relocate_core"]


@record(frozen=True, slots=True)
class CoreRecord:
    """One CO-RE relocation and its result, located as libbpf's debug log does."""

    program: str
    """The function (program or subprogram) holding the instruction."""
    section: str
    """Its ELF section (as in the file, with any leading '?')."""
    insn: int
    """Instruction index within that function."""
    index: int
    """The relocation's position among its section's CO-RE records ('relo #N')."""
    relo: CoreRelo
    result: CoreResult


def pending_relocations(obj: ObjectSpec) -> list[tuple[Function, str, int, int, CoreRelo]]:
    """(function, .BTF.ext section, relo #, instruction index in the function, record) of every
    CO-RE relocation of autoloaded programs and of all subprograms, in libbpf's order: .BTF.ext
    sections as stored, records in order (candidate narrowing makes order matter). Programs with
    ``autoload`` off are skipped, as libbpf does."""
    if obj.btf is None:
        if any(f.core_relos for f in obj.functions):
            raise ObjectError("CO-RE relocations present but the object has no BTF", path=obj.path)
        return []
    assert obj.btf.ext is not None
    skip = {id(p.function) for p in obj.programs.values() if not p.autoload}
    owner = {}
    for f in obj.functions:
        for relo in f.core_relos:
            owner[id(relo)] = f
    pending = []
    for section, relos in obj.btf.ext.core_relos.items():
        for n, relo in enumerate(relos):
            f = owner.get(id(relo))
            if f is not None and id(f) not in skip:  # (else an eliminated weak function, or not loaded)
                pending.append((f, section, n, relo.insn_off // 8 - f.offset, relo))
    return pending


def relocate_core(obj: ObjectSpec, target: Target | BTF | Any) -> list[CoreRecord]:
    """Resolve every relocation :func:`pending_relocations` lists against ``target`` (a
    :class:`~corepy.btf.core.Target`, or a kernel :class:`~corepy.btf.spec.BTF`).
    RelocationError names the program and relocation that cannot be resolved."""
    from ..btf.core import Target, calc_relo

    pending = pending_relocations(obj)
    if not pending:
        return []
    if not isinstance(target, Target):
        target = Target(target)
    records = []
    for f, _section, n, idx, relo in pending:
        try:
            result = calc_relo(obj.btf, relo, target)
        except RelocationError as e:
            raise RelocationError(f"prog {f.name!r}: relo #{n}: insn #{idx}: failed to relocate: {e}") from None
        records.append(CoreRecord(f.name, f.section, idx, n, relo, result))
    return records
