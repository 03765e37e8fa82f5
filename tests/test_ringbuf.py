"""Ring buffer consumer on the real kernel: a hand-assembled producer (socket filter run with
BPF_PROG_TEST_RUN, ``repeat`` records per run) reserves fixed-size records, stamps a global
sequence number at their start and end, and submits (or discards odd ones). Covers data-area
wrap-around, discards, records larger than a page, a full ring (reserve failures counted on
the BPF side), producers on two CPUs, batches, BTF/struct decoding, several rings, asyncio."""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import threading

import pytest

from conftest import fixture_obj, requires_root
from test_programs import exit_insn, ld_map_fd, mov_imm, mov_reg, open_fds

from corepy.asm.insn import ADD, ALU64, AND, ATOMIC, CALL_INSN, DW, JEQ, JMP, JNE, K, MEM, ST, STX, W, Insn

pytestmark = requires_root

PAGE = mmap.PAGESIZE
FETCH = 0x01
HELPER_MAP_LOOKUP_ELEM, HELPER_RINGBUF_RESERVE, HELPER_RINGBUF_SUBMIT, HELPER_RINGBUF_DISCARD = 1, 131, 132, 133
PACKET = bytes(64)


def producer_insns(rb_fd: int, stats_fd: int, size: int, *, discard_odd: bool = False) -> list[Insn]:
    """``stats = lookup(stats, 0); rec = ringbuf_reserve(rb, size, 0); if (!rec) { stats->dropped++;
    return 0; } seq = fetch_add(&stats->seq, 1); rec[0] = rec[size-8] = seq;
    (discard_odd && seq & 1) ? ringbuf_discard(rec) : ringbuf_submit(rec); return 0;``"""
    assert size >= 8
    tail: list[Insn] = [mov_imm(0, 0)] + exit_insn()
    submit: list[Insn] = [mov_reg(1, 6), mov_imm(2, 0), Insn(CALL_INSN, imm=HELPER_RINGBUF_SUBMIT)]
    if discard_odd:
        discard = [mov_reg(1, 6), mov_imm(2, 0), Insn(CALL_INSN, imm=HELPER_RINGBUF_DISCARD)]
        submit = [Insn(ALU64 | AND | K, 8, 0, 0, 1), Insn(JMP | JNE | K, 8, 0, len(submit) + 1, 0)] + submit \
            + [Insn(JMP, off=len(discard))] + discard
    stamp = [mov_imm(1, 1), Insn(STX | ATOMIC | DW, 7, 1, 0, ADD | FETCH), mov_reg(8, 1),
             Insn(STX | MEM | DW, 6, 1, 0)]
    if size >= 16:
        stamp.append(Insn(STX | MEM | DW, 6, 1, size - 8))
    dropped = [mov_imm(1, 1), Insn(STX | ATOMIC | DW, 7, 1, 8, ADD)]
    reserve = ld_map_fd(1, rb_fd) + [mov_imm(2, size), mov_imm(3, 0), Insn(CALL_INSN, imm=HELPER_RINGBUF_RESERVE)]
    got = [mov_reg(6, 0)] + stamp + submit
    body = reserve + [Insn(JMP | JNE | K, 0, 0, len(dropped) + 1, 0)] + dropped + [Insn(JMP, off=len(got))] + got
    lookup = ld_map_fd(1, stats_fd) + [Insn(ST | MEM | W, 10, 0, -4, 0), mov_reg(2, 10),
                                       Insn(ALU64 | ADD | K, 2, 0, 0, -4),
                                       Insn(CALL_INSN, imm=HELPER_MAP_LOOKUP_ELEM),
                                       Insn(JMP | JEQ | K, 0, 0, len(body) + 1, 0), mov_reg(7, 0)]
    return lookup + body + tail


