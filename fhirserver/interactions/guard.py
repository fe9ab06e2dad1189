"""Where interactions consult the access policy (DESIGN.md "Authorization").

Every read, search, history and write goes through these few checks with the request's
`Access`; the policy itself (`fhirserver.auth.policy`, `fhirserver.auth.confine`) decides.
A type the token may not reach at all is refused with 403; a single resource outside
the token's compartment or restriction is not found (404), as it would be by a search,
so a token cannot learn which ids exist in another patient's record. A write outside it
is refused with 403 (SMART 2.2: a patient-context write stays in the patient's
compartment).
"""

from __future__ import annotations

from collections.abc import Iterable

from fhirserver.auth.access import Access
from fhirserver.auth.confine import unrestricted, visible
from fhirserver.auth.policy import can
from fhirserver.auth.scopes import Interaction
from fhirserver.errors import Forbidden, NotFound
from fhirserver.resources import codec
from fhirserver.resources.codec import JSONObject
from fhirserver.storage.base import Version

# The REST method of a write -> the SMART interaction it needs. Update-as-create and
# patch are updates (SMART 2.2 "update ... including update-as-create").
_WRITES = {"POST": Interaction.CREATE, "PUT": Interaction.UPDATE, "PATCH": Interaction.UPDATE}


def require(access: Access, interaction: Interaction, resource_type: str) -> None:
    """403 unless `access` may `interaction` some resources of `resource_type`."""
    if not can(access, interaction, resource_type):
        raise Forbidden(f"The access token does not allow {interaction.value} on {resource_type}")


def require_visible(
    access: Access, interaction: Interaction, version: Version, unknown: str | None = None
) -> Version:
    """`version` if `access` may `interaction` it; else as if it did not exist: 404
    with `unknown`, the text a missing one gets."""
    if not shows(access, interaction, version):
        raise NotFound(unknown or f"{version.resource_type}/{version.id} is not known")
    return version


def hidden(access: Access, interaction: Interaction, current: Version | None) -> bool:
    """Whether a stored current version (a deletion too) is one the token may not
    `interaction`: then a write answers as if it were not there, before any
    precondition could tell its version."""
    return current is not None and not shows(access, interaction, current)


def shows(access: Access, interaction: Interaction, version: Version) -> bool:
    """Whether `access` may see this version. A deletion has no content to place it in
    a compartment: it shows only where the whole type is open to the token."""
    if unrestricted(access, interaction, (version.resource_type,)):
        return True
    if version.body is None:
        return False
    return visible(access, interaction, codec.load_object(version.body))


def only_visible(
    access: Access, interaction: Interaction, versions: Iterable[Version]
) -> list[Version]:
    return [version for version in versions if shows(access, interaction, version)]


def require_write(
    access: Access, method: str, current: Version | None, new: JSONObject | None
) -> None:
    """403 unless `access` may make this write: the new content, and the stored version
    it replaces or deletes (moving a resource out of a compartment, or overwriting one
    from another, needs both sides allowed)."""
    interaction = _WRITES.get(method, Interaction.DELETE) if new is not None else Interaction.DELETE
    resource_type = str(new["resourceType"]) if new is not None else _type_of(current)
    require(access, interaction, resource_type)
    if unrestricted(access, interaction, (resource_type,)):
        return
    sides = [new] if new is not None else []
    if current is not None and current.body is not None:
        sides.append(codec.load_object(current.body))
    for side in sides:
        if not visible(access, interaction, side):
            raise Forbidden(
                f"The access token does not allow {interaction.value} on this {resource_type}:"
                " it is outside the token's patient compartment or scope restriction"
            )


def _type_of(version: Version | None) -> str:
    assert version is not None, "a delete always has a current version"
    return version.resource_type
