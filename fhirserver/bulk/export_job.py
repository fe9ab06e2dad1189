"""Bulk export as a durable job (Bulk Data IG 2.0.0 export.html; issue 14 "Jobs are
durable and resumable"): kick-off, one chunk per run, status, cancel, expiry.

The export is a `Job` of kind "export" whose payload holds the request, the snapshot
(`export_snapshot.py`) and the progress: the type being written, where its next chunk
starts, and the files written so far. Each run of the job writes one chunk and saves
the progress by putting the job again, due at once: the runner then claims it again
(after any job that was due earlier, so an export does not hold up telehealth's jobs)
and a process killed mid-chunk leaves the job to be claimed when its lease runs out,
to go on from the last saved chunk. After the types, when `includeAssociatedData` asks
for it, one more phase pages the Provenance the same way (export_associated.py). The
last chunk writes the final status and lets the runner finish the job.

What a client sees is a record of kind "export" (state, the kick-off's client, what is
being written, the files when done), kept apart from the job because the job is gone
once it is done. While running, the record expires unless the job's chunks renew it
(`running_for`): it cannot outlive a job that was never recorded.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from fhirserver.auth.policy import alternatives
from fhirserver.auth.scopes import Interaction
from fhirserver.bulk.export_associated import PROVENANCE, associated_provenance
from fhirserver.bulk.export_files import DELETED, ERROR, OUTPUT, Line, OutputFile, append
from fhirserver.bulk.export_request import ExportRequest
from fhirserver.bulk.export_select import Select, in_window, selector
from fhirserver.bulk.export_snapshot import snapshot_page
from fhirserver.clock import Clock
from fhirserver.config import Settings
from fhirserver.errors import Forbidden
from fhirserver.resources import codec
from fhirserver.resources.elements import select_elements
from fhirserver.resources.meta import format_instant
from fhirserver.storage.base import Job, Store, UnitOfWork, Version
from fhirserver.storage.retry import run_unit
from fhirserver.worker import MAX_ATTEMPTS, Handler

logger = logging.getLogger("fhirserver.export")

EXPORT = "export"
EXPIRY = "export-expiry"
# The record kinds of an export's status, and of the mark a cancellation leaves.
STATUS = "export"
CANCELLED = "export-cancelled"
RUNNING, DONE, FAILED = "running", "done", "failed"
RUNNING_FOR = timedelta(minutes=15)


@dataclass(frozen=True)
class ExportConfig:
    folder: Path
    retention: timedelta
    max_file_bytes: int
    # Versions read per chunk: what is held in memory at once.
    chunk: int = 1000
    # How long a running export's status record lasts unless the job's progress renews
    # it: a kick-off that died before its job was recorded frees its slot after this.
    running_for: timedelta = RUNNING_FOR


def export_config(settings: Settings) -> ExportConfig:
    return ExportConfig(
        Path(settings.export_dir),
        timedelta(hours=settings.export_retention_hours),
        settings.export_max_file_bytes,
        settings.export_chunk,
    )


@dataclass(frozen=True)
class Progress:
    type_index: int = 0
    # Where the current type's next chunk starts (None: from the snapshot bound).
    before_seq: int | None = None
    written: int = 0
    files: tuple[OutputFile, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "type_index": self.type_index,
            "before_seq": self.before_seq,
            "written": self.written,
            "files": [f.to_json() for f in self.files],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Progress:
        return cls(
            data["type_index"],
            data["before_seq"],
            data["written"],
            tuple(OutputFile.from_json(f) for f in data["files"]),
        )


@dataclass(frozen=True)
class ExportState:
    """A job payload: what is exported, as of when, and how far it got."""

    request: ExportRequest
    snapshot_seq: int
    transaction_time: datetime
    progress: Progress = Progress()

    def payload(self) -> bytes:
        return orjson.dumps(
            {
                "request": self.request.to_json(),
                "snapshot_seq": self.snapshot_seq,
                "transaction_time": self.transaction_time.isoformat(),
                "progress": self.progress.to_json(),
            }
        )

    @classmethod
    def of(cls, payload: bytes) -> ExportState:
        data = orjson.loads(payload)
        return cls(
            ExportRequest.from_json(data["request"]),
            data["snapshot_seq"],
            datetime.fromisoformat(data["transaction_time"]),
            Progress.from_json(data["progress"]),
        )


def readable_types(request: ExportRequest) -> ExportRequest:
    """The request without the types its access may not search at all (SMART: a
    system export under `system/Patient.rs` exports Patients only); 403 if none is left."""
    access = request.access()
    kept = tuple(t for t in request.types if alternatives(access, Interaction.SEARCH, t))
    if not kept:
        raise Forbidden("The access token does not allow reading any of the types asked for")
    return replace(request, types=kept)


def steps(request: ExportRequest) -> int:
    """The job's phases: one per type, then the associated data if asked for."""
    return len(request.types) + (1 if request.associated else 0)