class Producer:
    """A ring buffer map, a stats array ({u64 seq; u64 dropped}) and the loaded producer."""

    def __init__(self, ring_size: int, record_size: int, *, discard_odd: bool = False, name: str = "rb"):
        from corepy.maps import Map
        from corepy.programs import load_program
        from corepy.syscalls.uapi import MapType, ProgType

        self.record_size = record_size
        self.ring = Map.create(MapType.RINGBUF, 0, 0, ring_size, name=name)
        self.stats = Map.create(MapType.ARRAY, 4, 16, 1, name="rb_stats")
        self.prog = load_program(producer_insns(self.ring.fileno(), self.stats.fileno(), record_size,
                                                discard_odd=discard_odd),
                                 name="rb_produce", prog_type=ProgType.SOCKET_FILTER)

    def produce(self, n: int) -> None:
        self.prog.test_run(PACKET, repeat=n)

    @property
    def seq(self) -> int:
        return struct.unpack("<QQ", self.stats.raw[struct.pack("<I", 0)])[0]

    @property
    def dropped(self) -> int:
        return struct.unpack("<QQ", self.stats.raw[struct.pack("<I", 0)])[1]

    def close(self) -> None:
        for obj in (self.prog, self.stats, self.ring):
            obj.close()

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def seqs_of(records: list, size: int) -> list[int]:
    """Check each raw record (length, matching head/tail stamps) and return their sequence numbers."""
    out = []
    for rec in records:
        assert len(rec) == size
        head = struct.unpack_from("<Q", rec, 0)[0]
        if size >= 16:
            assert struct.unpack_from("<Q", rec, size - 8)[0] == head
        out.append(head)
    return out


def test_records_in_order_zero_copy_views_and_no_leak():
    from corepy.ringbuf import RingBuffer

    before = open_fds()
    got: list[bytes] = []
    kinds: set[type] = set()

    def on_record(view):
        kinds.add(type(view))
        got.append(bytes(view))

    with Producer(PAGE * 4, 24) as p, RingBuffer(p.ring, on_record) as rb:
        assert rb.poll(0) == 0 and rb.consume() == 0
        p.produce(10)
        assert rb.available() == 10 * 32
        assert rb.poll(1.0) == 10
        assert rb.available() == 0
        assert seqs_of(got, 24) == list(range(10))
        assert kinds == {memoryview}
        assert rb.poll(0) == 0
    assert open_fds() == before


def test_wrap_around_data_area_in_rounds():
    from corepy.ringbuf import RingBuffer

    got: list[bytes] = []
    with Producer(PAGE, 40) as p, RingBuffer(p.ring, lambda v: got.append(bytes(v))) as rb:
        per_round = 60  # 60 * 48 bytes: most of the one-page ring each round
        for _ in range(25):
            p.produce(per_round)
            assert rb.poll(1.0) == per_round
        assert p.dropped == 0
        assert 25 * per_round * 48 > 15 * PAGE  # the data area wrapped many times
        assert seqs_of(got, 40) == list(range(25 * per_round))


def test_discarded_records_are_skipped():
    from corepy.ringbuf import RingBuffer

    got: list[bytes] = []
    with Producer(PAGE * 2, 16, discard_odd=True) as p, RingBuffer(p.ring, lambda v: got.append(bytes(v))) as rb:
        for _ in range(3):
            p.produce(51)
            rb.poll(1.0)
        assert p.seq == 153 and rb.available() == 0
        assert seqs_of(got, 16) == list(range(0, 153, 2))


def test_records_larger_than_a_page():
    from corepy.ringbuf import RingBuffer

    size = 3 * PAGE + 24
    got: list[bytes] = []
    with Producer(PAGE * 16, size) as p, RingBuffer(p.ring, lambda v: got.append(bytes(v))) as rb:
        for _ in range(4):  # 4 records per round fill most of the 64 KiB ring; rounds wrap it
            p.produce(4)
            assert rb.poll(1.0) == 4
        assert p.dropped == 0
        assert seqs_of(got, size) == list(range(16))


def test_full_ring_reserve_failures_then_space_again():
    from corepy.ringbuf import RingBuffer

    got: list[bytes] = []
    with Producer(PAGE, 40) as p, RingBuffer(p.ring, lambda v: got.append(bytes(v))) as rb:
        p.produce(200)
        fits = (PAGE - 1) // 48  # the kernel refuses a reserve that would pass mask bytes ahead
        assert p.seq == fits and p.dropped == 200 - fits
        assert rb.consume() == fits
        p.produce(5)
        assert rb.consume() == 5
        assert seqs_of(got, 40) == list(range(fits + 5))


