"""Classic tc attachment through rtnetlink: a ``clsact`` qdisc plus a direct-action ``bpf``
filter, for kernels without tcx links (before 6.6), as libbpf's ``bpf_tc_attach`` does.

The messages are declared once below (``struct nlmsghdr``, ``struct tcmsg``, netlink
attributes); the socket is the stdlib's ``AF_NETLINK`` socket.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading

from ..errors import NotSupportedError, SyscallError, raise_for_errno
from ..links import Link, LinkInfo

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..programs import Program

__all__ = ["TcAttachment", "attach_tc_netlink"]

# include/uapi/linux/netlink.h, rtnetlink.h, pkt_sched.h, pkt_cls.h
NETLINK_ROUTE = 0
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWQDISC, RTM_DELQDISC, RTM_NEWTFILTER, RTM_DELTFILTER = 36, 37, 44, 45
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_FD, TCA_BPF_NAME, TCA_BPF_FLAGS = 6, 7, 8
TCA_BPF_FLAG_ACT_DIRECT = 1
NLA_F_NESTED = 1 << 15
TC_H_CLSACT = 0xFFFFFFF1
TC_H_MIN_INGRESS, TC_H_MIN_EGRESS = 0xFFF2, 0xFFF3
ETH_P_ALL = 0x0003

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
TCMSG = struct.Struct("=BxxxiIII")  # family, pad, ifindex, handle, parent, info
NLATTR = struct.Struct("=HH")  # len, type
NLMSGERR = struct.Struct("=i")  # error, followed by the offending header


def _tc_h(major: int, minor: int) -> int:
    return (major & 0xFFFF0000) | (minor & 0x0000FFFF)


def _attr(kind: int, payload: bytes) -> bytes:
    data = NLATTR.pack(NLATTR.size + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


class _Rtnl:
    """A NETLINK_ROUTE socket of the network namespace it was made in (a tc filter must be
    deleted through its device's namespace, whatever the thread's namespace is by then)."""

    _seq = 0
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            self.sock.bind((0, 0))
            self.netns = os.stat("/proc/thread-self/ns/net").st_ino
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()

    def request(self, msg_type: int, flags: int, body: bytes, what: str) -> None:
        """Send one request and wait for its acknowledgement; raise the kernel's error."""
        with _Rtnl._lock:
            _Rtnl._seq += 1
            seq = _Rtnl._seq
        msg = NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0) + body
        self.sock.send(msg)
        while True:
            reply = self.sock.recv(65536)
            at = 0
            while at + NLMSGHDR.size <= len(reply):
                length, rtype, _, rseq, _ = NLMSGHDR.unpack_from(reply, at)
                if rtype == NLMSG_ERROR and rseq == seq:
                    (err,) = NLMSGERR.unpack_from(reply, at + NLMSGHDR.size)
                    if err:
                        raise_for_errno("rtnetlink", -err, what)
                    return
                at += max((length + 3) & ~3, NLMSGHDR.size)


def _tcmsg(ifindex: int, handle: int, parent: int, info: int = 0) -> bytes:
    return TCMSG.pack(socket.AF_UNSPEC, ifindex, handle, parent, info)


class _Clsact:
    """clsact qdiscs this process created, counted by the filters using them; a qdisc that
    was there before is never removed."""

    created: dict[tuple[int, int], int] = {}  # (netns inode, ifindex) -> filters using it
    lock = threading.Lock()

    @classmethod
    def hold(cls, rtnl: _Rtnl, ifindex: int) -> bool:
        """Make sure ``ifindex`` has a clsact qdisc; True if it is one corepy created (and
        now holds a reference to)."""
        key = (rtnl.netns, ifindex)
        with cls.lock:
            if key in cls.created:
                cls.created[key] += 1
                return True
            try:
                rtnl.request(RTM_NEWQDISC, NLM_F_CREATE | NLM_F_EXCL,
                              _tcmsg(ifindex, _tc_h(TC_H_CLSACT, 0), TC_H_CLSACT) + _attr(TCA_KIND, b"clsact\0"),
                              f"create clsact qdisc on ifindex {ifindex}")
            except SyscallError as e:
                if e.errno != errno.EEXIST:
                    raise
                return False
            cls.created[key] = 1
            return True

    @classmethod
    def release(cls, rtnl: _Rtnl, ifindex: int) -> None:
        key = (rtnl.netns, ifindex)
        with cls.lock:
            cls.created[key] -= 1
            if cls.created[key]:
                return
            del cls.created[key]
            try:
                rtnl.request(RTM_DELQDISC, 0, _tcmsg(ifindex, _tc_h(TC_H_CLSACT, 0), TC_H_CLSACT),
                              f"delete clsact qdisc on ifindex {ifindex}")
            except SyscallError as e:
                if e.errno not in (errno.ENOENT, errno.ENODEV):  # gone with its device
                    raise


