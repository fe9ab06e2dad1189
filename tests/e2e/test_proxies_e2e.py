"""Forwarded headers over a real uvicorn configured as `fhirserver serve` configures it
(issue 20 point 3): a client on loopback that forges X-Forwarded-For gets no fresh join
rate limit unless loopback is a trusted proxy (FHIRSERVER_TRUSTED_PROXIES), and then the
forwarded address is the client, in the limits and in the access log."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.serving import server_config
from tests.loopback import serving
from tests.rest.test_proxies import guess

pytestmark = pytest.mark.e2e

FORGED = 23


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def _guesses(tmp_path: Path, trusted: str) -> tuple[list[int], list[str]]:
    """Join guesses from loopback, each forging another X-Forwarded-For; the answers and
    the access log's lines."""
    settings = Settings(
        store=str(tmp_path / "f.sqlite"),
        host="127.0.0.1",
        port=0,
        run_jobs=False,
        join_rate_per_minute=5,
        trusted_proxies=trusted,
        log_level="info",
    )
    config = server_config(create_app(settings), settings)
    access = Lines()
    logging.getLogger("uvicorn.access").addHandler(access)
    try:
        async with serving(config) as port, httpx.AsyncClient(timeout=10.0) as http:
            statuses = []
            for n in range(FORGED):
                answer = await http.post(
                    f"http://127.0.0.1:{port}/join/{guess(n)}",
                    json={"name": "Mallory"},
                    headers={"X-Forwarded-For": f"203.0.113.{n}"},
                )
                statuses.append(answer.status_code)
    finally:
        logging.getLogger("uvicorn.access").removeHandler(access)
    return statuses, access.lines


async def test_forged_forwarded_for_from_loopback_is_not_a_new_client(tmp_path: Path) -> None:
    statuses, lines = await _guesses(tmp_path, trusted="")
    assert statuses == [404] * 5 + [429] * (FORGED - 5)
    assert lines and all("127.0.0.1" in line and "203.0.113." not in line for line in lines)


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(
    tmp_path: Path,
) -> None:
    statuses, lines = await _guesses(tmp_path, trusted="127.0.0.1")
    assert statuses == [404] * FORGED
    assert any("203.0.113.22" in line for line in lines)
