"""``corepy skeleton OBJ [-o FILE] [--name NAME] [--embed | --path] [--types T,...]``: write a
Python skeleton module for a BPF object (see :mod:`corepy.skeleton`). No kernel needed.

With ``--path`` (the default) the module reads the object from its path relative to the
module's directory (the object's file name when printing to stdout); ``--embed`` puts the
object's bytes in the module instead.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("object", metavar="OBJ", help="a clang-built BPF object (.bpf.o)")
    parser.add_argument("-o", "--output", metavar="FILE", help="write the module here (default: stdout)")
    parser.add_argument("--name", help="object name, as bpftool's: prefixes internal map names and names "
                                       "the <Name>Skeleton class (default: the file name up to its first '.')")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--embed", action="store_true", help="embed the object's bytes in the module")
    where.add_argument("--path", action="store_true",
                       help="read the object from its path relative to the module (default)")
    parser.add_argument("--types", metavar="T,...", default="",
                        help="extra structs/unions (record dataclasses) or enums (IntEnum) to generate, e.g. event")


def run(args: argparse.Namespace) -> int:
    from ..errors import ObjectError
    from ..skeleton import SkeletonSource, generate

    try:
        with open(args.object, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ObjectError(f"cannot read the object: {e.strerror or e}", path=args.object) from e
    display = os.path.basename(args.object)
    out_dir = os.path.dirname(os.path.abspath(args.output)) if args.output else os.getcwd()
    relpath = "" if args.embed else os.path.relpath(os.path.abspath(args.object), out_dir)
    if not args.output and not args.embed:
        relpath = display
    source = SkeletonSource(data, embed=args.embed, relpath=relpath, display=display)
    text = generate(source, name=args.name, types=[t for t in args.types.split(",") if t.strip()])
    if not args.output:
        sys.stdout.write(text)
        return 0
    tmp = args.output + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.output)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise ObjectError(f"cannot write the skeleton: {e.strerror or e}", path=args.output) from e
    return 0
