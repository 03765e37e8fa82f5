"""``corepy explain OBJ [--btf FILE] [--json] [-v]``: every CO-RE relocation of an object
resolved against a kernel's BTF (the running kernel's by default): what the program was
compiled against, what the target has, the value before and after, and why a relocation
poisons its instruction. Every program is included, those with autoload off ('?' sections)
too. ``--json`` prints one object per relocation."""

from __future__ import annotations

import argparse
import json
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..btf.core import Target
    from ..object import CoreRecord, ObjectSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("object", metavar="OBJ", help="a clang-built BPF object (.bpf.o)")
    parser.add_argument("--btf", metavar="FILE",
                        help="target kernel BTF: raw, ELF with .BTF, or .xz of either "
                             "(default: the running kernel's, with its modules)")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per relocation")
    parser.add_argument("-v", "--verbose", action="store_true", help="also list every candidate type considered")


def target_for(path: str | None) -> Target:
    from ..btf.core import Target

    return Target.from_file(path) if path else Target.running_kernel()


def relocate_all(obj: ObjectSpec, target: Target) -> list[CoreRecord]:
    """The object's CO-RE records against ``target``, every program included."""
    from ..object import relocate_core

    for prog in obj.programs.values():
        prog.autoload = True
    return relocate_core(obj, target)


def insns_of(obj: ObjectSpec, rec: CoreRecord) -> list:
    """The (unpatched) instructions of the function a record relocates."""
    for f in obj.functions:
        if f.name == rec.program and f.section == rec.section:
            return f.insns
    raise LookupError(f"no function {rec.program!r} in section {rec.section!r}")


def compiled_value(insns: list, idx: int) -> int | None:
    """The value the compiler put where CO-RE patches (as libbpf's log prints it, unsigned):
    an ALU immediate, a load/store offset, or the 64-bit immediate of ld_imm64."""
    from ..asm.insn import ALU, ALU64, LD, LDX, ST, STX

    insn = insns[idx]
    if insn.cls in (ALU, ALU64):
        return insn.imm & 0xFFFFFFFFFFFFFFFF
    if insn.cls in (LDX, ST, STX):
        return insn.off & 0xFFFFFFFFFFFFFFFF
    if insn.cls == LD and insn.is_ld_imm64 and idx + 1 < len(insns):
        return (insn.imm & 0xFFFFFFFF) | ((insns[idx + 1].imm & 0xFFFFFFFF) << 32)
    return None


def as_dict(obj: ObjectSpec, rec: CoreRecord) -> dict[str, Any]:
    """One relocation as data. ``old`` is the value in the instruction as compiled (libbpf's
    log prints that one too; it differs from the value computed from the local BTF only where
    libbpf does not validate it: bitfields, target type ids); ``new`` what CO-RE writes."""
    from ..btf.core import poisons

    from ..asm.insn import LDX, ST, STX

    r = rec.result
    insns = insns_of(obj, rec)
    old = compiled_value(insns, rec.insn)
    poisoned = poisons(insns[rec.insn], r)
    resized = not poisoned and r.orig_sz != r.new_sz and insns[rec.insn].cls in (LDX, ST, STX)
    return {
        "program": rec.program, "section": rec.section, "insn": rec.insn, "relo": rec.index,
        "kind": str(r.kind), "local": r.local_spec, "target": r.target_spec,
        "old": r.old if old is None else old, "new": r.new,
        "poisoned": poisoned, "mem_sz": [r.orig_sz, r.new_sz] if resized else None, "reason": r.reason,
        "candidates": [{"btf": c.btf_name, "type_id": c.type_id, "spec": c.spec,
                        "matched": c.matched, "reason": c.reason} for c in r.candidates],
    }


def run(args: argparse.Namespace) -> int:
    from ..object import ObjectSpec

    obj = ObjectSpec.from_file(args.object)
    target = target_for(args.btf)
    rows = [as_dict(obj, rec) for rec in relocate_all(obj, target)]
    out = sys.stdout
    if args.json:
        json.dump(rows, out, indent=1)
        out.write("\n")
        return 0
    poisoned = sum(r["poisoned"] for r in rows)
    out.write(f"{obj.path} against {target.vmlinux.source}: {len(rows)} CO-RE relocations"
              f"{f', {poisoned} poisoned' if poisoned else ''}\n")
    current = None
    for r in rows:
        if (r["program"], r["section"]) != current:
            current = (r["program"], r["section"])
            out.write(f"\nprog '{r['program']}' ({r['section']})\n")
        value = "POISONED" if r["poisoned"] else f"{r['old']} -> {r['new']}"
        if r["mem_sz"]:
            value += f" (access size {r['mem_sz'][0]} -> {r['mem_sz'][1]} bytes)"
        out.write(f"  insn #{r['insn']:<5} relo #{r['relo']:<4} {r['kind']:<15} {value}\n")
        out.write(f"      local   {r['local']}\n")
        out.write(f"      target  {r['target'] or '-'}\n")
        if r["reason"]:
            out.write(f"      why     {r['reason']}\n")
        if args.verbose:
            for c in r["candidates"]:
                verdict = "matches" if c["matched"] else f"rejected: {c['reason']}"
                out.write(f"      cand    {c['spec']} in [{c['btf']}]: {verdict}\n")
    return 0
