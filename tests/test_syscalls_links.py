"""Attach commands on the real kernel: cgroup PROG_ATTACH/QUERY/DETACH, cgroup and tcx links,
run-time stats, prog_bind_map, iterators."""

from __future__ import annotations

import errno
import os
import socket
import uuid
from pathlib import Path

import pytest

from corepy.asm.insn import ALU64, EXIT_INSN, K, MOV, Insn
from corepy.errors import SyscallError
from corepy.syscalls import features, links, load, maps, objects, run
from corepy.syscalls.uapi import AttachFlag, AttachType, LinkType, MapType, ProgType
from tests.conftest import requires_root

pytestmark = requires_root


def ret(value: int) -> list[Insn]:
    return [Insn(ALU64 | MOV | K, dst=0, imm=value), Insn(EXIT_INSN)]


def cgroup2_root() -> Path:
    with open("/proc/self/mounts") as f:
        for line in f:
            _, target, fstype, *_ = line.split()
            if fstype == "cgroup2":
                return Path(target)
    pytest.skip("no cgroup2 hierarchy mounted (see /proc/self/mounts)")


@pytest.fixture
def cgroup() -> Path:
    path = cgroup2_root() / f"corepy-test-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        path.rmdir()


def test_cgroup_prog_attach_query_detach(cgroup: Path) -> None:
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with (
            load.prog_load(ProgType.CGROUP_SKB, ret(1), name="cg_a", expected_attach_type=AttachType.CGROUP_INET_INGRESS) as a,
            load.prog_load(ProgType.CGROUP_SKB, ret(1), name="cg_b", expected_attach_type=AttachType.CGROUP_INET_INGRESS) as b,
        ):
            a_id, b_id = objects.prog_info(a).info.id, objects.prog_info(b).info.id
            links.prog_attach(a, fd, AttachType.CGROUP_INET_INGRESS, flags=AttachFlag.ALLOW_MULTI)
            try:
                assert links.prog_query(fd, AttachType.CGROUP_INET_INGRESS).prog_ids == [a_id]
                links.prog_attach(b, fd, AttachType.CGROUP_INET_INGRESS, flags=AttachFlag.ALLOW_MULTI, replace_prog_fd=a)
                result = links.prog_query(fd, AttachType.CGROUP_INET_INGRESS)
                assert result.prog_ids == [b_id] and result.attach_flags == AttachFlag.ALLOW_MULTI
            finally:
                for prog in (a, b):
                    try:
                        links.prog_detach(fd, AttachType.CGROUP_INET_INGRESS, prog)
                    except SyscallError as e:
                        assert e.errno == errno.ENOENT
            assert links.prog_query(fd, AttachType.CGROUP_INET_INGRESS).prog_ids == []
    finally:
        os.close(fd)


def test_cgroup_link(cgroup: Path) -> None:
    if not features.has_link_type(LinkType.CGROUP):
        pytest.skip(features.feature_reason("link_type", LinkType.CGROUP))
    fd = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with load.prog_load(ProgType.CGROUP_SKB, ret(1), expected_attach_type=AttachType.CGROUP_INET_EGRESS) as prog:
            with links.link_create(prog, fd, AttachType.CGROUP_INET_EGRESS) as link:
                info = objects.link_info(link)
                assert info.type == LinkType.CGROUP
                assert info.cgroup.cgroup_id == os.stat(cgroup).st_ino
                assert links.prog_query(fd, AttachType.CGROUP_INET_EGRESS).prog_ids == [info.prog_id]
            assert links.prog_query(fd, AttachType.CGROUP_INET_EGRESS).prog_ids == []
    finally:
        os.close(fd)


def test_tcx_links_ordering_and_query() -> None:
    if not features.has_link_type(LinkType.TCX):
        pytest.skip(features.feature_reason("link_type", LinkType.TCX))
    lo = socket.if_nametoindex("lo")
    with (
        load.prog_load(ProgType.SCHED_CLS, ret(-1), name="tcx_a", expected_attach_type=AttachType.TCX_INGRESS) as a,
        load.prog_load(ProgType.SCHED_CLS, ret(-1), name="tcx_b", expected_attach_type=AttachType.TCX_INGRESS) as b,
    ):
        a_id, b_id = objects.prog_info(a).info.id, objects.prog_info(b).info.id
        before = links.prog_query(lo, AttachType.TCX_INGRESS, with_links=True)
        with links.link_create_tcx(a, lo, AttachType.TCX_INGRESS) as link_a:
            # b goes in front of a, addressed by a's program id
            with links.link_create_tcx(b, lo, AttachType.TCX_INGRESS, flags=AttachFlag.BEFORE, relative_id=a_id) as link_b:
                now = links.prog_query(lo, AttachType.TCX_INGRESS, with_links=True)
                ours = [p for p in now.prog_ids if p in (a_id, b_id)]
                assert ours == [b_id, a_id]
                assert objects.link_info(link_b).id in now.link_ids
                assert now.revision > before.revision
                assert objects.link_info(link_a).tcx.ifindex == lo
        assert links.prog_query(lo, AttachType.TCX_INGRESS).prog_ids == before.prog_ids


def test_enable_stats_counts_runs() -> None:
    with load.prog_load(ProgType.SOCKET_FILTER, ret(0)) as prog:
        with run.enable_stats():
            run.prog_test_run(prog, bytes(64), repeat=5)
            info = objects.prog_info(prog).info
        assert info.run_cnt >= 5
        assert info.run_time_ns > 0


def test_prog_bind_map() -> None:
    with load.prog_load(ProgType.SOCKET_FILTER, ret(0)) as prog:
        with maps.map_create(MapType.ARRAY, 4, 4, 1, name="bound") as m:
            map_id = objects.map_info(m).id
            links.prog_bind_map(prog, m)
        # the map lives on through the program
        assert objects.prog_info(prog).map_ids == [map_id]
        with objects.get_fd_by_id("map", map_id) as again:
            assert objects.map_info(again).name == b"bound"


def test_iterator() -> None:
    # iterators are tracing programs with a BTF target: they need what fentry needs
    if not features.has_prog_type(ProgType.TRACING):
        pytest.skip(features.feature_reason("prog_type", ProgType.TRACING))
    from corepy.btf.spec import BTF  # the BTF layer finds the iterator's target function
    from corepy.btf.types import Kind

    target = BTF.kernel().find_one("bpf_iter_bpf_map", Kind.FUNC).id
    with load.prog_load(ProgType.TRACING, ret(0), expected_attach_type=AttachType.TRACE_ITER, attach_btf_id=target) as prog:
        with links.link_create_iter(prog) as link, links.iter_create(link) as it:
            assert os.read(it.fileno(), 4096) == b""
