"""Settings: the authorization modes (issue 16 point 1; SMART App Launch 2.2
"Security": a server reachable by others must not run without authorization by
accident), and the number of worker processes (issue 18 point 4)."""

from __future__ import annotations

import pytest

from fhirserver.config import Settings


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "fhir.example.org"])
def test_a_reachable_server_without_an_auth_mode_is_refused_naming_the_variable(
    host: str,
) -> None:
    reason = Settings(host=host).unsafe_to_serve()
    assert reason is not None and "FHIRSERVER_AUTH" in reason


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_may_run_with_authorization_unset(host: str) -> None:
    assert Settings(host=host).unsafe_to_serve() is None
    assert Settings(host=host).auth_mode == "off"


@pytest.mark.parametrize("mode", ["off", "smart"])
def test_an_explicit_mode_may_serve_anywhere(mode: str) -> None:
    assert Settings(host="0.0.0.0", auth=mode).unsafe_to_serve() is None


def test_modes_are_read_from_the_environment_and_checked() -> None:
    assert Settings.from_env({"FHIRSERVER_AUTH": "smart"}).auth_mode == "smart"
    with pytest.raises(ValueError, match="FHIRSERVER_AUTH"):
        Settings.from_env({"FHIRSERVER_AUTH": "on"})
    with pytest.raises(ValueError, match="FHIRSERVER_AUTH_ISSUER"):
        Settings(auth="external")
    external = Settings(auth="external", auth_issuer="https://idp.example.org")
    assert external.auth_mode == "external"
    assert "secret" not in repr(Settings(auth_introspection_client_secret="secret"))


def test_workers_are_read_from_the_environment_and_must_be_positive() -> None:
    assert Settings().workers == 1
    assert Settings.from_env({"FHIRSERVER_WORKERS": "3"}).workers == 3
    with pytest.raises(ValueError, match="workers must be positive"):
        Settings.from_env({"FHIRSERVER_WORKERS": "0"})
