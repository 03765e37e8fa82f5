"""The ELF object layer: parse a clang-built ``.bpf.o`` into editable specs and link programs. Pure.

``ObjectSpec.from_file(path)`` gives programs, maps, global variables and externs;
:func:`relocate_core`, :func:`resolve_externs` and :func:`.link.link` turn a program into
instructions ready for BPF_PROG_LOAD (the loader patches in map fds). (``link`` is not exported
here: the name is its module's, which importing it binds on this package.)
"""

from __future__ import annotations

from .._lazy import lazy_exports

_LAZY = {
    "ObjectSpec": "spec", "ProgramSpec": "spec", "MapSpec": "spec", "VariableSpec": "spec",
    "ExternSpec": "spec", "ExternKind": "spec", "KconfigType": "spec", "Function": "spec",
    "Reloc": "spec", "RelocKind": "spec",
    "parse_section": "sections", "Section": "sections", "SectionDef": "sections", "SecFlag": "sections",
    "kernel_btf_target": "sections",
    "internal_map_name": "parse",
    "LinkedProgram": "link", "MapRef": "link", "FUNC_INFO": "link", "LINE_INFO": "link",
    "relocate_core": "core", "CoreRecord": "core",
    "resolve_externs": "externs", "ResolvedExterns": "externs", "ExternValue": "externs",
    "parse_kconfig": "kconfig", "read_kconfig": "kconfig", "kernel_version": "kconfig",
    "parse_kallsyms": "kallsyms", "read_kallsyms": "kallsyms", "Kallsyms": "kallsyms",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
