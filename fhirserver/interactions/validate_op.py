"""`$validate` (R4 resource-operation-validate.html, OperationDefinition Resource-validate):
would the server accept this content, generally, as a create, as an update of the
nominated resource, or would it accept the resource's deletion?

The answer is the list of issues (errors, warnings, information; "All OK" when there is
nothing to say); the REST layer wraps it in an OperationOutcome with 200 whatever it
holds. Only a request the operation cannot run is refused (400): an unknown mode, no
resource to check, update or delete away from the instance level. Nothing is stored.
Profiles: the `profile` input and every profile the resource claims in `meta.profile`
that the server knows (R4 validation.html#profile); a claimed unknown one is a warning.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhirserver.auth.access import Access
from fhirserver.cpu import CpuPool, work
from fhirserver.errors import BadRequest, FHIRError, Issue
from fhirserver.interactions import crud
from fhirserver.profiles.check import check_profile
from fhirserver.profiles.source import ProfileSource
from fhirserver.resources import codec
from fhirserver.resources.bindings import binding_warnings
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.validate import validate
from fhirserver.storage.base import Reader

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"
# R4 ValueSet resource-validation-mode; none given: check the content only.
MODES = frozenset({"create", "update", "delete", "profile"})
ALL_OK = Issue("All OK", "informational", "information")


@dataclass(frozen=True, slots=True)
class ValidateRequest:
    resource: JSONObject | None
    mode: str | None = None
    profiles: tuple[str, ...] = ()


def validate_request(
    resource_type: str, body: JSONObject | None, mode: str | None, profiles: tuple[str, ...]
) -> ValidateRequest:
    """The operation's inputs from a body (a resource, or a Parameters with `resource`,
    `mode`, `profile`) and the query string's `mode` / `profile`."""
    resource = body
    if (
        body is not None
        and body.get("resourceType") == "Parameters"
        and resource_type != "Parameters"
    ):
        validate(body, "Parameters")
        resource = None
        for parameter in body.get("parameter") or ():
            name = parameter.get("name")
            where = f"Parameters.parameter.where(name = '{name}')"
            if name == "resource" and isinstance(parameter.get("resource"), dict):
                resource = parameter["resource"]
            elif name == "mode" and isinstance(parameter.get("valueCode"), str):
                mode = parameter["valueCode"]
            elif name == "profile" and (value := _canonical(parameter)) is not None:
                profiles = (*profiles, value)
            else:
                raise BadRequest(
                    "$validate takes resource, mode (a code) and profile (a canonical)",
                    expression=where,
                )
    if mode is not None and mode not in MODES:
        raise BadRequest(
            f"Unknown mode {mode!r:.40}: create, update, delete or profile", expression="mode"
        )
    if resource is None and mode != "delete":
        raise BadRequest("$validate needs a resource to check", expression="resource")
    return ValidateRequest(resource, mode, profiles)


def _canonical(parameter: JSONObject) -> str | None:
    for key in ("valueCanonical", "valueUri", "valueUrl", "valueString"):
        if isinstance(parameter.get(key), str):
            return str(parameter[key])
    return None


async def validate_operation(
    store: Reader,
    profiles: ProfileSource,
    resource_type: str,
    resource_id: str | None,
    request: ValidateRequest,
    access: Access,
    cpu: CpuPool | None = None,
) -> list[Issue]:
    """`cpu`: where a large resource's content check runs (off the event loop)."""
    if request.mode in ("update", "delete") and resource_id is None:
        raise BadRequest(
            f"mode {request.mode} checks a nominated resource: POST [type]/[id]/$validate"
        )
    issues: list[Issue] = []
    if request.mode in ("update", "delete") and resource_id is not None:
        issues += await _exists(store, resource_type, resource_id, access)
    resource = request.resource
    if resource is not None and request.mode != "delete":
        size = len(codec.dumps(resource))
        issues += await work(cpu, _content, resource, resource_type, cost=size)
        if request.mode == "update" and resource_id is not None:
            issues += _same_id(resource, resource_type, resource_id)
        issues += await _profiles(store, profiles, resource, request.profiles)
    if not any(issue.severity in ("error", "fatal", "warning") for issue in issues):
        issues.append(ALL_OK)
    return issues


async def _exists(
    store: Reader, resource_type: str, resource_id: str, access: Access
) -> list[Issue]:
    try:
        await crud.read(store, resource_type, resource_id, access)
    except FHIRError as missing:
        return [Issue(str(missing), missing.code, "error", resource_type)]
    return []


def _content(resource: JSONObject, resource_type: str) -> list[Issue]:
    """The checks every write runs (structure, primitives, and the core layers the
    resources package adds to `validate`), as issues rather than a refusal."""
    try:
        validate(resource, resource_type)
    except FHIRError as invalid:
        return list(invalid.issues)
    # terminologies.html#binding: a code outside an extensible or preferred binding is
    # allowed, and worth a warning.
    return binding_warnings(resource_type, resource)


def _same_id(resource: JSONObject, resource_type: str, resource_id: str) -> list[Issue]:
    body_id = resource.get("id")
    if body_id == resource_id:
        return []
    text = (
        "The resource must carry its id for an update"
        if body_id is None
        else f"The resource's id {body_id!r:.70} is not the id in the URL, {resource_id!r}"
    )
    return [Issue(text, "invalid", "error", f"{resource_type}.id")]


async def _profiles(
    store: Reader, source: ProfileSource, resource: JSONObject, asked: tuple[str, ...]
) -> list[Issue]:
    claimed = (resource.get("meta") or {}).get("profile") or []
    urls = dict.fromkeys([*asked, *(str(url) for url in claimed if isinstance(url, str))])
    issues: list[Issue] = []
    for url in urls:
        try:
            profile = await source.find(store, url)
        except FHIRError as unusable:
            issues.extend(unusable.issues)
            continue
        if profile is None:
            severity = "error" if url in asked else "warning"
            issues.append(
                Issue(f"Profile {url} is not known to this server", "not-found", severity)
            )
            continue
        issues += check_profile(profile, resource)
        if profile.unchecked:
            issues.append(
                Issue(
                    f"Profile {url}: required bindings to ValueSets this server cannot expand"
                    f" on its own are left to the core checks: {', '.join(profile.unchecked)}",
                    "informational",
                    "information",
                )
            )
    return issues
