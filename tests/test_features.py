"""Feature probes on the real kernel, checked against bpftool's own probes where it has them."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess

import pytest

from corepy.btf.types import Kind
from corepy.syscalls import features
from corepy.syscalls.uapi import Helper, LinkType, MapType, ProgType
from tests.conftest import requires_root

pytestmark = requires_root


@functools.cache
def bpftool_features() -> dict:
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed (scripts/setup-system.sh installs it)")
    # "full" also probes helpers bpftool skips by default (trace_printk, probe_write_user...)
    cmd = ["bpftool", "feature", "probe", "kernel", "full", "-j"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_must_be_true_here() -> None:
    assert features.has_map_type(MapType.HASH)
    assert features.has_map_type(MapType.RINGBUF)
    assert features.has_prog_type(ProgType.SOCKET_FILTER)
    assert features.has_btf_func()
    assert features.has_btf()
    assert features.has_prog_name()
    assert features.has_helper(ProgType.SOCKET_FILTER, Helper.map_lookup_elem)
    assert "succeeded" in features.feature_reason("map_type", MapType.HASH)


def test_bogus_map_type_is_absent_with_reason() -> None:
    bogus = max(MapType) + 1000
    assert features.has_map_type(bogus) is False
    reason = features.feature_reason("map_type", bogus)
    assert "BPF_MAP_CREATE" in reason and "EINVAL" in reason


def test_bogus_prog_type_and_helper() -> None:
    assert features.has_prog_type(max(ProgType) + 1000) is False
    assert "EINVAL" in features.feature_reason("prog_type", max(ProgType) + 1000)
    bogus_helper = max(Helper) + 1000
    assert features.has_helper(ProgType.SOCKET_FILTER, bogus_helper) is False
    assert "invalid func" in features.feature_reason("helper", ProgType.SOCKET_FILTER, bogus_helper)


def test_map_types_agree_with_bpftool() -> None:
    theirs = bpftool_features()["map_types"]
    compared = 0
    for map_type in MapType:
        key = f"have_{map_type.name.lower()}_map_type"
        if key in theirs:
            assert features.has_map_type(map_type) == theirs[key], (map_type, features.feature_reason("map_type", map_type))
            compared += 1
    assert compared >= 25


def test_prog_types_agree_with_bpftool() -> None:
    theirs = bpftool_features()["program_types"]
    compared = 0
    for prog_type in ProgType:
        key = f"have_{prog_type.name.lower()}_prog_type"
        if key in theirs:
            assert features.has_prog_type(prog_type) == theirs[key], (prog_type, features.feature_reason("prog_type", prog_type))
            compared += 1
    assert compared >= 25


@pytest.mark.parametrize("prog_type", [ProgType.SOCKET_FILTER, ProgType.XDP, ProgType.TRACEPOINT])
def test_helpers_agree_with_bpftool(prog_type: ProgType) -> None:
    listed = bpftool_features()["helpers"].get(f"{prog_type.name.lower()}_available_helpers")
    if listed is None:
        pytest.skip(f"bpftool reports no helper list for {prog_type.name}")
    theirs = set(listed)
    # bpftool only probes the helpers its libbpf knows: compare those ids (up to the highest it names)
    known = {f"bpf_{h.name}": h for h in Helper}
    top = max(known[name] for name in theirs if name in known)
    mismatches = [
        (h.name, features.feature_reason("helper", prog_type, h))
        for h in Helper
        if h <= top and features.has_helper(prog_type, h) != (f"bpf_{h.name}" in theirs)
    ]
    # Newer kernels refuse a helper a program type may not use with "program of this type cannot
    # use helper"; libbpf checks for that message only since v1.3, so bpftool 7.1 (libbpf 1.1)
    # lists those helpers as available. There we are right and it is not.
    disagreements = [(name, reason) for name, reason in mismatches if "cannot use helper" not in reason]
    assert not disagreements
    assert len(mismatches) < top  # the exclusion above does not swallow the comparison


def test_btf_features_and_kinds() -> None:
    answers = features.btf_features()
    assert set(answers) == {
        "has_func", "has_func_global", "has_datasec", "has_float", "has_decl_tag", "has_type_tag", "has_enum64",
        "has_qmark_datasec",
    }
    assert answers["has_func"]
    for kind in Kind:
        if kind == Kind.UNKN:
            continue
        # each kind's answer is the answer of the blob that uses it
        assert features.has_btf_kind(kind) == bool(features.probe("btf_kind", int(kind)))
    # BTF kinds came in order: a kernel that has a newer kind has all the older ones
    order = ["func", "datasec", "float", "decl_tag", "type_tag", "enum64"]
    have = [answers[f"has_{n}"] for n in order]
    assert have == sorted(have, reverse=True), dict(zip(order, have))
    assert not features.has_btf_kind(99)
    assert "unknown" in features.feature_reason("btf_kind", 99)


def test_link_type_probes() -> None:
    for link_type in (LinkType.TCX, LinkType.NETKIT, LinkType.UPROBE_MULTI, LinkType.KPROBE_MULTI, LinkType.PERF_EVENT, LinkType.CGROUP):
        answer = features.has_link_type(link_type)
        reason = features.feature_reason("link_type", link_type)
        assert "BPF_LINK_CREATE" in reason or "did not load" in reason
        assert ("failed:" not in reason) == answer, reason
    assert features.has_link_type(LinkType.PERF_EVENT)  # since 5.15, with bpf_cookie
    with pytest.raises(ValueError):
        features.has_link_type(LinkType.SOCKMAP)


def test_cookie_and_syscall_wrapper() -> None:
    assert features.has_bpf_cookie() == features.has_helper(ProgType.TRACEPOINT, Helper.get_attach_cookie)
    assert features.has_bpf_cookie()  # linked to perf_event links, present per the probe above
    expected = any(line.rstrip().endswith(" __x64_sys_bpf") or line.rstrip().endswith(" __arm64_sys_bpf") for line in open("/proc/kallsyms"))
    assert features.has_syscall_wrapper() == expected


def test_probes_are_memoised_and_leave_no_fds() -> None:
    for fn in features._PROBES.values():
        fn.cache_clear()  # type: ignore[attr-defined]
    before = len(os.listdir("/proc/self/fd"))
    for map_type in list(MapType) + [999]:
        features.has_map_type(map_type)
    for prog_type in list(ProgType) + [999]:
        features.has_prog_type(prog_type)
    for link_type in (LinkType.TCX, LinkType.NETKIT, LinkType.UPROBE_MULTI, LinkType.KPROBE_MULTI, LinkType.PERF_EVENT, LinkType.CGROUP):
        features.has_link_type(link_type)
    features.btf_features()
    features.has_global_data()
    features.has_mmapable_maps()
    features.has_bpf_cookie()
    assert len(os.listdir("/proc/self/fd")) == before
    first = features.probe("map_type", int(MapType.HASH))
    assert features.probe("map_type", int(MapType.HASH)) is first


def test_unknown_probe_name() -> None:
    with pytest.raises(ValueError):
        features.feature_reason("no_such_probe")
