"""Live BPF programs: load a linked program into the kernel, run, inspect, pin, attach.

``load_program`` turns the object layer's ``LinkedProgram`` (instructions with
map references still symbolic) into a kernel program: map fds patched into the
``ld_imm64`` instructions, BTF func/line info passed along, the attach BTF id of
tp_btf/fentry/fexit/lsm/iter programs looked up in the kernel BTF. Verifier
failures raise :class:`~corepy.errors.VerifierError` explained with the failing
source line and, for CO-RE-poisoned instructions, the relocation that did it.
"""

from __future__ import annotations

import errno
import os
import re
import struct
from collections.abc import Iterable, Mapping, Sequence

from ._records import field, record
from .asm.insn import Insn, decode
from .errors import BPFPermissionError, NotSupportedError, ObjectError, VerifierError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .links import Link
    from .syscalls.fd import FD

__all__ = ["Program", "ProgramInfo", "TestRunResult", "load_program", "find_attach_btf_id",
           "explain_verifier_error", "POISON_CALL_IMM"]

POISON_CALL_IMM = 0xBAD2310
"""imm libbpf (and corepy's CO-RE engine) writes into instructions a failed relocation poisoned."""

_PROG_NAME_MAX = 15  # BPF_OBJ_NAME_LEN - 1


@record(frozen=True, slots=True)
class TestRunResult:
    """What BPF_PROG_TEST_RUN returned."""

    __test__ = False  # not a pytest test class, despite the name

    retval: int
    data_out: bytes
    duration_ns: int
    ctx_out: bytes | None = None


@record(frozen=True)
class ProgramInfo:
    """``bpf_prog_info`` of a loaded program, with its translated instructions decoded."""

    id: int
    name: str
    type: Any
    tag: str
    map_ids: tuple[int, ...]
    btf_id: int
    xlated: list[Insn] = field(repr=False)
    jited_len: int = 0
    run_time_ns: int = 0
    run_cnt: int = 0
    raw: Any = field(default=None, repr=False, compare=False)


