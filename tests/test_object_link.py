"""Linking programs (subprograms, calls, callbacks, func/line info, map/extern relocations, CO-RE)
compared instruction for instruction with what libbpf 1.1 loads into the kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import KERNEL_BTF, requires_root
from corepy.asm.insn import CALL_INSN, PSEUDO_BTF_ID, PSEUDO_FUNC, PSEUDO_KFUNC_CALL, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE
from corepy.btf.spec import BTF
from corepy.btf.types import Func
from corepy.errors import ObjectError, RelocationError
from corepy.object.core import relocate_core
from corepy.object.externs import resolve_externs
from corepy.object.link import POISON_CALL_KFUNC_BASE, link
from corepy.object.spec import ObjectSpec
from test_object_support import build_bpf, fixture_objects, link_object, run_oracle

needs_kernel_btf = pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no /sys/kernel/btf/vmlinux")


def linked_programs(path: Path) -> tuple[ObjectSpec, dict]:
    obj = ObjectSpec.from_file(str(path))
    kbtf = BTF.kernel()
    records = relocate_core(obj, kbtf)
    externs = resolve_externs(obj, kernel_btf=kbtf, kallsyms={},
                              features={"LINUX_HAS_BPF_COOKIE": 1, "LINUX_HAS_SYSCALL_WRAPPER": 1})
    return obj, {name: link(obj, p, core=records, externs=externs)
                 for name, p in obj.programs.items() if p.autoload}


@requires_root
@needs_kernel_btf
@pytest.mark.parametrize("name", [p.name for p in fixture_objects()] + ["link"])
def test_linked_insns_equal_libbpf(name):
    """After bpf_object__load, libbpf's final instructions equal ours with the same map fds."""
    path = link_object() if name == "link" else next(p for p in fixture_objects() if p.name == name)
    from test_object_support import oracle_process

    r = oracle_process(path, load=True)
    if r.returncode != 0:
        reason = [line for line in r.stderr.splitlines() if line.strip()][-3:]
        pytest.skip(f"libbpf 1.1 cannot load {name} on this kernel: {' | '.join(reason)}")
    seen = run_oracle(path, load=True)
    obj, linked = linked_programs(path)
    fds = {m.name: seen["maps"][m.kernel_name if m.internal else m.name]["fd"] for m in obj.maps.values()}
    assert set(linked) == {n for n, p in seen["progs"].items() if p["autoload"]}
    for pname, lp in linked.items():
        mine = [(i.code, i.dst, i.src, i.off, i.imm) for i in lp.patched(fds)]
        theirs = seen["progs"][pname]["insns"]
        assert len(mine) == len(theirs), pname
        diff = [(k, a, b) for k, (a, b) in enumerate(zip(mine, theirs)) if a != b]
        assert not diff, f"{pname}: first differences (index, ours, libbpf): {diff[:5]}"


@needs_kernel_btf
def test_link_layout_and_ext_info():
    obj, linked = linked_programs(link_object())
    hw = linked["handle_write"]
    # subprograms appended in order of first use, depth first: the bpf_loop callback, global_sub, helper_add
    assert [n for n, _ in hw.layout] == ["handle_write", "loop_cb", "global_sub", "helper_add"]
    starts = dict(hw.layout)
    assert [fi.insn_off for fi in hw.func_info] == [s for _, s in hw.layout]
    for fi, (fname, _) in zip(hw.func_info, hw.layout):
        t = obj.btf[fi.type_id]
        assert isinstance(t, Func) and t.name == fname
    offs = [li.insn_off for li in hw.line_info]
    assert offs == sorted(offs) and offs[0] == 0 and offs[-1] < len(hw.insns)
    # every bpf-to-bpf call and callback address lands on the start of a function
    for k, insn in enumerate(hw.insns):
        if (insn.code == CALL_INSN and insn.src == 1) or (insn.is_ld_imm64 and insn.src == PSEUDO_FUNC):
            assert k + insn.imm + 1 in starts.values()
    # map references
    kinds = {(ref.map, ref.kind) for ref in hw.map_refs}
    assert {("counts", "fd"), (".rodata", "value"), (".kconfig", "value"), (".data.custom", "value"),
            (".bss", "value"), (".data", "value")} <= kinds
    for ref in hw.map_refs:
        insn = hw.insns[ref.insn]
        assert insn.is_ld_imm64 and insn.src == (PSEUDO_MAP_FD if ref.kind == "fd" else PSEUDO_MAP_VALUE)
        assert hw.insns[ref.insn + 1].imm == ref.offset
    cfg = obj.variables["cfg_name"]
    assert any(r.map == ".rodata" and r.offset == cfg.offset for r in hw.map_refs)
    assert [n for n, _ in linked["xdp_pass"].layout] == ["xdp_pass"]
    assert [n for n, _ in linked["xdp_drop"].layout] == ["xdp_drop", "global_sub", "helper_add"]


