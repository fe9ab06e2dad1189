"""CPU time spent during a measurement: by the server process and by the load client.

The server's comes from /proc/<pid>/stat (all its threads, so SQLite's too), added up
over the process and its children (`fhirserver serve --workers N`); where there is no
/proc (not Linux) it is None. The client's is this process's own CPU time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU seconds of the server (None if unknown) and of the load client."""

    server: float | None
    client: float

    def __add__(self, other: Usage) -> Usage:
        server = None if self.server is None or other.server is None else self.server + other.server
        return Usage(server, self.client + other.client)

    def __sub__(self, earlier: Usage) -> Usage:
        server = (
            None if self.server is None or earlier.server is None else self.server - earlier.server
        )
        return Usage(server, self.client - earlier.client)


def usage(server_pid: int) -> Usage:
    seconds = [_process_seconds(pid) for pid in [server_pid, *_children(server_pid)]]
    server = None if seconds[0] is None else sum(s for s in seconds if s is not None)
    return Usage(server, time.process_time())


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _process_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # proc(5): the fields after the command name, which is in parentheses and may hold
    # spaces; utime and stime are fields 14 and 15, in clock ticks.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
