"""The command line's progress display (issue 14 point 6: one display from a well-kept
library for import, reindex and export; quiet, one line every few seconds, when stderr
is not a terminal)."""

from __future__ import annotations

import io

from fhirserver.progress import ProgressDisplay


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_one_line_every_few_seconds_and_one_at_the_end() -> None:
    out, clock = io.StringIO(), Ticks()
    with ProgressDisplay("import", stream=out, interval=5.0, terminal=False, clock=clock) as show:
        for second in range(12):
            clock.now = float(second)
            show(second * 10, 110, resources=second * 100)
        clock.now = 12.0
        show(110, 110, resources=1200)
    lines = out.getvalue().splitlines()
    # At 5 s and 10 s, then the last figures at the end.
    assert len(lines) == 3
    assert lines[0].startswith("import:") and "500 resources" in lines[0]
    assert lines[-1] == "import: 100% 1,200 resources, 100/s, 0s left"


def test_a_terminal_gets_a_live_bar_with_resources_and_rate() -> None:
    out, clock = io.StringIO(), Ticks()
    with ProgressDisplay("reindex", stream=out, terminal=True, clock=clock) as show:
        clock.now = 2.0
        show(50, 100)
        show(100, 100)
    shown = out.getvalue()
    assert "reindex" in shown and "100 resources" in shown and "100%" in shown
