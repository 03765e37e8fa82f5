"""Objects by path and id: OBJ_PIN/OBJ_GET, *_GET_NEXT_ID, *_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD."""

from __future__ import annotations

import ctypes
import errno
import os

from .._records import record
from ..errors import raise_for_errno
from .attr import BTFInfo, GetIdAttr, InfoAttr, LinkInfo, MapInfo, ObjPinAttr, ProgInfo, ptr
from .bpf import bpf, bpf_errno
from .fd import FD, FdLike, fdnum
from .uapi import Cmd

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal, TypeVar

    ObjKind = Literal["prog", "map", "btf", "link"]
    Info = TypeVar("Info", ProgInfo, MapInfo, BTFInfo, LinkInfo)

_NEXT_ID: dict[str, Cmd] = {
    "prog": Cmd.PROG_GET_NEXT_ID,
    "map": Cmd.MAP_GET_NEXT_ID,
    "btf": Cmd.BTF_GET_NEXT_ID,
    "link": Cmd.LINK_GET_NEXT_ID,
}
_FD_BY_ID: dict[str, Cmd] = {
    "prog": Cmd.PROG_GET_FD_BY_ID,
    "map": Cmd.MAP_GET_FD_BY_ID,
    "btf": Cmd.BTF_GET_FD_BY_ID,
    "link": Cmd.LINK_GET_FD_BY_ID,
}


def _path(path: str | os.PathLike[str]) -> ctypes.Array:
    return ctypes.create_string_buffer(os.fsencode(path))


def obj_pin(fd: FdLike, path: str | os.PathLike[str]) -> None:
    """BPF_OBJ_PIN: pin the map/prog/link/btf at ``path`` on a bpffs."""
    buf = _path(path)
    bpf(Cmd.OBJ_PIN, ObjPinAttr(pathname=ptr(buf), bpf_fd=fdnum(fd)), detail=f"path {os.fsdecode(path)!r}")


def obj_get(path: str | os.PathLike[str], flags: int = 0) -> FD:
    """BPF_OBJ_GET: open the object pinned at ``path`` (flags: BPF_F_RDONLY/WRONLY)."""
    buf = _path(path)
    return FD(bpf(Cmd.OBJ_GET, ObjPinAttr(pathname=ptr(buf), file_flags=flags), detail=f"path {os.fsdecode(path)!r}"), "pinned")


def _kind(kind: str, table: dict[str, Cmd]) -> Cmd:
    try:
        return table[kind]
    except KeyError:
        raise ValueError(f"unknown object kind {kind!r} (one of {', '.join(table)})") from None


def get_next_id(kind: ObjKind, start: int = 0) -> int | None:
    """BPF_<KIND>_GET_NEXT_ID: the first id above ``start``, or None after the last."""
    cmd = _kind(kind, _NEXT_ID)
    attr = GetIdAttr(start_id=start)
    result, err = bpf_errno(cmd, attr)
    if result >= 0:
        return attr.next_id
    if err == errno.ENOENT:
        return None
    raise_for_errno(f"BPF_{cmd.name}", err, f"after id {start}")
    return None


def get_fd_by_id(kind: ObjKind, obj_id: int, open_flags: int = 0) -> FD:
    """BPF_<KIND>_GET_FD_BY_ID: an fd for the object with id ``obj_id``."""
    cmd = _kind(kind, _FD_BY_ID)
    return FD(bpf(cmd, GetIdAttr(start_id=obj_id, open_flags=open_flags), detail=f"{kind} id {obj_id}"), kind)


def obj_get_info(fd: FdLike, info: Info) -> Info:
    """BPF_OBJ_GET_INFO_BY_FD into ``info`` (a ProgInfo/MapInfo/BTFInfo/LinkInfo, whose pointer
    fields may point at buffers to fill); returns ``info``."""
    attr = InfoAttr(bpf_fd=fdnum(fd), info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr, detail=f"{type(info).__name__} of fd {attr.bpf_fd}")
    return info


def map_info(fd: FdLike) -> MapInfo:
    """The map's ``bpf_map_info``."""
    return obj_get_info(fd, MapInfo())


def link_info(fd: FdLike) -> LinkInfo:
    """The link's ``bpf_link_info`` (type-specific name buffers are not fetched)."""
    return obj_get_info(fd, LinkInfo())


@record(frozen=True)
class ProgDetails:
    """A program's ``bpf_prog_info`` with its translated instructions and map ids fetched."""

    info: ProgInfo
    name: str
    xlated: bytes
    map_ids: list[int]


def prog_info(fd: FdLike) -> ProgDetails:
    """The program's info, its xlated (post-verifier) instructions and the ids of its maps."""
    first = obj_get_info(fd, ProgInfo())
    xlated = ctypes.create_string_buffer(first.xlated_prog_len)
    map_ids = (ctypes.c_uint32 * first.nr_map_ids)()
    second = ProgInfo(
        xlated_prog_len=first.xlated_prog_len,
        xlated_prog_insns=ptr(xlated) if first.xlated_prog_len else 0,
        nr_map_ids=first.nr_map_ids,
        map_ids=ptr(map_ids) if first.nr_map_ids else 0,
    )
    obj_get_info(fd, second)
    n_xlated = min(first.xlated_prog_len, second.xlated_prog_len)
    n_maps = min(first.nr_map_ids, second.nr_map_ids)
    return ProgDetails(second, second.name.decode(errors="replace"), xlated.raw[:n_xlated], list(map_ids[:n_maps]))


@record(frozen=True)
class BTFDetails:
    """A kernel BTF object's info, raw blob and name (``vmlinux``, a module name, or "")."""

    info: BTFInfo
    name: str
    blob: bytes


def btf_info(fd: FdLike) -> BTFDetails:
    """The BTF object's info with its raw data and name fetched."""
    first = obj_get_info(fd, BTFInfo())
    blob = ctypes.create_string_buffer(first.btf_size)
    name = ctypes.create_string_buffer(max(first.name_len + 1, 64))
    second = BTFInfo(btf=ptr(blob), btf_size=first.btf_size, name=ptr(name), name_len=len(name))
    obj_get_info(fd, second)
    return BTFDetails(second, name.value.decode(errors="replace"), blob.raw[: second.btf_size])
