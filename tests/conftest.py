"""Shared test fixtures. Kernel BTFs of other kernels live xz-compressed in fixtures/btf/."""

from __future__ import annotations

import functools
import lzma
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
BTF_DIR = FIXTURES / "btf"
KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")

# name -> file in fixtures/btf ("vmlinux-6.1.0-56" -> vmlinux-6.1.0-56.btf.xz)
OTHER_KERNELS = ["vmlinux-5.10.0-32", "vmlinux-6.1.0-56", "vmlinux-6.12.117", "vmlinux-6.1.0-56-arm64"]
MODULES = {"nf_conntrack-6.1.0-56": "vmlinux-6.1.0-56", "veth-6.1.0-56": "vmlinux-6.1.0-56"}


@functools.cache
def btf_blob(name: str) -> bytes:
    """Uncompressed bytes of fixtures/btf/NAME.btf.xz."""
    return lzma.decompress((BTF_DIR / f"{name}.btf.xz").read_bytes())


@functools.cache
def btf_path(name: str, tmp_root: str | None = None) -> Path:
    """A file path holding the uncompressed blob (cached under the pytest cache dir)."""
    out = ROOT / ".pytest_cache" / "btf" / f"{name}.btf"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_bytes(btf_blob(name))
        tmp.rename(out)
    return out


def fixture_obj(name: str) -> Path:
    """fixtures/NAME.bpf.o"""
    return FIXTURES / f"{name}.bpf.o"


def open_fds() -> dict[int, str]:
    """This process's open file descriptors and what they point to."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the listing's own descriptor, closed by now
    return fds


@pytest.fixture
def no_fd_leak():
    """Fails the test if it leaves file descriptors open (the running kernel's BTF, opened once
    per process and kept, is opened before counting)."""
    from corepy.btf import BTF

    BTF.kernel()
    before = open_fds()
    yield
    leaked = {fd: target for fd, target in open_fds().items() if before.get(fd) != target}
    assert not leaked, f"file descriptors left open: {leaked}"


requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (CAP_BPF/CAP_PERFMON/CAP_NET_ADMIN)")


# --- tests leave nothing behind: pins, links, network namespaces ------------------------------

def _kernel_leftovers() -> set[str]:
    found: set[str] = set()
    for top in ("/sys/fs/bpf", "/run/netns"):
        if os.path.isdir(top):
            for dirpath, dirnames, filenames in os.walk(top):
                found.update(os.path.join(dirpath, n) for n in dirnames + filenames
                             if n not in ("maps.debug", "progs.debug"))
    if os.geteuid() == 0:
        from corepy.syscalls.objects import get_next_id

        link_id = 0
        while (link_id := get_next_id("link", link_id)) is not None:
            found.add(f"bpf link id {link_id}")
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._corepy_leftovers = _kernel_leftovers()  # type: ignore[attr-defined]
    # BTF.kernel() caches the kernel BTF's type offsets on disk (corepy.btf.strings.cache_dir):
    # the tests' processes (and the interpreters they start) write theirs into a private directory
    import tempfile

    if "COREPY_CACHE_DIR" not in os.environ:
        cache = tempfile.mkdtemp(prefix="corepy-test-cache-")
        os.environ["COREPY_CACHE_DIR"] = cache
        session.config._corepy_cache_dir = cache  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    cache = getattr(session.config, "_corepy_cache_dir", None)
    if cache is not None:
        import shutil

        shutil.rmtree(cache, ignore_errors=True)
        os.environ.pop("COREPY_CACHE_DIR", None)
    before = getattr(session.config, "_corepy_leftovers", None)
    if before is None or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    new = sorted(_kernel_leftovers() - before)
    if new:
        print(f"\nERROR: the tests left {len(new)} kernel objects behind: {', '.join(new[:20])}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
