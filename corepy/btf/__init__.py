"""BTF: parse, model, write and dump the BPF Type Format. Pure: no syscalls."""

from .ext import BTFExt
from .spec import BTF
from .types import Kind, essential_name

__all__ = ["BTF", "BTFExt", "Kind", "essential_name"]
