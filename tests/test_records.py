"""``corepy._records.record`` behaves as ``@dataclass`` with the same options does."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from dataclasses import field

import pytest

from corepy._records import record

OPTIONS = [
    {},
    {"frozen": True},
    {"slots": True},
    {"frozen": True, "slots": True},
    {"eq": False},
    {"frozen": True, "slots": True, "eq": False},
]


def _body() -> dict:
    return {
        "__annotations__": {"a": "int", "b": "str", "c": "list", "d": "int", "e": "dict", "f": "int"},
        "__doc__": "A record.",
        "b": "x",
        "c": field(default_factory=list, repr=False),
        "d": field(default=7, compare=False),
        "e": field(default_factory=dict, repr=False, compare=False),
        "f": field(default=3, init=False),
    }


def _pair(options: dict) -> tuple[type, type]:
    ours = record(type("Ours", (), _body()), **options)
    theirs = dataclasses.dataclass(type("Theirs", (), _body()), **options)
    return ours, theirs


def _same_repr(ours: object, theirs: object) -> bool:
    return repr(ours).replace("Ours", "X") == repr(theirs).replace("Theirs", "X")


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_record_matches_dataclass(options: dict) -> None:
    ours_cls, theirs_cls = _pair(options)
    assert [(f.name, f.type, f.init, f.repr, f.compare) for f in dataclasses.fields(ours_cls)] == \
        [(f.name, f.type, f.init, f.repr, f.compare) for f in dataclasses.fields(theirs_cls)]
    assert ("__slots__" in vars(ours_cls)) == ("__slots__" in vars(theirs_cls))
    for args, kw in [((1,), {}), ((1, "y", [2]), {"d": 9}), ((), {"a": 5, "e": {"k": 1}})]:
        ours, theirs = ours_cls(*args, **kw), theirs_cls(*args, **kw)
        assert _same_repr(ours, theirs)
        assert dataclasses.asdict(ours) == dataclasses.asdict(theirs)
        twin_ours, twin_theirs = ours_cls(*args, **kw), theirs_cls(*args, **kw)
        assert (ours == twin_ours) == (theirs == twin_theirs)
        other_d = dataclasses.replace(ours, d=ours.d + 1)  # d does not take part in ==
        assert (ours == other_d) == (theirs == dataclasses.replace(theirs, d=theirs.d + 1))
        assert ours != dataclasses.replace(ours, a=ours.a + 1)
        assert (ours_cls.__hash__ is None) == (theirs_cls.__hash__ is None)
        if options.get("frozen") and options.get("eq", True):
            try:
                hash(theirs)
            except TypeError:  # a list among the compared fields: neither hashes
                with pytest.raises(TypeError):
                    hash(ours)
            else:
                assert hash(ours) == hash(twin_ours)
            assert hash(ours_cls(1, c=())) == hash(ours_cls(1, c=()))
            with pytest.raises(dataclasses.FrozenInstanceError):
                ours.a = 2  # type: ignore[misc]
            with pytest.raises(dataclasses.FrozenInstanceError):
                del ours.a
        assert ours_cls(1).c is not ours_cls(1).c  # a fresh default per instance
        assert _same_repr(copy.deepcopy(ours), theirs)


def test_record_keeps_methods_the_class_defines() -> None:
    @record
    class Custom:
        """Has its own __repr__ and __eq__, and a __post_init__."""

        a: int
        doubled: int = field(default=0, init=False)

        def __post_init__(self) -> None:
            self.doubled = 2 * self.a

        def __repr__(self) -> str:
            return "custom"

        def __eq__(self, other: object) -> bool:
            return True

    assert Custom(2).doubled == 4
    assert repr(Custom(1)) == "custom" and Custom(1) == Custom(2)
    assert Custom.__hash__ is None  # as dataclass: an own __eq__ without __hash__


@record(frozen=True, slots=True)
class Pickled:
    """Module level, so pickle finds it."""

    a: int
    b: tuple = ()


def test_frozen_slotted_record_pickles() -> None:
    value = Pickled(1, (2, 3))
    assert pickle.loads(pickle.dumps(value)) == value
    assert not hasattr(value, "__dict__")
