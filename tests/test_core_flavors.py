"""CO-RE flavored target names (``x___y``): the per-name string searches agree with the one
scan of every flavored name, before and after the switch between them."""

from __future__ import annotations

import os

import pytest

from corepy.btf.core import target
from corepy.btf.core.target import FLAVOR_SEARCHES, _all_flavors, _Flavors, _strings_starting

STRINGS = b"\0task_struct\0task_struct___v1\0__task_struct___x\0task_struct___a___b\0mm___\0mm___o\0a____b\0"


def test_strings_starting_finds_whole_strings_only() -> None:
    assert _strings_starting(STRINGS, b"task_struct___") == ["task_struct___v1", "task_struct___a___b"]
    assert _strings_starting(b"x___1\0y\0x___2", b"x___") == ["x___1", "x___2"]  # at 0, and unterminated
    assert _strings_starting(STRINGS, b"nope") == []


def test_per_name_searches_agree_with_the_full_scan() -> None:
    every = _all_flavors(STRINGS)
    assert every == {"task_struct": ["task_struct___v1"], "__task_struct": ["__task_struct___x"],
                     "task_struct___a": ["task_struct___a___b"], "mm": ["mm___o"]}
    names = ["task_struct", "mm", "__task_struct", "task_struct___a", "a_", "absent"]
    flavors = _Flavors(STRINGS)
    for i, ess in enumerate(names):
        assert flavors.of(ess) == every.get(ess, []), ess
        assert (flavors._searches_left is None) == (i >= FLAVOR_SEARCHES)
    assert flavors.of("task_struct") == ["task_struct___v1"]  # kept


@pytest.mark.skipif(not os.path.exists("/sys/kernel/btf/vmlinux"), reason="no kernel BTF")
def test_vmlinux_flavors_same_both_ways() -> None:
    from corepy.btf.spec import BTF

    strings = BTF.kernel().strings_bytes()
    every = _all_flavors(strings)
    for ess in [*every, "task_struct", "mm_struct"]:
        assert _Flavors(strings).of(ess) == every.get(ess, [])
    assert target._flavors_of(BTF.kernel(), "task_struct") == every.get("task_struct", [])
