"""``corepy.open()``: a BPF object from parse to attach, the way libbpf's bpf_object does it.

    with corepy.open("bootstrap.bpf.o") as obj:      # parse only: no system calls
        obj.globals.min_duration_ns = 10**8          # typed .rodata/.data/.bss, before load
        obj.maps["rb"].max_entries = 1 << 20         # specs are editable before load
        obj.load()                                   # BTF, CO-RE, externs, maps, programs
        obj.attach()                                 # every program by its SEC() name
        obj.maps["exec_start"][1234]                 # live maps, typed through BTF

Before :meth:`Object.load`, ``obj.maps`` and ``obj.programs`` hold the editable
:class:`~corepy.object.spec.MapSpec` / :class:`~corepy.object.spec.ProgramSpec`; after
it, the live :class:`~corepy.maps.Map` and :class:`~corepy.programs.Program` objects.
``obj.globals`` reads and writes global variables: the initial values before load,
the live map values after (through mmap where the map allows it).
"""

from __future__ import annotations

import builtins
import os
import warnings
from collections.abc import Iterator, Mapping
from types import TracebackType

from .errors import CorepyError, ObjectError, SyscallError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .btf.spec import BTF
    from .links import Link
    from .maps import Map
    from .object.spec import ObjectSpec, ProgramSpec, VariableSpec
    from .programs import Program
    from .syscalls.fd import FD

__all__ = ["open", "Object", "Globals", "UnknownNameError"]

DEFAULT_PIN_ROOT = "/sys/fs/bpf"


