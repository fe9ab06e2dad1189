"""Where profiles come from: StructureDefinitions in the store (written like any
resource, or by `fhirserver ig load`) and those shipped in extensions/, found by
canonical URL (R4 references.html#canonical: `url`, an optional `|version`).

A compiled profile is kept per stored version, so an updated StructureDefinition is
compiled afresh; the cache belongs to one `ProfileSource`, which the app holds (no
module-level registry). ValueSets a profile binds to are read when it is compiled.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from functools import cache
from typing import Any

from fhirserver.conformance import load_resources
from fhirserver.profiles.model import CodeSet, Profile, compile_profile
from fhirserver.profiles.terminology import expand, systems_named
from fhirserver.resources import codec
from fhirserver.resources.codec import JSONObject
from fhirserver.resources.valuesets import expand as shipped_expansion
from fhirserver.search.parse import parse_search
from fhirserver.storage.base import Reader, Version

# A profile's compiled form: (url, where it came from and which version).
_Key = tuple[str, str]
# The default of Settings.profile_cache_size (FHIRSERVER_PROFILE_CACHE_SIZE).
PROFILE_CACHE_SIZE = 100


@cache
def shipped_definitions() -> Mapping[str, JSONObject]:
    """The StructureDefinitions in extensions/, by URL."""
    return {
        str(resource["url"]): resource
        for resource in load_resources("extensions")
        if resource.get("resourceType") == "StructureDefinition" and resource.get("url")
    }


async def stored_canonical(reader: Reader, resource_type: str, canonical: str) -> Version | None:
    """The newest current resource of `resource_type` with that canonical URL (and
    version, when given); None when the store has none. Unparsed: a profile's body is
    large, and its id and version tell whether the compiled form is still current."""
    url, _, version = canonical.partition("|")
    params = [("url", url), ("_count", "20")]
    if version:
        params.append(("version", version))
    found = await reader.search(parse_search((resource_type,), params))
    current = [v for v in found.matches if v.body is not None]
    return max(current, key=lambda v: v.last_updated, default=None)


async def find_canonical(reader: Reader, resource_type: str, canonical: str) -> Any | None:
    """As `stored_canonical`, parsed."""
    version = await stored_canonical(reader, resource_type, canonical)
    return None if version is None or version.body is None else codec.loads(version.body)


class ProfileSource:
    def __init__(
        self, shipped: Mapping[str, JSONObject] | None = None, size: int = PROFILE_CACHE_SIZE
    ) -> None:
        self._shipped = shipped_definitions() if shipped is None else shipped
        # Least recently used first: the canonical (with any |version) comes from the
        # client, and so does each stored version, so keeping every one compiled let
        # clients grow the server's memory without bound (issue 20 point 8).
        self._compiled: OrderedDict[_Key, Profile] = OrderedDict()
        self._size = size

    async def find(self, reader: Reader, canonical: str) -> Profile | None:
        """The profile at `canonical`; None when neither the store nor extensions/ has
        it. A StructureDefinition that is no usable profile raises ProfileError."""
        stored = await stored_canonical(reader, "StructureDefinition", canonical)
        definition: JSONObject | None = None
        if stored is not None and stored.body is not None:
            key = (canonical, f"{stored.id}/{stored.version}")
            if key not in self._compiled:
                definition = codec.loads(stored.body)
        else:
            definition = self._shipped.get(canonical.partition("|")[0])
            if definition is None:
                return None
            key = (canonical, "shipped")
        profile = self._compiled.get(key)
        if profile is None:
            assert definition is not None
            profile = compile_profile(definition, await _code_sets(reader, definition))
            self._compiled[key] = profile
            while len(self._compiled) > self._size:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        return profile


async def _code_sets(reader: Reader, definition: JSONObject) -> dict[str, CodeSet]:
    """The expansions of the ValueSets the profile binds required: from the store, else
    the R4 core ones the server ships."""
    urls = {
        str(binding["valueSet"]).split("|", 1)[0]
        for element in (definition.get("snapshot") or {}).get("element") or ()
        if (binding := element.get("binding") or {}).get("strength") == "required"
        and binding.get("valueSet")
    }
    found: dict[str, CodeSet] = {}
    for url in sorted(urls):
        value_set = await find_canonical(reader, "ValueSet", url)
        if value_set is None:
            # Not in the store: an R4 core ValueSet the server ships expanded, if it is one.
            shipped = shipped_expansion(url)
            if shipped is not None:
                found[url] = shipped.codings
            continue
        systems = {}
        for system in systems_named(value_set):
            code_system = await find_canonical(reader, "CodeSystem", system)
            if code_system is not None:
                systems[system] = code_system
        found[url] = expand(value_set, systems)
    return found
