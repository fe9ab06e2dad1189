"""An export's NDJSON files (Bulk Data IG 2.0.0 export.html "Bulk Data Output File
Request"; R4 nd-json.html): one series per resource type, split into parts at a size,
appended to one chunk at a time.

What has been written is recorded (name, lines, bytes) in the job after each chunk, and
the files are made durable (fsync) before that record is saved. A chunk cut short by a
crash leaves bytes past the recorded size, or a part that was never recorded: the next
append cuts the part back to its recorded size and a new part is opened empty, so a
resumed export writes each line exactly once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

OUTPUT, DELETED, ERROR = "output", "deleted", "error"
# The names files are given, and the only names served.
FILE_NAME = re.compile(r"(?:deleted-|error-)?[A-Za-z]{1,64}-[0-9]{1,6}\.ndjson")


@dataclass(frozen=True)
class OutputFile:
    name: str
    # The resource type of its lines (Bundle for deletions, OperationOutcome for errors).
    type: str
    # output, deleted or error: the manifest's array it is listed in.
    kind: str
    count: int = 0
    size: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutputFile:
        return cls(data["name"], data["type"], data["kind"], data["count"], data["size"])


@dataclass(frozen=True)
class Line:
    """One NDJSON line for a series: `kind` files of `series` (a resource type)."""

    kind: str
    series: str
    type: str
    data: bytes


def _name(kind: str, series: str, part: int) -> str:
    prefix = "" if kind == OUTPUT else f"{kind}-"
    return f"{prefix}{series}-{part}.ndjson"


def append(
    folder: Path, files: Sequence[OutputFile], lines: Sequence[Line], max_bytes: int
) -> tuple[OutputFile, ...]:
    """Append the lines to their series' last part (or a new one past `max_bytes`),
    durably; the files' new records. Blocking: run it in a thread."""
    folder.mkdir(parents=True, exist_ok=True)
    records = list(files)
    handles: dict[str, Any] = {}
    try:
        for line in lines:
            index = _last(records, line.kind, line.series)
            current = None if index is None else records[index]
            full = (
                current is not None and current.count and current.size + len(line.data) > max_bytes
            )
            if current is None or full:
                part = 1 if current is None else _part(current.name) + 1
                current = OutputFile(_name(line.kind, line.series, part), line.type, line.kind)
                records.append(current)
                index = len(records) - 1
            assert index is not None
            handle = handles.get(current.name)
            if handle is None:
                handle = _open_at(folder / current.name, current.size)
                handles[current.name] = handle
            handle.write(line.data)
            records[index] = replace(
                current, count=current.count + 1, size=current.size + len(line.data)
            )
        for handle in handles.values():
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        for handle in handles.values():
            handle.close()
    return tuple(records)


def _open_at(path: Path, size: int) -> Any:
    """The file opened for writing at `size`, anything past it cut off (a part never
    recorded starts empty)."""
    if size == 0:
        return path.open("wb")
    handle = path.open("r+b")
    handle.truncate(size)
    handle.seek(size)
    return handle


def _last(records: Sequence[OutputFile], kind: str, series: str) -> int | None:
    for index in range(len(records) - 1, -1, -1):
        record = records[index]
        if record.kind == kind and _series(record) == series:
            return index
    return None


def _series(record: OutputFile) -> str:
    stem = record.name.removesuffix(".ndjson").rsplit("-", 1)[0]
    return stem.removeprefix(f"{record.kind}-") if record.kind != OUTPUT else stem


def _part(name: str) -> int:
    return int(name.removesuffix(".ndjson").rsplit("-", 1)[1])
