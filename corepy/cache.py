"""corepy's on-disk caches: where they live, their keys, and private atomic files.

Three kinds of entries: the kernel BTF's type offsets and name index (:mod:`corepy.btf.strings`),
CO-RE relocation results (:mod:`corepy.object.core_cache`), and the running kernel BTF's digest
remembered per boot (:func:`kernel_btf_digest`: that blob cannot change before the next boot, so
later processes skip its ~3 ms of checksums). All are optimisations: a missing, unreadable or
foreign entry is ignored, a failed write is forgotten.

Entries live under :func:`cache_dir` with mode 0600 and are read only when owned by the current
user and not writable by others; each starts with its format's magic and a CRC-32 of the rest
(:func:`write_entry`, :func:`read_entry`). Blobs are keyed by their size and :func:`blob_digest`.
"""

from __future__ import annotations

import marshal
import os
import zlib

__all__ = ["cache_dir", "blob_digest", "read_entry", "write_entry", "kernel_btf_digest",
           "remember_kernel_btf_digest", "enabled", "entries", "clear"]

KERNEL_BTF_PATH = "/sys/kernel/btf/vmlinux"
_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
_KERNEL_KEY_MAGIC = b"corepy-kernel-btf-key\0"
_KERNEL_KEY_VERSION = 1


def enabled() -> bool:
    """False when ``COREPY_BTF_CACHE=0`` turns every cache off."""
    return os.environ.get("COREPY_BTF_CACHE", "") != "0"


def cache_dir() -> str:
    """``$COREPY_CACHE_DIR``; for root /run/corepy (a tmpfs emptied at boot, as the running
    kernel's BTF changes only then, and not a user's home that sudo kept); else the user's
    cache directory (``$XDG_CACHE_HOME/corepy`` or ``~/.cache/corepy``)."""
    explicit = os.environ.get("COREPY_CACHE_DIR")
    if explicit:
        return explicit
    if os.geteuid() == 0 and os.path.isdir("/run"):
        return "/run/corepy"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "corepy")


def blob_digest(blob: bytes | memoryview) -> bytes:
    """The cache key of a blob (with its size): its CRC-32 and Adler-32, 64 bits from two
    independent checksums (~2.5 ms for vmlinux, zlib already loaded, where ``hashlib`` alone takes
    ~3 ms to import before SHA-256's ~3 ms). Two different blobs of one size share a key by
    accident with odds of ~2^-64; a cryptographic hash would add protection only against someone
    able to write the user's private cache directory, who could do worse there anyway."""
    return zlib.crc32(blob).to_bytes(4, "little") + zlib.adler32(blob).to_bytes(4, "little")


def read_entry(name: str, magic: bytes) -> memoryview | None:
    """The payload of the cache file ``name`` written by :func:`write_entry` with ``magic``, or
    None if missing, unreadable, a symlink, not the current user's, writable by others, of
    another format or damaged."""
    data = _read_private(name)
    if data is None or not data.startswith(magic):
        return None
    payload = memoryview(data)[len(magic) + 4 :]
    if zlib.crc32(payload) != int.from_bytes(data[len(magic) : len(magic) + 4], "little"):
        return None
    return payload


def write_entry(name: str, magic: bytes, payload: bytes) -> None:
    """Replace the cache file ``name`` atomically (mode 0600) with ``magic``, the CRC-32 of
    ``payload`` and ``payload``; errors are ignored (the caches are optimisations)."""
    _write_private(name, magic + zlib.crc32(payload).to_bytes(4, "little") + payload)


def _read_private(name: str) -> bytes | None:
    try:
        fd = os.open(os.path.join(cache_dir(), name), os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError:
        return None
    finally:
        os.close(fd)


def _write_private(name: str, data: bytes) -> None:
    # a uniquely named temporary file, created exclusively (O_EXCL, no symlink followed), then
    # renamed over the entry: readers see the old file or the new one (``tempfile`` would cost
    # ~4 ms of imports: shutil, bz2, lzma, random)
    directory = cache_dir()
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.urandom(6).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, os.path.join(directory, name))
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def _kernel_btf_identity() -> tuple[str, int, int, int, int] | None:
    """This boot's id and the kernel BTF file's (device, inode, size, mtime), or None."""
    try:
        with open(_BOOT_ID_PATH, "rb") as f:
            boot_id = f.read().strip().decode("ascii", "replace")
        st = os.stat(KERNEL_BTF_PATH)
    except OSError:
        return None
    return boot_id, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def kernel_btf_digest() -> bytes | None:
    """The running kernel BTF's :func:`blob_digest` as remembered earlier in this boot (by
    :func:`remember_kernel_btf_digest`), or None. Checked against the boot id and the file's
    identity, so another boot or a file mounted over it is never taken for the one remembered."""
    data = read_entry("kernel-btf.key", _KERNEL_KEY_MAGIC)
    identity = _kernel_btf_identity()
    if data is None or identity is None:
        return None
    try:
        version, remembered, digest = marshal.loads(data)
    except (ValueError, EOFError, TypeError):
        return None
    if version != _KERNEL_KEY_VERSION or remembered != identity or not isinstance(digest, bytes):
        return None
    return digest


def remember_kernel_btf_digest(digest: bytes, size: int) -> None:
    """Remember the running kernel BTF's digest (of its ``size`` bytes) for this boot."""
    identity = _kernel_btf_identity()
    if identity is not None and identity[3] == size:
        write_entry("kernel-btf.key", _KERNEL_KEY_MAGIC, marshal.dumps((_KERNEL_KEY_VERSION, identity, digest)))


_KINDS = (("btf-", ".idx", "kernel BTF type offsets (and name index)"),
          ("core-", ".rel", "CO-RE results of one object"),
          ("kernel-btf", ".key", "kernel BTF digest of this boot"),
          (".tmp-", "", "unfinished write"))


def entries() -> list[tuple[str, str, int]]:
    """(file name, what it holds, size in bytes) of each corepy cache file in :func:`cache_dir`."""
    try:
        with os.scandir(cache_dir()) as found:
            files = sorted((e.name, e.stat(follow_symlinks=False).st_size) for e in found if e.is_file())
    except OSError:
        return []
    return [(name, kind, size) for name, size in files
            for prefix, suffix, kind in _KINDS if name.startswith(prefix) and name.endswith(suffix)]


def clear() -> int:
    """Remove every corepy cache file (nothing else) from :func:`cache_dir`; how many were removed."""
    removed = 0
    for name, _kind, _size in entries():
        try:
            os.unlink(os.path.join(cache_dir(), name))
            removed += 1
        except FileNotFoundError:
            pass
    return removed