def test_producers_on_two_cpus_lose_and_duplicate_nothing():
    from corepy.ringbuf import RingBuffer

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip(f"needs two CPUs to run producers on; this process may run on {cpus}")
    seen: list[int] = []
    per_thread, runs = 20000, 10
    with Producer(16 << 20, 32) as p, RingBuffer(p.ring, lambda v: seen.append(v.cast("Q")[0])) as rb:
        def produce(cpu: int) -> None:
            os.sched_setaffinity(0, {cpu})  # this thread only
            for _ in range(runs):
                p.produce(per_thread // runs)

        threads = [threading.Thread(target=produce, args=(cpu,)) for cpu in cpus[:2]]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            rb.poll(0.05)
        for t in threads:
            t.join()
        rb.consume()
        assert p.dropped == 0
        assert len(seen) == 2 * per_thread
        assert sorted(seen) == list(range(2 * per_thread))


def test_batch_mode_commits_once_per_batch():
    from corepy.ringbuf import RingBuffer

    batches: list[list[int]] = []
    with Producer(PAGE * 8, 32) as p:
        def on_batch(views):
            assert rb.available() > 0  # nothing committed while the batch is being handled
            batches.append(seqs_of([bytes(v) for v in views], 32))

        with RingBuffer(p.ring, on_batch, batch=True) as rb:
            p.produce(100)
            assert rb.poll(1.0) == 100
            assert batches == [list(range(100))] and rb.available() == 0


def test_struct_decoding_per_record_and_batched():
    from corepy.ringbuf import RingBuffer

    rec = struct.Struct("<QQQQ")
    one: list[tuple] = []
    many: list[tuple] = []
    with Producer(PAGE * 8, 32) as p1, Producer(PAGE * 8, 32, discard_odd=True) as p2:
        with RingBuffer(p1.ring, one.append, record_type=rec) as rb:
            rb.add(p2.ring, many.extend, record_type=rec, batch=True)
            p1.produce(30)
            p2.produce(120)  # discards in the run: the uniform fast path must not take them
            assert rb.consume() == 30 + 60
            p2.produce(80)
            assert rb.consume() == 40
        assert all(isinstance(t, tuple) for t in one + many)
        assert [t[0] for t in one] == list(range(30)) and all(t[3] == t[0] for t in one)
        assert [t[0] for t in many] == list(range(0, 200, 2)) and all(t[3] == t[0] for t in many)


def test_btf_record_type_decodes_structs():
    from corepy.btf import BTF
    from corepy.btf.codec import Codec
    from corepy.errors import CorepyError
    from corepy.ringbuf import RingBuffer

    btf = BTF.from_file(fixture_obj("bootstrap"))
    entry = btf.find_one("trace_entry")  # {u16 type; u8 flags; u8 preempt_count; int pid}: 8 bytes
    by_name: list = []
    by_codec: list = []
    with Producer(PAGE * 8, entry.size) as p, Producer(PAGE * 8, entry.size) as q, \
            RingBuffer(p.ring, by_name.append, record_type="trace_entry", btf=btf) as rb:
        rb.add(q.ring, by_codec.extend, record_type=Codec(btf, entry.id), batch=True)
        with pytest.raises(CorepyError, match="already"):
            rb.add(q.ring, print)
        p.produce(3)
        q.produce(3)
        assert rb.consume() == 6
    for records in (by_name, by_codec):
        assert [(e.type, e.flags, e.pid) for e in records] == [(0, 0, 0), (1, 0, 0), (2, 0, 0)]
    records = by_name
    assert type(records[0]).__name__ == "trace_entry"


def test_missing_type_and_wrong_map_are_named():
    from corepy.errors import CorepyError
    from corepy.maps import Map
    from corepy.ringbuf import RingBuffer
    from corepy.syscalls.uapi import MapType

    with Producer(PAGE, 8) as p:
        with pytest.raises(CorepyError, match="without BTF"):
            RingBuffer(p.ring, print, record_type="event")
        with pytest.raises(CorepyError, match="not a ring buffer"):
            RingBuffer(p.stats, print)
    with Map.create(MapType.ARRAY, 4, 4, 1) as arr, pytest.raises(CorepyError, match="not a ring"):
        RingBuffer(arr.fileno(), print)
    import corepy

    with corepy.open(fixture_obj("bootstrap")) as obj, pytest.raises(CorepyError, match="'rb' is not a live map"):
        RingBuffer(obj.maps["rb"], print)  # a MapSpec: not loaded yet


def test_several_rings_one_poller():
    from corepy.ringbuf import RingBuffer

    got: dict[str, list[int]] = {"a": [], "b": []}
    with Producer(PAGE, 16, name="rb_a") as a, Producer(PAGE * 2, 16, name="rb_b") as b:
        with RingBuffer() as rb:
            rb.add(a.ring, lambda v: got["a"].append(v.cast("Q")[0]))
            rb.add(b.ring, lambda v: got["b"].append(v.cast("Q")[0]))
            b.produce(7)
            assert rb.poll(1.0) == 7  # only the ready ring
            a.produce(3)
            b.produce(2)
            assert rb.poll(1.0) + rb.poll(0) == 5
    assert got == {"a": [0, 1, 2], "b": list(range(9))}


def test_asyncio_iteration_without_threads():
    from corepy.ringbuf import RingBuffer

    with Producer(PAGE * 4, 16) as p, RingBuffer(p.ring) as rb:
        async def main() -> list[bytes]:
            loop = asyncio.get_running_loop()
            p.produce(3)  # ready before iteration starts
            loop.call_later(0.05, p.produce, 4)  # arrives while the loop waits on the epoll fd
            out = []
            async for record in rb:
                out.append(record)
                if len(out) == 7:
                    break
            assert await rb.poll_async(0.01) == 0
            return out

        records = asyncio.run(main())
    assert all(isinstance(r, bytes) for r in records)
    assert seqs_of(records, 16) == list(range(7))


def test_callback_error_propagates_and_record_counts_as_consumed():
    from corepy.ringbuf import RingBuffer

    calls = []

    def boom(view):
        calls.append(bytes(view))
        if len(calls) == 2:
            raise RuntimeError("stop here")

    with Producer(PAGE, 8) as p, RingBuffer(p.ring, boom) as rb:
        p.produce(4)
        with pytest.raises(RuntimeError, match="stop here"):
            rb.consume()
        assert rb.available() == 2 * 16
        assert rb.consume() == 2
    assert seqs_of(calls, 8) == [0, 1, 2, 3]


# --- user ring buffer: user space produces, a BPF program drains ----------------------------

HELPER_RINGBUF_OUTPUT, HELPER_DYNPTR_READ, HELPER_USER_RINGBUF_DRAIN = 130, 201, 209


def drain_insns(user_rb_fd: int, echo_fd: int, stats_fd: int) -> tuple[list[Insn], int]:
    """``drain(ctx)``: bpf_user_ringbuf_drain(user_rb, on_sample, NULL, 0); ``on_sample(dynptr)``:
    read 16 bytes (else stats->short++), echo them into the ``echo`` ring buffer, stats->drained++.
    Returns the instructions and the index where ``on_sample`` starts."""
    from corepy.asm.insn import LD_IMM64, PSEUDO_FUNC

    callback = [mov_reg(6, 1)] + _lookup_stats(stats_fd)
    read = [mov_reg(1, 10), Insn(ALU64 | ADD | K, 1, 0, 0, -24), mov_imm(2, 16), mov_reg(3, 6), mov_imm(4, 0),
            mov_imm(5, 0), Insn(CALL_INSN, imm=HELPER_DYNPTR_READ)]
    short = [mov_imm(1, 1), Insn(STX | ATOMIC | DW, 7, 1, 8, ADD)]
    echo = ld_map_fd(1, echo_fd) + [mov_reg(2, 10), Insn(ALU64 | ADD | K, 2, 0, 0, -24), mov_imm(3, 16), mov_imm(4, 0),
                                    Insn(CALL_INSN, imm=HELPER_RINGBUF_OUTPUT),
                                    mov_imm(1, 1), Insn(STX | ATOMIC | DW, 7, 1, 0, ADD), Insn(JMP, off=len(short))]
    tail = [mov_imm(0, 0)] + exit_insn()
    body = read + [Insn(JMP | JNE | K, 0, 0, len(echo), 0)] + echo + short
    callback += [Insn(JMP | JEQ | K, 0, 0, len(body), 0), mov_reg(7, 0)] + body + tail
    main = ld_map_fd(1, user_rb_fd) + [Insn(LD_IMM64, 2, PSEUDO_FUNC, 0, 0), Insn(0), mov_imm(3, 0), mov_imm(4, 0),
                                       Insn(CALL_INSN, imm=HELPER_USER_RINGBUF_DRAIN)] + tail
    main[2].imm = len(main) - 2 - 1  # PSEUDO_FUNC: the callback starts at this insn + imm + 1
    return main + callback, len(main)


def _lookup_stats(stats_fd: int) -> list[Insn]:
    """``r0 = lookup(stats, &(u32)0)`` (clobbers r1-r5)."""
    return [Insn(ST | MEM | W, 10, 0, -4, 0), mov_reg(2, 10), Insn(ALU64 | ADD | K, 2, 0, 0, -4)] + \
        ld_map_fd(1, stats_fd) + [Insn(CALL_INSN, imm=HELPER_MAP_LOOKUP_ELEM)]


def load_drain(user_rb, echo, stats):
    """The drain program with the BTF func_info a callback needs (two static FUNCs)."""
    from corepy.btf.types import Func, FuncProto, Int, IntEncoding, Param, Ptr
    from corepy.btf.writer import BTFBuilder
    from corepy.programs import Program
    from corepy.syscalls.load import btf_load, prog_load
    from corepy.syscalls.uapi import ProgType

    insns, callback_at = drain_insns(user_rb.fileno(), echo.fileno(), stats.fileno())
    b = BTFBuilder()
    int_id = b.add(Int(0, "int", 4, IntEncoding.SIGNED, 0, 32))
    ptr_id = b.add(Ptr(0, 0))
    main_proto = b.add(FuncProto(0, int_id, (Param("ctx", ptr_id),)))
    main_id = b.add(Func(0, "drain", main_proto))
    cb_proto = b.add(FuncProto(0, int_id, (Param("dynptr", ptr_id), Param("ctx", ptr_id))))
    cb_id = b.add(Func(0, "on_sample", cb_proto))
    with btf_load(b.build()) as btf_fd:
        func_info = struct.pack("<IIII", 0, main_id, callback_at, cb_id)
        fd = prog_load(ProgType.SOCKET_FILTER, insns, name="user_rb_drain", btf_fd=btf_fd,
                       func_info=func_info, func_info_rec_size=8)
    return Program(fd, name="user_rb_drain", prog_type=ProgType.SOCKET_FILTER)


def test_user_ring_buffer_samples_drained_by_bpf_and_echoed_back():
    from corepy.errors import CorepyError
    from corepy.maps import Map
    from corepy.ringbuf import RingBuffer, UserRingBuffer
    from corepy.syscalls.features import probe
    from corepy.syscalls.uapi import MapType

    support = probe("map_type", MapType.USER_RINGBUF)
    if not support:
        pytest.skip(support.reason)
    echoed: list[tuple[int, int]] = []
    with Map.create(MapType.USER_RINGBUF, 0, 0, PAGE, name="user_rb") as user_rb, \
            Map.create(MapType.RINGBUF, 0, 0, PAGE * 16, name="echo") as echo, \
            Map.create(MapType.ARRAY, 4, 16, 1, name="drain_stats") as stats, \
            load_drain(user_rb, echo, stats) as prog, \
            UserRingBuffer(user_rb) as urb, \
            RingBuffer(echo, echoed.append, record_type=struct.Struct("<QQ")) as rb:
        assert urb.free() == PAGE
        for i in range(10):
            assert urb.write(struct.pack("<QQ", i, i * i))
        r = urb.reserve(16)
        r.data[:] = struct.pack("<QQ", 10, 100)
        urb.reserve(16).discard()  # skipped by the kernel
        assert urb.write(b"short")  # drained, but too short for the 16-byte read
        r.submit()
        prog.test_run(PACKET)
        assert rb.consume() == 11
        assert echoed == [(i, i * i) for i in range(11)]
        drained, short = struct.unpack("<QQ", stats.raw[struct.pack("<I", 0)])
        assert (drained, short) == (11, 1) and urb.free() == PAGE
        # a full ring: write() says so, and waits for the kernel to drain when asked to
        n = 0
        while urb.write(struct.pack("<QQ", 100 + n, 0)):
            n += 1
        assert n == PAGE // 24 and urb.free() < 24
        assert not urb.write(bytes(16), timeout=0.01)
        drainer = threading.Timer(0.05, prog.test_run, args=(PACKET,))
        drainer.start()
        assert urb.write(struct.pack("<QQ", 100 + n, 0), timeout=5)
        drainer.join()
        prog.test_run(PACKET)
        rb.consume()
        assert [s for s, _ in echoed[11:]] == list(range(100, 100 + n + 1))
        with pytest.raises(CorepyError, match="cannot fit"):
            urb.reserve(PAGE)


@pytest.mark.parametrize("batch", [False, True])
def test_records_shorter_than_their_type_are_refused_after_the_good_ones(batch):
    from corepy.errors import CorepyError
    from corepy.ringbuf import RingBuffer

    got: list = []
    with Producer(PAGE, 16) as short, Producer(PAGE, 32) as good:
        sink = got.extend if batch else got.append
        with RingBuffer(good.ring, sink, record_type=struct.Struct("<QQQQ"), batch=batch) as rb:
            rb.add(short.ring, sink, record_type=struct.Struct("<QQQQ"), batch=batch)
            good.produce(3)
            short.produce(2)
            with pytest.raises(CorepyError, match="16-byte record is shorter than its record type .32 bytes"):
                rb.consume()  # the good ring first (added first), then the first short record
            assert rb.available(0) == 0 and rb.available(1) == 24  # the bad record was consumed
            with pytest.raises(CorepyError, match="shorter"):
                rb.consume()
            assert rb.available(1) == 0 and rb.consume() == 0
    assert [t[0] for t in got] == [0, 1, 2]
