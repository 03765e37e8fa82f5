"""Whole-process time to open, load and attach fixtures/bootstrap.bpf.o, side by side:

- corepy (``corepy.open(path).load(); obj.attach()``) in a fresh interpreter, as installed:
  the object's CO-RE results against this kernel come from corepy's on-disk cache (filled by the
  untimed warm-up run, as by the boot's first load of the object), so the kernel BTF is not even
  opened; and again with ``COREPY_BTF_CACHE=0`` (``nocache_``: no cache at all, every type of the
  kernel BTF scanned and every relocation computed, as in a boot's first process),
- a Python script doing the same through Debian's libbpf1 via ctypes,
- ``bpftool prog loadall`` (loads and pins; bpftool 7.1 cannot auto-attach) into a temp bpffs dir,
- bcc compiling equivalent C (only where python3-bpfcc and kernel headers are installed).

Each is a fresh process, run several times; the median counts (the two Python scripts' runs
alternate, so a slow stretch of the machine weighs on both alike). Both Python scripts also
report their in-process phases (imports+open, load, attach, close); close is mostly the
kernel's RCU waits as tracepoint perf events are torn down, which both sides pay. Also prints
which imports cost corepy the most (``python -X importtime``). Needs root. The last line holds
the figures.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OBJ = ROOT / "fixtures" / "bootstrap.bpf.o"
PY = sys.executable
RUNS = int(os.environ.get("BENCH_RUNS", "7"))

# Both scripts print, as their last line, the in-process ms of each phase both sides do:
# imports+open, load, attach, close (links destroyed, then the object closed).
COREPY = f"""
import time
t0 = time.perf_counter()
import corepy
with corepy.open({str(OBJ)!r}) as obj:
    t1 = time.perf_counter()
    obj.load()
    t2 = time.perf_counter()
    obj.attach()
    t3 = time.perf_counter()
t4 = time.perf_counter()
print("PHASES", *(f"{{1000 * d:.2f}}" for d in (t1 - t0, t2 - t1, t3 - t2, t4 - t3)))
"""

LIBBPF_CTYPES = f"""
import time
t0 = time.perf_counter()
import ctypes
lib = ctypes.CDLL("libbpf.so.1")
lib.bpf_object__open_file.restype = ctypes.c_void_p
lib.bpf_object__open_file.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
lib.bpf_object__load.argtypes = [ctypes.c_void_p]
lib.bpf_object__next_program.restype = ctypes.c_void_p
lib.bpf_object__next_program.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
lib.bpf_program__attach.restype = ctypes.c_void_p
lib.bpf_program__attach.argtypes = [ctypes.c_void_p]
lib.bpf_link__destroy.argtypes = [ctypes.c_void_p]
lib.bpf_object__close.argtypes = [ctypes.c_void_p]
obj = lib.bpf_object__open_file({str(OBJ).encode()!r}, None)
assert obj, "open failed"
t1 = time.perf_counter()
assert lib.bpf_object__load(obj) == 0, "load failed"
t2 = time.perf_counter()
links, prog = [], None
while True:
    prog = lib.bpf_object__next_program(obj, prog)
    if not prog:
        break
    link = lib.bpf_program__attach(prog)
    assert link and ctypes.c_long(link).value > 0, "attach failed"
    links.append(link)
t3 = time.perf_counter()
for link in links:
    lib.bpf_link__destroy(link)
