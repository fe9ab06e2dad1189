"""A whole virtual visit over real HTTP: issue 6's acceptance test.

A real uvicorn server on a loopback port (its job runner on), driven only through HTTP,
once per video provider: Jitsi with no account (the server's default: no network, no
tokens, no webhooks), LiveKit, 100ms, Zoom Video SDK and Daily on fake provider APIs
(mock transports, tests/telehealth/providers). The walkthrough: a Patient and a
Practitioner, a booked virtual Appointment (R4 appointment.html) provisioned by the job
runner with a join address and meeting code, the patient in the waiting room by code
(booked -> arrived), `$start-virtual-visit` (R4 operations.html#executing: POST
[type]/[id]/$op with a Parameters body; the Appointment fulfilled, an in-progress VR
Encounter, R4 encounter.html), the patient admitted to the call, provider webhooks
recording who was in the call as participant periods (replays and forgeries record
nothing), `$end-virtual-visit` (the Encounter finished, every period closed), the room
closed at the provider, the meeting code dead, the visit's story as AuditEvents
searchable by entity (R4 auditevent.html), and, where the provider reports recordings
(Zoom, Daily), the recording the patient consented to linked to the Encounter as a
DocumentReference (R4 documentreference.html).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from starlette.applications import Starlette

from fhirserver.app import create_app
from fhirserver.config import Settings
from fhirserver.telehealth.providers import (
    DailyProvider,
    HmsProvider,
    JitsiConfig,
    JitsiProvider,
    LiveKitConfig,
    LiveKitProvider,
    VideoProvider,
    ZoomProvider,
)
from fhirserver.telehealth.providers.zoom import identity_from_user_key, user_identity
from tests.loopback import free_port, on_loopback
from tests.telehealth.helpers import consent
from tests.telehealth.providers import test_daily, test_zoom
from tests.telehealth.providers.helpers import claims, client, clock
from tests.telehealth.providers.test_hms import HOOK_SECRET, PREBUILT, FakeHms
from tests.telehealth.providers.test_hms import SECRET as HMS_SECRET
from tests.telehealth.providers.test_hms import make as make_hms
from tests.telehealth.providers.test_livekit import API_KEY, URL, FakeLiveKit, signed
from tests.telehealth.providers.test_livekit import SECRET as LIVEKIT_SECRET

pytestmark = pytest.mark.e2e

T = TypeVar("T")
FHIR_JSON = "application/fhir+json"
HEADERS = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
WAIT = 10.0  # seconds for the job runner (it polls about once a second)
VIRTUAL_SERVICE = "http://fhirserver.dev/fhir/StructureDefinition/virtual-service"
CHANNEL_TYPES = "http://fhirserver.dev/fhir/CodeSystem/virtual-service-type"
# R5 Encounter.participant.actor in R4: how a Patient who joins the call is recorded.
PARTICIPANT_ACTOR = (
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.participant.actor"
)
CODE_ALPHABET = set("23456789ABCDEFGHJKMNPQRSTWXYZ")
UNKNOWN_CODE = "ABCDEFGHJK"  # well-formed, never issued
PATIENT_NAME, DOCTOR_NAME = "Pat Doe", "Dr Who"

Kind = Literal["joined", "left"]


# -- the providers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One webhook request as a provider would send it."""

    path: str
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Holder:
    """Whom a join link (and its token) admits, as the provider sees it; None where the
    provider cannot tell (Jitsi without an account has no identities and no roles)."""

    room: str
    display: str
    identity: str | None
    role: str | None


