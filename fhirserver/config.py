"""Settings: one frozen object, read from FHIRSERVER_* environment variables and CLI flags."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

ENV_PREFIX = "FHIRSERVER_"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    # Path prefix of the FHIR base URL; "" serves FHIR at the root.
    base_path: str = "/fhir"
    # A SQLite file path (or sqlite:///path), or a MongoDB connection string
    # (mongodb://host/database?replicaSet=...; mongodb+srv:// too).
    store: str = "./data/fhir.sqlite"
    # Public base URL for fullUrl / Location when behind a proxy; derived from the request if unset.
    public_url: str = ""
    max_body_bytes: int = 16 * 1024 * 1024
    history_page_size: int = 50
    search_page_size: int = 20
    max_page_size: int = 1000
    # SQLite PRAGMA synchronous: NORMAL survives a killed process, FULL also a power cut.
    sqlite_synchronous: str = "NORMAL"
    log_level: str = "warning"
    # Telehealth: minutes after a virtual Appointment's start with nobody joined before
    # it becomes a no-show.
    no_show_grace_minutes: int = 15

    def __post_init__(self) -> None:
        base = self.base_path.strip()
        base = "" if base in ("", "/") else "/" + base.strip("/")
        object.__setattr__(self, "base_path", base)
        if self.sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"invalid sqlite_synchronous {self.sqlite_synchronous!r}")

    @property
    def sqlite_path(self) -> str:
        return self.store.removeprefix("sqlite:///")

    @property
    def mongodb(self) -> bool:
        return self.store.startswith(("mongodb://", "mongodb+srv://"))

    @property
    def store_label(self) -> str:
        """The store as it may be shown in output and logs: without a password."""
        return re.sub(r"^(mongodb(?:\+srv)?://[^:@/]*):[^@/]*@", r"\1:***@", self.store)

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is None:
                continue
            if field.type != "int":
                values[field.name] = raw
            elif re.fullmatch(r"[0-9]{1,18}", raw.strip()):
                values[field.name] = int(raw)
            else:
                raise ValueError(f"{ENV_PREFIX}{field.name.upper()} must be a whole number")
        return cls(**values)
