"""Settings: one frozen object, read from FHIRSERVER_* environment variables and CLI flags."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

ENV_PREFIX = "FHIRSERVER_"
VIDEO_PROVIDERS = ("jitsi", "livekit", "100ms", "zoom-video-sdk", "daily")
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_LOOPBACK_HOSTS = frozenset({"localhost", "::1", "[::1]"})
# "" is unset: off, allowed on loopback only (`fhirserver serve` checks).
AUTH_MODES = ("", "off", "smart", "external")
_FLAGS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


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
    # The most resources _include / _revinclude (with :iterate, as many rounds as it
    # takes) bring into one page; a cut is reported in the Bundle.
    max_included: int = 1000
    # Request bodies of at least this many bytes are parsed, validated and indexed in
    # worker processes, off the event loop (README "Large requests").
    offload_bytes: int = 64 * 1024
    # Seconds of that work one request may take before it is stopped with 413.
    request_cpu_seconds: int = 30
    # Worker processes for it; 0: one per core.
    cpu_workers: int = 0
    # SQLite PRAGMA synchronous: NORMAL survives a killed process, FULL also a power cut.
    sqlite_synchronous: str = "NORMAL"
    # SQLite page cache, in KiB: the writer's (large: index inserts touch many B-tree
    # pages; storage/sqlite/schema.py WRITER_CACHE_KIB), and each reader thread's (one
    # connection per thread).
    sqlite_cache_kib: int = 65536
    sqlite_reader_cache_kib: int = 2048
    log_level: str = "warning"
    # Server processes sharing the listening socket and the store (README "Worker
    # processes"); 1: the server is this one process.
    workers: int = 1
    # Telehealth: minutes after a virtual Appointment's start with nobody joined before
    # it becomes a no-show.
    no_show_grace_minutes: int = 15
    # Telehealth: the join page admits from this many minutes before the start.
    join_early_minutes: int = 15
    # Telehealth: how long a participant token admits (providers with tokens).
    join_token_minutes: int = 10
    # Telehealth: $start-virtual-visit needs the patient's telehealth Consent.
    require_consent: bool = False
    # Telehealth: the video provider, jitsi | livekit | 100ms | zoom-video-sdk | daily.
    # Jitsi with no app secret
    # uses a public instance with no account (README "Telehealth").
    video_provider: str = "jitsi"
    jitsi_domain: str = "meet.jit.si"
    jitsi_app_id: str = ""
    jitsi_app_secret: str = field(default="", repr=False)
    jitsi_webhook_secret: str = field(default="", repr=False)
    livekit_url: str = ""
    livekit_api_key: str = field(default="", repr=False)
    livekit_api_secret: str = field(default="", repr=False)
    hms_access_key: str = field(default="", repr=False)
    hms_app_secret: str = field(default="", repr=False)
    hms_prebuilt_domain: str = ""
    hms_template_id: str = ""
    hms_webhook_secret: str = field(default="", repr=False)
    # Zoom Video SDK: the SDK credentials sign session tokens; the (separate) API
    # credentials end sessions; the join page runs the Video SDK in the browser.
    zoom_sdk_key: str = field(default="", repr=False)
    zoom_sdk_secret: str = field(default="", repr=False)
    zoom_join_page: str = ""
    zoom_api_key: str = field(default="", repr=False)
    zoom_api_secret: str = field(default="", repr=False)
    zoom_webhook_secret: str = field(default="", repr=False)
    # Daily: the subdomain (clinic of clinic.daily.co), its domain id (for meeting tokens)
    # and the webhook's base64 hmac secret.
    daily_api_key: str = field(default="", repr=False)
    daily_domain: str = ""
    daily_domain_id: str = ""
    daily_webhook_hmac: str = field(default="", repr=False)
    daily_room_days: int = 30
    # Wrong meeting codes per minute the public join endpoint allows per client address.
    join_rate_per_minute: int = 20
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (comma list of
    # addresses and CIDR networks): the reverse proxies in front. Empty: none, the
    # connection's peer is the client (rest/proxies.py).
    trusted_proxies: str = ""
    # Connections (README "Behind a reverse proxy"): seconds for a request's headers to
    # arrive whole, seconds between two parts of a body, and connections open at once
    # per client address (trusted proxies are not counted).
    # Seconds a search (with its includes and total) or a history page may take; past
    # it the answer is 503 too-costly. 30 s: SQL Server's default command timeout, as
    # the Microsoft FHIR server keeps it.
    search_timeout_seconds: int = 30
    header_timeout_seconds: int = 10
    # Seconds an idle connection is kept for its next request. 30 s, Jetty's idle
    # timeout under HAPI: well past HTTP clients' pool expiry (httpx 5 s, uvicorn's
    # own default), so a client never sends on a connection the server is closing.
    keep_alive_seconds: int = 30
    body_timeout_seconds: int = 30
    max_connections_per_client: int = 64
    # Run the store's jobs (room provisioning, no-show checks) in this process.
    run_jobs: bool = True
    # Authorization (README "Security"): off | smart | external. Unset ("") means off,
    # which `fhirserver serve` allows on a loopback address only.
    auth: str = ""
    # external: the identity provider's issuer (OpenID discovery at
    # {issuer}/.well-known/openid-configuration), or its JWKS URL directly.
    auth_issuer: str = ""
    auth_jwks_url: str = ""
    # external: the `aud` tokens must carry; the FHIR base URL if unset.
    auth_audience: str = ""
    # external: RFC 7662 introspection for opaque (non-JWT) tokens.
    auth_introspection_url: str = ""
    auth_introspection_client_id: str = ""
    auth_introspection_client_secret: str = field(default="", repr=False)
    # smart: lifetimes of what the built-in authorization server issues.
    auth_access_token_minutes: int = 60
    auth_refresh_token_days: int = 90
    # Bulk export (README "Bulk export"): where the NDJSON files are written, how long
    # a finished export's files are kept, how many exports one client may run at once,
    # and the size at which a type's output is split into another file.
    export_dir: str = "./data/exports"
    export_retention_hours: int = 24
    export_max_per_client: int = 2
    export_max_file_bytes: int = 256 * 1024 * 1024
    # Versions an export reads per chunk: what it holds in memory at once, and how much
    # work a restarted export may redo.
    export_chunk: int = 1000
    # How long a claimed background job (an export chunk, a telehealth close) stays one
    # process's before another may take it over: the wait after a process dies.
    job_lease_seconds: int = 60
    # Subscriptions: how long a `$get-ws-binding-token` token binds a websocket.
    ws_binding_token_seconds: int = 300
    # Subscriptions (README "Subscriptions"): the hosts notifications may go to (comma
    # list; "*" any; checked on create and after DNS resolution on every delivery), how
    # long a failing delivery is retried, and the timeout of one delivery.
    subscription_allowed_hosts: str = "*"
    subscription_retry_hours: int = 24
    subscription_timeout_seconds: int = 10
    # Validation (README "Validation and profiles"): enforce on every write the profiles
    # a resource claims in meta.profile that the server holds (422 when it does not
    # conform). Off: meta.profile is only checked by $validate.
    validate_profiles: bool = False
    # Validation: how many compiled profiles are kept, the most recently used (one per
    # canonical asked for and stored version).
    profile_cache_size: int = 100

    def __post_init__(self) -> None:
        base = self.base_path.strip()
        base = "" if base in ("", "/") else "/" + base.strip("/")
        object.__setattr__(self, "base_path", base)
        if self.join_rate_per_minute < 1:
            raise ValueError("join_rate_per_minute must be at least 1")
        if self.video_provider not in VIDEO_PROVIDERS:
            raise ValueError(
                f"video_provider must be one of {', '.join(VIDEO_PROVIDERS)},"
                f" not {self.video_provider!r}"
            )
        if self.daily_room_days < 1:
            raise ValueError("daily_room_days must be positive")
        if self.auth not in AUTH_MODES:
            raise ValueError(f"FHIRSERVER_AUTH must be off, smart or external, not {self.auth!r}")
        if self.auth == "external" and not (self.auth_issuer or self.auth_jwks_url):
            raise ValueError(
                "FHIRSERVER_AUTH=external needs FHIRSERVER_AUTH_ISSUER or FHIRSERVER_AUTH_JWKS_URL"
            )
        if min(self.export_max_per_client, self.export_max_file_bytes, self.export_chunk) < 1:
            raise ValueError("export_max_per_client, _max_file_bytes and _chunk must be positive")
        if self.ws_binding_token_seconds < 1:
            raise ValueError("ws_binding_token_seconds must be positive")
        if self.job_lease_seconds < 1:
            raise ValueError("job_lease_seconds must be positive")
        # A typo would otherwise trust nothing (or the wrong peer) without a word.
        self.proxy_networks  # noqa: B018
        positive = ("workers", "sqlite_cache_kib", "sqlite_reader_cache_kib", "profile_cache_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"invalid sqlite_synchronous {self.sqlite_synchronous!r}")

    @property
    def proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The trusted proxies as networks (an address is its /32 or /128). Host names
        are refused: a peer is known by its address."""
        networks = []
        for item in filter(None, (i.strip() for i in self.trusted_proxies.split(","))):
            try:
                networks.append(ipaddress.ip_network(item))
            except ValueError:
                raise ValueError(
                    "FHIRSERVER_TRUSTED_PROXIES lists IP addresses and networks"
                    f" (10.0.0.0/8), not {item!r}"
                ) from None
        return networks

    @property
    def sqlite_path(self) -> str:
        return self.store.removeprefix("sqlite:///")

    @property
    def origin(self) -> str:
        """Scheme, host and port the server is reached at, for links outside the FHIR base
        (the telehealth join page): from `public_url` without the base path, if set. A
        wildcard bind address is no address to link to: loopback stands in (set
        `public_url` when others must follow the links)."""
        if not self.public_url:
            host = "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host
            return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        url = self.public_url.rstrip("/")
        return url.removesuffix(self.base_path) if self.base_path else url

    @property
    def auth_mode(self) -> str:
        """off, smart or external: unset is off."""
        return self.auth or "off"

    @property
    def loopback(self) -> bool:
        """Whether the server listens on a loopback address only."""
        return self.host in _LOOPBACK_HOSTS or self.host.startswith("127.")

    def unsafe_to_serve(self) -> str | None:
        """Why serving with these settings would expose data, or None. A server others
        can reach must say how it authorizes: unset FHIRSERVER_AUTH means off, which
        only a loopback address may run with (README "Security")."""
        if self.auth or self.loopback:
            return None
        return (
            f"listening on {self.host or 'every address'} needs FHIRSERVER_AUTH set"
            " explicitly: smart (the built-in authorization server), external (an identity"
            " provider), or off (anyone who reaches the port reads and writes everything)"
        )

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
        for field_ in fields(cls):
            raw = env.get(ENV_PREFIX + field_.name.upper())
            if raw is None:
                continue
            name = ENV_PREFIX + field_.name.upper()
            if field_.type == "int":
                if not re.fullmatch(r"[0-9]{1,18}", raw.strip()):
                    raise ValueError(f"{name} must be a whole number")
                values[field_.name] = int(raw)
            elif field_.type == "bool":
                flag = raw.strip().lower()
                if flag not in _FLAGS:
                    raise ValueError(f"{name} must be true or false")
                values[field_.name] = _FLAGS[flag]
            else:
                values[field_.name] = raw
        return cls(**values)
