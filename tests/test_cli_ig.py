"""`fhirserver ig load PACKAGE.tgz` (R4 packages; README "Validation and profiles"):
stores a package's CodeSystems, ValueSets, StructureDefinitions and SearchParameters
through the normal write path; loading again updates the same resources."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from fhirserver.cli import main
from fhirserver.search.parse import parse_search
from fhirserver.storage.sqlite import SqliteStore
from tests.conftest import SHARED_DATA

US_CORE_TGZ = SHARED_DATA / "ig" / "hl7.fhir.us.core-3.1.0.tgz"


async def _stored(path: Path) -> dict[str, int]:
    store = SqliteStore(str(path))
    await store.open()
    try:
        counts = {}
        for kind in ("CodeSystem", "ValueSet", "StructureDefinition", "SearchParameter"):
            query = parse_search((kind,), [("_summary", "count"), ("_total", "accurate")])
            counts[kind] = (await store.search(query)).total or 0
        return counts
    finally:
        await store.close()


def test_ig_load_us_core_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "fhir.sqlite"
    for _ in range(2):
        with pytest.raises(SystemExit) as exited:
            main(["ig", "load", str(US_CORE_TGZ), "--store", str(store)])
        assert exited.value.code == 0
    assert "loaded hl7.fhir.us.core 3.1.0" in capsys.readouterr().out
    expected = {"CodeSystem": 5, "ValueSet": 31, "StructureDefinition": 29, "SearchParameter": 74}
    assert asyncio.run(_stored(store)) == expected


def test_a_file_that_is_no_package_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "not.tgz"
    bad.write_text("hello")
    with pytest.raises(SystemExit) as exited:
        main(["ig", "load", str(bad), "--store", str(tmp_path / "fhir.sqlite")])
    assert exited.value.code == 2
    assert "not a readable .tgz package" in capsys.readouterr().err
    assert not (tmp_path / "fhir.sqlite").exists()
