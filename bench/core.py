"""Cold CO-RE relocation of fixtures/bootstrap.bpf.o against the running kernel's BTF,
corepy side by side with libbpf in the same run.

- corepy: a fresh interpreter imports corepy, parses the object (ELF, BTF, .BTF.ext), opens
  /sys/kernel/btf/vmlinux, resolves every CO-RE relocation (``relocate_core``) and patches the
  instructions. ``corepy_ms`` is that in-process time, imports included; ``corepy_proc_ms`` is
  the whole process (interpreter start-up too).
- libbpf 1.1 (Debian's libbpf1): tests/oracle/core_oracle.c, built here with gcc, times
  ``bpf_object__open_file`` up to libbpf's last CO-RE relocation message inside
  ``bpf_object__load`` (which on the way also loads vmlinux BTF and creates the maps; program
  loading comes after and is not counted). Needs root and gcc + libbpf-dev.

Each side runs RUNS (default 9) fresh processes (corepy after one untimed run that writes its
byte-code caches, as an install does, and its on-disk cache of the kernel BTF's type offsets,
as a boot's first corepy process does: ``COREPY_BTF_CACHE=0`` measures without that cache);
medians are reported. ``cached_ms``: the same with ``relocate_running_kernel``, what
``Object.load()`` uses, which answers from the on-disk CO-RE results cache after the first run.
Last line: figures.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OBJ = ROOT / "fixtures" / "bootstrap.bpf.o"
ORACLE_SRC = ROOT / "tests" / "oracle" / "core_oracle.c"
RUNS = int(os.environ.get("BENCH_RUNS", "9"))

COREPY = f"""
import time
t0 = time.perf_counter()
from corepy.btf.core import Target, patch_insn
from corepy.object import ObjectSpec, relocate_core
t1 = time.perf_counter()
obj = ObjectSpec.from_file({str(OBJ)!r})
t2 = time.perf_counter()
target = Target.running_kernel()
t3 = time.perf_counter()
records = relocate_core(obj, target)
functions = {{(f.section, f.name): [i.copy() for i in f.insns] for f in obj.functions}}
for rec in records:
    patch_insn(functions[(rec.section, rec.program)], rec.insn, rec.relo, rec.result)
t4 = time.perf_counter()
print(len(records), *(f"{{1000 * d:.3f}}" for d in (t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3)))
"""
PHASES = ("imports", "object parse", "vmlinux BTF open", "relocate+patch (incl. vmlinux name index)")

COREPY_CACHED = f"""
import time
t0 = time.perf_counter()
from corepy.btf.core import patch_insn
from corepy.object import ObjectSpec
from corepy.object.core_cache import relocate_running_kernel
obj = ObjectSpec.from_file({str(OBJ)!r})
records = relocate_running_kernel(obj)
functions = {{(f.section, f.name): [i.copy() for i in f.insns] for f in obj.functions}}
for rec in records:
    patch_insn(functions[(rec.section, rec.program)], rec.insn, rec.relo, rec.result)
t1 = time.perf_counter()
print(len(records), f"{{1000 * (t1 - t0):.3f}}")
"""


# Measure what users get: byte-code caches written (pip does that on install), so drop a
# PYTHONDONTWRITEBYTECODE inherited from the environment; main() makes one untimed run first.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def corepy_run(script: str = COREPY) -> tuple[float, float, int, list[float]]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env=ENV).stdout
    proc_ms = (time.perf_counter() - start) * 1000
    count, total, *phases = out.split()
    return float(total), proc_ms, int(count), [float(p) for p in phases]


def build_oracle(tmp: str) -> Path | None:
    gcc = shutil.which("gcc")
    if gcc is None or not Path("/usr/include/bpf/libbpf.h").exists():
        return None
    out = Path(tmp) / "core_oracle"
    subprocess.run([gcc, "-O2", "-o", str(out), str(ORACLE_SRC), "-lbpf"], check=True)
    return out


def libbpf_run(oracle: Path) -> float | None:
    out = subprocess.run([str(oracle), "-q", str(OBJ)], capture_output=True, text=True).stdout
    m = re.search(r"ORACLE load (-?\d+) relocated_ns (\d+)", out)
    if not m or int(m.group(2)) == 0:
        return None
    return int(m.group(2)) / 1e6


def main() -> int:
    corepy_run()  # warm-up: fills the byte-code caches
    corepy_runs = [corepy_run() for _ in range(RUNS)]
    corepy_ms = statistics.median(r[0] for r in corepy_runs)
    proc_ms = statistics.median(r[1] for r in corepy_runs)
    relocations = corepy_runs[0][2]
    phases = [statistics.median(r[3][i] for r in corepy_runs) for i in range(len(PHASES))]
    corepy_run(COREPY_CACHED)  # warm-up: stores the results
    cached_ms = statistics.median(corepy_run(COREPY_CACHED)[0] for _ in range(RUNS))
    libbpf_ms = None
    with tempfile.TemporaryDirectory() as tmp:
        oracle = build_oracle(tmp)
        if oracle is None:
            print("libbpf: skipped (needs gcc and libbpf-dev)")
        elif os.geteuid() != 0:
            print("libbpf: skipped (bpf_object__load needs root)")
        else:
            runs = [libbpf_run(oracle) for _ in range(RUNS)]
            if None in runs:
                print("libbpf: did not reach CO-RE relocation")
            else:
                libbpf_ms = statistics.median(runs)
    print(f"{OBJ.name}: {relocations} CO-RE relocations against /sys/kernel/btf/vmlinux, median of {RUNS}")
    print(f"corepy: {corepy_ms:.1f} ms in process (imports, ELF+BTF parse, vmlinux BTF, relocate, patch); "
          f"{proc_ms:.1f} ms whole process")
    print("corepy phases: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in zip(PHASES, phases)))
    print(f"corepy with its CO-RE results cache (what Object.load() does after the first run): {cached_ms:.1f} ms "
          "in process, imports included")
    if libbpf_ms is not None:
        print(f"libbpf: {libbpf_ms:.1f} ms open -> last CO-RE relocation")
    ratio = f"{corepy_ms / libbpf_ms:.2f}" if libbpf_ms else "nan"
    cached_ratio = f"{cached_ms / libbpf_ms:.2f}" if libbpf_ms else "nan"
    libbpf_text = f"{libbpf_ms:.1f}" if libbpf_ms is not None else "nan"
    print(f"corepy_ms={corepy_ms:.1f} corepy_proc_ms={proc_ms:.1f} libbpf_ms={libbpf_text} ratio={ratio} "
          f"cached_ms={cached_ms:.1f} cached_ratio={cached_ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
