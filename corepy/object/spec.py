"""The editable, plain-data description of a BPF object: programs, maps, variables, externs.

Produced by :func:`corepy.object.parse.parse_object` (``ObjectSpec.from_file``); nothing
here touches the kernel. Fields a user may change before load are plain attributes.
"""

from __future__ import annotations

import enum

from .._records import field, fields, record
from ..asm.insn import Insn
from ..btf.ext import CoreRelo, FuncInfo, LineInfo
from ..errors import ObjectError
from ..syscalls.uapi import AttachType, MapType, ProgType
from .sections import SecFlag

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from ..btf.spec import BTF

__all__ = [
    "RelocKind", "Reloc", "Function", "ProgramSpec", "MapSpec", "VariableSpec", "ExternKind",
    "KconfigType", "ExternSpec", "ObjectSpec", "PIN_NONE", "PIN_BY_NAME",
]

PIN_NONE, PIN_BY_NAME = 0, 1
"""``__uint(pinning, LIBBPF_PIN_BY_NAME)`` values."""


class RelocKind(enum.Enum):
    """What an ELF relocation against an instruction means (libbpf's ``enum reloc_type``)."""

    CALL = "call"
    """``call pc+imm`` into a ``.text`` subprogram."""
    SUBPROG_ADDR = "subprog_addr"
    """``ld_imm64 src=BPF_PSEUDO_FUNC``: a callback's address."""
    MAP = "map"
    """``ld_imm64`` of a ``.maps`` map: becomes ``BPF_PSEUDO_MAP_FD``."""
    DATA = "data"
    """``ld_imm64`` of global data: ``BPF_PSEUDO_MAP_VALUE`` of an internal map + offset."""
    EXTERN_LD64 = "extern_ld64"
    """``ld_imm64`` of a ``__kconfig`` or ``__ksym`` extern."""
    EXTERN_CALL = "extern_call"
    """``call`` of a kfunc (``__ksym`` function)."""


@record(frozen=True, slots=True)
class Reloc:
    """One relocated instruction of a :class:`Function`."""

    kind: RelocKind
    insn: int
    """Instruction index within the function."""
    symbol: str
    """The ELF symbol's name ('' for section symbols)."""
    target: str
    """Map name (MAP, DATA), extern name (EXTERN_*), or code section name (CALL, SUBPROG_ADDR)."""
    sym_off: int = 0
    """The symbol's value in bytes (offset in its section)."""


@record
class Function:
    """A function of a code section: a program's entry or a subprogram."""

    name: str
    section: str
    """ELF section name exactly as in the file (including a leading ``?``)."""
    sec_index: int
    offset: int
    """Index of the first instruction within the section."""
    insns: list[Insn] = field(repr=False)
    relocs: dict[int, Reloc] = field(default_factory=dict, repr=False)
    is_program: bool = False
    hidden: bool = False
    """A global function with hidden visibility: loaded as static."""
    func_info: list[FuncInfo] = field(default_factory=list, repr=False)
    """Records of this function; ``insn_off`` in BYTES from the section start (as in .BTF.ext)."""
    line_info: list[LineInfo] = field(default_factory=list, repr=False)
    core_relos: list[CoreRelo] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.insns)

    def contains(self, sec_index: int, insn: int) -> bool:
        return sec_index == self.sec_index and self.offset <= insn < self.offset + len(self.insns)


class _FieldsOnly:
    """Assigning a name that is not a field raises AttributeError suggesting the right one:
    a libbpf spelling (``map_flags``) or a typo would otherwise be stored and ignored at load."""

    __slots__ = ()
    _ALIASES: ClassVar[dict[str, str]] = {}
    """Names other APIs use (libbpf's) -> this class's field."""

    def __setattr__(self, name: str, value: Any) -> None:
        cls = type(self)
        if name not in _field_names(cls) and not isinstance(getattr(cls, name, None), property):
            raise AttributeError(f"{cls.__name__} has no field {name!r}{_suggest(cls, name)}", name=name, obj=self)
        object.__setattr__(self, name, value)


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _field_names(cls: type) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
    return names


