"""The settings every read runs under (R4 http.html#search, #history, #transaction): page
sizes, the base URL that absolute references and links are read against, `Prefer:
handling` (R4 search.html#errors) and who reads (the token's `Access`). One object,
built once per request by the REST layer, taken by search, history and a Bundle's GET
entries alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fhirserver.auth.access import Access
from fhirserver.search.params import Registry
from fhirserver.search.query import MAX_INCLUDED
from fhirserver.search.result_params import DEFAULT_COUNT, MAX_COUNT


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How a read pages and handles parameters. The defaults are the server's defaults
    (config.Settings); a read with no request behind it (an import) takes them as is."""

    # The server's public base URL, without a trailing slash; "" where there is none.
    base_url: str = ""
    # `Prefer: handling=strict`: unknown parameters are refused with 400, not ignored.
    strict: bool = False
    search_page_size: int = DEFAULT_COUNT
    history_page_size: int = 50
    # The largest `_count` honoured, in searches and histories.
    max_page_size: int = MAX_COUNT
    # The most resources `_include` / `_revinclude` bring in per page.
    max_included: int = MAX_INCLUDED
    # Who reads: the request's token as an `Access` (everything when authorization is
    # off, or for the server's own reads).
    access: Access = field(default_factory=Access.everything)
    # The search parameters (the app's, with an Implementation Guide's joined); None:
    # the shipped ones.
    known: Registry | None = None
