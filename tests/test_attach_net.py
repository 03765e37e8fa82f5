"""Network attach kinds on the real kernel: socket filters, XDP and tcx links on a veth pair
inside a test-owned network namespace, cgroup_skb links on a test-owned cgroup."""

from __future__ import annotations

import ctypes
import json
import os
import socket
import subprocess
import sys
import uuid

import pytest

from conftest import requires_root
from test_programs import array_map, counter_program, open_fds, read_counter

pytestmark = requires_root

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _load(insns, prog_type, name, **kw):
    from corepy.programs import load_program

    return load_program(insns, name=name, prog_type=prog_type, **kw)


# --- socket filter ----------------------------------------------------------

def _udp_pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return rx, tx


def test_socket_filter_counts_and_detaches():
    from corepy.syscalls.uapi import ProgType

    before = open_fds()
    rx, tx = _udp_pair()
    with rx, tx, array_map() as counts, array_map("counts2") as counts2:
        keep_all = -1  # a socket filter returns how many bytes to keep
        with _load(counter_program(counts.fileno(), retval=keep_all), ProgType.SOCKET_FILTER, "sockf") as prog, \
                _load(counter_program(counts2.fileno(), retval=keep_all), ProgType.SOCKET_FILTER, "sockf2") as prog2:
            link = prog.attach_socket(rx)
            for i in range(5):
                tx.sendto(b"ping%d" % i, rx.getsockname())
                assert rx.recv(64) == b"ping%d" % i
            assert read_counter(counts) == 5
            link.update(prog2)  # SO_ATTACH_BPF again replaces the filter
            tx.sendto(b"x", rx.getsockname())
            assert rx.recv(64) == b"x"
            assert (read_counter(counts), read_counter(counts2)) == (5, 1)
            link.close()
            assert link.closed
            tx.sendto(b"y", rx.getsockname())
            assert rx.recv(64) == b"y"
            assert (read_counter(counts), read_counter(counts2)) == (5, 1)
            link.close()  # idempotent
    assert open_fds() == before


def test_socket_filter_can_drop():
    from corepy.syscalls.uapi import ProgType

    rx, tx = _udp_pair()
    with rx, tx, array_map() as counts:
        with _load(counter_program(counts.fileno(), retval=0), ProgType.SOCKET_FILTER, "drop") as prog:
            with prog.attach_socket(rx):
                tx.sendto(b"dropped", rx.getsockname())
                rx.settimeout(0.2)
                with pytest.raises(socket.timeout):
                    rx.recv(64)
                assert read_counter(counts) == 1
            rx.settimeout(2)
            tx.sendto(b"kept", rx.getsockname())
            assert rx.recv(64) == b"kept"


# --- a veth pair in a private network namespace --------------------------------

