"""Live programs on the real kernel: load (hand-assembled and from fixtures), test_run, info,
pin/from_pinned/from_id, verifier errors explained with source lines and CO-RE poison.

Also holds the tiny assembler helpers the attach tests share (``counter_program``)."""

from __future__ import annotations

import errno
import os
import struct
import uuid

import pytest

from conftest import open_fds, requires_root

from corepy.asm.insn import (ADD, ALU64, ATOMIC, CALL_INSN, DW, EXIT_INSN, JEQ, JMP, JNE, K, LD_IMM64, LDX, MEM, MOV,
                             PSEUDO_MAP_FD, RSH, ST, STX, W, X, Insn)
from corepy.errors import VerifierError

pytestmark = requires_root

# --- a tiny assembler for test programs ------------------------------------

HELPER_MAP_LOOKUP_ELEM = 1
HELPER_GET_CURRENT_PID_TGID = 14


def mov_imm(dst: int, imm: int) -> Insn:
    return Insn(ALU64 | MOV | K, dst, 0, 0, imm)


def mov_reg(dst: int, src: int) -> Insn:
    return Insn(ALU64 | MOV | X, dst, src)


def exit_insn() -> list[Insn]:
    return [Insn(EXIT_INSN)]


def ld_map_fd(dst: int, fd: int) -> list[Insn]:
    return [Insn(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd), Insn(0)]


def counter_program(map_fd: int, *, retval: int = 0, pid: int | None = None, ld_map: bool = True,
                    ctx_u64: tuple[int, int] | None = None) -> list[Insn]:
    """``if (ctx_u64 && *(u64 *)(ctx + off) != value) return retval; if (pid && current tgid != pid)
    return retval; counts[0] += 1; return retval;`` on an ARRAY map (u32 -> u64).
    ``ld_map=False`` leaves the ld_imm64 with imm 0 (for MapRef patching)."""
    body: list[Insn] = []
    body += ld_map_fd(1, map_fd if ld_map else 0)
    body += [Insn(ST | MEM | W, 10, 0, -4, 0), mov_reg(2, 10), Insn(ALU64 | ADD | K, 2, 0, 0, -4),
             Insn(CALL_INSN, imm=HELPER_MAP_LOOKUP_ELEM),
             Insn(JMP | JEQ | K, 0, 0, 2, 0),
             mov_imm(1, 1),
             Insn(STX | ATOMIC | DW, 0, 1, 0, ADD)]
    tail = [mov_imm(0, retval)] + exit_insn()
    head: list[Insn] = []
    if pid is not None:
        head = [Insn(CALL_INSN, imm=HELPER_GET_CURRENT_PID_TGID), Insn(ALU64 | RSH | K, 0, 0, 0, 32),
                Insn(JMP | JNE | K, 0, 0, len(body), pid)]
    if ctx_u64 is not None:
        off, value = ctx_u64
        head = [Insn(LDX | MEM | DW, 2, 1, off, 0), Insn(JMP | JNE | K, 2, 0, len(head) + len(body), value)] + head
    return head + body + tail


def array_map(name: str = "counts", entries: int = 1):
    from corepy.syscalls.maps import map_create
    from corepy.syscalls.uapi import MapType

    return map_create(MapType.ARRAY, 4, 8, entries, name=name)


def read_counter(map_fd, key: int = 0) -> int:
    from corepy.syscalls.maps import map_lookup_elem

    value = map_lookup_elem(map_fd, struct.pack("<I", key), 8)
    assert value is not None
    return struct.unpack("<Q", value)[0]


def bpffs_dir():
    """A private directory on bpffs (mounted if absent); caller removes it."""
    if not os.path.ismount("/sys/fs/bpf"):
        os.system("mount -t bpf bpf /sys/fs/bpf")
    path = f"/sys/fs/bpf/corepy-test-{uuid.uuid4().hex[:12]}"
    os.mkdir(path)
    return path


# --- tests -------------------------------------------------------------------

RET2 = [mov_imm(0, 2)] + exit_insn()


