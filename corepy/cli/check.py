"""``corepy check OBJ --btf K1 [K2 ...] [--all] [--json]``: an offline compatibility matrix
of an object against kernel BTFs. No kernel and no root are needed.

For each target BTF every CO-RE relocation is resolved and applied as the loader would;
each relocation then resolves (a value), answers 0 (an existence check saying "absent"),
poisons its instruction, or fails (libbpf would refuse to load). A poisoned instruction is
*guarded* when it is dead code once the constants CO-RE wrote decide the branches before it
-- the program tested ``bpf_core_field_exists`` & co. and branched around it, so the verifier
drops it (see :mod:`corepy.btf.core.guards` for the exact heuristic and its limits). Exit
status 1 if any target has an unguarded poisoned instruction or a failing relocation.
Programs with autoload off ('?' sections) are left out, as the loader leaves them out,
unless ``--all`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..object import ObjectSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("object", metavar="OBJ", help="a clang-built BPF object (.bpf.o)")
    parser.add_argument("--btf", metavar="FILE", nargs="+", required=True,
                        help="target kernel BTFs: raw, ELF with .BTF, or .xz of either")
    parser.add_argument("--all", action="store_true", help="include programs with autoload off ('?' sections)")
    parser.add_argument("--json", action="store_true", help="print the matrix as JSON")


@dataclass
class Cell:
    """One relocation against one kernel."""

    state: str
    """'ok', 'absent' (an existence check answered 0), 'guarded', 'POISON' or 'ERROR'."""
    value: int | None = None
    detail: str | None = None


def check_target(obj: ObjectSpec, btf_path: str) -> tuple[list, dict[tuple[str, str, int], Cell], str | None]:
    """The records and cells keyed by (section, program, relo #) for one kernel, or the error
    that stopped relocation (libbpf would not load the object at all)."""
    from ..btf.core import Target, is_poisoned, patch_insn
    from ..btf.core.guards import dead_instructions
    from ..errors import CorepyError
    from ..object import relocate_core

    try:
        records = relocate_core(obj, Target.from_file(btf_path))
    except CorepyError as e:
        return [], {}, str(e)
    by_function: dict[tuple[str, str], list] = {}
    for rec in records:
        by_function.setdefault((rec.section, rec.program), []).append(rec)
    cells: dict[tuple[str, str, int], Cell] = {}
    for f in obj.functions:
        recs = by_function.get((f.section, f.name))
        if not recs:
            continue
        insns = [i.copy() for i in f.insns]
        failed: dict[int, str] = {}
        for rec in recs:
            try:
                patch_insn(insns, rec.insn, rec.relo, rec.result)
            except CorepyError as e:
                failed[rec.index] = str(e)
        dead = dead_instructions(insns)
        setter = {rec.insn: rec for rec in recs}
        for rec in recs:
            r = rec.result
            key = (rec.section, rec.program, rec.index)
            if rec.index in failed:
                cells[key] = Cell("ERROR", detail=failed[rec.index])
            elif is_poisoned(insns[rec.insn]):
                if rec.insn in dead:
                    guard = setter.get(dead[rec.insn])
                    by = (f"insn #{guard.insn} {guard.result.kind} {guard.result.local_spec}"
                          if guard is not None else f"insn #{dead[rec.insn]}")
                    cells[key] = Cell("guarded", detail=f"dead code, guarded by {by}; {r.reason}")
                else:
                    cells[key] = Cell("POISON", detail=r.reason)
            elif r.kind.is_existence and r.new == 0:
                cells[key] = Cell("absent", 0, r.reason)
            else:
                cells[key] = Cell("ok", r.new)
    return records, cells, None


def run(args: argparse.Namespace) -> int:
    from ..object import ObjectSpec

    obj = ObjectSpec.from_file(args.object)
    if args.all:
        for prog in obj.programs.values():
            prog.autoload = True
    kernels = [_short(p) for p in args.btf]
    checked = {name: check_target(obj, path) for name, path in zip(kernels, args.btf)}
    results = {k: (cells, err) for k, (_, cells, err) in checked.items()}
    # rows: every relocation any kernel got to (the local side is the same for all)
    position = {(f.section, f.name): i for i, f in enumerate(obj.functions)}
    rows = {}
    for records, _, _ in checked.values():
        for rec in records:
            rows.setdefault((rec.section, rec.program, rec.index), rec)
    rows = dict(sorted(rows.items(), key=lambda kv: (position[kv[0][:2]], kv[0][2])))
    failing = [k for k, (cells, err) in results.items()
               if err or any(c.state in ("POISON", "ERROR") for c in cells.values())]
    if args.json:
        json.dump({
            "object": obj.path,
            "kernels": {k: {"error": err, "ok": k not in failing} for k, (_, err) in results.items()},
            "relocations": [{
                "program": rec.program, "section": rec.section, "insn": rec.insn, "relo": rec.index,
                "kind": str(rec.result.kind), "local": rec.result.local_spec,
                "targets": {k: _cell_json(results[k][0].get(key)) for k in kernels},
            } for key, rec in rows.items()],
        }, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 1 if failing else 0
    _print_matrix(obj, rows, kernels, results)
    return 1 if failing else 0


def _short(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (".xz", ".btf"):
        name = name.removesuffix(suffix)
    return name


def _cell_json(cell: Cell | None) -> dict[str, Any] | None:
    return None if cell is None else {"state": cell.state, "value": cell.value, "detail": cell.detail}


def _cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "-"
    return str(cell.value) if cell.state == "ok" else cell.state


def _print_matrix(obj, rows, kernels, results) -> None:
    out = sys.stdout
    out.write(f"{obj.path}: {len(rows)} CO-RE relocations x {len(kernels)} kernels\n\n")
    width = max([len(k) for k in kernels] + [8])
    head = f"{'program':<20} {'insn':>5} {'kind':<15} " + " ".join(f"{k:>{width}}" for k in kernels)
    out.write(head + "  local\n")
    for key, rec in rows.items():
        cells = " ".join(f"{_cell_text(results[k][0].get(key)):>{width}}" for k in kernels)
        out.write(f"{rec.program[:20]:<20} {rec.insn:>5} {str(rec.result.kind):<15} {cells}  "
                  f"{rec.result.local_spec}\n")
    out.write("\n")
    for k in kernels:
        cells, err = results[k]
        if err:
            out.write(f"{k}: FAILS: {err}\n")
            continue
        count = {s: sum(c.state == s for c in cells.values()) for s in ("ok", "absent", "guarded", "POISON", "ERROR")}
        verdict = "FAILS" if count["POISON"] or count["ERROR"] else "ok"
        out.write(f"{k}: {verdict}: {count['ok']} resolved, {count['absent']} absent (existence checks), "
                  f"{count['guarded']} poisoned but guarded, {count['POISON']} poisoned unguarded, "
                  f"{count['ERROR']} errors\n")
        for key, c in cells.items():
            if c.state in ("POISON", "ERROR"):
                section, program, index = key
                out.write(f"  prog '{program}' insn #{rows[key].insn} relo #{index}: {c.state}: {c.detail}\n")