class UnknownNameError(CorepyError, KeyError):
    """No map/program/variable of that name in the object."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _Named(dict):
    """A dict whose missing keys raise :class:`UnknownNameError` listing what exists."""

    def __init__(self, what: str, where: str, items: Mapping[str, Any] | None = None):
        super().__init__(items or {})
        self._what, self._where = what, where

    def __missing__(self, name: str) -> Any:
        known = ", ".join(sorted(self)) or "none"
        raise UnknownNameError(f"no {self._what} named {name!r} in {self._where} ({self._what}s: {known})")


def open(  # noqa: A001 - the public name is corepy.open
    path: str | os.PathLike[str],
    *,
    btf: str | os.PathLike[str] | None = None,
    pin_root: str | os.PathLike[str] | None = DEFAULT_PIN_ROOT,
    kconfig: Mapping[str, Any] | str | None = None,
    log_level: int = 0,
    name: str | None = None,
) -> Object:
    """Parse the BPF ELF object at ``path`` (no system calls until :meth:`Object.load`).

    ``btf``: a target BTF file for CO-RE instead of the running kernel's (libbpf's
    ``btf_custom_path``); ``pin_root``: where maps marked ``LIBBPF_PIN_BY_NAME`` are
    pinned/reused; ``kconfig``: ``CONFIG_*`` values overriding the running kernel's
    config (a mapping, or config text); ``log_level``: verifier log level for program
    loads; ``name``: object name (default: the file name up to its first dot).
    """
    from .object.spec import ObjectSpec

    spec = ObjectSpec.from_file(os.fspath(path), name=name)
    return Object(spec, btf=btf, pin_root=pin_root, kconfig=kconfig, log_level=log_level)


class Object:
    """A BPF object: its specs before :meth:`load`, its live maps, programs and links after.

    A context manager; :meth:`close` releases everything it made, exactly once.
    """

    def __init__(
        self,
        spec: ObjectSpec,
        *,
        btf: str | os.PathLike[str] | None = None,
        pin_root: str | os.PathLike[str] | None = DEFAULT_PIN_ROOT,
        kconfig: Mapping[str, Any] | str | None = None,
        log_level: int = 0,
    ):
        self.spec = spec
        self.path = spec.path
        self.name = spec.name
        self.btf_path = None if btf is None else os.fspath(btf)
        self.pin_root = None if pin_root is None else os.fspath(pin_root)
        self.kconfig = kconfig
        self.log_level = log_level
        self.loaded = False
        self.closed = False
        self.btf_fd: FD | None = None
        """The object's BTF in the kernel (None before load, or when the kernel refused it)."""
        self.core_records: list[Any] = []
        """The CO-RE relocations applied at load (:class:`~corepy.object.core.CoreRecord`)."""
        self.externs: Any = None
        """How the externs resolved at load (:class:`~corepy.object.externs.ResolvedExterns`)."""
        self._maps: _Named = _Named("map", self.path)
        self._programs: _Named = _Named("program", self.path)
        self.links: _Named = _Named("link", self.path)
        """Links made by :meth:`attach`, by program name."""
        self.globals = Globals(self)

    # --- the two views -----------------------------------------------------
    @property
    def maps(self) -> Mapping[str, Any]:
        """Map specs (editable) before load; live :class:`~corepy.maps.Map` objects after."""
        self._check_open()
        return self._maps if self.loaded else _Named("map", self.path, self.spec.maps)

    @property
    def programs(self) -> Mapping[str, Any]:
        """Program specs (editable: ``autoload``, ``prog_type``, ``attach_to``...) before load;
        live :class:`~corepy.programs.Program` objects (those loaded) after."""
        self._check_open()
        return self._programs if self.loaded else _Named("program", self.path, self.spec.programs)

    @property
    def btf(self) -> BTF | None:
        """The object's own BTF (parsed from its .BTF section)."""
        return self.spec.btf

    # --- load --------------------------------------------------------------
    def load(self) -> Object:
        """Relocate against the target BTF, resolve externs, load the BTF, create the maps,
        load every autoload program and fill prog arrays / map-in-map slots. On any
        failure everything made so far is closed (pins made here removed) and the error
        raised names the object. CO-RE results against the running kernel come from the
        on-disk cache when this object was relocated against the same kernel BTF before
        (:mod:`corepy.object.core_cache`)."""
        self._check_open()
        if self.loaded:
            raise CorepyError(f"{self.path}: already loaded")
        try:
            self._load()
        except BaseException as e:
            self._release(unpin_new=True)
            if isinstance(e, Exception) and hasattr(e, "add_note"):
                e.add_note(f"while loading BPF object {self.path}")
            raise
        self.loaded = True
        return self

    def _load(self) -> None:
        from .object.core import relocate_core
        from .object.externs import resolve_externs
        from .object.link import link
        from .programs import load_program

        spec = self.spec
        # a custom target is read before anything else; the running kernel's BTF only when needed:
        # for CO-RE relocations the cache does not answer (ksyms, kfuncs and BTF attach targets,
        # tp_btf, fentry..., fetch BTF.kernel() themselves)
        target_btf = _read_btf(self.btf_path) if self.btf_path is not None else None

        self.externs = resolve_externs(spec, kconfig=self._kconfig(), features=self._extern_features())
        kcfg = spec.maps.get(".kconfig")
        if kcfg is not None and self.externs.kconfig_data is not None:
            kcfg.data = bytearray(self.externs.kconfig_data.ljust(kcfg.value_size, b"\0"))
        if target_btf is not None:
            from .btf.core import Target

            self.core_records = relocate_core(spec, Target(target_btf, custom=True))
        else:
            from .object.core_cache import relocate_running_kernel

            self.core_records = relocate_running_kernel(spec)
        linked = {p.name: link(spec, p, core=self.core_records, externs=self.externs)
                  for p in spec.programs.values() if p.autoload}

        self.btf_fd = self._load_btf()
        self._create_maps()
        map_fds = {name: m.fileno() for name, m in self._maps.items()}
        for name, lp in linked.items():
            p = spec.programs[name]
            self._programs[name] = load_program(
                lp, name=p.name, prog_type=p.prog_type, expected_attach_type=p.expected_attach_type,
                license=p.license or spec.license, kern_version=p.kern_version, btf_fd=self._btf_fd_number(),
                map_fds=map_fds, attach_to=p.attach_to, section=p.section, sleepable=p.sleepable,
                prog_flags=p.prog_flags, log_level=self.log_level, core_records=lp.core)
            self._bind_rodata(self._programs[name])
        self._fill_slots()

    def _bind_rodata(self, prog: Program) -> None:
        """Bind every ``.rodata``/``.rodata.*`` map to ``prog`` (BPF_PROG_BIND_MAP), as libbpf
        does, so read-only data lives as long as any program; a refusal only warns."""
        from .syscalls.links import prog_bind_map

        for name, ms in self.spec.maps.items():
            if not (ms.internal and (ms.section == ".rodata" or ms.section.startswith(".rodata."))):
                continue
            try:
                prog_bind_map(prog.fileno(), self._maps[name].fileno())
            except SyscallError as e:
                warnings.warn(f"{self.path}: could not bind map {name!r} to program {prog.name!r}: {e}",
                              RuntimeWarning, stacklevel=4)
                return

    def _kconfig(self) -> dict[str, str] | None:
        """The kernel's config with the user's overrides, read only when the object needs it."""
        from .object.spec import ExternKind

        if not any(e.kind is ExternKind.KCONFIG and e.name.startswith("CONFIG_") for e in self.spec.externs.values()):
            return None
        from .object.kconfig import parse_kconfig, read_kconfig

        try:
            base: dict[str, str] | None = dict(read_kconfig())
        except ObjectError:
            base = None  # resolve_externs raises for strong CONFIG_ externs, zeroes weak ones
        if self.kconfig is None:
            return base
        overrides = parse_kconfig(self.kconfig, source="kconfig=") if isinstance(self.kconfig, str) else {
            k: _kconfig_text(v) for k, v in self.kconfig.items()}
        return {**(base or {}), **overrides}

    def _extern_features(self) -> dict[str, bool]:
        """Probed values of the virtual LINUX_HAS_* externs the object declares."""
        from .syscalls import features

        probes = {"LINUX_HAS_BPF_COOKIE": features.has_bpf_cookie,
                  "LINUX_HAS_SYSCALL_WRAPPER": features.has_syscall_wrapper}
        return {name: bool(probe()) for name, probe in probes.items() if name in self.spec.externs}

    def _load_btf(self) -> FD | None:
        """BPF_BTF_LOAD the object's BTF (sanitized for this kernel); None, with a warning,
        when the kernel refuses it (BTF is optional, as for libbpf)."""
        spec = self.spec
        if spec.btf is None or not spec.btf_fixups:
            return None
        from .syscalls import features
        from .syscalls.load import btf_load

        blob = spec.btf_fixups
        try:
            if not features.has_btf():
                return None
            from .btf.sanitize import needs_sanitizing, sanitize

            feats = features.btf_features()
            if needs_sanitizing(feats):  # some kind is unknown to this kernel: rewrite as libbpf does
                from .btf.spec import BTF
                from .btf.writer import write_btf

                parsed = BTF.from_bytes(blob, source=f"{self.path} (.BTF prepared)")
                # the string section stays (new names appended): func/line info point into it
                blob = write_btf(sanitize(list(parsed.types()), feats), byte_order=parsed.byte_order,
                                 strings=parsed.strings_bytes())
            return btf_load(blob, log_level=self.log_level)
        except (SyscallError, CorepyError) as e:
            warnings.warn(f"{self.path}: the kernel refused the object's BTF, loading without it "
                          f"(no BTF-typed maps, no func/line info): {e}", RuntimeWarning, stacklevel=4)
            return None

    def _btf_fd_number(self) -> int | None:
        return None if self.btf_fd is None else self.btf_fd.fileno()

    def _create_maps(self) -> None:
        from .maps import Map
        from .syscalls import features
        from .syscalls.uapi import MapFlag

        btf = self.spec.btf if self.btf_fd is not None else None
        mmapable = None
        for name, ms in self.spec.maps.items():
            if ms.internal and ms.flags & MapFlag.MMAPABLE:
                if mmapable is None:
                    mmapable = features.has_mmapable_maps()
                if not mmapable:
                    ms.flags &= ~MapFlag.MMAPABLE
            # typed access needs only the object's BTF; the kernel sees it when it accepted it
            m = Map.from_spec(ms, btf=self.spec.btf, btf_fd=self.btf_fd if btf is not None else None,
                              pin_root=self.pin_root)
            self._maps[name] = m

    def _fill_slots(self) -> None:
        """Prog-array and map-in-map ``values`` declared in the object (skipped for reused pinned maps)."""
        from .syscalls.uapi import MapType

        for name, ms in self.spec.maps.items():
            m = self._maps[name]
            if not ms.values or m.reused:
                continue
            for index, target in sorted(ms.values.items()):
                if ms.type == MapType.PROG_ARRAY:
                    prog = self._programs.get(target)
                    if prog is None:
                        if target in self.spec.programs:
                            continue  # not autoloaded: libbpf fails here; leaving the slot empty is kinder
                        raise ObjectError(f"map {name!r} slot {index}: no program {target!r}", path=self.path)
                    m[index] = prog
                else:
                    m[index] = self._maps[target]

    # --- attach ------------------------------------------------------------
    def attach(self) -> Mapping[str, Link]:
        """Attach every loaded program whose SEC() names a target (``tp/``, ``raw_tp/``,
        ``uprobe/bin:func``...); programs needing a target (``xdp``, ``tc``...) are left
        for their explicit ``attach_*`` methods. Returns the links, also in :attr:`links`.
        If one attach fails, the links made by this call are closed and the error raised."""
        self._check_open()
        if not self.loaded:
            raise CorepyError(f"{self.path}: load() before attach()")
        from .attach import auto_attach

        made: list[str] = []
        try:
            for name, prog in self._programs.items():
                if name in self.links:
                    continue
                link = auto_attach(prog)
                if link is not None:
                    self.links[name] = link
                    made.append(name)
        except BaseException as e:
            for name in made:
                self.links.pop(name).close()
            if isinstance(e, Exception) and hasattr(e, "add_note"):
                e.add_note(f"while attaching program {name!r} of {self.path}")
            raise
        return self.links

    def detach(self) -> None:
        """Close every link made by :meth:`attach` (the programs stay loaded), concurrently
        (:func:`~corepy.links.close_links`: the kernel's per-link RCU waits overlap)."""
        from .links import close_links

        links = list(reversed(self.links.values()))
        self.links.clear()
        close_links(links)

    # --- lifetime ----------------------------------------------------------
    def close(self) -> None:
        """Detach, then close programs, maps and the BTF fd; idempotent. Pins stay."""
        if self.closed:
            return
        self.closed = True
        self._release(unpin_new=False)

    def _release(self, *, unpin_new: bool) -> None:
        errors: list[BaseException] = []

        def run(fn: Any) -> None:
            try:
                fn()
            except Exception as e:  # keep closing the rest
                errors.append(e)

        run(self.detach)
        for prog in self._programs.values():
            run(prog.close)
        self._programs.clear()
        for m in self._maps.values():
            if unpin_new and m.pinned_path is not None and not m.reused:
                run(m.unpin)
            run(m.close)
        self._maps.clear()
        if self.btf_fd is not None:
            run(self.btf_fd.close)
            self.btf_fd = None
        if errors and not unpin_new:
            raise errors[0]

    def _check_open(self) -> None:
        if self.closed:
            raise CorepyError(f"{self.path}: object is closed")

    def __enter__(self) -> Object:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "loaded" if self.loaded else "opened"
        return (f"<Object {self.name!r} {state}: {len(self.spec.programs)} programs, "
                f"{len(self.spec.maps)} maps, path {self.path!r}>")


