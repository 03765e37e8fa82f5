"""corepy.open(): the Object API on the real kernel with the fixture objects."""

from __future__ import annotations

import gzip
import os
import platform
import subprocess
import sys
import time
import uuid

import pytest

import corepy
from corepy.collection import UnknownNameError
from corepy.errors import BPFPermissionError, CorepyError, NotSupportedError, VerifierError
from corepy.maps import MapIncompatibleError
from corepy.syscalls.cpus import possible_cpu_count
from corepy.syscalls.objects import prog_info
from corepy.syscalls.uapi import MapFlag, MapType

from conftest import fixture_obj, requires_root

pytestmark = [requires_root, pytest.mark.usefixtures("no_fd_leak")]

RAW_TP_CTX = bytes(16)  # raw_tp programs are test-run with a context and no repeat


def run(prog) -> int:
    return prog.test_run(ctx=RAW_TP_CTX, repeat=0).retval


@pytest.fixture
def pin_root():
    if not os.path.ismount("/sys/fs/bpf"):
        os.makedirs("/sys/fs/bpf", exist_ok=True)
        subprocess.run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"], check=True)
    path = f"/sys/fs/bpf/corepy-collection-{uuid.uuid4().hex[:8]}"
    os.mkdir(path)
    try:
        yield path
    finally:
        for name in os.listdir(path):
            os.unlink(os.path.join(path, name))
        os.rmdir(path)


def kernel_config() -> dict[str, str]:
    with gzip.open("/proc/config.gz", "rt") as f:
        return dict(line.strip().split("=", 1) for line in f if line.startswith("CONFIG_") and "=" in line)


# --- minimal -------------------------------------------------------------------------------
def test_minimal_counts_own_writes():
    with corepy.open(fixture_obj("minimal"), pin_root=None) as obj:
        assert set(obj.maps) == {".rodata", ".bss"} and set(obj.programs) == {"handle_write"}
        assert obj.globals.my_pid == 0
        obj.globals.my_pid = os.getpid()
        assert obj.globals.my_pid == os.getpid()
        obj.load()
        assert obj.globals.my_pid == os.getpid()  # now read from the live (frozen) .rodata
        assert obj.globals.write_count == 0
        obj.attach()
        assert set(obj.links) == {"handle_write"}
        r, w = os.pipe()
        try:
            for _ in range(5):
                os.write(w, b"x")
            after = obj.globals.write_count
            assert after >= 5
            assert obj.globals.last_fd in (w, 1, 2)  # the last write may be pytest's own output
            os.write(w, b"y")
            assert obj.globals.last_fd == w
            obj.detach()
            assert not obj.links
            stopped = obj.globals.write_count
            os.write(w, b"z")
            assert obj.globals.write_count == stopped
        finally:
            os.close(r)
            os.close(w)
        with pytest.raises(CorepyError, match="frozen"):
            obj.globals.my_pid = 1
        obj.globals.write_count = 0  # .bss is writable through the shared mmap
        assert obj.globals.write_count == 0
        assert obj.maps[".bss"].raw[b"\0\0\0\0"][:8] == bytes(8)
    assert obj.closed
    obj.close()  # idempotent
    with pytest.raises(CorepyError, match="closed"):
        obj.maps


# --- bootstrap -----------------------------------------------------------------------------
def test_bootstrap_records_exec_start():
    with corepy.open(fixture_obj("bootstrap"), pin_root=None) as obj:
        obj.globals.min_duration_ns = 10**8
        obj.load()
        obj.attach()
        assert obj.globals.min_duration_ns == 10**8
        exec_start = obj.maps["exec_start"]
        before = time.monotonic_ns()
        child = subprocess.Popen(["sleep", "30"])
        try:
            deadline = time.monotonic() + 5
            while child.pid not in exec_start and time.monotonic() < deadline:
                time.sleep(0.01)
            started = exec_start[child.pid]  # bpf_ktime_get_ns(): CLOCK_MONOTONIC
            assert before <= started <= time.monotonic_ns()
            assert child.pid in dict(exec_start.items())
        finally:
            child.kill()
            child.wait()
        deadline = time.monotonic() + 5
        while child.pid in exec_start and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.pid not in exec_start  # handle_exit deleted it


