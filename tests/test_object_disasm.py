"""corepy.asm.disasm prints instructions exactly as the kernel's verifier log does."""

from __future__ import annotations

import re

import pytest

from conftest import requires_root
from corepy.asm.disasm import disassemble, format_insn
from corepy.asm.insn import Insn
from corepy.object.spec import ObjectSpec
from test_object_support import build_bpf

# Many instruction kinds: ALU32/64, signed div/mod, sign-extending moves and loads (cpu v4),
# byte swaps, atomics with and without fetch, cmpxchg, xchg, JMP32, helper calls.
INSN_ZOO = r"""
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
SEC("socket") int prog(struct __sk_buff *skb)
{
	__u64 stack[4] = {};
	__s64 a = skb->len, b = skb->protocol;
	__s32 c = skb->mark;
	stack[1] = a;
	__sync_fetch_and_add(&stack[0], 3);
	__u64 old = __sync_fetch_and_or(&stack[2], b);
	__sync_val_compare_and_swap(&stack[3], 1, a);
	__u64 x = __sync_lock_test_and_set(&stack[1], 9);
	a = a / (b | 1) + a % 7 - (__s64)(__s8)c + (__s64)(__s16)b;
	a = __builtin_bswap64(a) ^ __builtin_bswap32(c);
	if ((__s32)a < c) a <<= 3; else a >>= 2;
	if (a & 0x10) a = -a;
	c = (__s32)a * 3;
	c = c >> 2;
	return (a + c + old + x + stack[0] + stack[3] + bpf_get_prandom_u32()) & 1;
}
char LICENSE[] SEC("license") = "GPL";
"""


@requires_root
@pytest.mark.parametrize("cpu", ["v3", "v4"])
def test_matches_verifier_log(cpu):
    from corepy.syscalls.load import BPF_LOG_LEVEL2, prog_load

    obj = ObjectSpec.from_file(str(build_bpf(f"insn_zoo_{cpu}", INSN_ZOO, (f"-mcpu={cpu}",))))
    insns = obj.programs["prog"].insns
    log: list[str] = []
    fd = prog_load(1, insns, log_level=BPF_LOG_LEVEL2, log_out=log, log_size=1 << 22)
    fd.close()
    kernel = {int(m.group(1)): m.group(2) for m in re.finditer(
        r"^(\d+): (\([0-9a-f]{2}\) [^;\n]*?)\s*(?:;.*)?$", "".join(log), re.M)}
    assert len(kernel) > 40
    for i, text in kernel.items():
        assert format_insn(insns, i) == text, i


def test_names_in_linked_listing():
    insns = [
        Insn(0x18, 1, 1, 0, 0), Insn(0, 0, 0, 0, 0),  # map fd
        Insn(0x18, 2, 2, 0, 0), Insn(0, 0, 0, 0, 16),  # map value + 16
        Insn(0x18, 3, 4, 0, 3), Insn(0, 0, 0, 0, 0),  # callback at 4+3+1 = 8
        Insn(0x85, 0, 1, 0, 1),  # call pc+1 -> 8
        Insn(0x95),
        Insn(0xB7, 0, 0, 0, 0), Insn(0x95),
    ]

    class Ref:
        def __init__(self, insn, map):
            self.insn, self.map = insn, map

    text = disassemble(insns, map_refs=[Ref(0, "counts"), Ref(2, ".rodata")], layout=[("main", 0), ("cb", 8)])
    assert text.splitlines() == [
        "main:",
        "   0: (18) r1 = map[counts]",
        "   2: (18) r2 = map[.rodata][0]+16",
        "   4: (18) r3 = subprog[+3] <cb>",
        "   6: (85) call pc+1 <cb>",
        "   7: (95) exit",
        "cb:",
        "   8: (b7) r0 = 0",
        "   9: (95) exit",
    ]
    assert format_insn([Insn(0x85, 0, 0, 0, 1)], 0) == "(85) call bpf_map_lookup_elem#1"
    assert format_insn([Insn(0x85, 0, 0, 0, 2002000005)], 0) == "(85) call unknown#2002000005"
    assert format_insn([Insn(0x85, 0, 2, 0, 7)], 0) == "(85) call kernel-function#7"