class Harness(ABC):
    """One provider as the walkthrough sees it: the provider the server runs, what it
    would answer from outside (links, tokens, webhooks) and the state of its rooms."""

    name: ClassVar[str]
    #: Whether join links carry a token that names who joins, with a role and an expiry.
    tokens: ClassVar[bool] = True
    #: What authenticates its webhooks (a signing key or a header value); None: it has none.
    webhook_secret: ClassVar[str | None]
    provider: VideoProvider

    @abstractmethod
    def room_is_open(self, room_id: str) -> bool | None:
        """Whether the provider holds the room open; None where it keeps no rooms."""

    @abstractmethod
    def holder(self, url: str, token: str | None) -> Holder:
        """Whom `url` (with `token`) admits; fails if the link is not one of ours."""

    @abstractmethod
    def delivery(
        self, kind: Kind, room_id: str, identity: str, event_id: str, secret: str
    ) -> Delivery:
        """A webhook saying `identity` joined or left the room, authenticated with `secret`."""

    def recording(self, room_id: str) -> Delivery | None:
        """A "recording ready" webhook about the room; None where the provider's recordings
        do not reach the server."""
        return None

    def genuine(self, kind: Kind, room_id: str, identity: str, event_id: str) -> Delivery | None:
        """A webhook the provider would send; None where it sends none."""
        if self.webhook_secret is None:
            return None
        return self.delivery(kind, room_id, identity, event_id, self.webhook_secret)

    def forged(self, kind: Kind, room_id: str, identity: str, event_id: str) -> Delivery:
        """The same, from someone who does not know the secret."""
        return self.delivery(kind, room_id, identity, event_id, "guessed-secret-0123456789abcdef")


class Jitsi(Harness):
    name = "jitsi"
    tokens = False
    webhook_secret = None

    def __init__(self) -> None:
        self.provider = JitsiProvider(JitsiConfig())

    def room_is_open(self, room_id: str) -> bool | None:
        return None  # meet.jit.si makes rooms on first join; nothing to ask

    def holder(self, url: str, token: str | None) -> Holder:
        assert token is None, "Jitsi without an account has no tokens"
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc, parts.query) == ("https", "meet.jit.si", ""), url
        assert parts.fragment.startswith("userInfo.displayName="), url
        display = json.loads(unquote(parts.fragment.removeprefix("userInfo.displayName=")))
        return Holder(parts.path.lstrip("/"), display, None, None)

    def delivery(
        self, kind: Kind, room_id: str, identity: str, event_id: str, secret: str
    ) -> Delivery:
        # What the jitsi-contrib event_sync component sends (no event ids).
        body = {
            "event_name": f"muc-occupant-{kind}",
            "room_name": room_id,
            "occupant": {"id": identity, "name": DOCTOR_NAME, "joined_at": int(time.time())},
        }
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        return Delivery("/telehealth/webhooks/jitsi", json.dumps(body).encode(), headers)


class LiveKit(Harness):
    name = "livekit"
    webhook_secret = LIVEKIT_SECRET

    def __init__(self) -> None:
        self.fake = FakeLiveKit()
        config = LiveKitConfig(url=URL, api_key=API_KEY, api_secret=LIVEKIT_SECRET)
        self.provider = LiveKitProvider(config, http=client(self.fake), clock=clock)

    def room_is_open(self, room_id: str) -> bool | None:
        return room_id in self.fake.rooms

    def holder(self, url: str, token: str | None) -> Holder:
        assert token is not None, "a LiveKit link needs its token"
        query = parse_qs(urlsplit(url).query)
        assert url.startswith("https://meet.livekit.io/custom?"), url
        assert query == {"liveKitUrl": ["wss://livekit.example.org"], "token": [token]}, url
        grant = claims(token, LIVEKIT_SECRET)
        video = grant["video"]
        role = "host" if video["roomAdmin"] else "guest"
        return Holder(video["room"], grant["name"], grant["sub"], role)

    def delivery(
        self, kind: Kind, room_id: str, identity: str, event_id: str, secret: str
    ) -> Delivery:
        event = {
            "event": f"participant_{kind}",
            "id": event_id,
            "createdAt": str(int(time.time())),
            "room": {"name": room_id, "sid": "RM_1"},
            "participant": {"sid": "PA_host", "identity": identity, "name": DOCTOR_NAME},
        }
        body = json.dumps(event).encode()
        return Delivery("/telehealth/webhooks/livekit", body, signed(body, secret=secret))


