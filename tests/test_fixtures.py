"""The committed BPF fixture objects: well-formed, complete, and what fixtures/build.sh makes today."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from conftest import FIXTURES, ROOT, fixture_obj

SOURCES = sorted((FIXTURES / "src").glob("*.bpf.c"))
NAMES = [p.name.removesuffix(".bpf.c") for p in SOURCES]

# Program sections each object must carry (documented in the sources' header comments).
PROGRAM_SECTIONS = {
    "minimal": {"tp/syscalls/sys_enter_write"},
    "bootstrap": {"tp/sched/sched_process_exec", "tp/sched/sched_process_exit"},
    "core_zoo": {"raw_tp/sys_enter", "?raw_tp/sys_enter"},
    "maps_zoo": {"raw_tp/sys_enter"},
    "globals": {"raw_tp/sys_enter", "?raw_tp/sys_enter", ".text"},
    "net": {"xdp", "tc", "tcx/ingress", "tcx/egress", "socket", "cgroup_skb/ingress", "cgroup_skb/egress"},
    "uprobe": {"uprobe", "uretprobe"},
    "ringbuf_bench": {"raw_tp/sys_enter", "tp/syscalls/sys_enter_getpid", ".text"},
    "ksyms": {"raw_tp/sys_enter"},
}
DEBUG_PREFIXES = (".debug_", ".rel.debug_")


def sections(path: Path) -> dict[str, bytes]:
    with path.open("rb") as f:
        elf = ELFFile(f)
        return {s.name: (b"" if s["sh_type"] == "SHT_NOBITS" else s.data()) for s in elf.iter_sections()}


def btf_strings(blob: bytes) -> set[bytes]:
    """The strings of a .BTF blob (header: magic, version, flags, hdr_len, type/str off+len)."""
    hdr_len, _type_off, _type_len, str_off, str_len = struct.unpack_from("<5I", blob, 4)
    return set(blob[hdr_len + str_off : hdr_len + str_off + str_len].split(b"\0"))


def btf_ext_without_type_ids(blob: bytes) -> bytes:
    """A .BTF.ext blob with the type ids of func_info and core_relo records zeroed (line_info,
    instruction offsets, access strings and kinds kept)."""
    out = bytearray(blob)
    hdr_len, *offs = struct.unpack_from("<7I", blob, 4)
    subsections = [(offs[0], offs[1]), (offs[4], offs[5])] if hdr_len >= 32 else [(offs[0], offs[1])]
    for off, length in subsections:  # func_info, core_relo: records start (insn_off, type_id, ...)
        pos, end = hdr_len + off, hdr_len + off + length
        if length == 0:
            continue
        rec_size = struct.unpack_from("<I", blob, pos)[0]
        pos += 4
        while pos < end:
            _name_off, count = struct.unpack_from("<II", blob, pos)
            pos += 8
            for i in range(count):
                out[pos + i * rec_size + 4 : pos + i * rec_size + 8] = bytes(4)
            pos += count * rec_size
    return bytes(out)


def test_every_source_has_an_object() -> None:
    assert SOURCES, "no fixtures/src/*.bpf.c"
    missing = [n for n in NAMES if not fixture_obj(n).is_file()]
    assert not missing, f"sources without a committed object (run sh fixtures/build.sh): {missing}"
    stray = {p.name.removesuffix(".bpf.o") for p in FIXTURES.glob("*.bpf.o")} - set(NAMES)
    assert not stray, f"objects without a source: {stray}"
    assert set(PROGRAM_SECTIONS) == set(NAMES), "PROGRAM_SECTIONS out of step with fixtures/src"


@pytest.mark.parametrize("name", NAMES)
def test_object_is_bpf_relocatable_with_btf(name: str) -> None:
    with fixture_obj(name).open("rb") as f:
        elf = ELFFile(f)
        assert elf["e_machine"] == "EM_BPF"
        assert elf["e_type"] == "ET_REL"
        assert elf.little_endian and elf.elfclass == 64
        names = {s.name for s in elf.iter_sections()}
    assert {".BTF", ".BTF.ext", "license", ".symtab"} <= names
    assert PROGRAM_SECTIONS[name] <= names, f"missing program sections {PROGRAM_SECTIONS[name] - names}"
    assert struct.unpack_from("<H", sections(fixture_obj(name))[".BTF"])[0] == 0xEB9F


def test_packaged_bootstrap_is_the_fixture() -> None:
    packaged = ROOT / "corepy" / "examples" / "bootstrap.bpf.o"
    assert packaged.read_bytes() == fixture_obj("bootstrap").read_bytes()


def test_uprobe_target_has_the_probed_function() -> None:
    with (FIXTURES / "uprobe_target").open("rb") as f:
        elf = ELFFile(f)
        assert elf["e_machine"] == "EM_X86_64"
        symtab = elf.get_section_by_name(".symtab")
        syms = symtab.get_symbol_by_name("corepy_target_add")
        assert syms and syms[0]["st_info"]["type"] == "STT_FUNC" and syms[0]["st_size"] > 0
    assert os.access(FIXTURES / "uprobe_target", os.X_OK)
    out = subprocess.run([FIXTURES / "uprobe_target", "4"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(sum(3 * i for i in range(4)))


def _missing_tools() -> list[str]:
    tools = [t for t in ("clang-19", "gcc", "sha256sum") if shutil.which(t) is None]
    if not Path("/usr/include/bpf/bpf_helpers.h").is_file():
        tools.append("libbpf-dev headers")
    return tools


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fixtures/build.sh run into a temporary directory from the committed build BTF (same vmlinux.h
    location as the real build), whatever kernel this machine runs."""
    missing = _missing_tools()
    if missing:
        pytest.skip(f"cannot rebuild fixtures: {', '.join(missing)} not found (make system installs them)")
    out = tmp_path_factory.mktemp("fixtures")
    overrides = ("VMLINUX_BTF", "VMLINUX_H_CMD", "BUILD", "CLANG", "CC", "ARCH")
    env = {k: v for k, v in os.environ.items() if k not in overrides} | {"OUT": str(out)}
    proc = subprocess.run(["sh", str(FIXTURES / "build.sh")], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"sh fixtures/build.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    built_from = (FIXTURES / "include" / "vmlinux.h.sha256").read_text().strip()
    now = hashlib.sha256((FIXTURES / "build" / "vmlinux.h").read_bytes()).hexdigest()
    if now != built_from:
        pytest.fail(
            f"vmlinux.h generated from the committed build BTF (sha256 {now[:12]}) is not the one the "
            f"committed objects were built from ({built_from[:12]}): corepy's C dumper changed its "
            "output; check the change, then rebuild with sh fixtures/build.sh and commit the objects"
        )
    return out


@pytest.mark.parametrize("name", NAMES)
def test_object_matches_a_rebuild(rebuilt: Path, name: str) -> None:
    committed, fresh = sections(fixture_obj(name)), sections(rebuilt / f"{name}.bpf.o")
    assert committed.keys() == fresh.keys(), "section list differs: rebuild with sh fixtures/build.sh"
    differ = [n for n in committed if committed[n] != fresh[n] and not n.startswith(DEBUG_PREFIXES)]
    # clang may number BTF types differently when the checkout lives at another path (forward
    # declarations are ordered by address): tolerate a renumbering of types, nothing else.
    if ".BTF" in differ and set(differ) <= {".BTF", ".BTF.ext"}:
        a, b = committed[".BTF"], fresh[".BTF"]
        renumbered = len(a) == len(b) and btf_strings(a) == btf_strings(b)
        ext_a, ext_b = (btf_ext_without_type_ids(x[".BTF.ext"]) for x in (committed, fresh))
        if renumbered and ext_a == ext_b:
            differ = []
    assert not differ, f"{name}.bpf.o is stale in {differ}: rebuild with sh fixtures/build.sh"


def test_uprobe_target_matches_a_rebuild(rebuilt: Path) -> None:
    committed, fresh = sections(FIXTURES / "uprobe_target"), sections(rebuilt / "uprobe_target")
    assert committed.keys() == fresh.keys()
    assert committed[".text"] == fresh[".text"], "uprobe_target is stale: rebuild with sh fixtures/build.sh"
