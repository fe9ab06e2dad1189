"""The CPU-heavy half of an import, run in worker processes: parse a chunk, turn it into
Bundle entries that keep their ids, and validate every entry.

Ids are kept so that importing the same files twice leaves the same resources, not two
copies (README, "Importing data"):
- a create (`POST`) whose fullUrl is a `urn:uuid:` / `urn:oid:` placeholder becomes an
  update (`PUT`) of the id the placeholder carries; references to the placeholder are
  rewritten to it here, so every entry can also be written on its own;
- a create with `ifNoneExist` stays a conditional create, idempotent by itself;
- a resource with an id (NDJSON line, collection entry) is written with that id;
- only a resource with neither an id nor a placeholder is created with a new id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fhirserver.bulk.sources import Chunk
from fhirserver.errors import BadRequest, FHIRError
from fhirserver.interactions.transaction_entries import read_entry
from fhirserver.resources import codec
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.references import rewrite_references
from fhirserver.search.extract import index_entries
from fhirserver.search.query import IndexEntry

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass(frozen=True, slots=True)
class Problem:
    where: str
    message: str
    # Line number or entry index in the file: what came before it, and what after.
    position: int = 0


@dataclass(slots=True)
class Prepared:
    """A chunk made ready to write. A transaction is written whole or not at all;
    other entries one by one in effect, each reported where it failed."""

    chunk: Chunk
    mode: Literal["transaction", "independent"]
    # Bundle entries (request + resource), validated; pickled back to the writer.
    entries: list[JSONObject] = field(default_factory=list)
    # Where each entry came from: "file line n" or "file entry n", and that n.
    places: list[str] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    # Each entry's index entries, worked out here to spare the single writer the work.
    indexes: list[tuple[IndexEntry, ...] | None] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def cut_at_first_problem(self) -> None:
        """Keep only the entries before the first problem, and that problem."""
        if not self.problems:
            return
        first = min(self.problems, key=lambda problem: problem.position)
        keep = [i for i, position in enumerate(self.positions) if position < first.position]
        self.entries = [self.entries[i] for i in keep]
        self.places = [self.places[i] for i in keep]
        self.positions = [self.positions[i] for i in keep]
        self.indexes = [self.indexes[i] for i in keep]
        self.problems = [first]


def prepare(chunk: Chunk) -> Prepared:
    """Never raises: everything wrong with the input is a Problem."""
    try:
        if chunk.kind == "ndjson":
            return _prepare_lines(chunk)
        return _prepare_bundle(chunk)
    except (OSError, RecursionError, MemoryError) as exc:
        # The file vanished or changed under us, or is beyond what can be parsed.
        return Prepared(chunk, "independent", problems=[Problem(chunk.path, repr(exc))])


def _prepare_lines(chunk: Chunk) -> Prepared:
    prepared = Prepared(chunk, "independent")
    with Path(chunk.path).open("rb") as stream:
        stream.seek(chunk.start)
        data = stream.read(chunk.size)
    for number, line in enumerate(data.split(b"\n"), chunk.first_line):
        if not line.strip():
            continue
        where = f"{chunk.path} line {number}"
        try:
            raw = _stored_as_is(codec.load_object(line, "The line"), None)
        except FHIRError as exc:
            prepared.problems.append(Problem(where, str(exc), number))
            continue
        _add(prepared, raw, where, number)
    return prepared


def _prepare_bundle(chunk: Chunk) -> Prepared:
    prepared = Prepared(chunk, "independent")
    try:
        document = codec.load_object(Path(chunk.path).read_bytes(), "The file")
        if document.get("resourceType") != "Bundle":
            _add(prepared, _stored_as_is(document, None), chunk.path, 0)
            return prepared
    except FHIRError as exc:
        prepared.problems.append(Problem(chunk.path, str(exc)))
        return prepared
    kind = document.get("type")
    raw_entries = document.get("entry", [])
    if not isinstance(raw_entries, list):
        prepared.problems.append(Problem(chunk.path, "Bundle.entry must be a list"))
        return prepared
    if kind == "transaction":
        prepared.mode = "transaction"
    entries: list[Any] = []
    for index, raw in enumerate(raw_entries):
        try:
            entries.append(_entry_of(kind, raw))
        except FHIRError as exc:
            prepared.problems.append(Problem(f"{chunk.path} entry {index}", str(exc), index))
            entries.append(None)
    _keep_ids(entries)
    for index, raw in enumerate(entries):
        if raw is not None:
            _add(prepared, raw, f"{chunk.path} entry {index}", index)
    if prepared.mode == "transaction" and prepared.problems:
        # A transaction is all or nothing: one bad entry and none is written.
        prepared.entries, prepared.places, prepared.positions, prepared.indexes = [], [], [], []
    return prepared


def _entry_of(kind: Any, raw: Any) -> Any:
    """A batch or transaction entry as it is; any other Bundle's entry (a collection,
    a searchset...) as its resource stored under its own id."""
    if kind in ("transaction", "batch") or not isinstance(raw, dict):
        return raw
    resource = raw.get("resource")
    if not isinstance(resource, dict):
        raise BadRequest("The entry has no resource", expression="resource")
    full_url = raw.get("fullUrl")
    return _stored_as_is(resource, full_url if isinstance(full_url, str) else None)


def _stored_as_is(resource: JSONObject, full_url: str | None) -> JSONObject:
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        raise BadRequest("The resource has no resourceType", expression="resourceType")
    resource_id = resource.get("id")
    entry: JSONObject = {"resource": resource}
    if full_url is not None:
        entry["fullUrl"] = full_url
    if isinstance(resource_id, str):
        entry["request"] = {"method": "PUT", "url": f"{resource_type}/{resource_id}"}
    else:
        entry["request"] = {"method": "POST", "url": str(resource_type)}
    return entry


def _placeholder_id(full_url: str) -> str | None:
    for prefix in ("urn:uuid:", "urn:oid:"):
        if full_url.startswith(prefix) and _ID.fullmatch(full_url[len(prefix) :]):
            return full_url[len(prefix) :]
    return None


def _keep_ids(entries: list[Any]) -> None:
    targets: dict[str, str] = {}
    for raw in entries:
        if not isinstance(raw, dict):
            continue
        request, resource, full_url = raw.get("request"), raw.get("resource"), raw.get("fullUrl")
        if not (
            isinstance(request, dict)
            and request.get("method") == "POST"
            and "ifNoneExist" not in request
            and isinstance(resource, dict)
            and isinstance(full_url, str)
        ):
            continue
        resource_id = _placeholder_id(full_url)
        if resource_id is None:
            continue
        reference = f"{resource.get('resourceType')}/{resource_id}"
        raw["request"] = {**request, "method": "PUT", "url": reference}
        resource["id"] = resource_id
        targets[full_url] = reference
    if targets:
        for raw in entries:
            if isinstance(raw, dict) and isinstance(raw.get("resource"), dict):
                rewrite_references(raw["resource"], targets.get)


def _add(prepared: Prepared, raw: Any, where: str, position: int) -> None:
    try:
        entry = read_entry(len(prepared.entries), raw, "")
    except FHIRError as exc:
        prepared.problems.append(Problem(where, str(exc), position))
        return
    prepared.indexes.append(None if entry.resource is None else index_entries(entry.resource))
    prepared.entries.append(raw)
    prepared.places.append(where)
    prepared.positions.append(position)
