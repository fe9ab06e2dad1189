"""Memory of a process, and of a process tree, read from /proc (Linux only).

VmHWM is a process's own peak resident set, kept by the kernel, exact, but gone once the
process has exited. A tree (`fhirserver import` and its worker processes) has no such
figure: `TreeSampler` adds up VmRSS over the tree every 50 ms and keeps the largest sum.
That sum can miss a peak shorter than the interval, and counts pages the processes share
(libraries) once per process, so it errs high; VmRSS is what `ps` and `top` show.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType
from typing import Self

INTERVAL_SECONDS = 0.05
_PROC = Path("/proc")


class MemoryUnknown(RuntimeError):
    """/proc did not tell a process's memory (not Linux, or the process is gone)."""


def status_kib(pid: int, field: str) -> int | None:
    """A `Vm...` field of /proc/<pid>/status in KiB; None if the process or field is gone
    (a zombie keeps its status file but no Vm lines)."""
    try:
        text = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # "VmHWM:    123456 kB"
    return None


def peak_kib(pid: int) -> int:
    """The process's VmHWM now; read it before stopping the process."""
    peak = status_kib(pid, "VmHWM")
    if peak is None:
        raise MemoryUnknown(f"no VmHWM in /proc/{pid}/status")
    return peak


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants alive now."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(_children(current))
    return found


def _children(pid: int) -> list[int]:
    tasks = _PROC / str(pid) / "task"
    try:
        listed = [task / "children" for task in tasks.iterdir()]
        # A kernel built without CONFIG_PROC_CHILDREN has no such file: scan every process.
        if listed and not listed[0].exists():
            return _children_by_scan(pid)
        return [int(child) for file in listed for child in _read(file).split()]
    except OSError:  # the process exited meanwhile
        return []


def _read(file: Path) -> str:
    try:
        return file.read_text()
    except OSError:
        return ""


def _children_by_scan(pid: int) -> list[int]:
    children = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            # proc(5): ppid is the second field after the parenthesised command name.
            fields = _read(entry / "stat").rsplit(")", 1)[-1].split()
            if len(fields) > 1 and fields[1] == str(pid):
                children.append(int(entry.name))
    return children


class Sampler:
    """Calls `_sample` every `interval` seconds in a thread of its own while the `with`
    block runs (and once more as it ends)."""

    def __init__(self, pid: int, interval: float = INTERVAL_SECONDS) -> None:
        self.pid = pid
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.interval):
                return

    def _sample(self) -> None:
        raise NotImplementedError


class TreeSampler(Sampler):
    """While the `with` block runs: the largest sum of VmRSS over the tree under `pid`,
    and the largest VmHWM of `pid` itself (read while it lives)."""

    def __init__(self, pid: int, interval: float = INTERVAL_SECONDS) -> None:
        super().__init__(pid, interval)
        self.samples = 0
        self._tree_kib = 0
        self._main_kib = 0

    def _sample(self) -> None:
        main = status_kib(self.pid, "VmHWM")
        if main is None:  # not started yet, or already exited: nothing to add up
            return
        total = sum(status_kib(member, "VmRSS") or 0 for member in tree(self.pid))
        self.samples += 1
        self._tree_kib = max(self._tree_kib, total)
        self._main_kib = max(self._main_kib, main)

    @property
    def tree_kib(self) -> int:
        """The largest VmRSS sum over the tree seen."""
        self._measured()
        return self._tree_kib

    @property
    def main_kib(self) -> int:
        """The main process's VmHWM as last read: its peak up to < `interval` before it
        exited."""
        self._measured()
        return self._main_kib

    def _measured(self) -> None:
        if self.samples == 0:
            raise MemoryUnknown(f"no /proc/{self.pid}/status could be read while it ran")
