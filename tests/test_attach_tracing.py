"""BTF tracing programs: fentry/fexit/lsm (load refused with EPERM on this kernel: clear
error, attach tests skip with the probed reason) and iterators (iter/task read back)."""

from __future__ import annotations

import os
import struct

import pytest

from conftest import requires_root
from test_programs import array_map, counter_program, open_fds, read_counter, mov_imm, exit_insn

from corepy.asm.insn import ADD, ALU64, CALL_INSN, DW, EXIT_INSN, JEQ, JMP, K, LDX, MEM, MOV, STX, W, X, Insn

pytestmark = requires_root

TRACING_KINDS = {  # section kind -> (prog type name, attach type name, target); getppid/open trigger them
    "fentry": ("TRACING", "TRACE_FENTRY", "vfs_getattr"),
    "fexit": ("TRACING", "TRACE_FEXIT", "vfs_getattr"),
    "lsm": ("LSM", "LSM_MAC", "file_open"),
}


def _load_tracing(kind: str, insns):
    from corepy.programs import load_program
    from corepy.syscalls.uapi import AttachType, ProgType

    prog_type, attach_type, target = TRACING_KINDS[kind]
    return load_program(insns, name=f"t_{kind}", prog_type=ProgType[prog_type],
                        expected_attach_type=AttachType[attach_type], section=f"{kind}/{target}", attach_to=target)


def _probe(kind: str):
    """None when ``kind`` programs load here, else the load error."""
    from corepy.errors import CorepyError

    try:
        with _load_tracing(kind, [mov_imm(0, 0)] + exit_insn()):
            return None
    except CorepyError as e:
        return e


@pytest.mark.parametrize("kind", sorted(TRACING_KINDS))
def test_refused_trampoline_program_error_is_clear(kind):
    from corepy.btf import BTF
    from corepy.errors import SyscallError

    BTF.kernel()  # opened once per process and cached: not a leak
    before = open_fds()
    err = _probe(kind)
    if err is None:
        pytest.skip(f"{kind} programs load on this kernel (test_{kind}_attach covers them)")
    assert isinstance(err, SyscallError) and err.command == "BPF_PROG_LOAD"
    text = str(err)
    assert f"t_{kind}" in text and kind in text and TRACING_KINDS[kind][2] in text
    assert open_fds() == before


@pytest.mark.parametrize("kind", sorted(TRACING_KINDS))
def test_trampoline_attach_counts(kind):
    err = _probe(kind)
    if err is not None:
        pytest.skip(f"{kind} programs cannot load here (probed): {err}")
    with array_map() as counts, _load_tracing(kind, counter_program(counts.fileno(), pid=os.getpid())) as prog:
        with prog.attach():
            if kind == "lsm":
                with open("/dev/null"):
                    pass
            else:
                os.stat("/")
        assert read_counter(counts) >= 1


def test_attach_btf_id_missing_target_is_named():
    from corepy.errors import NotSupportedError
    from corepy.programs import find_attach_btf_id

    with pytest.raises(NotSupportedError, match="btf_trace_corepy_nope"):
        find_attach_btf_id("corepy_nope", "tp_btf")
    with pytest.raises(NotSupportedError, match="bpf_iter_corepy_nope"):
        find_attach_btf_id("corepy_nope", "iter")


def _task_iter_program(pid_off: int) -> list[Insn]:
    """iter/task: for each task, bpf_seq_write(seq, &task->pid, 4)."""
    seq_write = 127
    return [
        Insn(LDX | MEM | DW, 6, 1, 0, 0),  # r6 = ctx->meta
        Insn(LDX | MEM | DW, 7, 1, 8, 0),  # r7 = ctx->task
        Insn(JMP | JEQ | K, 7, 0, 7, 0),  # if !task goto out
        Insn(LDX | MEM | W, 2, 7, pid_off, 0),  # r2 = task->pid
        Insn(STX | MEM | W, 10, 2, -4, 0),
        Insn(LDX | MEM | DW, 1, 6, 0, 0),  # r1 = meta->seq
        Insn(ALU64 | MOV | X, 2, 10), Insn(ALU64 | ADD | K, 2, 0, 0, -4),
        Insn(ALU64 | MOV | K, 3, 0, 0, 4),
        Insn(CALL_INSN, imm=seq_write),
        Insn(ALU64 | MOV | K, 0, 0, 0, 0),  # out:
        Insn(EXIT_INSN),
    ]


def test_iter_task_lists_this_process():
    from corepy.btf import BTF
    from corepy.btf.types import Kind
    from corepy.programs import load_program
    from corepy.syscalls.uapi import AttachType, LinkType, ProgType

    task = BTF.kernel().find_one("task_struct", Kind.STRUCT)
    pid_off = next(m.bit_offset // 8 for m in task.members if m.name == "pid")
    before = open_fds()
    with load_program(_task_iter_program(pid_off), name="dump_tasks", prog_type=ProgType.TRACING,
                      expected_attach_type=AttachType.TRACE_ITER, section="iter/task", attach_to="task") as prog:
        with prog.attach() as link:
            assert link.info().type == LinkType.ITER
            assert link.info().details["target_name"] == "task"
            out = link.read()
            again = link.read()  # every read runs the iterator afresh
    pids = set(struct.unpack(f"<{len(out) // 4}i", out))
    assert os.getpid() in pids, (sorted(pids)[-20:], len(out), os.getpid())
    proc_pids = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    assert len(pids & proc_pids) >= 0.9 * len(proc_pids)
    assert len(again) > 0
    assert open_fds() == before


def test_iter_bpf_map_elem_with_map_fd():
    """iter/bpf_map_elem over one map (the link's map_fd): writes each key."""
    from corepy.programs import load_program
    from corepy.syscalls.maps import map_create, map_update_elem
    from corepy.syscalls.uapi import AttachType, MapType, ProgType

    seq_write = 127
    insns = [
        Insn(LDX | MEM | DW, 6, 1, 0, 0),  # r6 = ctx->meta
        Insn(LDX | MEM | DW, 2, 1, 16, 0),  # r2 = ctx->key
        Insn(JMP | JEQ | K, 2, 0, 3, 0),  # if !key goto out
        Insn(LDX | MEM | DW, 1, 6, 0, 0),  # r1 = meta->seq
        Insn(ALU64 | MOV | K, 3, 0, 0, 4),
        Insn(CALL_INSN, imm=seq_write),
        Insn(ALU64 | MOV | K, 0, 0, 0, 0),  # out:
        Insn(EXIT_INSN),
    ]
    keys = {3, 17, 99, 1000}
    before = open_fds()
    with map_create(MapType.HASH, 4, 8, 16, name="iter_me") as m:
        for k in keys:
            map_update_elem(m, struct.pack("<I", k), struct.pack("<Q", k * 2))
        with load_program(insns, name="dump_keys", prog_type=ProgType.TRACING,
                          expected_attach_type=AttachType.TRACE_ITER, section="iter/bpf_map_elem",
                          attach_to="bpf_map_elem") as prog:
            with prog.attach_iter(map_fd=m.fileno()) as link:
                assert link.info().details["map"]["map_id"] > 0
                out = link.read()
    assert set(struct.unpack(f"<{len(out) // 4}I", out)) == keys
    assert open_fds() == before