class Hms(Harness):
    name = "100ms"
    webhook_secret = HOOK_SECRET

    def __init__(self) -> None:
        self.fake = FakeHms()
        self.provider: HmsProvider = make_hms(self.fake)

    def room_is_open(self, room_id: str) -> bool | None:
        room = self.fake.rooms.get(room_id)
        return room is not None and room["enabled"] is True

    def holder(self, url: str, token: str | None) -> Holder:
        assert token is not None, "a 100ms link comes with an app token"
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("https", PREBUILT), url
        code = parts.path.removeprefix("/meeting/")
        # The Prebuilt link admits with the role of its room code.
        by_code = {
            c: (room_id, role)
            for room_id, room in self.fake.rooms.items()
            for role, c in room["codes"].items()
        }
        assert code in by_code, f"{url} holds no room code of ours"
        room_id, role = by_code[code]
        query = parse_qs(parts.query)
        grant = claims(token, HMS_SECRET)
        assert grant["type"] == "app" and grant["room_id"] == room_id, grant
        assert grant["role"] == role, f"token role {grant['role']}, link role {role}"
        assert query["userId"] == [grant["user_id"]], url
        return Holder(room_id, query["name"][0], grant["user_id"], role)

    def delivery(
        self, kind: Kind, room_id: str, identity: str, event_id: str, secret: str
    ) -> Delivery:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        data = {
            "room_id": room_id,
            "session_id": "session-1",
            "peer_id": "peer-host",
            "user_id": identity,
            "user_name": DOCTOR_NAME,
            "role": "host",
            ("joined_at" if kind == "joined" else "left_at"): now,
        }
        event = {
            "version": "2.0",
            "id": event_id,
            "type": "peer.join.success" if kind == "joined" else "peer.leave.success",
            "timestamp": now,
            "data": data,
        }
        headers = {
            "X-Webhook-Secret": secret,
            "Content-Type": "application/json",
        }
        return Delivery("/telehealth/webhooks/100ms", json.dumps(event).encode(), headers)


class Zoom(Harness):
    name = "zoom-video-sdk"
    webhook_secret = test_zoom.HOOK_SECRET

    def __init__(self) -> None:
        self.fake = test_zoom.FakeZoom()
        self.provider: ZoomProvider = test_zoom.make(self.fake)

    def room_is_open(self, room_id: str) -> bool | None:
        # Zoom has a session only once someone joins (the host link below "joins").
        sessions = [s for s in self.fake.sessions.values() if s["session_name"] == room_id]
        return any(s["live"] for s in sessions) if sessions else None

    def holder(self, url: str, token: str | None) -> Holder:
        assert token is not None, "a Zoom link needs its session token"
        parts = urlsplit(url)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == test_zoom.JOIN_PAGE, url
        assert parts.query == "", "the token travels in the fragment only"
        fragment = parse_qs(parts.fragment)
        assert fragment["token"] == [token], url
        grant = claims(token, test_zoom.SDK_SECRET)
        assert grant["app_key"] == test_zoom.SDK_KEY and fragment["session"] == [grant["tpc"]]
        assert grant["exp"] - grant["iat"] >= 1800, "Zoom refuses shorter tokens"
        if not self.room_is_open(grant["tpc"]):  # joining creates the session at Zoom
            self.fake.start(grant["tpc"], f"session-{grant['tpc']}")
        role = "host" if grant["role_type"] == 1 else "guest"
        identity = identity_from_user_key(grant.get("user_identity"))
        return Holder(grant["tpc"], fragment["name"][0], identity, role)

    def delivery(
        self, kind: Kind, room_id: str, identity: str, event_id: str, secret: str
    ) -> Delivery:
        now = datetime.now(UTC).replace(microsecond=0)
        user = {
            "id": "16778240",
            "name": DOCTOR_NAME,
            "user_key": user_identity(identity),
            "participant_uuid": f"uuid-{identity}",
            ("join_time" if kind == "joined" else "leave_time"): now.isoformat(),
        }
        event = {
            "event": f"session.user_{kind}",
            "event_ts": int(time.time() * 1000),
            "payload": {
                "account_id": "D8cJuqWVQ623CI4Q8yQK0Q",
                "object": {"id": "s1", "session_id": "s1", "session_name": room_id, "user": user},
            },
        }
        body = json.dumps(event).encode()
        headers = test_zoom.signed(body, secret=secret)  # stamped on the provider's clock
        return Delivery("/telehealth/webhooks/zoom-video-sdk", body, headers)

    def recording(self, room_id: str) -> Delivery | None:
        began = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
        video = test_zoom.FILES[0] | {
            "recording_start": began.isoformat(),
            "recording_end": (began + timedelta(minutes=15)).isoformat(),
        }
        event = {
            "event": "session.recording_completed",
            "event_ts": int(time.time() * 1000),
            "payload": {
                "account_id": "D8cJuqWVQ623CI4Q8yQK0Q",
                "object": {"session_id": "s1", "session_name": room_id, "recording_files": [video]},
            },
            "download_token": test_zoom.DOWNLOAD_TOKEN,
        }
        body = json.dumps(event).encode()
        headers = test_zoom.signed(body)
        return Delivery("/telehealth/webhooks/zoom-video-sdk", body, headers)