class Program:
    """A program loaded in the kernel. Closing it releases this process's reference
    (links and pins keep the kernel object alive on their own)."""

    def __init__(self, fd: FD, *, name: str, prog_type: Any, expected_attach_type: Any = None,
                 section: str | None = None, attach_to: str | None = None, usdt_specs: FD | None = None):
        self._fd: FD | None = fd
        self.usdt_specs = usdt_specs
        """This program's own reference to its object's ``__bpf_usdt_specs`` map (usdt.bpf.h)."""
        self.name = name
        self.type = prog_type
        self.expected_attach_type = expected_attach_type
        self.section = section
        self.attach_to = attach_to

    # --- lifetime ---------------------------------------------------------
    @property
    def fd(self) -> int:
        """The program's file descriptor (ValueError once closed)."""
        if self._fd is None:
            raise ValueError(f"program {self.name!r} is closed")
        return self._fd.fileno()

    def fileno(self) -> int:
        return self.fd

    @property
    def closed(self) -> bool:
        return self._fd is None

    def close(self) -> None:
        """Release the fd; idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            fd.close()
        specs, self.usdt_specs = self.usdt_specs, None
        if specs is not None:
            specs.close()

    def __enter__(self) -> Program:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._fd is None else f"fd={self._fd.fileno()}"
        return f"<Program {self.name!r} {getattr(self.type, 'name', self.type)} {state}>"

    # --- running and inspecting -------------------------------------------
    def test_run(self, data: bytes = b"", ctx: bytes | None = None, repeat: int = 1,
                 data_size_out: int | None = None) -> TestRunResult:
        """Run the program once (or ``repeat`` times) on ``data``/``ctx`` via BPF_PROG_TEST_RUN."""
        from .syscalls.run import prog_test_run

        res = prog_test_run(self.fd, data, ctx, repeat=repeat, data_size_out=data_size_out)
        return TestRunResult(res.retval, res.data, res.duration_ns, res.ctx)

    def info(self) -> ProgramInfo:
        """The kernel's view of this program (id, tag, map ids, translated instructions...)."""
        from .syscalls.objects import prog_info
        from .syscalls.uapi import ProgType

        details = prog_info(self.fd)
        raw = details.info
        try:
            prog_type: Any = ProgType(raw.type)
        except ValueError:
            prog_type = raw.type
        return ProgramInfo(
            id=raw.id, name=details.name, type=prog_type, tag=bytes(raw.tag).hex(), map_ids=tuple(details.map_ids),
            btf_id=raw.btf_id, xlated=decode(details.xlated), jited_len=raw.jited_prog_len,
            run_time_ns=raw.run_time_ns, run_cnt=raw.run_cnt, raw=raw)

    @property
    def id(self) -> int:
        return self.info().id

    # --- pinning ----------------------------------------------------------
    def pin(self, path: str) -> None:
        """Pin at ``path`` on a bpffs."""
        from .syscalls.objects import obj_pin

        obj_pin(self.fd, path)

    @classmethod
    def from_pinned(cls, path: str) -> Program:
        """Open a program pinned at ``path``."""
        from .syscalls.objects import obj_get

        return cls._from_fd(obj_get(path))

    @classmethod
    def from_id(cls, prog_id: int) -> Program:
        """Open a loaded program by its kernel id."""
        from .syscalls.objects import get_fd_by_id

        return cls._from_fd(get_fd_by_id("prog", prog_id))

    @classmethod
    def _from_fd(cls, fd: FD) -> Program:
        from .syscalls.objects import prog_info
        from .syscalls.uapi import ProgType

        try:
            details = prog_info(fd)
            prog_type: Any = ProgType(details.info.type)
        except ValueError:
            prog_type = details.info.type
        except BaseException:
            fd.close()
            raise
        return cls(fd, name=details.name, prog_type=prog_type)

    # --- attaching --------------------------------------------------------
    def attach(self, **options: Any) -> Link:
        """Attach where the program's SEC() says (``tp/cat/name``, ``raw_tp/name``,
        ``uprobe/bin:func``...). ObjectError if the section names no target."""
        from .attach import auto_attach

        link = auto_attach(self, **options)
        if link is None:
            raise ObjectError(f"program {self.name!r}: section {self.section!r} does not say where to "
                              "attach; use an explicit attach_* method", section=self.section)
        return link

    def attach_tracepoint(self, category: str, name: str, *, cookie: int = 0) -> Link:
        from .attach.tracepoint import attach_tracepoint

        return attach_tracepoint(self, category, name, cookie=cookie)

    def attach_raw_tracepoint(self, name: str) -> Link:
        from .attach.tracepoint import attach_raw_tracepoint

        return attach_raw_tracepoint(self, name)

    def attach_trace(self, *, cookie: int = 0) -> Link:
        """tp_btf/fentry/fexit/fmod_ret/lsm: the target was fixed at load (attach_btf_id)."""
        from .attach.tracing import attach_trace

        return attach_trace(self, cookie=cookie)

    def attach_kprobe(self, function: str, offset: int = 0, *, retprobe: bool = False,
                      cookie: int = 0) -> Link:
        from .attach.probes import attach_kprobe

        return attach_kprobe(self, function, offset, retprobe=retprobe, cookie=cookie)

    def attach_uprobe(self, binary: str, function: str | None = None, offset: int = 0, *,
                      pid: int = -1, retprobe: bool = False, cookie: int = 0) -> Link:
        from .attach.probes import attach_uprobe

        return attach_uprobe(self, binary, function, offset, pid=pid, retprobe=retprobe, cookie=cookie)

    def attach_ksyscall(self, syscall: str, *, retprobe: bool = False, cookie: int = 0) -> Link:
        """kprobe on the kernel entry of system call ``syscall`` (``ksyscall/<name>``)."""
        from .attach.probes import attach_ksyscall

        return attach_ksyscall(self, syscall, retprobe=retprobe, cookie=cookie)

    def attach_uprobe_multi(self, binary: str, pattern: str, *, pid: int = -1, retprobe: bool = False,
                            cookies: tuple[int, ...] = ()) -> Link:
        """One uprobe_multi link on every function of ``binary`` matching glob ``pattern``."""
        from .attach.probes import attach_uprobe_multi

        return attach_uprobe_multi(self, binary, pattern, pid=pid, retprobe=retprobe, cookies=cookies)

    def attach_usdt(self, binary: str, provider: str, name: str, *, pid: int = -1, cookie: int = 0) -> Link:
        """Attach a ``<bpf/usdt.bpf.h>`` program to USDT probe ``provider:name`` of ``binary``."""
        from .attach.usdt import attach_usdt

        return attach_usdt(self, binary, provider, name, pid=pid, cookie=cookie)

    def attach_xdp(self, interface: int | str, *, flags: int = 0) -> Link:
        from .attach.net import attach_xdp

        return attach_xdp(self, interface, flags=flags)

    def attach_tcx(self, interface: int | str, direction: str | None = None) -> Link:
        """tcx link; ``direction`` defaults to the program's (``tcx/egress`` -> egress), else ingress."""
        from .attach.net import attach_tcx

        if direction is None:
            direction = "egress" if getattr(self.expected_attach_type, "name", "") == "TCX_EGRESS" else "ingress"
        return attach_tcx(self, interface, direction)

    def attach_cgroup(self, cgroup: int | str, attach_type: Any = None) -> Link:
        from .attach.net import attach_cgroup

        return attach_cgroup(self, cgroup, attach_type)

    def attach_socket(self, sock: Any) -> Link:
        from .attach.net import attach_socket

        return attach_socket(self, sock)

    def attach_perf_event(self, perf_fd: Any, *, cookie: int = 0) -> Link:
        from .attach.perf_event import attach_perf_event

        return attach_perf_event(self, perf_fd, cookie=cookie)

    def attach_iter(self, *, map_fd: int | None = None) -> Link:
        from .attach.iter import attach_iter

        return attach_iter(self, map_fd=map_fd)


