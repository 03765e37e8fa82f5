"""Perf buffer consumer on the real kernel: a hand-assembled producer (socket filter run with
BPF_PROG_TEST_RUN) stamps a global sequence number at both ends of a per-CPU scratch record
and sends it with bpf_perf_event_output(BPF_F_CURRENT_CPU). Covers records wrapping around the
data area, records bigger than a page, the lost-sample path (tiny buffer, no consumer), several
CPUs, batches, decoding, asyncio; and the ringbuf_bench fixture object through corepy.open."""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import threading

import pytest

from conftest import fixture_obj, requires_root
from test_programs import exit_insn, ld_map_fd, mov_imm, mov_reg, open_fds

from corepy.asm.insn import ADD, ALU, ALU64, ATOMIC, CALL_INSN, DW, JEQ, JMP, K, MEM, MOV, ST, STX, W, Insn

pytestmark = requires_root

PAGE = mmap.PAGESIZE
FETCH = 0x01
HELPER_MAP_LOOKUP_ELEM, HELPER_PERF_EVENT_OUTPUT = 1, 25
PACKET = bytes(64)


def _lookup(map_fd: int, dst: int, skip: int) -> list[Insn]:
    """``dst = lookup(map, &(u32)0); if (!dst) skip `skip` instructions``."""
    return ld_map_fd(1, map_fd) + [Insn(ST | MEM | W, 10, 0, -4, 0), mov_reg(2, 10), Insn(ALU64 | ADD | K, 2, 0, 0, -4),
                                   Insn(CALL_INSN, imm=HELPER_MAP_LOOKUP_ELEM),
                                   Insn(JMP | JEQ | K, 0, 0, skip, 0), mov_reg(dst, 0)]


def producer_insns(perf_fd: int, stats_fd: int, scratch_fd: int, size: int) -> list[Insn]:
    """``seq = fetch_add(&stats->seq, 1); rec = this CPU's scratch; rec[0] = rec[size-8] = seq;
    if (bpf_perf_event_output(ctx, perf, BPF_F_CURRENT_CPU, rec, size)) stats->dropped++;``"""
    tail = [mov_imm(0, 0)] + exit_insn()
    output = [mov_imm(1, 1), Insn(STX | ATOMIC | DW, 7, 1, 0, ADD | FETCH),
              Insn(STX | MEM | DW, 8, 1, 0), Insn(STX | MEM | DW, 8, 1, size - 8),
              mov_reg(1, 6)] + ld_map_fd(2, perf_fd) + [
              Insn(ALU | MOV | K, 3, 0, 0, -1),  # BPF_F_CURRENT_CPU (32-bit move: zero-extended)
              mov_reg(4, 8), mov_imm(5, size), Insn(CALL_INSN, imm=HELPER_PERF_EVENT_OUTPUT),
              Insn(JMP | JEQ | K, 0, 0, 2, 0), mov_imm(1, 1), Insn(STX | ATOMIC | DW, 7, 1, 8, ADD)]
    scratch = _lookup(scratch_fd, 8, len(output) + 1) + output
    return [mov_reg(6, 1)] + _lookup(stats_fd, 7, len(scratch) + 1) + scratch + tail


class Producer:
    """A perf event array, stats ({u64 seq; u64 dropped}), a per-CPU scratch record, the program."""

    def __init__(self, size: int):
        from corepy.maps import Map
        from corepy.programs import load_program
        from corepy.syscalls.uapi import MapType, ProgType

        assert size >= 16
        self.size = size
        self.perf = Map.create(MapType.PERF_EVENT_ARRAY, 4, 4, 0, name="pb")
        self.stats = Map.create(MapType.ARRAY, 4, 16, 1, name="pb_stats")
        self.scratch = Map.create(MapType.PERCPU_ARRAY, 4, size, 1, name="pb_scratch")
        self.prog = load_program(producer_insns(self.perf.fileno(), self.stats.fileno(), self.scratch.fileno(), size),
                                 name="pb_produce", prog_type=ProgType.SOCKET_FILTER)

    def produce(self, n: int) -> None:
        self.prog.test_run(PACKET, repeat=n)

    def _stats(self) -> tuple[int, int]:
        return struct.unpack("<QQ", self.stats.raw[struct.pack("<I", 0)])

    @property
    def seq(self) -> int:
        return self._stats()[0]

    @property
    def dropped(self) -> int:
        return self._stats()[1]

    def close(self) -> None:
        for obj in (self.prog, self.scratch, self.stats, self.perf):
            obj.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_size(size: int) -> int:
    """What user space gets for a ``size``-byte sample: padded so u32 size + data is 8-aligned."""
    return (size + 4 + 7) // 8 * 8 - 4


