"""``union bpf_attr`` and the ``bpf_*_info`` structs (Linux 6.18 uapi), as ctypes Structures.

One Structure per command group, laid out exactly like the anonymous member of
``union bpf_attr`` it stands for. :func:`corepy.syscalls.bpf.bpf` passes
``sizeof`` of the Structure, so fields a kernel does not know are zero (the
kernel accepts unknown tails only when they are zero). Pointers are ``u64``
(``__aligned_u64``); fill them with :func:`ptr`.
"""

from __future__ import annotations

import ctypes
from ctypes import c_char, c_int32, c_uint8, c_uint32, c_uint64

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

u32, s32, u64 = c_uint32, c_int32, c_uint64

OBJ_NAME_LEN = 16


def ptr(buf: Any) -> int:
    """Address of a ctypes object or buffer for a ``u64`` pointer field (0 for None)."""
    if buf is None:
        return 0
    return ctypes.addressof(buf)


class _Attr(ctypes.Structure):
    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name, *_ in self._fields_ if not name.startswith("_"))
        return f"{type(self).__name__}({fields})"


class MapCreateAttr(_Attr):
    """BPF_MAP_CREATE."""

    _fields_ = [
        ("map_type", u32),
        ("key_size", u32),
        ("value_size", u32),
        ("max_entries", u32),
        ("map_flags", u32),
        ("inner_map_fd", u32),
        ("numa_node", u32),
        ("map_name", c_char * OBJ_NAME_LEN),
        ("map_ifindex", u32),
        ("btf_fd", u32),
        ("btf_key_type_id", u32),
        ("btf_value_type_id", u32),
        ("btf_vmlinux_value_type_id", u32),
        ("map_extra", u64),
        ("value_type_btf_obj_fd", s32),
        ("map_token_fd", s32),
        ("excl_prog_hash", u64),
        ("excl_prog_hash_size", u32),
    ]


class MapElemAttr(_Attr):
    """BPF_MAP_LOOKUP_ELEM / UPDATE_ELEM / DELETE_ELEM / GET_NEXT_KEY / LOOKUP_AND_DELETE_ELEM / FREEZE.

    ``value`` doubles as ``next_key`` (a union in the kernel).
    """

    _fields_ = [
        ("map_fd", u32),
        ("key", u64),
        ("value", u64),
        ("flags", u64),
    ]

    @property
    def next_key(self) -> int:
        return self.value

    @next_key.setter
    def next_key(self, address: int) -> None:
        self.value = address


class MapBatchAttr(_Attr):
    """BPF_MAP_{LOOKUP,LOOKUP_AND_DELETE,UPDATE,DELETE}_BATCH (``attr.batch``)."""

    _fields_ = [
        ("in_batch", u64),
        ("out_batch", u64),
        ("keys", u64),
        ("values", u64),
        ("count", u32),
        ("map_fd", u32),
        ("elem_flags", u64),
        ("flags", u64),
    ]


class ProgLoadAttr(_Attr):
    """BPF_PROG_LOAD. ``attach_prog_fd`` and ``attach_btf_obj_fd`` share one slot."""

    _fields_ = [
        ("prog_type", u32),
        ("insn_cnt", u32),
        ("insns", u64),
        ("license", u64),
        ("log_level", u32),
        ("log_size", u32),
        ("log_buf", u64),
        ("kern_version", u32),
        ("prog_flags", u32),
        ("prog_name", c_char * OBJ_NAME_LEN),
        ("prog_ifindex", u32),
        ("expected_attach_type", u32),
        ("prog_btf_fd", u32),
        ("func_info_rec_size", u32),
        ("func_info", u64),
        ("func_info_cnt", u32),
        ("line_info_rec_size", u32),
        ("line_info", u64),
        ("line_info_cnt", u32),
        ("attach_btf_id", u32),
        ("attach_prog_fd", u32),  # union with attach_btf_obj_fd
        ("core_relo_cnt", u32),
        ("fd_array", u64),
        ("core_relos", u64),
        ("core_relo_rec_size", u32),
        ("log_true_size", u32),
        ("prog_token_fd", s32),
        ("fd_array_cnt", u32),
        ("signature", u64),
        ("signature_size", u32),
        ("keyring_id", s32),
    ]

    @property
    def attach_btf_obj_fd(self) -> int:
        return self.attach_prog_fd

    @attach_btf_obj_fd.setter
    def attach_btf_obj_fd(self, fd: int) -> None:
        self.attach_prog_fd = fd


class ObjPinAttr(_Attr):
    """BPF_OBJ_PIN / BPF_OBJ_GET."""

    _fields_ = [
        ("pathname", u64),
        ("bpf_fd", u32),
        ("file_flags", u32),
        ("path_fd", s32),
    ]


