"""Query string -> SearchQuery (R4 search.html), parsed once: the criteria.

Each criterion becomes predicates (#ptypes, #modifiers, #prefix, #chaining, #has);
comma means OR, a repeated parameter means AND (#combining). Result parameters
(`_sort`, `_count`, ...) are read by `result_params.py`, escapes by `escaping.py`.
Unknown or unsupported parameters are ignored and reported (lenient, the default) or
refused with 400 (`strict`); a value that cannot be read (a date that is not a date, an
unknown prefix) is always a 400.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from fhirserver.errors import BadRequest, NotSupported
from fhirserver.resources.definitions import is_resource_type
from fhirserver.search.escaping import split_bars, split_escaped, split_or, unescape
from fhirserver.search.params import UNSUPPORTED, Registry, SearchParam, bad_modifier, registry
from fhirserver.search.query import (
    ID,
    LAST_UPDATED,
    ChainPredicate,
    CompositePredicate,
    DatePredicate,
    HasPredicate,
    IdPredicate,
    LastUpdatedPredicate,
    MissingPredicate,
    NumberPredicate,
    Predicate,
    ReferencePredicate,
    SearchQuery,
    StringPredicate,
    TokenPredicate,
    UriPredicate,
)
from fhirserver.search.result_params import (
    DEFAULT_COUNT,
    FORMAT_PARAMS,
    MAX_COUNT,
    RESULT_PARAMS,
    with_results,
)
from fhirserver.search.terminology import MODIFIERS as TERMINOLOGY_MODIFIERS
from fhirserver.search.terminology import token_set
from fhirserver.search.time import date_range

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
# search.html: a server may refuse a query too costly to run; this bounds the SQL too.
MAX_PREDICATES = 100
MAX_CHAIN_DEPTH = 4
# A bare id in a reference parameter with more target types than this is not also
# looked for as absolute URLs on this server.
MAX_URL_FORMS = 10


@dataclass
class _Builder:
    resource_types: tuple[str, ...]
    strict: bool
    # This server's base URL: an absolute reference under it is a local one.
    base_url: str = ""
    clauses: list[tuple[Predicate, ...]] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    # Why the parameter being parsed was dropped, if it was.
    dropped: str | None = None
    values: int = 0
    # The search parameters known: the shipped ones, or an app's (params.joined).
    known: Registry = field(default_factory=registry)

    def ignore(self, name: str, reason: str) -> None:
        if self.strict:
            raise NotSupported(f"Parameter {name!r}: {reason}", expression=name)
        self.dropped = f"{name}: {reason}" if name else reason


def parse_search(
    resource_types: tuple[str, ...],
    params: Iterable[tuple[str, str]],
    *,
    strict: bool = False,
    default_count: int = DEFAULT_COUNT,
    max_count: int = MAX_COUNT,
    base_url: str = "",
    known: Registry | None = None,
) -> SearchQuery:
    """`known`: the search parameters to use (default: the shipped ones)."""
    builder = _Builder(resource_types, strict, base_url.rstrip("/"), known=known or registry())
    results: dict[str, list[str]] = {}
    for name, value in params:
        base = name.split(":")[0]
        if base in RESULT_PARAMS:
            results.setdefault(name, []).append(value)
        elif name not in FORMAT_PARAMS:
            _criterion(builder, name, value)
    query = SearchQuery(
        resource_types=resource_types,
        clauses=tuple(builder.clauses),
        count=default_count,
        ignored=tuple(builder.ignored),
    )
    return with_results(query, results, max_count, builder.known)


def parse_criteria(
    resource_type: str, params: Iterable[tuple[str, str]], known: Registry | None = None
) -> SearchQuery:
    """The criteria of a conditional interaction: strict, and never empty."""
    query = parse_search((resource_type,), params, strict=True, known=known)
    if not query.clauses:
        raise BadRequest("A conditional interaction needs search criteria")
    return query


def _criterion(builder: _Builder, name: str, value: str) -> None:
    predicates = []
    for alternative in split_or(value):
        predicate = _predicate(builder, builder.resource_types, name, alternative, 0)
        if predicate is None:
            builder.ignored.append((name, builder.dropped or "not supported"))
            builder.dropped = None
            return
        predicates.append(predicate)
    builder.values += len(predicates)
    if builder.values > MAX_PREDICATES:
        raise BadRequest(f"Too many search criteria: at most {MAX_PREDICATES} values")
    if all(isinstance(p, IdPredicate) for p in predicates):
        ids = tuple(i for p in predicates if isinstance(p, IdPredicate) for i in p.ids)
        builder.clauses.append((IdPredicate(ids),))
    else:
        builder.clauses.append(tuple(predicates))


def _predicate(
    builder: _Builder, types: tuple[str, ...], name: str, value: str, depth: int
) -> Predicate | None:
    if depth > MAX_CHAIN_DEPTH:
        raise BadRequest(f"Chains and _has nest at most {MAX_CHAIN_DEPTH} deep", expression=name)
    if name.startswith("_has:"):
        return _has(builder, types, name, value, depth)
    if "." in name:
        return _chain(builder, types, name, value, depth)
    code, colon, modifier = name.partition(":")
    if colon and not modifier:
        raise BadRequest(f"Empty modifier in {name!r}", expression=name)
    if code == ID and not modifier:
        return IdPredicate((unescape(value),))
    if code == LAST_UPDATED and not modifier:
        prefix, text = _prefix(value, code)
        low, high = date_range(text, code)
        return LastUpdatedPredicate(prefix, low, high)
    if code in UNSUPPORTED:
        builder.ignore(name, UNSUPPORTED[code])
        return None
    param = builder.known.shared(types, code)
    if param is None:
        builder.ignore(name, f"unknown search parameter for {'/'.join(types)}")
        return None
    if modifier == "missing":
        if value not in ("true", "false"):
            raise BadRequest(f":missing takes true or false, not {value!r}", expression=name)
        code, kind = _missing_param(param, builder.known)
        return MissingPredicate(code, value == "true", kind)
    if modifier in TERMINOLOGY_MODIFIERS and param.type == "token":
        return token_set(code, modifier, value, name)
    if modifier in ("in", "not-in"):
        raise bad_modifier(name, modifier, param.type)
    return _typed(param, param.type, code, modifier, value, name, builder.base_url, builder.known)


def _missing_param(param: SearchParam, known: Registry) -> tuple[str, str]:
    """Where a parameter's entries are: (code, type); a composite's under its first part."""
    if param.type == "composite" and param.components:
        first = known.by_url(param.components[0].definition)
        return f"{param.code}#0", first.type if first else "token"
    return param.code, param.type


def _typed(
    param: SearchParam,
    kind: str,
    code: str,
    modifier: str,
    value: str,
    name: str,
    base_url: str = "",
    known: Registry | None = None,
) -> Predicate:
    if kind == "string":
        modes = {"": "start", "exact": "exact", "contains": "contains"}
        if modifier not in modes:
            raise bad_modifier(name, modifier, kind)
        return StringPredicate(code, unescape(value), modes[modifier])
    if kind == "token":
        return _token(code, modifier, value, name)
    if kind == "date":
        _no_modifier(name, modifier, kind)
        prefix, text = _prefix(value, name)
        low, high = date_range(text, name)
        return DatePredicate(code, prefix, low, high)
    if kind in ("number", "quantity"):
        _no_modifier(name, modifier, kind)
        return _number(code, kind, value, name)
    if kind == "reference":
        return _reference(param, code, modifier, value, name, base_url)
    if kind == "uri":
        modes = {"": "exact", "below": "below", "above": "above"}
        if modifier not in modes:
            raise bad_modifier(name, modifier, kind)
        return UriPredicate(code, unescape(value), modes[modifier])
    if kind == "composite":
        _no_modifier(name, modifier, kind)
        return _composite(param, value, name, known or registry())
    raise NotSupported(
        f"Search parameter {name!r} of type {kind} is not supported", expression=name
    )


def _token(code: str, modifier: str, value: str, name: str) -> Predicate:
    if modifier == "text":
        return StringPredicate(f"{code}:text", unescape(value), "start")
    if modifier == "of-type":
        parts = split_bars(value)
        if len(parts) != 3 or not all(parts[1:]):
            raise BadRequest(f":of-type takes system|code|value, not {value!r}", expression=name)
        return TokenPredicate(f"{code}:of-type", parts[0] or None, f"{parts[1]}|{parts[2]}")
    if modifier not in ("", "not"):
        raise bad_modifier(name, modifier, "token")
    system, token = parse_token(value, name)
    return TokenPredicate(code, system, token, negate=modifier == "not")


def parse_token(value: str, name: str) -> tuple[str | None, str | None]:
    parts = split_bars(value)
    if len(parts) > 2:
        raise BadRequest(f"Invalid token {value!r}: at most one '|' expected", expression=name)
    if len(parts) == 1:
        return None, parts[0]
    system, code = parts
    return system, code or None


def _reference(
    param: SearchParam, code: str, modifier: str, value: str, name: str, base_url: str
) -> Predicate:
    if modifier == "identifier":
        system, token = parse_token(value, name)
        return TokenPredicate(f"{code}:identifier", system, token)
    if modifier and not is_resource_type(modifier):
        raise bad_modifier(name, modifier, "reference")
    value = unescape(value)
    if base_url and value.startswith(base_url + "/"):
        # An absolute URL on this server is the same as the relative reference.
        value = value.removeprefix(base_url + "/")
    elif value.startswith(("http://", "https://", "urn:")) and not modifier:
        # An absolute reference, or a canonical URL with an optional |version.
        return ReferencePredicate(code, None, None, value)
    parts = value.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) == 2:
        target_type, target_id = parts
        if modifier and modifier != target_type:
            raise BadRequest(f"{value!r} is not a {modifier}", expression=name)
        if not is_resource_type(target_type):
            raise BadRequest(f"Unknown resource type in reference {value!r}", expression=name)
        return ReferencePredicate(
            code, target_type, target_id, absolute=_on_server(base_url, [target_type], value)
        )
    if len(parts) == 1:
        # A bare id: one of the parameter's target types, or the :Type modifier's.
        types = [modifier] if modifier else list(param.targets)
        only_type = types[0] if len(types) == 1 else None
        absolute = _on_server(base_url, types, value) if len(types) <= MAX_URL_FORMS else ()
        return ReferencePredicate(code, only_type, value, absolute=absolute)
    raise BadRequest(f"Invalid reference {value!r}", expression=name)


def _on_server(base_url: str, types: list[str], value: str) -> tuple[str, ...]:
    """`value` written as absolute URLs on this server, one per possible type."""
    target_id = value.split("/")[-1]
    return tuple(f"{base_url}/{t}/{target_id}" for t in types) if base_url else ()


def _number(code: str, kind: str, value: str, name: str) -> NumberPredicate:
    prefix, text = _prefix(value, name)
    system: str | None = None
    unit: str | None = None
    if kind == "quantity":
        parts = split_bars(text)
        if len(parts) not in (1, 3):
            raise BadRequest(f"A quantity is number|system|code, not {value!r}", expression=name)
        if len(parts) == 3:
            text, system, unit = parts[0], parts[1] or None, parts[2] or None
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise BadRequest(f"Invalid number {text!r}", expression=name) from None
    if not number.is_finite():
        raise BadRequest(f"Invalid number {text!r}", expression=name)
    # The value's precision implies a range (search.html#number): 100 is [99.5, 100.5).
    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1)
    return NumberPredicate(
        code,
        prefix,
        float(number),
        float_not_below(number - half),
        float_not_below(number + half),
        quantity=kind == "quantity",
        system=system,
        code=unit,
    )


def float_not_below(exact: Decimal) -> float:
    """The least float not below `exact`. A stored float f lies in the exact range
    [low, high) exactly when float_not_below(low) <= f < float_not_below(high), so
    the ends of a precision range are computed in decimals and rounded up once: a value
    searched at its full stored precision (136.44756483911604) then lies in its own
    range, which rounding each end to the nearest float would collapse to nothing."""
    nearest = float(exact)
    return math.nextafter(nearest, math.inf) if Decimal(nearest) < exact else nearest


def _composite(param: SearchParam, value: str, name: str, known: Registry) -> CompositePredicate:
    values = split_escaped(value, "$")
    if len(values) != len(param.components):
        raise BadRequest(
            f"{param.code} takes {len(param.components)} values joined by '$'", expression=name
        )
    components = []
    for position, (component, text) in enumerate(zip(param.components, values, strict=True)):
        definition = known.by_url(component.definition)
        if definition is None:
            raise NotSupported(f"Composite {param.code} has an unknown component", expression=name)
        components.append(
            _typed(definition, definition.type, f"{param.code}#{position}", "", text, name)
        )
    return CompositePredicate(param.code, tuple(components))


def _chain(
    builder: _Builder, types: tuple[str, ...], name: str, value: str, depth: int
) -> Predicate | None:
    head, _, rest = name.partition(".")
    code, _, type_modifier = head.partition(":")
    param = builder.known.shared(types, code)
    if param is None or param.type != "reference":
        builder.ignore(name, f"{code!r} is not a reference parameter to chain through")
        return None
    if type_modifier and not is_resource_type(type_modifier):
        raise bad_modifier(name, type_modifier, "reference")
    targets = (type_modifier,) if type_modifier else param.targets
    inner_code = rest.split(".")[0].split(":")[0]
    usable = tuple(
        t
        for t in targets
        if inner_code in (ID, LAST_UPDATED)
        or inner_code.startswith("_has")
        or builder.known.get(t, inner_code) is not None
    )
    if not usable:
        builder.ignore(name, f"no target of {code!r} has a parameter {inner_code!r}")
        return None
    inner = _predicate(builder, usable, rest, value, depth + 1)
    return None if inner is None else ChainPredicate(code, usable, inner)


def _has(
    builder: _Builder, types: tuple[str, ...], name: str, value: str, depth: int
) -> Predicate | None:
    parts = name.split(":", 3)
    if len(parts) != 4 or not all(parts):
        raise BadRequest(f"_has takes _has:Type:param:criterion, not {name!r}", expression=name)
    _, source_type, code, rest = parts
    if not is_resource_type(source_type):
        raise BadRequest(f"Unknown resource type {source_type!r} in _has", expression=name)
    param = builder.known.get(source_type, code)
    if param is None or param.type != "reference":
        raise BadRequest(f"{source_type}.{code} is not a reference parameter", expression=name)
    inner = _predicate(builder, (source_type,), rest, value, depth + 1)
    return None if inner is None else HasPredicate(source_type, code, inner)


def _prefix(value: str, name: str) -> tuple[str, str]:
    if value[:2].isalpha() and value[:2].islower():
        if value[:2] not in PREFIXES:
            raise BadRequest(f"Unknown search prefix {value[:2]!r} in {value!r}", expression=name)
        return value[:2], value[2:]
    return "eq", value


def _no_modifier(name: str, modifier: str, kind: str) -> None:
    if modifier:
        raise bad_modifier(name, modifier, kind)
