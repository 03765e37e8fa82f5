"""close_links / Object.detach: every link closed (concurrently, so the kernel's per-link RCU
waits overlap), the first error raised only after all are closed; on the real kernel the
links are gone by id once detach returns."""

from __future__ import annotations

import errno
import os
import threading

import pytest

import corepy
import corepy.btf
from conftest import fixture_obj, requires_root
from corepy.links import Link, close_links
from corepy.syscalls.fd import FD


class _PipeLink(Link):
    """A link owning a real pipe fd; ``barrier`` makes close() wait for the other closers."""

    def __init__(self, barrier: threading.Barrier | None = None, fail: bool = False):
        r, w = os.pipe()
        os.close(w)
        super().__init__(None, target="pipe", owned=(FD(r, "pipe"),))
        self.barrier, self.fail = barrier, fail

    def close(self) -> None:
        super().close()
        if self.barrier is not None:
            self.barrier.wait(timeout=10)  # BrokenBarrierError if the closes ran one after another
        if self.fail:
            raise OSError(errno.EBADF, "close failed")


def test_links_close_concurrently():
    barrier = threading.Barrier(3)
    links = [_PipeLink(barrier) for _ in range(3)]
    close_links(links)
    assert all(link.closed for link in links) and not barrier.broken


def test_every_link_is_closed_before_the_first_error_is_raised():
    links = [_PipeLink(), _PipeLink(fail=True), _PipeLink(), _PipeLink(fail=True), _PipeLink()]
    with pytest.raises(OSError, match="close failed"):
        close_links(links)
    assert all(link.closed for link in links)
    close_links([_PipeLink(fail=False)])
    close_links([])


def test_links_close_without_threads(monkeypatch):
    """At interpreter shutdown no thread can start: the caller closes every link itself."""
    def refuse(self):
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    links = [_PipeLink() for _ in range(4)]
    close_links(links)
    assert all(link.closed for link in links)


@requires_root
def test_detach_leaves_no_link_in_the_kernel():
    from corepy.errors import SyscallError
    from corepy.syscalls.objects import get_fd_by_id

    corepy.btf.BTF.kernel()  # cached for the process (its mapping may hold an fd): not ours to count
    before = len(os.listdir("/proc/self/fd"))
    with corepy.open(fixture_obj("bootstrap"), pin_root=None) as obj:
        obj.load()
        links = list(obj.attach().values())
        ids = [link.info().id for link in links]
        assert len(ids) == 2
        obj.detach()
        assert not obj.links and all(link.closed for link in links)
        for link_id in ids:
            with pytest.raises(SyscallError) as e:
                get_fd_by_id("link", link_id).close()
            assert e.value.errno == errno.ENOENT
    assert len(os.listdir("/proc/self/fd")) == before