# --- maps_zoo ------------------------------------------------------------------------------
def test_maps_zoo_every_map_type(pin_root):
    ncpus = possible_cpu_count()
    with corepy.open(fixture_obj("maps_zoo"), pin_root=pin_root) as obj:
        obj.maps["hash_map"].max_entries = 64  # editable before load
        obj.load()
        m = obj.maps
        assert m["hash_map"].info().max_entries == 64
        assert m["perf_events"].max_entries == ncpus  # max_entries 0 -> possible CPUs
        assert m["ringbuf"].info().max_entries == 64 * 1024
        p = obj.programs
        g = obj.globals

        assert run(p["use_hashes"]) == 0
        assert m["hash_map"][1] == 100 and dict(m["hash_map"].lookup_batch()) == {1: 100}
        assert m["lru_hash"][1] == 102 and m["array_map"][1] == 103
        assert len(m["percpu_hash"][1]) == ncpus and 101 in m["percpu_hash"][1]
        assert sum(m["percpu_array"][1]) == 104
        assert g.out[0] == 100

        lpm = m["lpm_trie"]
        lpm[{"prefixlen": 8, "addr": [10, 0, 0, 0]}] = 8
        lpm[{"prefixlen": 16, "addr": [10, 1, 0, 0]}] = 16
        run(p["use_lpm"])
        assert g.out[1] == 16

        run(p["use_queue_stack"])
        assert (g.out[2], g.out[3]) == (1, 3)
        assert [m["queue"].pop() for _ in range(3)] == [2, 3, None]
        assert [m["stack"].pop() for _ in range(3)] == [2, 1, None]

        m["bloom"].push(1234)
        run(p["use_bloom"])
        assert g.out[4] == 0 and m["bloom"].contains(7) and m["bloom"].contains(1234)

        # prog array populated from the object's values: [0] = tail_a, [2] = tail_b
        jt = m["jump_table"]
        assert dict(jt.lookup_batch()) == {0: p["tail_a"].id, 2: p["tail_b"].id}
        runs = list(g.runs)
        run(p["tail_caller"])
        assert g.runs[6] == runs[6] + 1 and g.out[8] == 0
        g.tail_index = 2  # .bss written live, read by the program
        run(p["tail_caller"])
        assert g.runs[7] == runs[7] + 1
        g.tail_index = 1  # empty slot: no tail call
        run(p["tail_caller"])
        assert g.out[8] == 0xFA11

        # map-in-map populated: outer_array [0] = inner_a, [1] = inner_b; outer_hash [3] = inner_b
        assert m["outer_array"][0] == m["inner_a"].id and m["outer_array"][1] == m["inner_b"].id
        assert dict(m["outer_hash"].items()) == {3: m["inner_b"].id}
        run(p["use_map_in_map"])
        assert (g.out[9], g.out[10]) == (1, 10) and m["inner_b"][0] == 10

        # pinned by name under the pin root
        pinned = os.path.join(pin_root, "corepy_pinned")
        assert m["corepy_pinned"].pinned_path == pinned and os.path.exists(pinned)
        run(p["use_pinned"])
        assert g.out[11] == 1
        with corepy.open(fixture_obj("maps_zoo"), pin_root=pin_root) as again:
            again.load()
            assert again.maps["corepy_pinned"].reused
            assert again.maps["corepy_pinned"].id == m["corepy_pinned"].id
            run(again.programs["use_pinned"])
            assert again.globals.out[11] == 2 and m["corepy_pinned"][0] == 2
        assert os.path.exists(pinned)  # pins outlive the objects
    with corepy.Map.from_pinned(pinned) as pm:  # typed through the BTF fetched from the kernel
        assert pm[0] == 2 and pm.btf is not None and pm.name == "corepy_pinned"


