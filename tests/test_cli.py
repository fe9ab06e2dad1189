"""`fhirserver` command line and settings (README "Configuration"): bad settings stop it
with a one-line usage error, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from fhirserver.app import create_app, fhir_base_url
from fhirserver.cli import main
from fhirserver.config import Settings
from fhirserver.serving import listen, server_config
from fhirserver.storage.configured import open_store
from fhirserver.storage.mongo import MongoStore
from fhirserver.storage.sqlite import SqliteStore


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["serve", "--store", ":memory:"], {}, "needs a file"),
        (["serve"], {"FHIRSERVER_PORT": "eighty"}, "FHIRSERVER_PORT must be a whole number"),
        (["serve"], {"FHIRSERVER_SQLITE_SYNCHRONOUS": "sometimes"}, "sqlite_synchronous"),
        # Reachable by others with authorization unset: refused, naming the variable.
        (["serve", "--host", "0.0.0.0"], {}, "needs FHIRSERVER_AUTH set explicitly"),
        (["serve"], {"FHIRSERVER_HOST": "10.1.2.3"}, "needs FHIRSERVER_AUTH set explicitly"),
        (["serve"], {"FHIRSERVER_AUTH": "sometimes"}, "FHIRSERVER_AUTH must be off, smart"),
    ],
)
def test_bad_settings_are_usage_errors(
    argv: list[str],
    environ: dict[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_environment_and_flags() -> None:
    settings = Settings.from_env({"FHIRSERVER_PORT": "9000", "FHIRSERVER_BASE_PATH": "/"})
    assert settings.port == 9000 and settings.base_path == ""
    assert settings.with_overrides(port=None, host="0.0.0.0").port == 9000
    assert Settings(base_path="api/fhir/").base_path == "/api/fhir"
    # SQLAlchemy's form: three slashes before a relative path, four before an absolute one.
    assert Settings(store="sqlite:///data/x.sqlite").sqlite_path == "data/x.sqlite"
    assert Settings(store="sqlite:////tmp/x.sqlite").sqlite_path == "/tmp/x.sqlite"


def test_a_mongodb_url_selects_the_mongodb_store() -> None:
    settings = Settings(store="mongodb://db1,db2/fhir?replicaSet=rs0")
    store = open_store(settings)
    assert isinstance(store, MongoStore) and store.url == settings.store
    assert isinstance(open_store(Settings(store="mongodb+srv://cluster.example/")), MongoStore)
    assert isinstance(open_store(Settings(store="data/x.sqlite")), SqliteStore)


@pytest.mark.parametrize(
    ("store", "shown"),
    [
        ("mongodb://app:s3cr%2Ft@db1:27017,db2/fhir?replicaSet=rs0", "mongodb://app:***@db1"),
        ("mongodb+srv://app:pw@cluster.example/fhir", "mongodb+srv://app:***@cluster.example"),
        ("mongodb://db1/fhir", "mongodb://db1/fhir"),
        ("data/fhir.sqlite", "data/fhir.sqlite"),
    ],
)
def test_the_store_is_shown_without_its_password(store: str, shown: str) -> None:
    label = Settings(store=store).store_label
    assert label.startswith(shown)
    assert "s3cr" not in label and ":pw@" not in label


def test_an_unreachable_database_is_one_line_without_its_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "mongodb://app:s3cret@127.0.0.1:1/fhir?serverSelectionTimeoutMS=200"
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--port", "0", "--store", url])
    assert exited.value.code == 1
    error = capsys.readouterr().err
    assert error.startswith("fhirserver: the store cannot be opened: MongoDB cannot be used")
    assert "Traceback" not in error and "s3cret" not in error


def test_telehealth_settings_from_the_environment_keep_secrets_out_of_repr() -> None:
    settings = Settings.from_env(
        {
            "FHIRSERVER_REQUIRE_CONSENT": "true",
            "FHIRSERVER_VIDEO_PROVIDER": "livekit",
            "FHIRSERVER_LIVEKIT_API_SECRET": "very-secret-value",
        }
    )
    assert settings.require_consent is True and settings.video_provider == "livekit"
    assert "very-secret-value" not in repr(settings)
    with pytest.raises(ValueError, match="FHIRSERVER_REQUIRE_CONSENT"):
        Settings.from_env({"FHIRSERVER_REQUIRE_CONSENT": "maybe"})
    with pytest.raises(ValueError, match="video_provider"):
        Settings(video_provider="skype")


@pytest.mark.parametrize(
    ("public_url", "origin"),
    [
        ("", "http://127.0.0.1:8080"),
        ("https://clinic.example/fhir", "https://clinic.example"),
        ("https://clinic.example/api/fhir/", "https://clinic.example/api"),
    ],
)
def test_the_origin_of_links_outside_the_fhir_base(public_url: str, origin: str) -> None:
    assert Settings(public_url=public_url).origin == origin


def test_a_wildcard_or_ipv6_bind_address_still_makes_a_valid_origin() -> None:
    assert Settings(host="0.0.0.0").origin == "http://127.0.0.1:8080"
    assert Settings(host="::").origin == "http://127.0.0.1:8080"
    assert Settings(host="::1", port=9000).origin == "http://[::1]:9000"


def test_port_zero_links_name_the_port_the_socket_bound() -> None:
    sock, settings = listen(Settings(port=0))
    with sock:
        port = sock.getsockname()[1]
        assert port != 0 and settings.port == port
        assert fhir_base_url(settings) == f"http://127.0.0.1:{port}/fhir"
        assert settings.origin == f"http://127.0.0.1:{port}"
        # So that asyncio sets TCP_NODELAY on its connections, as on uvicorn's own.
        assert sock.proto == socket.IPPROTO_TCP


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    taken, _ = listen(Settings(port=0))
    taken.listen()
    store = tmp_path / "fhir.sqlite"
    with taken, pytest.raises(SystemExit) as stopped:
        main(["serve", "--port", str(taken.getsockname()[1]), "--store", str(store)])
    assert str(stopped.value.code).startswith("fhirserver: cannot listen on 127.0.0.1:")
    assert not store.exists()


def test_a_join_rate_of_zero_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="join_rate_per_minute"):
        Settings.from_env({"FHIRSERVER_JOIN_RATE_PER_MINUTE": "0"})


def test_idle_connections_outlive_http_clients_pool_expiry(tmp_path: Path) -> None:
    """A server that closes an idle connection as a client reuses it fails that
    request (httpx.ReadError): the keep-alive must outlast clients' pool expiry."""
    settings = Settings(store=str(tmp_path / "fhir.sqlite"))
    config = server_config(create_app(settings), settings)
    assert config.timeout_keep_alive > httpx.Limits().keepalive_expiry
