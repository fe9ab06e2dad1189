"""Every store (SQLite, and the MongoDB store on mongomock or a real server: see
tests/backends.py) against the in-memory matcher (R4 search.html#ptypes, #modifiers,
#prefix, #chaining, #has, #composite, #escaping, #combining, #all).

Generated Patients (names, gender, birthDate, active, identifiers, city) and Observations
(codes, status, a quantity or a string value, an effective dateTime or Period, a subject
reference: relative, absolute on this server, dangling or to a deleted Patient, and
coded components) are written through the real update/delete path (`crud`) into a fresh
store. Generated query strings over string (:exact, :contains), token (:not,
system|code forms), date (every prefix but `ap`, every precision, time zones), quantity
(every prefix, units), reference, :missing, composite, _id, _lastUpdated, chains and
_has are parsed with `parse_search`; for every query the ids `store.search` returns must
be exactly the ids `match.matches` accepts.

Query values are drawn half from what the resources hold, including the dates and
numbers whose ranges start or end where a stored range does, so that queries hit as
well as miss and land on the boundaries where prefixes differ; and each example sweeps
one such value through every prefix.

Hypothesis runs MAX_EXAMPLES = 400 examples, each a store of up to 5 Patients (some
with an earlier version, some deleted) and up to 6 Observations, searched with 1 to 6
generated queries plus a sweep of 9 or 10: about 35 s on two cores.

`test_all_of_agrees_with_the_matcher` composes the first six parsed queries of each of
ALL_OF_EXAMPLES = 150 scenarios two at a time with `AllOfPredicate` (DESIGN.md
"Authorization"): an OR of two conjunctions, a system search giving each type its own,
nested, inside a chain and inside `_has`: about 20 s per backend.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from fhirserver.interactions import crud
from fhirserver.interactions.rules import WriteContext
from fhirserver.resources.invariants import check_invariants
from fhirserver.search.extract import index_entries
from fhirserver.search.match import matches
from fhirserver.search.parse import parse_search
from fhirserver.search.query import (
    AllOfPredicate,
    ChainPredicate,
    HasPredicate,
    IdPredicate,
    Predicate,
    ReferenceEntry,
    SearchQuery,
)
from fhirserver.search.time import date_range
from fhirserver.storage.base import Store
from tests.backends import BACKENDS, make_backend

MAX_EXAMPLES = 400

Resource = dict[str, Any]
Params = list[tuple[str, str]]

# --- Resources ------------------------------------------------------------------------

# Accents, case, an apostrophe, a space, LIKE's wildcards as literal text, and a
# compatibility character (U+210D, a double-struck H).
FAMILIES = ("Müller", "MÜLLER", "Muller", "Smith", "O'Brien", "van Dijk", "a_b", "\u210denry")
GIVENS = ("Ann", "Åsa", "Éric", "Eric", "50%")
CITIES = ("Paris", "Pärnu", "Berlin", "paris")
GENDERS = ("male", "female", "other", "unknown")
ID_SYSTEMS = ("urn:a", "urn:b")
ID_VALUES = ("1", "2", "12")
CODE_SYSTEMS = ("http://loinc.org", "urn:local")
CODES = ("1234-5", "8867-4", "x")
STATUSES = ("final", "preliminary", "amended")
UCUM = "http://unitsofmeasure.org"
# This server's base: a reference under it is a local one (search.html#reference).
BASE_URL = "http://server.test/fhir"
# With the Synthea values whose precision ranges went wrong once: 81.224 against sa81,
# 142.89 against eb143, and a float searched at its full stored precision.
STORED_NUMBERS = (
    -1.0,
    0.0,
    0.5,
    5.0,
    5.25,
    5.5,
    6.0,
    10.0,
    100.0,
    81.224,
    142.89,
    136.44756483911604,
)
TEXTS = ("high", "High result", "normal", "néant")
TIME_ZONES = ("Z", "+02:00", "-05:00", "+14:00")


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """None one time in four."""
    return st.one_of(st.none(), strategy, strategy, strategy)


@st.composite
def date_texts(
    draw: st.DrawFn, years: tuple[int, ...], *, search: bool = False, time: bool = True
) -> str:
    """A FHIR date, or dateTime when `time`, at any precision. Each unit takes its first
    value, the next one, or its last: the end of one range is often the start of another,
    where the prefixes differ."""
    text = str(draw(st.sampled_from(years)))
    precision = draw(st.integers(0, (5 if search else 4) if time else 2))
    if precision >= 1:
        text += f"-{draw(st.sampled_from((1, 2, 12))):02d}"
    if precision >= 2:
        text += f"-{draw(st.sampled_from((1, 2, 28))):02d}"
    if precision >= 3:
        hour, minute = draw(st.sampled_from((0, 1, 23))), draw(st.sampled_from((0, 1, 59)))
        text += f"T{hour:02d}:{minute:02d}"
        # A search may stop at the minute; a stored dateTime has seconds (R4 datatypes).
        if precision != 5:
            text += f":{draw(st.sampled_from((0, 1, 59))):02d}"
            text += draw(st.sampled_from(("", "", ".5", ".123")))
        # A search may omit the zone (taken as UTC); a stored dateTime may not.
        text += draw(st.sampled_from(TIME_ZONES + (("",) if search else ())))
    return text


NAMES = st.lists(
    st.fixed_dictionaries(
        {"family": st.sampled_from(FAMILIES)},
        optional={"given": st.lists(st.sampled_from(GIVENS), min_size=1, max_size=2)},
    ),
    min_size=1,
    max_size=2,
)
IDENTIFIERS = st.lists(
    st.fixed_dictionaries(
        {"value": st.sampled_from(ID_VALUES)}, optional={"system": st.sampled_from(ID_SYSTEMS)}
    ),
    min_size=1,
    max_size=2,
)
# Strategies are built once: hypothesis validates each new one, which is not free.
PATIENT_FIELDS = {
    "name": _maybe(NAMES),
    "gender": _maybe(st.sampled_from(GENDERS)),
    "birthDate": _maybe(date_texts((1990, 1991), time=False)),
    "active": _maybe(st.booleans()),
    "identifier": _maybe(IDENTIFIERS),
    "address": _maybe(st.builds(lambda city: [{"city": city}], st.sampled_from(CITIES))),
}


@st.composite
def patients(draw: st.DrawFn, resource_id: str) -> Resource:
    patient: Resource = {"resourceType": "Patient", "id": resource_id}
    fields = {key: draw(strategy) for key, strategy in PATIENT_FIELDS.items()}
    patient.update({key: value for key, value in fields.items() if value is not None})
    return patient


@st.composite
def quantities(draw: st.DrawFn) -> Resource:
    quantity: Resource = {"value": draw(st.sampled_from(STORED_NUMBERS))}
    # R4 qty-3: a unit code needs its system.
    code = draw(_maybe(st.sampled_from(("mg", "g"))))
    if code is not None:
        quantity.update(system=UCUM, code=code)
    unit = draw(_maybe(st.sampled_from(("mg", "milligram"))))
    if unit is not None:
        quantity["unit"] = unit
    return quantity


QUANTITIES = quantities()
START, END = _maybe(date_texts((2020, 2021))), _maybe(date_texts((2021, 2022)))


@st.composite
def periods(draw: st.DrawFn) -> Resource:
    period = {"start": draw(START), "end": draw(END)}
    period = {key: value for key, value in period.items() if value is not None} or {"start": "2021"}
    # per-1 (R4): the start is not after the end; the overlapping years may draw one.
    if check_invariants("Period", period):
        period = {"start": period["end"], "end": period["start"]}
    return period


CODINGS = st.lists(
    st.fixed_dictionaries(
        {"code": st.sampled_from(CODES)}, optional={"system": st.sampled_from(CODE_SYSTEMS)}
    ),
    min_size=1,
    max_size=2,
)
# Components: several code/value elements, which a composite must not mix up.
COMPONENTS = st.lists(
    st.fixed_dictionaries(
        {
            "code": st.builds(
                lambda code: {"coding": [{"system": CODE_SYSTEMS[0], "code": code}]},
                st.sampled_from(CODES),
            ),
            "valueQuantity": QUANTITIES,
        }
    ),
    max_size=2,
)
OBSERVATION_VALUES = {
    "valueQuantity": QUANTITIES,
    "valueString": st.sampled_from(TEXTS),
    "effectiveDateTime": date_texts((2020, 2021)),
    "effectivePeriod": periods(),
}


@st.composite
def observations(draw: st.DrawFn, resource_id: str, patient_ids: list[str]) -> Resource:
    observation: Resource = {
        "resourceType": "Observation",
        "id": resource_id,
        "status": draw(st.sampled_from(STATUSES)),
        "code": {"coding": draw(CODINGS)},
    }
    value = draw(st.sampled_from((None, "valueQuantity", "valueQuantity", "valueString")))
    effective = draw(
        st.sampled_from((None, "effectiveDateTime", "effectiveDateTime", "effectivePeriod"))
    )
    for key in (value, effective):
        if key is not None:
            observation[key] = draw(OBSERVATION_VALUES[key])
    # A reference to one of the patients, possibly deleted, or to none that exists;
    # relative, or absolute on this server.
    subject = draw(st.sampled_from([None, "ghost", *patient_ids, *patient_ids]))
    if subject is not None:
        base = draw(st.sampled_from(("", "", f"{BASE_URL}/")))
        observation["subject"] = {"reference": f"{base}Patient/{subject}"}
    # obs-7 (R4): with a value, no component repeats the Observation's code.
    codings = observation["code"]["coding"]
    components = [
        c for c in draw(COMPONENTS) if value is None or c["code"]["coding"][0] not in codings
    ]
    if components:
        observation["component"] = components
    return observation


# --- Queries --------------------------------------------------------------------------


def _case_variants(word: str) -> st.SearchStrategy[str]:
    return st.sampled_from((word, word.lower(), word.upper()))


@dataclass(frozen=True)
class Vocabulary:
    """Values the generated resources hold (any version), so that a query can ask for
    them and often hit; each strategy mixes them half and half with generic values."""

    names: tuple[str, ...] = ()
    cities: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()
    birth_dates: tuple[str, ...] = ()
    dates: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    units: tuple[str, ...] = ()

    @classmethod
    def of(cls, resources: list[Resource]) -> Vocabulary:
        found: dict[str, list[str]] = {field: [] for field in cls.__dataclass_fields__}
        for resource in resources:
            for name in resource.get("name", []):
                found["names"] += [name["family"], *name.get("given", [])]
            found["cities"] += [a["city"] for a in resource.get("address", [])]
            found["texts"] += [resource["valueString"]] if "valueString" in resource else []
            if "birthDate" in resource:
                found["birth_dates"] += _date_forms(resource["birthDate"])
            effective = [resource.get("effectiveDateTime")]
            effective += list(resource.get("effectivePeriod", {}).values())
            found["dates"] += [form for text in effective if text for form in _date_forms(text)]
            for element in [resource, *resource.get("component", [])]:
                if "valueQuantity" in element:
                    found["numbers"] += _number_forms(element["valueQuantity"]["value"])
                    found["units"] += _unit_forms(element["valueQuantity"])
        return cls(**{key: tuple(dict.fromkeys(values)) for key, values in found.items()})


def _date_forms(text: str) -> list[str]:
    """A stored date as written, and the ranges that start or end where its range starts
    or ends, at every precision that fits: where eq/ne, gt/ge, lt/le, sa/eb differ."""
    forms = [text]
    for moment in (m.astimezone(UTC) for m in date_range(text)):
        forms += _starting_at(moment) + _ending_at(moment)
    return forms


def _starting_at(moment: datetime) -> list[str]:
    forms = [moment.strftime("%Y-%m-%dT%H:%M:%SZ")]
    if moment.time() == time():
        forms.append(moment.strftime("%Y-%m-%d"))
        forms += [moment.strftime("%Y-%m")] if moment.day == 1 else []
        forms += [moment.strftime("%Y")] if (moment.month, moment.day) == (1, 1) else []
    return forms


def _ending_at(moment: datetime) -> list[str]:
    forms = [(moment - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")]
    if moment.time() == time():
        before = moment - timedelta(days=1)
        forms.append(before.strftime("%Y-%m-%d"))
        forms += [before.strftime("%Y-%m")] if moment.day == 1 else []
        forms += [before.strftime("%Y")] if (moment.month, moment.day) == (1, 1) else []
    return forms


def _number_forms(value: float) -> list[str]:
    """A stored number as written, and the numbers whose precision range starts or ends
    on it ("5" is [4.5, 5.5), so both 5 and 6 end or start at 5.5): where eq/ne differ
    from the others."""
    number, forms = Decimal(str(value)), [str(value)]
    for places in range(3):
        unit = Decimal(1).scaleb(-places)
        for bound in (number - unit / 2, number + unit / 2):
            if bound == bound.quantize(unit):
                forms.append(str(bound.quantize(unit)))
    return forms


def _unit_forms(quantity: Resource) -> list[str]:
    """The units of a stored quantity as a search may give them."""
    forms = [f"||{quantity[key]}" for key in ("code", "unit") if key in quantity]
    return forms + ([f"|{quantity['system']}|{quantity['code']}"] if "code" in quantity else [])


def _pick(used: tuple[str, ...], generic: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.sampled_from(used) | generic if used else generic


@st.composite
def string_values(draw: st.DrawFn, words: st.SearchStrategy[str], modifier: str) -> str:
    """The whole word for :exact; otherwise a piece of it (its start, or any part for
    :contains), in some case."""
    word = draw(words)
    if modifier == ":exact":
        return word if draw(st.booleans()) else draw(_case_variants(word))
    start = draw(st.integers(0, len(word) - 1)) if modifier == ":contains" else 0
    end = draw(st.integers(start + 1, len(word)))
    return draw(_case_variants(word[start:end]))


@st.composite
def string_params(draw: st.DrawFn, names: tuple[str, ...], words: st.SearchStrategy[str]) -> Params:
    name = draw(st.sampled_from(names))
    modifier = draw(st.sampled_from(("", ":exact", ":contains")))
    values = draw(st.lists(string_values(words, modifier), min_size=1, max_size=2))
    return [(name + modifier, ",".join(values))]


@st.composite
def token_params(
    draw: st.DrawFn, name: str, systems: tuple[str, ...], codes: tuple[str, ...]
) -> Params:
    """`code`, `system|code`, `|code` or `system|`, optionally :not."""
    system, code = draw(st.sampled_from(systems)), draw(st.sampled_from(codes))
    value = draw(st.sampled_from((code, f"{system}|{code}", f"|{code}", f"{system}|")))
    return [(name + draw(st.sampled_from(("", ":not"))), value)]


def _simple_token_params(name: str, codes: tuple[str, ...]) -> st.SearchStrategy[Params]:
    return st.builds(
        lambda modifier, values: [(name + modifier, ",".join(values))],
        st.sampled_from(("", ":not")),
        st.lists(st.sampled_from(codes), min_size=1, max_size=2),
    )


# `ap` on dates is left out: its range depends on the clock, read separately by each side.
DATE_PREFIXES = ("", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
NUMBER_PREFIXES = (*DATE_PREFIXES, "ap")


def date_params(name: str, texts: st.SearchStrategy[str]) -> st.SearchStrategy[Params]:
    return st.builds(
        lambda prefix, text: [(name, prefix + text)], st.sampled_from(DATE_PREFIXES), texts
    )


SEARCH_NUMBERS = (
    *("0", "0.0", "5", "5.5", "5.50", "6", "1e1", "100", "-1", "5.25"),
    *("81", "143", "136.44756483911604", "136.4475648391160"),
)
UNIT_FORMS = ("", f"|{UCUM}|mg", "||mg", "||milligram", f"|{UCUM}|", "|urn:other|mg", f"|{UCUM}|g")


def unprefixed_quantities(vocabulary: Vocabulary) -> st.SearchStrategy[str]:
    return st.builds(
        lambda number, units: number + units,
        _pick(vocabulary.numbers, st.sampled_from(SEARCH_NUMBERS)),
        st.sampled_from(("", "")) | _pick(vocabulary.units, st.sampled_from(UNIT_FORMS)),
    )


def quantity_values(vocabulary: Vocabulary) -> st.SearchStrategy[str]:
    return st.builds(
        lambda prefix, quantity: prefix + quantity,
        st.sampled_from(NUMBER_PREFIXES),
        unprefixed_quantities(vocabulary),
    )


COMPOSITE_CODES = st.sampled_from([f"{s}|{c}" for s in CODE_SYSTEMS for c in CODES] + list(CODES))


def missing_params(names: tuple[str, ...]) -> st.SearchStrategy[Params]:
    return st.builds(
        lambda name, value: [(f"{name}:missing", value)],
        st.sampled_from(names),
        st.sampled_from(("true", "false")),
    )


def id_params(ids: tuple[str, ...]) -> st.SearchStrategy[Params]:
    return st.builds(
        lambda values: [("_id", ",".join(values))],
        st.lists(st.sampled_from(ids), min_size=1, max_size=2),
    )


LAST_UPDATED = date_texts((2000, datetime.now(UTC).year, 2100), search=True)
PATIENT_IDS = ("p0", "p1", "p2", "p3", "x")


def _names(vocabulary: Vocabulary) -> st.SearchStrategy[str]:
    return _pick(vocabulary.names, st.sampled_from(FAMILIES + GIVENS))


def _birth_dates(vocabulary: Vocabulary) -> st.SearchStrategy[str]:
    return _pick(vocabulary.birth_dates, date_texts((1990, 1991), search=True))


CHAIN_HEADS = st.sampled_from(("subject", "subject:Patient"))
# Criteria that need no vocabulary, built once (hypothesis validates each new strategy).
OTHER_PATIENT_CRITERIA = st.one_of(
    _simple_token_params("gender", GENDERS),
    _simple_token_params("active", ("true", "false")),
    token_params("identifier", ID_SYSTEMS, ID_VALUES),
    missing_params(("birthdate", "gender", "family", "address-city", "identifier", "active")),
    id_params(PATIENT_IDS),
    date_params("_lastUpdated", LAST_UPDATED),
    # `_has`: the Patients some Observation's subject points at.
    st.builds(
        lambda params: [(f"_has:Observation:subject:{n}", v) for n, v in params],
        token_params("code", CODE_SYSTEMS, CODES) | _simple_token_params("status", STATUSES),
    ),
)


def _chained(params: Params, head: str) -> Params:
    return [(f"{head}.{name}", value) for name, value in params]


OTHER_OBSERVATION_CRITERIA = st.one_of(
    token_params("code", CODE_SYSTEMS, CODES),
    _simple_token_params("status", STATUSES),
    st.builds(
        lambda name, target: [(name, target)],
        st.sampled_from(("subject", "subject:Patient")),
        st.sampled_from(("p0", "p1", "ghost")),
    ),
    st.builds(
        lambda base, target: [("subject", f"{base}Patient/{target}")],
        st.sampled_from(("", f"{BASE_URL}/", "http://elsewhere.org/fhir/")),
        st.sampled_from(("p0", "p2")),
    ),
    missing_params(("date", "subject", "value-string", "code", "value-quantity")),
    id_params(("o0", "o1", "o2", "x")),
    # Chains through the subject reference to the Patient's parameters.
    st.builds(_chained, _simple_token_params("gender", GENDERS), CHAIN_HEADS),
    st.builds(_chained, missing_params(("gender", "name")), CHAIN_HEADS),
    st.builds(_chained, id_params(PATIENT_IDS), CHAIN_HEADS),
    st.builds(_chained, date_params("_lastUpdated", LAST_UPDATED), CHAIN_HEADS),
)


def patient_criteria(vocabulary: Vocabulary) -> st.SearchStrategy[Params]:
    """Strings and birth dates half the time, the other kinds the other half."""
    return (
        st.one_of(
            string_params(("name", "family", "given"), _names(vocabulary)),
            string_params(("address-city",), _pick(vocabulary.cities, st.sampled_from(CITIES))),
            date_params("birthdate", _birth_dates(vocabulary)),
        )
        | OTHER_PATIENT_CRITERIA
    )


def observation_criteria(vocabulary: Vocabulary) -> st.SearchStrategy[Params]:
    """Half the time a criterion with a prefix (dates, quantities, composites), where
    range semantics are easiest to get wrong; otherwise any other kind."""
    dates = _pick(vocabulary.dates, date_texts((2020, 2021, 2022), search=True))
    prefixed = st.one_of(
        st.builds(lambda value: [("value-quantity", value)], quantity_values(vocabulary)),
        date_params("date", dates),
        st.builds(
            lambda name, code, number: [(name, f"{code}${number}")],
            st.sampled_from(("code-value-quantity", "component-code-value-quantity")),
            COMPOSITE_CODES,
            quantity_values(vocabulary),
        ),
    )
    others = st.one_of(
        string_params(("value-string",), _pick(vocabulary.texts, st.sampled_from(TEXTS))),
        st.builds(_chained, string_params(("name",), _names(vocabulary)), CHAIN_HEADS),
        st.builds(_chained, date_params("birthdate", _birth_dates(vocabulary)), CHAIN_HEADS),
        OTHER_OBSERVATION_CRITERIA,
        OTHER_OBSERVATION_CRITERIA,
    )
    return prefixed | others


@dataclass(frozen=True)
class Sweep:
    """One value searched with each prefix in turn: `head + prefix + tail`, where range
    boundaries make neighbouring prefixes differ (search.html#prefix)."""

    resource_type: str
    name: str
    head: str
    tail: str
    prefixes: tuple[str, ...]

    def searches(self) -> list[tuple[str, Params]]:
        return [
            (self.resource_type, [(self.name, f"{self.head}{prefix}{self.tail}")])
            for prefix in self.prefixes
        ]


def sweeps(vocabulary: Vocabulary) -> st.SearchStrategy[Sweep]:
    quantities = unprefixed_quantities(vocabulary)
    dates = _pick(vocabulary.dates, date_texts((2020, 2021, 2022), search=True))
    return st.one_of(
        st.builds(
            lambda tail: Sweep("Observation", "value-quantity", "", tail, NUMBER_PREFIXES),
            quantities,
        ),
        st.builds(
            lambda code, tail: Sweep(
                "Observation", "component-code-value-quantity", f"{code}$", tail, NUMBER_PREFIXES
            ),
            COMPOSITE_CODES,
            quantities,
        ),
        st.builds(lambda tail: Sweep("Observation", "date", "", tail, DATE_PREFIXES), dates),
        st.builds(
            lambda tail: Sweep("Patient", "birthdate", "", tail, DATE_PREFIXES),
            _birth_dates(vocabulary),
        ),
        # The instant a resource was written, to the microsecond: [t, t + 1).
        st.builds(
            lambda target: Sweep("Patient", "_lastUpdated", "", f"@{target}@", DATE_PREFIXES),
            st.sampled_from(("Patient/p0", "Patient/p1")),
        ),
        st.builds(
            lambda head, target: Sweep(
                "Observation", f"{head}._lastUpdated", "", f"@{target}@", DATE_PREFIXES
            ),
            CHAIN_HEADS,
            st.sampled_from(("Patient/p0", "Patient/p1")),
        ),
    )


@st.composite
def queries(draw: st.DrawFn, vocabulary: Vocabulary) -> list[tuple[str, Params]]:
    """Searches of one type each: one criterion, or (one time in three) two, ANDed; and
    one value with every prefix."""
    criteria = {
        "Patient": patient_criteria(vocabulary),
        "Observation": observation_criteria(vocabulary),
    }
    searches = []
    for _ in range(draw(st.integers(1, 6))):
        resource_type = draw(st.sampled_from(("Patient", "Observation")))
        params = draw(criteria[resource_type])
        if draw(st.integers(0, 2)) == 2:
            params += draw(criteria[resource_type])
        searches.append((resource_type, params))
    return searches + draw(sweeps(vocabulary)).searches()


# --- Scenarios ------------------------------------------------------------------------


@dataclass
class Scenario:
    # Each Patient with the version written before it (if any), and whether it is then
    # deleted.
    patients: list[tuple[Resource, Resource | None, bool]]
    observations: list[Resource]
    queries: list[tuple[str, Params]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    patient_ids = [f"p{n}" for n in range(draw(st.integers(1, 5)))]
    written = [
        (
            draw(patients(pid)),
            draw(_maybe(patients(pid))),
            draw(st.integers(0, 3)) == 0,
        )
        for pid in patient_ids
    ]
    observation_ids = [f"o{n}" for n in range(draw(st.integers(1, 6)))]
    observed = [draw(observations(oid, patient_ids)) for oid in observation_ids]
    every = [r for versions in written for r in versions[:2] if r is not None] + observed
    return Scenario(written, observed, draw(queries(Vocabulary.of(every))))


LAST_UPDATED_OF = re.compile(r"@(\w+)/([\w-]+)@")


@dataclass
class Stored:
    """The current resources as stored (with meta), for the matcher."""

    resources: dict[tuple[str, str], Resource] = field(default_factory=dict)

    def resolve(self, resource_type: str, resource_id: str) -> Resource | None:
        return self.resources.get((resource_type, resource_id))

    def referrers(
        self, source_type: str, param: str, target_type: str, target_id: str
    ) -> list[Resource]:
        pointer = ReferenceEntry(param, target_type, target_id, None)
        return [
            resource
            for (resource_type, _), resource in self.resources.items()
            if resource_type == source_type and pointer in index_entries(resource)
        ]

    def instants(self, value: str) -> str:
        """`value` with each `@Type/id@` replaced by that resource's meta.lastUpdated,
        known only once it is written (or a year, if it is not there)."""
        return LAST_UPDATED_OF.sub(self._last_updated_of, value)

    def _last_updated_of(self, found: re.Match[str]) -> str:
        resource = self.resources.get((found[1], found[2]))
        return str(resource["meta"]["lastUpdated"]) if resource else "2000"

    def of_type(self, resource_type: str) -> list[Resource]:
        return [r for (t, _), r in self.resources.items() if t == resource_type]


async def _write(store: Store, scenario: Scenario) -> Stored:
    stored = Stored()

    async def put(resource: Resource) -> None:
        result = await crud.update(
            store, WriteContext(), resource["resourceType"], resource["id"], resource
        )
        assert result.version.body is not None
        body = json.loads(result.version.body)
        stored.resources[(body["resourceType"], body["id"])] = body

    for patient, earlier, deleted in scenario.patients:
        if earlier is not None:
            await put(earlier)
        await put(patient)
        if deleted:
            await crud.delete(store, WriteContext(), "Patient", patient["id"])
            del stored.resources[("Patient", patient["id"])]
    for observation in scenario.observations:
        await put(observation)
    return stored


@dataclass(frozen=True)
class Answer:
    """What each side found for one query."""

    # The searched types, comma-separated, and the query as asked (or as composed).
    resource_type: str
    asked: str
    store: set[str]
    matcher: set[str]
    candidates: int

    def share(self) -> str:
        """How much of the candidates the matcher found, for the statistics."""
        found = len(self.matcher)
        return "none" if not found else "all" if found == self.candidates else "some"

    def __str__(self) -> str:
        return (
            f"{self.resource_type}?{self.asked}: store {sorted(self.store)}, "
            f"matcher {sorted(self.matcher)}"
        )


# A search to run: what to show of it, and the query.
Asked = tuple[str, SearchQuery]
# The searches to run, made from the scenario's parsed queries.
Compose = Callable[[list[Asked]], list[Asked]]


def _as_parsed(searches: list[Asked]) -> list[Asked]:
    return searches


async def _search_both(
    backend: str, path: Path, scenario: Scenario, compose: Compose = _as_parsed
) -> tuple[list[Answer], Stored]:
    """Write the scenario into a fresh store; run each query (as `compose` makes them
    from the parsed ones) on both sides."""
    chosen = make_backend(backend, path)
    store = chosen.store
    await store.open()
    try:
        stored = await _write(store, scenario)
        parsed = []
        for resource_type, written in scenario.queries:
            params = [(name, stored.instants(value)) for name, value in written]
            query = parse_search((resource_type,), [*params, ("_count", "1000")], base_url=BASE_URL)
            parsed.append((str(params), query))
        answers = []
        for asked, query in compose(parsed):
            result = await store.search(query)
            candidates = [r for t in query.resource_types for r in stored.of_type(t)]
            from_matcher = {
                resource["id"]
                for resource in candidates
                if matches(query, resource, resolve=stored.resolve, referrers=stored.referrers)
            }
            found = {version.id for version in result.matches}
            types = ",".join(query.resource_types)
            answers.append(Answer(types, asked, found, from_matcher, len(candidates)))
        return answers, stored
    finally:
        await store.close()
        chosen.cleanup()


class SearchBoth(Protocol):
    def __call__(
        self, scenario: Scenario, compose: Compose = _as_parsed
    ) -> tuple[list[Answer], Stored]: ...


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def search_both(backend: str, tmp_path: Path) -> Iterator[SearchBoth]:
    """Runs a scenario on a fresh store (removed after it) on one event loop, shared by
    all the examples of a test."""
    with asyncio.Runner() as loop:

        def run(scenario: Scenario, compose: Compose = _as_parsed) -> tuple[list[Answer], Stored]:
            with tempfile.TemporaryDirectory(dir=tmp_path) as directory:
                path = Path(directory) / "s.sqlite"
                return loop.run(_search_both(backend, path, scenario, compose))

        yield run


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_store_search_agrees_with_the_matcher(search_both: SearchBoth, scenario: Scenario) -> None:
    answers, stored = search_both(scenario)
    for answer in answers:
        event(f"{answer.resource_type}: {answer.share()}")
    disagreements = [str(a) for a in answers if a.store != a.matcher]
    if disagreements:
        note(f"resources: {json.dumps(list(stored.resources.values()))}")
    assert not disagreements, "\n".join(disagreements)


# --- AllOfPredicate: the parsed queries composed ---------------------------------------

ALL_OF_EXAMPLES = 150


def _one_of(types: tuple[str, ...], *alternatives: Predicate) -> SearchQuery:
    return SearchQuery(types, (alternatives,), count=1000)


def _all_of_compositions(searches: list[Asked]) -> list[Asked]:
    """Each parsed query `a` with the next one `b`, as SMART authorization composes
    criteria (DESIGN.md "Authorization"): an OR of the two conjunctions; a system search
    over Patient and Observation where each is confined to its own type (when both are
    of one type, the other type gets nothing); nested; a chain's inner; a `_has` inner."""
    composed: list[Asked] = []
    for (asked_a, a), (asked_b, b) in zip(searches, searches[1:] + searches[:1], strict=True):
        a_only, b_only = AllOfPredicate(a.clauses), AllOfPredicate(b.clauses)
        a_typed = AllOfPredicate(a.clauses, a.resource_type)
        b_typed = AllOfPredicate(b.clauses, b.resource_type)
        label = f"{a.resource_type}{asked_a} {{}} {b.resource_type}{asked_b}"
        if a.resource_type == b.resource_type:
            composed.append((label.format("or"), _one_of((a.resource_type,), a_only, b_only)))
        composed.append(
            (label.format("or (system)"), _one_of(("Patient", "Observation"), a_typed, b_typed))
        )
        nested = AllOfPredicate(((a_only,), (b_typed, IdPredicate(("p0", "o0")))))
        composed.append(
            (label.format("and (b or p0/o0), nested"), _one_of(a.resource_types, nested))
        )
        chains = (
            ChainPredicate("subject", ("Patient",), a_typed),
            ChainPredicate("subject", ("Patient",), b_only),
        )
        composed.append((label.format("or, chained"), _one_of(("Observation",), *chains)))
        has = (
            HasPredicate("Observation", "subject", a_typed),
            HasPredicate("Observation", "subject", b_only),
        )
        composed.append((label.format("or, _has"), _one_of(("Patient",), *has)))
    return composed


@settings(
    max_examples=ALL_OF_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
def test_all_of_agrees_with_the_matcher(search_both: SearchBoth, scenario: Scenario) -> None:
    """The generated queries, two at a time, composed with `AllOfPredicate`."""
    first = Scenario(scenario.patients, scenario.observations, scenario.queries[:6])
    answers, stored = search_both(first, _all_of_compositions)
    for answer in answers:
        event(f"{answer.resource_type}: {answer.share()}")
    disagreements = [str(a) for a in answers if a.store != a.matcher]
    if disagreements:
        note(f"resources: {json.dumps(list(stored.resources.values()))}")
    assert not disagreements, "\n".join(disagreements)


# --- Cases worth keeping, each on one scenario ------------------------------------------


def _agreed(search_both: SearchBoth, scenario: Scenario) -> list[set[str]]:
    answers, _ = search_both(scenario)
    assert all(a.store == a.matcher for a in answers), "\n".join(map(str, answers))
    return [a.matcher for a in answers]


def test_chain_needs_an_existing_target(search_both: SearchBoth) -> None:
    """search.html#chaining: a chained criterion is about the referenced resource; when
    there is none (a dangling reference, a deleted target), nothing about it can match,
    not even :missing=true, :not or _lastUpdated (a deleted target's tombstone has one)."""
    observation: Resource = {
        "resourceType": "Observation",
        "id": "o0",
        "status": "final",
        "code": {"coding": [{"code": "x"}]},
        "subject": {"reference": "Patient/p0"},
    }
    ghost = {**observation, "id": "o1", "subject": {"reference": "Patient/ghost"}}
    scenario = Scenario(
        patients=[({"resourceType": "Patient", "id": "p0"}, None, True)],
        observations=[observation, ghost],
        queries=[
            ("Observation", [("subject.gender:missing", "true")]),
            ("Observation", [("subject:Patient.gender:not", "male")]),
            ("Observation", [("subject:Patient._lastUpdated", "gt2000")]),
        ],
    )
    assert _agreed(search_both, scenario) == [set(), set(), set()]


def test_compatibility_characters_fold_case(
    search_both: SearchBoth,
) -> None:
    """search.html#string: string search ignores case, for every character: U+210D
    (double-struck H) decomposes to an H, which must be folded too, on both sides
    (SQLite's LIKE would fold an ASCII H by itself)."""
    patient = {"resourceType": "Patient", "id": "p0", "name": [{"family": "\u210denry"}]}
    scenario = Scenario(
        patients=[(patient, None, False)],
        observations=[],
        queries=[("Patient", [("family", "h")]), ("Patient", [("family:contains", "H")])],
    )
    assert _agreed(search_both, scenario) == [{"p0"}, {"p0"}]
