"""Parsing .bpf.o files into ObjectSpec: checked against llvm-objdump-19 and libbpf 1.1 (the oracle)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from corepy.errors import BTFError, ObjectError
from corepy.object.parse import internal_map_name, object_name
from corepy.object.spec import ObjectSpec
from corepy.syscalls.uapi import MapFlag, MapType, ProgType
from test_object_support import fixture_objects, link_object, run_oracle

OBJDUMP = shutil.which("llvm-objdump-19")


def all_objects() -> list[Path]:
    return fixture_objects() + [link_object()]


@pytest.fixture(params=[p.name for p in fixture_objects()] + ["link"])
def object_path(request) -> Path:
    return link_object() if request.param == "link" else next(p for p in fixture_objects() if p.name == request.param)


def test_fixtures_exist():
    assert len(fixture_objects()) >= 3, "fixtures/*.bpf.o missing: run `make fixtures`"


@pytest.mark.skipif(OBJDUMP is None, reason="llvm-objdump-19 not installed")
def test_programs_match_objdump_symbols(object_path):
    """Every global function in a code section other than .text is a program, in its section."""
    obj = ObjectSpec.from_file(str(object_path))
    out = subprocess.run([OBJDUMP, "-t", "-h", str(object_path)], capture_output=True, text=True, check=True).stdout
    code_sections = set(re.findall(r"^\s*\d+ (\S+)\s+[0-9a-f]+ [0-9a-f]+ TEXT$", out, re.M))
    expected = {}
    for m in re.finditer(r"^[0-9a-f]+ g\s+F (\S+)\s+[0-9a-f]+ (\S+)$", out, re.M):
        section, name = m.groups()
        if section != ".text":
            expected[name] = section
    assert {n: p.function.section for n, p in obj.programs.items()} == expected
    assert {f.section for f in obj.functions} <= code_sections
    for p in obj.programs.values():
        assert p.section == p.function.section.lstrip("?")
        assert p.autoload == (not p.function.section.startswith("?"))


def test_maps_and_programs_match_libbpf(object_path):
    """Map definitions and program types as libbpf 1.1 sees them after bpf_object__open."""
    obj = ObjectSpec.from_file(str(object_path))
    seen = run_oracle(object_path)
    mine = {m.kernel_name if m.internal else m.name: m for m in obj.maps.values()}
    assert set(mine) == set(seen["maps"])
    for name, lib in seen["maps"].items():
        m = mine[name]
        got = dict(type=int(m.type), key=m.key_size, value=m.value_size, max=m.max_entries, flags=m.flags,
                   numa=m.numa_node, extra=m.map_extra, btf_key=m.key_type_id, btf_value=m.value_type_id)
        assert got == {k: lib[k] for k in got}, name
        if m.internal and m.name != ".kconfig":  # initial contents (kconfig is filled at load)
            assert bytes(m.data) == lib["data"], name
    assert set(obj.programs) == set(seen["progs"])
    for name, lib in seen["progs"].items():
        p = obj.programs[name]
        assert (int(p.autoload), len(p.insns), p.section) == (lib["autoload"], lib["n"], lib["sec"]), name
        if lib["type"] == 0:  # a SEC() newer than libbpf 1.1 (tcx/, netkit/...): our table knows it
            assert p.prog_type != ProgType.UNSPEC, name
            continue
        assert (int(p.prog_type), int(p.expected_attach_type or 0)) == (lib["type"], lib["attach"]), name


def test_link_object_contents():
    obj = ObjectSpec.from_file(str(link_object()), name="linktest")
    assert obj.name == "linktest" and obj.license == "GPL"
    assert set(obj.programs) == {"handle_write", "on_exec", "tail_target", "optional_prog", "xdp_pass", "xdp_drop"}
    hw = obj.programs["handle_write"]
    assert (hw.prog_type, hw.attach_to, hw.autoload) == (ProgType.TRACEPOINT, "syscalls/sys_enter_write", True)
    assert obj.programs["optional_prog"].autoload is False
    assert obj.programs["on_exec"].attach_to == "sched_process_exec"
    assert obj.btf.find("handle_write")[0].id == hw.btf_func_id
    assert [f.name for f in obj.functions if not f.is_program] == ["global_sub", "helper_add", "loop_cb"]

    outer, jmp = obj.maps["outer"], obj.maps["jmp"]
    assert outer.type == MapType.ARRAY_OF_MAPS and outer.values == {0: "in1", 2: "in2"}
    assert outer.inner is not None and outer.inner.name == "outer.inner"
    assert (outer.inner.type, outer.inner.max_entries, outer.inner.value_size) == (MapType.ARRAY, 4, 8)
    assert jmp.values == {1: "tail_target"}
    assert obj.maps["rb"].max_entries == 8192  # 5000 rounded up to a power-of-2 number of pages

    rodata, data, bss = obj.maps[".rodata"], obj.maps[".data"], obj.maps[".bss"]
    assert rodata.kernel_name == "linktest.rodata" and rodata.readonly
    assert rodata.flags & MapFlag.RDONLY_PROG and rodata.flags & MapFlag.MMAPABLE
    assert obj.maps[".data.custom"].kernel_name == ".data.custom"
    assert obj.maps[".kconfig"].kernel_name == "linktes.kconfig" and obj.maps[".kconfig"].readonly
    assert bytes(bss.data) == bytes(bss.value_size)

    v = obj.variables
    assert v["counter"].value == 5 and v["arr"].value == [1, 2, 3, 4]
    assert v["cfg_name"].value == "hello" and v["target_pid"].value == 0 and v["hits"].value == 0
    v["target_pid"].value = 1234
    v["cfg_name"].value = "bye"
    v["hits"].value = 2**40
    assert struct.unpack_from("<i", rodata.data, v["target_pid"].offset)[0] == 1234
    assert rodata.data[v["cfg_name"].offset:v["cfg_name"].offset + 4] == b"bye\0"
    assert struct.unpack_from("<Q", bss.data, 0)[0] == 2**40 and v["hits"].value == 2**40
    assert data.data == bytearray(b"\x05\0\0\0")
    with pytest.raises(BTFError):
        v["cfg_name"].value = "x" * 17

    names = [e.name for e in obj.externs.values()]
    # libbpf's order: kconfig first (by alignment desc, size asc, name), then ksyms by name
    assert names == ["CONFIG_COREPY_NOT_THERE", "CONFIG_NF_CONNTRACK", "LINUX_KERNEL_VERSION",
                     "CONFIG_BPF_SYSCALL", "CONFIG_DEFAULT_HOSTNAME", "bpf_task_acquire", "bpf_task_release",
                     "init_task"]
    assert [obj.externs[n].offset for n in names[:5]] == [0, 4, 8, 12, 13]
    assert obj.maps[".kconfig"].value_size == 29
    assert obj.externs["init_task"].typeless and obj.externs["bpf_task_acquire"].is_func


def test_prepared_btf_has_datasec_layout():
    """DATASEC sizes/offsets filled from the ELF, externs given loadable linkage (as libbpf)."""
    obj = ObjectSpec.from_file(str(link_object()))
    btf = obj.btf
    rodata = btf.find(".rodata")[0]
    assert rodata.size == obj.maps[".rodata"].value_size
    offsets = {btf[v.type_id].name: v.offset for v in rodata.vars}
    assert offsets["cfg_name"] == obj.variables["cfg_name"].offset == 4
    kcfg = btf.find(".kconfig")[0]
    assert kcfg.size == 29 and all(btf[v.type_id].linkage == 1 for v in kcfg.vars)
    ksyms = btf.find(".ksyms")[0]
    assert [v.offset for v in ksyms.vars] == [0, 4, 8] and ksyms.size == 12
    dummy = btf[len(btf) - 1]
    assert dummy.name == "dummy_ksym" and all(btf[v.type_id].kind.name == "VAR" for v in ksyms.vars)
    assert obj.btf_fixups == btf.raw_bytes()


@pytest.mark.parametrize("obj_name, section, expected", [
    ("minimal", ".bss", "minimal.bss"),
    ("bootstrap", ".rodata", "bootstra.rodata"),
    ("a", ".kconfig", "a.kconfig"),
    ("very_long_object", ".kconfig", "very_lo.kconfig"),
    ("x", ".rodata.str1.1", ".rodata.str1.1"),
    ("x", ".data.a_very_long_name", ".data.a_very_lo"),
    ("my-obj", ".data", "my_obj.data"),
])
def test_internal_map_name(obj_name, section, expected):
    assert internal_map_name(obj_name, section) == expected


def test_object_name():
    assert object_name("/a/b/minimal.bpf.o") == "minimal"


# --- bad input --------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ObjectError, match="cannot read object file") as e:
        ObjectSpec.from_file(str(tmp_path / "nope.o"))
    assert e.value.path == str(tmp_path / "nope.o")


def test_not_elf(tmp_path):
    p = tmp_path / "x.o"
    p.write_bytes(b"hello world" * 10)
    with pytest.raises(ObjectError, match="not an ELF"):
        ObjectSpec.from_file(str(p))


@pytest.mark.parametrize("cut", [20, 64, 200, 1000, 4000])
def test_truncated_elf(tmp_path, cut):
    data = link_object().read_bytes()
    p = tmp_path / "t.o"
    p.write_bytes(data[:cut])
    with pytest.raises((ObjectError, BTFError)):
        ObjectSpec.from_file(str(p))


def test_wrong_machine(tmp_path):
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed")
    src = tmp_path / "a.c"
    src.write_text("int f(void) { return 1; }\n")
    subprocess.run([gcc, "-c", str(src), "-o", str(tmp_path / "a.o")], check=True)
    with pytest.raises(ObjectError, match="not a BPF object"):
        ObjectSpec.from_file(str(tmp_path / "a.o"))


def test_corrupt_btf(tmp_path):
    data = bytearray(link_object().read_bytes())
    from corepy.object.elf import read_elf

    sec = read_elf(bytes(data)).section(".BTF")
    start = data.find(sec.data)
    struct.pack_into("<I", data, start + 4, 0xFFFF)  # hdr_len past the blob
    p = tmp_path / "c.o"
    p.write_bytes(bytes(data))
    with pytest.raises(BTFError, match="header length"):
        ObjectSpec.from_file(str(p))


def test_unknown_map_field(tmp_path):
    from test_object_support import build_bpf

    path = build_bpf("badmap", r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1); __type(key, int); __type(value, int);
         __uint(bogus, 3); } m SEC(".maps");
SEC("xdp") int p(void *ctx) { return bpf_map_lookup_elem(&m, &(int){0}) ? 1 : 2; }
char LICENSE[] SEC("license") = "GPL";
""")
    with pytest.raises(ObjectError, match="map 'm': unknown field 'bogus'"):
        ObjectSpec.from_file(str(path))