def test_pinned_map_incompatible_is_refused_and_nothing_leaks(pin_root):
    with corepy.open(fixture_obj("maps_zoo"), pin_root=pin_root) as obj:
        obj.load()
    with corepy.open(fixture_obj("maps_zoo"), pin_root=pin_root) as obj:
        obj.maps["corepy_pinned"].max_entries = 2
        with pytest.raises(MapIncompatibleError, match="max_entries 1 pinned vs 2 declared"):
            obj.load()
        assert not obj.loaded and not obj._maps and not obj._programs
    assert os.listdir(pin_root) == ["corepy_pinned"]  # the existing pin is left alone


def test_failed_load_closes_everything_and_removes_new_pins(pin_root):
    with corepy.open(fixture_obj("maps_zoo"), pin_root=pin_root) as obj:
        # a non-GPL license makes the verifier refuse GPL-only helpers (perf_event_output)
        obj.programs["use_ring_perf"].license = "Proprietary"
        with pytest.raises(VerifierError, match="GPL") as e:
            obj.load()
        assert "maps_zoo" in "".join(getattr(e.value, "__notes__", [])) or sys.version_info < (3, 11)
        assert not obj._maps and not obj._programs and obj.btf_fd is None
    assert os.listdir(pin_root) == []


def test_autoload_off_and_unknown_names():
    with corepy.open(fixture_obj("maps_zoo"), pin_root=None) as obj:
        obj.programs["use_bloom"].autoload = False
        with pytest.raises(UnknownNameError, match="no map named 'nope'.*hash_map"):
            obj.maps["nope"]
        with pytest.raises(AttributeError, match="no global variable named 'nope'"):
            obj.globals.nope
        obj.load()
        assert "use_bloom" not in obj.programs and "use_hashes" in obj.programs
        with pytest.raises(KeyError, match="use_bloom"):
            obj.programs["use_bloom"]
        with pytest.raises(CorepyError, match="already loaded"):
            obj.load()


# --- globals -------------------------------------------------------------------------------
def test_globals_rodata_data_sections_and_kconfig():
    config = kernel_config()
    release = platform.release().split("-")[0].split(".")
    major, minor, patch = (int(x) for x in (release + ["0", "0"])[:3])
    with corepy.open(fixture_obj("globals"), pin_root=None) as obj:
        assert {".data", ".bss", ".rodata", ".data.foo", ".rodata.bar", ".kconfig"} <= set(obj.maps)
        assert obj.globals.rodata_factor == 3 and obj.globals.data_msg == "corepy"
        obj.globals.rodata_factor = 5
        obj.load()
        assert "use_ksyms" not in obj.programs  # SEC("?...")
        rodata = obj.maps[".rodata"]
        assert rodata.info().flags & MapFlag.RDONLY_PROG
        with pytest.raises(BPFPermissionError):  # frozen
            rodata.raw[b"\0\0\0\0"] = bytes(rodata.value_size)
        with pytest.raises(BPFPermissionError):
            obj.maps[".kconfig"].raw[b"\0\0\0\0"] = bytes(obj.maps[".kconfig"].value_size)
        assert run(obj.programs["record_globals"]) == 0
        seen = obj.globals.seen
        assert seen[0] == (major << 16) + (minor << 8) + min(patch, 255)  # LINUX_KERNEL_VERSION
        assert seen[1] == int(config["CONFIG_HZ"])
        assert seen[2] == 0  # weak, unknown
        assert seen[3] == (config.get("CONFIG_BPF_JIT") == "y")
        assert seen[4] == {"y": 1, "m": 2}[config["CONFIG_BPF_SYSCALL"]]
        assert seen[5] == {"y": 1, "m": 2}.get(config.get("CONFIG_MODULES", "n"), 0)
        assert seen[6] == 5 * 5 + 1  # static_sub with the rodata set before load
        assert seen[7] == 5 * 2 + 7 and seen[13] == 7  # data_counter before the run
        assert (seen[8], seen[9]) == (45, 10)  # bpf_loop callback
        assert (seen[10], seen[11], seen[12]) == (11, 22, 5)  # .data.foo, .rodata.bar, .rodata
        local = config.get("CONFIG_LOCALVERSION", '""').strip('"').encode()[:8]
        assert seen[14] == int.from_bytes(local.ljust(8, b"\0"), "little")
        assert seen[15] == ord("r") + ord("c")
        assert obj.globals.data_counter == 8  # incremented by the program, read live
        obj.globals.data_counter = 100
        obj.globals.foo_value = 12
        run(obj.programs["record_globals"])
        assert obj.globals.seen[13] == 100 and obj.globals.seen[10] == 12
        assert run(obj.programs["second_caller"]) == 0
        assert obj.globals.second_seen == [1 * 5 + 1, 2 + 101]


