"""Benchmark: open + index the kernel's BTF with corepy vs libbpf's btf__parse, same run.

Each corepy measurement runs in a fresh interpreter (cold: imports, caches and
the decode cache are honest); libbpf's ``btf__parse`` is called through ctypes
on Debian's libbpf1, also in a fresh process. Reported:

- ``open_ms``: corepy ``BTF.from_file`` + the full name index built (every later lookup O(1)), import excluded
- ``open_lazy_ms``: ``BTF.from_file`` alone (no index): what a load pays before its first lookup
- ``first_lookup_ms``: then one ``ids_by_name("task_struct")`` on that fresh BTF: the first
  ``SCANNED_LOOKUPS`` lookups search the strings instead of building the index (see corepy.btf.spec);
  ``lazy_ratio`` = (open_lazy_ms + first_lookup_ms) / libbpf_ms
- ``import_ms``: ``from corepy.btf import BTF, Kind`` in a fresh interpreter (byte-code caches as found:
  with ``PYTHONDONTWRITEBYTECODE`` set, stale ``__pycache__`` entries make it a compile-time figure)
- ``whole_ms``: open_ms + import_ms (interpreter start excluded)
- ``libbpf_ms``: ``btf__parse`` of the same file; ``ratio`` = open_ms / libbpf_ms
- ``lookup1000_ms``: 1,000 struct lookups by name with their members decoded (fresh BTF)
- ``libbpf_lookup1000_ms``: the same names with ``btf__find_by_name_kind`` (a linear scan in libbpf)
- ``cached_open_ms``: open + index when the on-disk index cache holds this blob (``cache=True``)
- ``offsets_open_ms``: ``BTF.kernel()`` (for another PATH, ``BTF.from_file(cache="offsets")``) when
  the cache holds this blob's type offsets only and, for the running kernel, its digest remembered
  for this boot; ``offsets_lazy_ratio`` adds the first lookup by name, as ``lazy_ratio``
- ``rss_mb``: peak RSS (VmHWM) growth of the corepy process across the open + index, imports excluded

Medians of ``--runs`` fresh processes of each kind, interleaved. Usage: ``python bench/btf.py [--runs N] [PATH]``.
The last line holds the headline figures as name=value pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

KERNEL_BTF = "/sys/kernel/btf/vmlinux"
LOOKUPS = 1000

_CHILD_COREPY = r"""
import json, sys, time
T = time.perf_counter
path, names_file, mode = sys.argv[1], sys.argv[2], (sys.argv[3:] or ["index"])[0]
cache = True if mode == "cache" else "offsets" if mode == "offsets" else False
def peak_kb():  # VmHWM: this process's peak RSS (ru_maxrss would include the forking parent's)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
t0 = T()
from corepy.btf import BTF, Kind
t1 = T()
rss0 = peak_kb()
if mode == "offsets" and path == "/sys/kernel/btf/vmlinux":
    btf = BTF.kernel()  # (COREPY_BTF_CACHE unset: offsets only)
else:
    btf = BTF.from_file(path, cache=cache)
if mode in ("lazy", "offsets"):  # open only, then one lookup by name as a load's first one (strings searched)
    t2 = T()
    btf.ids_by_name("task_struct")
    t3 = T()
    print(json.dumps(dict(import_ms=(t1 - t0) * 1e3, open_ms=(t2 - t1) * 1e3, first_lookup_ms=(t3 - t2) * 1e3)))
    sys.exit()
btf._name_index()  # the full name index (the first lookups by name would only search the strings)
t2 = T()
rss1 = peak_kb()
names = open(names_file).read().split()
t3 = T()
members = 0
for name in names:
    t = btf.find(name, Kind.STRUCT)[0]
    members += len(t.members)
t4 = T()
print(json.dumps(dict(import_ms=(t1 - t0) * 1e3, open_ms=(t2 - t1) * 1e3, lookup_ms=(t4 - t3) * 1e3,
                      rss_mb=(rss1 - rss0) / 1024, types=len(btf), members=members)))
"""

_CHILD_LIBBPF = r"""
import ctypes, json, sys, time
T = time.perf_counter
path, names_file = sys.argv[1], sys.argv[2]
lib = ctypes.CDLL("libbpf.so.1")
lib.btf__parse.restype = ctypes.c_void_p
lib.btf__parse.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
lib.btf__free.argtypes = [ctypes.c_void_p]
lib.btf__find_by_name_kind.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]
lib.btf__find_by_name_kind.restype = ctypes.c_int32
lib.btf__type_cnt.argtypes = [ctypes.c_void_p]
lib.btf__type_cnt.restype = ctypes.c_uint32
t0 = T()
btf = lib.btf__parse(path.encode(), None)
t1 = T()
if not btf:
    raise SystemExit(f"btf__parse failed: errno {ctypes.get_errno()}")
names = [n.encode() for n in open(names_file).read().split()]
t2 = T()
for name in names:
    if lib.btf__find_by_name_kind(btf, name, 4) <= 0:
        raise SystemExit(f"libbpf did not find {name!r}")
