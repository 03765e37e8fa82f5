"""Links: a program attached somewhere. Closing a link detaches the program.

:class:`Link` wraps a kernel ``bpf_link`` fd (pin, update, detach, info); attachments the
kernel makes without a bpf_link (a perf event with ``PERF_EVENT_IOC_SET_BPF`` on old
kernels, a socket filter) are :class:`Link` subclasses with the same ``close()``.
"""

from __future__ import annotations

import errno

from ._records import field, record
from .errors import NotSupportedError, SyscallError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from typing import Any

    from .programs import Program
    from .syscalls.fd import FD

__all__ = ["Link", "LinkInfo", "PerfEventAttachment", "ProgAttachment", "SocketAttachment", "close_links"]

CLOSE_WORKERS = 16
"""Most links :func:`close_links` closes at once."""


@record(frozen=True)
class LinkInfo:
    """``bpf_link_info``: common fields plus the type-specific part as a dict."""

    id: int
    type: Any
    prog_id: int
    details: dict[str, Any] = field(default_factory=dict)


# LinkType name -> the member of bpf_link_info's union that describes it
_INFO_MEMBER = {"RAW_TRACEPOINT": "raw_tracepoint", "TRACING": "tracing", "CGROUP": "cgroup", "ITER": "iter",
                "NETNS": "netns", "XDP": "xdp", "STRUCT_OPS": "struct_ops", "NETFILTER": "netfilter",
                "KPROBE_MULTI": "kprobe_multi", "UPROBE_MULTI": "uprobe_multi", "PERF_EVENT": "perf_event",
                "TCX": "tcx", "NETKIT": "netkit", "SOCKMAP": "sockmap"}
_PERF_MEMBER = {"UPROBE": "uprobe", "URETPROBE": "uprobe", "KPROBE": "kprobe", "KRETPROBE": "kprobe",
                "TRACEPOINT": "tracepoint", "EVENT": "event"}


def _fields(struct: Any) -> dict[str, Any]:
    """A ctypes Structure's named fields as a dict (nested structures as dicts too)."""
    out: dict[str, Any] = {}
    for name, *_ in struct._fields_:
        if name.startswith("_"):
            continue
        value = getattr(struct, name)
        out[name] = _fields(value) if hasattr(value, "_fields_") else value
    return out


# (union member, pointer field, length field) of names the kernel copies out on request
_NAME_FIELDS = {"raw_tracepoint": ("tp_name", "tp_name_len"), "iter": ("target_name", "target_name_len")}
_PERF_NAME_FIELDS = {"uprobe": ("file_name", "name_len"), "kprobe": ("func_name", "name_len"),
                     "tracepoint": ("tp_name", "name_len")}


def fetch_link_info(fd: int) -> LinkInfo:
    """``bpf_link_info`` of link ``fd``, with its name (tracepoint, file, function) fetched."""
    import ctypes

    from .syscalls.objects import link_info, obj_get_info
    from .syscalls.uapi import LinkType, PerfEventType

    raw = link_info(fd)
    member = _INFO_MEMBER.get(getattr(_enum(LinkType, raw.type), "name", ""))
    part, fields = None, None
    if member in _NAME_FIELDS:
        part, fields = getattr(raw, member), _NAME_FIELDS[member]
    elif member == "perf_event":
        sub = _PERF_MEMBER.get(getattr(_enum(PerfEventType, raw.perf_event.type), "name", ""))
        if sub in _PERF_NAME_FIELDS:
            part, fields = getattr(raw.perf_event, sub), _PERF_NAME_FIELDS[sub]
    name = None
    if part is not None and fields is not None and getattr(part, fields[1]):
        buf = ctypes.create_string_buffer(getattr(part, fields[1]) + 1)
        setattr(part, fields[0], ctypes.addressof(buf))
        setattr(part, fields[1], len(buf))
        obj_get_info(fd, raw)
        name = buf.value.decode(errors="replace")
    info = link_info_from_raw(raw)
    if name is not None and fields is not None:
        info.details[fields[0]] = name
    return info


def _enum(enum: Any, value: int) -> Any:
    try:
        return enum(value)
    except ValueError:
        return value


def link_info_from_raw(raw: Any) -> LinkInfo:
    """A :class:`LinkInfo` from the kernel's ``bpf_link_info`` (pointer fields left as numbers)."""
    from .syscalls.uapi import AttachType, LinkType, PerfEventType

    try:
        kind: Any = LinkType(raw.type)
    except ValueError:
        kind = raw.type
    details: dict[str, Any] = {}
    member = _INFO_MEMBER.get(getattr(kind, "name", ""))
    if member:
        part = getattr(raw, member)
        details = _fields(part)
        if member == "perf_event":
            try:
                perf_kind = PerfEventType(part.type)
                details["type"] = perf_kind
                sub = _PERF_MEMBER[perf_kind.name]
                for key, value in _fields(getattr(part, sub)).items():
                    details[f"{sub}_{key}" if key in details else key] = value
            except (ValueError, KeyError):
                pass
        if "attach_type" in details:
            try:
                details["attach_type"] = AttachType(details["attach_type"])
            except ValueError:
                pass
    return LinkInfo(id=raw.id, type=kind, prog_id=raw.prog_id, details=details)


