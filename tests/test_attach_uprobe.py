"""uprobe targets: ELF symbol -> file offset, ld.so.cache, spec parsing (pure), and live
uprobe/uretprobe attach on fixtures/uprobe_target (root)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from corepy.errors import ObjectError
from corepy.uprobe import (UprobeTarget, file_offset, ld_so_cache, parse_uprobe_spec, resolve_binary,
                           resolve_library, symbol_offset)

from conftest import FIXTURES, requires_root

TARGET = FIXTURES / "uprobe_target"
LIBC = "libc.so.6"


def _oracle_offset(path: str, symbol: str) -> int:
    """nm's address of ``symbol`` mapped through readelf's PT_LOAD table (binutils, not pyelftools)."""
    nm = subprocess.run(["nm", "-D", "--defined-only", path] if "lib" in os.path.basename(path) else
                        ["nm", "--defined-only", path], capture_output=True, text=True, check=True).stdout
    addrs = {int(a, 16) for a, _, name in (line.split() for line in nm.splitlines() if len(line.split()) == 3)
             if name.split("@")[0] == symbol}
    assert len(addrs) == 1, (symbol, addrs)
    vaddr = addrs.pop()
    segs = subprocess.run(["readelf", "-lW", path], capture_output=True, text=True, check=True).stdout
    for m in re.finditer(r"LOAD\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x[0-9a-f]+\s+0x[0-9a-f]+\s+0x([0-9a-f]+)", segs):
        off, va, memsz = (int(g, 16) for g in m.groups())
        if va <= vaddr < va + memsz:
            return vaddr - va + off
    raise AssertionError("no segment")


needs_binutils = pytest.mark.skipif(not (shutil.which("nm") and shutil.which("readelf")),
                                    reason="binutils (nm, readelf) not installed: no oracle")


@needs_binutils
def test_symbol_offset_in_executable_matches_binutils():
    assert symbol_offset(str(TARGET), "corepy_target_add") == _oracle_offset(str(TARGET), "corepy_target_add")


@needs_binutils
@pytest.mark.parametrize("symbol", ["malloc", "getpid", "write"])
def test_symbol_offset_in_libc_matches_binutils(symbol):
    libc = resolve_library(LIBC)
    assert symbol_offset(libc, symbol) == _oracle_offset(libc, symbol)


def test_ld_so_cache_agrees_with_ldconfig():
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    if not os.path.exists(ldconfig):
        pytest.skip("ldconfig not installed: no oracle for /etc/ld.so.cache")
    out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, check=True).stdout
    cache = ld_so_cache()
    arch = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(os.uname().machine)
    expected = {}
    for m in re.finditer(r"^\s+(\S+) \(([^)]*)\) => (\S+)$", out, re.M):
        name, flags, path = m.groups()
        if arch is None or arch in flags:
            expected.setdefault(name, path)
    assert cache and expected
    assert {k: v for k, v in cache.items() if k in expected} == expected


def test_resolve_library_names():
    libc = resolve_library(LIBC)
    assert os.path.isabs(libc) and os.path.exists(libc)
    assert os.path.realpath(resolve_library("libc")) == os.path.realpath(libc)
    with pytest.raises(ObjectError, match="libcorepy_does_not_exist"):
        resolve_library("libcorepy_does_not_exist.so.9")
    assert resolve_binary("true") == shutil.which("true")


def test_symbol_errors_name_what_and_where(tmp_path):
    with pytest.raises(ObjectError, match=r"corepy_no_such_function.*uprobe_target"):
        symbol_offset(str(TARGET), "corepy_no_such_function")
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF garbage")
    with pytest.raises(ObjectError, match="junk"):
        symbol_offset(str(junk), "main")
    with pytest.raises(ObjectError, match="does not exist"):
        resolve_binary(str(tmp_path / "missing"))


def test_parse_uprobe_spec():
    assert parse_uprobe_spec("/bin/true:main") == UprobeTarget("/bin/true", "main", 0)
    assert parse_uprobe_spec("libc.so.6:malloc+0x10") == UprobeTarget("libc.so.6", "malloc", 16)
    assert parse_uprobe_spec("/x/y:0x1234") == UprobeTarget("/x/y", None, 0x1234)
    with pytest.raises(ObjectError):
        parse_uprobe_spec("no-colon")
    path, off = file_offset(UprobeTarget(str(TARGET), "corepy_target_add", 4))
    assert off == symbol_offset(str(TARGET), "corepy_target_add") + 4


# --- live uprobes and kprobes (root) ---------------------------------------------

def _kprobe_type_counter(map_fd, name, **kw):
    from corepy.programs import load_program
    from corepy.syscalls.uapi import ProgType
    from test_programs import counter_program

    return load_program(counter_program(map_fd, **kw), name=name, prog_type=ProgType.KPROBE)


def _skip_without_uprobe_pmu():
    from corepy.attach.probes import probe_pmu
    from corepy.errors import NotSupportedError

    try:
        probe_pmu("uprobe")
    except NotSupportedError as e:
        pytest.skip(f"probed: {e}")


def _run_target(n: int) -> int:
    out = subprocess.run([str(TARGET), str(n)], check=True, capture_output=True, text=True).stdout
    return int(out)


@requires_root
@pytest.mark.parametrize("retprobe", [False, True])
def test_uprobe_counts_calls(retprobe):
    from corepy.syscalls.uapi import LinkType, PerfEventType
    from test_programs import array_map, open_fds, read_counter

    _skip_without_uprobe_pmu()
    before = open_fds()
    with array_map() as counts, _kprobe_type_counter(counts.fileno(), "uprobe_count") as prog:
        with prog.attach_uprobe(str(TARGET), "corepy_target_add", retprobe=retprobe) as link:
            assert _run_target(5) == sum(3 * i for i in range(5))
            assert read_counter(counts) == 5
            info = link.info()
            assert info.type == LinkType.PERF_EVENT
            assert info.details["type"] == (PerfEventType.URETPROBE if retprobe else PerfEventType.UPROBE)
            assert info.details["file_name"] == os.path.realpath(TARGET)
            assert info.details["offset"] == symbol_offset(str(TARGET), "corepy_target_add")
        _run_target(3)
        assert read_counter(counts) == 5
    assert open_fds() == before


@requires_root
def test_uprobe_pid_filter():
    from test_programs import array_map, read_counter

    _skip_without_uprobe_pmu()
    with array_map() as counts, _kprobe_type_counter(counts.fileno(), "uprobe_pid") as prog:
        with prog.attach_uprobe(str(TARGET), "corepy_target_add", pid=os.getpid()):
            _run_target(4)  # another process: filtered out
            assert read_counter(counts) == 0
        waiting = subprocess.Popen(["sh", "-c", f"read go; exec {TARGET} 6"], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL)
        try:
            with prog.attach_uprobe(str(TARGET), "corepy_target_add", pid=waiting.pid):
                waiting.communicate(b"go\n", timeout=10)
                assert read_counter(counts) == 6
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()


@requires_root
def test_uprobe_in_libc_by_bare_name_and_auto_attach():
    from corepy.programs import load_program
    from corepy.syscalls.uapi import ProgType
    from test_programs import array_map, counter_program, read_counter

    _skip_without_uprobe_pmu()
    with array_map() as counts:
        with load_program(counter_program(counts.fileno(), pid=os.getpid()), name="libc_getppid",
                          prog_type=ProgType.KPROBE, section="uprobe/libc.so.6:getppid") as prog:
            with prog.attach():
                for _ in range(4):
                    os.getppid()
            os.getppid()
            assert read_counter(counts) == 4


@requires_root
def test_kprobe_program_loads_and_attach_is_probed():
    from corepy.attach.probes import probe_pmu
    from corepy.errors import NotSupportedError
    from test_programs import array_map, read_counter

    with array_map() as counts, _kprobe_type_counter(counts.fileno(), "kprobe_count", pid=os.getpid()) as prog:
        assert prog.info().name == "kprobe_count"  # kprobe programs load even without CONFIG_KPROBES
        try:
            probe_pmu("kprobe")
        except NotSupportedError as probed:
            with pytest.raises(NotSupportedError, match="kprobe") as exc:
                prog.attach_kprobe("vfs_getattr")
            assert str(exc.value) == str(probed)
            with pytest.raises(NotSupportedError, match="kprobe"):
                prog.attach_ksyscall("getppid")
            pytest.skip(f"kprobe attach: {probed}")
        with prog.attach_kprobe("vfs_getattr"):
            os.stat("/")
        assert read_counter(counts) >= 1


def test_malformed_usdt_section_is_named():
    from corepy.attach import auto_attach

    class Prog:
        name, section, attach_to = "u", "usdt/libc.so.6:setjmp", None

    with pytest.raises(ObjectError, match="usdt/<binary>:<provider>:<name>"):
        auto_attach(Prog())


@requires_root
def test_uprobe_fixture_records_arguments_and_return_values():
    """fixtures/uprobe.bpf.o through the object layer: SEC("uprobe")/SEC("uretprobe") name no
    target, so they attach explicitly; the maps then hold every call's a, b and result."""
    import struct

    from corepy.syscalls.maps import map_lookup_elem
    from test_programs import closing, load_fixture, open_fds

    from corepy.btf import BTF

    _skip_without_uprobe_pmu()
    BTF.kernel()  # opened once per process and cached
    before = open_fds()
    progs, fds, spec = load_fixture("uprobe")
    try:
        with pytest.raises(ObjectError, match="does not say where to attach"):
            progs["add_entry"].attach()
        with progs["add_entry"].attach_uprobe(str(TARGET), "corepy_target_add"), \
                progs["add_return"].attach_uprobe(str(TARGET), "corepy_target_add", retprobe=True):
            assert _run_target(5) == 30
        calls = [struct.unpack("<iiii", map_lookup_elem(fds["calls"], struct.pack("<I", i), 16))[:3]
                 for i in range(5)]
        assert calls == [(i, 2 * i, 3 * i) for i in range(5)]
        bss = spec.maps[".bss"]
        raw = map_lookup_elem(fds[".bss"], b"\0\0\0\0", bss.value_size)
        counters = {v.name: struct.unpack_from("<Q", raw, v.offset)[0] for v in spec.variables.values()
                    if v.name in ("entries", "returns")}
        assert counters == {"entries": 5, "returns": 5}
    finally:
        closing(progs, fds)
    assert open_fds() == before


