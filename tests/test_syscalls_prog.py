"""Program load, verifier logs, test runs, ids/info, pinning, raw tracepoints, links and fd hygiene."""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import uuid
from pathlib import Path

import pytest

from corepy.asm.insn import ALU64, EXIT_INSN, JMP, K, LD_IMM64, MOV, PSEUDO_MAP_FD, X, Insn, decode, encode
from corepy.errors import SyscallError, VerifierError
from corepy.syscalls import links, load, maps, objects, run
from corepy.syscalls.uapi import AttachType, LinkType, MapType, ProgFlag, ProgType
from conftest import open_fds, requires_root

pytestmark = requires_root

BPFFS = Path("/sys/fs/bpf")


def ret(value: int) -> list[Insn]:
    """r0 = value; exit"""
    return [Insn(ALU64 | MOV | K, dst=0, imm=value), Insn(EXIT_INSN)]


def test_hand_assembled_program_returns_2() -> None:
    with load.prog_load(ProgType.SOCKET_FILTER, ret(2), name="ret2") as prog:
        result = run.prog_test_run(prog, b"\x00" * 64, repeat=3)
        assert result.retval == 2
        assert result.duration_ns >= 0


def test_ctx_only_test_runs() -> None:
    # raw_tp and syscall programs run on a context only: no data, no repeat
    with load.prog_load(ProgType.RAW_TRACEPOINT, ret(5)) as prog:
        assert run.prog_test_run(prog, ctx=bytes(8)).retval == 5
    with load.prog_load(ProgType.SYSCALL, ret(3), prog_flags=ProgFlag.SLEEPABLE) as prog:
        assert run.prog_test_run(prog, ctx=bytes(16)).retval == 3


def test_skb_ctx_round_trip() -> None:
    # struct __sk_buff in and out: the kernel copies back the fields it allows (mark is one)
    skb = bytearray(192)  # sizeof(struct __sk_buff)
    struct.pack_into("<I", skb, 8, 0x1234)  # mark
    with load.prog_load(ProgType.SCHED_CLS, ret(0)) as prog:
        result = run.prog_test_run(prog, bytes(64), bytes(skb), ctx_size_out=len(skb))
        assert result.ctx is not None and len(result.ctx) == len(skb)
        assert struct.unpack_from("<I", result.ctx, 8)[0] == 0x1234


def test_xdp_test_run_sees_data() -> None:
    # r0 = XDP_DROP(1) if first packet byte == 0x42 else XDP_PASS(2)
    from corepy.asm.insn import B, JNE, LDX, MEM, W

    insns = [
        Insn(LDX | MEM | W, dst=2, src=1, off=0),  # r2 = ctx->data
        Insn(LDX | MEM | W, dst=3, src=1, off=4),  # r3 = ctx->data_end
        Insn(ALU64 | MOV | X, dst=4, src=2),
        Insn(ALU64 | 0x00 | K, dst=4, imm=1),  # r4 += 1
        Insn(ALU64 | MOV | K, dst=0, imm=2),
        Insn(JMP | 0x20 | X, dst=4, src=3, off=3),  # if r4 > r3 goto exit
        Insn(LDX | MEM | B, dst=5, src=2, off=0),
        Insn(JMP | JNE | K, dst=5, imm=0x42, off=1),
        Insn(ALU64 | MOV | K, dst=0, imm=1),
        Insn(EXIT_INSN),
    ]
    with load.prog_load(ProgType.XDP, insns, name="xdp_peek", expected_attach_type=AttachType.XDP) as prog:
        packet = b"\x42" + bytes(63)
        dropped = run.prog_test_run(prog, packet)
        assert dropped.retval == 1
        passed = run.prog_test_run(prog, b"\x41" + bytes(63))
        assert passed.retval == 2 and passed.data == b"\x41" + bytes(63)


def test_exit_without_r0_raises_verifier_error() -> None:
    before = open_fds()
    with pytest.raises(VerifierError) as exc:
        load.prog_load(ProgType.SOCKET_FILTER, [Insn(EXIT_INSN)], name="no_r0")
    err = exc.value
    assert err.errno == errno.EACCES
    assert "R0 !read_ok" in err.log
    assert err.program == "no_r0"
    assert "R0 !read_ok" in str(err)
    assert open_fds() == before


def test_uninitialised_register_read() -> None:
    with pytest.raises(VerifierError) as exc:
        load.prog_load(ProgType.SOCKET_FILTER, [Insn(ALU64 | MOV | X, dst=0, src=5), Insn(EXIT_INSN)])
    assert "R5 !read_ok" in exc.value.log


