"""Kernel configuration for ``__kconfig`` externs: parse ``CONFIG_X=value`` text, find the running
kernel's config, compute ``LINUX_KERNEL_VERSION`` as libbpf does."""

from __future__ import annotations

import gzip
import os

from ..errors import ObjectError

__all__ = ["parse_kconfig", "read_kconfig", "kernel_version", "kconfig_paths"]


def kconfig_paths(release: str | None = None) -> list[str]:
    """Where libbpf looks: ``/boot/config-$(uname -r)``, then ``/proc/config.gz``."""
    release = release or os.uname().release
    return [f"/boot/config-{release}", "/proc/config.gz"]


def parse_kconfig(text: str, *, source: str = "<kconfig>") -> dict[str, str]:
    """``CONFIG_X=value`` lines -> ``{"CONFIG_X": "value"}`` (values raw: ``y``, ``m``, ``"str"``,
    ``0x10``); comments and blank lines skipped; ObjectError on a CONFIG_ line with no value."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line.startswith("CONFIG_"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ObjectError(f"{source}:{n}: failed to parse {line!r}: no separator")
        if not value:
            raise ObjectError(f"{source}:{n}: failed to parse {line!r}: no value")
        out[name] = value
    return out


def read_kconfig(path: str | None = None) -> dict[str, str]:
    """The running kernel's config (or ``path``, gzip or plain). ObjectError if none is readable."""
    paths = [path] if path else kconfig_paths()
    errors = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                data = f.read()
        except OSError as e:
            errors.append(f"{p}: {e.strerror}")
            continue
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as e:
                raise ObjectError(f"{p}: corrupt gzip kernel config: {e}") from None
        return parse_kconfig(data.decode("utf-8", "replace"), source=p)
    raise ObjectError("failed to open system Kconfig (" + "; ".join(errors) + ")")


def kernel_version(release: str | None = None, version: str | None = None) -> int:
    """libbpf's ``get_kernel_version``: KERNEL_VERSION(major, minor, min(patch, 255)).

    With no arguments, of the running kernel: Ubuntu's ``/proc/version_signature`` first, then
    a Debian ``uname -v`` ("... Debian 6.1.119-1 ...", whose release string hides the patch
    level), then ``uname -r``. 0 if none gives ``a.b.c``."""
    if release is None and version is None:
        try:
            with open("/proc/version_signature", encoding="utf-8") as f:
                parts = f.read().split()
            found = _abc(parts[2]) if len(parts) >= 3 else None
            if found:
                return _kver(*found)
        except OSError:
            pass
        uts = os.uname()
        release, version = uts.release, uts.version
    if version and "Debian " in version:
        found = _abc(version.split("Debian ", 1)[1])
        if found:
            return _kver(*found)
    found = _abc(release or "")
    return _kver(*found) if found else 0


def _kver(major: int, minor: int, patch: int) -> int:
    return (major << 16) + (minor << 8) + min(patch, 255)


def _abc(text: str) -> tuple[int, int, int] | None:
    """``sscanf(text, "%u.%u.%u")``: three dot-separated leading numbers."""
    nums = []
    rest = text
    for i in range(3):
        digits = ""
        while rest and rest[0].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        if not digits:
            return None
        nums.append(int(digits))
        if i < 2:
            if not rest.startswith("."):
                return None
            rest = rest[1:]
    return nums[0], nums[1], nums[2]
