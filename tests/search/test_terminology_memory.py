"""Issue 20 point 8 (bounded memory): a `:in` / `:not-in` search names a ValueSet of the
client's choosing; every distinct URL asked for must not leave something behind in the
server, or a client sending many of them grows its memory without bound."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from fhirserver.errors import NotSupported
from fhirserver.search.parse import parse_search

URLS = 2000
URL_BYTES = 4000
# Far below what URLS * URL_BYTES (8 MB) kept would be; room for allocator noise.
ALLOWED_GROWTH = 1_000_000


def _search_unknown_value_sets(first: int) -> None:
    for number in range(first, first + URLS):
        url = f"http://example.org/ValueSet/{number}-" + "x" * URL_BYTES
        with pytest.raises(NotSupported):
            parse_search(("Observation",), [("code:in", url)])


def test_unknown_value_set_urls_leave_nothing_behind() -> None:
    _search_unknown_value_sets(0)  # anything built once (the parameter registry) is built
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        _search_unknown_value_sets(URLS)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < ALLOWED_GROWTH
