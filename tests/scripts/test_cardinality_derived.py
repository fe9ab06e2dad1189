"""The shipped required-elements and choice-groups table is what
scripts/derive_cardinality.py derives from the official R4 definitions today (R4
elementdefinition.html `min`, formats.html#choice): the structure walk reads only the
table, so a stale one would silently check old cardinalities."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "derive_cardinality.py"
SHIPPED = ROOT / "fhirserver" / "resources" / "derived" / "cardinality.json.gz"


def test_the_shipped_table_is_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)], check=True, capture_output=True
    )
    assert (tmp_path / SHIPPED.name).read_bytes() == SHIPPED.read_bytes(), (
        "cardinality.json.gz is stale: run `make derive` and commit it"
    )


def test_a_backbone_reached_by_several_paths_keeps_its_required_elements() -> None:
    """TestScript.test.action.assert reuses TestScript.setup.action.assert (a
    contentReference); ClaimResponse adjudications sit under item, detail and addItem."""
    table = orjson.loads(gzip.decompress(SHIPPED.read_bytes()))
    assert "warningOnly" in table["TestScript_Assert"]["required"]
    assert table["ClaimResponse_Adjudication"]["required"] == ["category"]
    assert table["Observation"]["required"] == ["code", "status"]
    assert "valueQuantity" in table["Observation"]["choices"]["value"]
