"""The Starlette application: routes, error handlers, and the store's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from fhirserver.auth.authenticate import Authenticator
from fhirserver.auth.external import ExternalAuthenticator
from fhirserver.auth.server import AuthServer, make_auth_server
from fhirserver.auth.smart_authenticator import smart_authenticator
from fhirserver.bulk.export_job import export_config, export_handlers
from fhirserver.clock import Clock, system_clock
from fhirserver.config import Settings
from fhirserver.connections import BodyDeadline
from fhirserver.cpu import CpuLimits, CpuPool
from fhirserver.interactions.ig_load import stored_registry
from fhirserver.interactions.profile_rule import profile_rules
from fhirserver.interactions.rules import WriteContext
from fhirserver.profiles.source import ProfileSource
from fhirserver.rest.authorization import refusal_audit_limit
from fhirserver.rest.errors import EXCEPTION_HANDLERS
from fhirserver.rest.proxies import proxy_middleware
from fhirserver.rest.ratelimit import RateLimit
from fhirserver.rest.routes import routes
from fhirserver.rest.smart import oauth_uris, token_rate_limit
from fhirserver.rest.smart_authorize import login_limits
from fhirserver.search.params import SearchParameters
from fhirserver.storage.base import Store
from fhirserver.storage.configured import open_store
from fhirserver.storage.reindex import rebuild_outdated
from fhirserver.subscriptions.context import (
    SubscriptionContext,
    SubscriptionSettings,
    delivery_client,
)
from fhirserver.subscriptions.delivery import delivery_handlers
from fhirserver.subscriptions.kinds import MATCH
from fhirserver.subscriptions.matcher import POLL, match_handler
from fhirserver.subscriptions.publish import publish_on_start
from fhirserver.subscriptions.rules import subscription_rules
from fhirserver.subscriptions.signing import SECRET_JOB, secret_handler
from fhirserver.subscriptions.source import StoreNotifications
from fhirserver.subscriptions.topics import Topic, server_topics
from fhirserver.subscriptions.websocket import Limits, SocketCounts
from fhirserver.telehealth.providers import VideoProvider
from fhirserver.telehealth.rules import write_rules
from fhirserver.telehealth.visit_jobs import job_handlers
from fhirserver.telehealth.wiring import make_provider, make_visit_context
from fhirserver.worker import JobRunner

logger = logging.getLogger("fhirserver")

# Jobs one process runs at once (worker.py JobRunner).
JOB_CONCURRENCY = 8


_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class WakeJobsAfterWrites:
    """Wakes the app's job runner once a write request has been answered (its unit of
    work committed), so the subscription matcher looks at the change log now rather
    than at its next poll (issue 15 "Bench": notification latency)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
        if scope["type"] == "http" and scope["method"] in _WRITES:
            scope["app"].state.jobs.wake()


def fhir_base_url(settings: Settings) -> str:
    """The FHIR base URL tokens are issued for (their `aud`): the public URL if set."""
    return settings.public_url.rstrip("/") or settings.origin + settings.base_path


def _authenticator(
    settings: Settings, http: httpx.AsyncClient, clock: Clock, auth_server: AuthServer | None
) -> Authenticator | None:
    """The configured mode's authenticator; None when authorization is off."""
    if auth_server is not None:
        return smart_authenticator(auth_server)
    if settings.auth_mode == "external":
        base = fhir_base_url(settings)
        return ExternalAuthenticator(
            settings, http, clock, audience=settings.auth_audience or base, base_url=base
        )
    return None


