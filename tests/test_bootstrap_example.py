"""``python -m corepy.examples.bootstrap`` as a subprocess on the real kernel: processes spawned
from uniquely named copies of /bin/true, /bin/false and /bin/sleep show up as EXEC/EXIT lines;
``--duration`` filters short-lived processes in the kernel; SIGINT/SIGTERM exit cleanly."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import pytest

from conftest import ROOT, requires_root

pytestmark = requires_root

# TIME(8) EVENT(5) COMM(16: at most 15 characters, padded) PID PPID FILENAME or [CODE] (N ms)
LINE = re.compile(r"^(\d\d:\d\d:\d\d) (EXEC|EXIT)  (.{16}) (\d+)\s+(\d+)\s+(.*)$")


class Event(NamedTuple):
    time: str
    kind: str
    comm: str
    pid: int
    ppid: int
    rest: str


def parse(line: str) -> Event | None:
    m = LINE.match(line)
    return m and Event(m[1], m[2], m[3].rstrip(), int(m[4]), int(m[5]), m[6])


class Tracer:
    """The example running as a subprocess, its stdout lines collected by a reader thread."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "corepy.examples.bootstrap", *args], cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        header = self.next_line(30)
        assert header is not None, f"no header; stderr: {self.stop_and_stderr()}"
        assert header.split() == ["TIME", "EVENT", "COMM", "PID", "PPID", "FILENAME/EXIT", "CODE"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout: float) -> str | None:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        self.seen.append(line)
        return line

    def wait_for(self, predicate, timeout: float = 10.0) -> Event | None:
        """The first event line (parsed) for which ``predicate(event)`` holds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            line = self.next_line(left)
            if line is None:
                break
            event = parse(line)
            assert event, f"malformed line {line!r}"
            if predicate(event):
                return event
        return None

    def drain(self, seconds: float) -> list[str]:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.next_line(left)
        return self.seen

    def stop_and_stderr(self, sig: int = signal.SIGINT) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def unique_copy(workdir: Path, binary: str) -> Path:
    """``binary`` copied to a unique path whose name (the comm) is unique too."""
    path = workdir / f"{Path(binary).name[:4]}{uuid.uuid4().hex[:10]}"
    shutil.copy2(shutil.which(binary) or binary, path)
    return path


def test_exec_and_exit_of_spawned_processes_then_sigint(workdir):
    ok, fail = unique_copy(workdir, "true"), unique_copy(workdir, "false")
    tracer = Tracer("--timeout", "60")
    try:
        child = subprocess.Popen([str(ok), "unique-argv"])
        child.wait()
        failing = subprocess.Popen([str(fail)])
        failing.wait()
        execd = tracer.wait_for(lambda e: e.kind == "EXEC" and e.rest == str(ok))
        assert execd is not None, tracer.seen
        assert (execd.comm, execd.pid, execd.ppid) == (ok.name, child.pid, os.getpid())
        exited = tracer.wait_for(lambda e: e.kind == "EXIT" and e.pid == child.pid)
        assert exited is not None, tracer.seen
        assert re.fullmatch(r"\[0\] \(\d+ms\)", exited.rest) and exited.comm == ok.name
        failed = tracer.wait_for(lambda e: e.kind == "EXIT" and e.pid == failing.pid)
        assert failed is not None and failed.rest.startswith("[1] ") and failed.comm == fail.name, tracer.seen
    finally:
        stderr = tracer.stop_and_stderr(signal.SIGINT)
    assert tracer.proc.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_duration_filters_short_processes_in_the_kernel(workdir):
    short, sleeper = unique_copy(workdir, "true"), unique_copy(workdir, "sleep")
    tracer = Tracer("--duration", "300", "--timeout", "60")
    try:
        quick = subprocess.Popen([str(short)])
        slow = subprocess.Popen([str(sleeper), "0.6"])
        quick.wait()
        slow.wait()
        exited = tracer.wait_for(lambda e: e.kind == "EXIT" and e.pid == slow.pid)
        assert exited is not None, tracer.seen
        ms = int(re.fullmatch(r"\[0\] \((\d+)ms\)", exited.rest)[1])
        assert 300 <= ms < 5000
        lines = tracer.drain(0.3)
    finally:
        stderr = tracer.stop_and_stderr(signal.SIGTERM)
    assert tracer.proc.returncode == 0, stderr
    events = [parse(line) for line in lines[1:]]
    assert all(events), lines
    # the user-space side prints whatever arrives: no EXEC event and no short process made it out of the kernel
    assert not [e for e in events if e.kind == "EXEC"], lines
    assert not [e for e in events if e.pid == quick.pid], lines
    assert all(int(re.match(r"\[\d+\] \((\d+)ms\)", e.rest)[1]) >= 300 for e in events), lines


def test_count_and_timeout_end_the_run():
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "corepy.examples.bootstrap", "--timeout", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started >= 1
    assert done.stdout.splitlines()[0].startswith("TIME")
    tracer = Tracer("--count", "2", "--timeout", "60")
    for _ in range(3):
        subprocess.run(["/bin/true"])
    assert tracer.proc.wait(20) == 0
    stderr = tracer.stop_and_stderr()
    tracer._reader.join(5)
    lines = tracer.drain(0.1)
    assert len(lines) == 3 and all(parse(line) for line in lines[1:]), (lines, stderr)
