"""Literal references read as `Type/id` (R4 references.html#literal: relative or
absolute URLs, with or without `_history`; contained `#id` and `urn:` placeholders are
not resources on this server)."""

from __future__ import annotations

from typing import Any

import pytest

from fhirserver.resources.references import local_reference


@pytest.mark.parametrize(
    ("reference", "local"),
    [
        ("Patient/p1", "Patient/p1"),
        ({"reference": "Patient/p1", "display": "Ann"}, "Patient/p1"),
        ("https://fhir.example/r4/Patient/p1", "Patient/p1"),
        ("Patient/p1/_history/3", "Patient/p1"),
        ("#contained", None),
        ("urn:uuid:0b5e8a36-9d2f-4d8e-9b43-1c2f1a7d2b11", None),
        ({"display": "Ann"}, None),
        ("p1", None),
        (None, None),
    ],
)
def test_local_reference(reference: Any, local: str | None) -> None:
    assert local_reference(reference) == local
