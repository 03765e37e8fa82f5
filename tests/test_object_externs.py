"""__kconfig / __ksym extern resolution, kconfig and kallsyms parsing; the .kconfig map contents
are compared with what libbpf 1.1 computes from the same kernel config."""

from __future__ import annotations

import os

import pytest

from conftest import KERNEL_BTF, fixture_obj, requires_root
from corepy.asm.insn import PSEUDO_BTF_ID
from corepy.btf.codec import Codec
from corepy.btf.spec import BTF
from corepy.errors import ObjectError
from corepy.object.externs import TRI_MODULE, TRI_YES, resolve_externs
from corepy.object.kallsyms import parse_kallsyms
from corepy.object.kconfig import kernel_version, parse_kconfig, read_kconfig
from corepy.object.link import link
from corepy.object.spec import ObjectSpec
from test_object_support import run_oracle

needs_kernel_btf = pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no /sys/kernel/btf/vmlinux")
CONFIG = {"CONFIG_HZ": "250", "CONFIG_BPF_JIT": "y", "CONFIG_BPF_SYSCALL": "y", "CONFIG_MODULES": "m",
          "CONFIG_LOCALVERSION": '"-corepy"'}


def globals_obj() -> ObjectSpec:
    return ObjectSpec.from_file(str(fixture_obj("globals")))


def kconfig_values(obj: ObjectSpec, data: bytes) -> dict:
    return Codec(obj.btf, obj.maps[".kconfig"].value_type_id).decode(data)._asdict()


def test_parse_kconfig():
    text = "# comment\n\nCONFIG_A=y\nCONFIG_B=\"str\"\n# CONFIG_C is not set\nCONFIG_D=0x10\nOTHER=1\n"
    assert parse_kconfig(text) == {"CONFIG_A": "y", "CONFIG_B": '"str"', "CONFIG_D": "0x10"}
    with pytest.raises(ObjectError, match="no separator"):
        parse_kconfig("CONFIG_X\n")
    with pytest.raises(ObjectError, match=":2: failed to parse 'CONFIG_X=': no value"):
        parse_kconfig("CONFIG_A=y\nCONFIG_X=\n")


def test_read_kconfig_of_this_kernel():
    try:
        cfg = read_kconfig()
    except ObjectError as e:
        pytest.skip(f"this kernel exposes no config: {e}")
    assert cfg.get("CONFIG_BPF_SYSCALL") == "y" and cfg.get("CONFIG_BPF") == "y"


def test_kernel_version():
    assert kernel_version("6.18.44-fc-v669") == (6 << 16) + (18 << 8) + 44
    assert kernel_version("5.10.300-1-amd64") == (5 << 16) + (10 << 8) + 255
    assert kernel_version("6.1") == 0 and kernel_version("x") == 0
    assert kernel_version("6.1.0-27-amd64", "#1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 (2024-11-01)") == (
        (6 << 16) + (1 << 8) + 115)
    assert kernel_version() > 0


def test_parse_kallsyms():
    syms = parse_kallsyms(
        "ffffffff81000000 T _stext\n"
        "ffffffff82000000 d bpf_prog_active.llvm.123456\n"
        "ffffffffc0000000 t veth_open\t[veth]\n"
        "ffffffff81000010 t dup\nffffffff81000020 t dup\n"
        "garbage\n")
    assert syms["_stext"] == 0xFFFFFFFF81000000
    assert syms["bpf_prog_active"] == 0xFFFFFFFF82000000
    assert syms["veth_open"] == 0xFFFFFFFFC0000000
    assert syms.ambiguous == {"dup": {0xFFFFFFFF81000010, 0xFFFFFFFF81000020}}


@needs_kernel_btf
def test_resolve_globals_fixture():
    obj = globals_obj()
    kbtf = BTF.kernel()
    ext = resolve_externs(obj, kconfig=CONFIG, kernel_btf=kbtf, kallsyms={"bpf_prog_active": 0xFFFFFFFF8123ABCD},
                          kernel_version=0x060C05)
    values = kconfig_values(obj, ext.kconfig_data)
    assert values == {"LINUX_KERNEL_VERSION": 0x060C05, "CONFIG_HZ": 250, "CONFIG_BPF_JIT": True,
                      "CONFIG_BPF_SYSCALL": TRI_YES, "CONFIG_MODULES": TRI_MODULE,
                      "CONFIG_LOCALVERSION": "-corepy", "CONFIG_CORE_PY_UNKNOWN": False}
    assert not ext["CONFIG_CORE_PY_UNKNOWN"].resolved
    assert ext["runqueues"].btf_id == kbtf.find("runqueues", kbtf[ext["runqueues"].btf_id].kind)[0].id
    assert kbtf[ext["runqueues"].btf_id].name == "runqueues"
    assert ext["bpf_prog_active"].value == 0xFFFFFFFF8123ABCD
    assert not ext["corepy_no_such_ksym"].resolved

    lp = link(obj, "use_ksyms", externs=ext)
    base = dict(lp.layout)["use_ksyms"]
    relocs = {r.target: r.insn for r in obj.programs["use_ksyms"].function.relocs.values()}
    rq = lp.insns[base + relocs["runqueues"]]
    assert (rq.src, rq.imm) == (PSEUDO_BTF_ID, ext["runqueues"].btf_id)
    i = base + relocs["bpf_prog_active"]
    assert (lp.insns[i].src, lp.insns[i].imm & 0xFFFFFFFF, lp.insns[i + 1].imm & 0xFFFFFFFF) == (
        0, 0x8123ABCD, 0xFFFFFFFF)
    i = base + relocs["corepy_no_such_ksym"]
    assert (lp.insns[i].src, lp.insns[i].imm, lp.insns[i + 1].imm) == (0, 0, 0)