def test_unknown_section_leaves_type_unspec(tmp_path):
    from test_object_support import build_bpf

    path = build_bpf("oddsec", r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("weird/thing") int p(void *ctx) { return 0; }
char LICENSE[] SEC("license") = "GPL";
""")
    obj = ObjectSpec.from_file(str(path))
    p = obj.programs["p"]
    assert p.prog_type == ProgType.UNSPEC and p.section == "weird/thing" and p.autoload


def test_lookup_errors_name_choices():
    obj = ObjectSpec.from_file(str(link_object()))
    with pytest.raises(ObjectError, match="no program named 'nope'; programs: .*handle_write"):
        obj.program("nope")
    with pytest.raises(ObjectError, match="no map named 'nope'"):
        obj.map("nope")


def test_elf_reader_agrees_with_pyelftools(object_path):
    """corepy's struct-declared ELF reader against pyelftools on every fixture: each section's
    name/type/flags/link/info/bytes, every symbol, and the relocations of code and .maps."""
    _agrees_with_pyelftools(object_path)


def test_elf_reader_agrees_with_pyelftools_big_endian():
    from test_object_support import LINK_SRC, build_bpf

    from corepy.object.elf import read_elf

    path = build_bpf("link_bpfeb", LINK_SRC, ("-target", "bpfeb"))
    assert not read_elf(str(path)).little_endian
    _agrees_with_pyelftools(path)
    obj = ObjectSpec.from_file(str(path))
    assert {n: len(p.insns) for n, p in obj.programs.items()} == {
        n: len(p.insns) for n, p in ObjectSpec.from_file(str(link_object())).programs.items()}


def _agrees_with_pyelftools(object_path):
    from elftools.elf.elffile import ELFFile
    from elftools.elf.enums import ENUM_SH_TYPE_BASE

    from corepy.object.elf import SHF_EXECINSTR, SHT_REL, read_elf

    SH_TYPES = ENUM_SH_TYPE_BASE
    ours = read_elf(str(object_path))
    with open(object_path, "rb") as f:
        elf = ELFFile(f)
        assert ours.little_endian == elf.little_endian
        assert len(ours.sections) == elf.num_sections()
        for sec, ref in zip(ours.sections, elf.iter_sections()):
            h = ref.header
            assert (sec.name, sec.flags, sec.size, sec.link, sec.info) == (
                ref.name, h.sh_flags, h.sh_size, h.sh_link, h.sh_info), sec.name
            assert sec.type == (h.sh_type if isinstance(h.sh_type, int) else SH_TYPES[h.sh_type]), sec.name
            assert sec.data == (b"" if h.sh_type in ("SHT_NOBITS", "SHT_NULL") else ref.data()), sec.name
        symtab = elf.get_section_by_name(".symtab")
        refs = list(symtab.iter_symbols())
        assert [s.name for s in ours.symbols] == [r.name for r in refs]
        assert [(s.value, s.size) for s in ours.symbols] == [(r.entry.st_value, r.entry.st_size) for r in refs]
        for sec, ref in zip(ours.sections, elf.iter_sections()):
            if sec.type != SHT_REL:
                continue
            target = ours.sections[sec.info]
            wanted = target.flags & SHF_EXECINSTR or target.name == ".maps"
            got = [(r.offset, r.symbol.index, r.type) for r in ours.relocs.get(sec.info, [])]
            expected = [(r.entry.r_offset, r.entry.r_info_sym, r.entry.r_info_type) for r in ref.iter_relocations()]
            assert got == (expected if wanted else []), sec.name


def test_compressed_debug_sections_are_ignored():
    """``clang -gz`` compresses the DWARF sections (SHF_COMPRESSED); a loader ignores them, so the
    object parses to the same programs and maps as without."""
    from test_object_support import LINK_SRC, build_bpf

    from corepy.object.elf import SHF_COMPRESSED, read_elf

    plain = ObjectSpec.from_file(str(link_object()))
    gz = build_bpf("link_gz", LINK_SRC, ("-gz=zlib",))
    assert any(s.flags & SHF_COMPRESSED for s in read_elf(str(gz)).sections)
    obj = ObjectSpec.from_file(str(gz))
    assert {n: p.insns for n, p in obj.programs.items()} == {n: p.insns for n, p in plain.programs.items()}
    assert obj.maps.keys() == plain.maps.keys()


def test_compressed_loader_section_is_decompressed(tmp_path):
    """A section a loader needs (.BTF.ext here) compressed with SHF_COMPRESSED/zlib reads as the
    plain one; a corrupt compression header is an ObjectError."""
    objcopy = shutil.which("llvm-objcopy-19")
    if objcopy is None:
        pytest.skip("llvm-objcopy-19 not installed")
    from corepy.object.elf import SHF_COMPRESSED, read_elf

    plain_path = link_object()
    packed = tmp_path / "packed.o"
    subprocess.run([objcopy, "--compress-sections", ".BTF.ext=zlib", str(plain_path), str(packed)], check=True)
    elf = read_elf(str(packed))
    assert [s.name for s in elf.sections if s.flags & SHF_COMPRESSED] == [".BTF.ext"]
    assert elf.section(".BTF.ext").data == read_elf(str(plain_path)).section(".BTF.ext").data
    obj, plain = ObjectSpec.from_file(str(packed)), ObjectSpec.from_file(str(plain_path))
    assert [(f.func_info, f.line_info, f.core_relos) for f in obj.functions] == [
        (f.func_info, f.line_info, f.core_relos) for f in plain.functions]
    data = bytearray(packed.read_bytes())
    start = _section_offset(data, elf, ".BTF.ext")  # where its Elf64_Chdr is
    struct.pack_into("<Q", data, start + 8, 1 << 40)  # ch_size: a terabyte
    with pytest.raises(ObjectError, match="uncompressed"):
        read_elf(bytes(data))
    struct.pack_into("<I", data, start, 7)  # ch_type: unknown
    with pytest.raises(ObjectError, match="unsupported compression type 7"):
        read_elf(bytes(data))


def _section_offset(data: bytes, elf, name: str) -> int:
    """sh_offset of section ``name`` (from the section header table)."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    index = elf.section(name).index
    return struct.unpack_from("<Q", data, shoff + 64 * index + 24)[0]


def test_specs_refuse_names_that_are_not_fields():
    """libbpf's spelling (``map_flags``) or a typo is an AttributeError naming the right field,
    not a new attribute silently ignored at load; the real fields stay assignable."""
    obj = ObjectSpec.from_file(str(link_object()))
    spec = next(iter(obj.maps.values()))
    prog = next(iter(obj.programs.values()))
    with pytest.raises(AttributeError, match="MapSpec has no field 'map_flags'; did you mean 'flags'"):
        spec.map_flags = int(MapFlag.NO_PREALLOC)
    with pytest.raises(AttributeError, match="did you mean 'max_entries'"):
        spec.max_entrys = 8
    with pytest.raises(AttributeError, match="ProgramSpec has no field 'type'; did you mean 'prog_type'"):
        prog.type = ProgType.XDP
    with pytest.raises(AttributeError, match="fields: attach_to, autoload"):
        prog.zzz = 1
    assert not hasattr(spec, "map_flags") and not hasattr(prog, "zzz")
    spec.flags, spec.max_entries, prog.autoload = int(MapFlag.NO_PREALLOC), 8, False
    assert (spec.flags, spec.max_entries, prog.autoload) == (int(MapFlag.NO_PREALLOC), 8, False)


def test_corrupted_objects_fail_cleanly():
    """Random byte corruption of real objects: parsing and linking either work or raise a corepy error."""
    import random

    from corepy.errors import CorepyError
    from corepy.object.externs import resolve_externs
    from corepy.object.link import link
    from corepy.object.parse import parse_object

    rng = random.Random(1234)
    blobs = [p.read_bytes() for p in all_objects()]
    parsed = 0
    for _ in range(120):
        data = bytearray(rng.choice(blobs))
        for _ in range(rng.choice((1, 2, 8))):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.1:
            del data[rng.randrange(len(data)):]
        try:
            obj = parse_object(bytes(data), name="fuzz")
            parsed += 1
            ext = resolve_externs(obj, kconfig={}, kallsyms={}, kernel_btf=obj.btf, kernel_version=1,
                                  features={"LINUX_HAS_BPF_COOKIE": 1, "LINUX_HAS_SYSCALL_WRAPPER": 1})
            for p in obj.programs.values():
                link(obj, p, externs=ext)
        except CorepyError:
            pass
    assert parsed > 20  # most single-byte corruptions hit bytes nobody reads