def test_invalid_program_type_is_einval_with_empty_log() -> None:
    with pytest.raises(VerifierError) as exc:
        load.prog_load(10_000, ret(0))
    assert exc.value.errno == errno.EINVAL


def test_log_grows_until_it_fits() -> None:
    out: list[str] = []
    insns = [Insn(ALU64 | MOV | K, dst=i % 10, imm=i) for i in range(200)] + ret(0)
    with load.prog_load(ProgType.SOCKET_FILTER, insns, log_level=2, log_size=256, log_out=out):
        pass
    assert len(out) == 1 and len(out[0]) > 256
    assert "processed 202 insns" in out[0]


def test_prog_info_ids_and_xlated() -> None:
    with maps.map_create(MapType.ARRAY, 4, 8, 1, name="used_map") as m:
        insns = [
            Insn(LD_IMM64, dst=1, src=PSEUDO_MAP_FD, imm=m.fileno()),
            Insn(0),
            *ret(7),
        ]
        with load.prog_load(ProgType.SOCKET_FILTER, insns, name="with_map", license="Dual BSD/GPL") as prog:
            details = objects.prog_info(prog)
            map_id = objects.map_info(m).id
            assert details.name == "with_map"
            assert details.info.type == ProgType.SOCKET_FILTER
            assert details.map_ids == [map_id]
            assert details.info.gpl_compatible == 1
            xlated = decode(details.xlated)
            assert len(xlated) == 4 and xlated[2:] == ret(7)
            # get_next_id walks ids in order and finds both objects
            assert _find_id("prog", details.info.id)
            assert _find_id("map", map_id)
            with objects.get_fd_by_id("prog", details.info.id) as again:
                assert objects.prog_info(again).info.id == details.info.id
            with objects.get_fd_by_id("map", map_id) as again:
                assert objects.map_info(again).name == b"used_map"


def _find_id(kind: str, wanted: int) -> bool:
    current = 0
    while (current := objects.get_next_id(kind, current)) is not None:  # type: ignore[arg-type]
        if current == wanted:
            return True
    return False


def test_get_fd_by_missing_id() -> None:
    with pytest.raises(SyscallError) as exc:
        objects.get_fd_by_id("map", 0x7FFFFFF0)
    assert exc.value.errno == errno.ENOENT
    with pytest.raises(ValueError):
        objects.get_fd_by_id("nonsense", 1)  # type: ignore[arg-type]


def test_vmlinux_btf_by_id() -> None:
    current = 0
    while (current := objects.get_next_id("btf", current)) is not None:
        with objects.get_fd_by_id("btf", current) as fd:
            details = objects.btf_info(fd)
            if details.name == "vmlinux":
                assert details.info.kernel_btf == 1
                assert details.blob == Path("/sys/kernel/btf/vmlinux").read_bytes()
                return
    pytest.fail("no kernel BTF object named vmlinux found through BTF_GET_NEXT_ID")


@pytest.fixture
def bpffs_dir():
    if not os.path.ismount(BPFFS):
        subprocess.run(["mount", "-t", "bpf", "bpf", str(BPFFS)], check=True)
    path = BPFFS / f"corepy-test-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        for child in path.iterdir():
            child.unlink()
        path.rmdir()


def test_pin_and_get_round_trip(bpffs_dir: Path) -> None:
    with maps.map_create(MapType.HASH, 4, 4, 4, name="pinned") as m:
        maps.map_update_elem(m, b"kkkk", b"vvvv")
        objects.obj_pin(m, bpffs_dir / "map")
        with load.prog_load(ProgType.SOCKET_FILTER, ret(3), name="pinned_prog") as p:
            objects.obj_pin(p, bpffs_dir / "prog")
            prog_id = objects.prog_info(p).info.id
    # the originals are closed: the pins keep the objects alive
    with objects.obj_get(bpffs_dir / "map") as again:
        assert maps.map_lookup_elem(again, b"kkkk", 4) == b"vvvv"
    with objects.obj_get(bpffs_dir / "prog") as again:
        assert objects.prog_info(again).info.id == prog_id
        assert run.prog_test_run(again, bytes(64)).retval == 3
    with pytest.raises(SyscallError) as exc:
        objects.obj_get(bpffs_dir / "missing")
    assert exc.value.errno == errno.ENOENT and "missing" in str(exc.value)


