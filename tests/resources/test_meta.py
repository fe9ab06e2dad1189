"""Server-assigned ids (R4 resource.html#id: [A-Za-z0-9-.]{1,64}), as version 7 UUIDs
(RFC 9562 section 5.7)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from fhirserver.resources import meta

MOMENT = datetime(2026, 12, 5, 23, 0, tzinfo=UTC)


def test_a_new_id_is_a_valid_fhir_id_and_a_version_7_uuid() -> None:
    new = meta.new_id(MOMENT)
    assert meta.check_id(new) == new
    parsed = uuid.UUID(new)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert str(parsed) == new  # lower-case hex: text order is the UUID's order
    assert parsed.int >> 80 == int(MOMENT.timestamp() * 1000)


def test_ids_sort_in_the_order_of_their_moments() -> None:
    moments = [MOMENT + timedelta(milliseconds=step) for step in range(0, 5000, 7)]
    ids = [meta.new_id(moment) for moment in moments]
    assert ids == sorted(ids)


def test_ids_of_one_millisecond_differ() -> None:
    ids = {meta.new_id(MOMENT) for _ in range(10_000)}
    assert len(ids) == 10_000
