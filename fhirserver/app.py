"""The Starlette application: routes, error handlers, and the store's lifetime."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from starlette.applications import Starlette

from fhirserver.config import Settings
from fhirserver.interactions import rules
from fhirserver.interactions.reindex import reindex
from fhirserver.rest.errors import EXCEPTION_HANDLERS
from fhirserver.rest.routes import routes
from fhirserver.storage.base import Store
from fhirserver.storage.sqlite import SqliteStore
from fhirserver.telehealth.rules import write_rules

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


def create_app(settings: Settings | None = None, store: Store | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    chosen = store or open_store(settings)
    rules.install(write_rules(timedelta(minutes=settings.no_show_grace_minutes)))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await chosen.open()
        if chosen.index_outdated:
            logger.warning("search index tables were upgraded; rebuilding them")
            await reindex(chosen)
        try:
            yield
        finally:
            await chosen.close()

    app = Starlette(
        routes=routes(settings.base_path),
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = chosen
    return app