@needs_kernel_btf
@pytest.mark.parametrize("override, message", [
    ({"CONFIG_HZ": None}, "'CONFIG_HZ' \\(strong\\): not resolved"),
    ({"CONFIG_BPF_JIT": "m"}, "implies tristate or char type"),
    ({"CONFIG_HZ": '"x"'}, "implies char array type"),
    ({"CONFIG_HZ": "0x1ffffffff"}, "doesn't fit in 4 bytes"),
    ({"CONFIG_HZ": "abc"}, "isn't a valid integer"),
    ({"CONFIG_BPF_JIT": "2"}, "implies integer type"),
    ({"CONFIG_LOCALVERSION": '"unterminated'}, "invalid string config"),
])
def test_kconfig_value_errors(override, message):
    cfg = {**CONFIG, **override}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    with pytest.raises(ObjectError, match=message):
        resolve_externs(globals_obj(), kconfig=cfg, kernel_btf=BTF.kernel(), kallsyms={})


@needs_kernel_btf
def test_kconfig_edge_values():
    obj = globals_obj()
    cfg = {**CONFIG, "CONFIG_HZ": "-1", "CONFIG_LOCALVERSION": '"' + "x" * 40 + '"', "CONFIG_BPF_JIT": "n"}
    ext = resolve_externs(obj, kconfig=cfg, kernel_btf=BTF.kernel(), kallsyms={})
    values = kconfig_values(obj, ext.kconfig_data)
    assert values["CONFIG_HZ"] == -1 and values["CONFIG_BPF_JIT"] is False
    assert values["CONFIG_LOCALVERSION"] == "x" * 15  # truncated to size - 1, NUL-terminated


@needs_kernel_btf
def test_strong_ksym_missing():
    obj = globals_obj()
    obj.externs["corepy_no_such_ksym"].weak = False
    with pytest.raises(ObjectError, match="corepy_no_such_ksym.*not found in kernel BTF"):
        resolve_externs(obj, kconfig=CONFIG, kernel_btf=BTF.kernel(), kallsyms={})


def test_virtual_feature_externs_need_values(tmp_path):
    from test_object_support import build_bpf

    path = build_bpf("feat", r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
extern _Bool LINUX_HAS_BPF_COOKIE __kconfig;
extern int LINUX_UNKNOWN_THING __kconfig __weak;
SEC("xdp") int p(void *ctx) { return LINUX_HAS_BPF_COOKIE + LINUX_UNKNOWN_THING; }
char LICENSE[] SEC("license") = "GPL";
""")
    obj = ObjectSpec.from_file(str(path))
    with pytest.raises(ObjectError, match="LINUX_HAS_BPF_COOKIE.*features="):
        resolve_externs(obj, kallsyms={})
    ext = resolve_externs(obj, features={"LINUX_HAS_BPF_COOKIE": True}, kallsyms={})
    assert ext["LINUX_HAS_BPF_COOKIE"].value is True and not ext["LINUX_UNKNOWN_THING"].resolved
    assert kconfig_values(obj, ext.kconfig_data) == {"LINUX_HAS_BPF_COOKIE": True, "LINUX_UNKNOWN_THING": 0}


@requires_root
@needs_kernel_btf
def test_kconfig_data_equals_libbpf():
    """With the running kernel's config, the .kconfig map libbpf 1.1 loads equals ours."""
    try:
        cfg = read_kconfig()
    except ObjectError as e:
        pytest.skip(f"this kernel exposes no config: {e}")
    seen = run_oracle(fixture_obj("globals"), load=True)
    obj = globals_obj()
    ext = resolve_externs(obj, kconfig=cfg, kernel_btf=BTF.kernel())
    lib = seen["maps"][obj.maps[".kconfig"].kernel_name]["data"]
    assert ext.kconfig_data == lib
    assert kconfig_values(obj, ext.kconfig_data)["LINUX_KERNEL_VERSION"] == kernel_version()
