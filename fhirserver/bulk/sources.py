"""What `fhirserver import` reads: files cut into chunks a worker can take alone.

A Bundle file (`.json`) is one chunk: a transaction must be seen whole. An NDJSON file
(`.ndjson`, `.jsonl`) is cut at line ends into chunks of bounded size, found by
scanning bytes, so that neither the reader nor a worker ever holds a whole large file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

NDJSON_SUFFIXES = (".ndjson", ".jsonl")
BUNDLE_SUFFIXES = (".json",)
CHUNK_BYTES = 2 * 1024 * 1024
CHUNK_LINES = 1000
_BLOCK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Chunk:
    path: str
    kind: Literal["bundle", "ndjson"]
    # Byte range [start, end) of the file, and the line number `start` is on.
    start: int
    end: int
    first_line: int = 1

    @property
    def size(self) -> int:
        return self.end - self.start


def input_files(paths: Iterable[str]) -> list[Path]:
    """The files named, with directories expanded to the Bundle and NDJSON files in
    them (sorted, so that an import is repeatable)."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and p.name.endswith(NDJSON_SUFFIXES + BUNDLE_SUFFIXES)
                )
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{name}: no such file or directory")
    return found


def chunks(path: Path) -> Iterator[Chunk]:
    size = path.stat().st_size
    if not path.name.endswith(NDJSON_SUFFIXES):
        yield Chunk(str(path), "bundle", 0, size)
        return
    start, line, lines_in_chunk, position = 0, 1, 0, 0
    with path.open("rb") as stream:
        while block := stream.read(_BLOCK):
            offset = 0
            while (newline := block.find(b"\n", offset)) != -1:
                offset = newline + 1
                lines_in_chunk += 1
                end = position + offset
                if lines_in_chunk >= CHUNK_LINES or end - start >= CHUNK_BYTES:
                    yield Chunk(str(path), "ndjson", start, end, line)
                    start, line, lines_in_chunk = end, line + lines_in_chunk, 0
            position += len(block)
    if start < size:
        yield Chunk(str(path), "ndjson", start, size, line)
