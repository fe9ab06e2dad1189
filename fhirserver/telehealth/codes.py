"""Meeting codes: what a patient types to join a visit.

Ten characters from 29 without look-alikes (no 0/O, 1/I/L, U/V): about 48 bits of
randomness, past the 40 that, with the join endpoint's rate limit, make guessing
hopeless. Shown in groups (`K7PX-3MWQ-9C`); read back forgiving case, spaces and dashes.
"""

from __future__ import annotations

import math
import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTWXYZ"
LENGTH = 10
BITS = LENGTH * math.log2(len(ALPHABET))


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def display(code: str) -> str:
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def normalize(typed: str) -> str | None:
    """The code a person typed, or None if it cannot be one."""
    code = "".join(typed.split()).replace("-", "").upper()
    if len(code) != LENGTH or any(c not in ALPHABET for c in code):
        return None
    return code
