"""A FHIR package (the NPM-style .tgz every IG publishes, R4 packages: `package/package.json`
and one resource per JSON file under `package/`): its conformance resources."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import orjson

from fhirserver.resources.codec import JSONObject

# What an IG load stores: profiles, terminology, and search parameters.
LOADED_TYPES = ("CodeSystem", "ValueSet", "StructureDefinition", "SearchParameter")
_MAX_MEMBER_BYTES = 64 * 1024 * 1024


class PackageError(Exception):
    """Not a readable FHIR package."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    resources: tuple[JSONObject, ...]


def read_package(path: Path) -> Package:
    """The package's manifest and its resources of LOADED_TYPES (terminology first, so
    profiles that bind to it find it), each with a canonical `url`."""
    try:
        with tarfile.open(path, "r:gz") as archive:
            documents = {
                member.name: _read(archive, member)
                for member in archive.getmembers()
                if member.isfile()
                and member.name.startswith("package/")
                and member.name.count("/") == 1
                and member.name.endswith(".json")
                and member.size <= _MAX_MEMBER_BYTES
            }
    except (OSError, tarfile.TarError) as exc:
        raise PackageError(f"{path}: not a readable .tgz package ({exc})") from None
    manifest = documents.pop("package/package.json", None)
    if not isinstance(manifest, dict) or "name" not in manifest:
        raise PackageError(f"{path}: no package/package.json with a name")
    resources = [
        document
        for document in documents.values()
        if isinstance(document, dict)
        and document.get("resourceType") in LOADED_TYPES
        and isinstance(document.get("url"), str)
    ]
    resources.sort(key=lambda r: (LOADED_TYPES.index(r["resourceType"]), r["url"]))
    return Package(str(manifest["name"]), str(manifest.get("version", "")), tuple(resources))


def _read(archive: tarfile.TarFile, member: tarfile.TarInfo) -> object:
    handle = archive.extractfile(member)
    if handle is None:
        return None
    try:
        return orjson.loads(handle.read())
    except orjson.JSONDecodeError:
        return None
