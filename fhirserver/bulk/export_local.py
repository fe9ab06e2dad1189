"""`fhirserver export`: the same export as `$export`, run in this process against the
configured store, its files and `manifest.json` written into one folder.

It records the export and runs its chunks with the job runner the server uses (so the
snapshot, `_since`, `_typeFilter` and the files are exactly the server's), then moves the
files up into the folder and forgets the export: nothing is left for a server sharing the
store to clean up.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from fhirserver.bulk.export_job import (
    DONE,
    EXPORT,
    ExportConfig,
    cancel_export,
    export_handlers,
    export_status,
    kick_off,
    manifest,
)
from fhirserver.bulk.export_request import GROUP, compartment_of, member_ids, parse_export
from fhirserver.clock import Clock
from fhirserver.errors import NotFound
from fhirserver.resources import codec
from fhirserver.storage.base import Job, Store
from fhirserver.worker import JobRunner

Progress = Callable[[int, int], None]
MANIFEST = "manifest.json"


class ExportFailed(Exception):
    """The export ended without finishing; the message says why."""


async def export_to_folder(
    store: Store,
    out_dir: Path,
    level: str,
    params: Sequence[tuple[str, str]],
    clock: Clock,
    progress: Progress,
    *,
    group_id: str | None = None,
    max_file_bytes: int,
    chunk: int,
) -> dict[str, Any]:
    """Export into `out_dir` (made if missing); the manifest, whose `url`s are the file
    names. `params` are `$export`'s (strict: a bad one raises NotSupported)."""
    request = parse_export(level, params, lenient=False)
    if level == GROUP:
        assert group_id is not None
        group = await store.read("Group", group_id)
        if group is None or group.body is None:
            raise NotFound(f"Group/{group_id} is not known")
        members = member_ids(codec.load_object(group.body), clock())
        request = compartment_of(request, members)
    request = replace(request, request_url=f"fhirserver export ({level})")
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    export_id = f"cli-{uuid.uuid4().hex}"
    config = ExportConfig(out_dir, timedelta(hours=1), max_file_bytes, chunk)
    total = await store.count()
    handlers = export_handlers(store, config, clock)
    run_export = handlers[EXPORT]

    async def run_and_show(job: Job) -> None:
        await run_export(job)
        status = await export_status(store, export_id, clock())
        if status is not None:
            progress(min(int(status.get("written", 0)), total), total)

    await kick_off(store, request, clock, export_id)
    try:
        await JobRunner(store, {**handlers, EXPORT: run_and_show}, clock).run_due()
        status = await export_status(store, export_id, clock())
        if status is None or status.get("state") != DONE:
            why = (status or {}).get("error") or "it did not finish"
            raise ExportFailed(f"the export failed: {why}")
        progress(total, total)
        await asyncio.to_thread(_move_up, out_dir / export_id, out_dir)
        answer = manifest(status, lambda name: name, requires_access_token=False)
        await asyncio.to_thread((out_dir / MANIFEST).write_bytes, codec.dumps(answer, pretty=True))
        return answer
    finally:
        # Forget the export (status, jobs, anything left in its folder).
        await cancel_export(store, config, clock, export_id)


def _move_up(folder: Path, out_dir: Path) -> None:
    for file in folder.iterdir():
        shutil.move(str(file), out_dir / file.name)
    folder.rmdir()
