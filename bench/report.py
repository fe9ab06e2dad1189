"""The printed result: per interaction, req/s and the ratio fhirserver / baseline against
its aim; then the CPU time each request cost the server and the load client."""

from __future__ import annotations

from bench.measure import Figures, Measurement

BASELINE = "bare starlette+sqlite"
# The ratio fhirserver / baseline each interaction aims at.
# Issue 18: a create at 0.6 of the bare insert, a read at 0.9 of the bare read.
AIMS = {"create": 0.6, "read": 0.9}
# A load client keeping this share of one CPU busy likely set the pace itself.
CLIENT_BOUND = 0.9


def _throughput(name: str, ours: Measurement, baseline: Measurement, label: str) -> str:
    ratio = ours.rate.per_second / baseline.rate.per_second
    aim = AIMS[name]
    return (
        f"{name:<8} {label} {ours.rate.per_second:7.1f} req/s   "
        f"{BASELINE} {baseline.rate.per_second:7.1f} req/s   "
        f"ratio {ratio:.2f}   aim >= {aim:.1f} {'met' if ratio >= aim else 'MISSED'}"
    )


def _micros(measurement: Measurement) -> str:
    server = measurement.server_micros
    shown = "?" if server is None else f"{server:.0f}"
    return f"{shown:>5} + {measurement.client_micros:4.0f} us ({measurement.client_share:4.0%})"


def _cpu(name: str, ours: Measurement, baseline: Measurement, label: str) -> str:
    line = f"{name:<8} {label} {_micros(ours)}   {BASELINE} {_micros(baseline)}"
    if ours.server_micros is None or baseline.server_micros is None:
        return line
    # What the req/s ratio would be if each server were held back only by its own CPU.
    return f"{line}   server ratio {baseline.server_micros / ours.server_micros:.2f}"


def report(ours: Figures, baseline: Figures, label: str = "fhirserver") -> list[str]:
    """`label` names the fhirserver run (e.g. with --workers 2)."""
    pairs = {"create": (ours.create, baseline.create), "read": (ours.read, baseline.read)}
    lines = [
        *(_throughput(name, *pair, label) for name, pair in pairs.items()),
        "CPU per request, server + load client (share of one CPU the client kept busy):",
        *(_cpu(name, *pair, label) for name, pair in pairs.items()),
    ]
    bound = [
        name
        for name, pair in pairs.items()
        if max(measurement.client_share for measurement in pair) >= CLIENT_BOUND
    ]
    if bound:
        lines.append(
            f"note: the load client was near its CPU limit during {' and '.join(bound)}, so "
            "the req/s there show the client's pace more than a server's and pull the "
            "ratio towards 1; the server ratio compares the servers' own CPU cost"
        )
    return lines