lib.bpf_object__close(obj)
t4 = time.perf_counter()
print("PHASES", *(f"{{1000 * d:.2f}}" for d in (t1 - t0, t2 - t1, t3 - t2, t4 - t3)))
"""
PHASES = ("imports+open", "load", "attach", "close")

BCC = r"""
from bcc import BPF
b = BPF(text='''
#include <linux/sched.h>
BPF_HASH(exec_start, u32, u64, 8192);
BPF_RINGBUF_OUTPUT(rb, 64);
struct event { int pid; int ppid; unsigned exit_code; unsigned long long duration_ns; char comm[16]; };
TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 pid = bpf_get_current_pid_tgid() >> 32; u64 ts = bpf_ktime_get_ns();
    exec_start.update(&pid, &ts); return 0;
}
TRACEPOINT_PROBE(sched, sched_process_exit) {
    u32 pid = bpf_get_current_pid_tgid() >> 32; u64 *start = exec_start.lookup(&pid);
    struct event *e = rb.ringbuf_reserve(sizeof(struct event));
    if (!e) return 0;
    e->pid = pid; e->duration_ns = start ? bpf_ktime_get_ns() - *start : 0;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    rb.ringbuf_submit(e, 0); exec_start.delete(&pid); return 0;
}
''')
"""


# Measure what users get: byte-code caches written (pip does that on install), so drop a
# PYTHONDONTWRITEBYTECODE inherited from the environment; one untimed warm-up run fills them.
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "COREPY_BTF_CACHE")}
COLD_ENV = {**ENV, "COREPY_BTF_CACHE": "0"}
"""corepy without its on-disk cache of the kernel BTF's type offsets (scans all types)."""


def timed(cmd: list[str], runs: int = RUNS, phases: list[list[float]] | None = None) -> float:
    """Median wall time in ms of ``cmd`` as a fresh process, after one untimed warm-up run
    (fails loudly if it fails). ``phases`` collects each run's ``PHASES`` line, if it prints one."""
    return timed_together([cmd], runs, [phases])[0]


def timed_together(cmds: list[list[str]], runs: int = RUNS,
                   phases: list[list[list[float]] | None] | None = None,
                   envs: list[dict[str, str] | None] | None = None) -> list[float]:
    """:func:`timed` for several commands whose runs alternate (A B A B ...), so that a slow
    stretch of the machine weighs on each side alike rather than on whichever ran then.
    ``envs``: each command's environment (default: :data:`ENV`)."""
    phases = phases or [None] * len(cmds)
    envs = [e or ENV for e in envs] if envs else [ENV] * len(cmds)
    for cmd, env in zip(cmds, envs):
        subprocess.run(cmd, capture_output=True, env=env)
    times: list[list[float]] = [[] for _ in cmds]
    for _ in range(runs):
        for cmd, env, out, collected in zip(cmds, envs, times, phases):
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            out.append((time.perf_counter() - t0) * 1000)
            if done.returncode:
                raise SystemExit(f"{' '.join(cmd[:3])}... failed ({done.returncode}):\n{done.stderr[-2000:]}")
            if collected is not None:
                line = next((ln for ln in done.stdout.splitlines() if ln.startswith("PHASES ")), None)
                if line is not None:
                    collected.append([float(v) for v in line.split()[1:]])
    return [statistics.median(t) for t in times]


def phase_text(phases: list[list[float]]) -> str:
    return ", ".join(f"{name} {statistics.median(r[i] for r in phases):.1f}" for i, name in enumerate(PHASES))


def bpftool_loadall() -> float:
    if not os.path.ismount("/sys/fs/bpf"):
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)
    times = []
    for _ in range(RUNS):
        pin_dir = f"/sys/fs/bpf/corepy-bench-{uuid.uuid4().hex[:8]}"
        try:
            t0 = time.perf_counter()
            subprocess.run(["bpftool", "prog", "loadall", str(OBJ), pin_dir], check=True, capture_output=True)
            times.append((time.perf_counter() - t0) * 1000)
        finally:
            if os.path.isdir(pin_dir):
                for name in os.listdir(pin_dir):
                    os.unlink(os.path.join(pin_dir, name))
                os.rmdir(pin_dir)
    return statistics.median(times)


BCC_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
"""Debian's python3-bpfcc installs bcc for the system interpreter, not for a venv or pyenv one."""


