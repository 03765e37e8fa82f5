"""bootstrap: trace process exec and exit, after libbpf-bootstrap's example of the same name.

    python -m corepy.examples.bootstrap [--duration MS] [--count N] [--timeout S]

Loads ``bootstrap.bpf.o`` (shipped in this package), attaches its two tracepoint programs
and prints one line per event read from the ``rb`` ring buffer::

    TIME     EVENT COMM             PID     PPID    FILENAME/EXIT CODE
    12:00:01 EXEC  true             4242    4200    /usr/bin/true
    12:00:01 EXIT  true             4242    4200    [0] (1ms)

``--duration MS`` sets the object's ``min_duration_ns`` before load: the BPF side then
sends no exec events and exit events only for processes that lived at least that long.
The header is printed once everything is attached. Ctrl-C (SIGINT) and SIGTERM stop it
cleanly: links, programs, maps and the ring buffer are closed before it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import signal
import sys
import time
from collections.abc import Sequence

import corepy
from corepy.errors import CorepyError
from corepy.ringbuf import RingBuffer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RECORD_TYPE = "event"
"""Records are ``struct event`` of bootstrap.h, decoded through the object's BTF."""

HEADER = f"{'TIME':<8} {'EVENT':<5} {'COMM':<16} {'PID':<7} {'PPID':<7} FILENAME/EXIT CODE"


class _Stop(Exception):
    """Raised by the SIGINT/SIGTERM handler to leave the event loop."""


def _text(value: str | bytes) -> str:
    if isinstance(value, bytes):  # a char array that is not clean text
        return value.split(b"\0", 1)[0].decode(errors="replace")
    return value


def format_event(e: Any) -> str:
    """One output line for a decoded ``struct event``."""
    stamp = time.strftime("%H:%M:%S")
    head = f"{stamp:<8} {'EXIT' if e.exit_event else 'EXEC':<5} {_text(e.comm):<16} {e.pid:<7} {e.ppid:<7} "
    if e.exit_event:
        tail = f"[{e.exit_code}]"
        if e.duration_ns:
            tail += f" ({e.duration_ns // 1_000_000}ms)"
        return head + tail
    return head + _text(e.filename)


def _ignore_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m corepy.examples.bootstrap",
                                     description="Trace process exec and exit (BPF ring buffer).")
    parser.add_argument("-d", "--duration", type=int, default=0, metavar="MS",
                        help="only report processes that lived at least MS milliseconds (filtered in the kernel; "
                        "exec events are not reported then)")
    parser.add_argument("-c", "--count", type=int, default=0, metavar="N", help="stop after N events")
    parser.add_argument("-t", "--timeout", type=float, default=0, metavar="S", help="stop after S seconds")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    """Load, attach and print events until ``--count``/``--timeout`` or a signal."""
    printed = 0

    def on_event(record: Any) -> None:
        nonlocal printed
        if args.count and printed >= args.count:
            return
        print(format_event(record), flush=True)
        printed += 1

    def stop(signum: int, frame: Any) -> None:
        _ignore_signals()  # a second Ctrl-C must not interrupt the cleanup
        raise _Stop(signal.Signals(signum).name)

    deadline = time.monotonic() + args.timeout if args.timeout else None
    resource = importlib.resources.files("corepy.examples").joinpath("bootstrap.bpf.o")
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with contextlib.ExitStack() as stack:
            path = stack.enter_context(importlib.resources.as_file(resource))
            obj = stack.enter_context(corepy.open(path))
            obj.globals.min_duration_ns = args.duration * 1_000_000
            obj.load()
            obj.attach()
            ring = stack.enter_context(RingBuffer(obj.maps["rb"], on_event, record_type=RECORD_TYPE))
            print(HEADER, flush=True)
            while not (args.count and printed >= args.count):
                wait = None
                if deadline is not None:
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        break
                ring.poll(wait)
            _ignore_signals()  # from here on: cleanup
    except _Stop:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except CorepyError as e:
        print(f"bootstrap: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
