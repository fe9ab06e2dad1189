"""How a bearer token becomes an `Access`: the one interface every mode implements.

The REST layer holds one `Authenticator` per app (none when authorization is off) and
calls it with the token of each request's `Authorization: Bearer` header. The built-in
authorization server (`smart` mode) and an outside identity provider (`external` mode)
each supply one; a token that does not hold raises `InvalidToken` (401).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fhirserver.auth.access import Access

Authenticator = Callable[[str], Awaitable[Access]]