class Link:
    """A kernel BPF link. ``close()`` drops this process's reference: the program is detached
    unless the link is pinned. ``owned`` fds (e.g. the perf event under a perf link) close with it."""

    def __init__(self, fd: FD | None, *, program: Program | None = None, target: str = "",
                 owned: tuple[FD, ...] = ()):
        self._fd = fd
        self.program = program
        self.target = target
        self._owned = list(owned)

    # --- lifetime ---------------------------------------------------------
    @property
    def fd(self) -> int:
        """The link's fd (ValueError once closed)."""
        if self._fd is None:
            raise ValueError(f"link to {self.target!r} is closed")
        return self._fd.fileno()

    def fileno(self) -> int:
        return self.fd

    @property
    def closed(self) -> bool:
        return self._fd is None and not self._owned

    def close(self) -> None:
        """Detach (unless pinned) and release every fd; idempotent."""
        fd, self._fd = self._fd, None
        owned, self._owned = self._owned, []
        # owned fds first: the link holds its own reference to e.g. a perf event, so the kernel
        # tears everything down once, on the link's close (closing the link first costs a
        # second RCU grace period in the perf event's release: ~2x slower)
        for o in owned:
            o.close()
        if fd is not None:
            fd.close()

    def __enter__(self) -> Link:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        prog = self.program.name if self.program is not None else "?"
        return f"<{type(self).__name__} {prog!r} -> {self.target} {'closed' if self.closed else 'open'}>"

    # --- kernel link operations -------------------------------------------
    def detach(self) -> None:
        """BPF_LINK_DETACH: detach now, even if pinned or shared; the fd stays valid (defunct)."""
        from .syscalls.links import link_detach

        try:
            link_detach(self.fd)
        except SyscallError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            kind = getattr(self.info().type, "name", "this")
            raise NotSupportedError(f"BPF_LINK_DETACH of {kind} links", "close the link instead") from None

    def update(self, program: Program, *, expected: Program | None = None) -> None:
        """BPF_LINK_UPDATE: swap in ``program`` (atomically; ``expected`` = the program
        that must currently be attached)."""
        from .syscalls.links import link_update

        try:
            link_update(self.fd, program.fd, old_prog_fd=expected.fd if expected is not None else None)
        except SyscallError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            kind = getattr(self.info().type, "name", "this")
            raise NotSupportedError(f"BPF_LINK_UPDATE of {kind} links",
                                    f"{e.strerror}; (or {program.name!r} is not of the attached program's "
                                    "type/attach type)") from None
        self.program = program

    def pin(self, path: str) -> None:
        """Pin the link on bpffs: it then outlives this process."""
        from .syscalls.objects import obj_pin

        obj_pin(self.fd, path)

    def info(self) -> LinkInfo:
        """The kernel's ``bpf_link_info`` for this link."""
        return fetch_link_info(self.fd)

    @classmethod
    def from_pinned(cls, path: str) -> Link:
        """Open a link pinned at ``path``."""
        from .syscalls.objects import obj_get

        return cls(obj_get(path), target=path)

    @classmethod
    def from_id(cls, link_id: int) -> Link:
        """Open a link by kernel id."""
        from .syscalls.objects import get_fd_by_id

        return cls(get_fd_by_id("link", link_id), target=f"link id {link_id}")


def close_links(links: list[Link]) -> None:
    """Close every link, several at a time. Tearing down a tracepoint or perf event waits in the
    kernel for RCU grace periods (tens of ms per link, in ``close()``); closed from different
    threads, those waits overlap where the kernel allows (tracepoints still unregister one at a
    time, under its ``event_mutex``). Where no thread can be started (interpreter shutdown) the
    calling thread closes them all. Every link is closed even if some fail; the first error is
    raised after."""
    if len(links) < 2:
        for link in links:
            link.close()
        return
    import _thread  # (threading's workers without importing threading: ~0.7 ms)

    pending = list(links)
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            try:
                link = pending.pop()  # atomic: no two workers get the same link
            except IndexError:
                return
            try:
                link.close()
            except BaseException as e:  # noqa: BLE001 - re-raised by the caller's thread
                errors.append(e)

    def worker(done: _thread.LockType) -> None:
        try:
            work()
        finally:
            done.release()

    finished = []
    for _ in range(min(len(pending), CLOSE_WORKERS) - 1):
        done = _thread.allocate_lock()
        done.acquire()
        try:
            _thread.start_new_thread(worker, (done,))
        except RuntimeError:  # no new threads (interpreter shutting down): this thread closes the rest
            break
        finished.append(done)
    work()
    for done in finished:
        done.acquire()  # released when that worker is through
    if errors:
        raise errors[0]


