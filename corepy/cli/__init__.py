"""The ``corepy`` command line. Each subcommand lives in its own module,
imported only when used, exposing ``add_arguments(parser)`` and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "btf": ("corepy.cli.btf", "inspect and dump BTF (raw like bpftool, or C: vmlinux.h)"),
    "explain": ("corepy.cli.explain", "show every CO-RE relocation of an object against a BTF"),
    "check": ("corepy.cli.check", "offline compatibility matrix of an object against kernel BTFs"),
    "info": ("corepy.cli.info", "facts about the running kernel: BTF, features"),
    "cache": ("corepy.cli.cache", "list or clear the on-disk caches (kernel BTF offsets, CO-RE results)"),
    "skeleton": ("corepy.cli.skeleton", "generate a Python skeleton class from a .bpf.o"),
}


def main(argv: list[str] | None = None) -> int:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="corepy", description="pure-Python eBPF CO-RE loader")
    parser.add_argument("--version", action="version", version=f"corepy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    # Import only the module of the command asked for (start-up time matters).
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        if name == wanted:
            try:
                importlib.import_module(module).add_arguments(p)
            except ModuleNotFoundError as e:
                if e.name != module:
                    raise
                parser.error(f"command {name!r} is not available in this build")
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from ..errors import CorepyError

    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except CorepyError as e:
        print(f"corepy {args.command}: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
