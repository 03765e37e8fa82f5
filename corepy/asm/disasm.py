"""Instruction text in the kernel's notation (kernel/bpf/disasm.c, as the verifier log and
``bpftool prog dump xlated`` print it), for error messages and ``explain``.

Names are optional context: map names per ``ld_imm64`` (from a linked program's map
references), function starts (to label subprograms and name call targets) and a BTF to
name kfuncs and BTF ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from .insn import (
    ABS, ALU, ALU64, ATOMIC, CALL, DW, END, EXIT, IND, JA, JMP, JMP32, LD, LDX, MEM, MEMSX, MOD, DIV, MOV, NEG,
    PSEUDO_BTF_ID, PSEUDO_CALL, PSEUDO_FUNC, PSEUDO_KFUNC_CALL, PSEUDO_MAP_FD, PSEUDO_MAP_IDX,
    PSEUDO_MAP_IDX_VALUE, PSEUDO_MAP_VALUE, ST, STX, B, H, W, X, Insn,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["format_insn", "disassemble"]

_ALU = {0x00: "+=", 0x10: "-=", 0x20: "*=", 0x30: "/=", 0x40: "|=", 0x50: "&=", 0x60: "<<=", 0x70: ">>=",
        0x80: "neg", 0x90: "%=", 0xA0: "^=", 0xB0: "=", 0xC0: "s>>=", 0xD0: "endian"}
_ALU_SIGNED = {DIV: "s/=", MOD: "s%="}
_MOVSX = {8: "(s8)", 16: "(s16)", 32: "(s32)"}
_ATOMIC_ALU = {0x00: "add", 0x50: "and", 0x40: "or", 0xA0: "xor"}
_LDST = {W: "u32", H: "u16", B: "u8", DW: "u64"}
_LDSX = {W: "s32", H: "s16", B: "s8"}
_JMP = {0x00: "jmp", 0x10: "==", 0x20: ">", 0xA0: "<", 0x30: ">=", 0xB0: "<=", 0x40: "&", 0x50: "!=",
        0x60: "s>", 0xC0: "s<", 0x70: "s>=", 0xD0: "s<=", 0x80: "call", 0x90: "exit"}
_CLASS = ("ld", "ldx", "st", "stx", "alu", "jmp", "jmp32", "alu64")
FETCH, XCHG, CMPXCHG, JCOND = 0x01, 0xE0 | 0x01, 0xF0 | 0x01, 0xE0


def _helper_names() -> dict[int, str]:
    try:
        from ..syscalls.uapi import Helper
    except ImportError:  # pragma: no cover - uapi is part of the package
        return {}
    return {int(h): f"bpf_{h.name}" for h in Helper if h.value}


_HELPERS: dict[int, str] | None = None


def _helper(imm: int) -> str | None:
    global _HELPERS
    if _HELPERS is None:
        _HELPERS = _helper_names()
    return _HELPERS.get(imm)


class _Context:
    def __init__(self, map_names: Mapping[int, str] | None, functions: Mapping[int, str] | None, btf: Any) -> None:
        self.map_names = map_names or {}
        self.functions = functions or {}
        self.btf = btf

    def btf_name(self, type_id: int) -> str | None:
        if self.btf is None:
            return None
        try:
            return self.btf[type_id].name or None
        except Exception:  # noqa: BLE001 - an id from another BTF: just no name
            return None


def format_insn(insns: Sequence[Insn], i: int, *, map_names: Mapping[int, str] | None = None,
                functions: Mapping[int, str] | None = None, btf: Any = None) -> str:
    """The text of ``insns[i]`` (an ``ld_imm64`` reads ``insns[i+1]`` too), without the index."""
    return _format(insns, i, _Context(map_names, functions, btf))


def disassemble(insns: Sequence[Insn], *, map_refs: Iterable[Any] = (), layout: Iterable[tuple[str, int]] = (),
                btf: Any = None, start: int = 0, end: int | None = None) -> str:
    """Multi-line listing ``   0: (b7) r1 = 0``; ``map_refs`` (objects with ``insn`` and ``map``)
    name maps, ``layout`` ((name, first index) pairs) labels functions and call targets."""
    map_names = {r.insn: r.map for r in map_refs}
    functions = {idx: name for name, idx in layout}
    ctx = _Context(map_names, functions, btf)
    lines = []
    i = start
    stop = len(insns) if end is None else min(end, len(insns))
    while i < stop:
        if i in functions:
            lines.append(f"{functions[i]}:")
        lines.append(f"{i:4d}: {_format(insns, i, ctx)}")
        i += 2 if insns[i].is_ld_imm64 else 1
    return "\n".join(lines)


def _format(insns: Sequence[Insn], i: int, ctx: _Context) -> str:
    n = insns[i]
    code, cls, op = n.code, n.code & 0x07, n.code & 0xF0
    head = f"({code:02x})"
    if cls in (ALU, ALU64):
        r = "w" if cls == ALU else "r"
        if op == END:
            if cls == ALU64:
                return f"{head} r{n.dst} = bswap{n.imm} r{n.dst}"
            return f"{head} r{n.dst} = {'be' if code & X else 'le'}{n.imm} r{n.dst}"
        if op == NEG:
            return f"{head} {r}{n.dst} = -{r}{n.dst}"
        sym = _ALU_SIGNED[op] if op in _ALU_SIGNED and n.off == 1 else _ALU.get(op, "?")
        if code & X:
            movsx = _MOVSX.get(n.off, "") if op == MOV and n.off else ""
            return f"{head} {r}{n.dst} {sym} {movsx}{r}{n.src}"
        return f"{head} {r}{n.dst} {sym} {n.imm}"
    size = code & 0x18
    mode = code & 0xE0
    if cls == STX:
        t = _LDST[size]
        if mode == MEM:
            return f"{head} *({t} *)(r{n.dst} {n.off:+d}) = r{n.src}"
        if mode == ATOMIC:
            bits = "64" if size == DW else ""
            if n.imm in _ATOMIC_ALU:
                return f"{head} lock *({t} *)(r{n.dst} {n.off:+d}) {_ALU[n.imm]} r{n.src}"
            if n.imm & ~FETCH in _ATOMIC_ALU and n.imm & FETCH:
                return (f"{head} r{n.src} = atomic{bits}_fetch_{_ATOMIC_ALU[n.imm & ~FETCH]}"
                        f"(({t} *)(r{n.dst} {n.off:+d}), r{n.src})")
            if n.imm == CMPXCHG:
                return f"{head} r0 = atomic{bits}_cmpxchg(({t} *)(r{n.dst} {n.off:+d}), r0, r{n.src})"
            if n.imm == XCHG:
                return f"{head} r{n.src} = atomic{bits}_xchg(({t} *)(r{n.dst} {n.off:+d}), r{n.src})"
        return f"BUG_{code:02x}"
    if cls == ST:
        if mode == MEM:
            return f"{head} *({_LDST[size]} *)(r{n.dst} {n.off:+d}) = {n.imm}"
        if mode == 0xC0:
            return f"{head} nospec"
        return f"BUG_st_{code:02x}"
    if cls == LDX:
        if mode not in (MEM, MEMSX):
            return f"BUG_ldx_{code:02x}"
        t = _LDST[size] if mode == MEM else _LDSX.get(size, "?")
        return f"{head} r{n.dst} = *({t} *)(r{n.src} {n.off:+d})"
    if cls == LD:
        if mode == ABS:
            return f"{head} r0 = *({_LDST[size]} *)skb[{n.imm}]"
        if mode == IND:
            return f"{head} r0 = *({_LDST[size]} *)skb[r{n.src} + {n.imm}]"
        if mode == 0 and size == DW:
            hi = insns[i + 1].imm if i + 1 < len(insns) else 0
            return f"{head} r{n.dst} = {_imm64(n, hi, i, ctx)}"
        return f"BUG_ld_{code:02x}"
    if cls in (JMP, JMP32):
        r = "w" if cls == JMP32 else "r"
        if op == CALL:
            if n.src == PSEUDO_CALL:
                target = ctx.functions.get(i + n.imm + 1)
                return f"{head} call pc{n.imm:+d}" + (f" <{target}>" if target else "")
            if n.src == PSEUDO_KFUNC_CALL:
                return f"{head} call {ctx.btf_name(n.imm) or 'kernel-function'}#{n.imm}"
            return f"{head} call {(_helper(n.imm) if n.src == 0 else None) or 'unknown'}#{n.imm}"
        if code == JMP | JA:
            return f"{head} goto pc{n.off:+d}"
        if code == JMP | JCOND and n.src == 0:
            return f"{head} may_goto pc{n.off:+d}"
        if code == JMP32 | JA:
            return f"{head} gotol pc{n.imm:+d}"
        if code == JMP | EXIT:
            return f"{head} exit"
        sym = _JMP.get(op, "?")
        if code & X:
            return f"{head} if {r}{n.dst} {sym} {r}{n.src} goto pc{n.off:+d}"
        return f"{head} if {r}{n.dst} {sym} {n.imm & 0xFFFFFFFF:#x} goto pc{n.off:+d}"
    return f"{head} {_CLASS[cls]}"


def _imm64(n: Insn, hi: int, i: int, ctx: _Context) -> str:
    lo = n.imm & 0xFFFFFFFF
    full = ((hi & 0xFFFFFFFF) << 32) | lo
    name = ctx.map_names.get(i)
    if n.src == PSEUDO_MAP_FD:
        return f"map[{name}]" if name else f"map[fd:{n.imm}]"
    if n.src == PSEUDO_MAP_VALUE:
        return f"map[{name}][0]+{hi & 0xFFFFFFFF}" if name else f"map[fd:{n.imm}][0]+{hi & 0xFFFFFFFF}"
    if n.src == PSEUDO_MAP_IDX:
        return f"map[idx:{n.imm}]"
    if n.src == PSEUDO_MAP_IDX_VALUE:
        return f"map[idx:{n.imm}]+{hi & 0xFFFFFFFF}"
    if n.src == PSEUDO_FUNC:
        target = ctx.functions.get(i + n.imm + 1)
        return f"subprog[{n.imm:+d}]" + (f" <{target}>" if target else "")
    if n.src == PSEUDO_BTF_ID:
        label = ctx.btf_name(n.imm)
        return f"btf_id:{n.imm}" + (f" <{label}>" if label else "")
    return f"{full:#x}"
