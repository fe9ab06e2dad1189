"""The shipped invariants table is what scripts/derive_invariants.py derives from the
official R4 definitions today (conformance-rules.html#constraints): the server reads only
the table, never ../shared, so a stale table would silently check old rules."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import orjson

from fhirserver.resources.native_invariants import native

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "derive_invariants.py"
SHIPPED = ROOT / "fhirserver" / "resources" / "derived" / "invariants.json.gz"


def test_the_shipped_table_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], check=True)
    assert (tmp_path / SHIPPED.name).read_bytes() == SHIPPED.read_bytes()


def test_the_table_marks_what_fhirpathpy_cannot_run() -> None:
    table = orjson.loads(gzip.decompress(SHIPPED.read_bytes()))
    unsupported = {row["key"] for rows in table.values() for row in rows if row["unsupported"]}
    assert unsupported == {"txt-1", "txt-2", "ctm-1"}
    assert all(row["key"] not in ("ele-1", "ext-1") for rows in table.values() for row in rows)


def test_every_native_form_matches_an_expression_of_the_table() -> None:
    """A native form stands for one exact expression: if the derived table changed it,
    fhirpathpy would take over silently; this says so instead."""
    table = orjson.loads(gzip.decompress(SHIPPED.read_bytes()))
    rows = [row for rows in table.values() for row in rows]
    natives = {row["key"] for row in rows if native(row["key"], row["expression"])}
    dom = {"dom-2", "dom-3", "dom-4", "dom-5"}
    assert natives == dom | {"obs-7", "per-1", "ref-1", "rng-2", "txt-1", "txt-2"}
