"""`Observation/$lastn` over HTTP (R4 observation-operation-lastn.html): GET with the
search parameters and `max` in the query string, or POST with `max` in a Parameters
body (R4 operations.html#executing). The answer is a searchset Bundle of the matches,
newest first, with its total."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhirserver.errors import BadRequest
from fhirserver.interactions.lastn import lastn
from fhirserver.resources import codec
from fhirserver.resources.validate import validate
from fhirserver.rest.bundles import searchset_bundle
from fhirserver.rest.endpoints import read_options
from fhirserver.rest.negotiation import (
    RESOURCE_TYPES,
    read_body,
    require_content_type,
    response_format,
)
from fhirserver.rest.responses import fhir_response
from fhirserver.search.result_params import FORMAT_PARAMS
from fhirserver.storage.base import SearchResult, Store


async def observation_lastn(request: Request, resource_type: str, code: str) -> Response:
    fmt = response_format(request)
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in FORMAT_PARAMS]
    if request.method == "POST":
        params += await _posted_max(request)
    options = read_options(request)
    store: Store = request.app.state.store
    found = await lastn(store, params, options)
    result = SearchResult(found.matches, [], len(found.matches), None, None)
    bundle = searchset_bundle(options.base_url, "/Observation/$lastn", params, found.query, result)
    return fhir_response(bundle, fmt)


async def _posted_max(request: Request) -> list[tuple[str, str]]:
    """The `max` of a POSTed Parameters body (the OperationDefinition's only input)."""
    raw = await read_body(request, request.app.state.settings.max_body_bytes)
    if not raw.strip():
        return []
    require_content_type(request, RESOURCE_TYPES)
    body = codec.load_object(raw)
    if body.get("resourceType") != "Parameters":
        raise BadRequest("The body of POST Observation/$lastn must be a Parameters resource")
    validate(body, "Parameters")
    given: list[tuple[str, str]] = []
    for parameter in body.get("parameter") or []:
        where = f"Parameters.parameter.where(name = '{parameter.get('name')}')"
        value = parameter.get("valuePositiveInt")
        if parameter.get("name") != "max" or not isinstance(value, int):
            raise BadRequest("$lastn takes one input, max (a positiveInt)", expression=where)
        given.append(("max", str(value)))
    return given
