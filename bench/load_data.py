"""The Synthea transaction Bundles the bulk-loading bench loads, and what it expects of them.

The data is the search benchmark's (bench.synthea.DATA_DIR: BENCH_SYNTHEA_DIR, by default
/work/shared/data/synthea-2019), listed the same way. This module does not import
bench.synthea, which imports fhirserver, so that the floor's process stays bare.

`survey` reads every Bundle once, before anything is timed, for the counts each way of
loading is checked against: entries per file, all entries (28,041), and distinct fullUrls
(27,861: the Bundles repeat some Organization and Practitioner entries under the same
urn:uuid, so loading them by fullUrl writes those twice, the second time as an update).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


class LoadBenchError(RuntimeError):
    """A way of loading failed, or a figure could not be measured."""


@dataclass(frozen=True, slots=True)
class Survey:
    directory: Path
    # Entries in each Bundle file, in file order.
    entries: dict[Path, int]
    distinct: int
    largest_bytes: int

    @property
    def files(self) -> list[Path]:
        return list(self.entries)

    @property
    def total(self) -> int:
        return sum(self.entries.values())


def bundles(files: list[Path]) -> Iterator[tuple[Path, list[dict[str, Any]]]]:
    """Each file with its Bundle's entries, one file in memory at a time."""
    for file in files:
        bundle = orjson.loads(file.read_bytes())
        entries = bundle.get("entry") if isinstance(bundle, dict) else None
        if not isinstance(entries, list):
            raise LoadBenchError(f"{file.name} is not a Bundle with entries")
        yield file, entries


def bundle_files(directory: Path) -> list[Path]:
    """The Bundle files, sorted, as bench.synthea.bundle_files lists them."""
    files = sorted(directory.glob("*.json"))
    if not files:
        raise LoadBenchError(f"no Synthea Bundles (*.json) in {directory}")
    return files


def survey(directory: Path) -> Survey:
    files = bundle_files(directory)
    counts: dict[Path, int] = {}
    urls: set[str] = set()
    for file, entries in bundles(files):
        counts[file] = len(entries)
        urls.update(entry["fullUrl"] for entry in entries)
    return Survey(directory, counts, len(urls), max(f.stat().st_size for f in files))