class NetNS:
    """``ip netns`` namespace with veth pair a <-> b (10.201.0.1/24 on a, .2 on b), IPv6 off;
    ``inside()`` switches the calling thread into it for a ``with`` block."""

    def __init__(self):
        self.name = f"corepy-{uuid.uuid4().hex[:10]}"
        self.a, self.b = "cpa0", "cpb0"
        self._ip("netns", "add", self.name)
        try:
            for cmd in (["link", "add", self.a, "type", "veth", "peer", "name", self.b],
                        ["addr", "add", "10.201.0.1/24", "dev", self.a],
                        ["addr", "add", "10.201.0.2/24", "dev", self.b],
                        ["link", "set", self.a, "up"], ["link", "set", self.b, "up"], ["link", "set", "lo", "up"]):
                self._ip("-n", self.name, *cmd)
            self.exec("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            # 10.201.0.3 "lives" behind a: packets for it leave b and arrive at a
            mac = json.loads(subprocess.run(["ip", "-j", "-n", self.name, "link", "show", self.a], check=True,
                                            capture_output=True, text=True).stdout)[0]["address"]
            self._ip("-n", self.name, "neigh", "add", "10.201.0.3", "lladdr", mac, "dev", self.b)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def exec(self, *cmd):
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], check=True, capture_output=True, text=True)

    def inside(self):
        return _InNetns(f"/run/netns/{self.name}")

    def send_udp(self, count: int, dest: str = "10.201.0.3"):
        """``count`` UDP datagrams out of b towards a, from a socket made inside the netns."""
        with self.inside():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.b.encode())
            for i in range(count):
                s.sendto(b"corepy%d" % i, (dest, 9999))

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _InNetns:
    def __init__(self, path):
        self.path = path

    def __enter__(self):
        self.orig = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(self.path, os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(target)

    def __exit__(self, *exc):
        try:
            if _libc.setns(self.orig, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
        finally:
            os.close(self.orig)


@pytest.fixture
def netns():
    if not os.path.exists("/usr/sbin/ip") and not os.path.exists("/sbin/ip"):
        pytest.skip("iproute2 (ip) not installed")
    with NetNS() as ns:
        yield ns
    assert not os.path.exists(f"/run/netns/{ns.name}")


XDP_PASS = 2


@pytest.mark.parametrize("mode", ["default", "generic", "native"])  # veth has native XDP
def test_xdp_link_counts_packets_update_detach(netns, mode):
    from corepy.attach.net import XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE
    from corepy.syscalls.uapi import LinkType, ProgType

    before = open_fds()
    with array_map() as counts, array_map("counts2") as counts2, \
            _load(counter_program(counts.fileno(), retval=XDP_PASS), ProgType.XDP, "xdp_count") as prog, \
            _load(counter_program(counts2.fileno(), retval=XDP_PASS), ProgType.XDP, "xdp_count2") as prog2:
        with netns.inside():
            link = prog.attach_xdp(netns.a, flags={"default": 0, "generic": XDP_FLAGS_SKB_MODE,
                                                   "native": XDP_FLAGS_DRV_MODE}[mode])
            ifindex = socket.if_nametoindex(netns.a)
        with link:
            info = link.info()
            assert info.type == LinkType.XDP and info.prog_id == prog.info().id
            assert info.details["ifindex"] == ifindex
            shown = netns.exec("ip", "link", "show", netns.a).stdout
            assert ("xdpgeneric" in shown) == (mode == "generic"), shown
            netns.send_udp(10)
            assert read_counter(counts) >= 10
            seen = read_counter(counts)
            link.update(prog2)
            assert link.info().prog_id == prog2.info().id
            netns.send_udp(3)
            assert read_counter(counts2) >= 3 and read_counter(counts) == seen
            link.detach()  # the fd stays open, the program is off the interface
            assert "xdp" not in netns.exec("ip", "link", "show", netns.a).stdout
            after_detach = read_counter(counts2)
            netns.send_udp(5)
            assert read_counter(counts2) == after_detach
            assert read_counter(counts) == seen
        assert link.closed
    assert open_fds() == before


def test_tcx_ingress_and_egress(netns):
    from corepy.syscalls import features
    from corepy.syscalls.uapi import LinkType, ProgType

    if not features.has_link_type(LinkType.TCX):
        pytest.skip(f"tcx: {features.feature_reason('link_type', LinkType.TCX)}")
    with array_map() as ingress_counts, array_map("egress") as egress_counts, \
            _load(counter_program(ingress_counts.fileno(), retval=0), ProgType.SCHED_CLS, "tcx_in") as p_in, \
            _load(counter_program(egress_counts.fileno(), retval=0), ProgType.SCHED_CLS, "tcx_out") as p_out:
        with netns.inside():
            l_in = p_in.attach_tcx(netns.a, "ingress")
            l_out = p_out.attach_tcx(netns.b, "egress")
        with l_in, l_out:
            info = l_in.info()
            assert info.type == LinkType.TCX and info.details["attach_type"].name == "TCX_INGRESS"
            netns.send_udp(4)
            assert read_counter(ingress_counts) >= 4
            assert read_counter(egress_counts) >= 4
            l_in.update(p_out)  # now the egress counter program also runs at a's ingress
            before_out = read_counter(egress_counts)
            netns.send_udp(2)
            assert read_counter(egress_counts) >= before_out + 4
            l_in.update(p_in, expected=p_out)
        in_seen, out_seen = read_counter(ingress_counts), read_counter(egress_counts)
        netns.send_udp(4)
        assert (read_counter(ingress_counts), read_counter(egress_counts)) == (in_seen, out_seen)


# --- cgroup_skb ------------------------------------------------------------------

def _cgroup2_root() -> str | None:
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype, *_ = line.split()
            if fstype == "cgroup2":
                return mnt
    return None


@pytest.fixture
def test_cgroup():
    root = _cgroup2_root()
    if root is None:
        pytest.skip("no cgroup2 hierarchy mounted (/proc/self/mounts)")
    path = os.path.join(root, f"corepy-{uuid.uuid4().hex[:10]}")
    os.mkdir(path)
    try:
        yield path
    finally:
        os.rmdir(path)


SENDER = """
import os, socket, sys
with open(sys.argv[1] + "/cgroup.procs", "w") as f:
    f.write(str(os.getpid()))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[2])):
    s.sendto(b"x", ("127.0.0.1", 9))
"""


def test_cgroup_skb_egress_link(test_cgroup):
    from corepy.syscalls.uapi import AttachType, LinkType, ProgType

    before = open_fds()
    with array_map() as counts, _load(counter_program(counts.fileno(), retval=1), ProgType.CGROUP_SKB, "cg_egress",
                                      expected_attach_type=AttachType.CGROUP_INET_EGRESS) as prog:
        with prog.attach_cgroup(test_cgroup) as link:
            info = link.info()
            assert info.type == LinkType.CGROUP
            assert info.details["attach_type"] == AttachType.CGROUP_INET_EGRESS
            subprocess.run([sys.executable, "-c", SENDER, test_cgroup, "7"], check=True)
            assert read_counter(counts) == 7
            with array_map("other") as other, _load(counter_program(other.fileno(), retval=1), ProgType.CGROUP_SKB,
                                                    "cg_other", expected_attach_type=AttachType.CGROUP_INET_EGRESS
                                                    ) as prog2:
                link.update(prog2)
                subprocess.run([sys.executable, "-c", SENDER, test_cgroup, "2"], check=True)
                assert (read_counter(counts), read_counter(other)) == (7, 2)
                link.update(prog, expected=prog2)
        subprocess.run([sys.executable, "-c", SENDER, test_cgroup, "3"], check=True)
        assert read_counter(counts) == 7
    assert open_fds() == before


def test_cgroup_attach_errors_are_named():
    from corepy.errors import SyscallError
    from corepy.syscalls.uapi import AttachType, ProgType

    with array_map() as counts, _load(counter_program(counts.fileno(), retval=1), ProgType.CGROUP_SKB, "cg",
                                      expected_attach_type=AttachType.CGROUP_INET_INGRESS) as prog:
        with pytest.raises(SyscallError, match="corepy-no-such-cgroup"):
            prog.attach_cgroup("/sys/fs/cgroup/corepy-no-such-cgroup")
        with pytest.raises(SyscallError, match="corepy-no-such-if"):
            prog.attach_xdp("corepy-no-such-if")


def test_net_fixture_programs_on_veth_socket_and_cgroup(netns, test_cgroup):
    """fixtures/net.bpf.o through the object layer: xdp + tcx ingress on a, tcx egress on b,
    a socket filter and cgroup_skb egress; each counts into its slot of ``counts``."""
    from corepy.btf import BTF
    from corepy.syscalls import features
    from corepy.syscalls.uapi import LinkType
    from test_programs import closing, load_fixture

    BTF.kernel()
    before = open_fds()
    progs, fds, _ = load_fixture("net")
    try:
        assert {"xdp_pass", "tc_pass", "socket_count", "cgroup_ingress", "cgroup_egress"} <= set(progs)
        links = []
        with netns.inside():
            links.append(progs["xdp_pass"].attach_xdp(netns.a))
            if features.has_link_type(LinkType.TCX):
                links.append(progs["tcx_ingress"].attach_tcx(netns.a))  # direction from SEC("tcx/ingress")
                links.append(progs["tcx_egress"].attach_tcx(netns.b))
        links.append(progs["cgroup_egress"].attach_cgroup(test_cgroup))
        rx, tx = _udp_pair()
        with rx, tx:
            links.append(progs["socket_count"].attach_socket(rx))
            try:
                netns.send_udp(6)
                subprocess.run([sys.executable, "-c", SENDER, test_cgroup, "4"], check=True)
                tx.sendto(b"hello", rx.getsockname())
                assert rx.recv(16) == b"hello"
            finally:
                for link in links:
                    link.close()
        counts = [read_counter(fds["counts"], i) for i in range(8)]
        assert counts[0] >= 6  # xdp on a
        if features.has_link_type(LinkType.TCX):
            assert counts[2] >= 6 and counts[3] >= 6
        assert counts[4] == 1  # the socket saw one datagram
        assert counts[6] == 4  # cgroup egress: the sender's 4 datagrams
    finally:
        closing(progs, fds)
    assert open_fds() == before


def test_network_programs_are_not_auto_attached():
    """SEC("xdp"), SEC("tc"), SEC("socket"), SEC("cgroup_skb/...") name no target: attach()
    refuses clearly, and the collection's auto-attach skips them."""
    from corepy.attach import auto_attach
    from corepy.errors import ObjectError
    from test_programs import closing, load_fixture

    progs, fds, _ = load_fixture("net")
    try:
        for prog in progs.values():
            assert auto_attach(prog) is None
            with pytest.raises(ObjectError, match="explicit attach_"):
                prog.attach()
    finally:
        closing(progs, fds)


def test_cgroup_without_links_uses_prog_attach(test_cgroup):
    """The pre-5.7 path (BPF_PROG_ATTACH + BPF_PROG_DETACH), forced here."""
    from corepy.attach.net import attach_cgroup
    from corepy.links import ProgAttachment
    from corepy.syscalls.links import prog_query
    from corepy.syscalls.uapi import AttachType, ProgType

    before = open_fds()
    with array_map() as counts, _load(counter_program(counts.fileno(), retval=1), ProgType.CGROUP_SKB, "cg_legacy",
                                      expected_attach_type=AttachType.CGROUP_INET_EGRESS) as prog:
        with attach_cgroup(prog, test_cgroup, use_link=False) as att:
            assert isinstance(att, ProgAttachment)
            cg = os.open(test_cgroup, os.O_RDONLY | os.O_DIRECTORY)
            try:
                assert prog_query(cg, AttachType.CGROUP_INET_EGRESS).prog_ids == [prog.info().id]
                subprocess.run([sys.executable, "-c", SENDER, test_cgroup, "3"], check=True)
                assert read_counter(counts) == 3
                att.close()
                assert prog_query(cg, AttachType.CGROUP_INET_EGRESS).prog_ids == []
            finally:
                os.close(cg)
        subprocess.run([sys.executable, "-c", SENDER, test_cgroup, "3"], check=True)
        assert read_counter(counts) == 3
    assert open_fds() == before


def test_tc_through_netlink_clsact(netns):
    """The pre-tcx path (forced): clsact qdisc + direct-action bpf filter via rtnetlink;
    closing removes the filter and the qdisc corepy created."""
    from corepy.attach.net import attach_tcx
    from corepy.attach.tc_netlink import TcAttachment
    from corepy.syscalls.uapi import ProgType

    before = open_fds()
    with array_map() as ingress, array_map("egress") as egress, \
            _load(counter_program(ingress.fileno(), retval=0), ProgType.SCHED_CLS, "tc_in") as p_in, \
            _load(counter_program(egress.fileno(), retval=0), ProgType.SCHED_CLS, "tc_out") as p_out:
        with netns.inside():
            a_in = attach_tcx(p_in, netns.a, "ingress", use_tcx=False)
            b_out = attach_tcx(p_out, netns.b, "egress", use_tcx=False)
        with a_in, b_out:
            assert isinstance(a_in, TcAttachment)
            shown = netns.exec("tc", "filter", "show", "dev", netns.a, "ingress").stdout
            assert "tc_in" in shown and "direct-action" in shown
            assert "clsact" in netns.exec("tc", "qdisc", "show", "dev", netns.a).stdout
            netns.send_udp(5)
            assert read_counter(ingress) >= 5 and read_counter(egress) >= 5
        assert netns.exec("tc", "filter", "show", "dev", netns.a, "ingress").stdout.strip() == ""
        assert "clsact" not in netns.exec("tc", "qdisc", "show", "dev", netns.a).stdout
        seen = read_counter(ingress)
        netns.send_udp(3)
        assert read_counter(ingress) == seen
    assert open_fds() == before


def test_tc_netlink_errors_are_named(netns):
    from corepy.attach.net import attach_tcx
    from corepy.errors import SyscallError
    from corepy.syscalls.uapi import ProgType

    with array_map() as counts, _load(counter_program(counts.fileno(), retval=0), ProgType.SCHED_CLS, "tc_x") as p:
        with netns.inside():
            first = attach_tcx(p, netns.a, "ingress", use_tcx=False)
            try:
                with pytest.raises(SyscallError, match="rtnetlink.*EEXIST.*tc_x"):
                    attach_tcx(p, netns.a, "ingress", use_tcx=False)  # same handle and priority
            finally:
                first.close()
        assert "clsact" not in netns.exec("tc", "qdisc", "show", "dev", netns.a).stdout
