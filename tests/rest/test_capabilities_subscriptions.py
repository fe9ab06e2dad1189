"""CapabilityStatement, Subscription entry (Backport IG 1.1.0 "Capability Statements",
Capabilities.fsh backport-subscription-server-r4; Operations.fsh): the entry names the
$status, $events and $get-ws-binding-token operations by the IG's OperationDefinition
canonicals, next to the topics and the backport-subscription profile."""

from __future__ import annotations

import httpx

OPERATION_DEFINITION = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/"


async def test_the_subscription_entry_lists_the_backport_operations(
    client: httpx.AsyncClient,
) -> None:
    statement = (await client.get("/metadata")).json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    operations = {op["name"]: op["definition"] for op in resources["Subscription"]["operation"]}
    assert operations == {
        "status": OPERATION_DEFINITION + "backport-subscription-status",
        "events": OPERATION_DEFINITION + "backport-subscription-events",
        "get-ws-binding-token": OPERATION_DEFINITION + "backport-subscription-get-ws-binding-token",
        # R4 resource-operation-validate.html: on every type.
        "validate": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
    }
    # The topics are still there, and no other resource got the operations.
    assert resources["Subscription"]["extension"]
    assert [op["name"] for op in resources["Basic"]["operation"]] == ["validate"]
