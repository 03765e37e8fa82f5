"""BPF iterators (``iter/task``, ``iter/bpf_map``...): a link, then ``BPF_ITER_CREATE``
gives a readable fd whose content is what the program wrote with ``bpf_seq_*``."""

from __future__ import annotations

import os
import struct

from ..links import Link

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..programs import Program

__all__ = ["IterLink", "attach_iter"]


class IterLink(Link):
    """An iterator link; each :meth:`read` runs the iterator once."""

    def read(self) -> bytes:
        """Run the iterator to the end and return everything it wrote."""
        from ..syscalls.links import iter_create

        with iter_create(self.fd) as it:
            chunks = []
            while chunk := os.read(it.fileno(), 65536):
                chunks.append(chunk)
        return b"".join(chunks)


def attach_iter(program: Program, *, map_fd: int | None = None) -> IterLink:
    """Iterator link for ``program`` (``map_fd`` for per-map iterators like ``bpf_map_elem``)."""
    from ..syscalls.links import link_create_iter

    # union bpf_iter_link_info: .map.map_fd is its first u32
    fd = link_create_iter(program.fd, struct.pack("<I", map_fd) if map_fd is not None else b"")
    return IterLink(fd, program=program, target=f"iter {program.attach_to or program.name}")