def seqs_of(records: list, size: int) -> list[int]:
    out = []
    for rec in records:
        assert len(rec) == raw_size(size)
        head = struct.unpack_from("<Q", rec, 0)[0]
        assert struct.unpack_from("<Q", rec, size - 8)[0] == head
        out.append(head)
    return out


def pin_to(cpu: int) -> set[int]:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    return before


def test_samples_in_order_on_one_cpu_and_cleanup():
    from corepy.perfbuf import PerfBuffer

    cpu = min(os.sched_getaffinity(0))
    before_fds = open_fds()
    got: list[bytes] = []
    kinds: set[type] = set()

    def on_sample(view):
        kinds.add(type(view))
        got.append(bytes(view))

    with Producer(32) as p:
        with PerfBuffer(p.perf, on_sample) as pb:
            assert cpu in pb.cpus
            affinity = pin_to(cpu)
            try:
                p.produce(10)
            finally:
                os.sched_setaffinity(0, affinity)
            assert pb.available(cpu) == 10 * (8 + 4 + raw_size(32))
            assert pb.poll(1.0) == 10
            assert pb.poll(0) == 0 and pb.available(cpu) == 0
        affinity = pin_to(cpu)
        try:
            p.produce(1)  # the slot was cleared on close: the output fails and is counted
        finally:
            os.sched_setaffinity(0, affinity)
        assert p.dropped == 1
    assert seqs_of(got, 32) == list(range(10)) and kinds == {memoryview}
    assert open_fds() == before_fds


RECORD40 = struct.Struct("<QQQQQ")


def _sink(mode: str, out: list):
    """(callback, PerfBuffer options) collecting sequence numbers the ``mode`` way."""
    if mode == "views":
        return (lambda v: out.extend(seqs_of([bytes(v)], 40))), {}
    if mode == "struct":
        return (lambda t: out.append(t[0])), {"record_type": RECORD40}
    return (lambda ts: out.extend(t[0] for t in ts)), {"record_type": RECORD40, "batch": True}


@pytest.mark.parametrize("mode", ["views", "struct", "struct-batch"])
def test_records_wrap_around_the_data_area(mode):
    from corepy.perfbuf import PerfBuffer

    cpu = min(os.sched_getaffinity(0))
    got: list[int] = []
    callback, options = _sink(mode, got)
    with Producer(40) as p, PerfBuffer(p.perf, callback, pages=1, cpus=[cpu], **options) as pb:
        affinity = pin_to(cpu)
        try:
            for _ in range(30):  # 56-byte records in 4 KiB: some straddle the end of the area
                p.produce(50)
                assert pb.poll(1.0) == 50
        finally:
            os.sched_setaffinity(0, affinity)
        assert p.dropped == 0 and pb.lost == 0
    assert got == list(range(1500))


def test_records_larger_than_a_page_and_batches():
    from corepy.perfbuf import PerfBuffer

    cpu = min(os.sched_getaffinity(0))
    size = PAGE + 1000
    batches: list[list[int]] = []
    with Producer(size) as p, PerfBuffer(p.perf, lambda views: batches.append(seqs_of([bytes(v) for v in views], size)),
                                         batch=True, pages=4, cpus=[cpu]) as pb:
        affinity = pin_to(cpu)
        try:
            for _ in range(5):
                p.produce(3)
                assert pb.poll(1.0) == 3
        finally:
            os.sched_setaffinity(0, affinity)
    assert batches == [[3 * i, 3 * i + 1, 3 * i + 2] for i in range(5)]


@pytest.mark.parametrize("mode", ["views", "struct", "struct-batch"])
def test_lost_samples_are_reported(mode):
    from corepy.perfbuf import PerfBuffer

    cpu = min(os.sched_getaffinity(0))
    lost: list[tuple[int, int]] = []
    got: list[int] = []
    callback, options = _sink(mode, got)
    with Producer(40) as p, PerfBuffer(p.perf, callback, pages=1, cpus=[cpu],
                                       lost_callback=lambda c, n: lost.append((c, n)), **options) as pb:
        affinity = pin_to(cpu)
        try:
            p.produce(500)  # nobody consumes: the one-page buffer fills up
            fits = 500 - p.dropped
            assert 0 < fits < 500
            assert pb.consume() == fits
            p.produce(3)  # now there is room: the kernel first writes a LOST record
            assert pb.consume() == 3
        finally:
            os.sched_setaffinity(0, affinity)
        assert lost == [(cpu, 500 - fits)] and pb.lost == 500 - fits
    assert got == list(range(fits)) + [500, 501, 502]


