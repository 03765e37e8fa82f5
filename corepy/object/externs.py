"""Resolve ``__kconfig`` and ``__ksym`` externs as libbpf's ``bpf_object__resolve_externs``. Pure:
every kernel fact (config, BTF, kallsyms, probed features) comes in as an argument; the
defaults read the running kernel's files only when an extern needs them."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping

from .._records import record
from ..btf.types import Kind
from ..errors import ObjectError
from .spec import ExternKind, ExternSpec, KconfigType

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..btf.spec import BTF
    from .spec import ObjectSpec

__all__ = ["ExternValue", "ResolvedExterns", "resolve_externs", "TRI_NO", "TRI_YES", "TRI_MODULE"]

TRI_NO, TRI_YES, TRI_MODULE = 0, 1, 2
"""``enum libbpf_tristate``."""
VIRTUAL = ("LINUX_KERNEL_VERSION", "LINUX_HAS_BPF_COOKIE", "LINUX_HAS_SYSCALL_WRAPPER")


@record(frozen=True, slots=True)
class ExternValue:
    """How one extern resolved. ``resolved`` False means a weak extern defaulting to zero."""

    name: str
    resolved: bool
    value: Any = 0
    """kconfig: the value stored (int, bool or bytes); typeless ksym: the address."""
    btf_id: int = 0
    """Typed ksym / kfunc: id of the VAR / FUNC in the kernel BTF."""


class ResolvedExterns(Mapping[str, ExternValue]):
    """Extern name -> :class:`ExternValue`, plus ``kconfig_data``: the initial value of the
    ``.kconfig`` map (None if the object has no kconfig externs)."""

    def __init__(self, values: dict[str, ExternValue], kconfig_data: bytes | None) -> None:
        self._values = values
        self.kconfig_data = kconfig_data

    def __getitem__(self, name: str) -> ExternValue:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"ResolvedExterns({self._values!r})"


def resolve_externs(obj: ObjectSpec, *, kconfig: Mapping[str, str] | None = None,
                    kernel_btf: BTF | None = None, kallsyms: Mapping[str, int] | None = None,
                    kernel_version: int | None = None,
                    features: Mapping[str, int | bool] | None = None) -> ResolvedExterns:
    """Give every extern of ``obj`` its value.

    ``kconfig``: ``CONFIG_X`` -> raw value text (``y``/``m``/``n``, ``"str"``, a number), e.g.
    :func:`~corepy.object.kconfig.read_kconfig` output with user overrides merged in; read from
    the running kernel when None and needed. ``kernel_btf``: for typed ksyms and kfuncs
    (default :meth:`BTF.kernel`). ``kallsyms``: for typeless ksyms (default ``/proc/kallsyms``).
    ``kernel_version``: value of ``LINUX_KERNEL_VERSION`` (default from ``uname -r``).
    ``features``: probed values of ``LINUX_HAS_BPF_COOKIE`` / ``LINUX_HAS_SYSCALL_WRAPPER``.
    Unknown weak externs become 0; an unresolved strong one raises ObjectError naming it."""
    externs = list(obj.externs.values())
    kcfg = [e for e in externs if e.kind is ExternKind.KCONFIG]
    data = bytearray(max((e.offset + e.size for e in kcfg), default=0)) if kcfg else None
    values: dict[str, ExternValue] = {}
    where = obj.path

    for e in kcfg:
        if e.name.startswith("CONFIG_"):
            continue
        if e.name == "LINUX_KERNEL_VERSION":
            if kernel_version is None:
                from .kconfig import kernel_version as uname_version

                kernel_version = uname_version()
            if not kernel_version:
                raise ObjectError(f"extern (kcfg) {e.name!r}: failed to get kernel version", path=where)
            value: int = kernel_version
        elif e.name in VIRTUAL:
            if features is None or e.name not in features:
                raise ObjectError(f"extern (kcfg) {e.name!r} is a probed kernel feature: pass its value in "
                                  f"features={{{e.name!r}: ...}}", path=where)
            value = int(bool(features[e.name]))
        elif e.name.startswith("LINUX_") and e.weak:
            continue
        else:
            raise ObjectError(f"extern (kcfg) {e.name!r}: unrecognized virtual extern", path=where)
        values[e.name] = ExternValue(e.name, True, _set_num(e, data, value, where))

    pending = [e for e in kcfg if e.name.startswith("CONFIG_")]
    if pending:
        if kconfig is None:
            from .kconfig import read_kconfig

            try:
                kconfig = read_kconfig()
            except ObjectError:
                if any(not e.weak for e in pending):
                    raise
                kconfig = {}
        for e in pending:
            raw = kconfig.get(e.name)
            if raw is not None:
                values[e.name] = ExternValue(e.name, True, _set_kconfig(e, data, raw, where))

    ksyms = [e for e in externs if e.kind is ExternKind.KSYM]
    if any(e.typeless or (not e.is_func) for e in ksyms):
        if kallsyms is None and any(e.typeless for e in ksyms):
            from .kallsyms import read_kallsyms

            kallsyms = read_kallsyms()
        for e in ksyms:
            if e.is_func or kallsyms is None or e.name not in kallsyms:
                continue
            amb = getattr(kallsyms, "ambiguous", {}).get(e.name)
            if amb:
                raise ObjectError(f"extern (ksym) {e.name!r}: resolution is ambiguous: "
                                  + " or ".join(hex(a) for a in sorted(amb)), path=where)
            values[e.name] = ExternValue(e.name, True, kallsyms[e.name])
    typed = [e for e in ksyms if not e.typeless]
    if typed:
        if kernel_btf is None:
            from ..btf.spec import BTF

            kernel_btf = BTF.kernel()
        for e in typed:
            resolved = _resolve_typed(obj, e, kernel_btf, where)
            if resolved is not None:
                prev = values.get(e.name)
                values[e.name] = ExternValue(e.name, True, prev.value if prev else 0, resolved)
            elif e.name in values and not e.is_func:
                del values[e.name]  # found in kallsyms only: libbpf fails strong, zeroes weak typed ksyms

    for e in externs:
        if e.name in values:
            continue
        if not e.weak:
            raise ObjectError(f"extern {e.name!r} (strong): not resolved", path=where)
        values[e.name] = ExternValue(e.name, False, 0)
    ordered = {e.name: values[e.name] for e in externs}
    return ResolvedExterns(ordered, bytes(data) if data is not None else None)


def _resolve_typed(obj: ObjectSpec, e: ExternSpec, kbtf: BTF, where: str) -> int | None:
    """Kernel BTF id of a typed ksym VAR or kfunc FUNC (libbpf ``bpf_object__resolve_ksym_*_btf_id``)."""
    from ..btf.core import types_are_compat
    from ..btf.types import essential_name

    local = obj.btf
    assert local is not None
    if e.is_func:
        found = kbtf.find(essential_name(e.name), Kind.FUNC)
        if not found:
            if e.weak:
                return None
            raise ObjectError(f"extern (func ksym) {e.name!r}: not found in kernel BTF", path=where)
        kfunc = found[0]
        if not types_are_compat(local, e.type_id, kbtf, kfunc.type_id):
            if e.weak:
                return None
            raise ObjectError(f"extern (func ksym) {e.name!r}: func_proto [{e.type_id}] incompatible with "
                              f"kernel [{kfunc.type_id}]", path=where)
        return kfunc.id
    found = kbtf.find(e.name, Kind.VAR)
    if not found:
        if e.weak:
            return None
        raise ObjectError(f"extern (var ksym) {e.name!r}: not found in kernel BTF", path=where)
    var = found[0]
    targ = kbtf.skip_mods_and_typedefs(var.type_id)
    if not types_are_compat(local, e.type_id, kbtf, targ.id):
        raise ObjectError(f"extern (var ksym) {e.name!r}: incompatible types, expected [{e.type_id}] "
                          f"{local[e.type_id].name!r}, but kernel has [{targ.id}] {targ.name!r}", path=where)
    return var.id


# --- writing kconfig values (libbpf set_kcfg_value_*) ----------------------------------


def _set_kconfig(e: ExternSpec, data: bytearray, raw: str, where: str) -> Any:
    first = raw[:1]
    if first in ("y", "n", "m"):
        return _set_tri(e, data, first, where)
    if first == '"':
        return _set_str(e, data, raw, where)
    try:
        num = int(raw, 0) & 0xFFFFFFFFFFFFFFFF
    except ValueError:
        try:  # strtoull accepts leading zeros ("010" is octal)
            num = int(raw, 8) if raw.startswith("0") else int(raw)
        except ValueError:
            raise ObjectError(f"extern (kcfg) {e.name!r}: value {raw!r} isn't a valid integer", path=where) from None
        num &= 0xFFFFFFFFFFFFFFFF
    if e.kconfig_type not in (KconfigType.INT, KconfigType.CHAR):
        raise ObjectError(f"extern (kcfg) {e.name!r}: value {raw!r} implies integer type", path=where)
    return _set_num(e, data, num, where)


def _set_tri(e: ExternSpec, data: bytearray, value: str, where: str) -> Any:
    t = e.kconfig_type
    if t is KconfigType.BOOL:
        if value == "m":
            raise ObjectError(f"extern (kcfg) {e.name!r}: value 'm' implies tristate or char type", path=where)
        data[e.offset] = 1 if value == "y" else 0
        return value == "y"
    if t is KconfigType.TRISTATE:
        tri = {"y": TRI_YES, "m": TRI_MODULE, "n": TRI_NO}[value]
        struct.pack_into("<I", data, e.offset, tri)
        return tri
    if t is KconfigType.CHAR:
        data[e.offset] = ord(value)
        return ord(value)
    raise ObjectError(f"extern (kcfg) {e.name!r}: value {value!r} implies bool, tristate, or char type", path=where)


def _set_str(e: ExternSpec, data: bytearray, raw: str, where: str) -> bytes:
    if e.kconfig_type is not KconfigType.CHAR_ARR:
        raise ObjectError(f"extern (kcfg) {e.name!r}: value {raw!r} implies char array type", path=where)
    if len(raw) < 2 or raw[-1] != '"':
        raise ObjectError(f"extern (kcfg) {e.name!r}: invalid string config {raw!r}", path=where)
    text = raw[1:-1].encode()[:e.size - 1]  # libbpf truncates (with a warning) to size-1
    data[e.offset:e.offset + e.size] = text + bytes(e.size - len(text))
    return text


def _set_num(e: ExternSpec, data: bytearray, value: int, where: str) -> Any:
    t = e.kconfig_type
    if t not in (KconfigType.INT, KconfigType.CHAR, KconfigType.BOOL):
        raise ObjectError(f"extern (kcfg) {e.name!r}: value {value} implies integer, char, or boolean type",
                          path=where)
    value &= 0xFFFFFFFFFFFFFFFF
    if t is KconfigType.BOOL and value > 1:
        raise ObjectError(f"extern (kcfg) {e.name!r}: value {value} isn't boolean compatible", path=where)
    bits = e.size * 8
    if t is not KconfigType.BOOL and e.size != 8:
        ok = ((value + (1 << (bits - 1))) & 0xFFFFFFFFFFFFFFFF) < (1 << bits) if e.signed else value >> bits == 0
        if not ok:
            raise ObjectError(f"extern (kcfg) {e.name!r}: value {value} doesn't fit in {e.size} bytes", path=where)
    if e.size not in (1, 2, 4, 8):
        raise ObjectError(f"extern (kcfg) {e.name!r}: unsupported size {e.size}", path=where)
    data[e.offset:e.offset + e.size] = (value & ((1 << bits) - 1)).to_bytes(e.size, "little")
    if t is KconfigType.BOOL:
        return bool(value)
    if e.signed and value >> (bits - 1) & 1:
        return (value & ((1 << bits) - 1)) - (1 << bits)
    return value & ((1 << bits) - 1)
