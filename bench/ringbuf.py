"""Event consumption speed: corepy's ring buffer and perf buffer vs libbpf's, same run.

fixtures/ringbuf_bench.bpf.o emits bursts of 32-byte ``struct bench_record`` (seq, ts, cpu,
pid, payload) with bpf_loop. Two measurements:

1. Pre-filled drain. Each round runs ``ringbuf_burst`` (``perf_burst``) BURSTS times on one
   CPU (raw_tp test runs), filling a 16 MiB ring buffer (a 32 MiB perf buffer on that CPU),
   then times one ``consume()`` draining it; ROUNDS rounds, 2M records. The figures are the
   best round's (other helpers' tests share these 2 CPUs); the all-rounds rates print too. Consumers:
   - libbpf 1.1 ``ring_buffer__consume`` / ``perf_buffer__consume`` in C
     (bench/ringbuf_consumer.c, built here with gcc and Debian's libbpf-dev), its callback
     checking each record's sequence number and payload;
   - corepy per-record callback, records decoded with a ``struct.Struct`` (a tuple each),
     the callback checking the sequence number;
   - corepy batch mode, decoded the same way, the callback checking each batch's first
     and last sequence numbers and its length.
2. Live producer. ``ringbuf_getpid`` (1 record per getpid(), filtered to the producer's pid)
   with a C loop calling getpid() LIVE_RECORDS times pinned to another CPU, while corepy's
   batch consumer polls a 16 MiB ring; lost = reserve failures on the BPF side + sequence
   numbers missing or duplicated at the consumer. Run paced at LIVE_RATE, then flat out
   (flat out, the producer speeds up once the ring stops needing wake-ups, i.e. once the
   consumer has fallen behind: a self-IPI per wake-up is a VM exit here).

Needs root, gcc and libbpf-dev. Last line (mrps: million records per second; ratios libbpf/corepy):
``callback_mrps=.. batch_mrps=.. libbpf_mrps=.. callback_ratio=.. batch_ratio=.. perf_callback_mrps=..
perf_batch_mrps=.. libbpf_perf_mrps=.. live_producer_mrps=.. lost=.. flat_out_producer_mrps=..
flat_out_lost=..``.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import corepy  # noqa: E402
from corepy.perfbuf import PerfBuffer  # noqa: E402
from corepy.ringbuf import RingBuffer  # noqa: E402
from corepy.syscalls.run import prog_test_run  # noqa: E402

OBJ = ROOT / "fixtures" / "ringbuf_bench.bpf.o"
SRC = Path(__file__).resolve().parent / "ringbuf_consumer.c"
RING_BYTES = 16 << 20
PERF_PAGES = 8192  # 32 MiB: a round's 400k perf records take 48 bytes each
BURST, BURSTS, ROUNDS = 80_000, 5, 5  # 400k records per round (16 MB of ring), 2M in all
LIVE_RECORDS = 2_000_000
LIVE_RATE = 2_000_000  # records/s: the paced live producer (the flat-out one is reported too)
WAKEUP_EVENTS = 10_000  # perf: libbpf's default 1 costs a self-IPI (a VM exit) per sample to fill
RECORD = struct.Struct("<QQIIQ")  # struct bench_record
TEST_RUN_ON_CPU = 1 << 0  # BPF_F_TEST_RUN_ON_CPU


def build_consumer(tmp: str) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None or not Path("/usr/include/bpf/libbpf.h").exists():
        raise SystemExit("needs gcc and libbpf-dev (apt-get install gcc libbpf-dev)")
    exe = Path(tmp) / "ringbuf_consumer"
    subprocess.run([gcc, "-O2", "-o", str(exe), str(SRC), "-lbpf"], check=True)
    return exe


def fields(line: str) -> dict[str, int]:
    return {k: int(v) for k, v in (item.split("=") for item in line.split())}


def run_libbpf(exe: Path, cpu: int) -> dict[str, int]:
    out = subprocess.run([str(exe), str(OBJ), str(RING_BYTES), str(PERF_PAGES), str(BURST), str(BURSTS),
                          str(ROUNDS), str(cpu)], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"ringbuf_consumer failed: {out.stderr.strip()}")
    return fields(out.stdout.strip().splitlines()[-1])


def open_object(record_count: int) -> Any:
    obj = corepy.open(OBJ)
    obj.maps["bench_rb"].max_entries = RING_BYTES
    obj.globals.record_count = record_count
    return obj


class Check:
    """Counts records and sequence-number breaks (missing or duplicated records)."""

    def __init__(self) -> None:
        self.records = self.bad = self.expect = 0

    def one(self, rec: tuple) -> None:
        if rec[0] != self.expect:
            self.bad += 1
        self.expect = rec[0] + 1
        self.records += 1

    def batch(self, recs: list) -> None:
        n = len(recs)
        if recs[0][0] != self.expect or recs[-1][0] != self.expect + n - 1:
            self.bad += 1
        self.expect = recs[-1][0] + 1
        self.records += n


def drain_rounds(obj: Any, program: str, buffer: Any) -> list[float]:
    """Fill and drain ROUNDS times; returns the seconds each consume() took."""
    fd = obj.programs[program].fd
    spent = []
    for _ in range(ROUNDS):
        for _ in range(BURSTS):
            prog_test_run(fd, ctx=bytes(16), flags=TEST_RUN_ON_CPU, cpu=CPU)
        t = time.perf_counter()
        buffer.consume()
        spent.append(time.perf_counter() - t)
    return spent


def corepy_prefilled() -> dict[str, float]:
    out: dict[str, float] = {}
    with open_object(BURST) as obj:
        obj.programs["ringbuf_getpid"].autoload = False
        obj.programs["perf_getpid"].autoload = False
        obj.load()
        for kind, program, map_name in (("", "ringbuf_burst", "bench_rb"), ("perf_", "perf_burst", "bench_pb")):
            for mode in ("callback", "batch"):
                check = Check()
                callback = check.batch if mode == "batch" else check.one
                if kind:
                    buffer: Any = PerfBuffer(obj.maps[map_name], callback, record_type=RECORD, batch=mode == "batch",
                                             pages=PERF_PAGES, cpus=[CPU], wakeup_events=WAKEUP_EVENTS)
                else:
                    buffer = RingBuffer(obj.maps[map_name], callback, record_type=RECORD, batch=mode == "batch")
                check.expect = obj.globals["pb_seq" if kind else "rb_seq"]
                with buffer:
                    spent = drain_rounds(obj, program, buffer)
                    lost = getattr(buffer, "lost", 0)
                if check.records != ROUNDS * BURSTS * BURST or check.bad or lost:
                    print(f"warning: corepy {kind}{mode}: {check.records} records, {check.bad} sequence breaks, "
                          f"{lost} lost", file=sys.stderr)
                out[f"{kind}{mode}_mrps"] = BURSTS * BURST / min(spent) / 1e6
                out[f"{kind}{mode}_all_mrps"] = check.records / sum(spent) / 1e6
                out[f"{kind}{mode}_bad"] = check.bad + lost
    return out


def corepy_live(exe: Path, producer_cpu: int, rate: int) -> dict[str, float]:
    """ringbuf_getpid fed by the C getpid loop on ``producer_cpu`` (at most ``rate`` records/s,
    0: flat out); corepy batches on CPU."""
    with open_object(1) as obj:
        for name in ("ringbuf_burst", "perf_burst", "perf_getpid"):
            obj.programs[name].autoload = False
        obj.load()
        producer = subprocess.Popen([str(exe), "produce", str(LIVE_RECORDS), str(producer_cpu), str(rate)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert producer.stdin is not None and producer.stdout is not None
            obj.globals.target_pid = int(producer.stdout.readline())
            check = Check()
            with obj.programs["ringbuf_getpid"].attach(), \
                    RingBuffer(obj.maps["bench_rb"], check.batch, record_type=RECORD, batch=True) as rb:
                done = threading.Event()
                result: list[str] = []

                def wait_producer() -> None:
                    result.append(producer.stdout.read())  # type: ignore[union-attr]
                    done.set()

                waiter = threading.Thread(target=wait_producer)
                waiter.start()
                producer.stdin.write("go\n")
                producer.stdin.flush()
                while not done.is_set():
                    rb.poll(0.05)
                waiter.join()
                rb.consume()
        finally:
            producer.kill() if producer.poll() is None else None
            producer.wait()
        produce_ns = fields(result[0].strip().splitlines()[-1])["produce_ns"]
        dropped = obj.globals.rb_dropped
        missing = LIVE_RECORDS - check.records
    return {"live_producer_mrps": LIVE_RECORDS / produce_ns * 1e3, "live_records": check.records,
            "lost": dropped + abs(missing) + check.bad}


def main() -> int:
    global CPU
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    cpus = sorted(os.sched_getaffinity(0))
    CPU = cpus[0]
    os.sched_setaffinity(0, {CPU})
    with tempfile.TemporaryDirectory() as tmp:
        exe = build_consumer(tmp)
        lib = run_libbpf(exe, CPU)
        ours = corepy_prefilled()
        other = cpus[1] if len(cpus) > 1 else CPU
        live = corepy_live(exe, other, LIVE_RATE)
        flat = corepy_live(exe, other, 0)
    per_round = BURSTS * BURST
    libbpf_mrps = per_round / lib["libbpf_best_ns"] * 1e3
    libbpf_perf_mrps = per_round / lib["libbpf_perf_best_ns"] * 1e3
    total = ROUNDS * per_round
    all_rounds = {"libbpf": lib["libbpf_records"] / lib["libbpf_ns"] * 1e3,
                  "libbpf_perf": lib["libbpf_perf_records"] / lib["libbpf_perf_ns"] * 1e3}
    print(f"pre-filled drain of {total} records of 32 bytes in {ROUNDS} rounds on CPU {CPU}, M records/s "
          f"in the best round (all rounds):")
    print(f"  ring buffer: libbpf {libbpf_mrps:.1f} ({all_rounds['libbpf']:.1f}), {lib['libbpf_bad']} bad; "
          f"corepy callback {ours['callback_mrps']:.2f} ({ours['callback_all_mrps']:.2f}), "
          f"{ours['callback_bad']:.0f} bad; batch {ours['batch_mrps']:.2f} ({ours['batch_all_mrps']:.2f}), "
          f"{ours['batch_bad']:.0f} bad")
    print(f"  perf buffer: libbpf {libbpf_perf_mrps:.1f} ({all_rounds['libbpf_perf']:.1f}), "
          f"{lib['libbpf_perf_bad']} bad, {lib['libbpf_perf_lost']} lost; "
          f"corepy callback {ours['perf_callback_mrps']:.2f} ({ours['perf_callback_all_mrps']:.2f}), "
          f"{ours['perf_callback_bad']:.0f} bad or lost; batch {ours['perf_batch_mrps']:.2f} "
          f"({ours['perf_batch_all_mrps']:.2f}), {ours['perf_batch_bad']:.0f} bad or lost")
    for what, run in (("paced", live), ("flat-out", flat)):
        print(f"live, {what}: getpid producer {run['live_producer_mrps']:.2f} M records/s, corepy batches received "
              f"{run['live_records']} of {LIVE_RECORDS}, lost or duplicated {run['lost']}")
    print(f"callback_mrps={ours['callback_mrps']:.2f} batch_mrps={ours['batch_mrps']:.2f} "
          f"libbpf_mrps={libbpf_mrps:.1f} callback_ratio={libbpf_mrps / ours['callback_mrps']:.0f} "
          f"batch_ratio={libbpf_mrps / ours['batch_mrps']:.0f} perf_callback_mrps={ours['perf_callback_mrps']:.2f} "
          f"perf_batch_mrps={ours['perf_batch_mrps']:.2f} libbpf_perf_mrps={libbpf_perf_mrps:.1f} "
          f"live_producer_mrps={live['live_producer_mrps']:.2f} lost={live['lost']} "
          f"flat_out_producer_mrps={flat['live_producer_mrps']:.2f} flat_out_lost={flat['lost']}")
    return 0


CPU = 0

if __name__ == "__main__":
    sys.exit(main())