def _load(insns, name="t", prog_type=None, **kw):
    from corepy.programs import load_program
    from corepy.syscalls.uapi import ProgType

    return load_program(insns, name=name, prog_type=prog_type or ProgType.SOCKET_FILTER, **kw)


def test_load_test_run_info_close():
    from corepy.syscalls.uapi import ProgType

    before = open_fds()
    with _load(RET2, name="ret_two") as prog:
        res = prog.test_run(b"\x00" * 64)
        assert res.retval == 2
        info = prog.info()
        assert info.name == "ret_two" and info.type == ProgType.SOCKET_FILTER
        assert info.id > 0 and len(info.tag) == 16
        assert [(i.code, i.dst, i.src, i.off, i.imm) for i in info.xlated] == \
               [(i.code, i.dst, i.src, i.off, i.imm) for i in RET2]
        assert prog.test_run(b"\x00" * 64, repeat=100).retval == 2
    assert prog.closed and open_fds() == before
    with pytest.raises(ValueError, match="closed"):
        prog.fd


def test_long_names_are_truncated_for_the_kernel():
    with _load(RET2, name="a_program_name_longer_than_fifteen") as prog:
        assert prog.info().name == "a_program_name_"
        assert prog.name == "a_program_name_longer_than_fifteen"


def test_map_refs_are_patched_with_fds():
    from corepy.object.link import LinkedProgram, MapRef
    from corepy.programs import load_program
    from corepy.syscalls.uapi import ProgType

    with array_map() as counts:
        insns = counter_program(0, retval=1, ld_map=False)
        linked = LinkedProgram("counter", insns, [], [], [MapRef(0, "counts", "fd")])
        with load_program(linked, name="counter", prog_type=ProgType.SOCKET_FILTER,
                          map_fds={"counts": counts.fileno()}) as prog:
            for _ in range(3):
                assert prog.test_run(b"\x00" * 64).retval == 1
            assert read_counter(counts) == 3
            assert prog.info().map_ids == (_map_id(counts),)
        assert insns[0].imm == 0  # the LinkedProgram is not modified


def _map_id(fd) -> int:
    from corepy.syscalls.objects import map_info

    return map_info(fd).id


def test_pin_from_pinned_from_id_round_trip():
    from corepy.programs import Program

    root = bpffs_dir()
    try:
        with _load(RET2, name="pinned") as prog:
            pid = prog.info().id
            prog.pin(f"{root}/prog")
            with Program.from_pinned(f"{root}/prog") as again:
                assert again.info().id == pid and again.name == "pinned"
                assert again.test_run(b"\x00" * 16).retval == 2
            with Program.from_id(pid) as by_id:
                assert by_id.info().id == pid
    finally:
        for name in os.listdir(root):
            os.unlink(f"{root}/{name}")
        os.rmdir(root)


def test_verifier_error_carries_log_and_source_line():
    from corepy.btf.ext import LineInfo
    from corepy.programs import load_program
    from corepy.syscalls.uapi import ProgType

    bad = [mov_imm(0, 0), mov_reg(0, 3)] + exit_insn()  # r3 is never written
    lines = [LineInfo(0, "prog.bpf.c", "int x = 0;", 10, 5), LineInfo(1, "prog.bpf.c", "return y;", 11, 2)]

    from corepy.object.link import LinkedProgram

    before = open_fds()
    with pytest.raises(VerifierError) as exc:
        load_program(LinkedProgram("bad", bad, [], lines, []), name="bad", prog_type=ProgType.SOCKET_FILTER)
    err = exc.value
    assert err.errno == errno.EACCES
    assert "R3 !read_ok" in err.log
    assert err.insn == 1
    assert "prog.bpf.c:11: return y;" in str(err)
    assert open_fds() == before


def test_unknown_program_type_is_a_clear_error():
    from corepy.errors import SyscallError

    with pytest.raises(SyscallError, match="BPF_PROG_LOAD"):
        _load(RET2, prog_type=1000)


# --- fixture objects through the object layer ------------------------------------

