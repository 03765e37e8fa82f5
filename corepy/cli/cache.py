"""``corepy cache``: what corepy keeps on disk (:mod:`corepy.cache`), and clearing it."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clear", action="store_true", help="remove corepy's cache files")


def run(args: argparse.Namespace) -> int:
    from .. import cache

    where = cache.cache_dir()
    if args.clear:
        print(f"{where}: removed {cache.clear()} file(s)")
        return 0
    found = cache.entries()
    state = "off (COREPY_BTF_CACHE=0)" if not cache.enabled() else "on"
    print(f"{where}: {len(found)} file(s), {sum(size for *_, size in found) / 1024:.0f} KiB; caching {state}")
    for name, kind, size in found:
        print(f"  {name:<40} {size / 1024:>8.1f} KiB  {kind}")
    return 0
