"""The bulk export benchmark (issue 14 point 5, "Bounded memory"): the Synthea data
exported 1x and `scale` times over (bench.scaled_stores: each copy under new ids), each
by the server's export engine in a process of its own (bench.export_run), next to a
floor measured in the same run on the same file (bench.export_floor: the stored JSON
rows read and written as lines, nothing else).

For each size: resources/s and the ratio to the floor; peak RSS (VmHWM) and the ratio to
the 1x export's, the point being that it does not grow with the data; and the largest
RSS in the first and second half of the run, which are level once SQLite's page caches
(PRAGMA cache_size, 2 MiB per reader connection: a cap, not a share of the data) have
filled.

Sizes 1x, `scale`x and 2 * `scale`x: the 10x peak is above the 1x one, and the 20x run
shows whether that is a plateau (fixed ceilings reached in a longer run) or growth with
the data. Beside each peak: SQLite's heap high-water and the store threads the export
ran on, the two ceilings that make up the difference (each store thread brings a
connection with its page cache, and a malloc arena that keeps its high-water; the
thread pool opens more of its reader threads the longer a run goes).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench import export_floor, export_run, scaled_stores, synthea
from bench.export_floor import ExportFloor
from bench.export_run import ExportRun
from bench.load_data import survey
from bench.params import Params

_WIDTH = 34


@dataclass(frozen=True, slots=True)
class SizeFigures:
    scale: int
    floor: ExportFloor
    export: ExportRun


def _say(line: str) -> None:
    print(f"export: {line}", flush=True)


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def _row(figure: str, value: str, baseline: str = "", ratio: float | None = None) -> str:
    shown = "" if ratio is None else f"{ratio:#.3g}".rstrip(".")
    return f"{figure:<{_WIDTH}} {value:>16}   {baseline:<28} {shown:>6}".rstrip()


def table(sizes: list[SizeFigures]) -> list[str]:
    base = sizes[0]
    lines = [f"{'figure':<{_WIDTH}} {'value':>16}   {'baseline':<28} {'ratio':>6}"]
    for size in sizes:
        run, floor, label = size.export, size.floor, f"{size.scale}x"
        lines += [
            _row(
                f"export {label} ({run.resources:,} res)",
                f"{run.per_second:,.0f} res/s",
                f"floor {floor.per_second:,.0f} res/s",
                run.per_second / floor.per_second,
            ),
            _row(
                f"export {label} peak RSS (VmHWM)",
                _mib(run.peak_kib),
                f"export {base.scale}x {_mib(base.export.peak_kib)}",
                run.peak_kib / base.export.peak_kib,
            ),
            _row(
                f"export {label} RSS 2nd half / 1st",
                _mib(run.second_half_kib),
                f"1st half {_mib(run.first_half_kib)}",
                run.second_half_kib / run.first_half_kib,
            ),
            _row(f"export {label} RSS before export", _mib(run.start_kib)),
            _row(
                f"export {label} SQLite heap peak",
                "n/a" if run.sqlite_peak_kib is None else _mib(run.sqlite_peak_kib),
                f"on {run.store_threads} store threads",
            ),
            _row(f"floor {label} peak RSS", _mib(floor.peak_kib)),
            _row(f"export {label} wall", f"{run.seconds:,.1f} s", f"floor {floor.seconds:,.2f} s"),
        ]
    if len(sizes) >= 3:
        middle, last = sizes[-2], sizes[-1]
        lines.append(
            _row(
                f"plateau: peak {last.scale}x / {middle.scale}x",
                _mib(last.export.peak_kib),
                f"export {middle.scale}x {_mib(middle.export.peak_kib)}",
                last.export.peak_kib / middle.export.peak_kib,
            )
        )
    return lines


async def run(params: Params) -> None:
    data = survey(synthea.DATA_DIR)
    sizes: list[SizeFigures] = []
    for scale in (1, params.load_scale, 2 * params.load_scale):
        store = await scaled_stores.ready(data, scale)
        with tempfile.TemporaryDirectory(prefix="fhirserver-export-") as scratch:
            temp = Path(scratch)
            floor = await export_floor.measure(store.path, temp / "floor.ndjson", store.current)
            _say(f"{scale}x floor {floor.per_second:,.0f} res/s in {floor.seconds:.2f} s")
            (temp / "export").mkdir()
            ran = await export_run.measure(store.path, temp / "export", store.current)
            _say(
                f"{scale}x export {ran.per_second:,.0f} res/s in {ran.seconds:.1f} s, "
                f"peak RSS {_mib(ran.peak_kib)}"
            )
        sizes.append(SizeFigures(scale, floor, ran))
    _say(
        f"system-level export of the Synthea data ({data.distinct:,} current resources) "
        f"1x, {params.load_scale}x and {2 * params.load_scale}x, from SQLite, default chunk "
        "and file size"
    )
    print("\n".join(table(sizes)))
