"""The MongoDB store: PyMongo's asyncio API over a replica set (the `mongo` extra)."""

from fhirserver.storage.mongo.store import MongoStore

__all__ = ["MongoStore"]
