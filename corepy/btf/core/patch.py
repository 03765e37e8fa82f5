"""Writing a CO-RE result into the instruction (libbpf ``bpf_core_patch_insn``)."""

from __future__ import annotations

from ...asm.insn import ALU, ALU64, CALL_INSN, LD, LD_IMM64, LDX, SIZE_BYTES, ST, STX, Insn, K
from ...errors import RelocationError
from .result import CoreResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..ext import CoreRelo

POISON_IMM = 0xBAD2310
"""``call 195896080``: the verifier reports ``invalid func unknown#195896080`` if reached."""
SHRT_MAX = 0x7FFF
_U64 = 0xFFFFFFFFFFFFFFFF
_BPF_SIZE = {n: code for code, n in SIZE_BYTES.items()}

def _s32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >> 31 else v

def is_poisoned(insn: Insn) -> bool:
    """Whether ``insn`` is the invalid call CO-RE poisoning writes."""
    return insn.code == CALL_INSN and insn.imm == POISON_IMM and insn.src == 0

def poison(insns: list[Insn], idx: int) -> None:
    """Replace ``insns[idx]`` (both halves of an ld_imm64) with the poison call."""
    count = 2 if insns[idx].is_ld_imm64 and idx + 1 < len(insns) else 1
    for i in range(idx, idx + count):
        insns[i] = Insn(CALL_INSN, 0, 0, 0, POISON_IMM)

def poisons(insn: Insn, result: CoreResult) -> bool:
    """Whether :func:`patch_insn` turns ``insn`` into the poison call for ``result``: the
    relocation failed, or a load/store of a resized field cannot be resized safely."""
    return result.poisoned or (result.fail_memsz_adjust and insn.cls in (LDX, ST, STX))


def patch_insn(insns: list[Insn], idx: int, relo: CoreRelo, result: CoreResult) -> None:
    """Apply ``result`` to ``insns[idx]`` in place: ALU/ALU64 immediates, LDX/ST/STX offsets
    (and access size when the field was resized), both halves of ld_imm64; poison when the
    result says so or when a load/store cannot be resized. RelocationError when the
    instruction does not hold the value the compiler wrote (``validate``), an offset
    exceeds 32767, or the instruction is of a kind CO-RE cannot patch."""
    if not 0 <= idx < len(insns):
        raise RelocationError(f"CO-RE relocation points at insn #{idx}, past the program's {len(insns)}")
    if result.poisoned:
        poison(insns, idx)
        return
    insn = insns[idx]
    old, new = result.old, result.new
    where = f"<{result.kind}> relocation of insn #{idx} ({result.local_spec})"
    cls = insn.cls
    if cls in (ALU, ALU64):
        if insn.code & 0x08 != K:
            raise RelocationError(f"{where}: ALU instruction with a register operand cannot be relocated")
        if result.validate and insn.imm & _U64 != old:
            raise RelocationError(f"{where}: unexpected ALU immediate {insn.imm & _U64}, expected {old}")
        insn.imm = _s32(new)
    elif cls in (LDX, ST, STX):
        if result.validate and insn.off & _U64 != old:
            raise RelocationError(f"{where}: unexpected load/store offset {insn.off}, expected {old}")
        if new > SHRT_MAX:
            raise RelocationError(f"{where}: offset {new} is too big for a load/store (max {SHRT_MAX})")
        if result.fail_memsz_adjust:
            poison(insns, idx)
            return
        insn.off = new
        if result.new_sz != result.orig_sz:
            size = SIZE_BYTES[insn.code & 0x18]
            if size != result.orig_sz:
                raise RelocationError(f"{where}: access of {size} bytes, expected {result.orig_sz}")
            code = _BPF_SIZE.get(result.new_sz)
            if code is None:
                raise RelocationError(f"{where}: the field's new size {result.new_sz} cannot be loaded")
            insn.code = (insn.code & 0xE0) | code | cls
    elif cls == LD:
        nxt = insns[idx + 1] if idx + 1 < len(insns) else None
        if (insn.code != LD_IMM64 or insn.src != 0 or insn.off != 0 or nxt is None or nxt.code != 0
                or nxt.dst != 0 or nxt.src != 0 or nxt.off != 0):
            raise RelocationError(f"{where}: ld_imm64 instruction has an unexpected form")
        imm = (insn.imm & 0xFFFFFFFF) | ((nxt.imm & 0xFFFFFFFF) << 32)
        if result.validate and imm != old:
            raise RelocationError(f"{where}: unexpected ld_imm64 value {imm}, expected {old}")
        insn.imm = _s32(new)
        nxt.imm = _s32(new >> 32)
    else:
        raise RelocationError(f"{where}: instruction code {insn.code:#04x} cannot be relocated")

