"""Is a poisoned instruction guarded? A poisoned CO-RE instruction is harmless when the
verifier will find it dead: the program tested an existence relocation (``field_exists``,
``type_exists``, ``enumval_exists``, ``type_matches``) and branched around it.

Heuristic, as the verifier prunes: walk the function's control flow from its first
instruction, tracking registers that hold known constants (``mov rX, imm`` and
``ld_imm64`` — which is where CO-RE writes every relocated value, existence answers
included); a conditional jump whose operands are known takes only its true successor.
An instruction never reached this way is dead, so a poisoned instruction there is
*guarded*; the guard reported is the existence relocation whose constant decided the
last such branch on the way. Calls clobber r0-r5; every other write forgets the register.
Limits: constants are not followed through the stack, through calls, or across
functions, so a guard that passes its answer through memory reads as unguarded (the
safe side: ``corepy check`` then reports a poison that might in fact be dead).
"""

from __future__ import annotations

from collections.abc import Sequence

from ...asm.insn import ALU, ALU64, ATOMIC, CALL, EXIT, JA, JMP, JMP32, LDX, MOV, STX, Insn

_U64 = (1 << 64) - 1


def dead_instructions(insns: Sequence[Insn]) -> dict[int, int | None]:
    """Instructions unreachable from index 0 once known constants decide branches:
    {dead index: index of the instruction that set the constant deciding the nearest
    earlier decided branch (the guard), or None if no branch was decided before it}."""
    n = len(insns)
    states: dict[int, dict[int, tuple[int, int]]] = {}  # pc -> reg -> (value, defining insn)
    decided_by: dict[int, int] = {}  # branch pc -> defining insn of the constant that decided it
    work = [0]
    states[0] = {}
    while work:
        pc = work.pop()
        if not 0 <= pc < n:
            continue
        state = states[pc]
        insn = insns[pc]
        for nxt, out in _step(insns, pc, insn, state, decided_by):
            if not 0 <= nxt < n:
                continue
            old = states.get(nxt)
            if old is None:
                states[nxt] = dict(out)
                work.append(nxt)
            else:
                merged = {r: v for r, v in old.items() if out.get(r) == v}
                if merged != old:
                    states[nxt] = merged
                    work.append(nxt)
    reached = set(states)
    dead: dict[int, int | None] = {}
    # attribute each dead instruction to the nearest earlier decided branch
    for i in range(n):
        if i in reached or (i > 0 and insns[i - 1].is_ld_imm64 and i - 1 in reached):
            continue
        decider = max((b for b in decided_by if b < i), default=None)
        dead[i] = decided_by[decider] if decider is not None else None
    return dead


def _step(insns: Sequence[Insn], pc: int, insn: Insn, state: dict, decided_by: dict[int, int]):
    code = insn.code
    cls = code & 0x07
    if insn.is_ld_imm64:
        out = dict(state)
        nxt = insns[pc + 1] if pc + 1 < len(insns) else Insn(0)
        if insn.src == 0:
            out[insn.dst] = (((insn.imm & 0xFFFFFFFF) | ((nxt.imm & 0xFFFFFFFF) << 32)), pc)
        else:
            out.pop(insn.dst, None)
        return [(pc + 2, out)]
    if cls in (ALU, ALU64):
        out = dict(state)
        if code & 0xF0 == MOV and code & 0x08 == 0 and insn.off == 0:
            value = insn.imm & (_U64 if cls == ALU64 else 0xFFFFFFFF)
            out[insn.dst] = (value, pc)
        elif code & 0xF0 == MOV and insn.src in state and insn.off == 0:
            v, d = state[insn.src]
            out[insn.dst] = (v if cls == ALU64 else v & 0xFFFFFFFF, d)
        else:
            out.pop(insn.dst, None)
        return [(pc + 1, out)]
    if cls == LDX:
        out = dict(state)
        out.pop(insn.dst, None)
        return [(pc + 1, out)]
    if cls in (JMP, JMP32):
        op = code & 0xF0
        if op == EXIT and cls == JMP:
            return []
        if op == CALL and cls == JMP:
            out = {r: v for r, v in state.items() if r > 5}
            return [(pc + 1, out)]
        if op == JA:
            return [(pc + 1 + (insn.imm if cls == JMP32 else insn.off), state)]
        target = pc + 1 + insn.off
        taken = _evaluate(op, cls, insn, state)
        if taken is None:
            return [(pc + 1, state), (target, state)]
        definer = state[insn.dst][1]
        decided_by[pc] = definer
        return [(target, state)] if taken else [(pc + 1, state)]
    if cls == STX and code & 0xE0 == ATOMIC:  # fetch/xchg/cmpxchg write a register
        out = {r: v for r, v in state.items() if r not in (0, insn.src)}
        return [(pc + 1, out)]
    return [(pc + 1, state)]


def _evaluate(op: int, cls: int, insn: Insn, state: dict) -> bool | None:
    if insn.dst not in state:
        return None
    bits = 32 if cls == JMP32 else 64
    mask = (1 << bits) - 1
    a = state[insn.dst][0] & mask
    if insn.code & 0x08:  # BPF_X
        if insn.src not in state:
            return None
        b = state[insn.src][0] & mask
    else:
        b = insn.imm & mask  # imm is sign-extended to the operand width
    sa = a - (1 << bits) if a >> (bits - 1) else a
    sb = b - (1 << bits) if b >> (bits - 1) else b
    return {
        0x10: a == b, 0x50: a != b, 0x20: a > b, 0x30: a >= b, 0xA0: a < b, 0xB0: a <= b,
        0x60: sa > sb, 0x70: sa >= sb, 0xC0: sa < sb, 0xD0: sa <= sb, 0x40: bool(a & b),
    }.get(op)


__all__ = ["dead_instructions"]
