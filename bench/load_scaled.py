"""An NDJSON set `scale` times the Synthea data, to show import memory does not grow with
the input.

Copy k (0 <= k < scale) holds every resource of every Bundle with a fresh, deterministic
id, uuid5(k and its fullUrl), and every `urn:uuid:X` reference rewritten to
`Type/<uuid5(k and urn:uuid:X)>`, the type found by a first pass over all fullUrls. The
copies never share an id, so the store ends with `scale` times the distinct resources.
One resource a line, one file per resource type (`Observation.ndjson`, ...): the way a
bulk export ($export) hands data over.

Written streaming, one Bundle in memory at a time, by a process of its own
(`python -m bench.load_scaled DATA_DIR OUT_DIR SCALE`), which prints its progress.
"""

from __future__ import annotations

import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import orjson

from bench import child
from bench.load_data import LoadBenchError, Survey, bundle_files, bundles

URN = "urn:uuid:"
NAMESPACE = uuid.UUID("6f0c1a8e-3b57-4d0e-9a53-5e2b0f1c7d44")  # this bench's, arbitrary
PROGRESS_SECONDS = 10.0


def new_id(copy: int, full_url: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{copy} {full_url}"))


def _rewrite(node: Any, copy: int, types: dict[str, str]) -> None:
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str) and reference.startswith(URN):
            target = types.get(reference)
            if target is None:
                raise LoadBenchError(f"a reference to {reference}, which no Bundle holds")
            node["reference"] = f"{target}/{new_id(copy, reference)}"
        for value in node.values():
            _rewrite(value, copy, types)
    elif isinstance(node, list):
        for value in node:
            _rewrite(value, copy, types)


def generate(files: list[Path], out_dir: Path, scale: int) -> int:
    """Write the copies into `out_dir`; the number of lines (resources) written."""
    types: dict[str, str] = {}
    entries_in_all = 0
    for _, entries in bundles(files):
        entries_in_all += len(entries)
        types.update((entry["fullUrl"], entry["resource"]["resourceType"]) for entry in entries)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = 0
    started = last_report = time.perf_counter()
    with ExitStack() as stack:
        outputs: dict[str, IO[bytes]] = {}
        for number, file in enumerate(files, 1):
            data = file.read_bytes()
            for copy in range(scale):
                # Parsed again for each copy: the rewriting is in place.
                for entry in orjson.loads(data)["entry"]:
                    resource = entry["resource"]
                    resource_type = resource["resourceType"]
                    resource["id"] = new_id(copy, entry["fullUrl"])
                    _rewrite(resource, copy, types)
                    output = outputs.get(resource_type)
                    if output is None:
                        path = out_dir / f"{resource_type}.ndjson"
                        output = outputs[resource_type] = stack.enter_context(path.open("wb"))
                    output.write(orjson.dumps(resource) + b"\n")
                    written += 1
            now = time.perf_counter()
            if now - last_report >= PROGRESS_SECONDS or number == len(files):
                last_report = now
                print(
                    f"load: generating {scale}x NDJSON: {number}/{len(files)} bundles, "
                    f"{written:,} resources, {now - started:.0f} s",
                    flush=True,
                )
    if written != scale * entries_in_all:
        raise LoadBenchError(f"wrote {written} NDJSON lines, not {scale} x {entries_in_all}")
    return written


async def write(survey: Survey, out_dir: Path, scale: int) -> None:
    """Generate the set in a process of its own; it checks its own count."""
    command = [
        sys.executable,
        "-m",
        "bench.load_scaled",
        str(survey.directory),
        str(out_dir),
        str(scale),
    ]
    async with child.started(command) as process:
        await process.wait()
    if process.returncode != 0:
        raise LoadBenchError(f"generating the {scale}x NDJSON exited {process.returncode}")


def main() -> None:
    directory, out_dir, scale = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    try:
        written = generate(bundle_files(directory), out_dir, scale)
    except LoadBenchError as error:
        sys.exit(f"load: {error}")
    size = sum(path.stat().st_size for path in out_dir.iterdir())
    print(f"load: {written:,} resources in {len(list(out_dir.iterdir()))} files, {size:,} bytes")


if __name__ == "__main__":
    main()