def phase_name(request: ExportRequest, step: int) -> str:
    if step < len(request.types):
        return request.types[step]
    return f"{PROVENANCE} (associated data)"


async def kick_off(
    store: Store,
    request: ExportRequest,
    clock: Clock,
    export_id: str,
    running_for: timedelta = RUNNING_FOR,
) -> datetime:
    """Record the export and its job; the snapshot's `transactionTime`.

    The status record comes first, so that a client never polls an export that has a
    job but no status, and it expires after `running_for` unless the job's chunks renew
    it: a process that dies between the two writes leaves a record that lapses, and the
    client's slot (`running_exports`) is free again, rather than "running" for ever.
    Nobody learns of such an export: the 202 is sent after both writes."""
    request = readable_types(request)
    now = clock()
    await store.put_record(STATUS, export_id, _running(request, _iso(now)), now + running_for)
    # Every version up to the bound is visible, every later one numbered above it.
    bound = await store.settled_seq()
    moment = clock()
    state = ExportState(request, bound, moment)
    await run_unit(
        store, lambda unit: unit.put_job(Job(EXPORT, export_id, moment, state.payload()))
    )
    return moment


def _running(
    request: ExportRequest, created: str, progress: Progress = Progress()
) -> dict[str, Any]:
    """The status record of a running export: whose it is and how far it got."""
    return {
        "state": RUNNING,
        "client_id": request.client_id,
        # The user too: two users of one app may not see each other's exports.
        "user": request.user,
        "written": progress.written,
        "created": created,
        # What is being written (X-Progress): the phase, and which of how many.
        "phase": phase_name(request, min(progress.type_index, steps(request) - 1)),
        "step": min(progress.type_index + 1, steps(request)),
        "types": len(request.types),
    }


def progress_text(status: Mapping[str, Any]) -> str:
    """A running export's progress for a person (export.html X-Progress), e.g.
    "12,000 resources written; Observation (7 of 23 types)"."""
    written = int(status.get("written", 0))
    text = f"{written:,} resource{'' if written == 1 else 's'} written"
    if "phase" not in status:
        return text
    step, types = int(status["step"]), int(status["types"])
    if step <= types:
        return f"{text}; {status['phase']} ({step} of {types} type{'' if types == 1 else 's'})"
    return f"{text}; {status['phase']}, after all {types} type{'' if types == 1 else 's'}"


async def export_status(store: Store, export_id: str, now: datetime) -> dict[str, Any] | None:
    """The status record: `state`, `client_id`, `written`, and when done `files`,
    `transaction_time`, `request` (None: no such export, or cancelled or expired)."""
    return await store.get_record(STATUS, export_id, now)


async def running_exports(store: Store, client_id: str | None, now: datetime) -> int:
    """How many exports of this client are still running."""
    records = await store.list_records(STATUS, now)
    return sum(
        1
        for record in records
        if record.body.get("state") == RUNNING and record.body.get("client_id") == client_id
    )