def bcc_missing() -> str | None:
    """Why bcc cannot run here, or None."""
    reasons = []
    if subprocess.run([BCC_PYTHON, "-c", "import bcc"], capture_output=True).returncode:
        reasons.append("python3-bpfcc (bcc) is not installed")
    release = os.uname().release
    if not os.path.isdir(f"/lib/modules/{release}/build") and not os.path.exists("/sys/kernel/kheaders.tar.xz"):
        reasons.append(f"bcc compiles against kernel headers: no /lib/modules/{release}/build and no "
                       "/sys/kernel/kheaders.tar.xz (CONFIG_IKHEADERS)")
    return "; ".join(reasons) or None


def import_costs(top: int = 6) -> list[tuple[str, float]]:
    """corepy's heaviest imports (cumulative ms) during open+load+attach, from -X importtime."""
    done = subprocess.run([PY, "-X", "importtime", "-c", COREPY], capture_output=True, text=True, env=ENV)
    costs = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|(\s*)(\S+)", line)
        if m and len(m.group(2)) <= 2:  # top-level imports only
            costs.append((m.group(3), int(m.group(1)) / 1000))
    return sorted(costs, key=lambda c: -c[1])[:top]


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench/load.py needs root (it loads and attaches BPF programs)")
    interp = timed([PY, "-c", "pass"])
    print(f"python start-up (no imports): {interp:.1f} ms")
    corepy_phases: list[list[float]] = []
    cold_phases: list[list[float]] = []
    libbpf_phases: list[list[float]] = []
    corepy_ms, cold_ms, libbpf_ms = timed_together(
        [[PY, "-c", COREPY], [PY, "-c", COREPY], [PY, "-c", LIBBPF_CTYPES]],
        phases=[corepy_phases, cold_phases, libbpf_phases], envs=[None, COLD_ENV, None])
    print(f"corepy open+load+attach:       {corepy_ms:.1f} ms (CO-RE results from the cache: every load "
          "after the boot's first of this object)")
    print(f"corepy, no cache:              {cold_ms:.1f} ms (COREPY_BTF_CACHE=0: as a boot's first process, "
          "which also stores offsets and results, a few ms more)")
    print(f"python + libbpf1 via ctypes:   {libbpf_ms:.1f} ms (runs alternating with corepy's)")
    print(f"  in-process phases, median ms: corepy {phase_text(corepy_phases)}")
    print(f"                                corepy, no cache {phase_text(cold_phases)}")
    print(f"                                libbpf {phase_text(libbpf_phases)}")
    bpftool_ms = bpftool_loadall() if shutil.which("bpftool") else float("nan")
    print(f"bpftool prog loadall (no attach): {bpftool_ms:.1f} ms")
    why = bcc_missing()
    if why:
        bcc_ms = float("nan")
        print(f"bcc: skipped: {why}")
    else:
        bcc_ms = timed([BCC_PYTHON, "-c", BCC], runs=3)
        print(f"bcc compile+load+attach:       {bcc_ms:.1f} ms")
    print("corepy's heaviest top-level imports (cumulative):")
    for name, ms in import_costs():
        print(f"  {name:30s} {ms:7.1f} ms")
    ratio_bcc = f" ratio_bcc={bcc_ms / corepy_ms:.2f}" if bcc_ms == bcc_ms else ""
    close = {side: statistics.median(r[3] for r in runs) if runs else float("nan")
             for side, runs in (("corepy", corepy_phases), ("libbpf", libbpf_phases))}
    print(f"corepy_ms={corepy_ms:.1f} libbpf_py_ms={libbpf_ms:.1f} bpftool_ms={bpftool_ms:.1f} "
          f"bcc_ms={bcc_ms:.1f} python_startup_ms={interp:.1f} corepy_close_ms={close['corepy']:.1f} "
          f"libbpf_close_ms={close['libbpf']:.1f} ratio_libbpf={corepy_ms / libbpf_ms:.2f} "
          f"nocache_ms={cold_ms:.1f} nocache_ratio_libbpf={cold_ms / libbpf_ms:.2f}{ratio_bcc}")


if __name__ == "__main__":
    main()