def test_no_fd_leaks_over_1000_cycles() -> None:
    before = open_fds()
    for _ in range(1000):
        fd = maps.map_create(MapType.ARRAY, 4, 4, 1)
        fd.close()
        fd.close()  # idempotent
    for _ in range(20):
        with pytest.raises(VerifierError):
            load.prog_load(ProgType.SOCKET_FILTER, [Insn(EXIT_INSN)])
        with pytest.raises(SyscallError):
            maps.map_create(MapType.RINGBUF, 0, 0, 1000)
    with load.prog_load(ProgType.SOCKET_FILTER, ret(1)) as p:
        for _ in range(50):
            objects.prog_info(p)
            run.prog_test_run(p, bytes(32))
    assert open_fds() == before


def test_fd_object() -> None:
    m = maps.map_create(MapType.ARRAY, 4, 4, 1)
    number = m.fileno()
    assert repr(m) == f"<FD map {number}>"
    dup = m.dup()
    assert dup.fileno() != number
    m.close()
    assert m.closed and repr(m) == "<FD map closed>"
    with pytest.raises(ValueError):
        m.fileno()
    # the duplicate still reaches the map
    assert maps.map_lookup_elem(dup, bytes(4), 4) == bytes(4)
    dup.close()


def test_raw_tracepoint_open() -> None:
    before = open_fds()
    with load.prog_load(ProgType.RAW_TRACEPOINT, ret(0), name="raw_tp") as prog:
        with links.raw_tracepoint_open("sys_enter", prog) as link:
            info = objects.link_info(link)
            assert info.type == LinkType.RAW_TRACEPOINT
            assert info.prog_id == objects.prog_info(prog).info.id
        with pytest.raises(SyscallError) as exc:
            links.raw_tracepoint_open("no_such_tracepoint_corepy", prog)
        assert exc.value.errno == errno.ENOENT
    assert open_fds() == before


def test_xdp_link_create_update_detach() -> None:
    lo = socket_ifindex("lo")
    with (
        load.prog_load(ProgType.XDP, ret(2), name="xdp_a", expected_attach_type=AttachType.XDP) as a,
        load.prog_load(ProgType.XDP, ret(2), name="xdp_b", expected_attach_type=AttachType.XDP) as b,
    ):
        with links.link_create(a, lo, AttachType.XDP) as link:
            info = objects.link_info(link)
            assert info.type == LinkType.XDP and info.xdp.ifindex == lo
            assert info.prog_id == objects.prog_info(a).info.id
            links.link_update(link, b, old_prog_fd=a)
            assert objects.link_info(link).prog_id == objects.prog_info(b).info.id
            with pytest.raises(SyscallError) as exc:  # a is no longer the link's program
                links.link_update(link, a, old_prog_fd=a)
            assert exc.value.errno == errno.EPERM
            links.link_detach(link)
            assert objects.link_info(link).xdp.ifindex == 0
        # detached and closed: a new link can take the hook
        with links.link_create(a, lo, AttachType.XDP):
            pass


def socket_ifindex(name: str) -> int:
    import socket

    return socket.if_nametoindex(name)


def test_encode_matches_kernel_insn_count() -> None:
    insns = ret(5)
    assert len(encode(insns)) == 16
    with load.prog_load(ProgType.SOCKET_FILTER, encode(insns)) as p:
        assert objects.prog_info(p).info.xlated_prog_len == 16


def test_btf_load_and_log() -> None:
    # header + one INT type ("int", 32 bits) + strings
    strings = b"\x00int\x00"
    types = struct.pack("<III", 1, 1 << 24, 4) + struct.pack("<I", 32)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    out: list[str] = []
    with load.btf_load(header + types + strings, log_level=1, log_out=out) as btf:
        assert objects.btf_info(btf).info.btf_size == len(header + types + strings)
        assert objects.btf_info(btf).blob == header + types + strings
    assert "magic: 0xeb9f" in out[0]
    bad_types = struct.pack("<III", 1, 1 << 24, 4) + struct.pack("<I", 64 << 16 | 33)  # offset 64 > size
    bad = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(bad_types), len(bad_types), len(strings))
    with pytest.raises(SyscallError) as exc:
        load.btf_load(bad + bad_types + strings)
    assert exc.value.errno == errno.EINVAL
    assert exc.value.log  # type: ignore[attr-defined]
    assert "BPF_BTF_LOAD" in str(exc.value)