async def cancel_export(store: Store, config: ExportConfig, clock: Clock, export_id: str) -> bool:
    """Forget the export, its jobs and its files (export.html "Delete a Bulk Data
    Request"); False if there was none."""
    # The mark first: a chunk running now looks for it after saving its progress, so
    # whichever of the two comes last removes what the other left.
    # It outlives any chunk in flight.
    await store.put_record(CANCELLED, export_id, {}, clock() + config.retention)
    found = await store.delete_record(STATUS, export_id)
    await run_unit(store, partial(_drop_jobs, export_id=export_id))
    await asyncio.to_thread(_remove, config.folder, export_id)
    return found


async def _drop_jobs(unit: UnitOfWork, export_id: str) -> None:
    await unit.drop_job(EXPORT, export_id)
    await unit.drop_job(EXPIRY, export_id)


def export_file(config: ExportConfig, export_id: str, name: str) -> Path:
    return config.folder / export_id / name


def export_handlers(store: Store, config: ExportConfig, clock: Clock) -> dict[str, Handler]:
    """The job handlers to give the runner (worker.py)."""

    async def run(job: Job) -> None:
        await run_chunk(store, config, clock, job)

    async def expire(job: Job) -> None:
        await cancel_export(store, config, clock, job.key)

    return {EXPORT: run, EXPIRY: expire}


async def run_chunk(store: Store, config: ExportConfig, clock: Clock, job: Job) -> None:
    """Write the export's next chunk and save the progress, or finish it."""
    status = await store.get_record(STATUS, job.key, clock())
    if status is None and await store.get_record(CANCELLED, job.key, clock()) is not None:
        # Cancelled (or expired) while queued.
        await asyncio.to_thread(_remove, config.folder, job.key)
        return
    if status is None:
        # The running record lapsed while the job waited (no process ran it for longer
        # than `running_for`): the job is what counts, its status is made again.
        state = ExportState.of(job.payload)
        created = _iso(state.transaction_time)
        status = _running(state.request, created, state.progress)
    try:
        await _advance(store, config, clock, job, status)
    except Exception:
        # Whatever step failed (the chunk, saving progress, finishing), an export the
        # runner gives up on ends as failed, its files removed and its slot freed,
        # never "running" for ever.
        if job.attempts + 1 >= MAX_ATTEMPTS:
            logger.exception("export %s failed", job.key)
            await _fail(store, config, clock, job.key, status, "The export failed repeatedly")
        raise
    if await store.get_record(CANCELLED, job.key, clock()) is not None:
        await cancel_export(store, config, clock, job.key)


async def _advance(
    store: Store, config: ExportConfig, clock: Clock, job: Job, status: dict[str, Any]
) -> None:
    """Write the next chunk, then save the progress, or finish."""
    state = ExportState.of(job.payload)
    progress = await _next_chunk(store, config, state, job.key)
    state = replace(state, progress=progress)
    if progress.type_index < steps(state.request):
        chunk_done = Job(EXPORT, job.key, clock(), state.payload())
        await run_unit(store, lambda unit: unit.put_job(chunk_done))
        # Renewed with each chunk: the record outlives the export only while it runs.
        running = _running(state.request, status.get("created", ""), progress)
        await store.put_record(STATUS, job.key, running, clock() + config.running_for)
    else:
        await _finish(store, config, clock, job.key, status, state)


async def _next_chunk(
    store: Store, config: ExportConfig, state: ExportState, export_id: str
) -> Progress:
    request, progress = state.request, state.progress
    lines: list[Line] = []
    if progress.type_index < len(request.types):
        resource_type = request.types[progress.type_index]
        page = await snapshot_page(
            store,
            resource_type,
            state.snapshot_seq,
            progress.before_seq,
            request.since,
            config.chunk,
        )
        select = selector(request, resource_type)
        for version in page.versions:
            line = await _line(store, request, select, version)
            if line is not None:
                lines.append(line)
    else:
        # export.html includeAssociatedData: the Provenance about what was returned.
        page = await snapshot_page(
            store, PROVENANCE, state.snapshot_seq, progress.before_seq, None, config.chunk
        )
        found = await associated_provenance(store, request, state.snapshot_seq, page.versions)
        elements = request.elements_for(PROVENANCE)
        for resource in found:
            if elements:
                resource = select_elements(resource, elements)
            lines.append(Line(OUTPUT, PROVENANCE, PROVENANCE, _ndjson(resource)))
    folder = config.folder / export_id
    files = await asyncio.to_thread(append, folder, progress.files, lines, config.max_file_bytes)
    if page.next_before_seq is None:
        return Progress(progress.type_index + 1, None, progress.written + len(lines), files)
    return Progress(progress.type_index, page.next_before_seq, progress.written + len(lines), files)