def _read_btf(path: str) -> BTF:
    """A custom target BTF (raw or in an ELF), read into memory: no fd or mapping outlives the load."""
    from .btf.spec import BTF
    from .errors import BTFError

    try:
        with builtins.open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise BTFError(f"cannot read the target BTF given as btf=: {e.strerror or e}", source=path) from e
    if data[:4] == b"\x7fELF":
        return BTF.from_file(path)
    return BTF.from_bytes(data, source=path)


def _kconfig_text(value: Any) -> str:
    """A Python value as the text a kernel config line would hold."""
    if value is True:
        return "y"
    if value is False or value is None:
        return "n"
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value not in ("y", "m", "n") and not _is_number(value) \
            and not (value.startswith('"') and value.endswith('"')):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _is_number(text: str) -> bool:
    try:
        int(text, 0)
        return True
    except ValueError:
        return False


class Globals:
    """Global variables of an object by name: ``obj.globals.x``, ``obj.globals["x"]``.

    Before load these are the initial values (written into the object's data);
    after load, the live values of the kernel maps. ``.rodata`` is frozen at load:
    set it before. Values are typed through BTF (:mod:`corepy.btf.codec`); raw bytes
    are accepted on write and available through :meth:`raw`."""

    __slots__ = ("_object",)

    def __init__(self, obj: Object):
        object.__setattr__(self, "_object", obj)

    def _var(self, name: str) -> VariableSpec:
        variables = self._object.spec.variables
        var = variables.get(name)
        if var is None:
            known = ", ".join(sorted(variables)) or "none"
            raise UnknownNameError(f"no global variable named {name!r} in {self._object.path} (variables: {known})")
        return var

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self[name]
        except UnknownNameError as e:
            raise AttributeError(str(e)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __getitem__(self, name: str) -> Any:
        var = self._var(name)
        obj = self._object
        if not obj.loaded:
            return var.value
        view = self._live_view(var)
        if view is not None:
            return var._codec().decode(view, var.offset)
        return var._codec().decode(self._live_bytes(var), var.offset)

    def __setitem__(self, name: str, value: Any) -> None:
        var = self._var(name)
        obj = self._object
        if not obj.loaded:
            obj._check_open()
            var.value = value
            return
        ms = obj.spec.maps[var.map]
        if ms.readonly:
            raise CorepyError(f"global {name!r} is in {var.map}, which is frozen once loaded: "
                              "set it before load()")
        view = self._live_view(var)
        if view is not None:
            var._codec().encode_into(view, var.offset, value)
            return
        m = obj._maps[var.map]
        data = bytearray(self._live_bytes(var))
        var._codec().encode_into(data, var.offset, value)
        m.raw[b"\0\0\0\0"] = bytes(data)

    def raw(self, name: str) -> bytes:
        """The variable's bytes (initial before load, live after)."""
        var = self._var(name)
        if not self._object.loaded:
            return var.raw
        view = self._live_view(var)
        data = view if view is not None else self._live_bytes(var)
        return bytes(data[var.offset:var.offset + var.size])

    def _live_view(self, var: VariableSpec) -> memoryview | None:
        """The shared mmap of the variable's map, when it is BPF_F_MMAPABLE."""
        from .syscalls.uapi import MapFlag

        obj = self._object
        obj._check_open()
        m = obj._maps[var.map]
        if not m.flags & MapFlag.MMAPABLE:
            return None
        return m.mmap(writable=not obj.spec.maps[var.map].readonly)

    def _live_bytes(self, var: VariableSpec) -> bytes:
        data = self._object._maps[var.map].raw.get(b"\0\0\0\0")
        if data is None:
            raise CorepyError(f"global data map {var.map} has no element 0", )
        return data

    def __iter__(self) -> Iterator[str]:
        return iter(self._object.spec.variables)

    def __contains__(self, name: str) -> bool:
        return name in self._object.spec.variables

    def __dir__(self) -> list[str]:
        return sorted(self._object.spec.variables)

    def __repr__(self) -> str:
        return f"<Globals of {self._object.path}: {', '.join(self._object.spec.variables)}>"
