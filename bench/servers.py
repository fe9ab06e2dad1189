"""The two servers under load, each a subprocess on a free port of 127.0.0.1.

`running` starts one, waits for the line announcing its base URL, yields the URL and the
process id, and always stops the process on the way out: SIGTERM, then SIGKILL if it
lingers.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 60.0
SHUTDOWN_SECONDS = 10.0
_BASE_URL = re.compile(r"http://127\.0\.0\.1:\d+/fhir\b")


@dataclass(frozen=True, slots=True)
class Server:
    base_url: str
    pid: int


class ServerStartError(RuntimeError):
    """A server exited, or said something unexpected, instead of announcing its URL."""


def fhirserver_command(store: Path) -> list[str]:
    script = Path(sys.executable).parent / "fhirserver"
    return [str(script), "serve", "--host", "127.0.0.1", "--port", "0", "--store", str(store)]


def baseline_command(store: Path) -> list[str]:
    return [sys.executable, "-m", "bench.baseline", "--store", str(store)]


def _environment(settings: dict[str, str] | None = None) -> dict[str, str]:
    # FHIRSERVER_* variables could change what is measured (e.g. synchronous=FULL, another
    # base path); the bench measures the defaults, which the baseline copies, unless a
    # bench names the settings it compares.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("FHIRSERVER_")}
    return {**inherited, **(settings or {})}


@asynccontextmanager
async def running(
    name: str, command: list[str], settings: dict[str, str] | None = None
) -> AsyncIterator[Server]:
    """Run `command` until the block ends; yield it with the base URL it prints once up."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=_environment(settings), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), STARTUP_SECONDS)
        except TimeoutError:
            raise ServerStartError(f"{name} did not start in {STARTUP_SECONDS:.0f} s") from None
        found = _BASE_URL.search(line.decode(errors="replace"))
        if found is None:
            raise ServerStartError(f"{name} did not announce a loopback URL: {line!r}")
        yield Server(found.group(0), process.pid)
    finally:
        await stop(process)


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), SHUTDOWN_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
