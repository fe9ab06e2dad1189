"""User passwords and client secrets, stored only as hashes and checked in constant time.

Passwords are hashed with scrypt (RFC 7914), memory-hard so that a stolen store costs
an attacker memory as well as time per guess. The stored form names its parameters,
in the PHC string format `$scrypt$ln=15,r=8,p=1$<salt>$<hash>` (unpadded base64), so
the parameters can be raised later: `needs_rehash` says when a login should store a
new hash.

Client secrets are generated here with 256 bits of randomness. Nobody can guess one,
so a slow hash would only slow down every token request: they are stored as SHA-256,
which still keeps a copied store from handing out usable secrets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScryptParameters:
    """Cost `n = 2**log2_n`, block size `r`, parallelism `p`: memory is 128*r*n bytes."""

    log2_n: int = 15
    r: int = 8
    p: int = 1

    @property
    def memory(self) -> int:
        return 128 * self.r * ((1 << self.log2_n) + self.p + 2)


# 32 MiB and about a tenth of a second a hash: twice the floor of n = 2**14, r = 8
# (16 MiB) that the scrypt paper and OWASP name for interactive logins.
DEFAULT = ScryptParameters()
# What a stored hash may ask for: a corrupt or hostile row must not make a login
# allocate gigabytes (OWASP's stronger n = 2**17, r = 8 takes 128 MiB).
_MAX_MEMORY = 256 * 2**20
_MAX_P = 4
_SALT_BYTES = 16
_HASH_BYTES = 32
# Long enough for any passphrase, short enough that hashing one costs nothing extra.
MAX_PASSWORD_CHARS = 1024
_SCRYPT = re.compile(
    r"\$scrypt\$ln=(?P<ln>\d{1,2}),r=(?P<r>\d{1,2}),p=(?P<p>\d{1,2})"
    r"\$(?P<salt>[A-Za-z0-9+/]+)\$(?P<hash>[A-Za-z0-9+/]+)"
)
_SHA256 = "$sha256$"
_CLIENT_SECRET_BYTES = 32


def hash_password(password: str, parameters: ScryptParameters = DEFAULT) -> str:
    """The stored form of `password`, with a new random salt."""
    if not password or len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"A password has 1 to {MAX_PASSWORD_CHARS} characters")
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, parameters, _HASH_BYTES)
    ln, r, p = parameters.log2_n, parameters.r, parameters.p
    return f"$scrypt$ln={ln},r={r},p={p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether `password` is the one `stored` was made from. A missing or unreadable
    stored hash never matches, after the same work as a real check, so that the time
    taken does not tell whether a user exists."""
    decoded = _decode(stored) if stored is not None else None
    if decoded is None or not password or len(password) > MAX_PASSWORD_CHARS:
        _scrypt(password[:MAX_PASSWORD_CHARS], bytes(_SALT_BYTES), DEFAULT, _HASH_BYTES)
        return False
    parameters, salt, expected = decoded
    actual = _scrypt(password, salt, parameters, len(expected))
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str, parameters: ScryptParameters = DEFAULT) -> bool:
    """Whether `stored` was made with other parameters than `parameters` (then hash
    the password again after a successful login)."""
    decoded = _decode(stored)
    return decoded is None or decoded[0] != parameters


@dataclass(frozen=True)
class ClientSecret:
    """A new client secret: `value` is shown to the client once, `hashed` is stored."""

    value: str = field(repr=False)
    hashed: str


def new_client_secret() -> ClientSecret:
    value = secrets.token_urlsafe(_CLIENT_SECRET_BYTES)
    return ClientSecret(value, hash_client_secret(value))


def hash_client_secret(secret: str) -> str:
    return _SHA256 + _b64(hashlib.sha256(secret.encode()).digest())


def verify_client_secret(secret: str, hashed: str) -> bool:
    """Constant time in the secret: both sides are compared as fixed-length digests."""
    return hmac.compare_digest(hash_client_secret(secret).encode(), hashed.encode())


def _scrypt(password: str, salt: bytes, parameters: ScryptParameters, length: int) -> bytes:
    # NFC: the same password typed on two keyboards (composed or decomposed accents)
    # is the same password (RFC 8265 OpaqueString).
    text = unicodedata.normalize("NFC", password).encode()
    return hashlib.scrypt(
        text,
        salt=salt,
        n=1 << parameters.log2_n,
        r=parameters.r,
        p=parameters.p,
        maxmem=parameters.memory + 2**20,
        dklen=length,
    )


def _decode(stored: str) -> tuple[ScryptParameters, bytes, bytes] | None:
    found = _SCRYPT.fullmatch(stored)
    if found is None:
        return None
    parameters = ScryptParameters(int(found["ln"]), int(found["r"]), int(found["p"]))
    if not (
        parameters.log2_n >= 1
        and parameters.r >= 1
        and 1 <= parameters.p <= _MAX_P
        and parameters.memory <= _MAX_MEMORY
    ):
        return None
    try:
        salt, digest = _unb64(found["salt"]), _unb64(found["hash"])
    except (binascii.Error, ValueError):
        return None
    if len(salt) < _SALT_BYTES or len(digest) < _HASH_BYTES:
        return None
    return parameters, salt, digest


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