class TcAttachment(Link):
    """A direct-action ``bpf`` tc filter on a ``clsact`` qdisc; ``close()`` deletes the filter
    (and the qdisc, if corepy created it and no other corepy filter uses it)."""

    def __init__(self, rtnl: _Rtnl, ifindex: int, parent: int, handle: int, priority: int, *, owns_qdisc: bool,
                 program: Program, target: str):
        super().__init__(None, program=program, target=target)
        self._rtnl = rtnl
        self._filter: tuple[int, int, int, int] | None = (ifindex, parent, handle, priority)
        self._owns_qdisc = owns_qdisc

    @property
    def fd(self) -> int:
        raise NotSupportedError("a link fd for netlink tc filters", "tc filters are not bpf_links")

    @property
    def closed(self) -> bool:
        return self._filter is None

    def close(self) -> None:
        flt, self._filter = self._filter, None
        if flt is None:
            return
        ifindex, parent, handle, priority = flt
        try:
            self._rtnl.request(RTM_DELTFILTER, 0, _tcmsg(ifindex, handle, parent, _filter_info(priority))
                               + _attr(TCA_KIND, b"bpf\0"),
                               f"delete bpf filter {handle} prio {priority} on ifindex {ifindex}")
        except SyscallError as e:
            if e.errno not in (errno.ENOENT, errno.ENODEV):  # gone with its device
                raise
        finally:
            try:
                if self._owns_qdisc:
                    _Clsact.release(self._rtnl, ifindex)
            finally:
                self._rtnl.close()

    def detach(self) -> None:
        self.close()

    def update(self, program: Program, *, expected: Program | None = None) -> None:
        raise NotSupportedError("updating netlink tc filters", "close and attach again, or use tcx links")

    def pin(self, path: str) -> None:
        raise NotSupportedError("pinning netlink tc filters", "tc filters are not bpf_links")

    def info(self) -> LinkInfo:
        raise NotSupportedError("link info of netlink tc filters", "tc filters are not bpf_links")


def _filter_info(priority: int) -> int:
    """``tcm_info`` of a filter: priority in the high half, protocol (network order) low."""
    return _tc_h(priority << 16, socket.htons(ETH_P_ALL))


def attach_tc_netlink(program: Program, ifindex: int, direction: str = "ingress", *, handle: int = 1,
                      priority: int = 1) -> TcAttachment:
    """Attach a ``SCHED_CLS`` program as a direct-action filter at ``direction`` of ``ifindex``
    (creating the ``clsact`` qdisc if the interface has none)."""
    if direction not in ("ingress", "egress"):
        raise ValueError(f"tc direction must be 'ingress' or 'egress', not {direction!r}")
    parent = _tc_h(TC_H_CLSACT, TC_H_MIN_INGRESS if direction == "ingress" else TC_H_MIN_EGRESS)
    name = f"{program.name}\0".encode()
    options = (_attr(TCA_BPF_FD, struct.pack("=I", program.fd)) + _attr(TCA_BPF_NAME, name)
               + _attr(TCA_BPF_FLAGS, struct.pack("=I", TCA_BPF_FLAG_ACT_DIRECT)))
    body = (_tcmsg(ifindex, handle, parent, _filter_info(priority))
            + _attr(TCA_KIND, b"bpf\0") + _attr(TCA_OPTIONS | NLA_F_NESTED, options))
    rtnl = _Rtnl()
    owns = False
    try:
        owns = _Clsact.hold(rtnl, ifindex)
        rtnl.request(RTM_NEWTFILTER, NLM_F_CREATE | NLM_F_EXCL, body,
                     f"bpf filter {program.name!r} (handle {handle}, prio {priority}) on ifindex {ifindex} {direction}")
    except BaseException:
        try:
            if owns:
                _Clsact.release(rtnl, ifindex)
        finally:
            rtnl.close()
        raise
    return TcAttachment(rtnl, ifindex, parent, handle, priority, owns_qdisc=owns, program=program,
                        target=f"tc {direction} ifindex {ifindex} (netlink, handle {handle} prio {priority})")

