"""``record``: ``@dataclass`` without importing :mod:`dataclasses` (and its ``inspect``, ``ast``,
``dis``: ~6 ms of a ~24 ms import+open) on the open/load/attach path.

Fields are declared as for a dataclass (annotations, defaults, :func:`field`); ``__init__`` is
generated when the class's first instance is made (renamed from a code template shared by the
classes of one shape and field count, or compiled from its own source),
``__repr__``/``__eq__``/``__hash__`` and the frozen guards are shared functions. Same semantics
as ``@dataclass`` for what corepy uses: ``frozen``, ``slots``, ``eq``, defaults,
``default_factory``, ``init=False``, ``repr=False``, ``compare=False``, ``ClassVar`` annotations
skipped, methods the class defines itself win.

The classes still are dataclasses to :mod:`dataclasses`: ``is_dataclass``, ``fields``,
``replace`` and ``asdict`` work, through ``__dataclass_fields__``/``__dataclass_params__``
built with :mod:`dataclasses` the first time something asks for them. :func:`fields` and
:func:`replace` here answer without that import.
"""

from __future__ import annotations

import sys
from operator import attrgetter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar, dataclass_transform

    _T = TypeVar("_T")
else:
    def dataclass_transform(**kwargs):  # (typing's, from 3.11, only matters to type checkers)
        return lambda f: f