def load_fixture(name: str, *, enable: tuple[str, ...] = (), rodata: dict | None = None):
    """Parse fixtures/NAME.bpf.o (or the object at path NAME), resolve externs, create its maps
    (initial data set, .rodata/.kconfig frozen), CO-RE relocate against the running kernel and
    link + load every autoload program (plus ``enable``). Returns (programs, map fds, spec);
    the caller closes them with :func:`closing`. (The Object API does all this for users.)"""
    from corepy.btf import BTF
    from corepy.object import ObjectSpec, relocate_core, resolve_externs
    from corepy.object.link import link
    from corepy.programs import load_program
    from corepy.syscalls import features
    from corepy.syscalls.maps import map_create, map_freeze, map_update_elem

    from conftest import fixture_obj

    spec = ObjectSpec.from_file(name if "/" in name else str(fixture_obj(name)))
    for prog_name in enable:
        spec.programs[prog_name].autoload = True
    for var, value in (rodata or {}).items():
        spec.variables[var].value = value
    kernel = BTF.kernel()
    externs = None
    if spec.externs:
        externs = resolve_externs(spec, kernel_btf=kernel, features={
            "LINUX_HAS_BPF_COOKIE": features.has_bpf_cookie(),
            "LINUX_HAS_SYSCALL_WRAPPER": features.has_syscall_wrapper()})
    fds, progs = {}, {}
    try:
        for m in spec.maps.values():
            fds[m.name] = fd = map_create(m.type, m.key_size, m.value_size, m.max_entries, flags=m.flags,
                                          name=m.kernel_name or m.name[:15])
            data = externs.kconfig_data if m.name == ".kconfig" and externs is not None else m.data
            if data is not None:
                map_update_elem(fd, b"\0\0\0\0", bytes(data))
            if m.readonly:
                map_freeze(fd)
        records = relocate_core(spec, kernel)
        for p in spec.programs.values():
            if not p.autoload:
                continue
            linked = link(spec, p, core=records, externs=externs)
            progs[p.name] = load_program(
                linked, name=p.name, prog_type=p.prog_type, expected_attach_type=p.expected_attach_type,
                license=p.license, kern_version=p.kern_version, map_fds={k: v.fileno() for k, v in fds.items()},
                attach_to=p.attach_to, section=p.section, sleepable=p.sleepable, prog_flags=p.prog_flags)
    except BaseException:
        closing(progs, fds)
        raise
    return progs, fds, spec


def closing(progs, fds):
    for p in progs.values():
        p.close()
    for f in fds.values():
        f.close()


def test_poisoned_core_relocation_is_explained():
    from corepy.btf import BTF

    BTF.kernel()
    before = open_fds()
    with pytest.raises(VerifierError) as exc:
        load_fixture("core_zoo", enable=("poisoned",))
    text = str(exc.value)
    assert "poisoned" in text
    assert "corepy_missing" in text  # the field the relocation looked for
    assert "core_zoo.bpf.c" in text  # the source line of the failing instruction
    assert "CO-RE relocation" in text
    assert open_fds() == before


def test_fixture_programs_load_and_run():
    progs, fds, spec = load_fixture("core_zoo")
    try:
        assert progs and all(p.info().id > 0 for p in progs.values())
        assert "poisoned" not in progs  # autoload off ("?raw_tp/...")
    finally:
        closing(progs, fds)


def test_verifier_log_larger_than_the_first_buffer_is_complete():
    """A log of several hundred KiB (log_level 2 on a long program) comes back whole."""
    from corepy.programs import load_program
    from corepy.syscalls.uapi import ProgType

    insns = [mov_imm(0, 0)] + [mov_imm(1, i) for i in range(6000)] + [mov_reg(0, 5)] + exit_insn()
    with pytest.raises(VerifierError) as exc:
        load_program(insns, name="long_log", prog_type=ProgType.SOCKET_FILTER, log_level=2)
    log = exc.value.log
    assert len(log) > 1 << 17  # well past the first 64 KiB buffer
    assert log.lstrip().startswith("func#0") or log.lstrip().startswith("0:")
    assert "6001: (bf) r0 = r5" in log and "R5 !read_ok" in log
    assert exc.value.insn == 6001