def _suggest(cls: type, name: str) -> str:
    right = cls._ALIASES.get(name)  # type: ignore[attr-defined]
    names = sorted(_field_names(cls))
    if right is None:
        import difflib

        close = difflib.get_close_matches(name, names, n=1)
        right = close[0] if close else None
    return f"; did you mean {right!r}?" if right else f"; fields: {', '.join(names)}"


@record
class ProgramSpec(_FieldsOnly):
    """A program (an entry function); its section decides type and attach point."""

    name: str
    section: str
    """Section name without a leading ``?``."""
    prog_type: ProgType
    expected_attach_type: AttachType | None
    """None means 0 (the kernel's default)."""
    attach_to: str | None
    """Attach target from the section name (``syscalls/sys_enter_write``, ``do_unlinkat``...)."""
    sleepable: bool
    autoload: bool
    license: str
    kern_version: int
    section_flags: SecFlag
    function: Function = field(repr=False)
    prog_flags: int = 0
    """Extra PROG_LOAD flags (BPF_F_XDP_HAS_FRAGS for ``xdp.frags``); sleepable adds BPF_F_SLEEPABLE."""

    _ALIASES: ClassVar[dict[str, str]] = {"type": "prog_type", "flags": "prog_flags",
                                          "attach_type": "expected_attach_type"}

    @property
    def insns(self) -> list[Insn]:
        """The program's own instructions as in the ELF (unrelocated, without subprograms)."""
        return self.function.insns

    @property
    def func_info(self) -> list[FuncInfo]:
        return self.function.func_info

    @property
    def line_info(self) -> list[LineInfo]:
        return self.function.line_info

    @property
    def btf_func_id(self) -> int:
        """The BTF FUNC id of the program (from its first func_info), 0 without BTF.ext."""
        fi = self.function.func_info
        return fi[0].type_id if fi else 0


@record
class MapSpec(_FieldsOnly):
    """A map to create: from ``.maps``, or an internal map for global data / ``.kconfig``."""

    name: str
    """libbpf's real name: the variable name, or the ELF section name of internal maps ('.rodata')."""
    type: MapType
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    numa_node: int = 0
    pinning: int = PIN_NONE
    map_extra: int = 0
    key_type_id: int = 0
    """BTF type id of the key in the object's BTF, 0 if none."""
    value_type_id: int = 0
    """BTF type id of the value (the DATASEC for internal maps), 0 if none."""
    inner: MapSpec | None = None
    """Template of the inner map of a map-in-map (named ``<outer>.inner``)."""
    values: dict[int, str] = field(default_factory=dict)
    """Initial slots: index -> map name (map-in-map) or program name (prog array), from ``.rel.maps``."""
    data: bytearray | None = field(default=None, repr=False)
    """Initial value of element 0 for internal maps (``.data``, ``.rodata``, ``.bss``, ``.kconfig``)."""
    kernel_name: str = ""
    """The name given to the kernel (at most 15 chars; ``<obj8>.rodata`` for internal maps)."""
    section: str = ""
    """ELF section the definition came from."""
    section_offset: int = 0
    internal: bool = False

    _ALIASES: ClassVar[dict[str, str]] = {"map_flags": "flags", "map_type": "type", "initial_value": "data",
                                          "inner_map": "inner"}

    @property
    def readonly(self) -> bool:
        """Internal map the program may not write (``.rodata*``, ``.kconfig``): freeze after load."""
        from ..syscalls.uapi import MapFlag

        return self.internal and bool(self.flags & MapFlag.RDONLY_PROG)


