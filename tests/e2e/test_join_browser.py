"""The join page in a real browser (issue 19): headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium; .ci/run installs them) against a real
`fhirserver serve` on a loopback port, with Chromium's fake camera and microphone.

A patient opens /join on a phone-sized screen, types the meeting code and a name, and
sees the waiting room: the visit's time and who it is with (display names only), the
camera preview and a moving microphone level. When the practitioner starts the visit
(`$start-virtual-visit` over HTTP) the page moves on by itself to the provider's page
(here the clinic's Zoom Video SDK page, a stub on loopback) with the guest token. An
unknown or malformed code shows one message; past the rate limit the page says so and
when it tries again. A patient whose preferred language is Spanish reads the waiting
room in Spanish. axe-core (the copy inside the axe-selenium-python package) finds no
serious or critical accessibility violation on the form or the waiting room. Screenshots
of each state go to $FHIRSERVER_SCREENSHOTS, else to the test's temporary folder.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from axe_selenium_python import Axe
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.e2e.test_serve import Launch, Server, launch  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
VIRTUAL_SERVICE = "http://fhirserver.dev/fhir/StructureDefinition/virtual-service"
CHANNEL_TYPES = "http://fhirserver.dev/fhir/CodeSystem/virtual-service-type"
PHONE = (390, 844)
WAIT = 20.0
T = TypeVar("T")


class RoomPage(BaseHTTPRequestHandler):
    """The clinic's video page (the Zoom Video SDK app it hosts), as a stub."""

    def do_GET(self) -> None:
        page = b"<!doctype html><html lang='en'><title>Video room</title><h1>Video room</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def room_page() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), RoomPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/video"
    server.shutdown()


@pytest.fixture
def server(launch: Launch, tmp_path: Path, room_page: str) -> Server:  # noqa: F811 - fixture
    return launch(
        store=tmp_path / "fhir.sqlite",
        env={
            "FHIRSERVER_VIDEO_PROVIDER": "zoom-video-sdk",
            "FHIRSERVER_ZOOM_SDK_KEY": "browser-test-key",
            "FHIRSERVER_ZOOM_SDK_SECRET": "browser-test-secret-of-enough-length",
            "FHIRSERVER_ZOOM_JOIN_PAGE": room_page,
            "FHIRSERVER_JOIN_RATE_PER_MINUTE": "4",
        },
    )


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("FHIRSERVER_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            "the join page tests need headless Chromium: apt-get install -y chromium"
            " chromium-driver (.ci/run installs them when missing)"
        )
    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={PHONE[0]},{PHONE[1]}",
        "--lang=en-US",
        # A test pattern for a camera and a beep for a microphone, allowed at once.
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def root(server: Server) -> str:
    return server.base.removesuffix("/fhir")


def visit(server: Server, language: str | None = None) -> str:
    """A booked Zoom visit in five minutes with Dr Ann One; its meeting code."""
    with httpx.Client(base_url=server.base, timeout=WAIT) as http:
        doctor = http.post(
            "/Practitioner",
            json={
                "resourceType": "Practitioner",
                "name": [{"given": ["Ann"], "family": "One", "prefix": ["Dr"]}],
            },
        ).json()
        patient: dict[str, Any] = {"resourceType": "Patient", "name": [{"family": "Doe"}]}
        if language is not None:
            code = {"coding": [{"system": "urn:ietf:bcp:47", "code": language}]}
            patient["communication"] = [{"language": code, "preferred": True}]
        patient = http.post("/Patient", json=patient).json()
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
        channel = {
            "url": "channelType",
            "valueCoding": {"system": CHANNEL_TYPES, "code": "zoom-video-sdk"},
        }
        booked = http.post(
            "/Appointment",
            json={
                "resourceType": "Appointment",
                "status": "booked",
                "start": start.isoformat(),
                "end": (start + timedelta(minutes=30)).isoformat(),
                "participant": [
                    {"actor": {"reference": f"Patient/{patient['id']}"}, "status": "accepted"},
                    {"actor": {"reference": f"Practitioner/{doctor['id']}"}, "status": "accepted"},
                ],
                "extension": [{"url": VIRTUAL_SERVICE, "extension": [channel]}],
            },
        ).json()

        def code() -> str | None:
            current = http.get(f"/Appointment/{booked['id']}").json()
            for extension in current.get("extension", []):
                for part in extension.get("extension", []):
                    if part["url"] == "meetingCode":
                        return str(part["valueString"])
            return None

        return eventually(code, "the job runner provisions the visit")


def start_visit(server: Server, code: str) -> None:
    with httpx.Client(base_url=server.base, timeout=WAIT) as http:
        [appointment] = [
            e["resource"]
            for e in http.get("/Appointment", params={"meeting-code": code}).json()["entry"]
        ]
        doctor = next(
            p["actor"]["reference"]
            for p in appointment["participant"]
            if p["actor"]["reference"].startswith("Practitioner/")
        )
        started = http.post(
            f"/Appointment/{appointment['id']}/$start-virtual-visit",
            json={
                "resourceType": "Parameters",
                "parameter": [{"name": "practitioner", "valueReference": {"reference": doctor}}],
            },
        )
        assert started.status_code == 200, started.text