# --- loading -------------------------------------------------------------

_ATTACH_BTF_PREFIX = {  # section kind -> (BTF name prefix, kind name)
    "tp_btf": ("btf_trace_", "TYPEDEF"),
    "lsm": ("bpf_lsm_", "FUNC"),
    "iter": ("bpf_iter_", "FUNC"),
}


def find_attach_btf_id(target: str, kind: str, btf: Any = None) -> int:
    """Kernel BTF id of a tracing program's target, as libbpf finds it: ``btf_trace_<name>``
    (tp_btf), ``bpf_lsm_<hook>`` (lsm), ``bpf_iter_<name>`` (iter), else the function
    ``<name>`` (fentry/fexit/fmod_ret). ``kind`` is the section kind ('tp_btf', 'fentry'...)."""
    from .btf.types import Kind

    if btf is None:
        from .btf import BTF

        btf = BTF.kernel()
    prefix, kind_name = _ATTACH_BTF_PREFIX.get(kind, ("", "FUNC"))
    name = prefix + target
    found = btf.find(name, Kind[kind_name])
    if not found:
        raise NotSupportedError(f"{kind} target {target!r}",
                                f"no {kind_name} {name!r} in the kernel BTF ({getattr(btf, 'source', '?')})")
    return found[0].id


_FUNC_INFO = struct.Struct("<II")  # struct bpf_func_info: insn_off (instructions), type_id
_LINE_INFO = struct.Struct("<IIII")  # struct bpf_line_info: insn_off, file_name_off, line_off, line_col


def pack_func_info(records: Iterable[Any]) -> bytes:
    """``struct bpf_func_info`` records; ``insn_off`` already in instructions."""
    return b"".join(_FUNC_INFO.pack(r.insn_off, r.type_id) for r in records)


