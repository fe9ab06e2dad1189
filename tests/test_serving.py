"""`fhirserver serve`'s event loop (fhirserver/serving.py; README "Throughput"): the
server and the bench's bare endpoint run on uvloop's loop, as uvicorn's own "auto"
choice would, so the bench's ratio compares like with like."""

from __future__ import annotations

import asyncio

from fhirserver.serving import run_serving


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_the_server_runs_on_uvloop() -> None:
    assert run_serving(_loop_module()).startswith("uvloop")


def test_a_server_run_leaves_no_loop_behind() -> None:
    # The runner closes its loop: a later asyncio.run in the process (the CLI's other
    # commands, tests) starts from scratch.
    run_serving(asyncio.sleep(0))
    assert asyncio.run(_loop_module()).startswith("asyncio")