@requires_root
def test_uprobe_at_function_offset_by_section():
    """SEC("uprobe/<path>:corepy_target_add+0x4"): +4 is the third instruction of the -O0 body
    (push %rbp; mov %rsp,%rbp; here), so every call still hits it."""
    from corepy.programs import load_program
    from corepy.syscalls.uapi import ProgType
    from test_programs import array_map, counter_program, read_counter

    _skip_without_uprobe_pmu()
    with array_map() as counts:
        with load_program(counter_program(counts.fileno()), name="add_plus4", prog_type=ProgType.KPROBE,
                          section=f"uprobe/{TARGET}:corepy_target_add+0x4") as prog:
            with prog.attach() as link:
                assert link.info().details["offset"] == symbol_offset(str(TARGET), "corepy_target_add") + 4
                _run_target(3)
            assert read_counter(counts) == 3


def test_function_offsets_by_glob():
    from corepy.uprobe import function_offsets

    found = function_offsets(str(TARGET), "corepy_*")
    assert found == {"corepy_target_add": symbol_offset(str(TARGET), "corepy_target_add")}
    assert set(function_offsets(str(TARGET), "ma?n")) == {"main"}
    with pytest.raises(ObjectError, match="no function matches 'corepy_nothing_\\*'"):
        function_offsets(str(TARGET), "corepy_nothing_*")


