"""`fhirserver clients` and `fhirserver users` (issue 16 point 4; SMART App Launch 2.2
client-confidential-symmetric.html, client-confidential-asymmetric.html,
client-public.html): registrations land in the configured store, a generated secret is
printed once and stored only hashed, passwords only as scrypt hashes."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from joserfc.jwk import ECKey

from fhirserver.auth import registry
from fhirserver.auth.passwords import verify_client_secret, verify_password
from fhirserver.cli import main
from fhirserver.storage.sqlite import SqliteStore


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def stored(path: Path) -> tuple[list[registry.Client], list[registry.User]]:
    async def read() -> tuple[list[registry.Client], list[registry.User]]:
        store = SqliteStore(str(path))
        await store.open()
        try:
            now = datetime.now(UTC)
            return await registry.list_clients(store, now), await registry.list_users(store, now)
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "fhir.sqlite"


def test_a_secret_is_printed_once_and_stored_hashed(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        ["clients", "add", "lab-feed", "--secret", "--scope", "system/*.rs", "--store", str(db)],
        capsys,
    )
    assert code == 0
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert lines["client_id"] == "lab-feed"
    assert lines["token_endpoint"].endswith("/auth/token")
    secret = lines["client_secret"]
    [client], _ = stored(db)
    assert client.kind == "symmetric" and client.scopes == "system/*.rs"
    assert client.secret_hash is not None and secret not in client.secret_hash
    assert verify_client_secret(secret, client.secret_hash)
    # Listing never shows the secret or its hash.
    code, out, _ = run(["clients", "list", "--store", str(db)], capsys)
    assert code == 0 and "lab-feed\tsymmetric\tsystem/*.rs" in out
    assert secret not in out and client.secret_hash not in out


def test_asymmetric_client_from_a_jwks_file(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = ECKey.generate_key("P-384", parameters={"kid": "k1", "alg": "ES384"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    argv = ["clients", "add", "svc", "--jwks", str(jwks), "--scope", "system/Patient.rs"]
    code, out, _ = run([*argv, "--store", str(db)], capsys)
    assert code == 0 and "private_key_jwt" in out and "client_secret" not in out
    [client], _ = stored(db)
    assert client.kind == "asymmetric" and client.jwks == {"keys": [key.as_dict(private=False)]}
    # A JWKS with the private key is refused: it would be stored where it does not belong.
    jwks.write_text(json.dumps({"keys": [key.as_dict(private=True)]}))
    code, _, err = run(["clients", "add", "svc2", "--jwks", str(jwks), "--scope", "system/*.rs",
                        "--store", str(db)], capsys)  # fmt: skip
    assert code != 0 and "private key" in err and "Traceback" not in err


def test_public_client_needs_a_redirect_uri_and_https(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["clients", "add", "app", "--public", "--scope", "patient/*.rs", "--store", str(db)]
    code, _, err = run(base, capsys)
    assert code != 0 and "redirect-uri" in err
    code, _, err = run([*base, "--redirect-uri", "http://app.example/cb"], capsys)
    assert code != 0 and "https" in err
    code, out, _ = run([*base, "--redirect-uri", "https://app.example/cb"], capsys)
    assert code == 0 and "authorize" in out
    [client], _ = stored(db)
    assert client.kind == "public" and client.redirect_uris == ("https://app.example/cb",)


def test_unknown_scopes_and_duplicates_are_refused(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        ["clients", "add", "x", "--secret", "--scope", "system/Nope.rs", "--store", str(db)],
        capsys,
    )
    assert code != 0 and "system/Nope.rs" in err
    argv = ["clients", "add", "x", "--secret", "--scope", "system/*.rs", "--store", str(db)]
    assert run(argv, capsys)[0] == 0
    code, _, err = run(argv, capsys)
    assert code != 0 and "registered already" in err


def test_remove_client(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["clients", "add", "x", "--secret", "--scope", "system/*.rs", "--store", str(db)], capsys)
    assert run(["clients", "remove", "x", "--store", str(db)], capsys)[0] == 0
    assert stored(db) == ([], [])
    code, _, err = run(["clients", "remove", "x", "--store", str(db)], capsys)
    assert code == 1 and "no client" in err


def test_users_add_list_remove(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    argv = ["users", "add", "alice", "--fhir-user", "Patient/1", "--password-stdin"]
    code, out, _ = run([*argv, "--store", str(db)], capsys)
    assert code == 0 and "Patient/1" in out
    _, [user] = stored(db)
    assert user.fhir_user == "Patient/1" and "correct horse" not in user.password_hash
    assert verify_password("correct horse battery", user.password_hash)
    code, out, _ = run(["users", "list", "--store", str(db)], capsys)
    assert out == "alice\tPatient/1\n" and "scrypt" not in out
    assert run(["users", "remove", "alice", "--store", str(db)], capsys)[0] == 0
    assert stored(db) == ([], [])


def test_users_password_prompt_and_bad_fhir_user(
    db: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["pw-one", "pw-two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    argv = ["users", "add", "bob", "--fhir-user", "Practitioner/7", "--store", str(db)]
    code, _, err = run(argv, capsys)
    assert code != 0 and "differ" in err
    monkeypatch.setattr("getpass.getpass", lambda prompt: "same")
    assert run(argv, capsys)[0] == 0
    code, _, err = run(
        ["users", "add", "eve", "--fhir-user", "Organization/1", "--store", str(db)], capsys
    )
    assert code != 0 and "fhirUser" in err
