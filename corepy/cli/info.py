"""``corepy info``: the running kernel as corepy sees it — BTF and probed features."""

from __future__ import annotations

import argparse
import os
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--features", action="store_true", help="also probe map, program and link types")


def run(args: argparse.Namespace) -> int:
    from .. import __version__
    from ..btf import BTF

    print(f"corepy {__version__} on Linux {os.uname().release} ({os.uname().machine})")
    t0 = time.perf_counter()
    btf = BTF.kernel()
    ms = (time.perf_counter() - t0) * 1e3
    print(f"kernel BTF: /sys/kernel/btf/vmlinux, {len(btf) - 1} types, {btf.byte_order}-endian, opened in {ms:.1f} ms")
    task = btf.find_one("task_struct")
    print(f"  struct task_struct: {task.size} bytes, {len(task.members)} members")
    if os.geteuid() != 0:
        print("not root: kernel feature probes need CAP_BPF (skipped)")
        return 0
    from ..syscalls import features
    from ..syscalls.uapi import LinkType, MapType, ProgType

    print("BTF features: " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in features.btf_features().items()))
    if args.features:
        for title, enum_type, fn in (
            ("map types", MapType, features.has_map_type),
            ("program types", ProgType, features.has_prog_type),
            ("link types", LinkType, features.has_link_type),
        ):
            yes, no = [], []
            for member in enum_type:
                if member.value == 0 and member.name.lower() in ("unspec", "unspecified"):
                    continue
                try:
                    (yes if fn(member) else no).append(member.name.lower())
                except ValueError:  # no cheap probe for this one
                    continue
            print(f"{title}: {len(yes)} supported: {', '.join(yes)}")
            print(f"  missing: {', '.join(no) or 'none'}")
    return 0