class Daily(Harness):
    name = "daily"
    webhook_secret = test_daily.HOOK_HMAC

    def __init__(self) -> None:
        self.fake = test_daily.FakeDaily()
        self.provider: DailyProvider = test_daily.make(self.fake)

    def room_is_open(self, room_id: str) -> bool | None:
        return room_id in self.fake.rooms

    def holder(self, url: str, token: str | None) -> Holder:
        assert token is not None, "a Daily link needs its meeting token"
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("https", f"{test_daily.DOMAIN}.daily.co"), url
        assert parse_qs(parts.query) == {"t": [token]}, url
        grant = claims(token, test_daily.API_KEY)
        room = parts.path.lstrip("/")
        assert grant["r"] == room and grant["d"] == test_daily.DOMAIN_ID, grant
        assert room in self.fake.rooms and self.fake.rooms[room]["privacy"] == "private"
        return Holder(room, grant["u"], grant["ud"], "host" if grant["o"] else "guest")

    def delivery(
        self, kind: Kind, room_id: str, identity: str, event_id: str, secret: str
    ) -> Delivery:
        payload = {
            "room": room_id,
            "user_id": identity,
            "user_name": DOCTOR_NAME,
            "session_id": "0c0d2dda-f21d-4cf9-ab56-86bf3c407ffa",
            "joined_at": int(time.time()),
        }
        event = {
            "version": "1.0.0",
            "type": f"participant.{kind}",
            "id": event_id,
            "payload": payload,
            "event_ts": time.time(),
        }
        body = json.dumps(event).encode()
        key = secret if secret == self.webhook_secret else base64.b64encode(secret.encode())
        headers = test_daily.signed(body, secret=key if isinstance(key, str) else key.decode())
        return Delivery("/telehealth/webhooks/daily", body, headers)

    def recording(self, room_id: str) -> Delivery | None:
        began = int(time.time()) - 20 * 60
        payload = test_daily.RECORDING | {"room_name": room_id, "start_ts": began}
        body = test_daily.hook("recording.ready-to-download", "rec-ready-1", **payload)
        return Delivery("/telehealth/webhooks/daily", body, test_daily.signed(body))


# -- the server -----------------------------------------------------------------------------


@asynccontextmanager
async def serving(app: Starlette, port: int) -> AsyncIterator[int]:
    """uvicorn in this event loop on 127.0.0.1:`port`, lifespan (job runner) included;
    yields the port it listens on."""
    async with on_loopback(app, port, lifespan="on") as bound:
        yield bound


