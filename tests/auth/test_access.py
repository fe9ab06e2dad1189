"""DESIGN.md "Authorization": with authorization off, `Access` is "everything"; an
`Access` is a plain value that carries no secret."""

from __future__ import annotations

import dataclasses

import pytest

from fhirserver.auth.access import Access
from fhirserver.auth.policy import UNRESTRICTED, alternatives, can
from fhirserver.auth.scopes import Interaction, parse_scopes
from fhirserver.resources.definitions import resource_types


def test_everything_allows_every_interaction_on_every_type_unrestricted() -> None:
    everything = Access.everything()
    for resource_type in resource_types():
        for interaction in Interaction:
            assert can(everything, interaction, resource_type)
    assert alternatives(everything, Interaction.SEARCH, "Observation") == (UNRESTRICTED,)
    assert everything.client_id is None and everything.patient is None


def test_access_is_frozen_and_equal_by_value() -> None:
    one = Access(client_id="app", scopes=parse_scopes("patient/*.rs"), patient="123")
    assert one == Access(client_id="app", scopes=parse_scopes("patient/*.rs"), patient="123")
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.patient = "456"  # type: ignore[misc]
