"""The printed bulk-loading result: each way's resources/s against the floor, then peak
memory (the large NDJSON import's against the 1x one's, the point being it does not grow
with the input), CPU time, and the current resources each store ended with."""

from __future__ import annotations

from dataclasses import dataclass

from bench.load_data import Survey
from bench.load_floor import Floor
from bench.load_http import Http
from bench.load_import import Import

_WIDTH = 40


@dataclass(frozen=True, slots=True)
class LoadFigures:
    survey: Survey
    floor: Floor
    http: Http
    # `fhirserver import` of the Bundle files, then again into the same store.
    first: Import
    again: Import
    # `fhirserver import` of the data as NDJSON: 1x, and `scale` x.
    small: Import
    large: Import
    scale: int
    workers: int | None

    @property
    def imports(self) -> tuple[Import, ...]:
        return (self.first, self.again, self.small, self.large)


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def _rate(per_second: float) -> str:
    return f"{per_second:,.0f} res/s"


def _row(figure: str, value: str, baseline: str = "", ratio: float | None = None) -> str:
    # Three significant digits: the throughput ratios are small (0.03 says too little).
    shown = "" if ratio is None else f"{ratio:#.3g}".rstrip(".")
    return f"{figure:<{_WIDTH}} {value:>14}   {baseline:<26} {shown:>6}".rstrip()


def _rates(f: LoadFigures) -> list[str]:
    floor = f"floor {_rate(f.floor.per_second)}"
    return [
        _row("floor (bare executemany)", _rate(f.floor.per_second)),
        _row(
            f"http ({f.http.concurrency} clients)",
            _rate(f.http.per_second),
            floor,
            f.http.per_second / f.floor.per_second,
        ),
        *(
            _row(run.label, _rate(run.per_second), floor, run.per_second / f.floor.per_second)
            for run in (f.first, f.again, f.small)
        ),
        _row(
            f.large.label,
            _rate(f.large.per_second),
            f"{f.small.label.removeprefix('import ')} {_rate(f.small.per_second)}",
            f.large.per_second / f.small.per_second,
        ),
    ]


def _memory(f: LoadFigures) -> list[str]:
    floor = f"floor {_mib(f.floor.peak_kib)}"
    small = f.small.label.removeprefix("import ")
    return [
        _row("floor peak RSS", _mib(f.floor.peak_kib)),
        _row(
            "http server peak RSS (VmHWM)",
            _mib(f.http.peak_kib),
            floor,
            f.http.peak_kib / f.floor.peak_kib,
        ),
        *(
            _row(
                f"{run.label} peak RSS (tree)",
                _mib(run.tree_kib),
                floor,
                run.tree_kib / f.floor.peak_kib,
            )
            for run in (f.first, f.again, f.small)
        ),
        _row(
            f"{f.large.label} peak RSS (tree)",
            _mib(f.large.tree_kib),
            f"{small} {_mib(f.small.tree_kib)}",
            f.large.tree_kib / f.small.tree_kib,
        ),
        *(
            _row(f"{run.label} peak RSS (main VmHWM)", _mib(run.main_kib))
            for run in (f.first, f.again, f.small)
        ),
        _row(
            f"{f.large.label} peak RSS (main VmHWM)",
            _mib(f.large.main_kib),
            f"{small} {_mib(f.small.main_kib)}",
            f.large.main_kib / f.small.main_kib,
        ),
    ]


def _cpu(f: LoadFigures) -> list[str]:
    return [
        _row(
            "http server CPU",
            f"{f.http.server_cpu_seconds:,.1f} s",
            f"{f.http.server_cpu_seconds / f.http.resources * 1e6:,.0f} us/resource",
        ),
        *(
            _row(
                f"{run.label} CPU (tree)",
                f"{run.cpu_seconds:,.1f} s",
                f"{run.cpu_seconds / run.resources * 1e6:,.0f} us/resource",
            )
            for run in f.imports
        ),
    ]


def table(f: LoadFigures) -> list[str]:
    workers = "one per core" if f.workers is None else str(f.workers)
    return [
        f"bulk loading: {len(f.survey.entries)} Synthea transaction Bundles, "
        f"{f.survey.total:,} resources ({f.survey.distinct:,} distinct fullUrls); "
        f"import workers: {workers}; {f.scale}x NDJSON = {f.large.resources:,} resources",
        f"{'figure':<{_WIDTH}} {'value':>14}   {'baseline':<26} {'ratio':>6}",
        *_rates(f),
        *_memory(f),
        *_cpu(f),
        "import wall s (the CLI's own): "
        + ", ".join(f"{run.label} {run.seconds:.1f} ({run.cli_seconds:.1f})" for run in f.imports),
        f"current resources in the stores: floor rows {f.floor.rows:,}; "
        + ", ".join(f"after {run.label} {run.current:,}" for run in f.imports),
    ]
