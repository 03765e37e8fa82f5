"""The kernel layer: raw ``bpf(2)``/``perf_event_open(2)`` through ctypes, one thin function per command.

Only this package makes system calls. Every function that creates a kernel
object returns an :class:`~corepy.syscalls.fd.FD` and closes it again if a
later step fails.
"""
