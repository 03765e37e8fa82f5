"""libbpf as the CO-RE oracle: build tests/oracle/core_oracle.c and the corner-case BPF objects,
run libbpf on an object and parse its debug log into one record per CO-RE relocation."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import btf_path

ORACLE_SRC = Path(__file__).parent / "core_oracle.c"
CORNER_CASES = Path(__file__).parent / "bpf"


def build_oracle(tmp_path_factory) -> Path:
    """The libbpf oracle binary, built once per session."""
    gcc = shutil.which("gcc")
    if gcc is None or not Path("/usr/include/bpf/libbpf.h").exists():
        pytest.skip("the libbpf oracle needs gcc and libbpf-dev (scripts/setup-system.sh installs them)")
    out = tmp_path_factory.mktemp("oracle") / "core_oracle"
    subprocess.run([gcc, "-O1", "-Wall", "-o", str(out), str(ORACLE_SRC), "-lbpf"], check=True)
    return out


def build_corner_objects(tmp_path_factory) -> Path:
    """tests/oracle/bpf/*.bpf.c compiled with clang-19 into a session directory."""
    clang = shutil.which("clang-19")
    if clang is None or not Path("/usr/include/bpf/bpf_helpers.h").exists():
        pytest.skip("corner-case objects need clang-19 and libbpf-dev headers (scripts/setup-system.sh)")
    out = tmp_path_factory.mktemp("core_bpf")
    for src in CORNER_CASES.glob("*.bpf.c"):
        subprocess.run([clang, "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86",
                        "-I/usr/include/x86_64-linux-gnu", "-I/usr/include/aarch64-linux-gnu", "-Wall",
                        "-c", str(src), "-o", str(out / f"{src.name[:-2]}.o")], check=True)
    return out


@dataclass
class LibbpfRelo:
    prog: str
    local: str = ""                                   # "<kind> spec"
    candidates: list[tuple[bool, str]] = field(default_factory=list)
    patched: list[tuple[int, str, int, int]] = field(default_factory=list)  # insn, what, old, new
    poisoned: list[int] = field(default_factory=list)
    failed: str | None = None


_RELO = re.compile(r"^libbpf: prog '([^']+)': relo #(\d+): (.*)$")
_CAND = re.compile(r"^(non-matching|matching) candidate #\d+ (.*)$")
_PATCH = re.compile(r"^patched insn #(\d+) \([A-Z0-9/]+\) (imm64|imm|off|mem_sz) (\d+) -> (\d+)$")
_POISON = re.compile(r"^substituting insn #(\d+) w/ invalid insn$")
_FAIL = re.compile(r"^(failed to relocate|failed to patch insn.*|unexpected insn.*|.*too big.*)")


def run_libbpf(oracle: Path, obj: Path, target: str) -> dict[tuple[str, int], LibbpfRelo]:
    """libbpf's account of every CO-RE relocation of ``obj``, keyed by (program, relo #)."""
    cmd = [str(oracle), str(obj)] + ([] if target == "running" else [str(btf_path(target))])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    if "ORACLE open" in out:
        pytest.skip(f"libbpf 1.1 cannot open {obj.name}: {out.strip().splitlines()[-1]}")
    if "CO-RE relocations" not in out:  # libbpf gave up before relocating (e.g. an unresolved ksym)
        last = [ln for ln in out.splitlines() if ln.startswith("libbpf:")][-2:]
        pytest.skip(f"libbpf 1.1 fails {obj.name} before CO-RE relocation here: {' / '.join(last)}")
    relos: dict[tuple[str, int], LibbpfRelo] = {}
    for line in out.splitlines():
        m = _RELO.match(line)
        if not m:
            continue
        prog, idx, text = m.group(1), int(m.group(2)), m.group(3)
        r = relos.setdefault((prog, idx), LibbpfRelo(prog))
        if text.startswith("<") and not r.local:
            r.local = text
        elif (c := _CAND.match(text)):
            r.candidates.append((c.group(1) == "matching", c.group(2)))
        elif (p := _PATCH.match(text)):
            r.patched.append((int(p.group(1)), p.group(2), int(p.group(3)), int(p.group(4))))
        elif (p := _POISON.match(text)):
            r.poisoned.append(int(p.group(1)))
        elif _FAIL.match(text):
            r.failed = text
    return relos