@needs_kernel_btf
def test_kfuncs_and_ksyms():
    obj, linked = linked_programs(link_object())
    kbtf = BTF.kernel()
    on_exec = linked["on_exec"]
    calls = [i for i in on_exec.insns if i.code == CALL_INSN and i.src == PSEUDO_KFUNC_CALL]
    assert {kbtf[i.imm].name for i in calls} == {"bpf_task_acquire", "bpf_task_release"}
    # typeless weak ksym missing from kallsyms: ld_imm64 of address 0
    idx = obj.programs["on_exec"].function.relocs
    (i_task,) = [r.insn for r in idx.values() if r.target == "init_task"]
    base = dict(on_exec.layout)["on_exec"]
    assert (on_exec.insns[base + i_task].imm, on_exec.insns[base + i_task + 1].imm) == (0, 0)


def test_unresolved_weak_kfunc_is_poisoned():
    src = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
extern void corepy_no_such_kfunc(void) __ksym __weak;
extern void *corepy_no_such_var __ksym __weak;
SEC("tp_btf/sched_process_exec") int p(void *ctx)
{
	if (corepy_no_such_kfunc)
		corepy_no_such_kfunc();
	return 0;
}
char LICENSE[] SEC("license") = "GPL";
"""
    obj = ObjectSpec.from_file(str(build_bpf("weakkfunc", src)))
    if not KERNEL_BTF.exists():
        pytest.skip("no /sys/kernel/btf/vmlinux")
    ext = resolve_externs(obj, kernel_btf=BTF.kernel(), kallsyms={})
    assert not ext["corepy_no_such_kfunc"].resolved
    lp = link(obj, "p", externs=ext)
    assert lp.poisoned_kfuncs and lp.poisoned_kfuncs[0][1] == "corepy_no_such_kfunc"
    k = lp.poisoned_kfuncs[0][0]
    assert lp.insns[k].code == CALL_INSN and lp.insns[k].src == 0
    assert lp.insns[k].imm == POISON_CALL_KFUNC_BASE + obj.externs["corepy_no_such_kfunc"].index


def test_link_needs_resolved_externs():
    obj = ObjectSpec.from_file(str(link_object()))
    with pytest.raises(RelocationError, match="resolve_externs"):
        link(obj, "handle_write")
    # a program without externs links without them
    assert len(link(obj, "xdp_pass").insns) == 2


@needs_kernel_btf
def test_core_records_skip_autoload_off():
    obj = ObjectSpec.from_file(str(link_object()))
    kbtf = BTF.kernel()
    records = relocate_core(obj, kbtf)
    assert {r.program for r in records} == {"on_exec"}
    obj.programs["optional_prog"].autoload = True
    records = relocate_core(obj, kbtf)
    assert {r.program for r in records} == {"on_exec", "optional_prog"}
    task = kbtf.find_one("task_struct")
    pid_off = next(bits for m, bits in kbtf.members(task.id) if m.name == "pid") // 8
    (pid,) = [r for r in records if r.program == "on_exec" and ".pid " in r.result.local_spec]
    assert pid.result.new == pid_off and pid.insn < len(obj.programs["on_exec"].insns)
    lp = link(obj, "optional_prog", core=records,
              externs=resolve_externs(obj, kernel_btf=kbtf, kallsyms={}))
    assert lp.core and all(r.program == "optional_prog" for r in lp.core)


@needs_kernel_btf
def test_patched_needs_every_map_fd():
    obj = ObjectSpec.from_file(str(link_object()))
    lp = link(obj, "handle_write", externs=resolve_externs(obj, kernel_btf=BTF.kernel(), kallsyms={}))
    with pytest.raises(ObjectError, match="no fd for map"):
        lp.patched({".rodata": 3})
    fds = {name: 100 + k for k, name in enumerate(obj.maps)}
    out = lp.patched(fds)
    assert all(out[r.insn].imm == fds[r.map] for r in lp.map_refs)
    assert all(lp.insns[r.insn].imm == 0 for r in lp.map_refs)  # the linked program itself holds no fds
