"""Search result parameters (R4 search.html#return): how the answer is shaped, not
which resources match.

`_sort` (#sort), `_count` (#count), `_include` / `_revinclude` (#include, #revinclude),
`_summary` (#summary), `_elements` (#elements), `_total` (#total), and `_cursor`, this
server's opaque keyset page token. Criteria are parsed in `parse.py`, which hands the
result parameters here once they are collected; a repeated one counts once (its last
value), except `_include` and `_revinclude`, which add up.
"""

from __future__ import annotations

from dataclasses import replace

from fhirserver.errors import BadRequest
from fhirserver.resources.definitions import is_resource_type
from fhirserver.resources.elements import SUMMARY_MODES
from fhirserver.search.params import Registry, bad_modifier, registry
from fhirserver.search.query import ID, LAST_UPDATED, Include, SearchQuery, SortKey

DEFAULT_COUNT = 20
MAX_COUNT = 1000
SORTABLE = frozenset({"string", "token", "date", "number", "quantity", "reference", "uri"})
RESULT_PARAMS = frozenset(
    {"_sort", "_count", "_include", "_revinclude", "_summary", "_elements", "_total", "_cursor"}
)
# Parameters about the format of an HTTP answer (R4 http.html#parameters), handled by
# the REST layer: neither criteria nor result parameters.
FORMAT_PARAMS = frozenset({"_format", "_pretty"})
TOTAL_MODES = ("none", "estimate", "accurate")


def with_results(
    query: SearchQuery,
    results: dict[str, list[str]],
    max_count: int,
    known: Registry | None = None,
) -> SearchQuery:
    """`query` shaped by `results`: each result parameter as sent (name with any
    modifier) and its values in order; `_count` is capped at `max_count`. `known`: the
    search parameters (default: the shipped ones)."""
    known = known or registry()
    sort: tuple[SortKey, ...] = ()
    includes: list[Include] = []
    count, total, summary, cursor = query.count, "none", None, None
    elements: tuple[str, ...] = ()
    for name, values in results.items():
        base, _, modifier = name.partition(":")
        value = values[-1]
        if base == "_sort":
            sort = _sort(query.resource_types, value, known)
        elif base == "_count":
            if not value.isascii() or not value.isdigit() or len(value) > 9:
                raise BadRequest(
                    f"_count must be a whole number, not {value!r:.40}", expression=name
                )
            count = min(int(value), max_count)
        elif base in ("_include", "_revinclude"):
            if modifier not in ("", "iterate", "recurse"):
                raise bad_modifier(name, modifier, base)
            for item in values:
                includes.append(_include(item, base == "_revinclude", bool(modifier), name, known))
        elif base == "_summary":
            if value not in SUMMARY_MODES:
                raise BadRequest(
                    f"_summary must be one of {', '.join(SUMMARY_MODES)}", expression=name
                )
            summary = value
        elif base == "_elements":
            elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif base == "_total":
            if value not in TOTAL_MODES:
                raise BadRequest(f"_total must be one of {', '.join(TOTAL_MODES)}", expression=name)
            total = value
        elif base == "_cursor":
            cursor = value
    return replace(
        query,
        sort=sort,
        count=count,
        includes=tuple(includes),
        total=total,
        summary=summary,
        elements=elements,
        cursor=cursor,
    )


def _sort(types: tuple[str, ...], value: str, known: Registry) -> tuple[SortKey, ...]:
    keys = []
    for item in value.split(","):
        item = item.strip()
        descending = item.startswith("-")
        code = item.lstrip("-")
        kind = "special"
        if code not in (ID, LAST_UPDATED):
            param = known.shared(types, code)
            if param is None or param.type not in SORTABLE:
                raise BadRequest(f"Cannot sort by {code!r}", expression="_sort")
            kind = param.type
        keys.append(SortKey(code, descending, kind))
    return tuple(keys)


def _include(value: str, reverse: bool, iterate: bool, name: str, known: Registry) -> Include:
    if value == "*":
        return Include("*", "*", None, reverse, iterate)
    parts = value.split(":")
    if len(parts) not in (2, 3) or not is_resource_type(parts[0]):
        raise BadRequest(f"{name} takes Type:param[:Target], not {value!r}", expression=name)
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    if target is not None and not is_resource_type(target):
        raise BadRequest(f"Unknown target type {target!r} in {name}", expression=name)
    if code != "*":
        param = known.get(source, code)
        if param is None or param.type != "reference":
            raise BadRequest(f"{source}:{code} is not a reference parameter", expression=name)
    return Include(source, code, target, reverse, iterate)
