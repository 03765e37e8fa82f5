"""``record``: ``@dataclass`` made cheaper to import (one small ``compile`` per class, not ~6).

The fields still come from :mod:`dataclasses` (so ``dataclasses.fields``/``replace``/``asdict``
work and ``field(...)`` options apply); ``__init__`` is generated, ``__repr__``/``__eq__``/
``__hash__`` and the frozen guards are shared functions. Same semantics as ``@dataclass`` for
what corepy uses: ``frozen``, ``slots``, ``eq``, defaults, ``default_factory``, ``init=False``,
``repr=False``, ``compare=False``, methods the class defines itself win.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import field
from operator import attrgetter

if typing.TYPE_CHECKING:
    from typing import dataclass_transform
else:  # (typing has it from 3.11; only type checkers need it)
    dataclass_transform = getattr(typing, "dataclass_transform", lambda **kw: lambda f: f)

_T = typing.TypeVar("_T")
_MISSING = dataclasses.MISSING


def _frozen_setattr(self: typing.Any, name: str, value: object) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: typing.Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _getstate(self: typing.Any) -> list:
    return [getattr(self, name) for name in self.__slots__]


def _setstate(self: typing.Any, state: list) -> None:
    for name, value in zip(self.__slots__, state):
        object.__setattr__(self, name, value)


def _repr(self: typing.Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._repr_names)
    return f"{self.__class__.__qualname__}({shown})"


def _eq(self: typing.Any, other: typing.Any) -> bool:
    if other.__class__ is self.__class__:
        return self._values(self) == self._values(other)
    return NotImplemented


def _hash(self: typing.Any) -> int:
    return hash(self._values(self))


def _values_getter(names: tuple[str, ...]) -> typing.Callable[[typing.Any], tuple]:
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return attrgetter(*names) if names else (lambda obj: ())


def _init(cls: type, fields: tuple[dataclasses.Field, ...], frozen: bool) -> typing.Callable[..., None]:
    env: dict[str, typing.Any] = {"_set": object.__setattr__, "_MISSING": _MISSING}
    params, assigns = [], []
    for f in fields:
        value = f.name
        if f.default is not _MISSING:
            env[f"_d_{f.name}"] = f.default
            if f.init:
                params.append(f"{f.name}=_d_{f.name}")
            else:
                value = f"_d_{f.name}"
        elif f.default_factory is not _MISSING:
            env[f"_f_{f.name}"] = f.default_factory
            if f.init:
                params.append(f"{f.name}=_MISSING")
                value = f"_f_{f.name}() if {f.name} is _MISSING else {f.name}"
            else:
                value = f"_f_{f.name}()"
        elif f.init:
            params.append(f.name)
        assigns.append(f"_set(self, {f.name!r}, {value})" if frozen else f"self.{f.name} = {value}")
    if hasattr(cls, "__post_init__"):
        assigns.append("self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(assigns or ["pass"])
    exec(compile(source, f"<record {cls.__qualname__}>", "exec"), env)
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = {f.name: f.type for f in fields if f.init} | {"return": None}
    return init


@dataclass_transform(field_specifiers=(field,))
def record(
    cls: type[_T] | None = None, /, *, frozen: bool = False, slots: bool = False, eq: bool = True
) -> typing.Any:
    """``@dataclass(frozen=..., slots=..., eq=...)`` at a fraction of the import cost."""

    def build(cls: type[_T]) -> type[_T]:
        own = cls.__dict__
        plain: typing.Any = dataclasses.dataclass(cls, init=False, repr=False, eq=False)
        fields = dataclasses.fields(plain)
        names = tuple(f.name for f in fields)
        if slots:
            body = {k: v for k, v in plain.__dict__.items() if k not in names and k not in ("__dict__", "__weakref__")}
            made: typing.Any = type(plain)(plain.__name__, plain.__bases__, {**body, "__slots__": names})
            made.__qualname__ = plain.__qualname__
        else:
            made = plain
        params = made.__dataclass_params__
        for flag, value in (("init", True), ("repr", True), ("eq", eq), ("frozen", frozen), ("slots", slots)):
            if hasattr(params, flag):
                setattr(params, flag, value)
        made.__init__ = _init(made, fields, frozen)
        made._repr_names = tuple(f.name for f in fields if f.repr)
        made._values = staticmethod(_values_getter(tuple(f.name for f in fields if f.compare)))
        if "__repr__" not in own:
            made.__repr__ = _repr
        explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
        if eq and "__eq__" not in own:
            made.__eq__ = _eq
        if not explicit_hash and eq:
            made.__hash__ = _hash if frozen else None
        if frozen:
            made.__setattr__, made.__delattr__ = _frozen_setattr, _frozen_delattr
            if slots:
                made.__getstate__, made.__setstate__ = _getstate, _setstate
        return made

    return build if cls is None else build(cls)
