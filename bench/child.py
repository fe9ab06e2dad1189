"""A subprocess the bulk-loading bench waits for: a helper of its own or `fhirserver
import`. `started` always stops it on the way out, with whatever processes it started
(an import's workers), so a bench that fails or is interrupted leaves nothing running."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from bench import rss, servers

ROOT = Path(__file__).resolve().parent.parent
PIPE = asyncio.subprocess.PIPE


def environment() -> dict[str, str]:
    # As for the servers (bench.servers): FHIRSERVER_* variables could change what is
    # measured, and the bench measures the defaults.
    return {k: v for k, v in os.environ.items() if not k.startswith("FHIRSERVER_")}


@asynccontextmanager
async def started(
    command: list[str], *, stdout: int | None = None, stderr: int | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run `command` in the repository root; output is inherited unless PIPE is asked."""
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, env=environment(), stdout=stdout, stderr=stderr
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            await _stop(process)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it lingers; then SIGTERM to any of its descendants left."""
    descendants = rss.tree(process.pid)[1:]
    await servers.stop(process)
    for pid in descendants:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
