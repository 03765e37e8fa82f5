"""core_zoo.bpf.o relocated against the running kernel's BTF: every relocation's value equals
the fact read directly from that BTF (member offsets and sizes, signedness, bitfield placement,
type ids and sizes, enumerator values), and what the kernel lacks is answered 0 or poisoned."""

from __future__ import annotations

import re

import pytest

from conftest import KERNEL_BTF, fixture_obj
from corepy.btf import BTF, Kind
from corepy.btf.core import CoreResult, ReloKind, Target, calc_relo
from corepy.btf.types import Enum, Enum64

pytestmark = pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no /sys/kernel/btf/vmlinux")


@pytest.fixture(scope="module")
def relocated() -> dict[str, list[tuple[CoreResult, object]]]:
    """'<kind> type.path' (local spec without ids, indices, values) -> results, in order."""
    local = BTF.from_file(fixture_obj("core_zoo"))
    target = Target.running_kernel()
    out: dict[str, list] = {}
    for records in local.ext.core_relos.values():
        for rec in records:
            r = calc_relo(local, rec, target)
            out.setdefault(f"{r.kind} {_path(r.local_spec)}", []).append((r, rec))
    return out


def _path(spec: str) -> str:
    # "[5] struct task_struct.comm[3] (0:125:3 @ offset 1755)" -> "task_struct.comm[3]"
    # "[354] enum e___x::NAME = 1000" -> "e___x::NAME"
    text = re.sub(r"^\[\d+\] \w+ ", "", spec)
    return re.sub(r" \(.*\)$| = -?\d+$", "", text)


def values(relocated, key: str) -> set[int]:
    results = relocated[key]
    assert not any(r.poisoned for r, _ in results), key
    return {r.new for r, _ in results}


@pytest.fixture(scope="module")
def kernel():
    return BTF.kernel()


def member(kernel, struct: str, name: str):
    t = kernel.find_one(struct, Kind.STRUCT)
    found = kernel.find_member(t.id, name)
    return found  # (Member, bit offset) or None


def test_field_offsets_and_sizes(relocated, kernel):
    def off(name):
        return member(kernel, "task_struct", name)[1] // 8

    vruntime = member(kernel, "sched_entity", "vruntime")[1] // 8
    assert values(relocated, "byte_off task_struct.pid") == {off("pid")}
    assert values(relocated, "byte_off task_struct.tgid") == {off("tgid")}
    assert values(relocated, "byte_off task_struct.comm[3]") == {off("comm") + 3}
    assert values(relocated, "byte_off task_struct.se.vruntime") == {off("se") + vruntime}
    assert values(relocated, "byte_off task_struct.real_parent") == {off("real_parent")}
    assert values(relocated, "byte_off task_struct___v1.pid") == {off("pid")}
    assert values(relocated, "byte_off task_struct___v1.tgid") == {off("tgid")}

    def size(name):
        return kernel.resolve_size(member(kernel, "task_struct", name)[0].type_id)

    assert values(relocated, "byte_sz task_struct.comm") == {size("comm")} == {16}
    assert values(relocated, "byte_sz task_struct.pid") == {4}
    assert values(relocated, "byte_sz task_struct___v1.flags") == {size("flags")}
    assert values(relocated, "byte_sz task_struct.se") == {kernel.find_one("sched_entity", Kind.STRUCT).size}


def test_field_exists_and_poisoning(relocated, kernel):
    assert values(relocated, "field_exists task_struct___v1.pid") == {1}
    assert values(relocated, "field_exists task_struct___v1.corepy_missing") == {0}
    for key, name in (("task_struct___old.state", "state"), ("task_struct___new.__state", "__state")):
        assert values(relocated, f"field_exists {key}") == {int(member(kernel, "task_struct", name) is not None)}
    poisoned = relocated["byte_off task_struct___v1.corepy_missing"]
    assert poisoned and all(r.poisoned and r.target_spec is None for r, _ in poisoned)
    assert all("no field 'corepy_missing'" in r.reason for r, _ in poisoned)


def test_field_signedness(relocated, kernel):
    def signed(name):
        return int(kernel.skip_mods_and_typedefs(member(kernel, "task_struct", name)[0].type_id).signed)

    assert values(relocated, "signed task_struct.pid") == {signed("pid")} == {1}
    assert values(relocated, "signed task_struct.flags") == {signed("flags")} == {0}
    assert values(relocated, "signed task_struct.prio") == {signed("prio")} == {1}
    assert values(relocated, "signed task_struct___v1.flags") == {signed("flags")}


