"""`fhirserver` command line and settings (README "Configuration"): bad settings stop it
with a one-line usage error, never a traceback."""

from __future__ import annotations

import pytest

from fhirserver.cli import main
from fhirserver.config import Settings


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["serve", "--store", ":memory:"], {}, "needs a file"),
        (["serve"], {"FHIRSERVER_PORT": "eighty"}, "FHIRSERVER_PORT must be a whole number"),
        (["serve"], {"FHIRSERVER_SQLITE_SYNCHRONOUS": "sometimes"}, "sqlite_synchronous"),
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
