"""USDT probes (libbpf's usdt.bpf.h protocol): .note.stapsdt parsing checked against readelf,
argument specs, and live attachment to the python3 interpreter's own gc__start probe
(which has a semaphore: Python only fires it while a probe is attached)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess

import pytest

from conftest import requires_root

from corepy.attach.usdt import ARG_CONST, ARG_REG, ARG_REG_DEREF, Arg, UsdtSpec, parse_usdt_args
from corepy.errors import ObjectError
from corepy.uprobe import usdt_notes

PYTHON_WITH_USDT = next((p for p in ("/usr/bin/python3.11", "/usr/bin/python3") if os.path.exists(p)
                         and any(n.name == "gc__start" for n in usdt_notes(p, "python"))), None)
needs_usdt_target = pytest.mark.skipif(PYTHON_WITH_USDT is None,
                                       reason="no /usr/bin/python3 built with USDT probes (python:gc__start)")


def test_parse_x86_64_arguments():
    assert parse_usdt_args("-4@%eax 8@-16(%rbp) 4@$3 -2@(%r12) 1@%r9b", "x86_64") == [
        Arg(4, True, ARG_REG, "ax", 0),
        Arg(8, False, ARG_REG_DEREF, "bp", -16),
        Arg(4, False, ARG_CONST, None, 3),
        Arg(2, True, ARG_REG_DEREF, "r12", 0),
        Arg(1, False, ARG_REG, "r9", 0),
    ]
    assert parse_usdt_args("", "x86_64") == []
    with pytest.raises(ObjectError, match="unsupported size 3"):
        parse_usdt_args("3@%eax", "x86_64")
    with pytest.raises(ObjectError, match="unknown register"):
        parse_usdt_args("8@%xmm0", "x86_64")
    with pytest.raises(ObjectError, match="unrecognized USDT argument"):
        parse_usdt_args("8@@%rax", "x86_64")


def test_parse_aarch64_arguments():
    assert parse_usdt_args("-4@x0 8@[sp, 16] 8@[x29] -8@42", "aarch64") == [
        Arg(4, True, ARG_REG, "regs[0]", 0),
        Arg(8, False, ARG_REG_DEREF, "sp", 16),
        Arg(8, False, ARG_REG_DEREF, "regs[29]", 0),
        Arg(8, True, ARG_CONST, None, 42),
    ]


def test_spec_layout_matches_usdt_bpf_h():
    """usdt.bpf.h: 12 x {u64 val_off; enum arg_type; short reg_off; bool arg_signed; char bitshift}
    then u64 usdt_cookie and short arg_cnt."""
    import ctypes

    assert ctypes.sizeof(UsdtSpec) == 12 * 16 + 8 + 8
    assert UsdtSpec.usdt_cookie.offset == 192 and UsdtSpec.arg_cnt.offset == 200


@needs_usdt_target
def test_notes_match_readelf():
    if not shutil.which("readelf"):
        pytest.skip("readelf (binutils) not installed: no oracle")
    out = subprocess.run(["readelf", "-n", PYTHON_WITH_USDT], capture_output=True, text=True, check=True).stdout
    expected = []
    for m in re.finditer(r"Provider: (\S+)\s+Name: (\S+)\s+Location: (0x[0-9a-f]+), Base: (0x[0-9a-f]+), "
                         r"Semaphore: (0x[0-9a-f]+)\s+Arguments: ?([^\n]*)", out):
        expected.append((m[1], m[2], int(m[3], 16), int(m[5], 16), m[6].strip()))
    notes = usdt_notes(PYTHON_WITH_USDT)
    assert expected and [(n.provider, n.name, n.address, n.semaphore, n.args) for n in notes] == expected
    assert [n.name for n in usdt_notes(PYTHON_WITH_USDT, "python", "gc__start")] == ["gc__start"]
    for n in notes:
        assert parse_usdt_args(n.args) is not None


BPF_SOURCE = r"""
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/usdt.bpf.h>

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} generations SEC(".maps");

__u64 hits = 0;
long arg_count = 0;
long cookie = 0;
__u64 auto_hits = 0;