async def _line(
    store: Store, request: ExportRequest, select: Select, version: Version
) -> Line | None:
    if not in_window(request, version.last_updated):
        return None
    if version.body is not None:
        resource = codec.load_object(version.body, "A stored resource")
        if not select(resource):
            return None
        elements = request.elements_for(version.resource_type)
        if elements:
            resource = select_elements(resource, elements)
        return Line(OUTPUT, version.resource_type, version.resource_type, _ndjson(resource))
    if request.since is None:
        return None
    # Deleted since `_since` (export.html "deleted"): listed when what was deleted
    # would have been exported.
    before = await store.vread(version.resource_type, version.id, version.version - 1)
    if before is None or before.body is None:
        return None
    if not select(codec.load_object(before.body, "A stored resource")):
        return None
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "DELETE", "url": f"{version.resource_type}/{version.id}"}}
        ],
    }
    return Line(DELETED, version.resource_type, "Bundle", _ndjson(bundle))


async def _finish(
    store: Store,
    config: ExportConfig,
    clock: Clock,
    export_id: str,
    status: dict[str, Any],
    state: ExportState,
) -> None:
    files = state.progress.files
    if state.request.problems:
        outcomes = [
            Line(ERROR, "OperationOutcome", "OperationOutcome", _ndjson(_outcome(text)))
            for text in state.request.problems
        ]
        files = await asyncio.to_thread(
            append, config.folder / export_id, files, outcomes, config.max_file_bytes
        )
    now = clock()
    body = {
        **status,
        "state": DONE,
        "written": state.progress.written,
        "transaction_time": format_instant(state.transaction_time),
        "request": state.request.request_url,
        "files": [f.to_json() for f in files],
        "expires": _iso(now + config.retention),
    }
    await store.put_record(STATUS, export_id, body, now + config.retention)
    expiry = Job(EXPIRY, export_id, now + config.retention)
    await run_unit(store, lambda unit: unit.put_job(expiry))


async def _fail(
    store: Store,
    config: ExportConfig,
    clock: Clock,
    export_id: str,
    status: dict[str, Any],
    why: str,
) -> None:
    now = clock()
    body = {**status, "state": FAILED, "error": why}
    await store.put_record(STATUS, export_id, body, now + config.retention)
    await asyncio.to_thread(_remove, config.folder, export_id)


def manifest(
    status: Mapping[str, Any], file_url: Callable[[str], str], requires_access_token: bool
) -> dict[str, Any]:
    """export.html "Response - Complete Status": the manifest of a finished export."""
    files = [OutputFile.from_json(f) for f in status.get("files", ())]

    def listed(kind: str) -> list[dict[str, Any]]:
        return [
            {"type": f.type, "url": file_url(f.name), "count": f.count}
            for f in files
            if f.kind == kind
        ]

    return {
        "transactionTime": status["transaction_time"],
        "request": status["request"],
        "requiresAccessToken": requires_access_token,
        "output": listed(OUTPUT),
        "deleted": listed(DELETED),
        "error": listed(ERROR),
    }


def _outcome(text: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "warning", "code": "not-supported", "diagnostics": text}],
    }


def _ndjson(resource: dict[str, Any]) -> bytes:
    return codec.dumps(resource) + b"\n"


def _iso(moment: datetime) -> str:
    return format_instant(moment)


def _remove(folder: Path, export_id: str) -> None:
    shutil.rmtree(folder / export_id, ignore_errors=True)
