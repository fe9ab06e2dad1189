"""`Patient/[id]/$everything` and `Patient/$everything` over HTTP (R4
patient-operations.html#everything): GET with the inputs in the query string, or POST
with them in a Parameters body (R4 operations.html#executing: an operation that
changes nothing may be called with GET). The answer is a searchset Bundle whose `next`
link, a GET, pages on through the same snapshot."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhirserver.clock import Clock
from fhirserver.interactions.everything import EverythingPage, everything, everything_request
from fhirserver.interactions.operations import definition, input_parameters
from fhirserver.resources import codec
from fhirserver.rest.bundles import searchset_bundle
from fhirserver.rest.endpoints import read_options
from fhirserver.rest.negotiation import (
    RESOURCE_TYPES,
    read_body,
    require_content_type,
    response_format,
)
from fhirserver.rest.responses import fhir_response
from fhirserver.search.query import SearchQuery
from fhirserver.search.result_params import FORMAT_PARAMS
from fhirserver.storage.base import SearchResult, Store

PATIENT, CODE = "Patient", "everything"


async def patient_everything(
    request: Request, resource_type: str, resource_id: str, code: str
) -> Response:
    """GET|POST Patient/[id]/$everything: one patient's record."""
    return await _everything(request, resource_id)


async def all_patients_everything(request: Request, resource_type: str, code: str) -> Response:
    """GET|POST Patient/$everything: the records of every patient the token may read."""
    return await _everything(request, None)


async def _everything(request: Request, patient_id: str | None) -> Response:
    fmt = response_format(request)
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in FORMAT_PARAMS]
    if request.method == "POST":
        params += await _posted_parameters(request)
    options = read_options(request)
    store: Store = request.app.state.store
    clock: Clock = request.app.state.writes.clock
    asked = everything_request(patient_id, params, options)
    page = await everything(store, asked, options.access, clock)
    path = f"/{PATIENT}/{patient_id}/${CODE}" if patient_id else f"/{PATIENT}/${CODE}"
    return fhir_response(_bundle(options.base_url, path, params, page), fmt)


async def _posted_parameters(request: Request) -> list[tuple[str, str]]:
    """The inputs of a POSTed Parameters body (none for an empty body), checked against
    the OperationDefinition, as query-string pairs."""
    raw = await read_body(request, request.app.state.settings.max_body_bytes)
    if not raw.strip():
        return []
    require_content_type(request, RESOURCE_TYPES)
    given = input_parameters(definition(PATIENT, CODE), codec.load_object(raw))
    return [(name, str(value)) for name, values in given.items() for value in values]


def _bundle(
    base_url: str, path: str, params: list[tuple[str, str]], page: EverythingPage
) -> dict[str, object]:
    """A searchset: the compartment's resources as matches, the referenced ones as
    includes; no total (counting the whole record would read it all on every page)."""
    result = SearchResult(page.members, page.referenced, None, page.next_cursor, None)
    return searchset_bundle(base_url, path, params, SearchQuery((PATIENT,)), result)