@pytest.mark.parametrize("name", ["sched_reset_on_fork", "in_iowait"])
def test_bitfield_load_and_shifts_extract_the_field(relocated, kernel, name):
    """Loading byte_sz bytes at byte_off, shifting left by lshift then right by rshift leaves
    exactly the field's bits (little-endian), as BPF_CORE_READ_BITFIELD does."""
    m, bit_off = member(kernel, "task_struct", name)
    assert m.bitfield_size > 0
    (byte_off,) = values(relocated, f"byte_off task_struct.{name}")
    (byte_sz,) = values(relocated, f"byte_sz task_struct.{name}")
    (lshift,) = values(relocated, f"lshift_u64 task_struct.{name}")
    (rshift,) = values(relocated, f"rshift_u64 task_struct.{name}")
    assert byte_sz in (1, 2, 4, 8) and byte_off % byte_sz == 0
    assert byte_off * 8 <= bit_off and bit_off + m.bitfield_size <= (byte_off + byte_sz) * 8
    shift, mask = bit_off - byte_off * 8, (1 << m.bitfield_size) - 1
    for value in (0, mask, 1):
        word = value << shift | ~(mask << shift) & ((1 << 8 * byte_sz) - 1)  # other bits all set
        assert ((word << lshift) & (2**64 - 1)) >> rshift == value
    assert values(relocated, f"signed task_struct.{name}") == {0}


def test_plain_int_shifts(relocated):
    assert values(relocated, "lshift_u64 task_struct.pid") == {32}
    assert values(relocated, "rshift_u64 task_struct.pid") == {32}


def test_type_ids(relocated, kernel):
    for (r, rec) in relocated["local_type_id task_struct"] + relocated["local_type_id corepy_no_such_type"]:
        assert r.new == r.old == rec.type_id
    task = kernel.find_one("task_struct", Kind.STRUCT).id
    assert values(relocated, "target_type_id task_struct") == {task}
    assert values(relocated, "target_type_id task_struct___v1") == {task}
    assert values(relocated, "target_type_id corepy_no_such_type") == {0}
    assert values(relocated, "target_type_id pid_t") == {kernel.find_one("pid_t", Kind.TYPEDEF).id}


def test_type_exists_size_matches(relocated, kernel):
    assert values(relocated, "type_exists task_struct") == {1}
    assert values(relocated, "type_exists corepy_no_such_type") == {0}
    assert values(relocated, "type_exists pid_t") == {1}
    assert values(relocated, "type_exists bpf_prog_type") == {1}
    assert values(relocated, "type_exists task_struct___v1") == {1}
    task_size = kernel.find_one("task_struct", Kind.STRUCT).size
    assert values(relocated, "type_size task_struct") == {task_size}
    assert values(relocated, "type_size task_struct___v1") == {task_size}
    assert values(relocated, "type_size corepy_no_such_type") == {0}
    assert values(relocated, "type_size pid_t") == {4}
    assert values(relocated, "type_size list_head___big") == {kernel.find_one("list_head", Kind.STRUCT).size}
    assert values(relocated, "type_matches task_struct___ok") == {1}
    assert values(relocated, "type_matches task_struct___v1") == {0}
    assert values(relocated, "type_matches bpf_prog_type___corepy") == {0}
    assert values(relocated, "type_matches pid_t") == {1}
    assert values(relocated, "type_matches task_struct___badtype") == {0}


def test_enum_values(relocated, kernel):
    def value(enum: str, name: str) -> int:
        e = next(t for t in kernel.find(enum) if isinstance(t, (Enum, Enum64)))
        return next(v.value for v in e.values if v.name == name)

    assert values(relocated, "enumval_exists bpf_prog_type::BPF_PROG_TYPE_SYSCALL") == {1}
    assert values(relocated, "enumval_exists bpf_prog_type___corepy::BPF_PROG_TYPE_CorepyMissing___corepy") == {0}
    assert values(relocated, "enumval_exists bpf_prog_type___corepy::BPF_PROG_TYPE_XDP___corepy") == {1}
    xdp = value("bpf_prog_type", "BPF_PROG_TYPE_XDP")
    assert values(relocated, "enumval_value bpf_prog_type::BPF_PROG_TYPE_XDP") == {xdp}
    assert values(relocated, "enumval_value bpf_prog_type___corepy::BPF_PROG_TYPE_XDP___corepy") == {xdp}
    assert {r.old for r, _ in relocated["enumval_value bpf_prog_type___corepy::BPF_PROG_TYPE_XDP___corepy"]} == {99}
    ringbuf = value("bpf_map_type", "BPF_MAP_TYPE_RINGBUF")
    assert values(relocated, "enumval_value bpf_map_type::BPF_MAP_TYPE_RINGBUF") == {ringbuf}
    missing = relocated["enumval_value bpf_prog_type___corepy::BPF_PROG_TYPE_CorepyMissing___corepy"]
    assert missing and all(r.poisoned for r, _ in missing)


def test_every_kind_is_exercised(relocated):
    kinds = {ReloKind.from_short(key.split()[0]) for key in relocated}
    assert kinds == set(ReloKind)
