"""``struct bpf_insn`` (8 bytes: code, dst:4|src:4, off:s16, imm:s32).

A program is a ``list[Insn]`` with one entry per 8-byte slot, exactly as the
kernel and libbpf count instructions: a 16-byte ``ld_imm64`` occupies two
entries (the second has ``code == 0`` and carries the high 32 bits in ``imm``).
"""

from __future__ import annotations

import struct

from .._records import record

# Instruction classes (code & 0x07)
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
# Size (code & 0x18)
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
# Mode (code & 0xe0)
IMM, ABS, IND, MEM, MEMSX, ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, 0xC0
# Source (code & 0x08)
K, X = 0x00, 0x08
# ALU/JMP ops (code & 0xf0)
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH, END = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, CALL, EXIT, JLT, JLE, JSLT, JSLE = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)

LD_IMM64 = LD | DW | IMM  # 0x18
CALL_INSN = JMP | CALL  # 0x85
EXIT_INSN = JMP | EXIT  # 0x95

# src_reg values of ld_imm64 and call
PSEUDO_MAP_FD = 1
PSEUDO_MAP_VALUE = 2
PSEUDO_BTF_ID = 3
PSEUDO_FUNC = 4
PSEUDO_MAP_IDX = 5
PSEUDO_MAP_IDX_VALUE = 6
PSEUDO_CALL = 1
PSEUDO_KFUNC_CALL = 2

SIZE_BYTES = {W: 4, H: 2, B: 1, DW: 8}

_INSN = struct.Struct("<BBhi")


@record(slots=True)
class Insn:
    """One 8-byte instruction slot (an ld_imm64 takes two: the second carries the upper imm)."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    @property
    def cls(self) -> int:
        return self.code & 0x07

    @property
    def is_ld_imm64(self) -> bool:
        return self.code == LD_IMM64

    @property
    def is_call(self) -> bool:
        return self.code == CALL_INSN

    @property
    def is_pseudo_call(self) -> bool:
        """bpf-to-bpf call (``call pc+imm``)."""
        return self.code == CALL_INSN and self.src == PSEUDO_CALL

    @property
    def is_exit(self) -> bool:
        return self.code == EXIT_INSN

    @property
    def is_mem(self) -> bool:
        """LDX/ST/STX memory access (incl. sign-extending loads)."""
        return self.cls in (LDX, ST, STX) and (self.code & 0xE0) in (MEM, MEMSX)

    @property
    def mem_size(self) -> int:
        return SIZE_BYTES[self.code & 0x18]

    def copy(self) -> Insn:
        return Insn(self.code, self.dst, self.src, self.off, self.imm)


def decode(data: bytes | memoryview, byteorder: str = "little") -> list[Insn]:
    """Split raw instruction bytes into 8-byte :class:`Insn` slots."""
    if len(data) % 8:
        from ..errors import ObjectError

        raise ObjectError(f"instruction data of {len(data)} bytes is not a multiple of 8")
    out = []
    if byteorder == "little":
        for code, regs, off, imm in _INSN.iter_unpack(data):
            out.append(Insn(code, regs & 0xF, regs >> 4, off, imm))
    else:
        for code, regs, off, imm in struct.iter_unpack(">BBhi", data):
            out.append(Insn(code, regs >> 4, regs & 0xF, off, imm))
    return out


def encode(insns: list[Insn]) -> bytes:
    """The kernel's little-endian wire form of ``insns``."""
    buf = bytearray(8 * len(insns))
    pack = _INSN.pack_into
    for i, n in enumerate(insns):
        pack(buf, 8 * i, n.code, (n.src << 4) | n.dst, n.off, n.imm)
    return bytes(buf)
