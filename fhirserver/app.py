"""The Starlette application: routes, error handlers, and the store's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from starlette.applications import Starlette

from fhirserver.auth.server import make_auth_server
from fhirserver.auth.smart_authenticator import smart_authenticator
from fhirserver.clock import Clock, system_clock
from fhirserver.config import Settings
from fhirserver.interactions.rules import WriteContext
from fhirserver.rest.errors import EXCEPTION_HANDLERS
from fhirserver.rest.ratelimit import RateLimit
from fhirserver.rest.routes import routes
from fhirserver.rest.smart import oauth_uris, token_rate_limit
from fhirserver.rest.smart_authorize import login_limits
from fhirserver.storage.base import Store
from fhirserver.storage.reindex import reindex
from fhirserver.storage.sqlite import SqliteStore
from fhirserver.telehealth.providers import VideoProvider
from fhirserver.telehealth.rules import write_rules
from fhirserver.telehealth.visit_jobs import job_handlers
from fhirserver.telehealth.wiring import make_provider, make_visit_context
from fhirserver.worker import JobRunner

logger = logging.getLogger("fhirserver")


def open_store(settings: Settings) -> Store:
    """The (unopened) store the settings name."""
    if settings.mongodb:
        try:
            from fhirserver.storage.mongo import MongoStore
        except ImportError:
            raise ValueError(
                "a mongodb:// store needs PyMongo: pip install 'fhirserver[mongo]'"
            ) from None
        return MongoStore(settings.store)
    return SqliteStore(settings.sqlite_path, synchronous=settings.sqlite_synchronous)


def create_app(
    settings: Settings | None = None,
    store: Store | None = None,
    provider: VideoProvider | None = None,
    clock: Clock = system_clock,
) -> Starlette:
    """`provider` replaces the configured video provider (tests: mock transports);
    `clock` is the one source of time for everything the app does."""
    settings = settings or Settings.from_env()
    chosen = store or open_store(settings)
    video = provider or make_provider(settings, clock=clock)
    grace = timedelta(minutes=settings.no_show_grace_minutes)
    writes = WriteContext(write_rules(grace, settings.video_provider), clock)
    visit_context = make_visit_context(settings, chosen, video, writes)
    jobs = JobRunner(chosen, job_handlers(visit_context), clock)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await chosen.open()
        if chosen.index_outdated:
            logger.warning("search index tables were upgraded; rebuilding them")
            await reindex(chosen)
        worker = asyncio.create_task(jobs.run_forever()) if settings.run_jobs else None
        try:
            yield
        finally:
            if worker is not None:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            await video.aclose()
            await chosen.close()

    app = Starlette(
        routes=routes(settings.base_path, settings.auth_mode),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = chosen
    app.state.writes = writes
    app.state.visit_context = visit_context
    app.state.jobs = jobs
    # Join by code: per client address and per code (a guessing client changes codes;
    # a code under attack is guessed from many addresses).
    per_minute = settings.join_rate_per_minute
    app.state.join_limits = (
        RateLimit(per_minute, burst=per_minute),
        RateLimit(per_minute, burst=per_minute),
    )
    # SMART login page: per client address and per username (rest/smart_authorize.py).
    app.state.login_limits = login_limits()
    # --- SMART authorization server (rest/smart.py; auth/server.py) -------------------
    # smart mode: the built-in server and its Authenticator; external mode: neither here.
    smart_mode = settings.auth_mode == "smart"
    app.state.auth_server = make_auth_server(settings, chosen, clock) if smart_mode else None
    app.state.authenticator = (
        smart_authenticator(app.state.auth_server) if app.state.auth_server else None
    )
    app.state.oauth_uris = oauth_uris(settings, app.state.auth_server)
    # Token, introspection and revocation requests per client address.
    app.state.token_limit = token_rate_limit()
    # ------------------------------------------------------------------------------------
    return app