def test_every_cpu_gets_its_buffer():
    from corepy.perfbuf import PerfBuffer

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip(f"needs two CPUs to produce on; this process may run on {cpus}")
    seen: list[int] = []
    per_thread = 3000
    with Producer(16) as p, PerfBuffer(p.perf, lambda v: seen.append(v.cast("B")[:8].cast("Q")[0]), pages=64) as pb:
        def produce(cpu: int) -> None:
            os.sched_setaffinity(0, {cpu})
            for _ in range(30):
                p.produce(per_thread // 30)

        threads = [threading.Thread(target=produce, args=(cpu,)) for cpu in cpus[:2]]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            pb.poll(0.05)
        for t in threads:
            t.join()
        pb.consume()
        assert p.dropped == 0 and pb.lost == 0
    assert sorted(seen) == list(range(2 * per_thread))


def test_struct_decoding_and_asyncio():
    from corepy.perfbuf import PerfBuffer

    cpu = min(os.sched_getaffinity(0))
    rec = struct.Struct("<QQQ")
    with Producer(24) as p, PerfBuffer(p.perf, record_type=rec, cpus=[cpu]) as pb:
        def produce(n: int) -> None:
            affinity = pin_to(cpu)
            try:
                p.produce(n)
            finally:
                os.sched_setaffinity(0, affinity)

        async def main() -> list:
            produce(2)
            asyncio.get_running_loop().call_later(0.05, produce, 3)
            out = []
            async for record in pb:
                out.append(record)
                if len(out) == 5:
                    return out
            return out

        records = asyncio.run(main())
    assert [(r[0], r[2]) for r in records] == [(i, i) for i in range(5)]


def test_wrong_map_and_bad_pages_are_named():
    from corepy.errors import CorepyError
    from corepy.perfbuf import PerfBuffer

    with Producer(16) as p:
        with pytest.raises(CorepyError, match="not a perf event array"):
            PerfBuffer(p.stats, print)
        with pytest.raises(CorepyError, match="power of 2"):
            PerfBuffer(p.perf, print, pages=3)
        with pytest.raises(CorepyError, match="beyond"):
            PerfBuffer(p.perf, print, cpus=[p.perf.max_entries])


def test_ringbuf_bench_fixture_perf_and_ring_bursts():
    """The fixture object end to end: perf_burst/ringbuf_burst run on a chosen CPU (raw_tp test
    run), records decoded with their C layout, sequence numbers and counters agree."""
    import corepy
    from corepy.perfbuf import PerfBuffer
    from corepy.ringbuf import RingBuffer

    bench = struct.Struct("<QQIIQ")  # struct bench_record
    cpu = min(os.sched_getaffinity(0))
    perf_seen: list[tuple] = []
    ring_seen: list[tuple] = []
    with corepy.open(fixture_obj("ringbuf_bench")) as obj:
        obj.globals.record_count = 200
        obj.programs["ringbuf_getpid"].autoload = False
        obj.programs["perf_getpid"].autoload = False
        obj.load()
        with PerfBuffer(obj.maps["bench_pb"], perf_seen.extend, record_type=bench, batch=True) as pb, \
                RingBuffer(obj.maps["bench_rb"], ring_seen.append, record_type=bench) as rb:
            from corepy.syscalls.run import prog_test_run

            flags = 1 << 0  # BPF_F_TEST_RUN_ON_CPU
            for _ in range(3):
                prog_test_run(obj.programs["perf_burst"].fd, ctx=bytes(16), flags=flags, cpu=cpu)
                prog_test_run(obj.programs["ringbuf_burst"].fd, ctx=bytes(16), flags=flags, cpu=cpu)
            assert pb.consume() == 600 and rb.consume() == 600
        assert obj.globals.pb_submitted == 600 and obj.globals.pb_dropped == 0
        assert obj.globals.rb_submitted == 600 and obj.globals.rb_dropped == 0
    for seen in (perf_seen, ring_seen):
        assert [r[0] for r in seen] == list(range(600))
        assert [r for r in seen if r[4] != r[0] ^ 0xC0DEC0DE or r[2] != cpu] == []