def test_kconfig_overrides_and_custom_target_btf(tmp_path):
    custom = tmp_path / "vmlinux.btf"
    custom.write_bytes(open("/sys/kernel/btf/vmlinux", "rb").read())
    with corepy.open(fixture_obj("globals"), pin_root=None, btf=custom,
                     kconfig={"CONFIG_HZ": 1000, "CONFIG_CORE_PY_UNKNOWN": True}) as obj:
        obj.load()
        run(obj.programs["record_globals"])
        assert obj.globals.seen[1] == 1000 and obj.globals.seen[2] == 1
    with corepy.open(fixture_obj("bootstrap"), pin_root=None, btf=custom) as obj:
        obj.load()
        assert obj.core_records and all(not r.result.poisoned for r in obj.core_records)
        assert {r.program for r in obj.core_records} == {"handle_exec", "handle_exit"}


def test_maps_and_programs_are_the_kernel_objects():
    with corepy.open(fixture_obj("maps_zoo"), pin_root=None) as obj:
        obj.load()
        details = prog_info(obj.programs["use_hashes"])
        ids = {obj.maps[n].id for n in ("hash_map", "percpu_hash", "lru_hash", "array_map", "percpu_array", ".bss")}
        assert ids <= set(details.map_ids)
        info = obj.maps["hash_map"].info()
        assert info.btf_id and info.type == MapType.HASH and info.name == "hash_map"


def test_btf_refused_loads_without_it():
    with corepy.open(fixture_obj("minimal"), pin_root=None) as obj:
        obj.spec.btf_fixups = obj.spec.btf_fixups[:40]  # a truncated blob: BPF_BTF_LOAD refuses it
        obj.globals.my_pid = os.getpid()
        with pytest.warns(RuntimeWarning, match="refused the object's BTF"):
            obj.load()
        assert obj.btf_fd is None and obj.maps[".bss"].info().btf_id == 0
        obj.attach()
        r, w = os.pipe()
        with open(r, "rb") as rf, open(w, "wb", buffering=0) as wf:
            wf.write(b"x")
            assert obj.globals.write_count >= 1 and obj.globals.last_fd == w


def test_globals_without_mmap_go_through_lookup_and_update():
    with corepy.open(fixture_obj("globals"), pin_root=None) as obj:
        for name in (".data", ".bss"):
            obj.maps[name].flags &= ~MapFlag.MMAPABLE  # specs are editable: plain array maps then
        obj.load()
        assert not obj.maps[".data"].info().flags & MapFlag.MMAPABLE
        with pytest.raises(NotSupportedError, match="BPF_F_MMAPABLE"):
            obj.maps[".data"].mmap()
        obj.globals.data_counter = 41
        assert obj.globals.data_counter == 41
        run(obj.programs["record_globals"])
        assert obj.globals.seen[13] == 41 and obj.globals.data_counter == 42
        assert obj.globals.raw("data_counter") == (42).to_bytes(4, "little")