def eventually(check: Callable[[], T | None], what: str, wait: float = WAIT) -> T:
    deadline = time.monotonic() + wait
    while True:
        found = check()
        if found is not None and found is not False:
            return found
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.1)


def until(driver: WebDriver, check: Callable[[WebDriver], Any], what: str) -> Any:
    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(check)
    except TimeoutException:
        raise AssertionError(
            f"timed out waiting: {what}; page says {text(driver, 'status')!r}"
        ) from None


def text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def enter(driver: WebDriver, code: str, name: str = "Pat Doe") -> None:
    for element_id, value in (("code", code), ("name", name)):
        field = driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(value)
    driver.find_element(By.CSS_SELECTOR, "#join button[type=submit]").click()


def serious_violations(driver: WebDriver) -> list[str]:
    axe = Axe(driver)
    axe.inject()
    results = axe.run()
    return [
        f"{v['id']}: {v['help']}"
        for v in results["violations"]
        if v.get("impact") in ("serious", "critical")
    ]


def test_a_patient_waits_then_is_taken_to_the_visit(
    server: Server, browser: WebDriver, room_page: str, shots: Path
) -> None:
    code = visit(server)
    browser.get(root(server) + "/join")
    assert browser.title == "Join your video visit"
    # Every field has its label; the form is usable by keyboard and screen reader.
    assert serious_violations(browser) == []
    browser.save_screenshot(str(shots / "1-form.png"))

    enter(browser, code)
    until(browser, lambda d: d.find_element(By.ID, "waiting").is_displayed(), "the waiting room")
    visit_line = text(browser, "visit")
    assert visit_line.startswith("Your visit with Dr Ann One, "), visit_line
    assert "Waiting for the visit to start" in text(browser, "status")
    # The fake camera plays in the preview, and the fake microphone moves the level.
    until(
        browser,
        lambda d: d.execute_script(
            "const v = document.getElementById('preview');"
            " return v.srcObject && v.srcObject.active && v.videoWidth > 0;"
        ),
        "the camera preview",
    )
    until(
        browser,
        lambda d: d.execute_script("return document.getElementById('level').value > 0.01"),
        "the microphone level",
    )
    assert "Your camera and microphone work" in text(browser, "device-help")
    # Focus moved to the waiting room's heading, for keyboard and screen reader users.
    assert browser.switch_to.active_element.get_attribute("id") == "waiting-title"
    assert serious_violations(browser) == []
    browser.save_screenshot(str(shots / "2-waiting.png"))

    start_visit(server, code)
    # The page polls, and moves on by itself: no reload, no click.
    until(browser, lambda d: d.current_url.startswith(room_page), "the visit's page")
    fragment = parse_qs(urlsplit(browser.current_url).fragment)
    assert fragment["token"][0].count(".") == 2, browser.current_url  # the guest's JWT
    assert browser.title == "Video room"
    browser.save_screenshot(str(shots / "3-visit.png"))


def test_wrong_codes_get_one_message_and_then_a_wait(
    server: Server, browser: WebDriver, shots: Path
) -> None:
    visit(server)
    browser.get(root(server) + "/join")
    messages = []
    for code in ("AAAA-BBBB-CC", "not a code", "ZZZZZZZZZZ", "K7PX-3MWQ-9C"):
        enter(browser, code)
        messages.append(
            until(
                browser,
                lambda d: (s := text(d, "status")) and not s.startswith("Checking") and s,
                "an answer",
            )
        )
        browser.execute_script("document.getElementById('status').textContent = ''")
    # Unknown, malformed or expired: the same words, which tell a guesser nothing.
    assert set(messages) == {
        "This code does not open a visit now. Check the code and the time of your visit."
    }
    browser.save_screenshot(str(shots / "4-wrong-code.png"))
    enter(browser, "AAAA-CCCC-DD")
    limited = until(browser, lambda d: "Too many attempts" in (s := text(d, "status")) and s, "429")
    assert limited.startswith("Too many attempts. Trying again in ")
    assert limited.endswith(" seconds.")
    browser.save_screenshot(str(shots / "5-rate-limit.png"))


def test_the_waiting_room_speaks_the_patients_language(
    server: Server, browser: WebDriver, shots: Path
) -> None:
    code = visit(server, language="es")
    browser.get(root(server) + f"/join/{code}")
    # The code from the Appointment's address is filled in; the page starts in the
    # browser's language (English here).
    assert browser.find_element(By.ID, "code").get_attribute("value") == code
    browser.find_element(By.ID, "name").send_keys("Paz Díaz")
    browser.find_element(By.CSS_SELECTOR, "#join button[type=submit]").click()
    until(browser, lambda d: d.find_element(By.ID, "waiting").is_displayed(), "the waiting room")
    assert text(browser, "waiting-title") == "Sala de espera"
    assert text(browser, "visit").startswith("Su consulta con Dr Ann One, ")
    assert "Esperando a que empiece la consulta" in text(browser, "status")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "es"
    browser.save_screenshot(str(shots / "6-waiting-es.png"))
