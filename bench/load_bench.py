"""The bulk-loading benchmark end to end: the Synthea Bundles loaded four ways, each into
a fresh SQLite file in a temp dir, then one table (bench.load_report).

1. the floor: a bare executemany of the JSON (bench.load_floor);
2. over HTTP: the Bundles POSTed to a real server by concurrent clients (bench.load_http);
3. `fhirserver import` of the Bundle files, then the same again into the same store,
   which must update, not duplicate (bench.load_import);
4. `fhirserver import` of the same data as NDJSON (bench.load_scaled), once 1x and once
   `scale` times as large, for the large import's peak memory next to the small one's:
   against the same format, so that only the size differs (at scale 1, the two runs show
   how much the figures vary from run to run).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench import load_floor, load_http, load_import, load_scaled, synthea
from bench.load_data import survey
from bench.load_report import LoadFigures, table
from bench.params import Params


def _say(line: str) -> None:
    print(f"load: {line}", flush=True)


async def run(params: Params) -> None:
    data = survey(synthea.DATA_DIR)
    _say(
        f"{len(data.entries)} Bundles from {data.directory}, {data.total:,} resources, "
        f"{data.distinct:,} distinct fullUrls"
    )
    with tempfile.TemporaryDirectory(prefix="fhirserver-load-") as scratch:
        temp = Path(scratch)
        floor = await load_floor.measure(data, temp / "floor.sqlite")
        _say(f"floor {floor.per_second:,.0f} res/s in {floor.seconds:.1f} s")
        http = await load_http.measure(data, temp / "http.sqlite", params.load_concurrency)
        _say(f"http {http.per_second:,.0f} res/s in {http.seconds:.1f} s")
        imported = temp / "import.sqlite"
        runs = []
        for label in ("import", "re-import"):
            runs.append(
                await load_import.run(
                    label,
                    [data.directory],
                    imported,
                    params.import_workers,
                    resources=data.total,
                    current=data.distinct,
                )
            )
            _say(f"{label} {runs[-1].per_second:,.0f} res/s in {runs[-1].seconds:.1f} s")
        ndjson = []
        for name, scale in (("small", 1), ("large", params.load_scale)):
            # At scale 1 both runs are 1x: the second shows the run-to-run variation.
            label = f"import {scale}x NDJSON{' again' if name == 'large' and scale == 1 else ''}"
            await load_scaled.write(data, temp / f"ndjson-{name}", scale)
            ndjson.append(
                await load_import.run(
                    label,
                    [temp / f"ndjson-{name}"],
                    temp / f"ndjson-{name}.sqlite",
                    params.import_workers,
                    resources=scale * data.total,
                    current=scale * data.distinct,
                )
            )
            _say(f"{label} {ndjson[-1].per_second:,.0f} res/s in {ndjson[-1].seconds:.1f} s")
    (first, again), (small, large) = runs, ndjson
    figures = LoadFigures(
        data, floor, http, first, again, small, large, params.load_scale, params.import_workers
    )
    print("\n".join(table(figures)))
