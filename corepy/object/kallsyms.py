"""``/proc/kallsyms`` for typeless ``__ksym`` externs: name -> address."""

from __future__ import annotations

__all__ = ["Kallsyms", "parse_kallsyms", "read_kallsyms"]


class Kallsyms(dict):
    """``{name: address}``; names seen with different addresses are listed in :attr:`ambiguous`.
    Module symbols (``name [module]``) are included under their plain name. Data symbols
    (type ``d``) with an ``.llvm.<hash>`` suffix are keyed without it, as libbpf matches them."""

    def __init__(self) -> None:
        super().__init__()
        self.ambiguous: dict[str, set[int]] = {}


def parse_kallsyms(text: str) -> Kallsyms:
    """Parse kallsyms text (``ffffffff81000000 T _stext``); unparsable lines are skipped."""
    out = Kallsyms()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        try:
            addr = int(parts[0], 16)
        except ValueError:
            continue
        sym_type, name = parts[1], parts[2]
        if sym_type == "d" and ".llvm." in name:
            name = name[:name.index(".llvm.")]
        prev = out.get(name)
        if prev is None:
            out[name] = addr
        elif prev != addr:
            out.ambiguous.setdefault(name, {prev}).add(addr)
    return out


def read_kallsyms(path: str = "/proc/kallsyms") -> Kallsyms:
    """Read and parse kallsyms (addresses are zero without CAP_SYSLOG)."""
    from ..errors import ObjectError

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_kallsyms(f.read())
    except OSError as e:
        raise ObjectError(f"failed to read {path}: {e.strerror}") from None
