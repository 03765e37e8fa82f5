"""The guard heuristic of `corepy check`: a poisoned instruction is guarded when constants
CO-RE wrote (existence answers) decide the branches before it so that it is dead code."""

from __future__ import annotations

from conftest import KERNEL_BTF, fixture_obj
import pytest

from corepy.asm.insn import ALU64, CALL_INSN, EXIT_INSN, JEQ, JMP, JMP32, JNE, K, LDX, MEM, MOV, W, X, Insn
from corepy.btf import BTF
from corepy.btf.core import POISON_IMM, Target, calc_relo, is_poisoned, patch_insn
from corepy.btf.core.guards import dead_instructions
from oracle.elfprogs import program_insns

POISON = Insn(CALL_INSN, 0, 0, 0, POISON_IMM)


def mov(dst, imm):
    return Insn(ALU64 | MOV | K, dst, 0, 0, imm)


def test_branch_on_a_known_zero_skips_the_poison():
    # if (exists) poison; else r0 = 0;   with exists = 0 as CO-RE wrote it
    insns = [mov(1, 0), Insn(JMP | JEQ | K, 1, 0, 2, 0), POISON, Insn(JMP, 0, 0, 1, 0), mov(0, 0),
             Insn(EXIT_INSN)]
    assert dead_instructions(insns) == {2: 0, 3: 0}
    insns[0] = mov(1, 1)  # exists = 1: the else arm is the dead one
    assert dead_instructions(insns) == {4: 0}


def test_unknown_value_reaches_both_arms():
    insns = [Insn(LDX | MEM | W, 1, 10, -4, 0), Insn(JMP | JNE | K, 1, 0, 1, 0), POISON, Insn(EXIT_INSN)]
    assert dead_instructions(insns) == {}


def test_calls_clobber_and_copies_propagate():
    insns = [mov(6, 0), Insn(ALU64 | MOV | X, 2, 6, 0, 0), Insn(CALL_INSN, 0, 0, 0, 14),
             Insn(JMP32 | JEQ | K, 2, 0, 1, 0), POISON, Insn(JMP | JEQ | X, 6, 6, 1, 0), POISON,
             Insn(EXIT_INSN)]
    assert dead_instructions(insns) == {6: 0}  # r2 was clobbered by the call; r6 survives


@pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no /sys/kernel/btf/vmlinux")
def test_core_zoo_guarded_and_unguarded_poisons():
    local = BTF.from_file(fixture_obj("core_zoo"))
    target = Target.running_kernel()
    progs = program_insns(fixture_obj("core_zoo"))
    for sec, records in local.ext.core_relos.items():
        for rec in records:
            _, idx, insns = progs.locate(sec, rec.insn_off)
            patch_insn(insns, idx, rec, calc_relo(local, rec, target))
    verdicts = {}
    for funcs in progs.by_section.values():
        for f in funcs:
            dead = dead_instructions(f.insns)
            for i, insn in enumerate(f.insns):
                if is_poisoned(insn):
                    verdicts.setdefault(f.name, []).append(i in dead)
    # field_exists and enumval_value test existence first; `poisoned` reads blindly
    assert verdicts["field_exists"] == [True]
    assert verdicts["enumval_value"] == [True, True]
    assert verdicts["poisoned"] and not any(verdicts["poisoned"])
