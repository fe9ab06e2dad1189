"""The five interactions by their SMART v2 letters (scopes-and-launch-context.html), and
a granular category restriction, for the auth tests."""

from __future__ import annotations

from fhirserver.auth.scopes import Interaction

C, R, U, D, S = (
    Interaction.CREATE,
    Interaction.READ,
    Interaction.UPDATE,
    Interaction.DELETE,
    Interaction.SEARCH,
)
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
LAB = f"{CATEGORY}|laboratory"