t3 = T()
types = lib.btf__type_cnt(btf)
lib.btf__free(btf)
print(json.dumps(dict(parse_ms=(t1 - t0) * 1e3, lookup_ms=(t3 - t2) * 1e3, types=types)))
"""


def child(code: str, path: str, names_file: str, *extra: str, env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code, path, names_file, *extra], check=True, capture_output=True,
                         text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def struct_names(path: str, count: int) -> list[str]:
    """``count`` distinct struct names spread evenly over the file (chosen in this process)."""
    from corepy.btf import BTF, Kind

    btf = BTF.from_file(path)
    names = sorted({n for n in btf.names()})
    structs = [n for n in names if any(t.kind == Kind.STRUCT for t in btf.find(n))]
    step = max(1, len(structs) // count)
    return structs[::step][:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=KERNEL_BTF)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    import tempfile

    names = struct_names(args.path, LOOKUPS)
    with tempfile.NamedTemporaryFile("w", suffix=".names") as f, tempfile.TemporaryDirectory() as cache_dir:
        f.write("\n".join(names))
        f.flush()
        env = dict(os.environ, COREPY_CACHE_DIR=cache_dir)
        building = child(_CHILD_COREPY, args.path, f.name, "cache", env=env)  # writes the cache
        offsets_env = {k: v for k, v in os.environ.items() if k != "COREPY_BTF_CACHE"}
        offsets_env["COREPY_CACHE_DIR"] = os.path.join(cache_dir, "offsets")
        child(_CHILD_COREPY, args.path, f.name, "offsets", env=offsets_env)  # writes the offsets-only entry
        ours, theirs, cached, lazy, offsets = [], [], [], [], []
        for _ in range(args.runs):  # interleaved, so that all five see the same machine load
            ours.append(child(_CHILD_COREPY, args.path, f.name))
            theirs.append(child(_CHILD_LIBBPF, args.path, f.name))
            cached.append(child(_CHILD_COREPY, args.path, f.name, "cache", env=env))
            lazy.append(child(_CHILD_COREPY, args.path, f.name, "lazy"))
            offsets.append(child(_CHILD_COREPY, args.path, f.name, "offsets", env=offsets_env))

    def med(rows: list[dict], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    open_ms = med(ours, "open_ms")
    whole_ms = med(ours, "open_ms") + med(ours, "import_ms")
    libbpf_ms = med(theirs, "parse_ms")
    print(f"file: {args.path}: {ours[0]['types']} type ids (libbpf: {theirs[0]['types']}); "
          f"{len(names)} struct lookups, {ours[0]['members']} members decoded; {args.runs} fresh processes each")
    print(f"corepy open+index: median {open_ms:.1f} ms (min {min(r['open_ms'] for r in ours):.1f}), "
          f"import {med(ours, 'import_ms'):.1f} ms, whole {whole_ms:.1f} ms, peak RSS growth {med(ours, 'rss_mb'):.1f} MB")
    print(f"libbpf btf__parse: median {libbpf_ms:.1f} ms (min {min(r['parse_ms'] for r in theirs):.1f})")
    print(f"lookups of {len(names)} structs: corepy {med(ours, 'lookup_ms'):.1f} ms, "
          f"libbpf btf__find_by_name_kind {med(theirs, 'lookup_ms'):.1f} ms")
    cached_ms = med(cached, "open_ms")
    print(f"with the on-disk index cache (COREPY_BTF_CACHE=1 / cache=True): open+index median {cached_ms:.1f} ms "
          f"(first run, building and writing it: {building['open_ms']:.1f} ms), "
          f"lookups {med(cached, 'lookup_ms'):.1f} ms, RSS growth {med(cached, 'rss_mb'):.1f} MB")
    lazy_ms, first_ms = med(lazy, "open_ms"), med(lazy, "first_lookup_ms")
    print(f"lazy: open (no index) median {lazy_ms:.1f} ms, then the first lookup by name {first_ms:.1f} ms")
    off_ms, off_first_ms = med(offsets, "open_ms"), med(offsets, "first_lookup_ms")
    print(f"lazy with the type offsets from the cache (BTF.kernel()'s default; digest remembered): open {off_ms:.1f} ms, "
          f"then the first lookup by name {off_first_ms:.1f} ms")
    print(f"open_ms={open_ms:.1f} import_ms={med(ours, 'import_ms'):.1f} whole_ms={whole_ms:.1f} "
          f"libbpf_ms={libbpf_ms:.1f} ratio={open_ms / libbpf_ms:.1f} "
          f"whole_ratio={whole_ms / libbpf_ms:.1f} lookup1000_ms={med(ours, 'lookup_ms'):.1f} "
          f"libbpf_lookup1000_ms={med(theirs, 'lookup_ms'):.1f} rss_mb={med(ours, 'rss_mb'):.1f} "
          f"cached_open_ms={cached_ms:.1f} cached_ratio={cached_ms / libbpf_ms:.1f} "
          f"open_lazy_ms={lazy_ms:.1f} first_lookup_ms={first_ms:.1f} "
          f"lazy_ratio={(lazy_ms + first_ms) / libbpf_ms:.1f} offsets_open_ms={off_ms:.1f} "
          f"offsets_lazy_ratio={(off_ms + off_first_ms) / libbpf_ms:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
