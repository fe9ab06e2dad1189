"""The terminology tables shipped in fhirserver/resources/derived/ are what
scripts/derive_terminology.py makes from the official R4 definitions today (R4
terminologies.html#binding, valueset.html#compose): re-run into a temporary folder,
byte for byte the same, so the committed files cannot drift from the script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "derive_terminology.py"
DEFINITIONS = ROOT.parent / "shared" / "data" / "r4" / "definitions"
SHIPPED = ROOT / "fhirserver" / "resources" / "derived"
TABLES = ("bindings.json.gz", "valuesets.json.gz", "codesystems.json.gz")


def test_terminology_tables_are_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--definitions", str(DEFINITIONS), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(TABLES)
    for name in TABLES:
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), (
            f"{name} is stale: run `make derive` and commit fhirserver/resources/derived/"
        )
