"""``corepy btf dump FILE [--format raw|c] [--base FILE]``: print a BTF blob as
bpftool does (``raw``), or as a compilable C header (``c``, i.e. vmlinux.h)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="btf_command", metavar="ACTION", required=True)
    dump = sub.add_parser("dump", help="dump the types of a BTF file (raw BTF or an ELF with .BTF)")
    dump.add_argument("file", metavar="FILE", help="e.g. /sys/kernel/btf/vmlinux or prog.bpf.o")
    dump.add_argument("--format", choices=("raw", "c"), default="raw",
                      help="raw: like `bpftool btf dump ... format raw` (default); c: vmlinux.h")
    dump.add_argument("--base", "-B", metavar="FILE",
                      help="base BTF of a split BTF (module BTF); only the split types are dumped")


def run(args: argparse.Namespace) -> int:
    from ..btf.spec import BTF

    base = BTF.from_file(args.base) if args.base else None
    btf = BTF.from_file(args.file, base=base)
    out = sys.stdout
    if args.format == "raw":
        from ..btf.dump_raw import write_raw

        write_raw(btf, out)
    else:
        from ..btf.dump_c import write_c

        write_c(btf, out)
    out.flush()
    return 0
