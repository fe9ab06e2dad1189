"""The shipped invariants table is what scripts/derive_invariants.py derives from the
official R4 definitions today (conformance-rules.html#constraints): the server reads only
the table, never ../shared, so a stale table would silently check old rules."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import orjson

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
