"""The kernel layer: raw ``bpf(2)``/``perf_event_open(2)`` through ctypes, one thin function per command.

Only this package makes system calls. Every function that creates a kernel
object returns an :class:`~corepy.syscalls.fd.FD` and closes it again if a
later step fails; failures raise :class:`~corepy.errors.SyscallError` (or a
subclass) named after the command.

Modules: ``uapi`` (constants and enums), ``attr`` (``union bpf_attr`` and the
``bpf_*_info`` structs), ``bpf`` (the system call), ``fd`` (``FD``), ``maps``,
``load`` (PROG_LOAD / BTF_LOAD with logs), ``run`` (PROG_TEST_RUN,
ENABLE_STATS), ``objects`` (pin/get, ids, info), ``links`` (LINK_CREATE,
PROG_ATTACH, raw tracepoints, iterators), ``perf`` (perf_event_open),
``tracefs``, ``cpus`` and ``features`` (memoised kernel probes).
"""