@requires_root
@pytest.mark.parametrize("retprobe", [False, True])
def test_uprobe_multi_link_on_a_glob(retprobe):
    from corepy.programs import load_program
    from corepy.syscalls import features
    from corepy.syscalls.uapi import AttachType, LinkType, ProgType
    from test_programs import array_map, counter_program, open_fds, read_counter

    if not features.has_link_type(LinkType.UPROBE_MULTI):
        pytest.skip(f"uprobe_multi: {features.feature_reason('link_type', LinkType.UPROBE_MULTI)}")
    kind = "uretprobe.multi" if retprobe else "uprobe.multi"
    before = open_fds()
    with array_map() as counts:
        with load_program(counter_program(counts.fileno()), name="multi", prog_type=ProgType.KPROBE,
                          expected_attach_type=AttachType.TRACE_UPROBE_MULTI,
                          section=f"{kind}/{TARGET}:[cm][oa]*") as prog:  # corepy_target_add and main
            with prog.attach() as link:
                assert link.info().type == LinkType.UPROBE_MULTI
                _run_target(4)
            assert read_counter(counts) == 4 + 1
            _run_target(2)
            assert read_counter(counts) == 5
    assert open_fds() == before


@requires_root
def test_failed_attach_leaks_no_fd():
    """A socket filter cannot run on a uprobe: the kernel refuses the link, and the perf event
    opened for it is closed again."""
    from corepy.errors import SyscallError
    from corepy.programs import load_program
    from corepy.syscalls.uapi import ProgType
    from test_programs import array_map, counter_program, open_fds

    _skip_without_uprobe_pmu()
    with array_map() as counts, load_program(counter_program(counts.fileno()), name="wrong",
                                             prog_type=ProgType.SOCKET_FILTER) as prog:
        before = open_fds()
        with pytest.raises(SyscallError, match="BPF_LINK_CREATE"):
            prog.attach_uprobe(str(TARGET), "corepy_target_add")
        with pytest.raises(ObjectError):
            prog.attach_uprobe(str(TARGET), "corepy_no_such_function")
        assert open_fds() == before