def create_app(
    settings: Settings | None = None,
    store: Store | None = None,
    provider: VideoProvider | None = None,
    clock: Clock = system_clock,
    authenticator: Authenticator | None = None,
    topics: Mapping[str, Topic] | None = None,
) -> Starlette:
    """`provider` replaces the configured video provider (tests: mock transports);
    `clock` is the one source of time for everything the app does; `authenticator`
    replaces the configured mode's (tests: tokens of their own); `topics` the
    subscription topics the server offers, by canonical URL (default: the ones shipped
    in extensions/)."""
    settings = settings or Settings.from_env()
    chosen = store or open_store(settings)
    video = provider or make_provider(settings, clock=clock)
    grace = timedelta(minutes=settings.no_show_grace_minutes)
    # Subscriptions (README "Subscriptions"): the Subscription write rule, and the
    # matcher and delivery jobs.
    subscription_settings = SubscriptionSettings.from_settings(settings)
    offered = dict(server_topics() if topics is None else topics)
    rules = {
        **write_rules(grace, settings.video_provider),
        **subscription_rules(subscription_settings, offered),
    }
    # Profiles (README "Validation and profiles"): compiled once per stored version, for
    # $validate, and on every write when FHIRSERVER_VALIDATE_PROFILES is on.
    profiles = ProfileSource(size=settings.profile_cache_size)
    if settings.validate_profiles:
        rules = profile_rules(rules, profiles)
    # Search parameters: the shipped ones, joined at start by those stored (ig load).
    search_params = SearchParameters()
    # Large bodies are parsed, validated and indexed in worker processes (issue 20).
    cpu = CpuPool(
        CpuLimits(
            offload_bytes=settings.offload_bytes,
            budget_seconds=settings.request_cpu_seconds,
            workers=settings.cpu_workers,
        )
    )
    writes = WriteContext(rules, clock, search_params=search_params, cpu=cpu)
    subscriptions = SubscriptionContext(
        store=chosen,
        settings=subscription_settings,
        topics=offered,
        writes=writes,
        clock=clock,
        http=delivery_client(subscription_settings),
        base_url=fhir_base_url(settings),
    )
    visit_context = make_visit_context(settings, chosen, video, writes)
    # Bulk export (README "Bulk export"): each export is a job run chunk by chunk.
    exports = export_config(settings)
    handlers = {
        **job_handlers(visit_context),
        **export_handlers(chosen, exports, clock),
        MATCH: match_handler(subscriptions),
        **delivery_handlers(subscriptions),
        SECRET_JOB: secret_handler(chosen),
    }
    lease = timedelta(seconds=settings.job_lease_seconds)
    # Concurrent jobs: a slow notification endpoint does not hold up the others.
    # A commit wakes the runner (WakeJobsAfterWrites), which then runs the matcher's
    # next poll at once.
    jobs = JobRunner(
        chosen, handlers, clock, lease=lease, concurrency=JOB_CONCURRENCY, early={MATCH: POLL}
    )
    # smart mode: the built-in authorization server (rest/smart.py; auth/server.py).
    smart_mode = settings.auth_mode == "smart"
    auth_server = make_auth_server(settings, chosen, clock) if smart_mode else None
    idp_http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
    if authenticator is None:
        authenticator = _authenticator(settings, idp_http, clock, auth_server)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await chosen.open()
        search_params.current = await stored_registry(chosen)
        if chosen.index_outdated:
            logger.warning("search index tables were upgraded; rebuilding them")
            await rebuild_outdated(chosen, known=search_params.current)
        worker = None
        if settings.run_jobs:
            # Topic discovery (README "Subscriptions"): the shipped topics as Basic
            # resources, written like the jobs' work by the processes that run jobs.
            await publish_on_start(chosen, writes)
            worker = asyncio.create_task(jobs.run_forever())
        try:
            yield
        finally:
            if worker is not None:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            await video.aclose()
            await idp_http.aclose()
            await subscriptions.http.aclose()
            await chosen.close()
            await asyncio.to_thread(cpu.close)

    app = Starlette(
        routes=routes(settings.base_path, settings.auth_mode),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
        # Forwarded headers first: everything after sees the client the proxies name.
        # A stalled body ends in 408 (fhirserver/connections.py).
        middleware=[
            *proxy_middleware(settings),
            Middleware(BodyDeadline, seconds=settings.body_timeout_seconds),
            Middleware(WakeJobsAfterWrites),
        ],
    )
    app.state.settings = settings
    app.state.store = chosen
    app.state.writes = writes
    app.state.profiles = profiles
    app.state.visit_context = visit_context
    app.state.jobs = jobs
    app.state.subscriptions = subscriptions
    app.state.exports = exports
    # Turns a request's bearer token into an `Access`; None: authorization is off.
    app.state.authenticator = authenticator
    app.state.refusal_audit_limit = refusal_audit_limit()
    # Join by code: wrong guesses per client address (rest/telehealth.py `join`).
    per_minute = settings.join_rate_per_minute
    app.state.join_limit = RateLimit(per_minute, burst=per_minute)
    app.state.auth_server = auth_server
    # SMART login page: failures per client address, and per address and username
    # (rest/smart_authorize.py).
    app.state.login_limits = login_limits()
    app.state.oauth_uris = oauth_uris(settings, app.state.auth_server)
    # Token, introspection and revocation requests per client address.
    app.state.token_limit = token_rate_limit()
    # The websocket channel (rest/subscription_ws.py): where sessions read notifications
    # (a `subscriptions.websocket.NotificationSource`; None: no websocket channel), their
    # limits, and the sockets open in this process.
    app.state.notification_source = StoreNotifications(subscriptions)
    app.state.ws_limits = Limits()
    app.state.ws_sockets = SocketCounts()
    return app
