"""US Core 3.1.0 (tests may read ../shared/data; the server never does)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhirserver.profiles.package import Package, read_package
from fhirserver.resources.codec import JSONObject
from tests.conftest import SHARED_DATA

US_CORE_TGZ: Path = SHARED_DATA / "ig" / "hl7.fhir.us.core-3.1.0.tgz"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition"


@pytest.fixture(scope="session")
def us_core() -> Package:
    return read_package(US_CORE_TGZ)


def definition(package: Package, url: str) -> JSONObject:
    return next(r for r in package.resources if r["url"] == url)
