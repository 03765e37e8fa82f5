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


def kernel_version(release: str | None = None) -> int:
    """libbpf's ``get_kernel_version``: KERNEL_VERSION(major, minor, min(patch, 255)) of
    ``release`` (default ``uname -r``); 0 if it does not start with ``a.b.c``."""
    release = release if release is not None else os.uname().release
    parts = []
    for piece in release.split(".", 2):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece) and len(parts) < 3:
            break
    if len(parts) != 3:
        return 0
    major, minor, patch = parts
    return (major << 16) + (minor << 8) + min(patch, 255)