class PerfEventAttachment(Link):
    """A program attached to a perf event with ``PERF_EVENT_IOC_SET_BPF`` (kernels without
    perf bpf_links): closing the perf event detaches it. Cannot be pinned or updated."""

    def __init__(self, perf_fd: FD, *, program: Program | None = None, target: str = ""):
        super().__init__(None, program=program, target=target, owned=(perf_fd,))

    @property
    def fd(self) -> int:
        if not self._owned:
            raise ValueError(f"attachment to {self.target!r} is closed")
        return self._owned[0].fileno()

    def close(self) -> None:
        if self._owned:
            from .syscalls import perf

            try:
                perf.ioctl_disable(self._owned[0].fileno())
            except OSError:
                pass
        super().close()

    def detach(self) -> None:
        self.close()

    def update(self, program: Program, *, expected: Program | None = None) -> None:
        raise NotSupportedError("BPF links for perf events", "this attachment uses PERF_EVENT_IOC_SET_BPF")

    def pin(self, path: str) -> None:
        raise NotSupportedError("BPF links for perf events", "an ioctl attachment cannot be pinned")

    def info(self) -> LinkInfo:
        raise NotSupportedError("BPF links for perf events", "an ioctl attachment has no link info")


class ProgAttachment(Link):
    """A program attached with ``BPF_PROG_ATTACH`` (kernels without links for the hook, e.g.
    cgroups before 5.7): ``close()`` detaches it with ``BPF_PROG_DETACH``. Holds its own
    references to the target and the program. Cannot be pinned or updated."""

    def __init__(self, target_fd: FD, attach_type: Any, *, program: Program, target: str = ""):
        self._attach_type = attach_type
        self._prog_fd = program._fd.dup() if program._fd is not None else None
        super().__init__(None, program=program, target=target, owned=(target_fd,))

    @property
    def fd(self) -> int:
        raise NotSupportedError("a link fd for BPF_PROG_ATTACH attachments", "the kernel made no bpf_link")

    def close(self) -> None:
        if self._owned and self._prog_fd is not None:
            from .syscalls.links import prog_detach

            try:
                prog_detach(self._owned[0], self._attach_type, self._prog_fd)
            except SyscallError as e:
                if e.errno != errno.ENOENT:  # already detached
                    raise
            finally:
                self._prog_fd.close()
                self._prog_fd = None
        super().close()

    def detach(self) -> None:
        self.close()

    def update(self, program: Program, *, expected: Program | None = None) -> None:
        raise NotSupportedError("BPF links for this hook", "a BPF_PROG_ATTACH attachment cannot be updated")

    def pin(self, path: str) -> None:
        raise NotSupportedError("BPF links for this hook", "a BPF_PROG_ATTACH attachment cannot be pinned")

    def info(self) -> LinkInfo:
        raise NotSupportedError("BPF links for this hook", "a BPF_PROG_ATTACH attachment has no link info")


SO_ATTACH_BPF = 50
SO_DETACH_BPF = 27  # == SO_DETACH_FILTER


class SocketAttachment(Link):
    """A socket filter set with ``SO_ATTACH_BPF``; ``close()``/``detach()`` remove it
    (``SO_DETACH_BPF``) unless the socket is already closed."""

    def __init__(self, sock: socket.socket, *, program: Program | None = None):
        self._sock = sock
        self._attached = True
        super().__init__(None, program=program, target=f"socket fd {sock.fileno()}")

    @property
    def fd(self) -> int:
        raise NotSupportedError("BPF links for socket filters", "SO_ATTACH_BPF makes no link fd")

    @property
    def closed(self) -> bool:
        return not self._attached

    def close(self) -> None:
        if not self._attached:
            return
        self._attached = False
        if self._sock.fileno() < 0:
            return  # the socket is gone, and its filter with it
        from socket import SOL_SOCKET  # the socket exists, so its module is loaded already

        try:
            self._sock.setsockopt(SOL_SOCKET, SO_DETACH_BPF, 0)
        except OSError:
            pass  # nothing attached any more

    def detach(self) -> None:
        self.close()

    def update(self, program: Program, *, expected: Program | None = None) -> None:
        """Replace the filter (a second SO_ATTACH_BPF replaces the first atomically)."""
        from socket import SOL_SOCKET

        self._sock.setsockopt(SOL_SOCKET, SO_ATTACH_BPF, program.fd)
        self.program = program

    def pin(self, path: str) -> None:
        raise NotSupportedError("BPF links for socket filters", "SO_ATTACH_BPF cannot be pinned")

    def info(self) -> LinkInfo:
        raise NotSupportedError("BPF links for socket filters", "SO_ATTACH_BPF has no link info")