class ProgAttachAttr(_Attr):
    """BPF_PROG_ATTACH / BPF_PROG_DETACH. ``target_fd`` doubles as ``target_ifindex``,
    ``relative_fd`` as ``relative_id``."""

    _fields_ = [
        ("target_fd", u32),
        ("attach_bpf_fd", u32),
        ("attach_type", u32),
        ("attach_flags", u32),
        ("replace_bpf_fd", u32),
        ("relative_fd", u32),
        ("expected_revision", u64),
    ]


class TestRunAttr(_Attr):
    """BPF_PROG_TEST_RUN (``attr.test``)."""

    _fields_ = [
        ("prog_fd", u32),
        ("retval", u32),
        ("data_size_in", u32),
        ("data_size_out", u32),
        ("data_in", u64),
        ("data_out", u64),
        ("repeat", u32),
        ("duration", u32),
        ("ctx_size_in", u32),
        ("ctx_size_out", u32),
        ("ctx_in", u64),
        ("ctx_out", u64),
        ("flags", u32),
        ("cpu", u32),
        ("batch_size", u32),
    ]


class GetIdAttr(_Attr):
    """BPF_{PROG,MAP,BTF,LINK}_GET_NEXT_ID and *_GET_FD_BY_ID.

    ``start_id`` doubles as prog_id / map_id / btf_id / link_id.
    """

    _fields_ = [
        ("start_id", u32),
        ("next_id", u32),
        ("open_flags", u32),
        ("fd_by_id_token_fd", s32),
    ]


class InfoAttr(_Attr):
    """BPF_OBJ_GET_INFO_BY_FD (``attr.info``)."""

    _fields_ = [
        ("bpf_fd", u32),
        ("info_len", u32),
        ("info", u64),
    ]


class QueryAttr(_Attr):
    """BPF_PROG_QUERY (``attr.query``)."""

    _fields_ = [
        ("target_fd", u32),
        ("attach_type", u32),
        ("query_flags", u32),
        ("attach_flags", u32),
        ("prog_ids", u64),
        ("prog_cnt", u32),
        ("prog_attach_flags", u64),
        ("link_ids", u64),
        ("link_attach_flags", u64),
        ("revision", u64),
    ]


class RawTracepointAttr(_Attr):
    """BPF_RAW_TRACEPOINT_OPEN (``attr.raw_tracepoint``)."""

    _fields_ = [
        ("name", u64),
        ("prog_fd", u32),
        ("cookie", u64),
    ]


class BTFLoadAttr(_Attr):
    """BPF_BTF_LOAD."""

    _fields_ = [
        ("btf", u64),
        ("btf_log_buf", u64),
        ("btf_size", u32),
        ("btf_log_size", u32),
        ("btf_log_level", u32),
        ("btf_log_true_size", u32),
        ("btf_flags", u32),
        ("btf_token_fd", s32),
    ]


class TaskFdQueryAttr(_Attr):
    """BPF_TASK_FD_QUERY (``attr.task_fd_query``)."""

    _fields_ = [
        ("pid", u32),
        ("fd", u32),
        ("flags", u32),
        ("buf_len", u32),
        ("buf", u64),
        ("prog_id", u32),
        ("fd_type", u32),
        ("probe_offset", u64),
        ("probe_addr", u64),
    ]


# --- LINK_CREATE: a fixed head followed by a per-attach-kind union ---


class _Relative(_Attr):
    """tcx / netkit / cgroup: ``relative_fd`` doubles as ``relative_id``."""

    _fields_ = [("relative_fd", u32), ("expected_revision", u64)]


class _PerfEventLink(_Attr):
    _fields_ = [("bpf_cookie", u64)]


class _KprobeMultiLink(_Attr):
    _fields_ = [("flags", u32), ("cnt", u32), ("syms", u64), ("addrs", u64), ("cookies", u64)]


class _TracingLink(_Attr):
    _fields_ = [("target_btf_id", u32), ("cookie", u64)]


class _NetfilterLink(_Attr):
    _fields_ = [("pf", u32), ("hooknum", u32), ("priority", s32), ("flags", u32)]


class _UprobeMultiLink(_Attr):
    _fields_ = [
        ("path", u64),
        ("offsets", u64),
        ("ref_ctr_offsets", u64),
        ("cookies", u64),
        ("cnt", u32),
        ("flags", u32),
        ("pid", u32),
    ]


class _IterLink(_Attr):
    _fields_ = [("iter_info", u64), ("iter_info_len", u32)]


