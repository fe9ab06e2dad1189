"""Native forms of the commonest or costliest R4 invariants (conformance-rules.html
#constraints), each the same rule as its FHIRPath expression, for speed.

fhirpathpy costs 10-20 µs for a simple expression, 50 µs for dom-4 on a resource with
contained resources, and milliseconds for dom-3 there (it walks
`%resource.descendants()` four times per contained resource). A native form is used
only for the exact expression it was written against (`native(key, expression)`): if the
definitions change, fhirpathpy takes over.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from html.parser import HTMLParser
from typing import Any

from fhirserver.resources import codec

# (node, %resource, %rootResource) -> whether the invariant holds.
Check = Callable[[Any, Any, Any], bool]

_DOM_3 = (
    "contained.where((('#'+id in (%resource.descendants().reference"
    " | %resource.descendants().as(canonical) | %resource.descendants().as(uri)"
    " | %resource.descendants().as(url))) or descendants().where(reference = '#').exists()"
    " or descendants().where(as(canonical) = '#').exists()"
    " or descendants().where(as(canonical) = '#').exists()).not()).trace('unmatched', id)"
    ".empty()"
)
_DOM_2 = "contained.contained.empty()"
_DOM_4 = "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()"
_DOM_5 = "contained.meta.security.empty()"
_REF_1 = (
    "reference.startsWith('#').not() or"
    " (reference.substring(1).trace('url') in %rootResource.contained.id.trace('ids'))"
)
_OBS_7 = (
    "value.empty() or"
    " component.code.where(coding.intersect(%resource.code.coding).exists()).empty()"
)
_RNG_2 = "low.empty() or high.empty() or (low <= high)"
_PER_1 = "start.hasValue().not() or end.hasValue().not() or (start <= end)"
_HTML_CHECKS = "htmlChecks()"
# The elements narrative.html allows (HTML 4.0 chapters 7-11 and 11-16, as the reference
# validator lists them).
_XHTML_ELEMENTS = frozenset(
    {
        "p",
        "br",
        "div",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "a",
        "span",
        "b",
        "em",
        "i",
        "strong",
        "small",
        "big",
        "tt",
        "dfn",
        "q",
        "var",
        "abbr",
        "acronym",
        "cite",
        "blockquote",
        "hr",
        "address",
        "bdo",
        "kbd",
        "sub",
        "sup",
        "ul",
        "ol",
        "li",
        "dl",
        "dt",
        "dd",
        "pre",
        "table",
        "caption",
        "colgroup",
        "col",
        "thead",
        "tr",
        "tfoot",
        "tbody",
        "th",
        "td",
        "code",
        "samp",
        "img",
        "map",
        "area",
    }
)
# date / dateTime / instant: year, month, day, hour, minute, seconds (fraction ignored:
# FHIRPath compares seconds and milliseconds at one precision), zone.
_DATE_TIME = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def native(key: str, expression: str) -> Check | None:
    return _NATIVE.get((key, expression))


def _dom_3(node: Any, resource: Any, root: Any) -> bool:
    """Every contained resource is referenced from elsewhere in the resource (or refers to
    its container with `#`). Any string value stands for the reference, canonical, uri
    and url values the expression collects (only those spell `#id` in practice), and is
    found in the resource's JSON text: ids need no escaping."""
    contained = node.get("contained")
    if not isinstance(contained, list):
        return True
    text = codec.dumps(node)
    return all(
        not isinstance(item, dict)
        or f'"#{item.get("id")}"'.encode() in text
        or b'"#"' in codec.dumps(item)
        for item in contained
    )


def _contained_lack(*path: str) -> Check:
    """Whether no contained resource has the element at `path` (dom-2, dom-4, dom-5:
    they are the resources' business, not their container's)."""

    def check(node: Any, resource: Any, root: Any) -> bool:
        return not any(_has(item, path) for item in node.get("contained") or ())

    return check


def _has(value: Any, path: tuple[str, ...]) -> bool:
    for name in path:
        if not isinstance(value, dict) or name not in value:
            return False
        value = value[name]
    return True


def _ref_1(node: Any, resource: Any, root: Any) -> bool:
    """A local reference (`#id`) names a resource contained in the root resource."""
    reference = node.get("reference") if isinstance(node, dict) else None
    if not isinstance(reference, str) or not reference.startswith("#"):
        return True
    contained = root.get("contained") if isinstance(root, dict) else None
    ids = {c.get("id") for c in contained or () if isinstance(c, dict)}
    return reference[1:] in ids