SEC("usdt")
int BPF_USDT(gc_start, int generation)
{
	__u32 key = generation;
	__u64 *value = bpf_map_lookup_elem(&generations, &key);

	if (value)
		__sync_fetch_and_add(value, 1);
	__sync_fetch_and_add(&hits, 1);
	arg_count = bpf_usdt_arg_cnt(ctx);
	cookie = bpf_usdt_cookie(ctx);
	return 0;
}

SEC("usdt/PYTHON:python:gc__start")
int BPF_USDT(gc_start_auto, int generation)
{
	if (generation == 1)
		__sync_fetch_and_add(&auto_hits, 1);
	return 0;
}
"""


@pytest.fixture(scope="module")
def usdt_object(tmp_path_factory):
    clang = shutil.which("clang-19") or shutil.which("clang")
    if clang is None:
        pytest.skip("clang-19 not installed: cannot build the usdt.bpf.h test program")
    if not os.path.exists("/usr/include/bpf/usdt.bpf.h"):
        pytest.skip("libbpf-dev's <bpf/usdt.bpf.h> not installed")
    d = tmp_path_factory.mktemp("usdt")
    src = d / "usdt_gc.bpf.c"
    src.write_text(BPF_SOURCE.replace("PYTHON", PYTHON_WITH_USDT or "/usr/bin/python3"))
    arch = {"x86_64": "x86", "aarch64": "arm64"}[os.uname().machine]
    multiarch = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}[os.uname().machine]
    subprocess.run([clang, "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{arch}", f"-I/usr/include/{multiarch}",
                    "-c", str(src), "-o", str(d / "usdt_gc.bpf.o")], check=True, capture_output=True)
    return str(d / "usdt_gc.bpf.o")


def _python_gc(*generations: int) -> None:
    calls = "; ".join(f"gc.collect({g})" for g in generations)
    subprocess.run([PYTHON_WITH_USDT, "-c", f"import gc; gc.disable(); {calls}"], check=True)


def _globals(fds, spec) -> dict[str, int]:
    from corepy.syscalls.maps import map_lookup_elem

    raw = map_lookup_elem(fds[".bss"], b"\0" * 4, spec.maps[".bss"].value_size)
    return {v.name: struct.unpack_from("<q", raw, v.offset)[0] for v in spec.variables.values()
            if v.map == ".bss"}


@requires_root
@needs_usdt_target
def test_usdt_attach_reads_arguments_and_cookie(usdt_object):
    from corepy.btf import BTF
    from corepy.syscalls.uapi import PerfEventType
    from test_programs import closing, load_fixture, open_fds, read_counter

    BTF.kernel()
    before = open_fds()
    progs, fds, spec = load_fixture(usdt_object)
    try:
        prog = progs["gc_start"]
        with prog.attach_usdt(PYTHON_WITH_USDT, "python", "gc__start", cookie=77) as link:
            info = link.info()
            assert info.details["type"] == PerfEventType.UPROBE
            note = usdt_notes(PYTHON_WITH_USDT, "python", "gc__start")[0]
            assert (info.details["offset"], info.details["ref_ctr_offset"]) == (note.ip_offset, note.sema_offset)
            _python_gc(1, 1, 1)
        assert read_counter(fds["generations"], 1) == 3
        seen = _globals(fds, spec)
        assert seen["arg_count"] == 1 and seen["cookie"] == 77 and seen["hits"] >= 3
        _python_gc(1)  # detached: not counted
        assert read_counter(fds["generations"], 1) == 3
        # the slots are free again: a second attachment works and sees its own cookie
        with prog.attach_usdt(PYTHON_WITH_USDT, "python", "gc__start", cookie=5):
            _python_gc(1)
        assert read_counter(fds["generations"], 1) == 4 and _globals(fds, spec)["cookie"] == 5
    finally:
        closing(progs, fds)
    assert open_fds() == before


@requires_root
@needs_usdt_target
def test_usdt_auto_attach_by_section(usdt_object):
    from test_programs import closing, load_fixture

    progs, fds, spec = load_fixture(usdt_object)
    try:
        with progs["gc_start_auto"].attach():
            _python_gc(1, 1)
        assert _globals(fds, spec)["auto_hits"] == 2
        with pytest.raises(ObjectError, match="no USDT probe python:corepy_nope"):
            progs["gc_start"].attach_usdt(PYTHON_WITH_USDT, "python", "corepy_nope")
    finally:
        closing(progs, fds)