class _LinkCreateExtra(ctypes.Union):
    _anonymous_ = ("_iter",)
    _fields_ = [
        ("target_btf_id", u32),
        ("_iter", _IterLink),
        ("perf_event", _PerfEventLink),
        ("kprobe_multi", _KprobeMultiLink),
        ("tracing", _TracingLink),
        ("netfilter", _NetfilterLink),
        ("tcx", _Relative),
        ("uprobe_multi", _UprobeMultiLink),
        ("netkit", _Relative),
        ("cgroup", _Relative),
    ]


class LinkCreateAttr(_Attr):
    """BPF_LINK_CREATE (``attr.link_create``). ``prog_fd`` doubles as ``map_fd`` (struct_ops),
    ``target_fd`` as ``target_ifindex``; per-kind fields live in the anonymous union
    (``attr.target_btf_id``, ``attr.iter_info``, ``attr.tcx.relative_fd``,
    ``attr.perf_event.bpf_cookie``...)."""

    _anonymous_ = ("_u",)
    _fields_ = [
        ("prog_fd", u32),
        ("target_fd", u32),
        ("attach_type", u32),
        ("flags", u32),
        ("_u", _LinkCreateExtra),
    ]


class LinkUpdateAttr(_Attr):
    """BPF_LINK_UPDATE. ``new_prog_fd``/``old_prog_fd`` double as new_map_fd/old_map_fd."""

    _fields_ = [("link_fd", u32), ("new_prog_fd", u32), ("flags", u32), ("old_prog_fd", u32)]


class LinkDetachAttr(_Attr):
    """BPF_LINK_DETACH."""

    _fields_ = [("link_fd", u32)]


class EnableStatsAttr(_Attr):
    """BPF_ENABLE_STATS."""

    _fields_ = [("type", u32)]


class IterCreateAttr(_Attr):
    """BPF_ITER_CREATE."""

    _fields_ = [("link_fd", u32), ("flags", u32)]


class ProgBindMapAttr(_Attr):
    """BPF_PROG_BIND_MAP."""

    _fields_ = [("prog_fd", u32), ("map_fd", u32), ("flags", u32)]


# --- OBJ_GET_INFO_BY_FD results ---


class ProgInfo(_Attr):
    """``struct bpf_prog_info``."""

    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("tag", c_uint8 * 8),
        ("jited_prog_len", u32),
        ("xlated_prog_len", u32),
        ("jited_prog_insns", u64),
        ("xlated_prog_insns", u64),
        ("load_time", u64),
        ("created_by_uid", u32),
        ("nr_map_ids", u32),
        ("map_ids", u64),
        ("name", c_char * OBJ_NAME_LEN),
        ("ifindex", u32),
        ("gpl_compatible", u32, 1),
        ("_pad", u32, 31),
        ("netns_dev", u64),
        ("netns_ino", u64),
        ("nr_jited_ksyms", u32),
        ("nr_jited_func_lens", u32),
        ("jited_ksyms", u64),
        ("jited_func_lens", u64),
        ("btf_id", u32),
        ("func_info_rec_size", u32),
        ("func_info", u64),
        ("nr_func_info", u32),
        ("nr_line_info", u32),
        ("line_info", u64),
        ("jited_line_info", u64),
        ("nr_jited_line_info", u32),
        ("line_info_rec_size", u32),
        ("jited_line_info_rec_size", u32),
        ("nr_prog_tags", u32),
        ("prog_tags", u64),
        ("run_time_ns", u64),
        ("run_cnt", u64),
        ("recursion_misses", u64),
        ("verified_insns", u32),
        ("attach_btf_obj_id", u32),
        ("attach_btf_id", u32),
    ]


class MapInfo(_Attr):
    """``struct bpf_map_info``."""

    _fields_ = [
        ("type", u32),
        ("id", u32),
        ("key_size", u32),
        ("value_size", u32),
        ("max_entries", u32),
        ("map_flags", u32),
        ("name", c_char * OBJ_NAME_LEN),
        ("ifindex", u32),
        ("btf_vmlinux_value_type_id", u32),
        ("netns_dev", u64),
        ("netns_ino", u64),
        ("btf_id", u32),
        ("btf_key_type_id", u32),
        ("btf_value_type_id", u32),
        ("btf_vmlinux_id", u32),
        ("map_extra", u64),
        ("hash", u64),
        ("hash_size", u32),
    ]


class BTFInfo(_Attr):
    """``struct bpf_btf_info``."""

    _fields_ = [
        ("btf", u64),
        ("btf_size", u32),
        ("id", u32),
        ("name", u64),
        ("name_len", u32),
        ("kernel_btf", u32),
    ]


class _LinkRawTracepoint(_Attr):
    _fields_ = [("tp_name", u64), ("tp_name_len", u32), ("cookie", u64)]


class _LinkTracing(_Attr):
    _fields_ = [("attach_type", u32), ("target_obj_id", u32), ("target_btf_id", u32), ("cookie", u64)]