def _per_1(node: Any, resource: Any, root: Any) -> bool:
    """A Period's start is not after its end. As FHIRPath compares dates: on the
    precision both have; equal there but of different precision is no answer (holds)."""
    start, end = _moment(node.get("start")), _moment(node.get("end"))
    if start is None or end is None:
        return True
    start_parts, start_zone = start
    end_parts, end_zone = end
    if len(start_parts) > 3 and len(end_parts) > 3 and start_zone != end_zone:
        try:
            return _utc(start_parts, start_zone) <= _utc(end_parts, end_zone)
        except ValueError:  # an impossible date: the primitive check reports it
            return True
    common = min(len(start_parts), len(end_parts))
    if start_parts[:common] != end_parts[:common]:
        return start_parts[:common] < end_parts[:common]
    return True


def _obs_7(node: Any, resource: Any, root: Any) -> bool:
    """An Observation with a value has no component coded as itself (a Coding equal to
    one of its own: FHIRPath's intersect compares whole Codings). The commonest resource:
    fhirpathpy took 15 µs for it."""
    if not any(key.startswith(("value", "_value")) for key in node):
        return True
    codings = (node.get("code") or {}).get("coding") or []
    return not any(
        coding in codings
        for component in node.get("component") or ()
        for coding in (component.get("code") or {}).get("coding") or ()
    )


def _rng_2(node: Any, resource: Any, root: Any) -> bool:
    """A Range's low is not above its high. fhirpathpy cannot compare Quantities; values
    in different units are not compared here (no UCUM conversion), so they pass."""
    low, high = node.get("low"), node.get("high")
    if not isinstance(low, dict) or not isinstance(high, dict):
        return True
    low_value, high_value = low.get("value"), high.get("value")
    if not isinstance(low_value, int | float) or not isinstance(high_value, int | float):
        return True
    if (low.get("system"), low.get("code")) != (high.get("system"), high.get("code")):
        return True
    return low_value <= high_value


class _Narrative(HTMLParser):
    """What txt-1 and txt-2 ask of a Narrative's div: the elements it uses, whether it
    uses event attributes, and whether it has content (text or an image)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: set[str] = set()
        self.event_attribute = False
        self.content = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.add(tag)
        self.content = self.content or tag == "img"
        self.event_attribute = self.event_attribute or any(
            name.lower().startswith("on") for name, _ in attrs
        )

    def handle_data(self, data: str) -> None:
        self.content = self.content or bool(data.strip())


def _narrative(value: Any) -> _Narrative | None:
    if not isinstance(value, str):
        return None
    parsed = _Narrative()
    parsed.feed(value)
    parsed.close()
    return parsed


def _txt_1(node: Any, resource: Any, root: Any) -> bool:
    """Only the basic HTML formatting elements (narrative.html#xhtml): no scripts, forms,
    frames, objects, head or body, and no event attributes."""
    parsed = _narrative(node)
    return parsed is None or (parsed.elements <= _XHTML_ELEMENTS and not parsed.event_attribute)


def _txt_2(node: Any, resource: Any, root: Any) -> bool:
    """Some non-whitespace content."""
    parsed = _narrative(node)
    return parsed is None or parsed.content


def _moment(value: Any) -> tuple[tuple[int, ...], str | None] | None:
    match = _DATE_TIME.match(value) if isinstance(value, str) else None
    if match is None:
        return None
    parts = tuple(int(p) for p in match.groups()[:6] if p is not None)
    return parts, match[7]


def _utc(parts: tuple[int, ...], zone: str | None) -> datetime:
    """The moment in UTC (no zone is taken as UTC), to order two times of day."""
    year, month, day, hour, minute, second = (*parts, 0)[:6]
    moment = datetime(year, month, day, hour, minute, second)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        moment -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    return moment


_DOM_4_CHECKS = (_contained_lack("meta", "versionId"), _contained_lack("meta", "lastUpdated"))
_NATIVE: Mapping[tuple[str, str], Check] = {
    ("dom-4", _DOM_4): lambda *args: all(check(*args) for check in _DOM_4_CHECKS),
    ("dom-5", _DOM_5): _contained_lack("meta", "security"),
    ("dom-3", _DOM_3): _dom_3,
    ("dom-2", _DOM_2): _contained_lack("contained"),
    ("ref-1", _REF_1): _ref_1,
    ("per-1", _PER_1): _per_1,
    ("rng-2", _RNG_2): _rng_2,
    ("obs-7", _OBS_7): _obs_7,
    # fhirpathpy has no htmlChecks().
    ("txt-1", _HTML_CHECKS): _txt_1,
    ("txt-2", _HTML_CHECKS): _txt_2,
}
