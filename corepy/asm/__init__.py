"""BPF instructions: decode, encode, inspect and print ``struct bpf_insn``. Pure."""

from .insn import Insn, decode, encode

__all__ = ["Insn", "decode", "encode"]