class _LinkCgroup(_Attr):
    _fields_ = [("cgroup_id", u64), ("attach_type", u32)]


class _LinkIterCgroup(_Attr):
    _fields_ = [("cgroup_id", u64), ("order", u32)]


class _LinkIterTask(_Attr):
    _fields_ = [("tid", u32), ("pid", u32)]


class _LinkIterTarget(ctypes.Union):
    _fields_ = [("cgroup", _LinkIterCgroup), ("task", _LinkIterTask)]


class _LinkIterMap(_Attr):
    _fields_ = [("map_id", u32)]


class _LinkIter(_Attr):
    _anonymous_ = ("_target",)
    _fields_ = [("target_name", u64), ("target_name_len", u32), ("map", _LinkIterMap), ("_target", _LinkIterTarget)]


class _LinkNetns(_Attr):
    _fields_ = [("netns_ino", u32), ("attach_type", u32)]


class _LinkIfindex(_Attr):
    _fields_ = [("ifindex", u32)]


class _LinkIfindexAttach(_Attr):
    _fields_ = [("ifindex", u32), ("attach_type", u32)]


class _LinkMapId(_Attr):
    _fields_ = [("map_id", u32)]


class _LinkMapIdAttach(_Attr):
    _fields_ = [("map_id", u32), ("attach_type", u32)]


class _LinkKprobeMulti(_Attr):
    _fields_ = [("addrs", u64), ("count", u32), ("flags", u32), ("missed", u64), ("cookies", u64)]


class _LinkUprobeMulti(_Attr):
    _fields_ = [
        ("path", u64),
        ("offsets", u64),
        ("ref_ctr_offsets", u64),
        ("cookies", u64),
        ("path_size", u32),
        ("count", u32),
        ("flags", u32),
        ("pid", u32),
    ]


class _PerfUprobe(_Attr):
    _fields_ = [("file_name", u64), ("name_len", u32), ("offset", u32), ("cookie", u64), ("ref_ctr_offset", u64)]


class _PerfKprobe(_Attr):
    _fields_ = [("func_name", u64), ("name_len", u32), ("offset", u32), ("addr", u64), ("missed", u64), ("cookie", u64)]


class _PerfTracepoint(_Attr):
    _fields_ = [("tp_name", u64), ("name_len", u32), ("cookie", u64)]


class _PerfEvent(_Attr):
    _fields_ = [("config", u64), ("type", u32), ("cookie", u64)]


class _LinkPerfEventKinds(ctypes.Union):
    _fields_ = [("uprobe", _PerfUprobe), ("kprobe", _PerfKprobe), ("tracepoint", _PerfTracepoint), ("event", _PerfEvent)]


class _LinkPerfEvent(_Attr):
    _anonymous_ = ("_kinds",)
    _fields_ = [("type", u32), ("_kinds", _LinkPerfEventKinds)]


class _LinkInfoKinds(ctypes.Union):
    _fields_ = [
        ("raw_tracepoint", _LinkRawTracepoint),
        ("tracing", _LinkTracing),
        ("cgroup", _LinkCgroup),
        ("iter", _LinkIter),
        ("netns", _LinkNetns),
        ("xdp", _LinkIfindex),
        ("struct_ops", _LinkMapId),
        ("netfilter", _NetfilterLink),
        ("kprobe_multi", _LinkKprobeMulti),
        ("uprobe_multi", _LinkUprobeMulti),
        ("perf_event", _LinkPerfEvent),
        ("tcx", _LinkIfindexAttach),
        ("netkit", _LinkIfindexAttach),
        ("sockmap", _LinkMapIdAttach),
    ]


class LinkInfo(_Attr):
    """``struct bpf_link_info``; per-type fields via ``info.raw_tracepoint.tp_name`` etc."""

    _anonymous_ = ("_kinds",)
    _fields_ = [("type", u32), ("id", u32), ("prog_id", u32), ("_kinds", _LinkInfoKinds)]


InfoStruct = ProgInfo | MapInfo | BTFInfo | LinkInfo

__all__ = [
    "ptr",
    "MapCreateAttr",
    "MapElemAttr",
    "MapBatchAttr",
    "ProgLoadAttr",
    "ObjPinAttr",
    "ProgAttachAttr",
    "TestRunAttr",
    "GetIdAttr",
    "InfoAttr",
    "QueryAttr",
    "RawTracepointAttr",
    "BTFLoadAttr",
    "TaskFdQueryAttr",
    "LinkCreateAttr",
    "LinkUpdateAttr",
    "LinkDetachAttr",
    "EnableStatsAttr",
    "IterCreateAttr",
    "ProgBindMapAttr",
    "ProgInfo",
    "MapInfo",
    "BTFInfo",
    "LinkInfo",
]
