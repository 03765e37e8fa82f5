"""``corepy._records`` without :mod:`dataclasses`: its own ``fields``/``replace``, the checks
``@dataclass`` makes, and an open/load path that never imports dataclasses."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from corepy._records import MISSING, field, fields, record, replace

ROOT = Path(__file__).resolve().parent.parent


@record(frozen=True, slots=True)
class Point:
    """Frozen and slotted."""

    x: int
    y: int = 0
    tags: tuple = field(default=(), compare=False)
    SCALE: ClassVar[int] = 10


@record
class Bag:
    """Mutable, with a factory and a field left out of __init__."""

    name: str
    items: list = field(default_factory=list)
    count: int = field(default=0, init=False)


def test_fields_match_dataclasses() -> None:
    for cls in (Point, Bag):
        ours = [(f.name, f.type, f.init, f.repr, f.compare) for f in fields(cls)]
        theirs = [(f.name, f.type, f.init, f.repr, f.compare) for f in dataclasses.fields(cls)]
        assert ours == theirs
    assert [f.name for f in fields(Point(1))] == ["x", "y", "tags"]  # ClassVar is no field
    assert Point.SCALE == 10 and fields(Bag)[1].default is MISSING


def test_replace_matches_dataclasses() -> None:
    p = Point(1, 2, ("a",))
    assert replace(p, y=5) == dataclasses.replace(p, y=5) == Point(1, 5)
    assert replace(p, y=5).tags == ("a",)
    b = Bag("b", [1])
    assert replace(b, name="c").items is b.items
    with pytest.raises(ValueError, match="init=False"):
        replace(b, count=3)
    with pytest.raises(TypeError):
        fields(object())


def test_init_is_compiled_on_first_instance() -> None:
    @record
    class Late:
        """Not instantiated yet."""

        a: int
        b: int = 2

    assert Late.__init__.__qualname__.endswith("Late.__init__")
    assert Late(1) == Late(1, 2) and Late(a=3).b == 2
    with pytest.raises(TypeError):
        Late()  # type: ignore[call-arg]


def test_dataclass_checks() -> None:
    with pytest.raises(ValueError, match="mutable default"):
        record(type("Bad", (), {"__annotations__": {"a": "list"}, "a": []}))
    with pytest.raises(TypeError, match="non-default argument 'b'"):
        record(type("Order", (), {"__annotations__": {"a": "int", "b": "int"}, "a": 1}))


def test_non_slotted_class_attributes_hold_defaults() -> None:
    assert Bag.count == 0 and "items" not in vars(Bag)  # as dataclasses: factory fields leave none


def test_open_and_load_do_not_import_dataclasses() -> None:
    """The open/load path stays clear of dataclasses (and inspect, ast, dis: ~6 ms)."""
    code = (
        "import sys, corepy\n"
        f"with corepy.open({str(ROOT / 'fixtures' / 'bootstrap.bpf.o')!r}) as obj:\n"
        "    obj.load()\n"
        "print(sorted(m for m in ('dataclasses', 'inspect', 'ast') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("options", [dict(frozen=True, slots=True), dict(frozen=True), dict()],
                         ids=["frozen-slots", "frozen", "plain"])
def test_classes_of_one_shape_share_an_init_template_under_their_own_names(options: dict) -> None:
    """Two classes with as many plain fields get __init__s renamed from one code template: each
    takes its own parameter names, positionally or by keyword, with its own defaults."""
    @record(**options)
    class First:
        a: int
        b: str = "b"

    @record(**options)
    class Second:
        left: int
        right: int = 7

    one, two = First(1), Second(right=3, left=2)
    assert (one.a, one.b, two.left, two.right) == (1, "b", 2, 3)
    assert Second(5) == Second(5, 7) and First(a=1, b="x").b == "x"
    assert First.__init__.__code__.co_code == Second.__init__.__code__.co_code  # one template
    assert First.__init__.__code__.co_varnames[:3] == ("self", "a", "b")
    assert First.__init__.__qualname__.endswith("First.__init__")
    with pytest.raises(TypeError, match="right"):
        Second(1, 2, right=3)  # (multiple values for 'right')
    with pytest.raises(TypeError, match="unexpected keyword argument 'a'"):
        Second(a=1)
    if options.get("frozen"):
        with pytest.raises(dataclasses.FrozenInstanceError):
            one.a = 2  # type: ignore[misc]