__all__ = ["record", "field", "fields", "replace", "MISSING", "Field"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""No default (as ``dataclasses.MISSING``)."""


class Field:
    """One field of a record (the options of ``dataclasses.Field`` corepy uses)."""

    __slots__ = ("name", "type", "default", "default_factory", "init", "repr", "compare")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING, init: bool = True,
                 repr: bool = True, compare: bool = True):  # noqa: A002 - dataclasses' spelling
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.type: Any = None
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.compare = compare

    def __repr__(self) -> str:
        return (f"Field(name={self.name!r}, type={self.type!r}, default={self.default!r}, "
                f"default_factory={self.default_factory!r}, init={self.init}, repr={self.repr}, "
                f"compare={self.compare})")


def field(*, default: Any = MISSING, default_factory: Any = MISSING, init: bool = True, repr: bool = True,
          compare: bool = True) -> Any:
    """A field's options, as ``dataclasses.field``."""
    return Field(default, default_factory, init, repr, compare)


def fields(class_or_instance: Any) -> tuple[Field, ...]:
    """The fields of a record class or instance, in order (as ``dataclasses.fields``)."""
    try:
        return class_or_instance._record_fields
    except AttributeError:
        raise TypeError("must be called with a record type or instance") from None


def replace(obj: _T, /, **changes: Any) -> _T:
    """A copy of record ``obj`` with ``changes`` (as ``dataclasses.replace``)."""
    for f in fields(obj):
        if not f.init:
            if f.name in changes:
                raise ValueError(f"field {f.name} is declared with init=False, it cannot be specified with replace()")
        elif f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return obj.__class__(**changes)


def _frozen_error(message: str) -> Exception:
    from dataclasses import FrozenInstanceError  # (only when someone tries)

    return FrozenInstanceError(message)


def _frozen_setattr(self: Any, name: str, value: object) -> None:
    raise _frozen_error(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise _frozen_error(f"cannot delete field {name!r}")


def _getstate(self: Any) -> list:
    return [getattr(self, name) for name in self.__slots__]


def _setstate(self: Any, state: list) -> None:
    for name, value in zip(self.__slots__, state):
        object.__setattr__(self, name, value)


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._repr_names)
    return f"{self.__class__.__qualname__}({shown})"


def _eq(self: Any, other: Any) -> bool:
    if other.__class__ is self.__class__:
        return self._values(self) == self._values(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(self._values(self))


def _values_getter(names: tuple[str, ...]) -> Callable[[Any], tuple]:
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return attrgetter(*names) if names else (lambda obj: ())


def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    typing = sys.modules.get("typing")
    return typing is not None and (annotation is typing.ClassVar or getattr(annotation, "__origin__", None)
                                   is typing.ClassVar)


def _is_dataclass_field(value: Any) -> bool:
    dataclasses = sys.modules.get("dataclasses")  # (a dataclasses.Field means it is imported)
    return dataclasses is not None and isinstance(value, dataclasses.Field)


def _as_field(value: Any) -> Field:
    """A class attribute as a field: ours, a ``dataclasses.field()`` (converted), or a default."""
    if isinstance(value, Field):
        return value
    if _is_dataclass_field(value):
        missing = sys.modules["dataclasses"].MISSING
        return Field(MISSING if value.default is missing else value.default,
                     MISSING if value.default_factory is missing else value.default_factory,
                     value.init, value.repr, bool(value.compare))
    return Field(default=value)


def _collect(cls: type) -> tuple[Field, ...]:
    """The fields of ``cls``: its record bases' first, then its own annotations in order."""
    found: dict[str, Field] = {}
    for base in cls.__mro__[-1:0:-1]:
        for f in base.__dict__.get("_record_fields", ()):
            found[f.name] = f
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        f = _as_field(cls.__dict__.get(name, MISSING))
        f.name, f.type = name, annotation
        default = f.default
        if default is not MISSING and type(default).__hash__ is None:
            raise ValueError(f"mutable default {type(default)} for field {name} is not allowed: use default_factory")
        found[name] = f
    seen_default = False
    for f in found.values():
        if not f.init:
            continue
        if f.default is not MISSING or f.default_factory is not MISSING:
            seen_default = True
        elif seen_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")
    return tuple(found.values())


def _init(cls: type, fields: tuple[Field, ...], frozen: bool) -> Callable[..., None]:
    """Make the class's ``__init__``. A frozen class whose fields are all slots stores each
    value through its slot's own setter (a third faster than ``object.__setattr__`` by name)."""
    env: dict[str, Any] = {"_set": object.__setattr__, "_MISSING": MISSING}
    params, names, values = [], [], []
    for f in fields:
        value = f.name
        if f.default is not MISSING:
            env[f"_d_{f.name}"] = f.default
            if f.init:
                params.append(f"{f.name}=_d_{f.name}")
            else:
                value = f"_d_{f.name}"
        elif f.default_factory is not MISSING:
            env[f"_f_{f.name}"] = f.default_factory
            if f.init:
                params.append(f"{f.name}=_MISSING")
                value = f"_f_{f.name}() if {f.name} is _MISSING else {f.name}"
            else:
                value = f"_f_{f.name}()"
        elif f.init:
            params.append(f.name)
        else:
            continue  # no init, no default: left unset (as dataclasses)
        names.append(f.name)
        values.append(value)
    slots = [cls.__dict__.get(name) or getattr(cls, name, None) for name in names]
    slotted = frozen and all(type(slot).__name__ == "member_descriptor" for slot in slots)
    if (len(names) == len(fields) and all(f.init and f.default_factory is MISSING for f in fields)
            and not hasattr(cls, "__post_init__")):  # the common shape: from a shared template
        init = _from_template(names, tuple(f.default for f in fields if f.default is not MISSING),
                              slots if slotted else None, frozen)
    else:
        init = _compiled(cls, names, params, values, slots if slotted else None, frozen, env)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = {f.name: f.type for f in fields if f.init} | {"return": None}
    return init


_TEMPLATES: dict[tuple[str, int], Any] = {}
"""(shape, field count) -> the code of an ``__init__`` of that shape, made once and renamed per class."""


def _from_template(names: list[str], defaults: tuple[Any, ...], slots: list[Any] | None,
                   frozen: bool) -> Callable[..., None]:
    """``__init__(self, <names>)`` storing each argument, made from a code template shared by every
    class of the same shape and field count (its parameter and attribute names replaced): one
    small compile per shape and count, not per class (~80 us each, ~37 classes in a load)."""
    from types import FunctionType

    shape = "slots" if slots is not None else "frozen" if frozen else "plain"
    n = len(names)
    code = _TEMPLATES.get((shape, n))
    if code is None:
        store = {"slots": "_s{k}(self, a{k})", "frozen": "_set(self, _n{k}, a{k})", "plain": "self.f{k} = a{k}"}[shape]
        params = "".join(f", a{k}" for k in range(n))
        body = "\n    ".join(store.format(k=k) for k in range(n)) or "pass"
        env: dict[str, Any] = {}
        exec(f"def __init__(self{params}):\n    {body}", env)
        code = _TEMPLATES[shape, n] = env["__init__"].__code__
    code = code.replace(co_varnames=("self", *names), **({"co_names": tuple(names)} if shape == "plain" else {}))
    if shape == "slots":
        env = {f"_s{k}": slot.__set__ for k, slot in enumerate(slots)}  # type: ignore[arg-type]
    elif shape == "frozen":
        env = {"_set": object.__setattr__, **{f"_n{k}": name for k, name in enumerate(names)}}
    else:
        env = {}
    return FunctionType(code, env, "__init__", defaults or None)


def _compiled(cls: type, names: list[str], params: list[str], values: list[str], slots: list[Any] | None,
              frozen: bool, env: dict[str, Any]) -> Callable[..., None]:
    """``__init__`` from its own source (fields with factories, without init, ``__post_init__``)."""
    if slots is not None:
        env.update((f"_s_{name}", slot.__set__) for name, slot in zip(names, slots))  # type: ignore[union-attr]
        body = [f"_s_{name}(self, {value})" for name, value in zip(names, values)]
    elif frozen:
        body = [f"_set(self, {name!r}, {value})" for name, value in zip(names, values)]
    else:
        body = [f"self.{name} = {value}" for name, value in zip(names, values)]
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n    " + "\n    ".join(body or ["pass"])
    # exec of the source text, not compile(): the first compile() call of a process sets up the
    # AST types (~0.8 ms, ~150 objects for every later garbage collection); tracebacks show <string>
    exec(source, env)
    return env["__init__"]  # type: ignore[no-any-return]


def _lazy_init(cls: type, fields: tuple[Field, ...], frozen: bool) -> Callable[..., None]:
    """An ``__init__`` that compiles the real one on the first instance and puts it in its place
    (~0.1 ms per class; a load instantiates about half of corepy's record classes)."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init = _init(cls, fields, frozen)
        type.__setattr__(cls, "__init__", init)
        init(self, *args, **kwargs)

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


class _DataclassView:
    """``__dataclass_fields__`` / ``__dataclass_params__`` of every record class (one shared
    instance per name), made with :mod:`dataclasses` on first access (from a flat twin class) and
    then stored on the record class, where later lookups find them."""

    def __init__(self, name: str):
        self._name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        import dataclasses

        cls = next(c for c in (owner or type(obj)).__mro__ if "_record_fields" in c.__dict__)
        body: dict[str, Any] = {"__annotations__": {}}
        for f in cls._record_fields:  # type: ignore[attr-defined]
            body["__annotations__"][f.name] = f.type
            body[f.name] = dataclasses.field(
                init=f.init, repr=f.repr, compare=f.compare,
                **({"default": f.default} if f.default is not MISSING else {}),
                **({"default_factory": f.default_factory} if f.default_factory is not MISSING else {}))
        twin: Any = dataclasses.dataclass(type(cls.__name__, (), body), init=False, repr=False, eq=False)
        params = twin.__dataclass_params__
        eq, frozen, slots = cls._record_options  # type: ignore[attr-defined]
        for flag, value in (("init", True), ("repr", True), ("eq", eq), ("frozen", frozen), ("slots", slots)):
            if hasattr(params, flag):
                setattr(params, flag, value)
        type.__setattr__(cls, "__dataclass_fields__", twin.__dataclass_fields__)
        type.__setattr__(cls, "__dataclass_params__", params)
        return getattr(cls, self._name)


_FIELDS_VIEW = _DataclassView("__dataclass_fields__")
_PARAMS_VIEW = _DataclassView("__dataclass_params__")


@dataclass_transform(field_specifiers=(field, Field))
def record(cls: type[_T] | None = None, /, *, frozen: bool = False, slots: bool = False, eq: bool = True) -> Any:
    """``@dataclass(frozen=..., slots=..., eq=...)`` at a fraction of the import cost."""

    def build(cls: type[_T]) -> type[_T]:
        own = cls.__dict__
        fields = _collect(cls)
        added: dict[str, Any] = {
            "_record_fields": fields, "_record_options": (eq, frozen, slots),
            "__dataclass_fields__": _FIELDS_VIEW, "__dataclass_params__": _PARAMS_VIEW,
            "_repr_names": tuple(f.name for f in fields if f.repr),
            "_values": staticmethod(_values_getter(tuple(f.name for f in fields if f.compare))),
        }
        if "__match_args__" not in own:
            added["__match_args__"] = tuple(f.name for f in fields if f.init)
        if own.get("__doc__") is None:
            added["__doc__"] = f"{cls.__name__}({', '.join(f.name for f in fields if f.init)})"
        if "__repr__" not in own:
            added["__repr__"] = _repr
        if eq and "__eq__" not in own:
            added["__eq__"] = _eq
        explicit_hash = "__hash__" in own and not (own["__hash__"] is None and "__eq__" in own)
        if eq and not explicit_hash:
            added["__hash__"] = _hash if frozen else None
        if frozen:
            added["__setattr__"], added["__delattr__"] = _frozen_setattr, _frozen_delattr
            if slots:
                added["__getstate__"], added["__setstate__"] = _getstate, _setstate
        made: Any = cls
        if slots:  # a new class: the fields become slots (no class attributes, no __dict__)
            names = {f.name for f in fields}
            body = {k: v for k, v in own.items() if k not in names and k not in ("__dict__", "__weakref__")}
            inherited = {s for b in cls.__mro__[1:-1] for s in b.__dict__.get("__slots__", ())}
            body.update(added, __slots__=tuple(f.name for f in fields if f.name not in inherited),
                        __qualname__=cls.__qualname__)
            made = type(cls)(cls.__name__, cls.__bases__, body)
        else:  # class attributes keep plain defaults (a field() spec gives way to its default)
            for f in fields:
                if isinstance(own.get(f.name), Field) or _is_dataclass_field(own.get(f.name)):
                    if f.default is MISSING:
                        delattr(made, f.name)
                    else:
                        setattr(made, f.name, f.default)
            for name, value in added.items():
                setattr(made, name, value)
        if "__init__" not in own:  # (as dataclasses: the class's own __init__ wins)
            made.__init__ = _lazy_init(made, fields, frozen)
        return made

    return build if cls is None else build(cls)
