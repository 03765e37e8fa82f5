"""BPF_PROG_LOAD and BPF_BTF_LOAD, with the kernel's log.

Both first try without a log (fast); if the kernel refuses, they load again
with ``log_level=1`` to capture why. A log buffer that turns out too small
(ENOSPC) grows, up to :data:`LOG_SIZE_MAX`, never forever.
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Callable, Sequence

from ..asm.insn import Insn, encode
from ..errors import SyscallError, VerifierError, raise_for_errno
from .attr import BTFLoadAttr, ProgLoadAttr, ptr
from .bpf import PROG_LOAD_ATTEMPTS, bpf_errno
from .fd import FD, FdLike, fdnum
from .maps import obj_name
from .uapi import Cmd, ProgType

LOG_SIZE_FIRST = 1 << 16
LOG_SIZE_MAX = (1 << 30) - 1  # the kernel refuses log_size > UINT_MAX >> 2
BPF_LOG_LEVEL1, BPF_LOG_LEVEL2, BPF_LOG_STATS = 1, 2, 4

# errnos for which a load is not retried to fetch a log: they are not the verifier's
_NO_LOG_ERRNOS = frozenset({errno.EPERM, errno.ENOMEM, errno.EBADF, errno.EFAULT, errno.E2BIG})


def _load(
    cmd: Cmd, attr: ProgLoadAttr | BTFLoadAttr, set_log: Callable[[int, ctypes.Array | None, int], int],
    log_level: int, log_size: int | None,
) -> tuple[int, int, str]:
    """Issue ``cmd`` with log handling: ``(fd or -1, errno, log text)``.

    ``set_log(level, buffer, size)`` writes the log fields of ``attr`` and returns the
    kernel's ``log_true_size`` from the previous call (0 if the kernel lacks it).
    """
    level = log_level
    size = log_size or LOG_SIZE_FIRST
    eagain = 0
    while True:
        buf = ctypes.create_string_buffer(size) if level else None
        set_log(level, buf, size if level else 0)
        result, err = bpf_errno(cmd, attr)
        log = buf.value.decode(errors="replace") if buf is not None else ""
        if result >= 0:
            return result, 0, log
        if err == errno.EAGAIN and eagain < PROG_LOAD_ATTEMPTS - 1:
            eagain += 1
            continue
        if err == errno.ENOSPC and level and size < LOG_SIZE_MAX:
            true_size = set_log(level, buf, size)
            size = min(LOG_SIZE_MAX, max(size * 4, true_size + 1))
            continue
        if not level and err not in _NO_LOG_ERRNOS:
            level = BPF_LOG_LEVEL1
            continue
        return -1, err, log


def prog_load(
    prog_type: ProgType | int,
    insns: bytes | Sequence[Insn],
    *,
    license: str = "GPL",
    name: str = "",
    expected_attach_type: int = 0,
    prog_flags: int = 0,
    kern_version: int = 0,
    ifindex: int = 0,
    btf_fd: FdLike | None = None,
    func_info: bytes = b"",
    func_info_rec_size: int = 0,
    line_info: bytes = b"",
    line_info_rec_size: int = 0,
    attach_btf_id: int = 0,
    attach_prog_fd: FdLike | None = None,
    attach_btf_obj_fd: FdLike | None = None,
    fd_array: Sequence[int] | None = None,
    token_fd: FdLike | None = None,
    log_level: int = 0,
    log_size: int | None = None,
    log_out: list[str] | None = None,
) -> FD:
    """BPF_PROG_LOAD: the loaded program's fd.

    ``insns`` is raw instruction bytes or :class:`~corepy.asm.insn.Insn` slots.
    ``func_info``/``line_info`` are packed kernel records. With ``log_level`` > 0 the
    log of a successful load is appended to ``log_out``. A refusal raises
    :class:`~corepy.errors.VerifierError` carrying the full verifier log (EACCES,
    EINVAL and any other verifier error), or :class:`~corepy.errors.SyscallError`.
    """
    code = insns if isinstance(insns, (bytes, bytearray)) else encode(list(insns))
    if not code or len(code) % 8:
        raise VerifierError(name, errno.EINVAL, "", f"program has {len(code)} bytes of instructions (need a non-zero multiple of 8)")
    insn_buf = ctypes.create_string_buffer(bytes(code), len(code))
    license_buf = ctypes.create_string_buffer(license.encode())
    fi_buf = ctypes.create_string_buffer(func_info, len(func_info)) if func_info else None
    li_buf = ctypes.create_string_buffer(line_info, len(line_info)) if line_info else None
    fds = (ctypes.c_int * len(fd_array))(*fd_array) if fd_array else None
    if attach_prog_fd is not None and attach_btf_obj_fd is not None:
        raise ValueError("attach_prog_fd and attach_btf_obj_fd share one field: pass one")
    attr = ProgLoadAttr(
        prog_type=int(prog_type),
        insn_cnt=len(code) // 8,
        insns=ptr(insn_buf),
        license=ptr(license_buf),
        kern_version=kern_version,
        prog_flags=int(prog_flags),
        prog_name=obj_name(name),
        prog_ifindex=ifindex,
        expected_attach_type=int(expected_attach_type),
        prog_btf_fd=fdnum(btf_fd),
        func_info_rec_size=func_info_rec_size if func_info else 0,
        func_info=ptr(fi_buf),
        func_info_cnt=len(func_info) // func_info_rec_size if func_info else 0,
        line_info_rec_size=line_info_rec_size if line_info else 0,
        line_info=ptr(li_buf),
        line_info_cnt=len(line_info) // line_info_rec_size if line_info else 0,
        attach_btf_id=attach_btf_id,
        attach_prog_fd=fdnum(attach_prog_fd if attach_prog_fd is not None else attach_btf_obj_fd),
        fd_array=ptr(fds),
        prog_token_fd=fdnum(token_fd),
    )

    def set_log(level: int, buf: ctypes.Array | None, size: int) -> int:
        true_size = attr.log_true_size
        attr.log_level, attr.log_buf, attr.log_size, attr.log_true_size = level, ptr(buf), size, 0
        return true_size

    fd, err, log = _load(Cmd.PROG_LOAD, attr, set_log, log_level, log_size)
    if fd >= 0:
        if log_out is not None and log:
            log_out.append(log)
        return FD(fd, "prog")
    try:
        kind = ProgType(int(prog_type)).name.lower()
    except ValueError:
        kind = f"type {int(prog_type)}"
    if log or err in (errno.EACCES, errno.EINVAL):
        raise VerifierError(name, err, log, f"{kind} program, {len(code) // 8} instructions")
    raise_for_errno("BPF_PROG_LOAD", err, f"program {name!r} ({kind})")
    raise AssertionError("unreachable")


def btf_load(
    blob: bytes,
    *,
    log_level: int = 0,
    log_size: int | None = None,
    token_fd: FdLike | None = None,
    log_out: list[str] | None = None,
) -> FD:
    """BPF_BTF_LOAD: a kernel BTF object for ``blob``.

    With ``log_level`` > 0 the log of a successful load is appended to ``log_out``. A
    refusal raises :class:`~corepy.errors.SyscallError` whose ``detail`` and ``log``
    attribute hold the kernel's BTF log.
    """
    blob_buf = ctypes.create_string_buffer(bytes(blob), len(blob))
    attr = BTFLoadAttr(btf=ptr(blob_buf), btf_size=len(blob), btf_token_fd=fdnum(token_fd))

    def set_log(level: int, buf: ctypes.Array | None, size: int) -> int:
        true_size = attr.btf_log_true_size
        attr.btf_log_level, attr.btf_log_buf, attr.btf_log_size, attr.btf_log_true_size = level, ptr(buf), size, 0
        return true_size

    fd, err, log = _load(Cmd.BTF_LOAD, attr, set_log, log_level, log_size)
    if fd >= 0:
        if log_out is not None and log:
            log_out.append(log)
        return FD(fd, "btf")
    detail = f"BTF blob of {len(blob)} bytes"
    if log.strip():
        detail += "; kernel BTF log:\n" + "\n".join(log.rstrip().splitlines()[-12:])
    try:
        raise_for_errno("BPF_BTF_LOAD", err, detail)
    except SyscallError as e:
        e.log = log  # type: ignore[attr-defined]
        raise
