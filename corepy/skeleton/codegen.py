"""Write the Python skeleton module of a BPF object. Pure: reads the ELF and its BTF only.

The module (like ``bpftool gen skeleton``'s C header or cilium's bpf2go Go file) holds:

- a record class (dataclass-compatible: ``dataclasses.fields``/``asdict`` work) per
  struct/union used by map keys and values, by global variables, and per type named with
  ``types=`` (e.g. a ring buffer record), each with ``from_bytes``/``to_bytes``
  on a ``struct`` format computed from the BTF layout (see :mod:`corepy.skeleton.records`);
- namespaces with one typed property per map (``skel.maps.x``), program (``skel.progs.x``),
  link (``skel.links.x``) and global variable, grouped by data section as libbpf does
  (``skel.rodata.x``, ``skel.bss.x``, ``skel.data_foo.x`` for ``.data.foo``);
- ``<Name>Skeleton``, a :class:`corepy.skeleton.runtime.Skeleton` opening the object from
  bytes embedded in the module (``embed=True``) or from a path relative to the module.

The text depends only on the object's bytes and the options: same input, same output.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..btf.types import Linkage
from ..object.spec import ExternKind
from ..errors import BTFError, ObjectError
from .records import class_name, identifier, member_name
from .typegen import TypeSet, _text, rule

if TYPE_CHECKING:
    from ..btf.spec import BTF
    from ..object.spec import MapSpec, ObjectSpec, VariableSpec

__all__ = ["SkeletonSource", "generate", "section_attr"]

_RESERVED = {"maps", "progs", "links", "object", "open", "load", "attach", "detach", "close", "destroy",
             "open_and_load", "closed"}
"""Skeleton attribute names a data section may not take."""
_NAMESPACE_ATTRS = {"_get", "_set", "_skel", "_names", "_SECTION"}
"""Attributes of the runtime's namespace classes."""


def section_attr(section: str) -> str:
    """libbpf's skeleton name of a data section: ``.rodata`` -> ``rodata``, ``.data.foo`` -> ``data_foo``."""
    return identifier(section.lstrip(".").replace(".", "_"))


@dataclass
class SkeletonSource:
    """Where the generated module finds the object: embedded bytes or a path beside it."""

    data: bytes
    embed: bool = False
    relpath: str = ""
    """Path of the object relative to the generated module's directory (``embed=False``)."""
    display: str = ""
    """The object's file name for comments."""
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = hashlib.sha256(self.data).hexdigest()


def generate(source: SkeletonSource, *, name: str | None = None, types: Sequence[str] = ()) -> str:
    """The skeleton module's text. ``name`` is the object name (as bpftool's ``name``: it
    prefixes the kernel names of internal maps, and ``<Name>Skeleton`` is made from it),
    by default the file name up to its first '.'; ``types`` names extra structs, unions or
    enums (``event``, ``struct event``, ``enum color``) to generate. Raises ObjectError/
    BTFError for objects without BTF, unknown type names, or names that cannot become
    Python identifiers."""
    from .runtime import parse_object

    obj_name = name or (source.display or "object").split("/")[-1].split(".")[0] or "object"
    spec = parse_object(source.data, obj_name, source.display or "<bytes>")
    if spec.btf is None:
        raise ObjectError("object has no BTF (.BTF section): build it with clang -g", path=source.display)
    return _Writer(spec, source, class_name(obj_name), types).module()