def pack_line_info(records: Iterable[Any]) -> bytes:
    """``struct bpf_line_info`` records (``line_col`` = line << 10 | column)."""
    return b"".join(_LINE_INFO.pack(r.insn_off, r.file_name_off, r.line_off, (r.line_num << 10) | r.line_col)
                    for r in records)


def _sanitize_name(name: str) -> str:
    """The kernel's object name rules: ASCII letters, digits, ``_`` and ``.``; others become ``_``."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "_" for c in name[:_PROG_NAME_MAX])


_TRAMPOLINE_KINDS = ("fentry", "fexit", "fmod_ret", "lsm", "freplace")


def load_program(
    linked: Any,
    *,
    name: str,
    prog_type: Any,
    expected_attach_type: Any = None,
    license: str = "GPL",
    kern_version: int = 0,
    btf_fd: int | None = None,
    map_fds: Mapping[str, int] | None = None,
    attach_btf_id: int | None = None,
    attach_to: str | None = None,
    section: str | None = None,
    sleepable: bool = False,
    prog_flags: int = 0,
    log_level: int = 0,
    core_records: Sequence[Any] = (),
    kernel_btf: Any = None,
) -> Program:
    """Load ``linked`` (a LinkedProgram, or a plain ``list[Insn]``) and return the live Program.

    ``attach_btf_id`` is looked up from ``attach_to`` for tp_btf/fentry/fexit/fmod_ret/lsm/iter
    sections when not given. On a verifier rejection, VerifierError carries the full log and
    the failing source line (from line info) and any CO-RE relocation that poisoned the failing
    instruction (from ``core_records``)."""
    from .syscalls.load import prog_load
    from .syscalls.uapi import ProgFlag

    if isinstance(linked, list):
        insns, func_info, line_info = list(linked), [], []
    else:
        insns = linked.patched(dict(map_fds or {})) if linked.map_refs else list(linked.insns)
        func_info, line_info = list(linked.func_info), list(linked.line_info)
        if not core_records:
            core_records = linked.core
    from .attach import section_kind

    kind = section_kind(section)
    if attach_btf_id is None and attach_to and kind in ("tp_btf", "fentry", "fexit", "fmod_ret", "lsm", "iter"):
        attach_btf_id = find_attach_btf_id(attach_to, kind, kernel_btf)
    use_btf = btf_fd is not None
    try:
        fd = prog_load(
            prog_type,
            insns,
            license=license,
            name=_sanitize_name(name),
            expected_attach_type=int(expected_attach_type or 0),
            prog_flags=int(prog_flags) | (ProgFlag.SLEEPABLE if sleepable else 0),
            kern_version=kern_version,
            btf_fd=btf_fd if use_btf else None,
            func_info=pack_func_info(func_info) if use_btf else b"",
            func_info_rec_size=_FUNC_INFO.size,
            line_info=pack_line_info(line_info) if use_btf else b"",
            line_info_rec_size=_LINE_INFO.size,
            attach_btf_id=attach_btf_id or 0,
            log_level=log_level,
        )
    except VerifierError as err:
        raise explain_verifier_error(err, name, insns, line_info, core_records,
                                     layout=getattr(linked, "layout", None) or [(name, 0)],
                                     poisoned_kfuncs=getattr(linked, "poisoned_kfuncs", ())) from None
    except BPFPermissionError as err:
        if err.errno == errno.EPERM and kind in _TRAMPOLINE_KINDS and os.geteuid() == 0:
            raise BPFPermissionError(
                "BPF_PROG_LOAD", errno.EPERM,
                f"program {name!r} ({kind}/{attach_to or '?'}) refused although this process is root, "
                "with no verifier log",
                hint=f"this kernel refuses {kind} programs: BPF trampolines (fentry/fexit/fmod_ret/lsm) "
                "may be disabled or restricted by its configuration or a security policy") from None
        raise
    usdt_specs = None
    if not isinstance(linked, list) and any(ref.map == "__bpf_usdt_specs" for ref in linked.map_refs):
        from .syscalls.fd import FD as OwnedFD

        try:  # usdt.bpf.h: attach_usdt() writes argument specs into this map
            usdt_specs = OwnedFD(os.dup(map_fds["__bpf_usdt_specs"]), "map")  # type: ignore[index]
        except BaseException:
            fd.close()
            raise
    return Program(fd, name=name, prog_type=prog_type, expected_attach_type=expected_attach_type,
                   section=section, attach_to=attach_to, usdt_specs=usdt_specs)


# --- explaining verifier failures ----------------------------------------

_INSN_LINE = r"^(\d+): \(([0-9a-f]{2})\)"
"""A verifier log line of an instruction (compiled by :mod:`re` on first use: only failures read logs)."""


def failing_insn(log: str) -> int | None:
    """Index of the last instruction the verifier printed (``N: (..) ...``), if any."""
    last = None
    for m in re.finditer(_INSN_LINE, log, re.M):
        last = int(m.group(1))
    return last


def source_line(line_info: Sequence[Any], idx: int) -> Any | None:
    """The line-info record covering instruction ``idx`` (largest insn_off <= idx)."""
    best = None
    for li in line_info:
        if li.insn_off <= idx and (best is None or li.insn_off >= best.insn_off):
            best = li
    return best


def explain_verifier_error(err: VerifierError, program: str, insns: Sequence[Insn],
                           line_info: Sequence[Any], core_records: Sequence[Any], *,
                           layout: Sequence[tuple[str, int]] = (),
                           poisoned_kfuncs: Sequence[tuple[int, str]] = ()) -> VerifierError:
    """A VerifierError like ``err`` whose context names the failing instruction's source line
    and, if CO-RE poisoned it, the relocation that did and why. ``layout`` is the linked
    program's (function, first instruction) list, to place function-relative CO-RE records."""
    notes: list[str] = []
    idx = failing_insn(err.log)
    poisoned = f"unknown#{POISON_CALL_IMM}" in err.log or f"{POISON_CALL_IMM:#x}" in err.log
    if idx is not None:
        notes.append(f"failing instruction: #{idx}")
        li = source_line(line_info, idx)
        if li is not None:
            notes.append(f"  at {li.file_name}:{li.line_num}: {li.line.strip()}")
        if 0 <= idx < len(insns) and insns[idx].imm == POISON_CALL_IMM:
            poisoned = True
        for at, extern in poisoned_kfuncs:
            if at == idx:
                notes.append(f"  call of the weak kfunc {extern!r}, which the kernel does not have "
                             "(guard it with bpf_ksym_exists())")
    if poisoned:
        start = dict(layout)
        ours = [r for r in core_records if _is_poisoned(r) and (not start or getattr(r, "program", None) in start)]
        exact = [r for r in ours if idx is not None and start.get(r.program, 0) + r.insn == idx]
        culprits = exact or ours
        if culprits:
            notes.append("poisoned by a CO-RE relocation that failed:" if exact else
                         "this program has CO-RE relocations that failed and poisoned instructions:")
            notes.extend(f"  {_describe_record(r)}" for r in culprits[:5])
        else:
            notes.append("the instruction was poisoned by a failed CO-RE relocation (call 0xbad2310)")
    context = "\n".join(notes) or err.context
    new = VerifierError(program, err.errno, err.log, context)
    new.insn = idx  # type: ignore[attr-defined]
    return new


def _is_poisoned(record: Any) -> bool:
    res = getattr(record, "result", record)
    return bool(getattr(res, "poisoned", False))


def _describe_record(record: Any) -> str:
    res = getattr(record, "result", record)
    kind = getattr(getattr(res, "kind", None), "name", None)
    where = f"{getattr(record, 'program', '?')} insn #{getattr(record, 'insn', '?')}"
    if getattr(record, "index", None) is not None:
        where += f" (relo #{record.index}{', ' + kind.lower() if kind else ''})"
    reason = getattr(res, "reason", None) or "no matching candidate in the target BTF"
    spec = getattr(res, "local_spec", None)
    return f"{where}: {spec + ' ' if spec else ''}-> {reason}"
