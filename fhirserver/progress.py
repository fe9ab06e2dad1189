"""Progress of long work on the command line (`fhirserver import`, `reindex`, and the
export to come): a rich progress bar on a terminal; otherwise, for a log, one plain line
every few seconds and one at the end.

One callback shape for every producer: `progress(done, total, resources=None)`, where
`resources` is how many resources so far when `done` / `total` count something else
(an import counts bytes read).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)


class ProgressDisplay:
    """A context manager that is also the progress callback."""

    def __init__(
        self,
        label: str,
        stream: TextIO | None = None,
        interval: float = 5.0,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.interval = interval
        self.clock = clock
        self.started = self.shown = clock()
        self.terminal = self.stream.isatty() if terminal is None else terminal
        self._last: tuple[int, int, int] | None = None
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.terminal:
            console = Console(file=self.stream, force_terminal=True)
            self._bar = Progress(
                TextColumn(f"{self.label}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[resources]:,} resources, {task.fields[rate]:,.0f}/s"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=None, resources=0, rate=0.0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._last is not None:
            self._line(*self._last)

    def __call__(self, done: int, total: int, resources: int | None = None) -> None:
        count = done if resources is None else resources
        moment = self.clock()
        rate = count / max(moment - self.started, 1e-9)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=total, resources=count, rate=rate)
            return
        self._last = (done, total, count)
        if moment - self.shown >= self.interval:
            self._line(done, total, count)

    def _line(self, done: int, total: int, count: int) -> None:
        moment = self.clock()
        self.shown = moment
        elapsed = max(moment - self.started, 1e-9)
        share = done / total if total else 1.0
        left = elapsed / share - elapsed if share else 0.0
        self.stream.write(
            f"{self.label}: {share:4.0%} {count:,} resources, {count / elapsed:,.0f}/s,"
            f" {left:,.0f}s left\n"
        )
        self.stream.flush()
        self._last = None