class _Writer:
    def __init__(self, spec: ObjectSpec, source: SkeletonSource, prefix: str, types: Sequence[str]) -> None:
        from ..btf.dump_c import CDumper

        assert spec.btf is not None  # generate() checked
        self.spec, self.source, self.prefix = spec, source, prefix
        self.btf: BTF = spec.btf
        self.c = CDumper(self.btf)
        self.types = TypeSet(self.btf, source.display)
        self.planner = self.types.planner
        for suffix in ("Skeleton", "Maps", "Progs", "Links"):
            self.planner.reserve(prefix + suffix)
        self.sections = self._sections()
        for attr in self.sections:
            self.planner.reserve(prefix + class_name(attr))
        self.kconfig = sorted((e for e in spec.externs.values() if e.kind is ExternKind.KCONFIG),
                              key=lambda e: (e.offset, e.name))
        if self.kconfig:
            self.planner.reserve(prefix + "Kconfig")
            self._attrs([e.name for e in self.kconfig], "kconfig extern")
        self._plan_maps()
        self.var_hints = self._plan_globals()
        for name in types:
            if name.strip():
                self.types.add(name.strip())

    # --- what goes in -------------------------------------------------------------
    def _sections(self) -> dict[str, tuple[str, list[tuple[str, VariableSpec]]]]:
        """attr -> (section name, [(key in ``spec.variables``, variable)]) per data section, as in
        libbpf skeletons also those without globals (static data only)."""
        out: dict[str, tuple[str, list[tuple[str, VariableSpec]]]] = {}
        for m in self.spec.maps.values():
            if not m.internal or m.name == ".kconfig":
                continue
            variables = [(key, v) for key, v in self.spec.variables.items()
                         if v.map == m.name and v.linkage == Linkage.GLOBAL]
            attr = section_attr(m.name)
            if attr in _RESERVED or attr in out:
                raise ObjectError(f"data section {m.name!r} cannot be the skeleton attribute {attr!r}",
                                  path=self.source.display)
            variables.sort(key=lambda kv: (kv[1].offset, kv[1].name))
            self._attrs([v.name for _, v in variables], f"global variable in {m.name}")
            out[attr] = (m.name, variables)
        return out

    def _attrs(self, names: Iterable[str], what: str) -> dict[str, str]:
        """name -> its attribute on a namespace class (:func:`~corepy.skeleton.records.member_name`:
        ``lambda`` -> ``lambda_``, ``__x`` -> ``_x``); ObjectError when two names meet or one would
        hide the namespace's own attributes."""
        out: dict[str, str] = {}
        taken: set[str] = set()
        for name in names:
            attr = member_name(name)
            if attr in taken or attr in _NAMESPACE_ATTRS:
                raise ObjectError(f"{what} {name!r} cannot be the skeleton attribute {attr!r}",
                                  path=self.source.display)
            taken.add(attr)
            out[name] = attr
        return out

    def _plan_maps(self) -> None:
        for m in self.spec.maps.values():
            if m.internal:
                continue
            for type_id, role in ((m.key_type_id, "key"), (m.value_type_id, "value")):
                try:
                    self.types.root(type_id, f"{m.name}_{role}")
                except BTFError:
                    pass  # a layout Python cannot express (e.g. big-endian bitfields): bytes only

    def _plan_globals(self) -> dict[str, str]:
        hints = {}
        for _, variables in self.sections.values():
            for key, v in variables:
                try:
                    hints[key] = self.types.root(v.type_id, v.name) or self.planner.shape(v.type_id, v.name).hint
                except BTFError:
                    hints[key] = "object"  # no Python value form (the codec has none either): raw() only
        return hints

    # --- module text --------------------------------------------------------------
    def module(self) -> str:
        parts = [self._header(), self.types.text(), self._namespaces(), self._skeleton()]
        return "\n\n\n".join(p.rstrip("\n") for p in parts if p) + "\n"

    def _header(self) -> str:
        src = self.source
        where = ("the object is embedded below" if src.embed
                 else f"the object is read from {src.relpath!r}, relative to this file")
        exports = [f"{self.prefix}Skeleton", *self.types.names()]
        lines = [
            f"# Generated by `corepy skeleton` from {_text(src.display) or 'a BPF object'}: DO NOT EDIT.",
            f"# object sha256: {src.sha256}",
            f"# ({where})",
            f'"""Skeleton of the BPF object ``{_text(src.display)}``: maps, programs, links and globals as',
            "typed attributes, and its record types as dataclass-compatible record classes.",
            "",
            f"    with {self.prefix}Skeleton.open() as skel:",
            "        ...  # set globals, edit map and program specs",
            "        skel.load()",
            "        skel.attach()",
            '"""',
            "",
            "from __future__ import annotations",
            "",
        ]
        imports = self.types.imports()
        lines += [*imports, ""] if imports else []
        lines += [*self.types.runtime_imports(), "",
                  "TYPE_CHECKING = False",
                  "if TYPE_CHECKING:",
                  "    from typing import ClassVar",
                  "",
                  "    from corepy.links import Link",
                  "    from corepy.maps import Map",
                  "    from corepy.object.spec import MapSpec, ProgramSpec",
                  "    from corepy.programs import Program",
                  "",
                  f"__all__ = {exports!r}",
                  "",
                  f"OBJECT_SHA256 = {src.sha256!r}"]
        if src.embed:
            b64 = base64.b64encode(src.data).decode()
            chunks = [b64[i:i + 96] for i in range(0, len(b64), 96)] or [""]
            lines.append("OBJECT_BASE64 = (")
            lines += [f'    "{c}"' for c in chunks]
            lines.append(")")
        else:
            lines.append(f"OBJECT_PATH = {src.relpath!r}")
            lines.append('"""The object, relative to this module\'s directory."""')
        return "\n".join(lines)

    def _decl(self, type_id: int, name: str) -> str:
        try:
            text = self.c.type_decl(type_id, name)
        except BTFError:
            return name
        return " ".join(text.split()) if len(text) <= 100 else f"{name} ({self.btf[type_id].kind.name.lower()})"

    def _namespaces(self) -> str:
        p = self.prefix
        out = [rule("skeleton")]
        lines = [f"class {p}Maps(_rt.Maps):",
                 f'    """Maps of {_text(self.source.display)}: editable specs before load, live maps after."""',
                 "", "    __slots__ = ()"]
        map_attrs = self._attrs([section_attr(m.name) if m.internal else m.name for m in self.spec.maps.values()],
                                "map")
        for m, attr in zip(self.spec.maps.values(), map_attrs.values()):
            lines += ["", "    @property", f"    def {attr}(self) -> Map | MapSpec:",
                      f'        """{self._map_doc(m)}"""', f"        return self._get({m.name!r})"]
        out.append("\n".join(lines))
        progs = list(self.spec.programs.values())  # ELF order, as libbpf lists them
        prog_attrs = self._attrs([prog.name for prog in progs], "program")
        for cls, base, doc, hint in (
            (f"{p}Progs", "Progs", "Programs: editable specs before load, loaded programs after.",
             "Program | ProgramSpec"),
            (f"{p}Links", "Links", "Links made by ``attach()``: None until then, or for a program not attached.",
             "Link | None"),
        ):
            lines = [f"class {cls}(_rt.{base}):", f'    """{doc}"""', "", "    __slots__ = ()"]
            for prog in progs:
                lines += ["", "    @property", f"    def {prog_attrs[prog.name]}(self) -> {hint}:",
                          f'        """SEC("{_text(prog.section)}")."""', f"        return self._get({prog.name!r})"]
            out.append("\n".join(lines))
        for attr, (sec, variables) in self.sections.items():
            access = " (frozen at load: set them before)" if sec.startswith(".rodata") else ""
            lines = [f"class {p}{class_name(attr)}(_rt.Globals):",
                     f'    """Globals of ``{sec}``{access}: initial values before load, live ones',
                     '    after."""',
                     "", f"    _SECTION = {sec!r}", "    __slots__ = ()"]
            for key, v in variables:
                hint, attr = self.var_hints[key], member_name(v.name)
                lines += ["", "    @property", f"    def {attr}(self) -> {hint}:",
                          f'        """``{self._decl(v.type_id, v.name)}`` at offset {v.offset}."""',
                          f"        return self._get({key!r})",
                          "", f"    @{attr}.setter", f"    def {attr}(self, value: {hint}) -> None:",
                          f"        self._set({key!r}, value)"]
            out.append("\n".join(lines))
        if self.kconfig:
            lines = [f"class {p}Kconfig(_rt.Kconfig):",
                     '    """``__kconfig`` externs as resolved at load (read-only; CorepyError before load)."""',
                     "", "    __slots__ = ()"]
            for e in self.kconfig:
                try:
                    hint = self.planner.shape(e.type_id, e.name).hint if e.type_id else "object"
                except BTFError:
                    hint = "object"
                weak = ", weak" if e.weak else ""
                lines += ["", "    @property", f"    def {member_name(e.name)}(self) -> {hint}:",
                          f'        """``{self._decl(e.type_id, e.name)}`` ({e.kconfig_type.value}{weak})."""',
                          f"        return self._get({e.name!r})"]
            out.append("\n".join(lines))
        return "\n\n\n".join(out)

    def _map_doc(self, m: MapSpec) -> str:
        kind = getattr(m.type, "name", str(m.type))
        if m.internal:
            return f"``{m.name}``: the {kind} map holding the section's data."
        parts = [f"``{m.name}``: {kind}"]
        if m.key_size:
            parts.append(f"key {self._type_text(m.key_type_id, m.key_size)}")
        if m.value_size:
            parts.append(f"value {self._type_text(m.value_type_id, m.value_size)}")
        parts.append(f"{m.max_entries} bytes" if kind in ("RINGBUF", "USER_RINGBUF") else f"max_entries {m.max_entries}")
        if m.pinning:
            parts.append("pinned by name")
        return ", ".join(parts) + "."

    def _type_text(self, type_id: int, size: int) -> str:
        if not type_id:
            return f"{size} bytes"
        record = self.planner.plans.get(self.planner.resolve(type_id).id)
        return f"{record.name if record else self._decl(type_id, '').strip()} ({size} bytes)"

    def _skeleton(self) -> str:
        p = self.prefix
        lines = [f"class {p}Skeleton(_rt.Skeleton):",
                 f'    """The BPF object ``{_text(self.source.display)}``; ``open()`` parses it, ``load()`` creates maps and',
                 "    loads programs, ``attach()`` attaches every program whose section says where, ``close()``",
                 '    (or leaving the ``with`` block) releases everything once."""',
                 "",
                 f"    OBJECT_NAME: ClassVar[str] = {self.spec.name!r}",
                 "    OBJECT_SHA256: ClassVar[str] = OBJECT_SHA256",
                 f"    maps: {p}Maps", f"    progs: {p}Progs", f"    links: {p}Links"]
        ns = [("maps", f"{p}Maps"), ("progs", f"{p}Progs"), ("links", f"{p}Links")]
        ns += [(attr, p + class_name(attr)) for attr in self.sections]
        if self.kconfig:
            ns.append(("kconfig", f"{p}Kconfig"))
        lines += [f"    {attr}: {cls}" for attr, cls in ns[3:]]
        lines.append("    _NAMESPACES: ClassVar[dict[str, type]] = {")
        lines += [f"        {attr!r}: {cls}," for attr, cls in ns]
        lines.append("    }")
        record_names = {pl.name for pl in self.planner.plans.values()}
        records = {key: self.var_hints[key] for _, vs in self.sections.values() for key, _ in vs
                   if self.var_hints[key] in record_names}
        if records:
            lines.append("    _RECORDS: ClassVar[dict[str, type]] = {")
            lines += [f"        {k!r}: {v}," for k, v in records.items()]
            lines.append("    }")
        lines += ["", "    @classmethod", "    def _object_source(cls) -> _rt.ObjectSource:"]
        if self.source.embed:
            lines.append(f"        return _rt.ObjectSource.embedded(OBJECT_BASE64, {self.source.display!r})")
        else:
            lines.append("        return _rt.ObjectSource.beside(__file__, OBJECT_PATH, __spec__)")
        return "\n".join(lines)
