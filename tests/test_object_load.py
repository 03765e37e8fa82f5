"""The pure pipeline's output is what the kernel accepts: the prepared BTF loads, and every
autoloaded program links (with func_info/line_info, CO-RE, externs) and passes the verifier."""

from __future__ import annotations

import pytest

from conftest import KERNEL_BTF, requires_root
from corepy.btf.spec import BTF
from corepy.btf.types import Kind
from corepy.object.core import relocate_core
from corepy.object.externs import resolve_externs
from corepy.object.link import FUNC_INFO, LINE_INFO, link
from corepy.object.sections import SecFlag, kernel_btf_target
from corepy.object.spec import MapSpec, ObjectSpec
from corepy.syscalls.uapi import MapType, ProgFlag
from test_object_support import fixture_objects, link_object

pytestmark = [requires_root, pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no /sys/kernel/btf/vmlinux")]
NO_BTF_IDS = {MapType.PERF_EVENT_ARRAY, MapType.CGROUP_ARRAY, MapType.STACK_TRACE, MapType.ARRAY_OF_MAPS,
              MapType.HASH_OF_MAPS, MapType.DEVMAP, MapType.DEVMAP_HASH, MapType.CPUMAP, MapType.XSKMAP,
              MapType.SOCKMAP, MapType.SOCKHASH, MapType.QUEUE, MapType.STACK, MapType.PROG_ARRAY,
              MapType.RINGBUF}


def objects() -> list:
    return [p.name for p in fixture_objects()] + ["link"]


def path_of(name: str):
    return link_object() if name == "link" else next(p for p in fixture_objects() if p.name == name)


@pytest.mark.parametrize("name", objects())
def test_prepared_btf_loads(name):
    from corepy.syscalls.load import btf_load

    obj = ObjectSpec.from_file(str(path_of(name)))
    btf_load(obj.btf_fixups).close()


def _create(m: MapSpec, btf_fd, fds: list):
    from corepy.syscalls.maps import map_create

    inner = _create(m.inner, btf_fd, fds) if m.inner is not None else None
    ids = m.type not in NO_BTF_IDS and m.value_type_id
    fd = map_create(m.type, m.key_size, m.value_size, m.max_entries or 1, flags=m.flags, name=m.kernel_name,
                    inner_map_fd=inner, numa_node=m.numa_node, map_extra=m.map_extra,
                    btf_fd=btf_fd if ids else None, btf_key_type_id=m.key_type_id if ids else 0,
                    btf_value_type_id=m.value_type_id if ids else 0)
    fds.append(fd)
    return fd


@pytest.mark.parametrize("name", objects())
def test_programs_pass_the_verifier(name):
    from corepy.syscalls.load import btf_load, prog_load

    obj = ObjectSpec.from_file(str(path_of(name)))
    kbtf = BTF.kernel()
    core = relocate_core(obj, kbtf)
    from corepy.errors import ObjectError
    from corepy.object.kallsyms import read_kallsyms

    kallsyms = read_kallsyms()
    try:
        externs = resolve_externs(obj, kernel_btf=kbtf, kallsyms=kallsyms,
                                  features={"LINUX_HAS_BPF_COOKIE": 1, "LINUX_HAS_SYSCALL_WRAPPER": 1})
    except ObjectError as e:
        missing = [x.name for x in obj.externs.values() if x.typeless and not x.weak and x.name not in kallsyms]
        if missing and "not resolved" in str(e):
            pytest.skip(f"/proc/kallsyms of this kernel lacks {missing} (no data symbols): {e}")
        raise
    fds: list = []
    btf_fd = btf_load(obj.btf_fixups)
    fds.append(btf_fd)
    try:
        map_fds = {m.name: int(_create(m, btf_fd, fds)) for m in obj.maps.values()}
        loaded = 0
        for p in obj.programs.values():
            if not p.autoload:
                continue
            lp = link(obj, p, core=core, externs=externs)
            attach_btf_id = 0
            if p.section_flags & SecFlag.ATTACH_BTF:
                target, kind = kernel_btf_target(p.expected_attach_type, p.attach_to)
                found = kbtf.find(target, Kind[kind])
                assert found, f"{p.name}: {target} not in kernel BTF"
                attach_btf_id = found[0].id
            flags = p.prog_flags | (ProgFlag.SLEEPABLE if p.sleepable else 0)
            fd = prog_load(p.prog_type, lp.patched(map_fds), license=p.license, name=p.name[:15],
                           expected_attach_type=int(p.expected_attach_type or 0), prog_flags=int(flags),
                           btf_fd=btf_fd, func_info=lp.func_info_bytes(), func_info_rec_size=FUNC_INFO.size,
                           line_info=lp.line_info_bytes(), line_info_rec_size=LINE_INFO.size,
                           attach_btf_id=attach_btf_id, kern_version=p.kern_version)
            fds.append(fd)
            loaded += 1
        assert loaded == sum(p.autoload for p in obj.programs.values())
    finally:
        for fd in reversed(fds):
            fd.close()