@record
class VariableSpec:
    """A global variable living in an internal map; ``value`` reads/writes its initial bytes."""

    name: str
    map: str
    """Name of the internal map holding it ('.data', '.rodata', '.bss', '.data.custom'...)."""
    offset: int
    size: int
    type_id: int
    """BTF type id of the variable's type in the object's BTF."""
    linkage: int
    """BTF var linkage: 0 static, 1 global."""
    _object: ObjectSpec | None = field(default=None, repr=False, compare=False)

    def _codec(self):
        from ..btf.codec import Codec

        assert self._object is not None and self._object.btf is not None
        cache = self._object._codecs
        codec = cache.get(self.type_id)
        if codec is None:
            codec = cache[self.type_id] = Codec(self._object.btf, self.type_id)
        return codec

    def _data(self) -> bytearray:
        assert self._object is not None
        data = self._object.maps[self.map].data
        if data is None or len(data) < self.offset + self.size:
            raise ObjectError(f"variable {self.name!r}: map {self.map!r} has no room at offset {self.offset}")
        return data

    @property
    def raw(self) -> bytes:
        """The variable's initial bytes."""
        return bytes(self._data()[self.offset:self.offset + self.size])

    @property
    def value(self) -> Any:
        """The initial value, decoded through its BTF type."""
        return self._codec().decode(self._data(), self.offset)

    @value.setter
    def value(self, new: Any) -> None:
        self._codec().encode_into(self._data(), self.offset, new)


class ExternKind(enum.Enum):
    KCONFIG = "kconfig"
    KSYM = "ksym"


class KconfigType(enum.Enum):
    """libbpf's ``enum kcfg_type``: how a ``__kconfig`` value is stored."""

    UNKNOWN = "unknown"
    CHAR = "char"
    BOOL = "bool"
    INT = "int"
    TRISTATE = "tristate"
    CHAR_ARR = "char_arr"


@record
class ExternSpec:
    """An ``extern`` the object needs resolved: a ``__kconfig`` value or a ``__ksym``."""

    name: str
    kind: ExternKind
    weak: bool
    btf_id: int
    """The object's BTF VAR (or FUNC for kfuncs) id."""
    type_id: int = 0
    """The VAR's type with modifiers/typedefs skipped (0 = void: a typeless ksym)."""
    size: int = 0
    align: int = 1
    kconfig_type: KconfigType = KconfigType.UNKNOWN
    signed: bool = False
    offset: int = 0
    """Offset of a kconfig extern in the ``.kconfig`` map."""
    is_func: bool = False
    """A kfunc (``__ksym`` function)."""
    index: int = 0
    """Position in libbpf's sorted extern array (used by poisoned kfunc call immediates)."""

    @property
    def typeless(self) -> bool:
        return self.kind is ExternKind.KSYM and not self.is_func and self.type_id == 0


@record
class ObjectSpec:
    """Everything in a ``.bpf.o``, editable before load."""

    name: str
    """Object name (file name up to the first '.'), prefix of internal map names."""
    path: str
    btf: BTF | None
    programs: dict[str, ProgramSpec]
    maps: dict[str, MapSpec]
    variables: dict[str, VariableSpec]
    externs: dict[str, ExternSpec]
    functions: list[Function] = field(repr=False)
    """All functions (programs and subprograms), in section then offset order."""
    license: str = ""
    kern_version: int = 0
    btf_fixups: bytes | None = field(default=None, repr=False)
    """The object's BTF blob prepared for BPF_BTF_LOAD as libbpf does (DATASEC sizes/offsets,
    extern and hidden-function linkage); kernel-feature sanitizing is the loader's."""
    _codecs: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_file(cls, path: str, *, name: str | None = None) -> ObjectSpec:
        """Parse a clang-built BPF ELF object. Raises ObjectError/BTFError on bad input."""
        from .parse import parse_object

        return parse_object(path, name=name)

    @classmethod
    def from_bytes(cls, data: bytes, *, name: str, path: str = "<bytes>") -> ObjectSpec:
        from .parse import parse_object

        return parse_object(data, name=name, path=path)

    def function_at(self, sec_index: int, insn: int) -> Function | None:
        """The function containing instruction ``insn`` of section ``sec_index``."""
        for f in self.functions:
            if f.contains(sec_index, insn):
                return f
        return None

    def program(self, name: str) -> ProgramSpec:
        try:
            return self.programs[name]
        except KeyError:
            raise ObjectError(f"no program named {name!r}; programs: {', '.join(self.programs) or 'none'}",
                              path=self.path) from None

    def map(self, name: str) -> MapSpec:
        try:
            return self.maps[name]
        except KeyError:
            raise ObjectError(f"no map named {name!r}; maps: {', '.join(self.maps) or 'none'}",
                              path=self.path) from None