async def eventually(check: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll `check` until it returns something (at most WAIT seconds)."""
    deadline = time.monotonic() + WAIT
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"not within {WAIT} s: {what}")
        await asyncio.sleep(0.1)


# -- FHIR over HTTP -------------------------------------------------------------------------


async def create(http: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def read(http: httpx.AsyncClient, reference: str) -> dict[str, Any]:
    response = await http.get(f"/fhir/{reference}")
    assert response.status_code == 200, response.text
    resource: dict[str, Any] = response.json()
    return resource


async def search(http: httpx.AsyncClient, query: str) -> list[dict[str, Any]]:
    response = await http.get(f"/fhir/{query}")
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    return [entry["resource"] for entry in bundle.get("entry", [])]


async def audit_events(http: httpx.AsyncClient, about: str) -> list[dict[str, Any]]:
    return await search(http, f"AuditEvent?entity={about}&_count=100")


async def subtypes(http: httpx.AsyncClient, about: str) -> Counter[str]:
    return Counter(event["subtype"][0]["code"] for event in await audit_events(http, about))


def virtual_service(appointment: dict[str, Any]) -> dict[str, Any]:
    """The virtual-service sub-extensions as {name: value}."""
    [extension] = [e for e in appointment.get("extension", []) if e["url"] == VIRTUAL_SERVICE]
    found: dict[str, Any] = {}
    for part in extension["extension"]:
        [value] = [v for k, v in part.items() if k.startswith("value")]
        found[part["url"]] = value
    return found


def outputs(parameters: dict[str, Any]) -> dict[str, Any]:
    assert parameters["resourceType"] == "Parameters", parameters
    found: dict[str, Any] = {}
    for parameter in parameters["parameter"]:
        [value] = [v for k, v in parameter.items() if k.startswith("value") or k == "resource"]
        found[parameter["name"]] = value
    return found


def periods(encounter: dict[str, Any], who: str) -> list[dict[str, Any] | None]:
    """The periods of `who`'s participant entries (None for an entry with none: planned,
    not joined), from `individual` or the R5 participant.actor extension."""
    found: list[dict[str, Any] | None] = []
    for entry in encounter.get("participant", []):
        actors = [entry.get("individual")] + [
            e["valueReference"] for e in entry.get("extension", []) if e["url"] == PARTICIPANT_ACTOR
        ]
        if any(actor and actor.get("reference") == who for actor in actors):
            found.append(entry.get("period"))
    return found


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def version(resource: dict[str, Any]) -> str:
    return str(resource["meta"]["versionId"])


async def post_join(http: httpx.AsyncClient, code: str) -> httpx.Response:
    # As the join page sends it (plain JSON, not FHIR).
    body = json.dumps({"name": PATIENT_NAME})
    return await http.post(
        f"/join/{code}", content=body, headers={"Content-Type": "application/json"}
    )


async def deliver(http: httpx.AsyncClient, delivery: Delivery) -> httpx.Response:
    return await http.post(delivery.path, content=delivery.body, headers=delivery.headers)


async def assert_rejected(http: httpx.AsyncClient, delivery: Delivery, encounter_id: str) -> None:
    """A webhook that cannot be verified: 401 OperationOutcome, and nothing recorded."""
    before = await read(http, f"Encounter/{encounter_id}")
    audits = {e["id"] for e in await audit_events(http, f"Encounter/{encounter_id}")}
    response = await deliver(http, delivery)
    assert response.status_code == 401, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    assert outcome["issue"][0]["code"] == "security", outcome
    after = await read(http, f"Encounter/{encounter_id}")
    assert version(after) == version(before) and after == before
    assert {e["id"] for e in await audit_events(http, f"Encounter/{encounter_id}")} == audits


# -- the walkthrough ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_harness",
    [Jitsi, LiveKit, Hms, Zoom, Daily],
    ids=["jitsi", "livekit", "100ms", "zoom-video-sdk", "daily"],
)
async def test_a_virtual_visit_end_to_end(
    make_harness: Callable[[], Harness], tmp_path: Path
) -> None:
    case = make_harness()
    port = free_port()
    settings = Settings(
        store=str(tmp_path / "fhir.sqlite"), video_provider=case.name, run_jobs=True, port=port
    )
    app = create_app(settings, provider=case.provider)
    base = f"http://127.0.0.1:{port}"
    async with (
        serving(app, port) as bound,
        httpx.AsyncClient(base_url=base, headers=HEADERS, timeout=WAIT, trust_env=False) as http,
    ):
        assert bound == port
        await walkthrough(http, case, base)


async def walkthrough(http: httpx.AsyncClient, case: Harness, base: str) -> None:
    # 1. The people.
    patient = await create(
        http, {"resourceType": "Patient", "name": [{"family": "Doe", "given": ["Pat"]}]}
    )
    doctor = await create(
        http, {"resourceType": "Practitioner", "name": [{"family": "Who", "prefix": ["Dr"]}]}
    )
    patient_ref, doctor_ref = f"Patient/{patient['id']}", f"Practitioner/{doctor['id']}"
    # The patient agreed, an hour ago, to the visit being recorded (README "Recordings and
    # call quality"): a Consent covers a recording only from when it was given.
    given = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    await create(http, consent(patient_ref, category="telehealth-recording", dateTime=given))

    # 2. The booking: a virtual Appointment in five minutes.
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
    booked = await create(
        http,
        {
            "resourceType": "Appointment",
            "status": "booked",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=30)).isoformat(),
            "participant": [
                {"actor": {"reference": patient_ref}, "status": "accepted"},
                {"actor": {"reference": doctor_ref}, "status": "accepted"},
            ],
            "extension": [
                {
                    "url": VIRTUAL_SERVICE,
                    "extension": [
                        {
                            "url": "channelType",
                            "valueCoding": {"system": CHANNEL_TYPES, "code": case.name},
                        }
                    ],
                }
            ],
        },
    )
    appointment_ref = f"Appointment/{booked['id']}"

    # 3. The job runner provisions the room: join address, session key, meeting code.
    async def provisioned() -> dict[str, Any] | None:
        current = await read(http, appointment_ref)
        return current if "meetingCode" in virtual_service(current) else None

    appointment = await eventually(provisioned, f"{appointment_ref} gets a meeting code")
    service = virtual_service(appointment)
    code, room = service["meetingCode"], service["sessionKey"]
    assert len(code) == 10 and set(code) <= CODE_ALPHABET, code
    assert service["address"] == f"{base}/join/{code}"
    assert isinstance(room, str) and room
    assert service["channelType"] == {"system": CHANNEL_TYPES, "code": case.name}
    assert appointment["status"] == "booked"
    assert case.room_is_open(room) is not False, "the room was not created at the provider"
    found = await search(http, f"Appointment?meeting-code={code}")
    assert [a["id"] for a in found] == [booked["id"]]

    # 4. The patient opens the link early: the page, then the waiting room.
    page = await http.get(service["address"])
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Join your video visit" in page.text
    waiting = await post_join(http, code)
    assert waiting.status_code == 200, waiting.text
    assert waiting.json() == {
        "status": "waiting",
        "start": appointment["start"],
        "with": ["Dr Who"],
    }
    assert (await read(http, appointment_ref))["status"] == "arrived"

    # 5. The practitioner starts the visit.
    started = await http.post(
        f"/fhir/{appointment_ref}/$start-virtual-visit",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {"name": "practitioner", "valueReference": {"reference": doctor_ref}},
                {"name": "display", "valueString": DOCTOR_NAME},
            ],
        },
    )
    assert started.status_code == 200, started.text
    out = outputs(started.json())
    expected = {"encounter", "hostUrl", "patientUrl", "meetingCode"}
    expected |= {"hostToken", "expires"} if case.tokens else set()
    assert set(out) == expected
    encounter = out["encounter"]
    encounter_ref = f"Encounter/{encounter['id']}"
    assert encounter["status"] == "in-progress"
    assert encounter["class"]["code"] == "VR"
    assert encounter["class"]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    assert encounter["appointment"] == [{"reference": appointment_ref}]
    assert encounter["subject"] == {"reference": patient_ref}
    assert "start" in encounter["period"] and "end" not in encounter["period"]
    assert out["patientUrl"] == service["address"] and out["meetingCode"] == code
    host = case.holder(out["hostUrl"], out.get("hostToken"))
    assert host == Holder(
        room, DOCTOR_NAME, doctor_ref if case.tokens else None, "host" if case.tokens else None
    )
    if case.tokens:
        assert datetime.fromisoformat(out["expires"]) > clock()
    assert (await read(http, appointment_ref))["status"] == "fulfilled"
    assert (await read(http, encounter_ref))["status"] == "in-progress"

    # 6. The patient, still on the page, is let into the call.
    ready = await post_join(http, code)
    assert ready.status_code == 200, ready.text
    admitted = ready.json()
    assert admitted["status"] == "ready"
    assert set(admitted) == (
        {"status", "url", "token", "expires"} if case.tokens else {"status", "url"}
    )
    guest = case.holder(admitted["url"], admitted.get("token"))
    assert guest == Holder(
        room, PATIENT_NAME, patient_ref if case.tokens else None, "guest" if case.tokens else None
    )
    in_call = await read(http, encounter_ref)
    [patient_stay] = periods(in_call, patient_ref)
    assert patient_stay is not None and "start" in patient_stay and "end" not in patient_stay

    # 7. Webhooks: the practitioner joins and leaves; a replay and a forgery change nothing.
    joined = case.genuine("joined", room, doctor_ref, "evt-1")
    left = case.genuine("left", room, doctor_ref, "evt-2")
    doctor_stays: list[dict[str, Any] | None] = [None]  # planned, never seen in the call
    if joined is not None and left is not None:
        response = await deliver(http, joined)
        assert (response.status_code, response.json()) == (200, {"recorded": 1}), response.text
        [doctor_stay] = periods(await read(http, encounter_ref), doctor_ref)
        assert doctor_stay is not None and "end" not in doctor_stay
        response = await deliver(http, left)
        assert (response.status_code, response.json()) == (200, {"recorded": 1}), response.text
        before_replay = await read(http, encounter_ref)
        doctor_stays = periods(before_replay, doctor_ref)
        [doctor_stay] = doctor_stays
        assert doctor_stay is not None and "end" in doctor_stay
        assert instant(doctor_stay["start"]) <= instant(doctor_stay["end"])
        # Delivered again (at least once delivery, or a captured request): not a new stay.
        response = await deliver(http, joined)
        assert (response.status_code, response.json()) == (200, {"recorded": 0}), response.text
        assert await read(http, encounter_ref) == before_replay
    assert periods(await read(http, encounter_ref), doctor_ref) == doctor_stays
    forged = case.forged("joined", room, doctor_ref, "evt-3")
    await assert_rejected(http, forged, encounter["id"])

    # 8. The practitioner ends the visit; the runner closes the room.
    ended = await http.post(f"/fhir/{encounter_ref}/$end-virtual-visit")
    assert ended.status_code == 200, ended.text
    finished = ended.json()
    assert finished["resourceType"] == "Encounter" and finished["status"] == "finished"
    end = finished["period"]["end"]
    stays = [entry.get("period") for entry in finished["participant"]]
    assert any(stays), "nobody was recorded in the call"
    assert all("end" in stay for stay in stays if stay is not None), stays
    assert periods(finished, patient_ref) == [{"start": patient_stay["start"], "end": end}]
    assert periods(finished, doctor_ref) == doctor_stays  # left before the end

    async def room_closed() -> bool:
        closed = "room-closed" in await subtypes(http, encounter_ref)
        return closed and case.room_is_open(room) is not True

    await eventually(room_closed, f"the {case.name} room is closed")

    # 9. The meeting code admits nobody now, and says no more than for a code never issued.
    after = await post_join(http, code)
    unknown = await post_join(http, UNKNOWN_CODE)
    assert after.status_code == unknown.status_code == 404, after.text
    assert after.json()["resourceType"] == "OperationOutcome"
    assert after.json() == unknown.json()

    # 10. The record.
    assert (await read(http, appointment_ref))["status"] == "fulfilled"
    assert await read(http, encounter_ref) == finished
    webhooks = 0 if joined is None else 1
    during = Counter(
        {
            "visit-started": 1,
            "participant-joined": 1 + webhooks,
            "participant-left": webhooks,
            "visit-ended": 1,
            "room-closed": 1,
        }
    )
    before = Counter({"room-provisioned": 1, "patient-waiting": 1})
    assert await subtypes(http, encounter_ref) == +during
    assert await subtypes(http, appointment_ref) == +(before + during)

    # 11. The recording, where the provider reports one: linked to the visit, once.
    recording = case.recording(room)
    if recording is not None:
        response = await deliver(http, recording)
        assert (response.status_code, response.json()) == (200, {"recorded": 1}), response.text
        [document] = await search(http, f"DocumentReference?encounter={encounter_ref}")
        assert document["subject"] == {"reference": patient_ref}
        assert document["content"][0]["attachment"]["url"].startswith("https://")
        assert (await deliver(http, recording)).json() == {"recorded": 0}
        linked = await subtypes(http, f"DocumentReference/{document['id']}")
        assert linked == Counter({"recording-linked": 1})
