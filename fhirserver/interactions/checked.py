"""The CPU-heavy first step of a write, as plain functions of picklable values, so that
`fhirserver.cpu.CpuPool` can run it in a worker process for a large body: the body
parsed, the resource validated and its index entries worked out (a single resource), or
a batch/transaction Bundle parsed and every entry's resource validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhirserver.errors import BadRequest, FHIRError
from fhirserver.interactions.transaction_entries import read_entries, read_entry
from fhirserver.resources import codec
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.validate import validate
from fhirserver.search.extract import index_entries
from fhirserver.search.params import Registry, registry
from fhirserver.search.query import IndexEntry


@dataclass(frozen=True, slots=True)
class CheckedResource:
    """A resource validated as `resource_type`, with its index entries (which depend on
    neither id, version nor lastUpdated, so they hold for the stamped resource too)."""

    resource: JSONObject
    index: tuple[IndexEntry, ...]


@dataclass(frozen=True, slots=True)
class CheckedBundle:
    """A batch or transaction Bundle whose entries were read and validated; `refused`:
    a batch's entries that failed, by index (a transaction's first failure is raised)."""

    bundle: JSONObject
    refused: dict[int, FHIRError] = field(default_factory=dict)


def portable(known: Registry) -> Registry | None:
    """`known` as a worker process should be given it: None for the shipped registry,
    which the worker has (and has compiled) itself."""
    return None if known is registry() else known


def check_resource(
    body: bytes, resource_type: str, known: Registry | None = None
) -> CheckedResource:
    resource = codec.load_object(body)
    validate(resource, resource_type)
    return CheckedResource(resource, index_entries(resource, known))


def check_bundle(body: bytes, base_url: str) -> CheckedBundle:
    bundle = codec.load_object(body)
    kind = bundle.get("resourceType")
    if kind != "Bundle":
        raise BadRequest(
            f"POST to the base takes a Bundle, not {kind!r}", expression="resourceType"
        )
    raw_entries = bundle.get("entry", [])
    if not isinstance(raw_entries, list) or bundle.get("type") not in ("batch", "transaction"):
        # Refused by the processing step with its own message.
        return CheckedBundle(bundle)
    if bundle["type"] == "transaction":
        read_entries(raw_entries, base_url)
        return CheckedBundle(bundle)
    refused: dict[int, FHIRError] = {}
    for index, raw in enumerate(raw_entries):
        try:
            read_entry(index, raw, base_url)
        except FHIRError as exc:
            refused[index] = exc
    return CheckedBundle(bundle, refused)
